/* The one interface every discovery source implements (static.c, consul/, dns/), and the sink
 * through which a source hands the registry a service's complete backend set. Sources run on
 * the event-loop thread (a source may use its own threads internally, but calls the sink only
 * from the loop thread). The registry (registry.c) owns the sources; nothing outside
 * user/discovery/ sees this header. */
#ifndef MESH_DISCOVERY_SOURCE_H
#define MESH_DISCOVERY_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"
#include "discovery/discovery.h"

struct discovery_source; /* a running source; its layout is private to the source's files */

/* A service a source defines itself (not listed in the config): served at `vip` with the
 * config's global policy. */
struct discovery_def {
	const char *name;
	struct config_endpoint vip;
};

/* Where a source reports. Loop thread only. */
struct discovery_sink {
	/* The complete backend set of `service` (the registry takes `backends`, malloc'd, in any
	 * order, duplicates allowed, each `subset` malloc'd or NULL); `index` is the source's
	 * version of it (0 = none), persisted
	 * with the set. A service a source does not provide is ignored. */
	void (*deliver)(void *arg, const char *service, uint64_t index,
			struct config_backend *backends, size_t n);
	/* The same with the service's traffic split from the source (`split`, copied; NULL with
	 * n_split 0 for none) replacing the config's: the backends' `subset` strings (malloc'd)
	 * go with them. The split stays the source's across reloads while the same source provides
	 * the service. */
	void (*deliver_split)(void *arg, const char *service, uint64_t index,
			      struct config_backend *backends, size_t n,
			      const struct config_split *split, size_t n_split);
	/* A config entry of the source was refused (meshd_discovery_config_entry_errors_total). */
	void (*entry_error)(void *arg);
	/* One synchronisation finished: `ok` false for a failed query (nothing delivered). */
	void (*synced)(void *arg, bool ok);
	/* Whether the source can currently reach what it discovers from (meshd_discovery_up). */
	void (*up)(void *arg, bool up);
	/* The set the registry serves for `service` (persisted or last delivered; NULL when none).
	 * Valid until control returns to the loop. */
	const struct config_service *(*current)(void *arg, const char *service);
	/* The complete set of services the source defines (sorted by name; names valid during the
	 * call), replacing the previous one: new ones are written to the datapath (their backends
	 * come through deliver, before or after), those gone leave it. One whose name or VIP is
	 * already served is refused (logged once, naming both). */
	void (*define)(void *arg, const struct discovery_def *defs, size_t n);
	void *arg;
};

struct discovery_source_ops {
	const char *name;	    /* metrics label and logs: "static", "consul", "dns" */
	enum config_discovery kind; /* the discovery.backend value that selects it */
	/* True when, under `cfg`, this source provides the backends of service `name` (every other
	 * service takes `services[].backends` from the config). */
	bool (*provides)(const struct mesh_config *cfg, const char *name);
	/* True when, under `cfg`, the source defines services of its own (sink.define); their
	 * persisted set is restored at start. May be NULL (never). */
	bool (*defines)(const struct mesh_config *cfg);
	/* Starts the source for `cfg`; it delivers through `sink` (copied) from the next loop
	 * iteration on. Returns 0 with *out set, or -errno (logged). */
	int (*start)(const struct mesh_config *cfg, struct evloop *loop,
		     const struct discovery_sink *sink, struct discovery_source **out);
	/* Applies a new config to a running source (`old` is the one it runs with). All or nothing:
	 * on -errno (logged) it keeps running as it was. Reloading back (new -> old) undoes it. */
	int (*reload)(struct discovery_source *s, const struct mesh_config *old,
		      const struct mesh_config *new);
	/* Stops the source; no sink call happens after it returns. `switched` is true when the
	 * running config selects another source (undo what only this source did, e.g. Consul
	 * registrations), false on a daemon stop (registrations outlive a restart). Accepts NULL. */
	void (*stop)(struct discovery_source *s, bool switched);
	/* True when a file the source reads changed behind an unchanged config (a rotated token).
	 * May be NULL. */
	bool (*files_changed)(const struct discovery_source *s, const struct mesh_config *cfg);
	/* Registration `i` and its state (discovery_registration); -ENOENT past the last. May be
	 * NULL (registers nothing). */
	int (*registration)(struct discovery_source *s, size_t i,
			    struct discovery_registration *out);
	/* meshd's health of `backend` in `service` (discovery_backend_health). May be NULL. */
	void (*backend_health)(struct discovery_source *s, const char *service,
			       const struct config_endpoint *backend, bool healthy);
	/* True when `service` fails over across datacenters; *dc = the one served (NULL =
	 * local). May be NULL. */
	bool (*failover)(struct discovery_source *s, const char *service, const char **dc);
};

extern const struct discovery_source_ops discovery_static_source; /* static.c */
extern const struct discovery_source_ops discovery_consul_source; /* consul/consul_source.c */
extern const struct discovery_source_ops discovery_dns_source;	  /* dns/dns_source.c */

/* The source selected by `kind` (the one table of sources, sources.c), or NULL. */
const struct discovery_source_ops *discovery_source_ops(enum config_discovery kind);

#endif
