/* The Consul source: runs the watcher (consul_watch.c) for discovery.consul, hands each result
 * from the watcher thread to the loop thread (consul_post.c), and delivers every service's
 * set to the registry. A failed query never touches the backends, and neither does an answer
 * that leaves nothing usable while Consul lists instances: the last known set keeps being served
 * (warned once per episode). Instances whose address is a host name are resolved (A and AAAA,
 * with discovery.dns.servers or the system resolver) on the loop before the set is delivered or,
 * for a service that fails over, before its datacenter's set counts.
 * Registrations follow the config; switching to another source deregisters them, and so does a
 * stop with discovery.consul.deregister_on_stop (else they outlive meshd: a restart finds them,
 * a host gone for good is reaped by deregister_critical_after). TTL checks report meshd's own
 * health of the registered address (consul_backend_health). With discovery.consul.catalog, a
 * second watcher reads the catalog (consul_catalog.c) and the tagged services: the services it
 * defines go to the registry through sink.define, and that watcher restarts whenever the set of
 * tagged names changes. Loop thread. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "discovery/dns/dns.h"
#include "discovery/source.h"

#define SUBSYS "discovery"
#define DEREGISTER_GIVE_UP_NS (30ull * 1000000000ull)
#define DEREGISTER_ON_STOP_NS (5ull * 1000000000ull) /* a stopping meshd waits this long */

/* One watcher and what it registered. Outlives the source while answers resolve host names:
 * each pending answer holds a reference; `src` becomes NULL once the watcher is stopped. */
struct consul_sink {
	atomic_int refs;
	struct discovery_source *src; /* loop thread only */
	struct consul_watch *watch;
	struct consul_post *post; /* the watcher's answers, to the loop */
	char **reg_ids;		  /* service IDs this watcher registers */
	size_t n_reg_ids;
	struct consul_failover *fo; /* discovery.consul.failover (loop thread) */
	uint64_t token_hash;	    /* FNV-1a of the token it sends: a reload re-reads the file */
};

struct pending;

struct discovery_source {
	struct discovery_sink sink;
	struct evloop *loop;
	struct dns_resolver *res; /* host-name instances */
	struct pending *pending;  /* answers waiting for host names to resolve */
	bool stopping;
	struct consul_sink *cs;
	const struct config_consul *conf; /* settings cs runs with (the running config's) */
	char **kept; /* services whose last answer was unusable (warned once per episode) */
	size_t n_kept;
	uint16_t mesh_port; /* meta mesh-port of registrations: mTLS inbound port, 0 = mTLS off */
	char **warned;	    /* "<service>/<instance>" whose malformed mesh-port was logged */
	size_t n_warned;
	struct sick *sick; /* backends meshd's health checks find unhealthy (TTL checks) */
	size_t n_sick;
	struct consul_catalog *cat;   /* discovery.consul.catalog: the tagged services */
	struct consul_sink *cat_cs;   /* ... and the watcher of the catalog and of them */
	struct catalog_set *cat_sets; /* the last answer for each tagged service */
	size_t n_cat_sets;
	struct consul_rollout *rollout; /* splits from config entries (consul_rollout.c) */
};

/* The last backends of a tagged service, delivered again once it is defined. */
struct catalog_set {
	char *service;
	uint64_t index;
	struct config_backend *b;
	size_t n;
};

struct sick {
	char *service;
	struct config_endpoint ep;
};

static void sink_stop(struct consul_sink *s);

static void sink_put(struct consul_sink *s)
{
	if (atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (size_t i = 0; i < s->n_reg_ids; i++)
		free(s->reg_ids[i]);
	free(s->reg_ids);
	consul_failover_free(s->fo);
	consul_post_close(s->post); /* a watcher never started (sink_stop closes it otherwise) */
	free(s);
}

/* --- results ---------------------------------------------------------------------------------- */

/* Index of `s` in the string list v[0..n), or -1. The lists here are short (empty in the
 * normal case). */
static int strlist_find(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], s))
			return (int)i;
	return -1;
}

/* Appends a copy of `s` to the list; false on ENOMEM. */
static bool strlist_add(char ***v, size_t *n, const char *s)
{
	char **nv, *copy = strdup(s);

	if (!copy)
		return false;
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv) {
		free(copy);
		return false;
	}
	*v = nv;
	nv[(*n)++] = copy;
	return true;
}

/* Index of `service` among those in an "unusable answer" episode, or -1. */
static int kept_find(const struct discovery_source *src, const char *service)
{
	return strlist_find(src->kept, src->n_kept, service);
}

/* Starts an episode for `service`; false when it was in one already (or on ENOMEM). */
static bool kept_start(struct discovery_source *src, const char *service)
{
	return kept_find(src, service) < 0 && strlist_add(&src->kept, &src->n_kept, service);
}

/* Ends the episode of `service`; true when it was in one. */
static bool kept_end(struct discovery_source *src, const char *service)
{
	int i = kept_find(src, service);

	if (i < 0)
		return false;
	free(src->kept[i]);
	src->kept[i] = src->kept[--src->n_kept];
	return true;
}

/* An answer whose instances were all unusable (hostname that did not resolve, port 0, ...)
 * while Consul lists some: keep serving the last set, and say so once per episode. */
static void keep_last(struct discovery_source *src, const struct consul_update *u)
{
	const struct config_service *cur = src->sink.current(src->sink.arg, u->service);

	if (!kept_start(src, u->service))
		return;
	LOG_WARN(SUBSYS, "consul lists instances but none is usable; keeping the last backends",
		 "service=%s listed=%zu first_problem=%s serving=%zu", log_q(u->service),
		 u->skipped, log_q(u->skip_reason), cur ? cur->n_backends : 0);
}

/* Delivers an answer's set, or keeps the last one when Consul listed nothing usable. */
static void deliver_or_keep(struct discovery_source *src, struct consul_update *u)
{
	if (!u->n_backends && u->skipped) {
		keep_last(src, u);
		return;
	}
	if (src->n_kept && kept_end(src, u->service)) {
		LOG_INFO(SUBSYS, "consul answer usable again", "service=%s backends=%zu",
			 log_q(u->service), u->n_backends);
	}
	if (u->skipped)
		LOG_WARN(SUBSYS, "consul instances skipped",
			 "service=%s skipped=%zu usable=%zu first_problem=%s", log_q(u->service),
			 u->skipped, u->n_backends, log_q(u->skip_reason));
	consul_rollout_instances(src->rollout, src->conf, u); /* takes the backends */
}

/* --- instances' mesh-port meta -------------------------------------------------------------- */

#define WARNED_MAX 4096 /* instances remembered; past that, further ones are logged at debug */

/* Whether `key` was warned about already; remembers it when not (and there is room). */
static bool warned_before(struct discovery_source *src, const char *key)
{
	if (strlist_find(src->warned, src->n_warned, key) >= 0)
		return true;
	if (src->n_warned < WARNED_MAX)
		strlist_add(&src->warned, &src->n_warned, key);
	return false;
}

/* A malformed Service.Meta["mesh-port"] is logged once per instance; the instance stays a
 * backend dialled at the default port (mtls.inbound_listen's). */
static void warn_bad_mesh_ports(struct discovery_source *src, const struct consul_update *u)
{
	char key[512];

	for (size_t i = 0; i < u->n_bad_mesh_port; i++) {
		const struct consul_bad_mesh_port *b = &u->bad_mesh_port[i];

		snprintf(key, sizeof(key), "%s/%s", u->service, b->instance);
		if (warned_before(src, key))
			continue;
		LOG_WARN(SUBSYS,
			 "consul instance has a malformed mesh-port meta; dialling the default "
			 "mTLS port",
			 "service=%s instance=%s mesh_port=%s", log_q(u->service),
			 log_q(b->instance), log_q(b->value));
	}
}

static void warned_free(struct discovery_source *src)
{
	for (size_t i = 0; i < src->n_warned; i++)
		free(src->warned[i]);
	free(src->warned);
	src->warned = NULL;
	src->n_warned = 0;
}

static void settle(struct discovery_source *src, struct consul_sink *cs, struct consul_update *u);

/* --- host-name instances ---------------------------------------------------------------------- */

/* An answer whose host names are being resolved; the newest answer of a service supersedes any
 * older one still resolving. */
struct pending {
	struct discovery_source *src;
	struct consul_sink *cs; /* the watcher that answered (a reference) */
	struct consul_update *u;
	size_t left;	   /* lookups outstanding (+1 while starting them) */
	size_t unresolved; /* names that gave no address */
	size_t cap;	   /* of u->backends */
	bool superseded;
	struct pending *next;
};

struct lookup {
	struct pending *p;
	size_t idx; /* in p->u->named */
};

static void pending_done(struct pending *p)
{
	struct discovery_source *src = p->src;
	struct pending **pp = &src->pending;
	struct consul_update *u = p->u;

	while (*pp != p)
		pp = &(*pp)->next;
	*pp = p->next;
	if (!p->superseded && !src->stopping && p->cs->src == src) {
		if (p->unresolved && !u->skipped++)
			snprintf(u->skip_reason, sizeof(u->skip_reason),
				 "host name did not resolve");
		u->skipped += p->unresolved ? p->unresolved - 1 : 0;
		settle(src, p->cs, u);
	}
	sink_put(p->cs);
	consul_update_free(u);
	free(p);
}

/* Appends `a`'s addresses with the instance's port and weight. */
static void add_addrs(struct pending *p, const struct consul_named *nm, const struct dns_answer *a)
{
	struct consul_update *u = p->u;

	for (size_t i = 0; i < a->n_addr; i++) {
		struct config_backend *b;

		if (u->n_backends == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 16;

			b = realloc(u->backends, cap * sizeof(*b));
			if (!b)
				return;
			u->backends = b;
			p->cap = cap;
		}
		b = &u->backends[u->n_backends++];
		memset(b, 0, sizeof(*b));
		b->endpoint.family = a->addr[i].family;
		memcpy(&b->endpoint.addr, &a->addr[i].addr, sizeof(b->endpoint.addr));
		b->endpoint.port = nm->port;
		b->mesh_port = nm->mesh_port;
		b->weight = nm->weight;
		b->subset = nm->sel ? strdup(nm->sel) : NULL; /* on ENOMEM: in no subset */
	}
}

static void on_named(void *arg, enum dns_status st, const struct dns_answer *a)
{
	struct lookup *l = arg;
	struct pending *p = l->p;
	const struct consul_named *nm = &p->u->named[l->idx];

	free(l);
	if (st == DNS_OK && a->n_addr)
		add_addrs(p, nm, a);
	else if (st != DNS_CANCELLED) {
		p->unresolved++;
		LOG_DEBUG(SUBSYS, "consul instance host name did not resolve",
			  "service=%s host=%s status=%s", log_q(p->u->service), log_q(nm->host),
			  dns_status_name(st));
	}
	if (--p->left == 0)
		pending_done(p);
}

/* Whether two answers are of the same query: service and datacenter. */
static bool same_query(const struct consul_update *a, const struct consul_update *b)
{
	return !strcmp(a->service, b->service) &&
	       (a->dc == b->dc || (a->dc && b->dc && !strcmp(a->dc, b->dc)));
}

/* Resolves the answer's host names, then settles it (takes `u`). */
static void resolve_named(struct discovery_source *src, struct consul_sink *cs,
			  struct consul_update *u)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p) {
		consul_update_free(u);
		return;
	}
	p->src = src;
	p->cs = cs;
	atomic_fetch_add(&cs->refs, 1);
	p->u = u;
	p->cap = u->n_backends;
	p->left = u->n_named + 1;
	p->next = src->pending;
	src->pending = p;
	for (size_t i = 0; i < u->n_named; i++) {
		struct lookup *l = malloc(sizeof(*l));

		if (l)
			*l = (struct lookup){ p, i };
		if (!l || dns_resolver_addrs(src->res, u->named[i].host, on_named, l)) {
			free(l);
			p->unresolved++;
			p->left--;
		}
	}
	if (--p->left == 0)
		pending_done(p);
}

/* An answer (host names resolved) for a service that fails over across datacenters: deliver
 * what it now serves. Returns false when the service does not fail over. */
static bool apply_failover(struct discovery_source *src, struct consul_sink *cs,
			   struct consul_update *u)
{
	struct consul_failover_pick pick;
	int r = consul_failover_take(cs->fo, u, &pick);

	if (r == 0)
		return false;
	if (u->skipped) /* unusable instances count as absent: the datacenter may be passed over */
		LOG_WARN(SUBSYS, "consul instances skipped",
			 "service=%s datacenter=%s skipped=%zu first_problem=%s", log_q(u->service),
			 log_q(u->dc ? u->dc : "local"), u->skipped, log_q(u->skip_reason));
	if (r != 1)
		return true;
	if (pick.changed && (pick.dc || pick.from))
		LOG_WARN(SUBSYS,
			 pick.dc ? "no passing instance in the datacenters before; failing over"
				 : "passing instances in the local datacenter again; failing back",
			 "service=%s datacenter=%s from=%s backends=%zu", log_q(u->service),
			 log_q(pick.dc ? pick.dc : "local"), log_q(pick.from ? pick.from : "local"),
			 pick.n);
	src->sink.deliver(src->sink.arg, u->service, pick.index, pick.backends, pick.n);
	return true;
}

static void on_catalog(struct discovery_source *src, struct consul_update *u);
static void catalog_keep(struct discovery_source *src, const struct consul_update *u);

/* Returns true when it took `u`. */
static bool apply_update(struct discovery_source *src, struct consul_sink *cs,
			 struct consul_update *u)
{
	if (consul_rollout_entry(src->rollout, u))
		return false;
	src->sink.synced(src->sink.arg, u->err == 0);
	if (!u->dc) /* a failover datacenter out of reach does not make Consul down */
		src->sink.up(src->sink.arg, u->err == 0);
	if (u->err)
		return false;
	if (cs == src->cat_cs && u->body) {
		on_catalog(src, u);
		return false;
	}
	if (cs == src->cat_cs)
		catalog_keep(src, u);
	warn_bad_mesh_ports(src, u);
	for (struct pending *o = src->pending; o; o = o->next)
		if (same_query(o->u, u))
			o->superseded = true; /* this answer is newer */
	if (u->n_named) {
		resolve_named(src, cs, u);
		return true;
	}
	settle(src, cs, u);
	return false;
}

/* An answer with its host names resolved: the failover choice for a service that fails over,
 * else the set itself (or the last one kept). */
static void settle(struct discovery_source *src, struct consul_sink *cs, struct consul_update *u)
{
	if (!cs->fo || !apply_failover(src, cs, u)) /* the catalog's watcher has no failover */
		deliver_or_keep(src, u);
}

/* An answer on the loop (consul_post). */
static void on_watch_update(struct consul_update *u, void *arg)
{
	struct consul_sink *cs = arg;

	if (!apply_update(cs->src, cs, u))
		consul_update_free(u);
}

/* --- registrations ---------------------------------------------------------------------------- */

struct reg_plan {
	struct consul_registration *regs;
	size_t n_regs;
	const char **deregs; /* point into the previous sink's reg_ids */
	size_t n_deregs;
};

static const char *reg_id(const struct config_consul_register *r)
{
	return r->id && r->id[0] ? r->id : r->name;
}

static bool cfg_registers(const struct config_consul *c, const char *id)
{
	for (size_t i = 0; c && i < c->n_reg; i++)
		if (strcmp(reg_id(&c->reg[i]), id) == 0)
			return true;
	return false;
}

/* What the new watcher registers (none when `c` is NULL), and which IDs the previous one
 * registered that are gone now. Records the new IDs in `s`. Returns 0 or -ENOMEM. */
static int plan_registrations(const struct config_consul *c, uint16_t mesh_port,
			      const struct consul_sink *prev, struct consul_sink *s,
			      struct reg_plan *p)
{
	size_t i, n_reg = c ? c->n_reg : 0, n_prev = prev ? prev->n_reg_ids : 0;

	memset(p, 0, sizeof(*p));
	p->regs = calloc(n_reg + 1, sizeof(*p->regs));
	p->deregs = calloc(n_prev + 1, sizeof(*p->deregs));
	s->reg_ids = calloc(n_reg + 1, sizeof(*s->reg_ids));
	if (!p->regs || !p->deregs || !s->reg_ids)
		return -ENOMEM;
	for (i = 0; i < n_reg; i++, p->n_regs++) {
		const struct config_consul_register *r = &c->reg[i];

		p->regs[i] = (struct consul_registration){
			.id = reg_id(r),
			.name = r->name,
			.endpoint = r->endpoint,
			.tags = (const char *const *)r->tags,
			.n_tags = r->n_tags,
			.meta = (const char *const *)r->meta,
			.n_meta = r->n_meta,
			.check = r->check_type,
			.interval_ns = r->check_interval_ns,
			.timeout_ns = r->check_timeout_ns,
			.http_path = r->check_http_path,
			.mesh_port = mesh_port,
			.deregister_critical_after_ns = c->deregister_critical_after_ns,
		};
		s->reg_ids[i] = strdup(p->regs[i].id);
		if (!s->reg_ids[i])
			return -ENOMEM;
		s->n_reg_ids++;
	}
	for (i = 0; i < n_prev; i++)
		if (!cfg_registers(c, prev->reg_ids[i]))
			p->deregs[p->n_deregs++] = prev->reg_ids[i];
	return 0;
}

static void plan_release(struct reg_plan *p)
{
	free(p->regs);
	free(p->deregs);
}

/* FNV-1a: enough to notice a rotated token without keeping a second copy of it. */
static uint64_t token_hash(const char *t)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; t && *t; t++)
		h = (h ^ (unsigned char)*t) * 0x100000001b3ull;
	return h;
}

static char *read_token(const struct config_consul *c, bool *failed)
{
	char *token;

	*failed = false;
	if (!c->token_file || !c->token_file[0])
		return NULL;
	token = consul_read_token(c->token_file);
	if (!token) {
		*failed = true;
		LOG_ERR(SUBSYS, "cannot read discovery.consul.token_file", "path=%s err=%s",
			log_q(c->token_file), log_q(strerror(errno)));
	}
	return token;
}

static void token_free(char *token)
{
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
}

/* What the watcher queries: every service in the local datacenter, then each failover
 * datacenter of the services that fail over. Returns the count (arrays malloc'd), or -ENOMEM. */
static ssize_t watch_targets(const struct config_consul *c, const char ***names, const char ***dcs)
{
	size_t n = c->n_services, k = 0;

	for (size_t i = 0; i < c->n_failover; i++)
		n += c->failover[i].n_datacenters;
	*names = calloc(n + 1, sizeof(**names));
	*dcs = calloc(n + 1, sizeof(**dcs));
	if (!*names || !*dcs)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_services; i++)
		(*names)[k++] = c->services[i];
	for (size_t i = 0; i < c->n_failover; i++)
		for (size_t j = 0; j < c->failover[i].n_datacenters; j++, k++) {
			(*names)[k] = c->failover[i].service;
			(*dcs)[k] = c->failover[i].datacenters[j];
		}
	return (ssize_t)k;
}

/* What one watcher queries besides its agent writes. */
struct targets {
	const char **names, **dcs; /* health watches */
	size_t n;
	const char **gets; /* raw blocking reads */
	size_t n_gets;
};

static void paths_free(char **p, size_t n)
{
	for (size_t i = 0; p && i < n; i++)
		free(p[i]);
	free(p);
}

/* Which of the local-datacenter watches start with selector documents: those the rollout asks
 * for (a resolver entry is known). malloc'd (NULL + ENOMEM). */
static bool *selectors_of(const struct consul_sink *s, const char **names, const char **dcs,
			  size_t n)
{
	bool *sel = calloc(n + 1, sizeof(*sel));

	for (size_t i = 0; sel && i < n; i++)
		sel[i] = !dcs[i] && consul_rollout_selectors(s->src->rollout, names[i]);
	return sel;
}

/* A watcher for `c` that watches `t`; NULL: the services of `c` and their config entries (the
 * configured services' watcher); empty: a cleanup watcher. */
static struct consul_watch *watch_new(const struct config_consul *c, const struct targets *t,
				      struct consul_sink *s, const struct reg_plan *p)
{
	const char **names = NULL, **dcs = NULL;
	char **entries = NULL;
	ssize_t n_targets = t ? (ssize_t)t->n : watch_targets(c, &names, &dcs);
	ssize_t n_entries = !t && n_targets >= 0 ? consul_rollout_paths(c, &entries) : 0;
	struct consul_watch_opts o = {
		.address = c->address,
		.datacenter = c->datacenter,
		.ca_file = c->ca_file,
		.services = t ? t->names : names,
		.service_dcs = t ? t->dcs : dcs,
		.n_services = n_targets > 0 ? (size_t)n_targets : 0,
		.gets = t ? t->gets : (const char *const *)entries,
		.n_gets = t		  ? t->n_gets
			  : n_entries > 0 ? (size_t)n_entries
					  : 0,
		.wait_ns = c->wait_ns,
		.regs = p->regs,
		.n_regs = p->n_regs,
		.deregs = p->deregs,
		.n_deregs = p->n_deregs,
		.resync_ns = c->resync_ns,
	};
	struct consul_watch *w = NULL;
	bool failed = false, *sel = NULL;
	char *token;

	if (!t) {
		/* A rollout step is an operator's action: applied at once, not rate-limited like
		 * instance churn (a few steps in a row still go through). */
		o.get_rate_burst = 5;
		o.get_rate_period_ns = 1000000000ull;
		if (n_targets >= 0)
			o.selectors = sel = selectors_of(s, names, dcs, (size_t)n_targets);
	}
	token = n_targets < 0 || n_entries < 0 || (!t && !sel) ? NULL : read_token(c, &failed);
	if (n_targets < 0 || n_entries < 0 || (!t && !sel) || failed)
		goto out;
	o.token = token;
	s->token_hash = token_hash(token);
	w = consul_watch_new(&o, consul_post_update, s->post);
	if (!w)
		LOG_ERR(SUBSYS, "cannot start consul watcher", "err=%s", log_q(strerror(errno)));
	token_free(token);
out:
	free(names);
	free(dcs);
	free(sel);
	paths_free(entries, n_entries > 0 ? (size_t)n_entries : 0);
	return w;
}

/* --- catalog discovery ------------------------------------------------------------------------ */

#define CATALOG_SERVICES "/v1/catalog/services"
#define CATALOG_SERVICE "/v1/catalog/service/"

static struct catalog_set *catalog_set(const struct discovery_source *src, const char *service)
{
	for (size_t i = 0; i < src->n_cat_sets; i++)
		if (!strcmp(src->cat_sets[i].service, service))
			return &src->cat_sets[i];
	return NULL;
}

static void catalog_sets_free(struct discovery_source *src)
{
	for (size_t i = 0; i < src->n_cat_sets; i++) {
		free(src->cat_sets[i].service);
		free(src->cat_sets[i].b);
	}
	free(src->cat_sets);
	src->cat_sets = NULL;
	src->n_cat_sets = 0;
}

/* Keeps a copy of the answer of a tagged service: its set is delivered again once defined. */
static void catalog_keep(struct discovery_source *src, const struct consul_update *u)
{
	struct catalog_set *cs = catalog_set(src, u->service), *v;
	struct config_backend *b = malloc((u->n_backends + 1) * sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < u->n_backends; i++) {
		b[i] = u->backends[i];
		b[i].subset = NULL; /* the selector document stays the answer's */
	}
	if (!cs) {
		v = realloc(src->cat_sets, (src->n_cat_sets + 1) * sizeof(*v));
		if (!v || !(v[src->n_cat_sets].service = strdup(u->service))) {
			if (v)
				src->cat_sets = v;
			free(b);
			return;
		}
		src->cat_sets = v;
		cs = &v[src->n_cat_sets++];
		cs->b = NULL;
	}
	free(cs->b);
	cs->b = b;
	cs->n = u->n_backends;
	cs->index = u->index;
}

/* Forgets the sets of services no longer tagged. */
static void catalog_sets_prune(struct discovery_source *src)
{
	size_t n = consul_catalog_count(src->cat);

	for (size_t i = 0; i < src->n_cat_sets;) {
		size_t j;

		for (j = 0;
		     j < n && strcmp(consul_catalog_name(src->cat, j), src->cat_sets[i].service);
		     j++)
			;
		if (j < n) {
			i++;
			continue;
		}
		free(src->cat_sets[i].service);
		free(src->cat_sets[i].b);
		src->cat_sets[i] = src->cat_sets[--src->n_cat_sets];
	}
}

/* Hands the registry the services the catalog defines now (once every tagged service's
 * instances were read), then their last known backends. */
static void catalog_define(struct discovery_source *src)
{
	struct discovery_def *defs;
	size_t n;

	if (consul_catalog_defs(src->cat, &defs, &n))
		return;
	src->sink.define(src->sink.arg, defs, n);
	for (size_t i = 0; i < n; i++) {
		const struct catalog_set *cs = catalog_set(src, defs[i].name);
		struct config_backend *b = cs ? malloc((cs->n + 1) * sizeof(*b)) : NULL;

		if (!b)
			continue;
		if (cs->n)
			memcpy(b, cs->b, cs->n * sizeof(*b));
		src->sink.deliver(src->sink.arg, defs[i].name, cs->index, b, cs->n);
	}
	free(defs);
}

static int catalog_watch(struct discovery_source *src);

static void on_catalog_services(struct discovery_source *src, struct consul_update *u)
{
	char why[160] = "", **names;
	bool changed;
	size_t n;
	int err = consul_parse_catalog_services(u->body, u->body_len, src->conf->catalog_tag,
						&names, &n, why, sizeof(why));

	if (!err)
		err = consul_catalog_set_names(src->cat, names, n, &changed);
	if (err) {
		LOG_WARN(SUBSYS, "cannot read the consul catalog; keeping the last services",
			 "err=%s why=%s", log_q(strerror(-err)), log_q(why));
		return;
	}
	if (changed) {
		LOG_INFO(SUBSYS, "consul catalog: tagged services changed", "tag=%s services=%zu",
			 log_q(src->conf->catalog_tag), n);
		catalog_sets_prune(src);
		if (catalog_watch(src))
			return;
	}
	catalog_define(src);
}

static void on_catalog_service(struct discovery_source *src, const char *name,
			       struct consul_update *u)
{
	enum consul_catalog_state st;
	const char *why;
	int r = consul_catalog_set_meta(src->cat, name, u->body, u->body_len, &st, &why);

	if (r <= 0)
		return;
	if (st == CONSUL_CATALOG_BAD)
		LOG_WARN(SUBSYS, "consul catalog service skipped: bad mesh-vip",
			 "service=%s why=%s", log_q(name), log_q(why));
	else if (st == CONSUL_CATALOG_NO_VIP)
		LOG_INFO(SUBSYS, "consul catalog service tagged without mesh-vip; not served",
			 "service=%s", log_q(name));
	catalog_define(src);
}

/* An answer of the catalog watcher's raw reads. */
static void on_catalog(struct discovery_source *src, struct consul_update *u)
{
	char name[256];
	const char *p = u->service;
	size_t n;

	if (!strncmp(p, CATALOG_SERVICES, strlen(CATALOG_SERVICES)) &&
	    (!p[strlen(CATALOG_SERVICES)] || p[strlen(CATALOG_SERVICES)] == '?')) {
		on_catalog_services(src, u);
		return;
	}
	if (strncmp(p, CATALOG_SERVICE, strlen(CATALOG_SERVICE)))
		return;
	p += strlen(CATALOG_SERVICE);
	n = strcspn(p, "?");
	if (n >= sizeof(name))
		return;
	memcpy(name, p, n);
	name[n] = '\0';
	on_catalog_service(src, name, u);
}

/* `path` with the datacenter of `c` added (`?` or `&` as needed). */
static char *dc_path(const struct config_consul *c, const char *path)
{
	const char *dc = c->datacenter && c->datacenter[0] ? c->datacenter : NULL;
	size_t len = strlen(path) + (dc ? strlen(dc) + 5 : 0) + 1;
	char *out = malloc(len);

	if (out)
		snprintf(out, len, "%s%s%s%s", path, dc ? (strchr(path, '?') ? "&" : "?") : "",
			 dc ? "dc=" : "", dc ? dc : "");
	return out;
}

/* Starts the catalog watcher for the tagged services known now (replacing the running one):
 * the catalog, each tagged service's instances (for mesh-vip) and its health (backends). */
static int catalog_watch(struct discovery_source *src)
{
	const struct config_consul *c = src->conf;
	size_t n = consul_catalog_count(src->cat), i, k = 0;
	const char **names = calloc(n + 1, sizeof(*names));
	char **gets = calloc(n + 2, sizeof(*gets));
	struct consul_sink *s = calloc(1, sizeof(*s));
	struct reg_plan none = { 0 };
	int err = -ENOMEM;

	if (!names || !gets || !s || !(gets[k++] = dc_path(c, CATALOG_SERVICES)))
		goto out;
	for (i = 0; i < n; i++, k++) {
		char path[512];

		names[i] = consul_catalog_name(src->cat, i);
		snprintf(path, sizeof(path), CATALOG_SERVICE "%s?tag=%s", names[i], c->catalog_tag);
		if (!(gets[k] = dc_path(c, path)))
			goto out;
	}
	atomic_init(&s->refs, 1);
	s->src = src;
	s->post = consul_post_new(src->loop, on_watch_update, s);
	if (s->post)
		s->watch = watch_new(c, &(struct targets){ names, NULL, n, (const char **)gets, k },
				     s, &none);
	err = !s->post ? -ENOMEM : s->watch ? 0 : -EIO;
out:
	for (i = 0; gets && i < k; i++)
		free(gets[i]);
	free(gets);
	free(names);
	if (err) {
		LOG_ERR(SUBSYS, "cannot start the consul catalog watcher", "err=%s",
			log_q(strerror(-err)));
		if (s)
			sink_put(s);
		return err;
	}
	sink_stop(src->cat_cs);
	src->cat_cs = s;
	return 0;
}

/* Starts catalog discovery afresh for `c` (nothing known), or stops it when `c` turns it off. */
static int catalog_start(struct discovery_source *src, const struct config_consul *c)
{
	sink_stop(src->cat_cs);
	src->cat_cs = NULL;
	consul_catalog_free(src->cat);
	src->cat = NULL;
	catalog_sets_free(src);
	if (!c->catalog_enabled)
		return 0;
	src->cat = consul_catalog_new();
	if (!src->cat)
		return -ENOMEM;
	return catalog_watch(src);
}

static bool consul_defines(const struct mesh_config *cfg)
{
	return cfg->discovery == CONFIG_DISCOVERY_CONSUL && cfg->consul.catalog_enabled;
}

/* --- TTL checks: meshd's own health of the registered addresses -------------------------------- */

static bool ep_same(const struct config_endpoint *a, const struct config_endpoint *b)
{
	return !memcmp(a, b, sizeof(*a));
}

static size_t sick_find(const struct discovery_source *src, const char *service,
			const struct config_endpoint *ep)
{
	for (size_t i = 0; i < src->n_sick; i++)
		if (!strcmp(src->sick[i].service, service) && ep_same(&src->sick[i].ep, ep))
			return i;
	return SIZE_MAX;
}

/* What every TTL registration of `c` reports: passing unless meshd's check of its address in
 * its service says unhealthy (no check of it at all: passing, as health_checker_healthy). */
static void report_health(struct discovery_source *src, const struct config_consul *c,
			  struct consul_watch *w)
{
	for (size_t i = 0; i < c->n_reg; i++)
		consul_watch_set_passing(
		    w, i, sick_find(src, c->reg[i].name, &c->reg[i].endpoint) == SIZE_MAX);
}

static void consul_backend_health(struct discovery_source *src, const char *service,
				  const struct config_endpoint *ep, bool healthy)
{
	size_t i = sick_find(src, service, ep);
	struct sick *n;

	if (healthy && i != SIZE_MAX) {
		free(src->sick[i].service);
		src->sick[i] = src->sick[--src->n_sick];
	} else if (!healthy && i == SIZE_MAX) {
		n = realloc(src->sick, (src->n_sick + 1) * sizeof(*n));
		if (!n)
			return;
		src->sick = n;
		n[src->n_sick].service = strdup(service);
		n[src->n_sick].ep = *ep;
		if (n[src->n_sick].service)
			src->n_sick++;
	}
	if (src->cs && src->conf)
		report_health(src, src->conf, src->cs->watch);
}

static bool consul_failover(struct discovery_source *src, const char *service, const char **dc)
{
	return src->cs && consul_failover_serving(src->cs->fo, service, dc);
}

static int consul_registration(struct discovery_source *src, size_t i,
			       struct discovery_registration *out)
{
	if (!src->cs || !src->cs->watch)
		return -ENOENT;
	return consul_watch_reg_state(src->cs->watch, i, out);
}

/* A new watcher for `c`; `prev` (may be NULL) is the one it replaces. */
static int sink_new(struct discovery_source *src, const struct config_consul *c,
		    const struct consul_sink *prev, struct consul_sink **out)
{
	struct consul_sink *s = calloc(1, sizeof(*s));
	struct reg_plan plan;
	int err;

	if (!s)
		return -ENOMEM;
	atomic_init(&s->refs, 1);
	s->src = src;
	memset(&plan, 0, sizeof(plan));
	s->fo = consul_failover_new(c);
	s->post = consul_post_new(src->loop, on_watch_update, s);
	err = s->fo && s->post ? plan_registrations(c, src->mesh_port, prev, s, &plan) : -ENOMEM;
	if (!err) {
		s->watch = watch_new(c, NULL, s, &plan);
		err = s->watch ? 0 : -EIO;
	}
	plan_release(&plan);
	if (!err)
		report_health(src, c, s->watch);
	if (err) {
		sink_put(s);
		return err;
	}
	*out = s;
	return 0;
}

static void sink_stop(struct consul_sink *s)
{
	if (!s)
		return;
	consul_watch_free(s->watch); /* joins: no more posts after this */
	s->watch = NULL;
	consul_post_close(s->post); /* and none queued runs */
	s->post = NULL;
	s->src = NULL;
	sink_put(s);
}

/* --- switching away: deregistration in the background ----------------------------------------- */

/* Waits (bounded) for the deregistrations of `w`, then frees it. */
static void dereg_wait(struct consul_watch *w, uint64_t give_up_ns)
{
	uint64_t start = evloop_now_ns();

	while (!consul_watch_writes_done(w) && evloop_now_ns() - start < give_up_ns)
		usleep(50000);
	if (!consul_watch_writes_done(w))
		LOG_WARN(SUBSYS,
			 "gave up deregistering from consul; the agent reaps them after "
			 "deregister_critical_after",
			 NULL);
	consul_watch_free(w);
}

static void *dereg_main(void *arg)
{
	dereg_wait(arg, DEREGISTER_GIVE_UP_NS);
	return NULL;
}

/* Take our registrations back out of the agent, retried for a while by a watcher of its own:
 * in the background when the running config selects another source (the loop never waits for
 * Consul), or waiting up to DEREGISTER_ON_STOP_NS when meshd stops (`wait`). */
static void deregister_all(const struct config_consul *c, struct consul_sink *prev, bool wait)
{
	struct consul_sink *s = calloc(1, sizeof(*s));
	struct reg_plan plan;
	pthread_t t;

	if (!s || !prev->n_reg_ids)
		goto out;
	atomic_init(&s->refs, 1);
	if (plan_registrations(NULL, 0, prev, s, &plan) == 0) {
		struct consul_watch *w = watch_new(c, &(struct targets){ 0 }, s, &plan);

		if (w && wait)
			dereg_wait(w, DEREGISTER_ON_STOP_NS);
		else if (w && pthread_create(&t, NULL, dereg_main, w) == 0)
			pthread_detach(t);
		else if (w)
			consul_watch_free(w);
	}
	plan_release(&plan);
out:
	if (s)
		sink_put(s); /* the cleanup watcher posts nothing: it watches no service */
}

/* --- the source ops --------------------------------------------------------------------------- */

static bool consul_provides(const struct mesh_config *cfg, const char *name)
{
	if (cfg->discovery != CONFIG_DISCOVERY_CONSUL)
		return false;
	for (size_t i = 0; i < cfg->consul.n_services; i++)
		if (strcmp(cfg->consul.services[i], name) == 0)
			return true;
	return false;
}

static uint16_t mesh_port_of(const struct mesh_config *cfg)
{
	return cfg->mtls.enabled ? cfg->mtls.inbound_listen.port : 0;
}

static void src_free(struct discovery_source *src)
{
	src->stopping = true;
	sink_stop(src->cat_cs);
	consul_catalog_free(src->cat);
	catalog_sets_free(src);
	dns_resolver_free(src->res); /* pending answers finish cancelled, undelivered */
	for (size_t i = 0; i < src->n_kept; i++)
		free(src->kept[i]);
	free(src->kept);
	warned_free(src);
	for (size_t i = 0; i < src->n_sick; i++)
		free(src->sick[i].service);
	free(src->sick);
	consul_rollout_free(src->rollout);
	free(src);
}

/* The rollout asks for a service's selector documents (consul_selectors_cb). */
static void want_selectors(void *arg, const char *service, bool on)
{
	struct discovery_source *src = arg;

	if (src->cs)
		consul_watch_selectors(src->cs->watch, service, on);
}

static int consul_start(const struct mesh_config *cfg, struct evloop *loop,
			const struct discovery_sink *sink, struct discovery_source **out)
{
	struct discovery_source *src = calloc(1, sizeof(*src));
	int err;

	if (!src)
		return -ENOMEM;
	src->sink = *sink;
	src->loop = loop;
	src->res =
	    dns_resolver_new(loop, &(struct dns_resolver_opts){ .servers = cfg->dns.servers,
								.n_servers = cfg->dns.n_servers });
	err = src->res ? 0 : -errno;
	src->rollout = err ? NULL : consul_rollout_new(sink, want_selectors, src);
	if (!err && !src->rollout)
		err = -ENOMEM;
	if (err) {
		src_free(src);
		return err;
	}
	src->mesh_port = mesh_port_of(cfg);
	src->conf = &cfg->consul;
	err = sink_new(src, &cfg->consul, NULL, &src->cs);
	if (!err)
		err = catalog_start(src, &cfg->consul);
	if (err) {
		sink_stop(src->cs);
		src_free(src);
		return err;
	}
	LOG_INFO(SUBSYS, "consul watcher started", "address=%s services=%zu registrations=%zu",
		 log_q(cfg->consul.address), cfg->consul.n_services, cfg->consul.n_reg);
	*out = src;
	return 0;
}

static bool str_same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* True when the token file now holds something else than what the running watcher sends. */
static bool token_rotated(const struct consul_sink *s, const char *path)
{
	char *token;
	bool rotated;

	if (!s || !path || !path[0])
		return false;
	token = consul_read_token(path);
	if (!token)
		return true; /* let the restart report the problem */
	rotated = token_hash(token) != s->token_hash;
	token_free(token);
	return rotated;
}

static bool strs_same(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (!str_same(a[i], b[i]))
			return false;
	return true;
}

static bool reg_same(const struct config_consul_register *a, const struct config_consul_register *b)
{
	return str_same(reg_id(a), reg_id(b)) && str_same(a->name, b->name) &&
	       ep_same(&a->endpoint, &b->endpoint) &&
	       strs_same(a->tags, a->n_tags, b->tags, b->n_tags) &&
	       strs_same(a->meta, a->n_meta, b->meta, b->n_meta) &&
	       a->check_type == b->check_type && a->check_interval_ns == b->check_interval_ns &&
	       a->check_timeout_ns == b->check_timeout_ns &&
	       str_same(a->check_http_path, b->check_http_path);
}

/* True when the two settings would run the same watcher. */
static bool same_settings(const struct config_consul *a, const struct config_consul *b)
{
	size_t i;

	if (!str_same(a->address, b->address) || !str_same(a->datacenter, b->datacenter) ||
	    !str_same(a->token_file, b->token_file) || !str_same(a->ca_file, b->ca_file) ||
	    a->wait_ns != b->wait_ns || a->n_services != b->n_services ||
	    a->resync_ns != b->resync_ns ||
	    a->deregister_critical_after_ns != b->deregister_critical_after_ns ||
	    a->n_reg != b->n_reg || a->catalog_enabled != b->catalog_enabled ||
	    !str_same(a->catalog_tag, b->catalog_tag))
		return false;
	for (i = 0; i < a->n_services; i++)
		if (!str_same(a->services[i], b->services[i]))
			return false;
	for (i = 0; i < a->n_reg; i++)
		if (!reg_same(&a->reg[i], &b->reg[i]))
			return false;
	if (a->n_failover != b->n_failover)
		return false;
	for (i = 0; i < a->n_failover; i++)
		if (!str_same(a->failover[i].service, b->failover[i].service) ||
		    !strs_same(a->failover[i].datacenters, a->failover[i].n_datacenters,
			       b->failover[i].datacenters, b->failover[i].n_datacenters))
			return false;
	return true;
}

static bool same_servers(const struct config_dns *a, const struct config_dns *b)
{
	return a->n_servers == b->n_servers &&
	       (!a->n_servers ||
		!memcmp(a->servers, b->servers, a->n_servers * sizeof(*a->servers)));
}

/* The new watcher (and resolver) replaces the running one only once it could start. Other
 * resolver servers restart the watcher too: its fresh read resolves host names again. */
static int consul_reload(struct discovery_source *src, const struct mesh_config *old,
			 const struct mesh_config *new)
{
	bool servers = same_servers(&old->dns, &new->dns);
	struct dns_resolver *res = NULL;
	struct consul_sink *s;
	int err;

	uint16_t mesh_port = src->mesh_port;

	if (servers && same_settings(&old->consul, &new->consul) &&
	    mesh_port_of(old) == mesh_port_of(new) &&
	    !token_rotated(src->cs, new->consul.token_file)) {
		src->conf = &new->consul;
		return 0;
	}
	if (!servers && !(res = dns_resolver_new(src->loop, &(struct dns_resolver_opts){
								.servers = new->dns.servers,
								.n_servers = new->dns.n_servers })))
		return -errno;
	src->mesh_port = mesh_port_of(new);
	err = sink_new(src, &new->consul, src->cs, &s);
	if (err) {
		src->mesh_port = mesh_port;
		dns_resolver_free(res);
		return err;
	}
	sink_stop(src->cs);
	src->cs = s;
	src->conf = &new->consul;
	if (catalog_start(src, &new->consul))
		LOG_ERR(SUBSYS,
			"consul catalog discovery not restarted; its services stay as they are",
			NULL);
	if (res) { /* answers still resolving with the old servers are dropped */
		src->stopping = true;
		dns_resolver_free(src->res);
		src->stopping = false;
		src->res = res;
	}
	LOG_INFO(SUBSYS, "consul watcher restarted", "address=%s services=%zu registrations=%zu",
		 log_q(new->consul.address), new->consul.n_services, new->consul.n_reg);
	return 0;
}

static void consul_stop(struct discovery_source *src, bool switched)
{
	if (!src)
		return;
	if ((switched || src->conf->deregister_on_stop) && src->cs && src->cs->n_reg_ids)
		deregister_all(src->conf, src->cs, !switched);
	sink_stop(src->cs); /* no more posts: then the resolver (and what waits on it) goes */
	src_free(src);
}

static bool consul_files_changed(const struct discovery_source *src, const struct mesh_config *cfg)
{
	return token_rotated(src->cs, cfg->consul.token_file);
}

const struct discovery_source_ops discovery_consul_source = {
	.name = "consul",
	.kind = CONFIG_DISCOVERY_CONSUL,
	.provides = consul_provides,
	.defines = consul_defines,
	.start = consul_start,
	.reload = consul_reload,
	.stop = consul_stop,
	.files_changed = consul_files_changed,
	.registration = consul_registration,
	.backend_health = consul_backend_health,
	.failover = consul_failover,
};
