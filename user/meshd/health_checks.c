/* meshd's health component: one active check per (service, backend) for every service whose
 * effective load_balancer.health_check.type is tcp or http. Results feed a rise/fall state
 * (health/health_state.h); each transition is logged, counted in m->health_transitions and
 * written to the backend's health flag in the datapath. The backend sets come from discovery and
 * are re-read every second and on reload, so checks follow discovery without resetting the state
 * of backends that stay. Runs on the event-loop thread only.
 *
 * Checks are never redirected by our own datapath: they connect to backend addresses, and a
 * backend whose address:port is one of our VIPs is never probed (connect4 only rewrites VIPs).
 * Their sockets also carry HEALTH_PROBE_MARK. connect4 records nothing for them, so sockops never
 * counts them as application traffic. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "health/health_probe.h"
#include "health/health_state.h"
#include "meshd/meshd.h"

#define SUBSYS "health"
#define SYNC_INTERVAL_NS 1000000000ull
#define MIN_INTERVAL_NS 10000000ull /* 10 ms: a zero interval must not spin the loop */
#define DEFAULT_TIMEOUT_NS 1000000000ull

struct health_service;

struct health_target {
	struct health_service *svc;
	struct config_endpoint ep;
	struct health_state st;
	int64_t timer;		    /* next check; 0 while a probe runs or when unscheduled */
	struct health_probe *probe; /* in flight, or NULL */
	bool is_vip;		    /* address:port is one of our VIPs: never probed */
	bool seen;		    /* still in the backend set (sync mark) */
	struct health_target *next;
};

struct health_service {
	struct health *h;
	char *name;
	struct config_health_check hc; /* effective settings; http_path owned */
	struct health_target *targets;
	bool seen;
	struct health_service *next;
};

struct health {
	struct meshd *m;
	struct health_service *services;
	int64_t sync_timer;
	uint64_t rng; /* xorshift64 state for first-check jitter */
};

static uint32_t next_random(struct health *h)
{
	uint64_t x = h->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	h->rng = x;
	return (uint32_t)(x >> 32);
}

static bool endpoint_eq(const struct config_endpoint *a, const struct config_endpoint *b)
{
	if (a->family != b->family || a->port != b->port)
		return false;
	if (a->family == AF_INET6)
		return memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6)) == 0;
	return a->addr.v4.s_addr == b->addr.v4.s_addr;
}

static uint64_t check_interval(const struct health_service *s)
{
	return s->hc.interval_ns > MIN_INTERVAL_NS ? s->hc.interval_ns : MIN_INTERVAL_NS;
}

static struct health_service *find_service(const struct health *h, const char *name)
{
	struct health_service *s;

	for (s = h->services; s; s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

static struct health_target *find_target(const struct health_service *s,
					 const struct config_endpoint *ep)
{
	struct health_target *t;

	for (t = s->targets; t; t = t->next)
		if (endpoint_eq(&t->ep, ep))
			return t;
	return NULL;
}

static void target_schedule(struct health_target *t, uint64_t delay_ns);

/* Logs, counts and pushes one transition into the datapath. */
static void target_report(struct health_target *t, const char *reason)
{
	struct meshd *m = t->svc->h->m;
	char ep[64];
	int err;

	config_endpoint_str(&t->ep, ep, sizeof(ep));
	LOG_INFO(SUBSYS, "backend health changed", "service=%s backend=%s healthy=%s reason=%s",
		 t->svc->name, ep, t->st.healthy ? "true" : "false", log_q(reason));
	m->health_transitions[t->st.healthy ? 1 : 0]++;
	if (!m->dp)
		return;
	err = datapath_backend_set_health(m->dp, t->svc->name, &t->ep, t->st.healthy);
	if (err)
		LOG_WARN(SUBSYS, "cannot write backend health to the datapath",
			 "service=%s backend=%s err=%s", t->svc->name, ep, log_q(strerror(-err)));
}

static void on_probe_result(bool ok, const char *reason, void *arg)
{
	struct health_target *t = arg;
	const struct health_thresholds th = { .unhealthy = t->svc->hc.unhealthy_threshold,
					      .healthy = t->svc->hc.healthy_threshold };
	char ep[64];

	t->probe = NULL;
	if (log_enabled(LOG_LEVEL_DEBUG))
		LOG_DEBUG(SUBSYS, "health check", "service=%s backend=%s ok=%s reason=%s",
			  t->svc->name, config_endpoint_str(&t->ep, ep, sizeof(ep)),
			  ok ? "true" : "false", log_q(reason));
	if (health_state_record(&t->st, &th, ok, evloop_now_ns()))
		target_report(t, reason);
	target_schedule(t, check_interval(t->svc));
}

static void on_check_timer(struct evloop *loop, void *arg)
{
	struct health_target *t = arg;
	const struct health_service *s = t->svc;
	struct health_probe_opts opts = {
		.type = s->hc.type,
		.target = t->ep,
		.timeout_ns = s->hc.timeout_ns ? s->hc.timeout_ns : DEFAULT_TIMEOUT_NS,
		.http_path = s->hc.http_path,
	};
	char ep[64];

	t->timer = 0;
	t->probe = health_probe_start(loop, &opts, on_probe_result, t);
	if (t->probe)
		return;
	/* Our own fault (no fd, no memory): not the backend's, so not recorded against it. */
	LOG_WARN(SUBSYS, "cannot start health check", "service=%s backend=%s err=%s", s->name,
		 config_endpoint_str(&t->ep, ep, sizeof(ep)), log_q(strerror(errno)));
	target_schedule(t, check_interval(s));
}

static void target_schedule(struct health_target *t, uint64_t delay_ns)
{
	struct evloop *loop = t->svc->h->m->loop;

	if (t->timer > 0)
		evloop_del_timer(loop, t->timer);
	t->timer = evloop_add_timer(loop, delay_ns, on_check_timer, t);
	if (t->timer < 0) {
		/* The next sync reschedules targets left without a timer. */
		LOG_WARN(SUBSYS, "cannot arm health check timer", "service=%s err=%s", t->svc->name,
			 log_q(strerror((int)-t->timer)));
		t->timer = 0;
	}
}

static void target_schedule_jittered(struct health_target *t)
{
	target_schedule(t, health_first_delay_ns(check_interval(t->svc), next_random(t->svc->h)));
}

/* Frees one target. `reset_flag`: the backend stays in the datapath without checks (its check was
 * removed), so an unhealthy flag we set must be cleared: nobody else would ever clear it. */
static void target_free(struct health_target *t, bool reset_flag)
{
	struct meshd *m = t->svc->h->m;

	if (t->timer > 0)
		evloop_del_timer(m->loop, t->timer);
	health_probe_cancel(t->probe);
	if (reset_flag && !t->st.healthy && m->dp)
		datapath_backend_set_health(m->dp, t->svc->name, &t->ep,
					    true); /* -ENOENT is fine */
	free(t);
}

static bool is_vip(const struct mesh_config *cfg, const struct config_endpoint *ep)
{
	for (size_t i = 0; i < cfg->n_services; i++)
		if (endpoint_eq(&cfg->services[i].vip, ep))
			return true;
	return false;
}

static struct health_target *target_new(struct health_service *s, const struct mesh_config *cfg,
					const struct config_endpoint *ep)
{
	struct health_target *t = calloc(1, sizeof(*t));
	char buf[64];

	if (!t)
		return NULL;
	t->svc = s;
	t->ep = *ep;
	health_state_init(&t->st, evloop_now_ns());
	t->is_vip = is_vip(cfg, ep);
	if (t->is_vip)
		LOG_WARN(SUBSYS, "backend address is a service VIP; not health checked",
			 "service=%s backend=%s", s->name,
			 config_endpoint_str(ep, buf, sizeof(buf)));
	t->next = s->targets;
	s->targets = t;
	return t;
}

static void target_sync(struct health_service *s, const struct mesh_config *cfg,
			const struct config_endpoint *ep)
{
	struct health_target *t = find_target(s, ep);

	if (!t)
		t = target_new(s, cfg, ep);
	if (!t) {
		LOG_WARN(SUBSYS, "out of memory adding a health check", "service=%s", s->name);
		return;
	}
	t->seen = true;
	if (!t->is_vip && !t->timer && !t->probe)
		target_schedule_jittered(t);
}

/* Applies new effective settings. Counters and health stay; pending checks are re-spread over a
 * changed interval; a probe in flight finishes with the settings it started with. */
static int service_retune(struct health_service *s, const struct config_health_check *hc)
{
	bool interval_changed = s->hc.interval_ns != hc->interval_ns;
	char *path = NULL;
	struct health_target *t;

	if (hc->http_path && !(path = strdup(hc->http_path)))
		return -ENOMEM;
	free(s->hc.http_path);
	s->hc = *hc;
	s->hc.http_path = path;
	if (!interval_changed)
		return 0;
	for (t = s->targets; t; t = t->next)
		if (t->timer > 0)
			target_schedule_jittered(t);
	return 0;
}

static void service_free(struct health_service *s, bool reset_flags)
{
	struct health_target *t, *next;

	for (t = s->targets; t; t = next) {
		next = t->next;
		target_free(t, reset_flags);
	}
	free(s->hc.http_path);
	free(s->name);
	free(s);
}

static struct health_service *service_get(struct health *h, const char *name)
{
	struct health_service *s = find_service(h, name);

	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strdup(name))) {
		free(s);
		return NULL;
	}
	s->h = h;
	s->next = h->services;
	h->services = s;
	return s;
}

/* The effective health check of a service: its own merged block, else the global one (services
 * known only to discovery). */
static const struct config_health_check *effective_check(const struct mesh_config *cfg,
							 const struct config_service *own)
{
	return own ? &own->load_balancer.health_check : &cfg->load_balancer.health_check;
}

static void service_sync(struct health *h, const struct mesh_config *cfg, const char *name)
{
	const struct config_service *own = config_service_find(cfg, name);
	const struct config_health_check *hc = effective_check(cfg, own);
	const struct config_service *src = NULL;
	struct health_service *s;

	if (hc->type == CONFIG_HEALTH_NONE)
		return;
	/* Static backends come from `cfg` itself, so a reload sees the new set before discovery
	 * has applied it; other backends from what discovery last learned. */
	if (cfg->discovery != CONFIG_DISCOVERY_STATIC)
		src = discovery_service(h->m, name);
	if (!src)
		src = own;
	if (!src)
		return;
	s = service_get(h, name);
	if (!s || service_retune(s, hc) < 0) {
		LOG_WARN(SUBSYS, "out of memory adding health checks", "service=%s", name);
		return;
	}
	s->seen = true;
	for (size_t i = 0; i < src->n_backends; i++)
		target_sync(s, cfg, &src->backends[i].endpoint);
}

/* Drops services and targets the last sync did not see, and clears the marks. */
static void sweep(struct health *h)
{
	struct health_service **sp = &h->services, *s;
	struct health_target **tp, *t;

	while ((s = *sp)) {
		if (!s->seen) {
			*sp = s->next;
			service_free(s, true);
			continue;
		}
		s->seen = false;
		for (tp = &s->targets; (t = *tp);) {
			if (t->seen) {
				t->seen = false;
				tp = &t->next;
				continue;
			}
			*tp = t->next;
			target_free(t, true);
		}
		sp = &s->next;
	}
}

/* Brings the set of checks in line with `cfg` and discovery: adds, retunes, removes. */
static void health_sync(struct health *h, const struct mesh_config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->n_services; i++)
		service_sync(h, cfg, cfg->services[i].name);
	if (cfg->discovery == CONFIG_DISCOVERY_CONSUL)
		for (i = 0; i < cfg->consul.n_services; i++)
			service_sync(h, cfg, cfg->consul.services[i]);
	if (cfg->discovery == CONFIG_DISCOVERY_DNS)
		for (i = 0; i < cfg->dns.n_services; i++)
			service_sync(h, cfg, cfg->dns.services[i].name);
	sweep(h);
}

static void on_sync_timer(struct evloop *loop, void *arg)
{
	struct health *h = arg;

	h->sync_timer = 0;
	health_sync(h, h->m->cfg);
	h->sync_timer = evloop_add_timer(loop, SYNC_INTERVAL_NS, on_sync_timer, h);
	if (h->sync_timer < 0) {
		LOG_WARN(SUBSYS, "cannot arm health sync timer; checks follow reloads only",
			 "err=%s", log_q(strerror((int)-h->sync_timer)));
		h->sync_timer = 0;
	}
}

/* Component start: creates the checks for the running config and discovery state, each first
 * check jittered over its interval. Needs m->loop and m->cfg. Returns 0 or -errno. */
int health_start(struct meshd *m)
{
	struct health *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->m = m;
	h->rng = evloop_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
	m->health = h;
	on_sync_timer(m->loop, h);
	if (!h->sync_timer) {
		health_stop(m);
		return -ENOMEM;
	}
	return 0;
}

/* Component stop: cancels every timer and probe and frees the state. Datapath health flags are
 * left as they are: the datapath outlives the daemon. */
void health_stop(struct meshd *m)
{
	struct health *h = m->health;
	struct health_service *s, *next;

	if (!h)
		return;
	if (h->sync_timer > 0)
		evloop_del_timer(m->loop, h->sync_timer);
	for (s = h->services; s; s = next) {
		next = s->next;
		service_free(s, false);
	}
	free(h);
	m->health = NULL;
}

/* Component reload: applies `new` (m->cfg is still `old`): checks for new services or backends
 * start healthy, removed ones stop (clearing an unhealthy flag they set), changed settings
 * retune without resetting any state. Returns 0. */
int health_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		  const struct config_diff *diff)
{
	if (m->health)
		health_sync(m->health, new);
	return 0;
}

bool health_backend_healthy(const struct meshd *m, const char *service,
			    const struct config_endpoint *backend)
{
	const struct health_service *s = m->health ? find_service(m->health, service) : NULL;
	const struct health_target *t = s ? find_target(s, backend) : NULL;

	return t ? t->st.healthy : true;
}
