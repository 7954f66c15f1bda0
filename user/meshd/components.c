/* meshd's one component table (name, dependencies, start/stop/reload/end) and the components
 * small enough to live beside it: config (load at start, file watch), log, datapath (open or
 * adopt, prune, events, readiness). Discovery, health, mtls (mtls_comp.c), metrics and admin
 * live in their own files. Which keys need a restart is declared in the config table (reload.c
 * refuses them), not here. Loop thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/log.h"
#include "meshd/components.h"
#include "meshd/config_kv.h"
#include "meshd/lifecycle.h"
#include "meshd/reload.h"

/* The config and log enums are the same numbers by construction; say so where it matters. */
_Static_assert((int)CONFIG_LOG_DEBUG == (int)LOG_LEVEL_DEBUG, "log level enums differ");
_Static_assert((int)CONFIG_LOG_JSON == (int)LOG_FORMAT_JSON, "log format enums differ");

/* --- config ----------------------------------------------------------------------------------- */

static void config_comp_stop(struct meshd *m);

/* Loads m->config_path (with the persisted Consul KV document over it, config_kv.c) and checks
 * what it asks of this host (cgroup v2, bpffs) before anything is touched; every problem goes
 * to stderr, one per line, like `meshd validate`. */
static int config_comp_start(struct meshd *m)
{
	struct config_errors errs = { 0 };
	int err = 0;

	m->cfg = config_load(m->config_path, NULL, &errs);
	if (m->cfg && (err = config_kv_boot(m)))
		fprintf(stderr, "(config): out of memory (got ENOMEM, expected memory)\n");
	else if (m->cfg && !config_check_host(m->cfg, &errs))
		err = m->cfg->config_watch ? config_watch_start(m) : 0;
	else
		err = -EINVAL;
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.msgs[i]);
	config_errors_free(&errs);
	err = err ?: config_kv_start(m);
	if (err) {
		config_comp_stop(m);
		return err;
	}
	return 0;
}

static void config_comp_stop(struct meshd *m)
{
	config_watch_stop(m);
	config_kv_stop(m);
	config_free(m->cfg);
	m->cfg = NULL;
}

static int config_comp_reload(struct meshd *m, const struct mesh_config *old,
			      const struct mesh_config *new, const struct config_plan *plan)
{
	int err = config_kv_reload(m, old, new);

	if (err)
		return err;
	if (new->config_watch && !old->config_watch)
		return config_watch_start(m);
	if (!new->config_watch && old->config_watch)
		config_watch_stop(m);
	return 0;
}

/* --- log -------------------------------------------------------------------------------------- */

static int log_comp_start(struct meshd *m)
{
	log_setup((enum log_level)m->cfg->log_level, (enum log_format)m->cfg->log_format,
		  STDERR_FILENO);
	log_route_libbpf();
	return 0;
}

static int log_comp_reload(struct meshd *m, const struct mesh_config *old,
			   const struct mesh_config *new, const struct config_plan *plan)
{
	if (old->log_level == new->log_level && old->log_format == new->log_format)
		return 0;
	log_setup((enum log_level) new->log_level, (enum log_format) new->log_format,
		  STDERR_FILENO);
	return 0;
}

/* --- datapath --------------------------------------------------------------------------------- */

/* Drops services left in pinned maps by an earlier run that the config no longer names. */
static int prune_services(struct meshd *m)
{
	const struct mesh_config *cfg = m->cfg;
	const char **keep = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*keep));
	int err;

	if (!keep)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_services; i++)
		keep[i] = cfg->services[i].name;
	err = datapath_service_prune(m->dp, keep, cfg->n_services);
	free(keep);
	if (err)
		LOG_WARN("datapath", "cannot prune stale services", "err=%s",
			 log_q(strerror(-err)));
	return err;
}

/* A breaker opened on a service that closes its connections then (close_on_open): an events
 * subscriber, after the log's. */
static void drain_opened(const struct datapath_event *ev, void *arg)
{
	struct meshd *m = arg;
	char be[INET6_ADDRSTRLEN + 8];
	uint64_t closed = 0;
	int err;

	if (ev->type != MESH_EV_CIRCUIT || ev->to != DATAPATH_CIRCUIT_OPEN || !m->dp ||
	    !datapath_service_closes_on_open(m->dp, ev->service))
		return;
	err = datapath_drain_backend(m->dp, ev->service, &ev->backend, &closed);
	LOG_INFO("datapath", "closed the connections of a backend whose breaker opened",
		 "service=%s backend=%s closed=%llu err=%d", log_q(ev->service),
		 config_endpoint_str(&ev->backend, be, sizeof(be)), (unsigned long long)closed,
		 err);
}

/* Closes the connections of removed backends whose drain time came, and waits for the next. */
static void on_drain_timer(struct evloop *loop, void *arg)
{
	struct meshd *m = arg;
	uint64_t next = 0, closed = 0, now = evloop_now_ns();

	m->drain_timer = 0;
	if (m->dp)
		datapath_drain_due(m->dp, &next, &closed);
	if (next)
		m->drain_timer =
		    evloop_add_timer(loop, next > now ? next - now : 0, on_drain_timer, m);
}

/* After the datapath changed: a removed backend may have a drain due earlier than the timer. */
void meshd_drain_reschedule(struct meshd *m)
{
	if (!m->dp)
		return;
	if (m->drain_timer > 0)
		evloop_del_timer(m->loop, m->drain_timer);
	m->drain_timer = evloop_add_timer(m->loop, 0, on_drain_timer, m);
}

#define EWMA_DECAY_EVERY_NS 1000000000ull

/* Every second: peak_ewma's latency averages decay while no sample comes (the datapath does
 * not read a clock on connect). One-shot timers re-armed, dropped when the datapath goes. */
static void ewma_tick(struct evloop *loop, void *arg)
{
	struct meshd *m = arg;
	int err;

	m->ewma_timer = 0;
	if (!m->dp)
		return;
	err = datapath_peak_ewma_decay(m->dp, evloop_now_ns());
	if (err)
		LOG_DEBUG("datapath", "peak_ewma decay incomplete", "err=%s",
			  log_q(strerror(-err)));
	m->ewma_timer = evloop_add_timer(loop, EWMA_DECAY_EVERY_NS, ewma_tick, m);
}

static int dp_comp_start(struct meshd *m)
{
	struct datapath_opts opts = {
		.pin_path = m->cfg->bpf_pin_path,
		.cgroup = m->cfg->cgroup,
		.max_services = m->cfg->datapath_max_services,
		.max_backends = m->cfg->datapath_max_backends,
	};
	bool existed = access(opts.pin_path, F_OK) == 0;
	int err;

	m->dp = datapath_open(&opts);
	if (!m->dp) {
		err = -errno;
		LOG_ERR("datapath", "cannot open the datapath", "pin_path=%s cgroup=%s err=%s",
			log_q(opts.pin_path), log_q(opts.cgroup), log_q(strerror(-err)));
		/* Whatever this attempt pinned before failing must not outlive it. */
		if (!existed)
			datapath_cleanup(opts.pin_path);
		return err;
	}
	/* datapath_open() has logged whether it adopted or loaded. */
	prune_services(m); /* stale services are untidy, not fatal */
	events_start(m);
	events_subscribe(m, drain_opened, m);
	m->ewma_timer = evloop_add_timer(m->loop, EWMA_DECAY_EVERY_NS, ewma_tick, m);
	m->ready = true;
	return 0;
}

/* Graceful stop leaves everything pinned and attached: connections keep flowing without meshd.
 * Unwinding a failed first start removes what this run loaded, so nothing stays attached. */
static void dp_comp_stop(struct meshd *m)
{
	bool fresh = m->dp && !datapath_adopted(m->dp);

	m->ready = false;
	if (m->drain_timer > 0)
		evloop_del_timer(m->loop, m->drain_timer);
	m->drain_timer = 0;
	if (m->ewma_timer > 0)
		evloop_del_timer(m->loop, m->ewma_timer);
	m->ewma_timer = 0;
	events_stop(m);
	datapath_close(m->dp);
	m->dp = NULL;
	if (m->start_failed && fresh) {
		LOG_INFO("datapath", "removing the datapath this failed start loaded",
			 "pin_path=%s", log_q(m->cfg->bpf_pin_path));
		datapath_cleanup(m->cfg->bpf_pin_path);
	}
}

/* --- the table -------------------------------------------------------------------------------- */

static const struct meshd_component components[] = {
	{ "config", { NULL }, config_comp_start, config_comp_stop, config_comp_reload, NULL },
	{ "log", { "config" }, log_comp_start, NULL, log_comp_reload, NULL },
	{ "datapath", { "config", "log" }, dp_comp_start, dp_comp_stop, NULL, NULL },
	/* Discovery writes the services; health checks follow what it serves. Until health runs,
	 * backends that stay keep the flag an earlier run left in the pinned maps. */
	{ "discovery",
	  { "datapath" },
	  discovery_comp_start,
	  discovery_comp_stop,
	  discovery_comp_reload,
	  discovery_comp_end },
	{ "health", { "datapath", "discovery" }, health_start, health_stop, NULL, NULL },
	/* Tracing first: the proxy's threads export spans until it stops. */
	{ "tracing", { "datapath" }, tracing_start, tracing_stop, tracing_reload, NULL },
	{ "mtls",
	  { "datapath", "discovery", "tracing" },
	  mtls_comp_start,
	  mtls_comp_stop,
	  mtls_comp_reload,
	  mtls_comp_end },
	{ "metrics", { "datapath" }, metrics_start, metrics_stop, metrics_reload, NULL },
	/* Last: once `meshctl status` answers, everything else is up. */
	{ "admin",
	  { "discovery", "health", "mtls", "metrics" },
	  admin_start,
	  admin_stop,
	  admin_reload,
	  NULL },
};

const struct meshd_component *meshd_components(size_t *n)
{
	*n = sizeof(components) / sizeof(components[0]);
	return components;
}
