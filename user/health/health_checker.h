/* The set of active health checks: one rise/fall state and one probe schedule per (service,
 * backend). A sync pass (begin, one call per checked service, end) adds, retunes and removes
 * checks without resetting the state of backends that stay. Each transition is logged and
 * reported through a hook. Timers and probes go through injectable hooks (defaults: the real
 * event loop and health_probe.c), so tests drive it with a fake clock. Event-loop thread only. */
#ifndef MESH_HEALTH_CHECKER_H
#define MESH_HEALTH_CHECKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"
#include "health/health_probe.h"

struct health_checker_hooks {
	/* A backend's health flipped. `reason` is the last probe's verdict text. */
	void (*changed)(const char *service, const struct config_endpoint *backend, bool healthy,
			const char *reason, void *arg);
	/* A check was removed while its backend was unhealthy: nothing will clear the flag now. */
	void (*dropped_unhealthy)(const char *service, const struct config_endpoint *backend,
				  void *arg);
	/* True for addresses that must never be probed (our own VIPs). May be NULL. */
	bool (*never_probe)(const struct config_endpoint *backend, void *arg);
	void *arg;

	/* Injection points; NULL means the real one (evloop_*, health_probe_*). */
	uint64_t (*now_ns)(void);
	int64_t (*add_timer)(struct evloop *loop, uint64_t delay_ns, evloop_timer_cb cb, void *arg);
	void (*del_timer)(struct evloop *loop, int64_t id);
	struct health_probe *(*probe_start)(struct evloop *loop, const struct health_probe_opts *o,
					    health_probe_cb cb, void *arg);
	void (*probe_cancel)(struct health_probe *p);
	uint64_t seed; /* first-check jitter; 0 picks one from the clock */
};

struct health_checker;

/* Creates an empty checker on `loop` (hooks are copied). Returns NULL with errno on failure. */
struct health_checker *health_checker_new(struct evloop *loop,
					  const struct health_checker_hooks *hooks);
/* Cancels every timer and probe and frees everything, calling no hook. Accepts NULL. */
void health_checker_free(struct health_checker *c);

/* Starts a sync pass: every service and backend not named again before health_checker_end() is
 * removed there. */
void health_checker_begin(struct health_checker *c);
/* Declares service `name` checked with settings `hc` (type tcp or http; copied) over `backends`.
 * New backends start healthy with a first check jittered over the interval; existing ones keep
 * their state; a changed interval re-spreads pending checks. Returns 0 or -ENOMEM. */
int health_checker_service(struct health_checker *c, const char *name,
			   const struct config_health_check *hc,
			   const struct config_backend *backends, size_t n_backends);
/* Ends the pass: removes what was not declared (calling dropped_unhealthy for unhealthy ones). */
void health_checker_end(struct health_checker *c);

/* One service on its own, outside a pass: checks exactly `backends` with `hc` (as
 * health_checker_service, then the service's other targets are removed as by end). Returns 0 or
 * -ENOMEM. */
int health_checker_set_service(struct health_checker *c, const char *name,
			       const struct config_health_check *hc,
			       const struct config_backend *backends, size_t n_backends);
/* Removes every check of service `name` (dropped_unhealthy for unhealthy ones); unknown: no-op. */
void health_checker_remove_service(struct health_checker *c, const char *name);

/* Health of one backend as the checks see it; true when it has no check (or is unknown). */
bool health_checker_healthy(const struct health_checker *c, const char *service,
			    const struct config_endpoint *backend);

/* Takes `healthy` as the state of a checked backend that has not been checked yet, e.g. the flag a
 * previous meshd left in the pinned datapath, so a restart neither re-admits a backend known to
 * be down nor waits for it to fail again. Returns 0, or -ENOENT when the backend has no check or
 * has been checked already (its own results win). */
int health_checker_assume(struct health_checker *c, const char *service,
			  const struct config_endpoint *backend, bool healthy);

/* Number of (service, backend) checks currently configured. */
size_t health_checker_count(const struct health_checker *c);

#endif
