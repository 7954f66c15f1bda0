/* The DNS SRV source (discovery.backend dns): each service of discovery.dns.services is resolved
 * from its SRV record, each SRV target to its A and AAAA addresses, on meshd's event loop through
 * the c-ares resolver. The set served is the lowest priority that has addresses, SRV weights as
 * backend weights; it is asked again when the shortest TTL of the answers expires (clamped to
 * min_ttl..max_ttl; Consul's TTL 0 means min_ttl). Failures follow HAProxy's resolvers: SERVFAIL,
 * REFUSED and timeouts keep the last good set (for hold_timeout when set, else for good);
 * NXDOMAIN or an empty answer empties it only after it persisted for hold_nx. Loop thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "discovery/dns/dns.h"
#include "discovery/source.h"

#define SUBSYS "discovery"

struct discovery_source;

/* One watched service and the resolution in flight for it. */
struct dns_svc {
	struct discovery_source *src;
	char *name, *srv;
	struct dns_hold hold;
	int64_t timer; /* next resolution, 0 while one runs */
	uint32_t gen;  /* bumped per resolution: answers of an older one are dropped */
	bool busy, warned;
	struct dns_srv *rec; /* SRV records of the resolution in flight */
	size_t n_rec;
	struct dns_addr **addr; /* per record: the addresses of its target */
	size_t *n_addr;
	enum dns_status *tstatus; /* per record: how its target's lookup ended */
	size_t pending;		  /* target lookups outstanding */
	uint32_t min_ttl;	  /* over every answer of the resolution */
};

/* What an answer callback needs to find its resolution. */
struct ctx {
	struct dns_svc *svc;
	uint32_t gen;
	size_t idx; /* record index for target lookups */
};

struct discovery_source {
	struct discovery_sink sink;
	struct evloop *loop;
	struct dns_resolver *res;
	struct dns_svc *svcs;
	size_t n;
	uint64_t min_ttl_ns, max_ttl_ns, hold_nx_ns, hold_timeout_ns;
	bool stopping;
};

static void resolve(struct dns_svc *s);

static void on_timer(struct evloop *loop, void *arg)
{
	struct dns_svc *s = arg;

	s->timer = 0;
	resolve(s);
}

static void schedule(struct dns_svc *s, uint64_t delay_ns)
{
	if (s->timer)
		evloop_del_timer(s->src->loop, s->timer);
	s->timer = evloop_add_timer(s->src->loop, delay_ns, on_timer, s);
	if (s->timer < 0) {
		LOG_WARN(SUBSYS, "cannot schedule a dns refresh", "service=%s", log_q(s->name));
		s->timer = 0;
	}
}

static void clear_resolution(struct dns_svc *s)
{
	for (size_t i = 0; i < s->n_rec; i++)
		free(s->addr ? s->addr[i] : NULL);
	free(s->rec);
	free(s->addr);
	free(s->n_addr);
	free(s->tstatus);
	s->rec = NULL;
	s->addr = NULL;
	s->n_addr = NULL;
	s->tstatus = NULL;
	s->n_rec = s->pending = 0;
}

/* True while no service is in a run of failures. */
static bool all_up(const struct discovery_source *src)
{
	for (size_t i = 0; i < src->n; i++)
		if (src->svcs[i].hold.fail_since_ns)
			return false;
	return true;
}

static uint64_t unix_seconds(void)
{
	return (uint64_t)time(NULL);
}

/* Logs the start of a run of answers that keep or empty the set, once per run. */
static void note_trouble(struct dns_svc *s, enum dns_status st, enum dns_verdict v)
{
	const struct config_service *cur = s->src->sink.current(s->src->sink.arg, s->name);

	if (v == DNS_EMPTY)
		LOG_WARN(SUBSYS, "dns answers no backends for long enough; serving none",
			 "service=%s srv=%s status=%s", log_q(s->name), log_q(s->srv),
			 dns_status_name(st));
	else if (!s->warned)
		LOG_WARN(SUBSYS, "dns resolution failed, keeping last known backends",
			 "service=%s srv=%s status=%s serving=%zu", log_q(s->name), log_q(s->srv),
			 dns_status_name(st), cur ? cur->n_backends : 0);
	s->warned = v != DNS_EMPTY;
}

/* A resolution ended: decide, deliver, schedule the next one. Takes `b`. */
static void finish(struct dns_svc *s, enum dns_status st, struct config_backend *b, size_t n)
{
	struct discovery_source *src = s->src;
	uint64_t now = evloop_now_ns(), next = src->min_ttl_ns;
	enum dns_verdict v =
	    dns_hold_decide(&s->hold, st, n > 0, now, src->hold_nx_ns, src->hold_timeout_ns);

	s->busy = false;
	src->sink.synced(src->sink.arg, !dns_status_is_failure(st));
	src->sink.up(src->sink.arg, all_up(src));
	if (v == DNS_DELIVER) {
		if (s->warned)
			LOG_INFO(SUBSYS, "dns resolution good again", "service=%s backends=%zu",
				 log_q(s->name), n);
		s->warned = false;
		next = dns_refresh_ns(s->min_ttl, src->min_ttl_ns, src->max_ttl_ns);
		src->sink.deliver(src->sink.arg, s->name, unix_seconds(), b, n);
		b = NULL;
	} else {
		note_trouble(s, st, v);
		if (v == DNS_EMPTY)
			src->sink.deliver(src->sink.arg, s->name, unix_seconds(), NULL, 0);
		else if (s->hold.nx_since_ns &&
			 src->hold_nx_ns - (now - s->hold.nx_since_ns) < next)
			next =
			    src->hold_nx_ns - (now - s->hold.nx_since_ns); /* on time for hold_nx */
	}
	free(b);
	clear_resolution(s);
	if (!src->stopping)
		schedule(s, next);
}

/* Every target answered: the lowest priority with addresses is the set. */
static void assemble(struct dns_svc *s)
{
	struct dns_resolved *r = calloc(s->n_rec + 1, sizeof(*r));
	struct config_backend *b;
	size_t i, total = 0, n;
	enum dns_status st = DNS_NODATA;
	bool any_answer = false;

	for (i = 0; i < s->n_rec; i++) {
		total += s->n_addr[i];
		any_answer |= !dns_status_is_failure(s->tstatus[i]);
		if (dns_status_is_failure(s->tstatus[i]) && st == DNS_NODATA)
			st = s->tstatus[i];
	}
	b = calloc(total + 1, sizeof(*b));
	if (!r || !b) {
		free(r);
		free(b);
		finish(s, DNS_ERROR, NULL, 0);
		return;
	}
	for (i = 0; i < s->n_rec; i++)
		r[i] = (struct dns_resolved){ &s->rec[i], s->addr[i], s->n_addr[i] };
	n = dns_backends(r, s->n_rec, b, total);
	free(r);
	/* Nothing resolved: an answer when some target said so, else a failure. */
	finish(s, n ? DNS_OK : any_answer ? DNS_NODATA : st, b, n);
}

static bool stale(struct ctx *c, enum dns_status st)
{
	return st == DNS_CANCELLED || c->svc->gen != c->gen || !c->svc->busy;
}

static void on_target(void *arg, enum dns_status st, const struct dns_answer *a)
{
	struct ctx *c = arg;
	struct dns_svc *s = c->svc;
	size_t i = c->idx;

	if (stale(c, st)) {
		free(c);
		return;
	}
	free(c);
	s->tstatus[i] = st;
	if (st == DNS_OK && a->n_addr) {
		s->addr[i] = malloc(a->n_addr * sizeof(*a->addr));
		if (s->addr[i]) {
			memcpy(s->addr[i], a->addr, a->n_addr * sizeof(*a->addr));
			s->n_addr[i] = a->n_addr;
		}
		if (a->min_ttl < s->min_ttl)
			s->min_ttl = a->min_ttl;
	}
	if (--s->pending == 0)
		assemble(s);
}

/* Keeps the SRV records and starts one address lookup per usable target. */
static void resolve_targets(struct dns_svc *s, const struct dns_answer *a)
{
	size_t i, usable = 0;

	s->rec = malloc((a->n_srv + 1) * sizeof(*s->rec));
	s->addr = calloc(a->n_srv + 1, sizeof(*s->addr));
	s->n_addr = calloc(a->n_srv + 1, sizeof(*s->n_addr));
	s->tstatus = calloc(a->n_srv + 1, sizeof(*s->tstatus));
	if (!s->rec || !s->addr || !s->n_addr || !s->tstatus) {
		finish(s, DNS_ERROR, NULL, 0);
		return;
	}
	memcpy(s->rec, a->srv, a->n_srv * sizeof(*s->rec));
	s->n_rec = a->n_srv;
	s->min_ttl = a->min_ttl;
	for (i = 0; i < s->n_rec; i++) {
		s->tstatus[i] = DNS_NODATA;
		usable += s->rec[i].target[0] && s->rec[i].port;
	}
	if (!usable) { /* only "." targets: the service says it is not available */
		finish(s, DNS_NODATA, NULL, 0);
		return;
	}
	s->pending = usable + 1; /* +1: answers that come back at once cannot finish early */
	for (i = 0; i < s->n_rec; i++) {
		struct ctx *c;

		if (!s->rec[i].target[0] || !s->rec[i].port)
			continue;
		c = malloc(sizeof(*c));
		if (c) /* filled first: the answer may come back before the call returns */
			*c = (struct ctx){ s, s->gen, i };
		if (!c || dns_resolver_addrs(s->src->res, s->rec[i].target, on_target, c)) {
			free(c);
			s->tstatus[i] = DNS_ERROR;
			s->pending--;
		}
	}
	if (--s->pending == 0)
		assemble(s);
}

static void on_srv(void *arg, enum dns_status st, const struct dns_answer *a)
{
	struct ctx *c = arg;
	struct dns_svc *s = c->svc;

	if (stale(c, st)) {
		free(c);
		return;
	}
	free(c);
	if (st != DNS_OK) {
		finish(s, st, NULL, 0);
		return;
	}
	resolve_targets(s, a);
}

static void resolve(struct dns_svc *s)
{
	struct ctx *c;

	if (s->busy || s->src->stopping)
		return;
	c = malloc(sizeof(*c));
	s->gen++;
	s->busy = true;
	if (!c) {
		finish(s, DNS_ERROR, NULL, 0);
		return;
	}
	*c = (struct ctx){ s, s->gen, 0 };
	if (dns_resolver_query(s->src->res, s->srv, DNS_TYPE_SRV, on_srv, c)) {
		free(c);
		finish(s, DNS_ERROR, NULL, 0);
	}
}

/* --- the source ops --------------------------------------------------------------------------- */

static bool dns_provides(const struct mesh_config *cfg, const char *name)
{
	if (cfg->discovery != CONFIG_DISCOVERY_DNS)
		return false;
	for (size_t i = 0; i < cfg->dns.n_services; i++)
		if (!strcmp(cfg->dns.services[i].name, name))
			return true;
	return false;
}

static void src_free(struct discovery_source *src)
{
	if (!src)
		return;
	src->stopping = true;
	for (size_t i = 0; i < src->n; i++)
		if (src->svcs[i].timer)
			evloop_del_timer(src->loop, src->svcs[i].timer);
	dns_resolver_free(src->res); /* in-flight answers come back cancelled, dropped */
	for (size_t i = 0; i < src->n; i++) {
		clear_resolution(&src->svcs[i]);
		free(src->svcs[i].name);
		free(src->svcs[i].srv);
	}
	free(src->svcs);
	free(src);
}

/* A source for `cfg`, its first resolutions due on the next loop iteration. */
static int src_new(const struct mesh_config *cfg, struct evloop *loop,
		   const struct discovery_sink *sink, struct discovery_source **out)
{
	const struct config_dns *c = &cfg->dns;
	struct dns_resolver_opts ro = { .servers = c->servers, .n_servers = c->n_servers };
	struct discovery_source *src = calloc(1, sizeof(*src));

	if (!src)
		return -ENOMEM;
	src->sink = *sink;
	src->loop = loop;
	src->min_ttl_ns = c->min_ttl_ns;
	src->max_ttl_ns = c->max_ttl_ns;
	src->hold_nx_ns = c->hold_nx_ns;
	src->hold_timeout_ns = c->hold_timeout_ns;
	src->res = dns_resolver_new(loop, &ro);
	src->svcs = calloc(c->n_services + 1, sizeof(*src->svcs));
	if (!src->res || !src->svcs)
		goto err;
	for (size_t i = 0; i < c->n_services; i++, src->n++) {
		struct dns_svc *s = &src->svcs[i];

		s->src = src;
		s->name = strdup(c->services[i].name);
		s->srv = strdup(c->services[i].srv);
		if (!s->name || !s->srv)
			goto err;
		schedule(s, 0);
	}
	*out = src;
	return 0;
err:
	src_free(src);
	return -ENOMEM;
}

static int dns_start(const struct mesh_config *cfg, struct evloop *loop,
		     const struct discovery_sink *sink, struct discovery_source **out)
{
	int err = src_new(cfg, loop, sink, out);

	if (err) {
		LOG_ERR(SUBSYS, "cannot start dns discovery", "err=%s", log_q(strerror(-err)));
		return err;
	}
	LOG_INFO(SUBSYS, "dns discovery started", "services=%zu servers=%zu", cfg->dns.n_services,
		 cfg->dns.n_servers);
	return 0;
}

static bool same_dns(const struct config_dns *a, const struct config_dns *b)
{
	if (a->n_servers != b->n_servers || a->n_services != b->n_services ||
	    a->min_ttl_ns != b->min_ttl_ns || a->max_ttl_ns != b->max_ttl_ns ||
	    a->hold_nx_ns != b->hold_nx_ns || a->hold_timeout_ns != b->hold_timeout_ns)
		return false;
	for (size_t i = 0; i < a->n_servers; i++)
		if (memcmp(&a->servers[i], &b->servers[i], sizeof(a->servers[i])))
			return false;
	for (size_t i = 0; i < a->n_services; i++)
		if (strcmp(a->services[i].name, b->services[i].name) ||
		    strcmp(a->services[i].srv, b->services[i].srv))
			return false;
	return true;
}

/* Changed settings: a new resolver and new resolutions replace the running ones (built first,
 * so a failure leaves the running source as it was). */
static int dns_reload(struct discovery_source *src, const struct mesh_config *old,
		      const struct mesh_config *new)
{
	struct discovery_source *n;
	int err;

	if (same_dns(&old->dns, &new->dns))
		return 0;
	err = src_new(new, src->loop, &src->sink, &n);
	if (err)
		return err;
	/* Swap contents so the registry's pointer to `src` stays valid. */
	struct discovery_source tmp = *src;

	*src = *n;
	*n = tmp;
	for (size_t i = 0; i < src->n; i++)
		src->svcs[i].src = src;
	for (size_t i = 0; i < n->n; i++)
		n->svcs[i].src = n;
	src_free(n);
	LOG_INFO(SUBSYS, "dns discovery restarted", "services=%zu servers=%zu", new->dns.n_services,
		 new->dns.n_servers);
	return 0;
}

static void dns_stop(struct discovery_source *src, bool switched)
{
	src_free(src);
}

const struct discovery_source_ops discovery_dns_source = {
	.name = "dns",
	.kind = CONFIG_DISCOVERY_DNS,
	.provides = dns_provides,
	.start = dns_start,
	.reload = dns_reload,
	.stop = dns_stop,
};
