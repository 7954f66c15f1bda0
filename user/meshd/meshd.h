/* The daemon's shared context and its component contract.
 *
 * meshd is a set of components (config, log, datapath, discovery, health, mtls, metrics, admin)
 * registered in one table in lifecycle.c with their dependencies; they start in dependency order,
 * stop in reverse, and each gets a reload hook with the old and new config. Everything here runs
 * on the event-loop thread unless a field says otherwise. */
#ifndef MESHD_H
#define MESHD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"
#include "datapath/datapath.h"
#include "telemetry/tracer.h"

struct health;	  /* user/meshd/health_checks.c */
struct discovery; /* user/discovery/discovery.h (the registry), run by user/meshd/discovery.c */
struct metrics;	  /* user/meshd/metrics.c */
struct admin;	  /* user/meshd/admin.c */
struct mtls;	  /* user/mtls/mtls.h */
struct mtls_glue; /* user/meshd/mtls_comp.c */
struct mtls_txn;  /* user/meshd/mtls_comp.c */
struct upgrade;	  /* user/meshd/upgrade.c */
struct tracing;	  /* user/meshd/tracing.c */

struct lifecycle;    /* user/meshd/lifecycle.h */
struct config_kv;    /* user/meshd/config_kv.c */
struct config_watch; /* user/meshd/reload.c */
struct reloader;     /* user/meshd/reload.c */

enum meshd_reload_result {
	MESHD_RELOAD_OK = 0,
	MESHD_RELOAD_ERROR = 1,
};

struct meshd {
	struct evloop *loop;
	const char *config_path;
	struct mesh_config *cfg; /* running config; replaced whole on a successful reload */
	struct datapath *dp;
	struct health *health;
	struct discovery *discovery;
	struct metrics *metrics;
	struct admin *admin;
	struct mtls *mtls; /* NULL when mtls.enabled is false */
	struct mtls_glue *mtls_glue;
	struct mtls_txn *mtls_txn;  /* an mTLS reload applied, not yet committed or undone */
	struct upgrade *upgrade;    /* a hand-over to a new meshd is under way */
	struct tracing *tracing;    /* m->trace_lock guards it for the mTLS proxy's threads */
	pthread_mutex_t trace_lock; /* tracing.c */

	uint64_t started_at_ns;		       /* evloop_now_ns() at start */
	uint64_t reloads[2];		       /* indexed by enum meshd_reload_result */
	uint64_t health_transitions[2];	       /* [0] to unhealthy, [1] to healthy */
	struct tracer_counters trace_counters; /* span exporter, across reloads (atomics) */
	bool ready;			       /* datapath attached and config loaded */
	int64_t drain_timer; /* next drain of removed backends' connections, 0 when none */
	int64_t ewma_timer;  /* peak_ewma decay timer (components.c), 0 when none */

	struct lifecycle *lifecycle; /* component engine (lifecycle.h) */
	bool start_failed;	     /* set while a failed start unwinds (stop hooks clean up) */
	uint64_t reloaded_at_ns;     /* evloop_now_ns() of the last successful reload, 0 = none */
	struct config_watch *watch;  /* inotify on the config file when cfg->config_watch */
	struct reloader *reloader;   /* a reload in flight and one asked for meanwhile */
	struct events *events;	     /* datapath ring-buffer fan-out (events.c) */
	/* The Consul KV document the running config was loaded with (config_source.consul_kv):
	 * malloc'd, NULL when there is none. */
	char *kv_doc;
	size_t kv_len;
	struct config_kv *config_kv; /* the KV watcher (config_kv.c) */
};

/* A component: start/stop hooks and the reload transaction.
 *
 * `reload` gets the running `old` config and the validated `new` one (m->cfg still points at
 * old) with the plan between them, and applies only what changed. It returns 0 when applied,
 * -EINPROGRESS to be called again on a later loop iteration (a long apply yields to the loop),
 * or -errno after putting itself back as it was (the reload fails; the old config stays).
 * When a later component fails, an applied component gets `end(m, false)` when it has that
 * hook (it kept what it needs to undo), else the reverse reload (new -> old). When every one
 * applied, each `end` hook gets `end(m, true)`. */
struct meshd_component {
	const char *name;
	const char *deps[6]; /* names of components that must start first; NULL-terminated */
	int (*start)(struct meshd *m);
	void (*stop)(struct meshd *m);
	int (*reload)(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		      const struct config_plan *plan);
	void (*end)(struct meshd *m, bool commit);
};

/* Reports a runtime failure of component `name` (e.g. discovery lost its backend for good): it is
 * stopped and started again after a capped exponential backoff while the others keep serving.
 * Call it from the loop thread; repeated reports before the restart are ignored. lifecycle.c */
void meshd_component_failed(struct meshd *m, const char *name, int err);

/* Reloads from m->config_path and waits for the result: load -> validate -> plan -> apply to
 * every component; logs every problem and one audit line per changed setting or service. A
 * reload already in flight is finished first. Returns 0 (applied or nothing changed) or -errno
 * (the running config, datapath included, stays). reload.c */
int meshd_reload(struct meshd *m);
/* The same without waiting (SIGHUP, the config file watch): the file is loaded and planned on a
 * worker thread and applied in steps, so the loop keeps serving meanwhile; a request while one is
 * in flight runs once it ends. reload.c */
void meshd_reload_async(struct meshd *m);
/* A new value of the Consul KV config document (config_kv.c): `doc` (malloc'd, taken; NULL
 * when the key is missing or empty: the file alone) is loaded over the file and applied like
 * meshd_reload_async(); on any problem the running config (and its KV document) stays. A
 * value arriving while a reload runs replaces any value still waiting. reload.c */
void meshd_reload_kv(struct meshd *m, char *doc, size_t len);
/* Finishes a reload in flight and frees the reloader (at stop). reload.c */
void meshd_reload_shutdown(struct meshd *m);

/* Runs the drains of removed backends' connections that are due now, and times the next; called
 * after the datapath changed (a removed backend may be due earlier). components.c */
void meshd_drain_reschedule(struct meshd *m);

/* Fault injection for tests (faults.c): in a test build (tests/meshd_faults, compiled with
 * MESHD_FAULTS) the points listed in the file $MESHD_FAULTS_FILE fail with -EIO (faults.c lists
 * them). The meshd binary always returns 0 and reads nothing. */
int meshd_fault(const char *point);
/* Arms datapath_test_fail_at() when "datapath.apply@N" is listed (test build only). */
void meshd_fault_arm_datapath(struct datapath *dp);

/* Component hooks implemented by their modules (referenced from components.c's table). */
int health_start(struct meshd *m);
void health_stop(struct meshd *m);
/* Discovery changed what it serves for `service` (written, removed, or put back by an undone
 * reload): its checks follow on a later loop iteration, a budget's worth at a time. */
void health_service_changed(struct meshd *m, const char *service);
/* Health state of one backend as the checks see it (true when no check is configured). */
bool health_backend_healthy(const struct meshd *m, const char *service,
			    const struct config_endpoint *backend);

int metrics_start(struct meshd *m);
void metrics_stop(struct meshd *m);
int metrics_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		   const struct config_plan *plan);

int admin_start(struct meshd *m);
void admin_stop(struct meshd *m);
int admin_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		 const struct config_plan *plan);

int mtls_comp_start(struct meshd *m);
void mtls_comp_stop(struct meshd *m);
int mtls_comp_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		     const struct config_plan *plan);
void mtls_comp_end(struct meshd *m, bool commit);

/* JSON for GET /v1/mtls/identities (`what` "identities") or /v1/mtls/pool ("pool"); the
 * caller deletes it. NULL on ENOMEM. mtls_comp.c */
struct cJSON;
struct cJSON *meshd_mtls_json(struct meshd *m, const char *what);

int discovery_comp_start(struct meshd *m);
void discovery_comp_stop(struct meshd *m);
int discovery_comp_reload(struct meshd *m, const struct mesh_config *old,
			  const struct mesh_config *new, const struct config_plan *plan);
void discovery_comp_end(struct meshd *m, bool commit);

/* The datapath ring buffer, read once, each record handed to every subscriber (events.c). */
struct datapath_event;
typedef void (*meshd_event_fn)(const struct datapath_event *ev, void *arg);
/* Starts reading the datapath's events (best effort: logs when it cannot). */
void events_start(struct meshd *m);
void events_stop(struct meshd *m);
/* Adds a subscriber; every record read from then on reaches it. Returns 0 or -ENOMEM. */
int events_subscribe(struct meshd *m, meshd_event_fn fn, void *arg);
void events_unsubscribe(struct meshd *m, meshd_event_fn fn, void *arg);

int tracing_start(struct meshd *m);
void tracing_stop(struct meshd *m);
int tracing_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		   const struct config_plan *plan);
/* The mTLS proxy's tracing hooks (thread-safe; valid for meshd's life). */
struct mtls_tracing;
void tracing_mtls_hooks(struct meshd *m, struct mtls_tracing *out);

#endif
