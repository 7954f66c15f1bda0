/* Lifecycle engine: runs a table of meshd components (meshd.h). Starts them in dependency order,
 * unwinds in reverse when one fails to start, stops in reverse, runs a reload as a transaction
 * over every running component (all take the new config, or all are put back on the running
 * one), and restarts a component that reports a runtime failure with capped exponential backoff
 * while the others keep serving. Event-loop thread only. The table of meshd's real components
 * lives in components.c. */
#ifndef MESHD_LIFECYCLE_H
#define MESHD_LIFECYCLE_H

#include <stddef.h>
#include <stdint.h>

#include "meshd/meshd.h"

struct lifecycle;

struct lifecycle_opts {
	uint64_t backoff_base_ns; /* first restart delay after a runtime failure */
	uint64_t backoff_max_ns;  /* cap for the doubling delay */
	/* Test builds only (meshd_fault): called after each component applied a reload; a -errno
	 * makes the reload fail right there, that component included in the rollback. NULL = off. */
	int (*fault)(const char *component);
};

/* Builds the engine for `tab[0..n)` (the table must outlive it) and computes the start order.
 * Returns NULL with errno EINVAL (an unknown dependency or a cycle, logged) or ENOMEM. */
struct lifecycle *lifecycle_new(struct meshd *m, const struct meshd_component *tab, size_t n,
				const struct lifecycle_opts *opts);
/* Frees the engine; components must have been stopped. Accepts NULL. */
void lifecycle_free(struct lifecycle *lc);

/* Name of the i-th component in start order, or NULL past the end. */
const char *lifecycle_order_name(const struct lifecycle *lc, size_t i);

/* Starts every component in order. On the first failure it logs the component and the error,
 * sets m->start_failed, stops what was started in reverse order, stores the failing
 * component's name in `*failed` (may be NULL) and returns its -errno. Returns 0 when all run. */
int lifecycle_start(struct lifecycle *lc, const char **failed);

/* Stops every running component in reverse start order and cancels pending restarts. */
void lifecycle_stop(struct lifecycle *lc);

/* Called when a reload ends: `err` 0 when every component took the new config (each `end` hook
 * got commit), else the -errno of component `failed` after every component is back on the old
 * config (end(false), or the reverse change for components without an `end` hook). */
typedef void (*lifecycle_reload_done)(void *arg, int err, const char *failed);

/* Starts reloading every running component in start order with `old` -> `new` (`plan` =
 * config_plan(old, new); all three must stay valid until `done` runs). A component that returns
 * -EINPROGRESS is called again on a later loop iteration, so a long reload never holds the loop.
 * `done` may run before this returns. Returns 0, or -EBUSY while another reload is in flight. */
int lifecycle_reload_start(struct lifecycle *lc, const struct mesh_config *old,
			   const struct mesh_config *new, const struct config_plan *plan,
			   lifecycle_reload_done done, void *arg);
/* True while a reload is in flight. */
bool lifecycle_reloading(const struct lifecycle *lc);
/* Runs the reload in flight to its end now (its `done` runs before this returns). */
void lifecycle_reload_drain(struct lifecycle *lc);
/* A whole reload, synchronously: start + drain. Returns its result (-EBUSY when another one is in
 * flight). */
int lifecycle_reload(struct lifecycle *lc, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_plan *plan);

/* Marks `name` failed: after a backoff (base * 2^attempts, capped) it is stopped and started
 * again; a failed restart backs off further. Unknown names and repeated reports are ignored.
 * Returns 0, or -ENOENT for an unknown name. */
int lifecycle_component_failed(struct lifecycle *lc, const char *name, int err);

/* True when `name` is running (started and not waiting for a restart). */
bool lifecycle_running(const struct lifecycle *lc, const char *name);

#endif
