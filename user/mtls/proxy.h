/* Internals of the mTLS proxy shared by its files (not a public API): the shared snapshot of
 * settings the workers read, the worker (one thread, one event loop, its listeners, its pool),
 * the tunnel (one TCP + TLS + HTTP/2 connection to or from another meshd) and the leg (one
 * proxied connection: an application or backend socket bridged to one CONNECT stream).
 * Ownership: a worker owns its tunnels and legs; nothing is shared between workers except the
 * read-only snapshot, the certificate store and the authorization policy (all reference
 * counted) and the retry budgets (mutex). */
#ifndef MESH_MTLS_PROXY_H
#define MESH_MTLS_PROXY_H

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/evloop.h"
#include "mtls/authz.h"
#include "mtls/certs.h"
#include "mtls/mtls.h"
#include "mtls/retry.h"
#include "mtls/tls.h"
#include "mtls/wire.h"
#include "telemetry/traceparent.h"

#define NAME_MAX_ 64
#define STAGE_BYTES 16384	 /* send staging: one TLS record */
#define DATA_FRAME_PAYLOAD 16375 /* + 9-byte header = one full TLS record */
#define READ_BYTES (16384 + 512) /* one TLS record of plaintext, with slack */
#define STREAM_WINDOW (4u << 20) /* per stream: one stream is not throttled */
#define CONN_WINDOW (32u << 20)	 /* per tunnel */
#define MAX_ATTEMPTS 10
#define EARLY_BYTES DATA_FRAME_PAYLOAD /* outbound: sent with the CONNECT, kept for a replay */
/* inbound: the 200 waits this long for the backend's first bytes, to go in the same record */
#define ANSWER_HOLD_NS 1000000ull

/* Doubly linked list node. */
struct link {
	struct link *prev, *next;
};
void link_init(struct link *head);
void link_add(struct link *head, struct link *n);
void link_del(struct link *n);
bool link_empty(const struct link *head);
#define link_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* --- the snapshot: settings and tables every worker reads ------------------------------------- */

struct snap_service {
	struct config_endpoint vip;
	char name[NAME_MAX_];
	struct config_retry retry;
	struct retry_budget *budget; /* shared by all workers; under snap->budget_lock */
};

struct snap_port {
	uint16_t port;
	char service[NAME_MAX_];
};

struct snap_identity {
	uint32_t hash;
	char service[NAME_MAX_];
};

struct budget_table; /* mtls.c: budgets survive snapshots */

struct snap {
	int refs;
	char trust_domain[SPIFFE_DOMAIN_MAX + 1];
	char dc[SPIFFE_SEGMENT_MAX + 1];
	uint16_t inbound_port;		 /* dialled on every backend host */
	struct config_endpoint outbound; /* mtls.outbound_listen */
	uint32_t max_streams;
	uint64_t idle_ns, connect_ns;
	uint64_t busy_poll_ns;	       /* mtls.busy_poll */
	struct snap_service *services; /* sorted by vip */
	size_t n_services;
	struct snap_port *ports; /* local service ports, sorted */
	size_t n_ports;
	struct snap_identity *idents; /* sorted by hash */
	size_t n_idents;
	pthread_mutex_t *budget_lock; /* the proxy's, for every budget */
	struct mtls_datapath dp;
};

struct snap *snap_ref(struct snap *s);
void snap_unref(struct snap *s);
const struct snap_service *snap_service(const struct snap *s, const struct config_endpoint *vip);
const char *snap_port_service(const struct snap *s, uint16_t port);
const char *snap_identity(const struct snap *s, uint32_t hash);
bool snap_serves(const struct snap *s, const char *service);

/* --- statistics: written by one worker, read by the main loop ---------------------------------- */

enum reason_idx {
	RS_OK = 0,
	RS_UNKNOWN_CA,
	RS_EXPIRED,
	RS_NOT_YET_VALID,
	RS_BAD_CERT,
	RS_SPIFFE_ID,
	RS_TRUST_DOMAIN,
	RS_NO_CERT,
	RS_NOT_TLS,
	RS_NO_ALPN,
	RS_UNKNOWN_SERVICE,
	RS_PEER_REJECTED,
	RS_TIMEOUT,
	RS_CONNECT,
	RS_CLOSED,
	RS_PROTOCOL,
	RS_NO_IDENTITY_CERT,
	RS__COUNT,
};
int reason_index(const char *reason);
const char *reason_name(int idx);

#define PAIRS_MAX 256

struct wstats {
	uint64_t handshakes[2][RS__COUNT];
	uint64_t conns_total[2];
	int64_t conns_active[2];
	uint64_t bytes[2][2];
	uint64_t pool, inbound_tunnels;
	uint64_t retries[MTLS_RETRY_RESULTS];
	uint64_t authz[2];
	uint64_t authz_closed;
	uint64_t refused[MTLS_REFUSE__COUNT];
	uint64_t failed;
	uint64_t traceparent_invalid; /* inbound: a traceparent that did not parse, ignored */
	struct {
		uint64_t hash; /* 0 = empty */
		char source[SPIFFE_ID_MAX];
		char destination[NAME_MAX_];
		uint64_t n[2];
	} pairs[PAIRS_MAX];
};

/* Relaxed counter updates: one writer (the worker), readers on the main loop. */
#define STAT_ADD(field, v) __atomic_add_fetch(&(field), (v), __ATOMIC_RELAXED)
#define STAT_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* --- worker ----------------------------------------------------------------------------------- */

struct mtls;

/* A breaker outcome of a successful attempt, fed once the bytes that came with the answer went
 * on (outbound_outcomes_flush). */
struct pending_outcome {
	struct config_endpoint vip;
	uint32_t backend_id, epoch;
	bool probe;
	uint64_t latency_ns;
};
#define PENDING_OUTCOMES 32

struct worker {
	struct mtls *px;
	int index;
	pthread_t thread;
	bool started;
	struct evloop *loop;
	struct snap *snap;
	struct certs *certs;
	struct authz_policy *policy;
	int *out_fds, *in_fds; /* listeners served by this worker (owned by the proxy) */
	size_t n_out, n_in;
	bool accepting;
	bool draining;
	struct link tunnels; /* every tunnel, both directions */
	struct link pool;    /* outbound tunnels, usable or not */
	struct link inbound; /* inbound legs (for policy re-checks) */
	unsigned n_legs;
	int64_t tick;
	uint64_t rnd; /* xorshift state */
	struct authz_limiter deny_log;
	struct mtls_tracing tr; /* the proxy's hooks (fixed) */
	struct trace_rng trng;	/* trace and span ids, sampling draws */
	struct pending_outcome outcomes[PENDING_OUTCOMES];
	unsigned n_outcomes;
	struct wstats st;
	uint8_t rbuf[READ_BYTES];
	uint8_t stage[STAGE_BYTES];
};

uint32_t worker_rand(struct worker *w);
void worker_count_pair(struct worker *w, const char *spiffe_id, const char *dst, bool allow);

/* --- tunnel ----------------------------------------------------------------------------------- */

enum tunnel_state {
	T_CONNECTING = 0, /* TCP connect in progress */
	T_HANDSHAKE = 1,
	T_READY = 2,
	T_CLOSED = 3,
};

struct pool_key {
	uint32_t identity; /* hash */
	char identity_name[NAME_MAX_];
	char service[NAME_MAX_];
	struct config_endpoint peer; /* host ip + mesh port */
	uint8_t addr_bytes[16];	     /* peer address only, for comparing (no padding) */
};

/* What nghttp2 holds for one stream (its user data and its data source): the leg using it, or
 * NULL once the leg left it (a retry, a close). Freed when the stream closes or its tunnel goes,
 * so nghttp2 never reaches a freed leg. */
struct sref {
	struct link node; /* tunnel->srefs */
	struct leg *l;
	int32_t sid;
};

struct tunnel {
	struct worker *w;
	struct link node;    /* worker->tunnels */
	struct link pnode;   /* worker->pool (client only) */
	struct link legs;    /* legs using this tunnel */
	struct link waiting; /* client: legs waiting for READY */
	struct link srefs;   /* every stream's struct sref */
	bool client;
	enum tunnel_state state;
	int fd;
	SSL *ssl;
	nghttp2_session *h2;
	struct tls_peer peer;
	struct certs *certs; /* held while the TLS session may report to it */
	struct pool_key key; /* client */
	unsigned streams;    /* open streams (client: submitted, server: accepted) */
	unsigned n_waiting;  /* client: legs in `waiting` */
	bool goaway;	     /* no new streams on it */
	bool in_flush;
	bool in_recv;  /* inside nghttp2_session_mem_recv: flush afterwards */
	bool rd_short; /* the socket's last read returned less than asked: it was empty */
	bool rd_full;  /* a socket read of this SSL_read filled the buffer: more is waiting */
	/* While reading records: the leg the last DATA went to, and the one corked because a
	 * second chunk followed in the same read (uncorked when the read ends). */
	struct leg *recv_leg, *cork_leg;
	int busy;      /* re-entrancy guard: freed when 0 and closed */
	uint8_t *pend; /* TLS plaintext SSL_write could not take yet */
	size_t pend_len, pend_off;
	int64_t timer;
	uint64_t created_ns, idle_since_ns;
	bool confirmed; /* handshake counted: server verified us (client: its SETTINGS came) */
};

struct tunnel *tunnel_connect(struct worker *w, const struct pool_key *key, SSL_CTX *ctx);
struct tunnel *tunnel_accept(struct worker *w, int fd, SSL_CTX *dispatch);
/* Sends what nghttp2 has queued; safe to call any time. */
void tunnel_flush(struct tunnel *t);
/* Fails the tunnel: every leg on it is told (reset or retried), then it is freed once no
 * callback is on the stack. `reason` is the handshake reason token when not yet ready. */
void tunnel_fail(struct tunnel *t, const char *reason, const char *detail);
/* No new streams: GOAWAY, closed when its streams end. */
void tunnel_goaway(struct tunnel *t);
bool tunnel_usable(const struct tunnel *t);
void tunnel_enter(struct tunnel *t);
void tunnel_leave(struct tunnel *t);
/* Closes idle tunnels whose time is up (worker tick). */
void tunnel_sweep(struct worker *w, uint64_t now);

/* --- leg -------------------------------------------------------------------------------------- */

enum leg_role {
	LEG_OUTBOUND = 0, /* app socket on the outbound listener; we are the h2 client */
	LEG_INBOUND = 1,  /* backend socket; we are the h2 server */
};

enum leg_state {
	L_PENDING = 0,	   /* outbound: waiting for a tunnel / backoff; inbound: headers */
	L_REQUESTED = 1,   /* outbound: CONNECT sent; inbound: backend connect in progress */
	L_ESTABLISHED = 2, /* relaying */
	L_DONE = 3,
};

/* A leg's span (trace.c): begun when tracing is on, exported at its close when sampled or not
 * ok. */
struct leg_trace {
	bool on;
	bool sampled;
	uint8_t trace_id[16], span_id[8], parent_span_id[8];
	const char *result; /* static text; NULL: decided by the leg's state at close */
	char detail[48];
	uint64_t established_ns;
	struct config_endpoint
	    peer; /* inbound: the calling meshd (the tunnel may be gone at close) */
};

struct chunk {
	struct chunk *next;
	size_t len, off;
	uint8_t data[];
};

struct leg {
	struct worker *w;
	enum leg_role role;
	enum leg_state state;
	struct link tnode; /* tunnel->legs or tunnel->waiting */
	struct link inode; /* worker->inbound (inbound legs) */
	struct tunnel *t;
	int32_t sid;
	int fd;
	bool fd_registered;
	bool fd_eof;   /* read EOF: END_STREAM sent */
	bool peer_eof; /* END_STREAM received: shut down writes once drained */
	bool wr_shut;
	bool deferred;	   /* data provider waits for the fd */
	bool drained;	   /* the last read was short: defer the next without a read(2) */
	bool rdhup;	   /* the peer's FIN has been seen: always read to the end */
	bool answer_held;  /* inbound: the 200 waits (briefly) for the backend's first bytes */
	uint64_t held_ns;  /* inbound: when the hold began; outbound: how long the peer held */
	struct sref *sref; /* the stream it uses, NULL when none */
	bool reset;	   /* close the fd with RST */
	bool dead;
	int busy;
	struct chunk *wq, **wq_tail;
	size_t wq_bytes;
	size_t unconsumed; /* queued bytes whose flow-control credit is not yet returned */
	uint64_t bytes_up, bytes_down; /* up: fd -> stream; down: stream -> fd */
	int64_t timer;
	uint64_t started_ns;
	struct leg_trace trace;
	/* outbound */
	struct mtls_orig orig;
	char service[NAME_MAX_];
	char identity[NAME_MAX_];
	struct config_endpoint target; /* backend of the current attempt */
	uint32_t target_id, target_epoch;
	bool target_probe;
	unsigned attempt;
	uint32_t tried[MAX_ATTEMPTS];
	/* The application's first bytes (at most EARLY_BYTES), sent with the CONNECT before the
	 * answer and kept until it, so that a retry sends them again. */
	uint8_t *early;
	size_t early_len, early_off; /* held; already sent on the current attempt */
	bool early_eof;		     /* the application's EOF came before the answer */
	bool early_sent;	     /* the current attempt sent application bytes or EOF */
	int status;		     /* response status of the current attempt */
	char resp_reason[32];
	uint64_t attempt_ns;
	/* inbound */
	struct wire_request req;
	char source_id[SPIFFE_ID_MAX];
	char source[NAME_MAX_];
	char destination[NAME_MAX_];
};

struct leg *leg_new(struct worker *w, enum leg_role role, int fd);
/* Watches the leg's socket (edge-triggered, once). 0 or -errno. */
int leg_watch(struct leg *l);
/* The data provider reading the socket of the leg on stream `s` into DATA frames. */
nghttp2_data_provider leg_provider(struct sref *s);
void leg_enter(struct leg *l);
void leg_leave(struct leg *l);
/* A stream reference for `t` (linked into t->srefs), or NULL. */
struct sref *sref_new(struct tunnel *t);
void sref_free(struct sref *s);
/* Attaches the leg to the stream of `s` on `t`. */
void leg_bind(struct leg *l, struct tunnel *t, struct sref *s);
#define NO_RST UINT32_MAX
/* Leaves its stream (sending RST_STREAM `code` unless NO_RST; credit for what is queued is
 * returned) and its tunnel. */
void leg_unbind(struct leg *l, uint32_t code);
/* Relaying starts (after 200): watch the fd, resume the stream's data. */
void leg_establish(struct leg *l);
/* Ends the leg: closes the fd (with RST when `reset`), cancels or resets the stream. */
void leg_close(struct leg *l, bool reset);
/* nghttp2 events routed to the leg. */
ssize_t leg_read_cb(struct leg *l, uint8_t *buf, size_t len, uint32_t *flags);
void leg_data(struct leg *l, const uint8_t *data, size_t len);
void leg_peer_eof(struct leg *l);
void leg_stream_closed(struct leg *l, uint32_t error_code);
/* The stream of `s` closed: frees `s`, tells its leg. */
void sref_closed(struct sref *s, uint32_t error_code);
/* The tunnel under it failed: outbound may retry, inbound resets. */
void leg_tunnel_failed(struct leg *l, const char *reason);

/* --- roles ------------------------------------------------------------------------------------ */

void outbound_accept(struct evloop *loop, int fd, uint32_t events, void *arg);
/* The tunnel a waiting leg waited for is ready: submit its CONNECT. */
void outbound_tunnel_ready(struct leg *l);
/* The port of the current attempt's peer meshd: the backend's own mesh port, else the snapshot's
 * inbound port. */
uint16_t outbound_peer_port(const struct leg *l);
/* Response headers of the leg's CONNECT. */
void outbound_response(struct leg *l, int status, const char *reason);
/* Feeds the breaker outcomes deferred by answers 200 (after the tunnel's read and flush). */
void outbound_outcomes_flush(struct worker *w);
/* The attempt failed before the answer 200: retry or give up. `unprocessed`: the remote meshd
 * certainly passed nothing to a backend (it answered an error, refused the stream, or nothing
 * was sent); otherwise an attempt that sent early bytes is not retried (they may have reached
 * a backend whose 200 was lost) and the application is reset. */
void outbound_attempt_failed(struct leg *l, const char *why, bool breaker_failure,
			     bool unprocessed);

void inbound_accept(struct evloop *loop, int fd, uint32_t events, void *arg);
/* A new stream on an inbound tunnel. */
struct leg *inbound_stream(struct tunnel *t, int32_t sid);
/* The CONNECT's headers are complete. */
void inbound_request(struct leg *l);
/* The backend socket of a leg in L_REQUESTED saw `events`: connected or failed. */
void inbound_connected(struct leg *l, uint32_t events);
/* The backend socket of a leg whose 200 is held is readable (or closed), or the hold ended:
 * answer now, with the backend's first bytes in the same TLS record. */
void inbound_answer(struct leg *l);
/* Policy changed: close established legs it denies. */
void inbound_recheck(struct worker *w);

/* trace.c: connection spans. Outbound begins when the datapath's record is taken, inbound once
 * the CONNECT's headers are in (its traceparent, when valid, names the trace and the parent). */
void trace_outbound_begin(struct leg *l);
void trace_inbound_begin(struct leg *l);
/* The traceparent for the leg's CONNECT into `buf` (TRACEPARENT_LEN + 1 bytes); false when the
 * leg is not traced. */
bool trace_header(const struct leg *l, char *buf, size_t len);
/* Why the leg ends unless it ends established (first call wins); `result` is static text. */
void trace_result(struct leg *l, const char *result, const char *detail);
/* From leg_close, before the leg's state becomes L_DONE: hands the span to the hooks. */
void trace_end(struct leg *l);

/* pool.c */
struct tunnel *pool_get(struct worker *w, const struct pool_key *key, const char **why);
void pool_remove(struct tunnel *t);

/* Sockets. */
int sock_nodelay(int fd);
/* Whether more records than the one being delivered are already here (buffered by OpenSSL or
 * left in the socket by a read that filled the buffer). */
bool tunnel_more_here(struct tunnel *t);
/* Delivery of one tunnel read is over: uncorks the leg corked during it. */
void tunnel_uncork_leg(struct tunnel *t);
/* Sets or clears TCP_CORK on fd: while set, the kernel sends only full segments, so a run of
 * writes goes out in as few (large) packets as possible; clearing it sends the rest at once. */
void sock_cork(int fd, bool on);
void sock_close_reset(int fd);

#endif
