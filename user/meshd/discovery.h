/* Internals shared by the discovery component's files (discovery.c: lifecycle, static discovery
 * and the table diff; discovery_consul.c: the Consul watcher glue and persistence). Loop thread
 * only. */
#ifndef MESHD_DISCOVERY_H
#define MESHD_DISCOVERY_H

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "state/state.h"

struct meshd;
struct consul_sink;

struct discovery {
	struct meshd *m;
	struct state_table table; /* what the datapath holds, one entry per configured service */
	struct consul_sink *sink; /* running Consul watcher, NULL when none */
	char *state_dir;	  /* where Consul results are persisted (copy of cfg->state_dir) */
};

/* "static", "consul", "dns". */
const char *discovery_backend_name(enum config_discovery b);
/* Counts one sync in m->discovery_sync and, when ok, stamps m->discovery_last_sync_ts. */
void discovery_count_sync(struct meshd *m, bool ok);
/* True when `cfg` takes the backends of service `name` from Consul. */
bool discovery_watches(const struct mesh_config *cfg, const char *name);
/* Replaces the backends of `name` with a discovered set (takes ownership of `backends`), programs
 * the datapath if anything changed. Returns 1 when changed, 0 when not, or -errno. */
int discovery_update(struct discovery *d, const char *name, uint64_t index,
		     struct config_backend *backends, size_t n);

/* Overlays the persisted Consul state from cfg->state_dir onto d->table (before the first
 * apply). A missing, corrupt or foreign file is logged and ignored. */
void discovery_consul_load_state(struct discovery *d, const struct mesh_config *cfg);
/* Starts a watcher for cfg->consul; on success it replaces (and stops) the running one. Returns 0
 * or -errno (the running watcher, if any, is left alone). */
int discovery_consul_start(struct discovery *d, const struct mesh_config *cfg);
/* Stops the running watcher (joins its thread); results still queued are dropped. */
void discovery_consul_stop(struct discovery *d);
/* True when the two Consul settings would run the same watcher. */
bool discovery_consul_same(const struct config_consul *a, const struct config_consul *b);

#endif
