/* The snapshot the workers read (proxy.h): built on the main loop from a validated config,
 * immutable once published, reference counted; lookups by binary search. Also the reason
 * tokens' metric indexes. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/proxy.h"
#include "mtls/snap.h"

static const char *const reasons[RS__COUNT] = {
	[RS_OK] = "ok",
	[RS_UNKNOWN_CA] = TLS_R_UNKNOWN_CA,
	[RS_EXPIRED] = TLS_R_EXPIRED,
	[RS_NOT_YET_VALID] = TLS_R_NOT_YET_VALID,
	[RS_BAD_CERT] = TLS_R_BAD_CERT,
	[RS_SPIFFE_ID] = TLS_R_SPIFFE_ID,
	[RS_TRUST_DOMAIN] = TLS_R_TRUST_DOMAIN,
	[RS_NO_CERT] = TLS_R_NO_CERT,
	[RS_NOT_TLS] = TLS_R_NOT_TLS,
	[RS_NO_ALPN] = TLS_R_NO_ALPN,
	[RS_UNKNOWN_SERVICE] = TLS_R_UNKNOWN_SERVICE,
	[RS_PEER_REJECTED] = TLS_R_PEER_REJECTED,
	[RS_TIMEOUT] = TLS_R_TIMEOUT,
	[RS_CONNECT] = TLS_R_CONNECT,
	[RS_CLOSED] = TLS_R_CLOSED,
	[RS_PROTOCOL] = TLS_R_PROTOCOL,
	[RS_NO_IDENTITY_CERT] = TLS_R_NO_IDENTITY,
};

int reason_index(const char *reason)
{
	for (int i = 1; reason && i < RS__COUNT; i++)
		if (!strcmp(reasons[i], reason))
			return i;
	return RS_PROTOCOL;
}

const char *reason_name(int idx)
{
	return idx >= 0 && idx < RS__COUNT ? reasons[idx] : NULL;
}

uint32_t mtls_identity_hash(const char *service)
{
	uint32_t h = 2166136261u;

	for (; *service; service++)
		h = (h ^ (unsigned char)*service) * 16777619u;
	h = (h ^ (h >> 24)) & 0xffffff; /* 24 bits: it rides in the socket's flags */
	return h ? h : 1;		/* 0 means "no identity" in the datapath */
}

/* --- lookups ---------------------------------------------------------------------------------- */

static int ep_cmp(const struct config_endpoint *a, const struct config_endpoint *b)
{
	size_t n = a->family == AF_INET6 ? 16 : 4;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->port != b->port)
		return a->port < b->port ? -1 : 1;
	return memcmp(&a->addr, &b->addr, n);
}

static int svc_cmp(const void *a, const void *b)
{
	return ep_cmp(&((const struct snap_service *)a)->vip,
		      &((const struct snap_service *)b)->vip);
}

static int port_cmp(const void *a, const void *b)
{
	return (int)((const struct snap_port *)a)->port - (int)((const struct snap_port *)b)->port;
}

static int ident_cmp(const void *a, const void *b)
{
	uint32_t x = ((const struct snap_identity *)a)->hash,
		 y = ((const struct snap_identity *)b)->hash;

	return x < y ? -1 : x > y;
}

const struct snap_service *snap_service(const struct snap *s, const struct config_endpoint *vip)
{
	struct snap_service key = { .vip = *vip };

	return bsearch(&key, s->services, s->n_services, sizeof(key), svc_cmp);
}

const char *snap_port_service(const struct snap *s, uint16_t port)
{
	struct snap_port key = { .port = port }, *p;

	p = bsearch(&key, s->ports, s->n_ports, sizeof(key), port_cmp);
	return p ? p->service : NULL;
}

const char *snap_identity(const struct snap *s, uint32_t hash)
{
	struct snap_identity key = { .hash = hash }, *p;

	p = bsearch(&key, s->idents, s->n_idents, sizeof(key), ident_cmp);
	return p ? p->service : NULL;
}

bool snap_serves(const struct snap *s, const char *service)
{
	for (size_t i = 0; i < s->n_ports; i++)
		if (!strcmp(s->ports[i].service, service))
			return true;
	return false;
}

struct snap *snap_ref(struct snap *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

void snap_unref(struct snap *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL))
		return;
	free(s->services);
	free(s->ports);
	free(s->idents);
	free(s);
}

/* --- building ----------------------------------------------------------------------------------- */

/* A VIP as connect4 records it: IPv4 VIPs stay IPv4 (the record decodes v4-mapped ones). */
static void add_services(struct snap *s, const struct mesh_config *cfg, struct budget_table *bt)
{
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct config_service *c = &cfg->services[i];
		struct snap_service *d;

		if (!c->mtls)
			continue;
		d = &s->services[s->n_services++];
		d->vip = c->vip;
		snprintf(d->name, sizeof(d->name), "%s", c->name);
		d->retry = c->load_balancer.retry;
		d->budget = budget_get(bt, c->name, &c->load_balancer.retry);
	}
	qsort(s->services, s->n_services, sizeof(*s->services), svc_cmp);
}

static int add_identities(struct snap *s, const struct mesh_config *cfg, char *why, size_t wlen)
{
	for (size_t i = 0; i < cfg->n_identities; i++) {
		const struct config_identity *id = &cfg->identities[i];
		uint32_t h = mtls_identity_hash(id->service);
		const char *seen = NULL;

		for (size_t j = 0; j < id->n_ports; j++) {
			s->ports[s->n_ports].port = id->ports[j];
			snprintf(s->ports[s->n_ports++].service, NAME_MAX_, "%s", id->service);
		}
		for (size_t j = 0; j < s->n_idents && !seen; j++)
			if (s->idents[j].hash == h)
				seen = s->idents[j].service;
		if (seen && strcmp(seen, id->service)) {
			snprintf(why, wlen,
				 "identities[%zu].service: \"%s\" and \"%s\" have the same "
				 "identity hash; rename one",
				 i, id->service, seen);
			return -EINVAL;
		}
		if (!seen) {
			s->idents[s->n_idents].hash = h;
			snprintf(s->idents[s->n_idents++].service, NAME_MAX_, "%s", id->service);
		}
	}
	qsort(s->ports, s->n_ports, sizeof(*s->ports), port_cmp);
	qsort(s->idents, s->n_idents, sizeof(*s->idents), ident_cmp);
	return 0;
}

static size_t count_ports(const struct mesh_config *cfg)
{
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_identities; i++)
		n += cfg->identities[i].n_ports;
	return n;
}

struct snap *snap_build(const struct mesh_config *cfg, const struct mtls_datapath *dp,
			struct budget_table *bt, pthread_mutex_t *budget_lock, char *why,
			size_t wlen)
{
	struct snap *s = calloc(1, sizeof(*s));

	if (!s)
		goto oom;
	s->refs = 1;
	snprintf(s->trust_domain, sizeof(s->trust_domain), "%s", cfg->mtls.trust_domain);
	snprintf(s->dc, sizeof(s->dc), "%s", cfg->node_datacenter ? cfg->node_datacenter : "dc1");
	s->inbound_port = cfg->mtls.inbound_listen.port;
	s->outbound = cfg->mtls.outbound_listen;
	s->max_streams = cfg->mtls.pool_max_streams;
	s->idle_ns = cfg->mtls.pool_idle_timeout_ns;
	s->connect_ns = cfg->mtls.connect_timeout_ns;
	s->busy_poll_ns = cfg->mtls.busy_poll_ns;
	s->budget_lock = budget_lock;
	if (dp)
		s->dp = *dp;
	s->services = calloc(cfg->n_services + 1, sizeof(*s->services));
	s->ports = calloc(count_ports(cfg) + 1, sizeof(*s->ports));
	s->idents = calloc(cfg->n_identities + 1, sizeof(*s->idents));
	if (!s->services || !s->ports || !s->idents)
		goto oom;
	add_services(s, cfg, bt);
	if (add_identities(s, cfg, why, wlen)) {
		snap_unref(s);
		return NULL;
	}
	return s;
oom:
	snap_unref(s);
	snprintf(why, wlen, "out of memory");
	return NULL;
}

/* --- retry budgets: one per service name, kept across snapshots -------------------------------- */

struct budget_entry {
	char name[NAME_MAX_];
	struct retry_budget b;
};

struct budget_table {
	struct budget_entry **e; /* each allocated once: snapshots point into them */
	size_t n;
	pthread_mutex_t *lock;
};

struct budget_table *budget_table_new(pthread_mutex_t *lock)
{
	struct budget_table *t = calloc(1, sizeof(*t));

	if (t)
		t->lock = lock;
	return t;
}

void budget_table_free(struct budget_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->e[i]);
	free(t->e);
	free(t);
}

/* A budget outlives the services that stop naming it (few, small): a snapshot still in use may
 * point at it. */
struct retry_budget *budget_get(struct budget_table *t, const char *name,
				const struct config_retry *r)
{
	struct retry_budget *b = NULL;
	struct budget_entry **grown, *e;

	pthread_mutex_lock(t->lock);
	for (size_t i = 0; i < t->n && !b; i++)
		if (!strcmp(t->e[i]->name, name))
			b = &t->e[i]->b;
	if (b) {
		retry_budget_set(b, r->budget_percent, r->min_retries_per_second);
	} else if ((grown = realloc(t->e, (t->n + 1) * sizeof(*grown)))) {
		t->e = grown;
		e = calloc(1, sizeof(*e));
		if (e) {
			snprintf(e->name, NAME_MAX_, "%s", name);
			retry_budget_init(&e->b, r->budget_percent, r->min_retries_per_second);
			t->e[t->n++] = e;
			b = &e->b;
		}
	}
	pthread_mutex_unlock(t->lock);
	return b;
}
