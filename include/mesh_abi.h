/* Datapunk Mesh datapath ABI: every map key and value, event record, reason enum and limit shared
 * by the BPF programs (bpf/) and userspace (user/datapath/). BPF code includes vmlinux.h first for
 * __u8..__u64 and struct bpf_spin_lock; userspace gets them from the two uapi headers below (the
 * only includes, so config.h users need nothing else). Each struct has explicit padding and a size
 * assertion. Any layout change bumps
 * MESH_ABI_VERSION; the daemon rebuilds pinned maps whose version or layout differs.
 * docs/datapath.md describes every map. */
#ifndef MESH_ABI_H
#define MESH_ABI_H

#ifndef __bpf__
#include <linux/bpf.h>
#include <linux/types.h>
#endif

#define MESH_ABI_VERSION 5

enum mesh_lb_algorithm {
	MESH_LB_RANDOM = 0,
	MESH_LB_ROUND_ROBIN = 1,
	MESH_LB_LEAST_REQUEST = 2,
	MESH_LB_WEIGHTED = 3,
	MESH_LB_MAGLEV = 4,
	MESH_LB_PEAK_EWMA = 5, /* power of two choices over connect-RTT peak EWMA x (active + 1) */
	MESH_LB__COUNT,
};

enum mesh_no_healthy_policy {
	MESH_NO_HEALTHY_REJECT = 0,
	MESH_NO_HEALTHY_PASSTHROUGH = 1,
};

/* What maglev hashes to pick a backend: who sticks to one backend. */
enum mesh_hash_key {
	MESH_HASH_CGROUP = 0,  /* the caller's cgroup id: every process of a cgroup */
	MESH_HASH_PROCESS = 1, /* the caller's process id (tgid) */
};

/* Capacities. The service and backend counts are chosen when the maps are created
 * (datapath_opts; recorded in mesh_abi); these defaults apply when none is given. Backend id 0
 * is never used ("no backend"). */
#define MESH_DEF_SERVICES 16384
#define MESH_DEF_BACKENDS 131072
#define MESH_MAX_SERVICES_CAP (1u << 20) /* largest capacity datapath_opts accepts */
#define MESH_MAX_BACKENDS_CAP (1u << 22)
#define MESH_MAX_BACKENDS_PER_SVC 1024 /* power of two: the BPF side masks indexes with it */
#define MESH_SLOTS_PER_BACKEND 2       /* mesh_slots entries per backend of capacity */
#define MESH_SVC_NAME_MAX 64
#define MESH_MAGLEV_CHUNK 4096	/* u16 entries per mesh_maglev value */
#define MESH_MAGLEV_M_MIN 4093	/* smallest maglev table (prime) */
#define MESH_MAGLEV_M_MAX 65537 /* largest (prime, >= 64 x MESH_MAX_BACKENDS_PER_SVC) */
#define MESH_EVENTS_BYTES (256 * 1024)
#define MESH_HANDOFF_SLOTS 8192 /* power of two: connect -> sockops hand-off (mesh_handoff) */
#define MESH_TRACE_RING 65536	/* power of two: mesh_trace_ring slots (tracing's starts) */
#define MESH_COUNTERS_MAX 64	/* mesh_counters entries: room for counters added later */
#define MESH_MAX_DRAWS 8	/* draws the no-scan path makes before it scans */
#define MESH_UDP_FLOWS 65536	/* mesh_udp_fwd / mesh_udp_rev entries (LRU) */
#define MESH_DRAIN_MAX 4096	/* backends one drain pass closes connections of */
/* mTLS (bpf/mesh_mtls.h). Its maps are additions: an adopted datapath gets them created, so they
 * change no layout above. */
#define MESH_MTLS_ORIG_ENTRIES 65536 /* redirected connections not yet accepted by meshd */
#define MESH_MAX_IDENTITY_CGROUPS 4096
#define MESH_MAX_STRICT_PORTS 1024
#define MESH_CGROUP_DEPTH_MAX 16 /* ancestors looked at for a caller's identity */
#define MESH_SOCKET_MARK                                                                           \
	0x4d4d544c /* SO_MARK of meshd's proxy sockets ("MMTL"): never redirected */

/* Errnos the application sees on a decided reject (positive values, as in errno.h). */
#define MESH_ERRNO_NO_HEALTHY 113 /* EHOSTUNREACH */
#define MESH_ERRNO_MAX_CONN 111	  /* ECONNREFUSED */
#define MESH_ERRNO_NO_IDENTITY 13 /* EACCES: mTLS service, caller without identity, refuse */

enum mesh_circuit_state {
	MESH_CIRCUIT_CLOSED = 0,
	MESH_CIRCUIT_OPEN = 1,
	MESH_CIRCUIT_HALF_OPEN = 2,
	MESH_CIRCUIT__COUNT,
};

/* Why a connect() to a service was failed by the datapath. */
enum mesh_reject_reason {
	MESH_REJECT_NO_BACKEND = 0,   /* the service has no backends at all */
	MESH_REJECT_NO_HEALTHY = 1,   /* every backend unhealthy, panic off, policy reject */
	MESH_REJECT_CIRCUIT_OPEN = 2, /* every healthy backend's breaker is open, policy reject */
	MESH_REJECT_MAX_CONN = 3,     /* the service's max_connections reached */
	MESH_REJECT__COUNT,
};

/* Global per-CPU counters (mesh_counters), one slot per datapath decision. */
enum mesh_counter {
	MESH_CNT_CONNECT = 0,	   /* connect4/6 calls seen in the cgroup (TCP) */
	MESH_CNT_NOT_SERVICE = 1,  /* destination is not a service: untouched */
	MESH_CNT_REDIRECTED = 2,   /* destination rewritten to a backend */
	MESH_CNT_PASSTHROUGH = 3,  /* no usable backend, policy passthrough: untouched */
	MESH_CNT_REJECTED = 4,	   /* failed by decision (see mesh_reject_reason) */
	MESH_CNT_PANIC = 5,	   /* balanced across all backends: panic threshold reached */
	MESH_CNT_OVER_CAP = 6,	   /* an open backend kept in by max_ejection_percent */
	MESH_CNT_PROBE = 7,	   /* half-open probe connects sent */
	MESH_CNT_ERR_STORAGE = 8,  /* no socket storage: failed open, untouched */
	MESH_CNT_ERR_INTERNAL = 9, /* inconsistent maps: failed open, untouched */
	MESH_CNT_ESTABLISHED = 10, /* redirected connects that completed */
	MESH_CNT_FAILED = 11,	   /* redirected connects that failed before established */
	MESH_CNT_CLOSED = 12,	   /* redirected sockets closed (active count released) */
	MESH_CNT_STALE = 13,	   /* outcome for a backend or service since replaced: ignored */
	MESH_CNT_FAMILY = 14,	   /* IPv6-only backend skipped for an IPv4 connect */
	MESH_CNT_EVENT_DROP = 15,  /* ring buffer full */
	MESH_CNT_REENTRY = 16,	   /* connect() again on a socket already counted: untouched */
	MESH_CNT_SCAN = 17, /* decided by scanning every backend (docs/datapath.md: no-scan path) */
	MESH_CNT_HANDOFF_BUSY = 18, /* hand-off slot taken: socket storage created in connect */
	MESH_CNT_REDRAW = 19,	    /* a draw landed on a backend whose breaker is not closed */
	MESH_CNT_UDP_CONNECT = 20,  /* UDP connect()s to a service balanced */
	MESH_CNT_UDP_SENDMSG = 21,  /* unconnected UDP datagrams to a service balanced */
	MESH_CNT_UDP_STICKY = 22,   /* ... of which went to their flow's backend */
	MESH_CNT_UDP_REVERSE = 23,  /* replies (recvmsg) and peers (getpeername) shown as the VIP */
	MESH_CNT_DRAINED = 24,	    /* connections closed by a drain (bpf_sock_destroy) */
	MESH_CNT_MTLS = 25,	    /* sent to meshd's mTLS outbound listener */
	MESH_CNT_MTLS_REFUSED = 26, /* mTLS service, caller without identity, refused (EACCES) */
	MESH_CNT_MTLS_PLAIN = 27,   /* mTLS service, caller without identity: plaintext */
	MESH_CNT_MTLS_MESHD = 28,   /* mTLS service, meshd's own socket: left alone */
	MESH_CNT_MTLS_ORIG = 29,    /* original destinations recorded for meshd */
	MESH_CNT_MTLS_ORIG_ERR = 30, /* original destination could not be recorded */
	MESH_CNT_STRICT_DROP = 31,   /* plaintext SYN from another host to a strict port, refused */
	MESH_CNT_OUTCOME = 32,	     /* connect outcomes fed by meshd (mTLS attempts) */
	MESH_CNT_TRACE_EVENT = 33,   /* connection-close records for traces (mesh_conn_event) */
	MESH_CNT_TRACE_DROP = 34,    /* such records lost: ring buffer full */
	MESH_CNT_SPLIT = 35,	     /* connects to a split service sent to a subset */
	MESH_CNT_SPLIT_FALLBACK = 36, /* ... drawn to a subset that could not take them */
	MESH_CNT__COUNT,
};
_Static_assert(MESH_CNT__COUNT <= MESH_COUNTERS_MAX, "mesh_counters too small");

/* mesh_services key. `addr` is IPv6, IPv4 as v4-mapped (::ffff:a.b.c.d). */
struct mesh_svc_key {
	__u8 addr[16];
	__u16 port; /* network byte order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};
_Static_assert(sizeof(struct mesh_svc_key) == 20, "mesh_svc_key layout");

/* Circuit breaker parameters of a service (DESIGN.md circuit_breaker keys). */
struct mesh_breaker_cfg {
	__u32 consecutive_failures; /* trip after this many failures in a row; 0 = off */
	__u32 error_rate_permille;  /* trip at this failure ratio x 1000 in a window; 0 = off */
	__u32 request_volume;	    /* outcomes in the window before the error rate counts */
	__u32 half_open_probes;	    /* connects let through when half-open (>= 1) */
	__u64 window_ns;
	__u64 open_ns;	   /* first open duration */
	__u64 max_open_ns; /* cap for the exponentially growing open duration */
};
_Static_assert(sizeof(struct mesh_breaker_cfg) == 40, "mesh_breaker_cfg layout");

#define MESH_SVC_F_PASSTHROUGH 0x1 /* no usable backend: leave the destination untouched */
/* Every backend reachable by every connect to the VIP (an IPv4 VIP's are IPv4: v4-mapped
 * backends only; kept by userspace): a connect may draw without scanning the backends. */
#define MESH_SVC_F_SAME_FAMILY 0x2
/* Connections go through meshd's mTLS proxy (services[].mtls, effective mtls.enabled). */
#define MESH_SVC_F_MTLS 0x4
/* Traffic split: mesh_split holds the service's subsets (an addition within ABI 4: older
 * programs ignore the bit and balance over every backend). */
#define MESH_SVC_F_SPLIT 0x8
/* Never in the map: marks the connect program's copy of a service value narrowed to one
 * subset's lists, whose scan must not settle the service-wide not_closed hint. */
#define MESH_SVC_F_SUBSET 0x10

/* mesh_services value: one service, replaced whole by one update (atomic for readers). Its
 * backends are the entries [slot_base, slot_base + n_backends) of mesh_slots, written before
 * the value that points at them is published. */
struct mesh_svc {
	__u32 service_id; /* index into mesh_svc_state, < the service capacity */
	__u32
	    generation; /* bumped on every backend set change; its low bit selects the maglev table */
	__u32 epoch;	/* copy of mesh_svc_state.epoch when the id was allocated */
	__u32 slot_base; /* first mesh_slots entry of this service */
	__u16 n_backends;
	__u16 n_healthy;       /* backends with MESH_BE_F_HEALTHY (kept by userspace) */
	__u32 max_connections; /* active connections of the service; 0 = unlimited */
	__u32 maglev_m;	       /* maglev table size (prime); 0 when not maglev */
	__u8 algorithm;	       /* enum mesh_lb_algorithm */
	__u8 flags;	       /* MESH_SVC_F_* */
	__u8 choice_count;
	__u8 max_ejection_percent; /* 0..100 of n_backends the breaker may take out */
	__u8 panic_percent;	   /* 0..100: below this share usable, balance across all */
	__u8 hash_key;		   /* enum mesh_hash_key (maglev) */
	__u16 split_slot;    /* split services: mesh_split_fast index + 1; 0: look up mesh_split */
	__u32 ewma_decay_ms; /* peak_ewma: time constant of the latency average (was padding) */
	struct mesh_breaker_cfg breaker;
};
_Static_assert(sizeof(struct mesh_svc) == 80, "mesh_svc layout");

/* mesh_slots value (ARRAY; a service owns a range of entries, see mesh_svc.slot_base). Entry j
 * of a service carries three lists at once: its j-th backend (configured order), its j-th
 * healthy backend (j < n_healthy), and, for `weighted`, the alias-method cell j over the
 * healthy backends (Vose): entry j is kept with probability alias_prob / 2^32, else alias_id. */
struct mesh_slot {
	__u32 backend_id;
	__u32 healthy_id;
	__u32 alias_prob;
	__u32 alias_id;
};
_Static_assert(sizeof(struct mesh_slot) == 16, "mesh_slot layout");

/* mesh_maglev key: one chunk of a service's table (table = service_id * 2 + generation & 1). */
struct mesh_maglev_key {
	__u32 table;
	__u32 chunk; /* entries [chunk * MESH_MAGLEV_CHUNK, +MESH_MAGLEV_CHUNK) */
};
_Static_assert(sizeof(struct mesh_maglev_key) == 8, "mesh_maglev_key layout");

/* mesh_maglev value: slot numbers (index into the service's backends). */
struct mesh_maglev_chunk {
	__u16 slot[MESH_MAGLEV_CHUNK];
};
_Static_assert(sizeof(struct mesh_maglev_chunk) == 2 * MESH_MAGLEV_CHUNK, "maglev chunk layout");

/* mesh_svc_state value (ARRAY by service_id): runtime state and counters the kernel updates
 * with atomics; userspace resets it when the id is allocated. */
struct mesh_svc_state {
	__u64 rr;     /* round-robin cursor */
	__s64 active; /* connections counted active (SYN sent .. closed) */
	__u32 epoch;  /* bumped by userspace when the id is (re)allocated */
	/* Backends whose breaker is not closed: +1/-1 on transitions (kernel), so a hint: a scan
	 * that finds every breaker closed sets it back to 0. */
	__s32 not_closed;
	__u64 redirected;
	__u64 passthrough;
	__u64 panic;
	__u64 rejects[MESH_REJECT__COUNT]; /* indexed by enum mesh_reject_reason */
	__u64 bytes_sent;		   /* TCP: bytes_acked at close; UDP: datagram payload */
	__u64 bytes_received;
	__u64 dgrams_sent; /* UDP services */
	__u64 dgrams_received;
	__u64 drained; /* connections closed by a drain */
	__u64 pad;
};
_Static_assert(sizeof(struct mesh_svc_state) == 128, "mesh_svc_state layout");

#define MESH_BE_F_HEALTHY 0x1

/* mesh_backends value (ARRAY by backend id): configuration written by userspace. */
struct mesh_backend {
	__u8 addr[16]; /* IPv6, IPv4 as v4-mapped */
	__u16 port;    /* network byte order */
	__u8 flags;    /* MESH_BE_F_* */
	__u8 pad;
	__u32 weight;	  /* >= 1 */
	__u32 service_id; /* owner */
	__u32 epoch;	  /* bumped when the id is (re)allocated; stale sockets are ignored */
};
_Static_assert(sizeof(struct mesh_backend) == 32, "mesh_backend layout");

/* Breaker state of one backend; guarded by mesh_be_state.lock. */
struct mesh_breaker {
	__u8 state;  /* enum mesh_circuit_state */
	__u8 streak; /* trips in a row: the open duration is open_ns << streak */
	__u16 pad;
	__u32 consecutive; /* failures in a row */
	__u32 win_total;   /* outcomes in the current window */
	__u32 win_failed;
	__u32 probes_left; /* half-open tokens */
	__u32 trips;	   /* total trips */
	__u64 win_start_ns;
	__u64 open_until_ns; /* CLOCK_MONOTONIC; valid when open */
	__u64 changed_ns;    /* last transition */
};
_Static_assert(sizeof(struct mesh_breaker) == 48, "mesh_breaker layout");

/* mesh_be_state value (ARRAY by backend id): runtime state and counters written by the kernel
 * (counters with atomics); userspace resets it when the id is allocated. What every draw reads
 * lives in mesh_be_hot instead; this value is read by a draw only for a breaker out of closed.
 * Its layout is ABI 4's, so an upgrade from 4 keeps this map (and its locks) as it is. */
struct mesh_be_state {
	__s64 active_v4;	   /* ABI 4's active count: moved to mesh_be_hot, 0 after upgrade */
	struct bpf_spin_lock lock; /* guards `br` (see breaker_success_lockless) */
	__u32 pad;
	struct mesh_breaker br;
	__u64 latency_ewma_ns; /* handshake RTT, EWMA weight 1/8 (a statistic: racy) */
	__u64 selected_v4;     /* ABI 4's: moved to mesh_be_hot, 0 after upgrade */
	__u64 ok;	       /* established */
	__u64 failed;	       /* failed before established */
	__u64 probes;
	__u64 bytes_sent; /* bytes_acked at close */
	__u64 bytes_received;
	__u64 transitions[MESH_CIRCUIT__COUNT]; /* indexed by the state entered */
	__u64 drained;				/* connections closed by a drain */
};
_Static_assert(sizeof(struct mesh_be_state) == 152, "mesh_be_state layout");

/* mesh_be_hot value (ARRAY by backend id, ABI 5): what every draw reads, and the one counter
 * the connect program adds to, dense, so that draws over a service's backends stay within a few
 * cache lines (16 KiB per 1,024 backends where mesh_be_state spreads them over 152 KiB) and the
 * chosen backend's counter sits in the line its draw just read. `state` is a copy of
 * mesh_be_state.br.state written under that entry's lock by whoever changes it, so it follows
 * every transition in order; a draw that finds it out of closed reads the breaker itself. */
struct mesh_be_hot {
	__s32 active; /* connections counted active (SYN sent .. closed), atomics */
	__u8 state;   /* enum mesh_circuit_state, copy of mesh_be_state.br.state */
	__u8 pad[3];
	__u64 selected; /* connects sent to it (was mesh_be_state.selected in ABI 4) */
};
_Static_assert(sizeof(struct mesh_be_hot) == 16, "mesh_be_hot layout");

/* mesh_svc_names value (HASH by service_id): lets a restarted daemon recover names. Userspace
 * only. */
struct mesh_svc_name {
	char name[MESH_SVC_NAME_MAX];
	struct mesh_svc_key key;
	__u32 pad;
};
_Static_assert(sizeof(struct mesh_svc_name) == 88, "mesh_svc_name layout");

#define MESH_SK_F_SERVICE 0x1 /* destination was rewritten to `backend_id` */
#define MESH_SK_F_ACTIVE 0x2  /* counted in the active counts (until closed) */
#define MESH_SK_F_DONE 0x4    /* outcome (ok or failed) reported */
#define MESH_SK_F_PROBE 0x8   /* half-open probe */
#define MESH_SK_F_ESTABLISHED 0x10
/* Sent to meshd's outbound listener (meshd feeds the breaker). The caller's identity (24 bits of
 * the mesh_idents value) sits in the flags' upper bits: mesh_sock keeps its ABI 3 layout. */
#define MESH_SK_F_MTLS 0x20
#define MESH_SK_IDENTITY_SHIFT 8
/* Its outcome moved the backend's breaker (a new bit: older programs ignore it, so the layout is
 * unchanged; bits 8.. hold the mTLS identity). */
#define MESH_SK_F_BREAKER 0x40
/* Tracing: decided at establishment not to be recorded (not flagged, not sampled): its close
 * looks for no mesh_trace_ring slot (a new bit, as above). */
#define MESH_SK_F_UNTRACED 0x80

/* mesh_sockets value (SK_STORAGE): what connect() decided, for getpeername and sockops.
 * Unchanged since ABI 3: an upgrade keeps this map, so live sockets keep their decisions. */
struct mesh_sock {
	struct mesh_svc_key vip;
	__u32 service_id;
	__u32 svc_epoch;
	__u32 backend_id;
	__u32 be_epoch;
	__u32 flags; /* MESH_SK_F_* */
};
_Static_assert(sizeof(struct mesh_sock) == 40, "mesh_sock layout");

/* mesh_handoff value (ARRAY, MESH_HANDOFF_SLOTS, indexed by socket cookie): connect4/6 leave
 * their decision here and the socket keeps it for its life (sockops takes it at TCP_CONNECT_CB
 * and frees the slot when the socket reaches CLOSE), so no socket storage is created: that
 * allocation cost more than the rest of all programs' work. A slot is held from the claim
 * (compare-and-swap of `cookie` from 0) until then, or until the socket's next connect() or its
 * release when its connect failed before TCP; a socket finding its slot held uses mesh_sockets.
 * Layout unchanged since ABI 3 (kept across upgrades, as mesh_sockets). */
struct mesh_handoff {
	__u64 cookie; /* socket cookie of the holder; 0 = free */
	struct mesh_sock sock;
	__u64 pad[2];
};
_Static_assert(sizeof(struct mesh_handoff) == 64, "mesh_handoff layout");

enum mesh_event_type {
	MESH_EV_CIRCUIT = 1, /* a breaker changed state */
	MESH_EV_REJECT = 2,  /* a connect was rejected */
	MESH_EV_CONN = 3,    /* a service connection closed, for its trace span (mesh_conn_event) */
};

/* mesh_events record. */
struct mesh_event {
	__u64 ts_ns;
	__u32 type; /* enum mesh_event_type */
	__u32 service_id;
	__u32 backend_id; /* 0 for rejects */
	__u8 from;	  /* enum mesh_circuit_state */
	__u8 to;
	__u8 reason; /* enum mesh_reject_reason */
	__u8 pad;
};
_Static_assert(sizeof(struct mesh_event) == 24, "mesh_event layout");

/* mesh_udp_fwd key (LRU_HASH): a UDP socket and the service address it sends to. */
struct mesh_udp_key {
	__u64 cookie; /* socket cookie */
	struct mesh_svc_key vip;
	__u32 pad;
};
_Static_assert(sizeof(struct mesh_udp_key) == 32, "mesh_udp_key layout");

/* mesh_udp_fwd value: the backend of that flow, kept while it is usable. */
struct mesh_udp_flow {
	__u32 backend_id;
	__u32 be_epoch;
	__u32 service_id;
	__u32 generation; /* of the service when chosen */
};
_Static_assert(sizeof(struct mesh_udp_flow) == 16, "mesh_udp_flow layout");

/* mesh_udp_rev key (LRU_HASH): a UDP socket and a backend it was sent to. */
struct mesh_udp_rkey {
	__u64 cookie;
	__u8 addr[16]; /* backend address, IPv4 as v4-mapped */
	__u16 port;    /* network byte order */
	__u16 pad;
	__u32 pad2;
};
_Static_assert(sizeof(struct mesh_udp_rkey) == 32, "mesh_udp_rkey layout");

/* mesh_udp_rev value: the service address replies from that backend are shown as. */
struct mesh_udp_rev {
	struct mesh_svc_key vip;
	__u32 service_id;
};
_Static_assert(sizeof(struct mesh_udp_rev) == 24, "mesh_udp_rev layout");

/* mesh_drain key: a backend (id and the epoch of its allocation) whose connections the drain
 * iterator closes; the value counts them. */
struct mesh_drain_key {
	__u32 backend_id;
	__u32 be_epoch;
};
_Static_assert(sizeof(struct mesh_drain_key) == 8, "mesh_drain_key layout");
/* mesh_mtls_cfg value (ARRAY, one entry): how connect4/6 reach meshd's mTLS proxy. */
struct mesh_mtls_cfg {
	__u32 outbound_ip4;  /* network byte order; IPv6 sockets use it v4-mapped */
	__u16 outbound_port; /* network byte order */
	__u8 enabled;	     /* 0: mTLS services connect plaintext, as any service */
	__u8 no_identity;    /* enum config_no_identity: 0 refuse, 1 passthrough */
};
_Static_assert(sizeof(struct mesh_mtls_cfg) == 8, "mesh_mtls_cfg layout");

/* mesh_mtls_orig key: a redirected connection as meshd's accept() sees it. Addresses are IPv6,
 * IPv4 as v4-mapped; ports in network byte order. */
struct mesh_mtls_key {
	__u8 client[16]; /* the application socket's local address */
	__u8 local[16];	 /* the outbound listener's address */
	__u16 client_port;
	__u16 local_port;
	__u32 pad;
};
_Static_assert(sizeof(struct mesh_mtls_key) == 40, "mesh_mtls_key layout");

#define MESH_ORIG_F_PROBE 0x1

/* mesh_mtls_orig value (LRU_HASH): what connect4 decided, written at ACTIVE_ESTABLISHED (before
 * meshd's accept() returns), taken by meshd. */
struct mesh_mtls_orig {
	struct mesh_svc_key vip;
	__u8 backend[16];
	__u16 backend_port; /* network byte order */
	__u8 flags;	    /* MESH_ORIG_F_* */
	__u8 pad;
	__u32 backend_id;
	__u32 be_epoch;
	__u32 identity; /* 24 bits (see MESH_SK_IDENTITY_SHIFT) */
};
_Static_assert(sizeof(struct mesh_mtls_orig) == 52, "mesh_mtls_orig layout");

/* mesh_outcome program input (BPF_PROG_TEST_RUN data): one connect outcome meshd saw. */
struct mesh_outcome {
	struct mesh_svc_key vip;
	__u32 backend_id;
	__u32 be_epoch;
	__u8 ok;
	__u8 probe;
	__u16 pad;
	__u64 rtt_ns;
};
_Static_assert(sizeof(struct mesh_outcome) == 40, "mesh_outcome layout");

/* Input of mesh_adjust (a BPF_PROG_TYPE_SYSCALL program userspace runs): adds `delta` to the
 * active count of each listed backend (kind 0) or service (kind 1) with the same atomics the
 * kernel uses, so counts that live sockets keep changing can be corrected exactly. Kind 2 (the
 * upgrade from ABI 4) hands each listed backend's ABI 4 counts (mesh_be_state.active_v4 and
 * selected_v4) over to mesh_be_hot with an exchange and an add, and copies its breaker state
 * there under the lock. */
#define MESH_ADJUST_MAX 64
#define MESH_ADJUST_BACKENDS 0
#define MESH_ADJUST_SERVICES 1
#define MESH_ADJUST_FROM_V4 2
struct mesh_adjust {
	__u32 kind; /* MESH_ADJUST_* */
	__u32 n;
	struct {
		__u32 id;
		__s32 delta;
	} e[MESH_ADJUST_MAX];
};
_Static_assert(sizeof(struct mesh_adjust) == 8 + 8 * MESH_ADJUST_MAX, "mesh_adjust layout");

/* Connection tracing (added within ABI 4, additively): its maps (mesh_trace, mesh_trace_sk) were
 * new, so adopting an ABI 4 datapath pinned without them creates and pins them (libbpf refuses
 * to reuse a pinned map whose sizes differ, so a later change to them fails loudly, not
 * silently); its counters use spare entries of mesh_counters; its records are a new event type
 * that older readers skip. Nothing existing changes layout, hence no version bump.
 *
 * mesh_trace value (ARRAY, one entry): connection tracing, written by userspace. With `enabled`,
 * every service connection's close is considered: failed ones, half-open probes and those whose
 * outcome moved the breaker always produce a mesh_conn_event, the others when a random 32-bit
 * draw is below `sample_threshold` (sample_ratio x 2^32; 2^32 = all). */
struct mesh_trace_cfg {
	__u32 enabled;
	__u32 pad;
	__u64 sample_threshold;
};
_Static_assert(sizeof(struct mesh_trace_cfg) == 16, "mesh_trace_cfg layout");

#define MESH_CONN_F_PROBE 0x1	/* a half-open probe */
#define MESH_CONN_F_BREAKER 0x2 /* its outcome moved the breaker */
#define MESH_CONN_F_SAMPLED 0x4 /* chosen by the sample ratio (else always exported) */

/* mesh_events record of type MESH_EV_CONN: one service connection, at its close. Starts like
 * mesh_event (ts_ns, type, service_id, backend_id) so a reader can dispatch on `type`. Addresses
 * are IPv6, IPv4 as v4-mapped; ports in host byte order. */
struct mesh_conn_event {
	__u64 ts_ns; /* closed (CLOCK_MONOTONIC) */
	__u32 type;  /* MESH_EV_CONN */
	__u32 service_id;
	__u32 backend_id;
	__u8 result;  /* 0 established, 1 failed before established */
	__u8 breaker; /* enum mesh_circuit_state of the backend at close */
	__u8 flags;   /* MESH_CONN_F_* */
	__u8 pad;
	__u64 start_ns; /* SYN sent */
	__u64 est_ns;	/* established; 0 if never */
	__u64 bytes_sent;
	__u64 bytes_received;
	__u8 local[16];	 /* the client's address */
	__u8 remote[16]; /* the backend's */
	__u16 local_port;
	__u16 remote_port;
	__u32 pad2;
	struct mesh_svc_key vip;
	__u32 pad3;
};
_Static_assert(sizeof(struct mesh_conn_event) == 120, "mesh_conn_event layout");

/* mesh_be_ewma value (ARRAY by backend id; additive within ABI 4 like the tracing maps): the
 * peak EWMA of a backend's connect RTT (bpf/lib/split.h) and when it was last updated, kept by
 * sockops for services balanced with peak_ewma. */
struct mesh_be_ewma {
	__u64 ewma_ns;
	__u64 updated_ns; /* CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct mesh_be_ewma) == 16, "mesh_be_ewma layout");

#define MESH_EWMA_PENALTY_NS 1000000000ULL /* cost of a backend with no sample yet but load */

/* mesh_trace_ring value (ARRAY of MESH_TRACE_RING slots, only written while tracing is on; an
 * addition within ABI 5 replacing ABI 4's mesh_trace_sk LRU hash, whose update was most of an
 * unsampled connection's cost): slot `cookie % MESH_TRACE_RING` holds when a service connection
 * started and was established, for its close record, and the socket cookie it is for. Kept
 * apart from mesh_sock, whose layout live sockets carry across upgrades. Direct-mapped: a socket
 * that starts while one MESH_TRACE_RING cookies older is still open takes its slot (that one's
 * close finds another cookie there and has no record); nothing is removed, `cookie` is cleared
 * at the close. */
struct mesh_trace_slot {
	__u64 cookie;	/* socket cookie; 0 = free */
	__u64 start_ns; /* SYN sent (CLOCK_MONOTONIC) */
	__u64 est_ns;	/* established; 0 until then */
	__u64 pad;
};
_Static_assert(sizeof(struct mesh_trace_slot) == 32, "mesh_trace_slot layout");

/* Traffic split (added within ABI 4, additively, like tracing: new maps, a new service flag,
 * spare counters). A split service's mesh_slots range holds its own lists (entries 0..n) and
 * after them one set of lists per subset, laid out the same way (backends, healthy backends,
 * weighted alias cells over the healthy ones), so the connect program balances within a subset
 * with the same code, given the service value narrowed to the subset.
 *
 * mesh_split value (HASH by service_id, not preallocated; replaced whole, written before the
 * service value that sets MESH_SVC_F_SPLIT). Weights in 0.01% (MESH_SPLIT_SCALE = 100%). `sub[i]`
 * is the service value narrowed to subset i: its slot_base, n_backends and n_healthy are the
 * subset's lists (n_healthy 0: the subset cannot take connects), MESH_SVC_F_SUBSET is set, the
 * rest is the service's. */
#define MESH_SPLIT_MAX 8 /* subsets per service */
#define MESH_SPLIT_SCALE 10000
/* mesh_split_fast (an addition within ABI 5: older programs read mesh_split alone and never the
 * service value's split_slot, which was padding): the same values in an ARRAY, whose lookup the
 * verifier inlines, for up to MESH_SPLIT_SLOTS / 2 split services (and no more than the service
 * capacity). Each such service owns two entries and writes them in turn, before the service value
 * that names the one just written (split_slot = entry + 1), so a connect never reads an entry
 * while it is rewritten. A split service without entries (beyond the capacity, or published by
 * an older build) has split_slot 0, and connects find its split in mesh_split (written always). */
#define MESH_SPLIT_SLOTS 2048
struct mesh_split {
	__u8 n; /* subsets, 1..MESH_SPLIT_MAX */
	__u8 pad[3];
	__u16 weight[MESH_SPLIT_MAX];
	__u32 pad2;
	__u64 names_hash; /* of the subsets' names (userspace: counters carry on while it stays) */
	struct mesh_svc sub[MESH_SPLIT_MAX];
};
_Static_assert(sizeof(struct mesh_split) == 32 + 80 * MESH_SPLIT_MAX, "mesh_split layout");

/* mesh_split_cnt value (ARRAY by service_id): connects per subset, counted with atomics; reset
 * by userspace when a service's list of subsets changes (not when only weights do). */
struct mesh_split_cnt {
	__u64 picked[MESH_SPLIT_MAX];	/* connects sent to subset i */
	__u64 fallback[MESH_SPLIT_MAX]; /* connects that drew subset i but went elsewhere */
};
_Static_assert(sizeof(struct mesh_split_cnt) == 128, "mesh_split_cnt layout");

/* mesh_abi value (ARRAY, one entry): written last on a fresh load, checked on adoption. */
struct mesh_abi_info {
	__u32 version; /* MESH_ABI_VERSION */
	__u32 layout;  /* MESH_ABI_LAYOUT */
	__u64 created_ns;
	__u32 max_services; /* capacities the maps were created with */
	__u32 max_backends;
	__u32 max_slots;
	__u32 pad;
};
_Static_assert(sizeof(struct mesh_abi_info) == 32, "mesh_abi_info layout");

/* Fingerprint of sizes and fixed capacities: catches a layout change without a version bump. */
#define MESH_ABI_LAYOUT                                                                            \
	((__u32)(sizeof(struct mesh_svc) * 3 + sizeof(struct mesh_be_state) * 5 +                  \
		 sizeof(struct mesh_backend) * 7 + sizeof(struct mesh_sock) * 11 +                 \
		 sizeof(struct mesh_slot) * 13 + sizeof(struct mesh_svc_state) * 17 +              \
		 MESH_MAX_BACKENDS_PER_SVC * 19 + MESH_MAGLEV_CHUNK * 23 +                         \
		 MESH_COUNTERS_MAX * 29 + sizeof(struct mesh_handoff) * 31 + MESH_HANDOFF_SLOTS +  \
		 sizeof(struct mesh_abi_info) * 37 + sizeof(struct mesh_udp_flow) * 41 +           \
		 sizeof(struct mesh_udp_rev) * 43 + MESH_UDP_FLOWS +                               \
		 sizeof(struct mesh_be_hot) * 47))

#endif
