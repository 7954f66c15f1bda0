/* meshd's health component: feeds the health checker (health/health_checker.h) with every
 * service discovery serves whose effective load_balancer.health_check.type is tcp or http, with
 * the backends discovery serves. It follows discovery service by service: each change the
 * registry commits (health_service_changed) is synced on a later loop iteration, a budget's worth
 * per iteration, so a reload of 16,384 services never holds the loop. Each transition becomes a
 * counter (m->health_transitions) and a write of the backend's health flag into the datapath.
 * Runs on the event-loop thread only.
 *
 * Checks are never redirected by our own datapath: they connect to backend addresses, and a
 * backend whose address:port is one of our VIPs (what connect4 rewrites) is never probed. Their
 * sockets also carry HEALTH_PROBE_MARK. connect4 records nothing for them, so sockops never
 * counts them as application traffic. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "discovery/discovery.h"
#include "health/health_checker.h"
#include "meshd/meshd.h"

#define SUBSYS "health"
#define SYNC_BUDGET_NS 5000000ull

struct health {
	struct meshd *m;
	struct health_checker *checker;
	char **dirty; /* services to sync, FIFO from `head` (repeats are harmless) */
	size_t head, n, cap;
	int64_t sync_timer; /* a sync is due on the next loop iteration */
};

static void set_flag(struct meshd *m, const char *service, const struct config_endpoint *be,
		     bool healthy)
{
	char ep[64];
	int err;

	discovery_backend_health(m->discovery, service, be, healthy); /* Consul TTL checks */
	if (!m->dp)
		return;
	err = datapath_backend_set_health(m->dp, service, be, healthy);
	/* -ENOENT: discovery has not written this backend yet; it will, asking
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
	return discovery_find_vip(((struct health *)arg)->m->discovery, be) != NULL;
}

/* Brings the checks of one service in line with what discovery serves for it. */
static int sync_service(struct health *h, const char *name)
{
	const struct config_service *svc = discovery_find(h->m->discovery, name);
	const struct config_health_check *hc = svc ? &svc->load_balancer.health_check : NULL;

	if (!hc || hc->type == CONFIG_HEALTH_NONE) {
		health_checker_remove_service(h->checker, name);
		return 0;
	}
	return health_checker_set_service(h->checker, name, hc, svc->backends, svc->n_backends);
}

static void sync_soon(struct health *h);

static void on_sync_timer(struct evloop *loop, void *arg)
{
	struct health *h = arg;
	uint64_t t0 = evloop_now_ns();

	h->sync_timer = 0;
	while (h->head < h->n && evloop_now_ns() - t0 < SYNC_BUDGET_NS) {
		char *name = h->dirty[h->head++];
		int err = sync_service(h, name);

		if (err)
			LOG_WARN(SUBSYS, "cannot sync health checks", "service=%s err=%s",
				 log_q(name), log_q(strerror(-err)));
		free(name);
	}
	if (h->head < h->n) {
		sync_soon(h);
		return;
	}
	h->head = h->n = 0;
}

static void sync_soon(struct health *h)
{
	if (h->sync_timer)
		return;
	h->sync_timer = evloop_add_timer(h->m->loop, 0, on_sync_timer, h);
	if (h->sync_timer < 0) {
		LOG_WARN(SUBSYS, "cannot schedule health check sync; checks follow the next change",
			 "err=%s", log_q(strerror((int)-h->sync_timer)));
		h->sync_timer = 0;
	}
}

void health_service_changed(struct meshd *m, const char *service)
{
	struct health *h = m->health;
	char *name;

	if (!h || !(name = strdup(service)))
		return;
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 64;
		char **d = realloc(h->dirty, cap * sizeof(*d));

		if (!d) {
			free(name);
			return;
		}
		h->dirty = d;
		h->cap = cap;
	}
	h->dirty[h->n++] = name;
	sync_soon(h);
}

static void on_pinned_backend(const struct datapath_backend_stats *b, void *arg)
{
	struct health *h = arg;
	char ep[64];

	if (b->healthy || health_checker_assume(h->checker, b->service, &b->backend, false))
		return;
	discovery_backend_health(h->m->discovery, b->service, &b->backend, false);
	LOG_INFO(SUBSYS, "backend stays unhealthy from the previous run", "service=%s backend=%s",
		 b->service, config_endpoint_str(&b->backend, ep, sizeof(ep)));
}

/* Every service discovery serves, in one pass. */
static void sync_all(struct health *h)
{
	size_t i, n = discovery_count(h->m->discovery);
	int err = 0;

	health_checker_begin(h->checker);
	for (i = 0; !err && i < n; i++) {
		const struct config_service *svc = discovery_at(h->m->discovery, i);
		const struct config_health_check *hc = &svc->load_balancer.health_check;

		if (hc->type != CONFIG_HEALTH_NONE)
			err = health_checker_service(h->checker, svc->name, hc, svc->backends,
						     svc->n_backends);
	}
	if (err) {
		LOG_WARN(SUBSYS, "health check sync incomplete", "err=%s", log_q(strerror(-err)));
		return;
	}
	health_checker_end(h->checker);
}

/* Component start: creates the checks for what discovery serves, each first check jittered over
 * its interval. Backends an adopted datapath has flagged down stay down until they pass
 * healthy_threshold checks. Needs m->loop and m->discovery. Returns 0 or -errno. */
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
	sync_all(h);
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
	for (size_t i = h->head; i < h->n; i++)
		free(h->dirty[i]);
	free(h->dirty);
	health_checker_free(h->checker);
	free(h);
	m->health = NULL;
}

bool health_backend_healthy(const struct meshd *m, const char *service,
			    const struct config_endpoint *backend)
{
	return !m->health || health_checker_healthy(m->health->checker, service, backend);
}
