/* Datapath: the only user of the BPF skeleton. Loads or adopts the pinned programs and maps,
 * attaches them to one cgroup with bpf_link (once), writes services and backends, reads counters
 * and drains events. Called from meshd's event-loop thread only (not thread-safe). */
#ifndef MESH_DATAPATH_H
#define MESH_DATAPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct datapath;

struct datapath_opts {
	const char *pin_path;  /* bpffs dir, e.g. /sys/fs/bpf/meshd */
	const char *cgroup;    /* cgroup v2 dir to attach to; NULL: only open the maps of an
			       * already pinned datapath (fast, for tools), -ENOENT if none */
	uint32_t max_services; /* capacities of the maps (0: MESH_DEF_SERVICES, _BACKENDS); a */
	uint32_t max_backends; /* pinned datapath with others is rebuilt (readers take any) */
};

/* Opens the datapath: adopts pinned programs/maps under `pin_path` when present and of the same
 * ABI version (a version mismatch rebuilds them), else loads, pins and attaches. Never attaches a
 * program twice to the same cgroup. Returns NULL and sets errno on failure (logged). */
struct datapath *datapath_open(const struct datapath_opts *opts);
/* Releases userspace handles; pinned programs, links and maps stay (the datapath keeps working). */
void datapath_close(struct datapath *dp);
/* Detaches and unpins everything under `pin_path` (meshd --cleanup). Returns 0 or -errno. */
int datapath_cleanup(const char *pin_path);
/* True when this open adopted an already pinned datapath rather than loading a new one. */
bool datapath_adopted(const struct datapath *dp);

/* Creates or replaces one service (VIP, algorithm, breaker parameters, backend set) atomically:
 * a concurrent connect() sees either the old or the new backend set, never a mix. Backends that
 * stay keep their id, breaker state and active counts. Returns 0 or -errno. */
int datapath_service_set(struct datapath *dp, const struct config_service *svc);
/* One change of a batch: set `svc` (its name says which service), or remove service `name`
 * when `svc` is NULL. */
struct datapath_change {
	const char *name;
	const struct config_service *svc;
};

/* Applies a batch all or nothing (services_txn.c): every change goes in, or the datapath is
 * back as it was (same backend ids, breaker state and active counts) and -errno is returned.
 * Sets run before the removes they follow in `ch` only in the order given; within one batch a
 * service may take the VIP of another that moves or goes (swaps, renames), each VIP written with
 * one update. Each service at most once per batch. Returns 0 or -errno. */
int datapath_services_apply(struct datapath *dp, const struct datapath_change *ch, size_t n);

/* The same as a transaction spanning several calls (a reload written a slice per loop
 * iteration). One transaction at a time: begin returns NULL with errno EBUSY while one is open.
 * apply writes ch[0..n) all or nothing (on -errno this call's changes are undone, the earlier
 * ones stay and the transaction stays open); commit ends it (0, or -errno after undoing it all,
 * e.g. -EEXIST when two services would end up on one VIP); abort undoes everything it wrote. */
struct datapath_txn;
struct datapath_txn *datapath_txn_begin(struct datapath *dp);
int datapath_txn_apply(struct datapath_txn *t, const struct datapath_change *ch, size_t n);
int datapath_txn_commit(struct datapath_txn *t);
void datapath_txn_abort(struct datapath_txn *t);

/* Test hook, never called by meshd itself: the `nth` change written from now on (counted within
 * each transaction) fails with -EIO after it was written, so the undo runs. 0 turns it off. */
void datapath_test_fail_at(struct datapath *dp, size_t nth);

/* Removes a service by name. Returns 0 or -ENOENT. */
int datapath_service_del(struct datapath *dp, const char *name);
/* Removes every service whose name is not in `keep` (after a reload or on adoption). */
int datapath_service_prune(struct datapath *dp, const char *const *keep, size_t n_keep);
/* Sets a backend's health-check flag (combined with the kernel breaker). Returns 0 or -ENOENT. */
int datapath_backend_set_health(struct datapath *dp, const char *service,
				const struct config_endpoint *backend, bool healthy);

enum datapath_circuit {
	DATAPATH_CIRCUIT_CLOSED = 0,
	DATAPATH_CIRCUIT_OPEN = 1,
	DATAPATH_CIRCUIT_HALF_OPEN = 2,
};

/* Per-backend snapshot, counters summed over CPUs. */
struct datapath_backend_stats {
	const char *service; /* valid during the callback */
	struct config_endpoint backend;
	uint32_t weight;
	bool healthy; /* health-check flag */
	enum datapath_circuit circuit;
	uint64_t active;
	uint64_t conn_ok, conn_failed;
	uint64_t transitions_to[3]; /* indexed by enum datapath_circuit */
	uint64_t latency_ewma_ns;
	uint32_t consecutive_failures;
	uint64_t open_until_ns; /* CLOCK_MONOTONIC, 0 when not open */
	/* Added with the datapath implementation. */
	uint32_t backend_id;
	uint32_t trips;	   /* times the breaker opened */
	uint64_t selected; /* connects sent to it */
	uint64_t probes;   /* half-open probes among them */
	uint64_t bytes_sent, bytes_received;
	uint64_t drained; /* connections closed by a drain */
};

/* One subset of a service's traffic split (docs/split.md). */
struct datapath_subset_stats {
	const char *name;
	uint32_t weight;	    /* configured share, hundredths of a percent */
	uint32_t backends, healthy; /* its backends, and those passing health checks */
	uint64_t picked;	    /* connects sent to it */
	uint64_t fallback; /* connects that drew it but went to another (it had none usable) */
};

/* Per-service snapshot, counters summed over CPUs. */
struct datapath_service_stats {
	const char *service;
	uint64_t rejects[8]; /* indexed by enum mesh_reject_reason (include/mesh_abi.h) */
	uint64_t bytes_sent, bytes_received;
	uint64_t passthrough;
	/* Added with the datapath implementation. */
	uint32_t service_id;
	struct config_endpoint vip;
	int algorithm; /* enum mesh_lb_algorithm */
	uint32_t n_backends;
	int64_t active;	     /* connections counted active (SYN sent .. closed) */
	uint64_t redirected; /* connects sent to a backend */
	uint64_t panic;	     /* connects balanced across all backends (panic threshold) */
	int protocol;	     /* IPPROTO_TCP or IPPROTO_UDP */
	uint64_t datagrams_sent, datagrams_received; /* UDP services */
	uint64_t drained;			     /* connections closed by drains */
	uint32_t panic_percent; /* the service's panic threshold, 0..100 (0 = off) */
	uint32_t n_subsets;	/* traffic split: 0 for none */
	const struct datapath_subset_stats *subsets; /* [n_subsets], valid during the callback */
};

/* Calls `svc_cb` once per service and `be_cb` once per backend, reading maps with batch lookups.
 * Either callback may be NULL. Returns 0 or -errno. */
int datapath_stats(struct datapath *dp,
		   void (*svc_cb)(const struct datapath_service_stats *s, void *arg),
		   void (*be_cb)(const struct datapath_backend_stats *b, void *arg), void *arg);

/* Where a stepped read (datapath_stats_step) stands; zero it to start from the beginning. */
struct datapath_stats_cursor {
	int phase;     /* 0 services, 1 backends, 2 done */
	uint32_t next; /* first id of the next step */
};

/* datapath_stats in bounded steps, for a reader that must not hold the event loop: reports the
 * services, then the backends, of at most `max` ids from `cur` on, and advances `cur`. Each
 * object is read once, but steps run at different times: a service or backend that moves to
 * another id between two steps may be reported twice or not at all (the caller dedupes). Returns
 * 1 while more follows, 0 when the read is complete, or -errno. */
int datapath_stats_step(struct datapath *dp, struct datapath_stats_cursor *cur, uint32_t max,
			void (*svc_cb)(const struct datapath_service_stats *s, void *arg),
			void (*be_cb)(const struct datapath_backend_stats *b, void *arg),
			void *arg);

/* Ring-buffer events (breaker transitions, rejects, connections closed for traces), decoded. */
struct datapath_event {
	int type;	/* enum mesh_event_type */
	uint64_t ts_ns; /* CLOCK_MONOTONIC */
	const char *service;
	struct config_endpoint vip; /* the service's address (family 0 when unknown) */
	struct config_endpoint backend;
	enum datapath_circuit from, to;
	int reason; /* enum mesh_reject_reason for rejects */
	/* MESH_EV_CONN: one service connection at its close. */
	struct {
		struct config_endpoint local, remote; /* the client's and the backend's */
		bool failed;			      /* never established */
		bool probe, breaker_moved, sampled;   /* why it was reported */
		enum datapath_circuit breaker;	      /* the backend's breaker at close */
		uint64_t start_ns, est_ns;	      /* SYN sent, established (0: never) */
		uint64_t bytes_sent, bytes_received;  /* by the client */
	} conn;
};
/* File descriptor to poll for events, and the call that drains them into `cb`. */
int datapath_event_fd(struct datapath *dp);
int datapath_drain_events(struct datapath *dp,
			  void (*cb)(const struct datapath_event *ev, void *arg), void *arg);

/* Connection tracing in the datapath: with `enabled`, closes of service connections produce
 * MESH_EV_CONN events (always for failed ones, probes and breaker-moving ones; others with
 * probability `sample_ratio`, 0..1). Returns 0 or -errno (-EINVAL for a ratio out of range). */
int datapath_set_tracing(struct datapath *dp, bool enabled, double sample_ratio);

/* Decays the latency averages of peak_ewma services' backends to `now_ns` (CLOCK_MONOTONIC), as
 * a zero sample would: a backend left alone after a slow spell is tried again in time, without
 * the connect program reading a clock. meshd calls it every second. Returns 0 or -errno. */
int datapath_peak_ewma_decay(struct datapath *dp, uint64_t now_ns);

/* Names of reject reasons for metrics labels. */
const char *datapath_reject_reason_name(int reason);
/* Name of a breaker state (enum datapath_circuit): "closed", "open", "half_open"; "unknown". */
const char *datapath_circuit_name(int circuit);

/* Drains (kernels with bpf_sock_destroy, 6.5+; sockets of meshd's network namespace). A backend
 * that leaves its service (service set or removed) with close_removed_after set is scheduled;
 * datapath_drain_due() closes the established connections of those now due and sets *next_ns to
 * the next due time (CLOCK_MONOTONIC, 0 for none) and *closed to the connections closed.
 * datapath_drain_backend() closes a current backend's connections now (close_on_open). Both
 * return 0 or -errno (-EOPNOTSUPP without the kernel feature, -ENOENT for an unknown backend). */
int datapath_drain_due(struct datapath *dp, uint64_t *next_ns, uint64_t *closed);
int datapath_drain_backend(struct datapath *dp, const char *service,
			   const struct config_endpoint *backend, uint64_t *closed);
/* Whether `service` asked for its backends' connections to be closed when a breaker opens. */
bool datapath_service_closes_on_open(const struct datapath *dp, const char *service);

/* Global decision counters (enum mesh_counter), summed over CPUs into out[0..n). Returns the
 * number of counters written or -errno. */
int datapath_counters(struct datapath *dp, uint64_t *out, size_t n);
/* Name of one enum mesh_counter value (snake_case), or NULL. */
const char *datapath_counter_name(int counter);

/* --- mTLS (user/datapath/mtls.c) --------------------------------------------------------------- */

/* How connect4/6 reach meshd's mTLS proxy. `enabled` false: mTLS services connect plaintext. */
struct datapath_mtls_cfg {
	bool enabled;
	struct config_endpoint outbound; /* IPv4 */
	int no_identity;		 /* enum config_no_identity */
};
int datapath_mtls_set(struct datapath *dp, const struct datapath_mtls_cfg *cfg);
/* Replaces the cgroup id -> identity map with ids[i] -> identities[i]. 0 or -errno. */
int datapath_mtls_identities(struct datapath *dp, const uint64_t *cgroup_ids,
			     const uint32_t *identities, size_t n);
/* mtls.strict_inbound: refuses plaintext connections from other hosts to `ports` (n = 0: off,
 * the program is detached). The sk_lookup program is attached to meshd's network namespace.
 * 0 or -errno. */
int datapath_mtls_strict(struct datapath *dp, const uint16_t *ports, size_t n);

/* A thread-safe handle for the proxy threads (its own descriptors: it outlives a datapath
 * close). */
struct datapath_mtls;
struct datapath_mtls *datapath_mtls_open(struct datapath *dp);
void datapath_mtls_close(struct datapath_mtls *h);

struct datapath_mtls_orig {
	struct config_endpoint vip, backend;
	uint32_t backend_id, backend_epoch, identity;
	bool probe;
};
/* Takes the record connect4 left for the connection client -> local. 0 or -ENOENT. */
int datapath_mtls_take_orig(struct datapath_mtls *h, const struct config_endpoint *client,
			    const struct config_endpoint *local, struct datapath_mtls_orig *out);
/* Feeds one connect outcome to a backend's breaker (the same logic sockops runs). */
int datapath_mtls_outcome(struct datapath_mtls *h, const struct config_endpoint *vip,
			  uint32_t backend_id, uint32_t backend_epoch, bool ok, bool probe,
			  uint64_t rtt_ns);
struct datapath_mtls_backend {
	struct config_endpoint addr;
	uint32_t id, epoch;
	bool usable; /* healthy and breaker not open */
};
/* The backends of the service at `vip`; returns how many (<= max) or -errno. */
int datapath_mtls_backends(struct datapath_mtls *h, const struct config_endpoint *vip,
			   struct datapath_mtls_backend *out, size_t max);

#endif
