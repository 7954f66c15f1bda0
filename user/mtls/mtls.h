/* The mTLS proxy (DESIGN.md flow 2), meshd's `mtls` component: outbound and inbound listeners
 * on one event loop thread per CPU, HTTP/2 CONNECT streams over pooled mutual TLS 1.3
 * connections, SPIFFE identities, authorization, certificate rotation, connect retries. The
 * only code that calls OpenSSL and nghttp2 (user/mtls/). The datapath reaches it through the
 * callbacks of struct mtls_datapath (original destinations recorded by connect4, breaker
 * outcomes, backend sets), so this module stays free of the BPF skeleton. Every function here
 * runs on meshd's main loop unless it says otherwise. */
#ifndef MESH_MTLS_H
#define MESH_MTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"

/* What connect4 recorded for a redirected connection (include/mesh_abi.h's mesh_mtls_orig,
 * decoded). */
struct mtls_orig {
	struct config_endpoint vip;	/* the service address the app asked for */
	struct config_endpoint backend; /* the backend connect4 chose */
	uint32_t backend_id, backend_epoch;
	uint32_t identity; /* hash of the caller identity's service name (mtls_identity_hash) */
	bool probe;	   /* a half-open breaker probe */
};

/* One backend of a service as the datapath sees it, for retries. */
struct mtls_backend {
	struct config_endpoint addr;
	uint32_t id, epoch;
	bool usable; /* healthy and circuit not open */
};

/* The datapath calls the proxy needs; each is called from proxy threads and must be
 * thread-safe. Any may be NULL (then: no original destination = refuse, no outcome feed, no
 * retry to other backends). */
struct mtls_datapath {
	void *ctx;
	/* Takes (reads and removes) the record for the accepted connection client -> local. */
	int (*take_orig)(void *ctx, const struct config_endpoint *client,
			 const struct config_endpoint *local, struct mtls_orig *out);
	/* Feeds one connect outcome to a backend's breaker, as sockops does for plain connects. */
	void (*outcome)(void *ctx, const struct config_endpoint *vip, uint32_t backend_id,
			uint32_t backend_epoch, bool ok, bool probe, uint64_t rtt_ns);
	/* Up to `max` backends of the service at `vip`; returns how many, or -errno. */
	int (*backends)(void *ctx, const struct config_endpoint *vip, struct mtls_backend *out,
			size_t max);
};

/* One proxied connection that ended, for a span (issue 12): the outbound side's CLIENT span and
 * the inbound side's SERVER span share the trace id the CONNECT's `traceparent` carried. Strings
 * and the record live for the call only. */
struct mtls_trace {
	enum mtls_trace_dir { MTLS_TRACE_INBOUND = 0, MTLS_TRACE_OUTBOUND = 1 } dir;
	uint8_t trace_id[16], span_id[8];
	uint8_t parent_span_id[8];  /* inbound: the caller's client span; zero = a root span */
	const char *service;	    /* the destination service ("" when unknown) */
	const char *identity;	    /* the caller's identity (outbound: local; inbound: from its
				    * SPIFFE ID); "" when unknown */
	const char *caller_id;	    /* inbound: the caller's SPIFFE ID */
	const char *result;	    /* "ok", "failed", or why not (a refusal, a CONNECT answer) */
	const char *detail;	    /* the last failure, or "" */
	struct config_endpoint vip; /* outbound: the service address the app dialled */
	struct config_endpoint backend; /* the backend (inbound: the local one) */
	struct config_endpoint peer;	/* the other meshd (outbound: its inbound listener) */
	uint64_t start_ns, established_ns, end_ns; /* CLOCK_MONOTONIC; established 0 = never */
	uint64_t bytes_sent, bytes_received;	   /* by the application (outbound) / backend */
	unsigned attempts;			   /* outbound: backends tried */
	bool probe;				   /* a half-open breaker probe */
};

/* Tracing hooks; NULL members (or a NULL struct) mean no spans. Called from proxy threads, so
 * both must be thread-safe and must not block. */
struct mtls_tracing {
	void *ctx;
	/* The sampling ratio (0..1) while spans are exported, negative while tracing is off. */
	double (*ratio)(void *ctx);
	/* A connection ended that is sampled, or failed: export its span. */
	void (*span)(void *ctx, const struct mtls_trace *t);
};

struct mtls;

/* Hash of a service name as the datapath's identity map stores it (FNV-1a folded to 24 bits,
 * never 0). */
uint32_t mtls_identity_hash(const char *service);

/* Builds the proxy for `cfg` (mtls.enabled must be true): certificate store and source,
 * listeners (taken over from a previous meshd when the fd store has them), worker threads.
 * `tr` (copied; may be NULL) must stay callable until mtls_stop(). NULL with errno and one
 * logged reason. */
struct mtls *mtls_start(struct evloop *main_loop, const struct mesh_config *cfg,
			const struct mtls_datapath *dp, const struct mtls_tracing *tr);
/* Stops accepting, closes every connection and joins the threads. Listening sockets stay in
 * the fd store unless `release` (meshd --cleanup, mTLS turned off). Accepts NULL. */
void mtls_stop(struct mtls *m, bool release);

/* Reload in two steps so a reload applies or refuses as a whole: mtls_plan() does everything
 * that can fail (new listeners, a new certificate source loading its material) without
 * touching the running proxy; mtls_commit() swaps it in (cannot fail); mtls_abort() drops a plan.
 * Keys only a restart applies (mtls.workers) are flagged in the config table: a reload that
 * changes them is refused before any plan. */
struct mtls_plan;
struct mtls_plan *mtls_plan(struct mtls *m, const struct mesh_config *next);
void mtls_commit(struct mtls *m, struct mtls_plan *p);
void mtls_abort(struct mtls_plan *p);

/* Discovery changed service `name` (now `svc`, NULL = removed): records the mTLS port of each
 * backend whose host listens on its own (config_backend.mesh_port, from Consul's `mesh-port`
 * meta); the others are dialled at mtls.inbound_listen's port. 0 or -ENOMEM (logged; that
 * service's backends then use the default port). Main loop. */
int mtls_backends_changed(struct mtls *m, const char *name, const struct config_service *svc);
/* The port the proxy dials for `backend` of the service at `vip`: its own mesh port, or 0 for
 * mtls.inbound_listen's. Any thread. */
uint16_t mtls_mesh_port(struct mtls *m, const struct config_endpoint *vip,
			const struct config_endpoint *backend);

/* Graceful upgrade: stop accepting (the listening sockets stay open for the next process),
 * send GOAWAY on inbound tunnels, keep serving live connections. `done(arg)` is posted to the
 * main loop when the last one closes or `timeout_ns` passed. */
void mtls_drain(struct mtls *m, uint64_t timeout_ns, void (*done)(void *arg), void *arg);

/* --- observability -------------------------------------------------------------------------- */

enum mtls_dir {
	MTLS_INBOUND = 0,
	MTLS_OUTBOUND = 1,
};

#define MTLS_REASONS_MAX 24

#define MTLS_RETRY_RESULTS 4

struct mtls_stats {
	/* Handshakes by direction and reason; reason 0 is "ok". */
	uint64_t handshakes[2][MTLS_REASONS_MAX];
	const char *reason_names[MTLS_REASONS_MAX]; /* NULL past the last */
	uint64_t connections_total[2];
	int64_t connections_active[2];
	uint64_t bytes[2][2];	   /* [dir][0 = to the peer meshd, 1 = from it] */
	uint64_t pool_connections; /* outbound pooled TLS connections */
	uint64_t inbound_tunnels;  /* TLS connections from other hosts */
	/* [0] retried, [1] exhausted (attempts), [2] budget denied, [3] not replayed (early bytes
	 * may have reached a backend) */
	uint64_t retries[MTLS_RETRY_RESULTS];
	uint64_t authz[2];	      /* [0] deny, [1] allow */
	uint64_t authz_closed;	      /* established connections a policy change closed */
	uint64_t refused[8];	      /* outbound refusals by enum mtls_refusal */
	uint64_t failed;	      /* outbound connections failed after every attempt */
	uint64_t traceparent_invalid; /* inbound CONNECTs whose traceparent was ignored */
};

enum mtls_refusal {
	MTLS_REFUSE_NO_ORIG = 0,     /* no record from the datapath for the accepted socket */
	MTLS_REFUSE_NO_SERVICE = 1,  /* the record's VIP is not an mTLS service */
	MTLS_REFUSE_NO_IDENTITY = 2, /* unknown caller identity */
	MTLS_REFUSE_NO_CERT = 3,     /* the caller identity has no certificate */
	MTLS_REFUSE_DENIED = 4,	     /* the remote meshd answered 403 */
	MTLS_REFUSE__COUNT,
};

/* Sums every worker's counters (relaxed reads). */
void mtls_stats(struct mtls *m, struct mtls_stats *out);
const char *mtls_refusal_name(int refusal);

/* One authorization pair seen by the inbound side: SPIFFE ID of the caller, local service. */
struct mtls_authz_pair {
	const char *source; /* SPIFFE ID */
	const char *destination;
	uint64_t allowed, denied;
};
void mtls_authz_pairs(struct mtls *m, void (*cb)(const struct mtls_authz_pair *p, void *arg),
		      void *arg);

/* Local identities with their certificates (and the trust roots), for meshctl and metrics. */
struct mtls_identity {
	bool root;
	const char *service;
	const char *spiffe_id;
	const char *serial;
	const char *source;
	const char *error;   /* last failed update, or NULL */
	const char *cgroups; /* comma-separated cgroups mapped to it, "" for roots */
	bool has_cert;
	int64_t not_before, not_after; /* unix seconds */
	int64_t retained_until;	       /* roots: 0 = in the bundle */
};
void mtls_identities(struct mtls *m, void (*cb)(const struct mtls_identity *id, void *arg),
		     void *arg);

/* Pooled outbound TLS connections. */
struct mtls_pool_entry {
	const char *identity, *service;
	struct config_endpoint peer;
	unsigned streams, max_streams;
	bool ready, draining;
	int worker;
	uint64_t age_ns;
};
void mtls_pool(struct mtls *m, void (*cb)(const struct mtls_pool_entry *e, void *arg), void *arg);

/* `meshctl check`: checks the certificate material `cfg` names (bundle readable, each identity's
 * pair or the CA key, key/certificate match, SPIFFE ID, chain, expiry). Calls `line(ok, what,
 * detail, arg)` per check; returns the number of failures. Any thread. */
int mtls_check_material(const struct mesh_config *cfg,
			void (*line)(bool ok, const char *what, const char *detail, void *arg),
			void *arg);

#endif

/* --- offline PKI for meshctl (any thread) ------------------------------------------------------- */

/* `meshctl ca init`: a new ECDSA P-256 CA for `trust_domain`, valid `ttl_s`; the key at
 * `key_path` with mode 0600 (an existing file is kept unless `force`). 0 or -errno with `why`. */
int mtls_ca_init(const char *cert_path, const char *key_path, const char *trust_domain,
		 uint64_t ttl_s, bool force, char *why, size_t wlen);
/* `meshctl cert issue`: signs a leaf for `service` (SPIFFE ID in `trust_domain`, datacenter
 * `dc`) with the CA of `ca_cert` / `ca_key`, valid `ttl_s`, and writes `dir`/SERVICE.crt (0644)
 * and `dir`/SERVICE.key (0600) for cert_source files. Fills `serial` (hex) and the ID. 0 or
 * -errno with `why`. */
int mtls_cert_issue(const char *ca_cert, const char *ca_key, const char *service,
		    const char *trust_domain, const char *dc, uint64_t ttl_s, const char *dir,
		    char *serial, size_t slen, char *spiffe_id, size_t ilen, char *why,
		    size_t wlen);
