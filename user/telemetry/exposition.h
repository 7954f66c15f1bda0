/* meshd's /metrics content: every metric family DESIGN.md promises, built from plain snapshot
 * structs (daemon counters, and the datapath's per-service and per-backend stats) into Prometheus
 * text. Pure and allocation-bounded by the output size; the metrics component in meshd feeds it
 * from datapath_stats() and serves the result. */
#ifndef MESH_EXPOSITION_H
#define MESH_EXPOSITION_H

#include <stdbool.h>
#include <stdint.h>

#include "common/evloop.h"
#include "common/strbuf.h"
#include "datapath/datapath.h"
#include "discovery/discovery.h"

/* MESH_COUNTERS_MAX: every datapath counter, the ABI's spare entries included. */
#define EXPO_COUNTERS_MAX 64

struct expo_mtls;

/* Daemon-level values (struct meshd and /proc), copied so this module does not depend on meshd. */
struct expo_daemon {
	const char *version;
	bool ready;
	uint64_t config_generation;
	uint64_t reloads[2];		 /* [0] ok, [1] error */
	const char *discovery;		 /* discovery backend label: static, consul, dns */
	uint64_t discovery_sync[2];	 /* [0] ok, [1] error */
	uint64_t discovery_entry_errors; /* config entries refused (traffic splits) */
	double discovery_last_sync_ts;	 /* unix seconds, 0 = never */
	bool discovery_up;		 /* the source reaches what it discovers from */
	uint64_t datapath_events[2];	 /* ring-buffer records: [0] circuit, [1] reject */
	struct evloop_stats loop;	 /* iteration times of meshd's event loop */
	uint64_t health_transitions[2];	 /* [0] to unhealthy, [1] to healthy */
	uint64_t rss_bytes;		 /* 0 = unknown (omitted) */
	/* Datapath-wide counters (enum mesh_counter) and their names; n = 0 when unavailable. */
	uint64_t datapath_counters[EXPO_COUNTERS_MAX];
	size_t n_datapath_counters;
	const char *(*counter_name)(int counter);
	double start_time_seconds;    /* unix seconds */
	const struct expo_mtls *mtls; /* telemetry/expo_mtls.h; NULL: mTLS off */
	/* Connection tracing: exporter counters, and close records lost in the ring buffer. */
	uint64_t trace_exported, trace_dropped_full, trace_dropped_error, trace_dropped_ringbuf;
	uint64_t trace_exports[2];		   /* [0] ok, [1] error */
	const struct discovery_registration *regs; /* Consul registrations and their state */
	size_t n_regs;
	const struct expo_failover *failover; /* services under discovery.consul.failover */
	size_t n_failover;
};

struct expo_failover {
	char service[64];
	char datacenter[64]; /* served from; "" = the local one */
};

struct exposition;

/* `reason_name(i)` names reject reason i (0..7) for labels, NULL or "unknown" for an unused
 * index (no series). Returns
 * NULL with errno ENOMEM. */
struct exposition *expo_new(const char *(*reason_name)(int reason));
void expo_free(struct exposition *e);
/* Adds one service's / one backend's samples (callbacks for datapath_stats; `arg` is the
 * exposition). */
void expo_service(const struct datapath_service_stats *s, void *arg);
void expo_backend(const struct datapath_backend_stats *b, void *arg);
/* Appends the whole exposition (daemon families, then the collected ones) to `out` and empties
 * the collected samples for the next scrape. Returns 0 or -ENOMEM. */
int expo_render(struct exposition *e, const struct expo_daemon *d, struct strbuf *out);

/* Where a stepped render stands; zero it to start. */
struct expo_pos {
	int part;    /* 0 = daemon families, then one collected family per part */
	size_t next; /* the next entry (services, then backends) of that family */
};

/* Streaming form of expo_render: appends the next piece from `pos` (the daemon families, or at
 * most `max` services' and backends' samples of one collected family) to `out` and advances
 * `pos`. Returns 1 when more follows, 0 after the last piece, or -ENOMEM. The collected samples
 * stay until expo_free. */
int expo_render_step(struct exposition *e, const struct expo_daemon *d, struct expo_pos *pos,
		     size_t max, struct strbuf *out);
#endif
