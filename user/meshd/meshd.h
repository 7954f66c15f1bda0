/* The daemon's shared context and its component contract.
 *
 * meshd is a set of components (config, log, datapath, discovery, health, mtls, metrics, admin)
 * registered in one table in lifecycle.c with their dependencies; they start in dependency order,
 * stop in reverse, and each gets a reload hook with the old and new config. Everything here runs
 * on the event-loop thread unless a field says otherwise. */
#ifndef MESHD_H
#define MESHD_H

#include <stdbool.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"
#include "datapath/datapath.h"

struct health;	  /* user/meshd/health_checks.c */
struct discovery; /* user/meshd/discovery.c */
struct metrics;	  /* user/meshd/metrics.c */
struct admin;	  /* user/meshd/admin.c */
struct mtls;	  /* user/mtls/mtls.h */
struct mtls_glue; /* user/meshd/mtls_comp.c */
struct upgrade;	  /* user/meshd/upgrade.c */

struct lifecycle;    /* user/meshd/lifecycle.h */
struct config_watch; /* user/meshd/reload.c */

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
	struct upgrade *upgrade; /* a hand-over to a new meshd is under way */

	uint64_t started_at_ns;		/* evloop_now_ns() at start */
	uint64_t reloads[2];		/* indexed by enum meshd_reload_result */
	uint64_t discovery_sync[2];	/* [0] ok, [1] error */
	double discovery_last_sync_ts;	/* unix seconds of the last successful sync, 0 = never */
	uint64_t health_transitions[2]; /* [0] to unhealthy, [1] to healthy */
	bool ready;			/* datapath attached and config loaded */
	int events_fd;	     /* datapath ring-buffer epoll fd watched by the loop, -1 when none */
	int64_t drain_timer; /* next drain of removed backends' connections, 0 when none */

	struct lifecycle *lifecycle; /* component engine (lifecycle.h) */
	bool start_failed;	     /* set while a failed start unwinds (stop hooks clean up) */
	uint64_t reloaded_at_ns;     /* evloop_now_ns() of the last successful reload, 0 = none */
	struct config_watch *watch;  /* inotify on the config file when cfg->config_watch */
};

/* A component: start/stop/reload hooks. `reload` gets the running `old` config and the validated
 * `new` one (m->cfg still points at old during the call) and applies only what changed; it
 * returns 0 or -errno (the reload is then reported as an error, the old config stays). */
struct meshd_component {
	const char *name;
	const char *deps[6]; /* names of components that must start first; NULL-terminated */
	int (*start)(struct meshd *m);
	void (*stop)(struct meshd *m);
	int (*reload)(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		      const struct config_diff *diff);
};

/* Reports a runtime failure of component `name` (e.g. discovery lost its backend for good): it is
 * stopped and started again after a capped exponential backoff while the others keep serving.
 * Call it from the loop thread; repeated reports before the restart are ignored. lifecycle.c */
void meshd_component_failed(struct meshd *m, const char *name, int err);

/* Reloads from m->config_path: load -> validate -> diff -> apply; logs every problem and every
 * changed key. Returns 0 (applied or nothing changed) or -errno (old config kept). reload.c */
int meshd_reload(struct meshd *m);

/* Writes one service's current backend set (from discovery) into the datapath, combined with the
 * health-check state; discovery calls it on every change. Returns 0 or -errno. lifecycle.c */
int meshd_apply_service(struct meshd *m, const struct config_service *svc);
/* Removes a service that discovery no longer knows. Returns 0 or -errno. lifecycle.c */
int meshd_remove_service(struct meshd *m, const char *name);
/* Runs the drains of removed backends' connections that are due now, and times the next. */
void meshd_drain_reschedule(struct meshd *m);

/* Component hooks implemented by their modules (referenced from lifecycle.c's table). */
int health_start(struct meshd *m);
void health_stop(struct meshd *m);
int health_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		  const struct config_diff *diff);
/* A service's backend set was written to (or removed from) the datapath: the checks follow on
 * the next loop iteration, once for a burst of such calls. */
void health_backends_changed(struct meshd *m);
/* Health state of one backend as the checks see it (true when no check is configured). */
bool health_backend_healthy(const struct meshd *m, const char *service,
			    const struct config_endpoint *backend);

int metrics_start(struct meshd *m);
void metrics_stop(struct meshd *m);
int metrics_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		   const struct config_diff *diff);

int admin_start(struct meshd *m);
void admin_stop(struct meshd *m);
int admin_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		 const struct config_diff *diff);

int mtls_comp_start(struct meshd *m);
void mtls_comp_stop(struct meshd *m);
int mtls_comp_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		     const struct config_diff *diff);

/* JSON for GET /v1/mtls/identities (`what` "identities") or /v1/mtls/pool ("pool"); the
 * caller deletes it. NULL on ENOMEM. mtls_comp.c */
struct cJSON;
struct cJSON *meshd_mtls_json(struct meshd *m, const char *what);

int discovery_start(struct meshd *m);
void discovery_stop(struct meshd *m);
int discovery_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		     const struct config_diff *diff);
/* True when a file the running configuration names changed behind it (a Consul token rotated in
 * place): a reload then reaches the components although no key changed. */
bool discovery_files_changed(const struct meshd *m);
/* The backend set discovery currently knows for a service (static: from the config; consul: last
 * sync or persisted state). NULL when unknown. Valid until the next loop iteration. */
const struct config_service *discovery_service(const struct meshd *m, const char *name);

#endif
