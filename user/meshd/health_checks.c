/* meshd's health component: feeds the health checker (health/health_checker.h) with every
 * service whose effective load_balancer.health_check.type is tcp or http and its backends from
 * discovery, re-read whenever a service's backends are written (health_backends_changed()) and
 * on reload; turns each transition into a counter
 * (m->health_transitions) and a write of the backend's health flag into the datapath. Runs on the
 * event-loop thread only.
 *
 * Checks are never redirected by our own datapath: they connect to backend addresses, and a
 * backend whose address:port is one of our VIPs (what connect4 rewrites) is never probed. Their
 * sockets also carry HEALTH_PROBE_MARK. connect4 records nothing for them, so sockops never
 * counts them as application traffic. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "health/health_checker.h"
#include "meshd/meshd.h"

#define SUBSYS "health"

struct health {
	struct meshd *m;
	struct health_checker *checker;
	const struct mesh_config *cfg; /* config of the sync in progress (VIP lookups) */
	int64_t sync_timer;	       /* a sync is due on the next loop iteration */
};

static void set_flag(struct meshd *m, const char *service, const struct config_endpoint *be,
		     bool healthy)
{
	char ep[64];
	int err;

	if (!m->dp)
		return;
	err = datapath_backend_set_health(m->dp, service, be, healthy);
	/* -ENOENT: discovery has not written this backend yet; meshd_apply_service will, asking
	 * health_backend_healthy() for the flag. */
	if (err && err != -ENOENT)
		LOG_WARN(SUBSYS, "cannot write backend health to the datapath",
			 "service=%s backend=%s err=%s", service,
			 config_endpoint_str(be, ep, sizeof(ep)), log_q(strerror(-err)));
}

static void on_changed(const char *service, const struct config_endpoint *be, bool healthy,
		       const char *reason, void *arg)
{
	struct health *h = arg;

	h->m->health_transitions[healthy ? 1 : 0]++;
	set_flag(h->m, service, be, healthy);
}

/* The check was removed (service checks off, backend gone): clear the flag it had set. */
static void on_dropped_unhealthy(const char *service, const struct config_endpoint *be, void *arg)
{
	struct health *h = arg;

	set_flag(h->m, service, be, true);
}

static bool on_never_probe(const struct config_endpoint *be, void *arg)
{
	const struct mesh_config *cfg = ((struct health *)arg)->cfg;

	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct config_endpoint *vip = &cfg->services[i].vip;

		if (vip->family == be->family && vip->port == be->port &&
		    memcmp(&vip->addr, &be->addr,
			   be->family == AF_INET6 ? sizeof(be->addr.v6) : sizeof(be->addr.v4)) == 0)
			return true;
	}
	return false;
}

static int sync_service(struct health *h, const struct mesh_config *cfg, const char *name)
{
	const struct config_service *own = config_service_find(cfg, name);
	/* Services known only to discovery use the global block. */
	const struct config_health_check *hc =
	    own ? &own->load_balancer.health_check : &cfg->load_balancer.health_check;
	const struct config_service *src = NULL;

	if (hc->type == CONFIG_HEALTH_NONE)
		return 0;
	/* Static backends come from `cfg` itself, so a reload sees the new set before discovery
	 * has applied it; other backends from what discovery last learned. */
	if (cfg->discovery != CONFIG_DISCOVERY_STATIC)
		src = discovery_service(h->m, name);
	if (!src)
		src = own;
	if (!src)
		return 0;
	return health_checker_service(h->checker, name, hc, src->backends, src->n_backends);
}

/* Brings the checks in line with `cfg` and discovery: adds, retunes, removes. */
static void health_sync(struct health *h, const struct mesh_config *cfg)
{
	int err = 0;
	size_t i;

	h->cfg = cfg;
	health_checker_begin(h->checker);
	for (i = 0; i < cfg->n_services; i++)
		err = err ?: sync_service(h, cfg, cfg->services[i].name);
	if (cfg->discovery == CONFIG_DISCOVERY_CONSUL)
		for (i = 0; i < cfg->consul.n_services; i++)
			err = err ?: sync_service(h, cfg, cfg->consul.services[i]);
	if (cfg->discovery == CONFIG_DISCOVERY_DNS)
		for (i = 0; i < cfg->dns.n_services; i++)
			err = err ?: sync_service(h, cfg, cfg->dns.services[i].name);
	if (err) {
		/* Keep every check rather than sweep the ones we could not visit. */
		LOG_WARN(SUBSYS, "health check sync incomplete", "err=%s", log_q(strerror(-err)));
		return;
	}
	health_checker_end(h->checker);
}

static void on_sync_timer(struct evloop *loop, void *arg)
{
	struct health *h = arg;

	(void)loop;
	h->sync_timer = 0;
	health_sync(h, h->m->cfg);
}

void health_backends_changed(struct meshd *m)
{
	struct health *h = m->health;

	if (!h || h->sync_timer)
		return; /* not running, or a sync already due: one sync serves a burst of changes */
	h->sync_timer = evloop_add_timer(m->loop, 0, on_sync_timer, h);
	if (h->sync_timer < 0) {
		LOG_WARN(SUBSYS, "cannot schedule health check sync; checks follow the next change",
			 "err=%s", log_q(strerror((int)-h->sync_timer)));
		h->sync_timer = 0;
	}
}

static void on_pinned_backend(const struct datapath_backend_stats *b, void *arg)
{
	struct health *h = arg;
	char ep[64];

	if (b->healthy || health_checker_assume(h->checker, b->service, &b->backend, false))
		return;
	LOG_INFO(SUBSYS, "backend stays unhealthy from the previous run", "service=%s backend=%s",
		 b->service, config_endpoint_str(&b->backend, ep, sizeof(ep)));
}

/* Component start: creates the checks for the running config and discovery state, each first
 * check jittered over its interval. Backends an adopted
 * datapath has flagged down stay down until they pass healthy_threshold checks. Needs m->loop
 * and m->cfg. Returns 0 or -errno. */
int health_start(struct meshd *m)
{
	struct health *h = calloc(1, sizeof(*h));
	struct health_checker_hooks hooks = {
		.changed = on_changed,
		.dropped_unhealthy = on_dropped_unhealthy,
		.never_probe = on_never_probe,
		.arg = h,
	};

	if (!h)
		return -ENOMEM;
	h->m = m;
	h->checker = health_checker_new(m->loop, &hooks);
	if (!h->checker) {
		free(h);
		return -ENOMEM;
	}
	m->health = h;
	health_sync(h, m->cfg);
	if (m->dp && datapath_adopted(m->dp))
		datapath_stats(m->dp, NULL, on_pinned_backend, h);
	LOG_INFO(SUBSYS, "health checks started", "checks=%zu", health_checker_count(h->checker));
	return 0;
}

/* Component stop: cancels every timer and probe. Datapath health flags stay as they are: the
 * datapath outlives the daemon, and a restarted meshd rewrites them. */
void health_stop(struct meshd *m)
{
	struct health *h = m->health;

	if (!h)
		return;
	if (h->sync_timer > 0)
		evloop_del_timer(m->loop, h->sync_timer);
	health_checker_free(h->checker);
	free(h);
	m->health = NULL;
}

/* Component reload: applies `new` (m->cfg is still `old`): checks for new services or backends
 * start healthy, removed ones stop (clearing an unhealthy flag they set), changed settings
 * retune without resetting any backend's state. Returns 0. */
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
	return !m->health || health_checker_healthy(m->health->checker, service, backend);
}
