/* Discovery: where every service's backends come from, behind one interface (source.h) with one
 * implementation per source (static.c, consul/, dns/), and the one registry of service ->
 * backends that the rest of meshd reads (registry.c): datapath writes go out through hooks, in
 * batches, all or nothing; health checks follow its changes; metrics and the admin API read its
 * sets, counters and source name; it persists discovered sets under state_dir (state.h) and
 * restores them at start. Event-loop thread only. */
#ifndef MESH_DISCOVERY_H
#define MESH_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"

struct discovery;

/* One service to write (`svc`, its complete definition with the backends to serve) or remove
 * (`svc` NULL). */
struct discovery_change {
	const char *name;
	const struct config_service *svc;
};

/* How the registry reaches the datapath and tells the rest of meshd. */
struct discovery_hooks {
	/* A transaction: begin returns an opaque handle (NULL + errno on failure); apply writes
	 * `n` changes, all or nothing (0, or -errno with this call's changes undone); end(commit)
	 * makes every applied change final, end(!commit) undoes them all. Required. */
	void *(*begin)(void *arg);
	int (*apply)(void *arg, void *txn, const struct discovery_change *ch, size_t n);
	void (*end)(void *arg, void *txn, bool commit);
	/* After a commit: service `name` now serves `svc` (NULL: removed); `undone` when an aborted
	 * transaction put it back as it was (state such as health flags may need asserting again).
	 * May be NULL. */
	void (*changed)(void *arg, const char *name, const struct config_service *svc, bool undone);
	void *arg;
};

struct discovery_opts {
	struct evloop *loop;
	struct discovery_hooks hooks;
	uint64_t budget_ns;	   /* loop time one flush or reload step may take; 0 = 5 ms */
	uint64_t persist_delay_ns; /* coalescing delay before state_dir is rewritten; 0 = 1 s */
	/* Tests: the source for each discovery.backend value (source.h), indexed by enum
	 * config_discovery. NULL = the real ones (sources.c). */
	const struct discovery_source_ops *const *sources;
};

/* Creates an empty registry. Returns NULL + errno. */
struct discovery *discovery_new(const struct discovery_opts *o);
/* Stops the source (as on a daemon stop: Consul registrations stay), writes pending state and
 * frees everything. Accepts NULL. */
void discovery_free(struct discovery *d);

/* Builds the table for `cfg` (which must outlive the registry or the next commit): policy from
 * the config, backends from the config or, for services the selected source provides, from the
 * state persisted by an earlier run (same limits as live discovery; an unusable file is logged
 * and ignored), writes it in one transaction and starts the source. Returns 0 or -errno. */
int discovery_start(struct discovery *d, const struct mesh_config *cfg);

/* One step of a reload from the running `old` to `new` (`plan` = config_plan(old, new); all
 * three stay valid until discovery_reload_end). The first call prepares (switches or reloads
 * the source, plans every service change); each call writes changes for at most the budget.
 * Returns -EINPROGRESS while more remains (call again on a later loop iteration), 0 when all is
 * written (then call discovery_reload_end), or -errno after undoing everything (logged; no end
 * call needed). Deliveries from sources meanwhile wait for the end. */
int discovery_reload(struct discovery *d, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_plan *plan);
/* Ends the reload: commit makes `new` the running config of the registry (the table, the source,
 * the old source stopped as switched away); abort puts the datapath, the source and the table
 * back as before the first discovery_reload call. */
void discovery_reload_end(struct discovery *d, bool commit);

/* True when a file the running source reads changed although `cfg` did not (a Consul token
 * rotated in place): a reload then restarts the source. */
bool discovery_files_changed(const struct discovery *d, const struct mesh_config *cfg);

/* The set served for `name` (policy + effective backends), or NULL. Valid until the loop runs
 * again. */
const struct config_service *discovery_find(const struct discovery *d, const char *name);
/* True when `name` is served because the source defines it (discovery.consul.catalog), not
 * because the config lists it. */
bool discovery_defined(const struct discovery *d, const char *name);
/* Iteration: the i-th service (0 <= i < discovery_count), in no particular order. */
size_t discovery_count(const struct discovery *d);
const struct config_service *discovery_at(const struct discovery *d, size_t i);
/* The service whose VIP:port is `ep`, or NULL (hash lookup). */
const struct config_service *discovery_find_vip(const struct discovery *d,
						const struct config_endpoint *ep);

struct discovery_stats {
	const char *source; /* "static", "consul", "dns" */
	uint64_t sync_ok, sync_error;
	uint64_t entry_errors; /* config entries refused (Consul service-splitter/-resolver) */
	double last_sync_ts;   /* unix seconds of the last successful sync, 0 = never */
	bool up;	       /* the source reaches what it discovers from */
	size_t pending;	       /* services with a delivered set not yet written */
};
void discovery_get_stats(const struct discovery *d, struct discovery_stats *st);

/* One service instance the running source registers (discovery.consul.register) and its state. */
struct discovery_registration {
	char id[129];
	char service[64];
	bool registered;	/* the agent accepted it and still holds it, as far as known */
	unsigned failures;	/* consecutive failed writes */
	uint64_t registrations; /* successful registration writes (re-registrations included) */
	uint64_t lost;		/* times the agent was found without it */
	long status;		/* HTTP status of the last failed write, 0 = transport error */
	char error[160];	/* why the last write failed, "" after a success */
	int ttl;		/* TTL check: 1 reported passing, 0 failing, -1 not reported/none */
};
/* Registration `i` of the running source into `out`: 0, or -ENOENT past the last one. */
int discovery_registration(const struct discovery *d, size_t i, struct discovery_registration *out);

/* True when `service` fails over across datacenters (discovery.consul.failover); *dc = the
 * datacenter whose instances are served, NULL = the local one. Valid until the loop runs again. */
bool discovery_failover(const struct discovery *d, const char *service, const char **dc);

/* meshd's health check of `backend` in `service` changed (or was removed: healthy): sources
 * that report health for a registration of that address take it (Consul TTL checks). */
void discovery_backend_health(struct discovery *d, const char *service,
			      const struct config_endpoint *backend, bool healthy);

#endif
