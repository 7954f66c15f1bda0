/* Lifecycle engine: runs a table of meshd components (meshd.h). Starts them in dependency order,
 * unwinds in reverse when one fails to start, stops in reverse, fans a reload out to every
 * running component (rolling back the ones already applied when one fails), and restarts a
 * component that reports a runtime failure with capped exponential backoff while the others keep
 * serving. Event-loop thread only. The table of meshd's real components lives in components.c. */
#ifndef MESHD_LIFECYCLE_H
#define MESHD_LIFECYCLE_H

#include <stddef.h>
#include <stdint.h>

#include "meshd/meshd.h"

struct lifecycle;

struct lifecycle_opts {
	uint64_t backoff_base_ns; /* first restart delay after a runtime failure */
	uint64_t backoff_max_ns;  /* cap for the doubling delay */
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

/* Calls each running component's reload hook in start order. When one fails, the components
 * already reloaded get the reverse change (new -> old) in reverse order, so nothing changes, and
 * the failing hook's -errno is returned. Returns 0 when all applied. */
int lifecycle_reload(struct lifecycle *lc, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_diff *diff);

/* Marks `name` failed: after a backoff (base * 2^attempts, capped) it is stopped and started
 * again; a failed restart backs off further. Unknown names and repeated reports are ignored.
 * Returns 0, or -ENOENT for an unknown name. */
int lifecycle_component_failed(struct lifecycle *lc, const char *name, int err);

/* True when `name` is running (started and not waiting for a restart). */
bool lifecycle_running(const struct lifecycle *lc, const char *name);

#endif
