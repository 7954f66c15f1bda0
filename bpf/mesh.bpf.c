/* The datapath: cgroup connect4/6 choose a backend for connects to a service address and rewrite
 * the destination; getpeername4/6 show the application the service address; sockops turns TCP
 * outcomes into per-backend breaker decisions, active counts and counters. Decision logic lives
 * in lib/lb.h and lib/breaker.h (pure, unit tested); this file gathers inputs from the maps and
 * applies verdicts. Fail open: unknown destinations and internal errors leave connect() alone. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "mesh_abi.h"
#include "lib/breaker.h"
#include "lib/lb.h"
#include "lib/split.h"

#define VERDICT_OK 1
#define VERDICT_REJECT 0
#define AF_INET 2 /* not in vmlinux.h (macros) */
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_abi_info);
} mesh_abi SEC(".maps");

/* Capacities (max_entries of the sized maps) are set by userspace before load; the values here
 * are the defaults. mesh_services is bucketed for 4x the services there can be, so the lookup on
 * every connect rarely walks a chain. Not preallocated: only the services present take memory,
 * and a replaced value is freed after an RCU grace period, never reused under a reader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4 * MESH_DEF_SERVICES);
	__type(key, struct mesh_svc_key);
	__type(value, struct mesh_svc);
} mesh_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MESH_DEF_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_svc_name);
} mesh_svc_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_DEF_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_svc_state);
} mesh_svc_state SEC(".maps");

/* Every service's backend lists, a range per service (mesh_svc.slot_base). Userspace reuses a
 * range only after an RCU grace period, so a connect still holding the previous service value
 * never reads a range that was handed to someone else. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_SLOTS_PER_BACKEND *MESH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_slot);
} mesh_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_backend);
} mesh_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_be_state);
} mesh_be_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_be_hot);
} mesh_be_hot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_COUNTERS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mesh_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct mesh_sock);
} mesh_sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_HANDOFF_SLOTS);
	__type(key, __u32);
	__type(value, struct mesh_handoff);
} mesh_handoff SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MESH_EVENTS_BYTES);
} mesh_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_trace_cfg);
} mesh_trace SEC(".maps");

/* Peak EWMA of each backend's connect RTT, for peak_ewma services (sized at load). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_DEF_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_be_ewma);
} mesh_be_ewma SEC(".maps");

/* Traffic split: each split service's subsets and its connects per subset (mesh_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MESH_DEF_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_split);
} mesh_split SEC(".maps");

/* The same values for the first split services, by the service value's split_slot - 1: an
 * ARRAY, whose lookup the verifier inlines (a HASH lookup is three calls in the kernel). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_SPLIT_SLOTS);
	__type(key, __u32);
	__type(value, struct mesh_split);
} mesh_split_fast SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_DEF_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_split_cnt);
} mesh_split_cnt SEC(".maps");

/* Start and establishment times of service sockets while tracing is on, direct-mapped by socket
 * cookie (mesh_trace_slot): an ARRAY, whose lookup the verifier inlines and whose writes take no
 * lock, where a hash update was a few hundred ns per connection. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_TRACE_RING);
	__type(key, __u32);
	__type(value, struct mesh_trace_slot);
} mesh_trace_ring SEC(".maps");

/* Maglev tables in chunks (a table of up to MESH_MAGLEV_M_MAX entries is 17 chunks). The table
 * id is service_id * 2 + (generation & 1), so a backend set update writes the table of the
 * next generation while connects still read the current one. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2 * MESH_DEF_SERVICES);
	__type(key, struct mesh_maglev_key);
	__type(value, struct mesh_maglev_chunk);
} mesh_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_cand);
} mesh_scratch SEC(".maps");

/* UDP: each unconnected socket's backend per service address (sticky while usable), and for
 * every backend a UDP socket sent to, the service address its replies are shown as. LRU: a
 * flow forgotten under pressure is balanced again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MESH_UDP_FLOWS);
	__type(key, struct mesh_udp_key);
	__type(value, struct mesh_udp_flow);
} mesh_udp_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MESH_UDP_FLOWS);
	__type(key, struct mesh_udp_rkey);
	__type(value, struct mesh_udp_rev);
} mesh_udp_rev SEC(".maps");

/* Per-CPU splitmix64 state: balancing draws without a helper call per connect. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} mesh_rng SEC(".maps");

/* A random seed for one connect's draws (bpf_get_prandom_u32() costs a helper call, ~50 ns
 * here). splitmix64 over a per-CPU counter that starts at a random point: consecutive seeds
 * are independent, unlike consecutive outputs of the xorshift that lb_rand_next() draws with. */
static __always_inline __u32 lb_seed(void)
{
	__u32 zero = 0;
	__u64 *st = bpf_map_lookup_elem(&mesh_rng, &zero), z;

	if (!st)
		return bpf_get_prandom_u32();
	if (!*st)
		*st = (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();
	z = *st += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (__u32)(z ^ (z >> 31));
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mesh_counters, &idx);

	if (v)
		*v += 1;
}

/* Connection tracing's settings, or NULL while it is off. */
static __always_inline struct mesh_trace_cfg *tracing(void)
{
	__u32 zero = 0;
	struct mesh_trace_cfg *t = bpf_map_lookup_elem(&mesh_trace, &zero);

	return t && t->enabled ? t : 0;
}

#define ADD(field, n) __sync_fetch_and_add(&(field), (n))
/* Adds 1 to a counter of entry `id` of an ARRAY map (its value type from the map's definition). */
#define ADD_AT(map, id, field)                                                                     \
	do {                                                                                       \
		__u32 id_ = (__u32)(id);                                                           \
		__typeof__(*(map).value) *v_ = bpf_map_lookup_elem(&(map), &id_);                  \
		if (v_)                                                                            \
			ADD(v_->field, 1);                                                         \
	} while (0)
/* ... of backend `id`'s state, and of its hot entry. */
#define ADD_BE(id, field) ADD_AT(mesh_be_state, id, field)
#define ADD_HOT(id, field) ADD_AT(mesh_be_hot, id, field)

static __always_inline struct mesh_svc_state *svc_state(__u32 service_id)
{
	return bpf_map_lookup_elem(&mesh_svc_state, &service_id);
}

static __always_inline struct mesh_be_state *be_state(__u32 backend_id)
{
	return bpf_map_lookup_elem(&mesh_be_state, &backend_id);
}

/* What draws read of backend `backend_id`: active count and breaker state (mesh_be_hot). */
static __always_inline struct mesh_be_hot *be_hot(__u32 backend_id)
{
	return bpf_map_lookup_elem(&mesh_be_hot, &backend_id);
}

/* Releases a breaker's lock, first copying its state to the backend's hot entry, so that copy
 * follows the transitions in the order the lock gave them. */
static __always_inline void breaker_unlock(struct mesh_be_state *bs, struct mesh_be_hot *hot)
{
	if (hot)
		hot->state = bs->br.state;
	bpf_spin_unlock(&bs->lock);
}

static __always_inline void emit(__u32 type, __u32 service_id, __u32 backend_id, __u8 from, __u8 to,
				 __u8 reason)
{
	/* Reserved in the ring rather than built on the stack: the draws' call chain has no 24
	 * bytes to spare under the 512-byte limit. */
	struct mesh_event *ev = bpf_ringbuf_reserve(&mesh_events, sizeof(*ev), 0);

	if (!ev) {
		count(MESH_CNT_EVENT_DROP);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->type = type;
	ev->service_id = service_id;
	ev->backend_id = backend_id;
	ev->from = from;
	ev->to = to;
	ev->reason = reason;
	bpf_ringbuf_submit(ev, 0);
}

/* Counts and reports a breaker transition (from != to), and keeps the service's count of
 * breakers out of closed that tells connects whether drawing around open ones is exact. */
static __always_inline void circuit_changed(__u32 service_id, __u32 backend_id,
					    struct mesh_be_state *bs, __u8 from, __u8 to)
{
	struct mesh_svc_state *ss;
	__u32 i = to;

	if (from == to)
		return;
	ss = svc_state(service_id);
	if (ss && from == MESH_CIRCUIT_CLOSED)
		ADD(ss->not_closed, 1);
	else if (ss && to == MESH_CIRCUIT_CLOSED)
		ADD(ss->not_closed, -1);
	asm volatile("" : "+r"(i)); /* keep the bound check for the verifier */
	if (bs && i < MESH_CIRCUIT__COUNT)
		ADD(bs->transitions[i], 1);
	emit(MESH_EV_CIRCUIT, service_id, backend_id, from, to, 0);
}

static __always_inline int is_v4mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* Entry `i` of the service's backend lists (mesh_slots). */
static __always_inline struct mesh_slot *slot_at(const struct mesh_svc *svc, __u32 i)
{
	__u32 idx = svc->slot_base + i;

	return bpf_map_lookup_elem(&mesh_slots, &idx);
}

static __always_inline __u32 slot_backend(const struct mesh_svc *svc, __u32 slot)
{
	struct mesh_slot *s = slot_at(svc, slot);

	return s ? s->backend_id : 0;
}

/* --- the scan: every backend looked at (rare cases, see choose()) ---------------------------- */

#define GATHER_CHUNK 8 /* backend slots per gather_chunk() call */

/* What one gather pass learned about a service's backends. */
struct gather_state {
	__u64 now; /* read at the first breaker not closed; 0 until then */
	__u32 cap; /* backends the breaker may take out (max_ejection_percent) */
	__u32 ejected;
	__u32 healthy;	  /* backends with the health flag (and a usable family) */
	__s32 probe_slot; /* first ejected backend due for a half-open probe, or -1 */
	__u32 v4;
	__u32 panic;	  /* take every backend, ignoring health and breakers */
	__u32 not_closed; /* breakers seen out of closed (first pass) */
	__u32 pad;
};

/* Looks at backend slot `i` and adds it to the candidates when healthy and closed, or open but
 * beyond the ejection cap. */
static __always_inline void gather_backend(const struct mesh_svc *svc, struct lb_cand *c,
					   struct gather_state *g, __u32 i)
{
	struct mesh_backend *be;
	struct mesh_be_state *bs;
	struct mesh_be_hot *hot;
	__u32 id, active;
	int peek;

	id = slot_backend(svc, i);
	be = bpf_map_lookup_elem(&mesh_backends, &id);
	hot = be_hot(id);
	if (!be || !hot)
		return;
	if (!g->panic && hot->state != MESH_CIRCUIT_CLOSED)
		g->not_closed++;
	if (g->v4 && !is_v4mapped(be->addr)) {
		count(MESH_CNT_FAMILY);
		return;
	}
	active = hot->active > 0 ? (__u32)hot->active : 0;
	if (!g->panic) {
		if (!(be->flags & MESH_BE_F_HEALTHY))
			return;
		g->healthy++;
		/* The clock costs a helper call and only a breaker that is not closed needs it.
		 * Seen closed here, it counts as closed even if it trips meanwhile. */
		peek = BREAKER_PASS;
		bs = hot->state != MESH_CIRCUIT_CLOSED ? be_state(id) : 0;
		if (bs) {
			if (!g->now)
				g->now = bpf_ktime_get_ns();
			peek = breaker_peek(&bs->br, &svc->breaker, g->now);
		}
		if (peek != BREAKER_PASS && g->ejected < g->cap) {
			g->ejected++;
			if (peek == BREAKER_PROBE && g->probe_slot < 0)
				g->probe_slot = (__s32)i;
			return;
		}
		if (peek != BREAKER_PASS)
			count(MESH_CNT_OVER_CAP);
	}
	lb_cand_add(c, i, be->weight, active);
}

/* Gathers slots [first, first + GATHER_CHUNK). A global function: the verifier checks it once,
 * not once per path of the connect program. Several slots per call because each BPF-to-BPF
 * call and return costs (return thunks under the SRSO mitigation). */
__noinline int gather_chunk(const struct mesh_svc *svc, struct lb_cand *c, struct gather_state *g,
			    __u32 first)
{
	if (!svc || !c || !g)
		return 0;
	for (__u32 j = 0; j < GATHER_CHUNK; j++) {
		__u32 i = first + j;

		if (i >= svc->n_backends)
			break;
		gather_backend(svc, c, g, i);
	}
	return 0;
}

/* A global function too: the loop leaves at a different slot for every backend count, and
 * inlined, everything after it was verified once per exit (seconds of load time at 1,024). */
__noinline int gather(const struct mesh_svc *svc, struct lb_cand *c, struct gather_state *g,
		      __u32 panic)
{
	__u32 n;

	if (!svc || !c || !g)
		return 0;
	n = svc->n_backends;
	c->n = 0;
	for (__u32 w = 0; w < MESH_MAX_BACKENDS_PER_SVC / 64; w++)
		c->mask[w] = 0;
	g->panic = panic;
	for (__u32 i = 0; i < MESH_MAX_BACKENDS_PER_SVC; i += GATHER_CHUNK) {
		if (i >= n)
			break;
		gather_chunk(svc, c, g, i);
	}
	return 0;
}

/* Asks the breaker of backend `id` for a half-open probe token. Returns 1 when granted. */
static __always_inline int try_probe(const struct mesh_svc *svc, __u32 id, __u64 now)
{
	struct mesh_be_state *bs = be_state(id);
	struct mesh_be_hot *hot = be_hot(id);
	__u8 from, to;
	int v;

	if (!bs || !hot)
		return 0;
	bpf_spin_lock(&bs->lock);
	from = bs->br.state;
	v = breaker_admit(&bs->br, &svc->breaker, now);
	to = hot->state = bs->br.state;
	bpf_spin_unlock(&bs->lock);
	circuit_changed(svc->service_id, id, bs, from, to);
	return v == BREAKER_PROBE;
}

/* The key maglev hashes: who sticks to one backend (load_balancer.hash_key). */
static __always_inline __u64 maglev_key(const struct mesh_svc *svc)
{
	return svc->hash_key == MESH_HASH_PROCESS ? bpf_get_current_pid_tgid() >> 32
						  : bpf_get_current_cgroup_id();
}

/* Slot in entry `e` of the service's maglev table, or -1 without a table. */
static __always_inline int maglev_entry(const struct mesh_svc *svc, __u32 e)
{
	struct mesh_maglev_key k = {
		.table = svc->service_id * 2 + (svc->generation & 1),
		.chunk = e / MESH_MAGLEV_CHUNK,
	};
	struct mesh_maglev_chunk *t = bpf_map_lookup_elem(&mesh_maglev, &k);
	__u32 i = e % MESH_MAGLEV_CHUNK;

	asm volatile("" : "+r"(i)); /* keep the bound check for the verifier */
	if (!t || i >= MESH_MAGLEV_CHUNK)
		return -1;
	return t->slot[i];
}

/* Reads the slots of the LB_MAGLEV_PROBE table entries the caller's hash probes into c->maglev
 * (a global function: the loop's exits would multiply the verification of what follows). */
__noinline int maglev_probe(const struct mesh_svc *svc, struct lb_cand *c)
{
	__u32 h, m;

	if (!svc || !c)
		return 0;
	c->n_maglev = 0;
	c->key = maglev_key(svc);
	h = lb_hash64(c->key);
	m = svc->maglev_m;
	for (__u32 j = 0; j < LB_MAGLEV_PROBE && m; j++) {
		int s = maglev_entry(svc, (h + j) % m);

		if (s < 0)
			break;
		c->maglev[j & (LB_MAGLEV_PROBE - 1)] = (__u16)s;
		c->n_maglev = j + 1;
	}
	return 0;
}

/* Fills the per-connect inputs only the service's algorithm reads (each helper call costs on
 * every connect). */
static __always_inline void pick_inputs(const struct mesh_svc *svc, struct mesh_svc_state *ss,
					struct lb_cand *c)
{
	c->algorithm = svc->algorithm;
	c->choice_count = svc->choice_count;
	c->seed = 0;
	c->key = 0;
	c->rr = 0;
	c->n_maglev = 0;
	if (svc->algorithm == MESH_LB_ROUND_ROBIN) {
		c->rr = ADD(ss->rr, 1);
	} else if (svc->algorithm == MESH_LB_MAGLEV) {
		maglev_probe(svc, c);
	} else {
		c->seed = lb_seed();
	}
}

static __always_inline void count_panic(const struct mesh_svc *svc, struct mesh_svc_state *ss)
{
	count(MESH_CNT_PANIC);
	ADD(ss->panic, 1);
}

/* Too few usable backends left: balance across all of them rather than black-hole. */
static __always_inline int panic_mode(const struct mesh_svc *svc, struct mesh_svc_state *ss,
				      const struct lb_cand *c)
{
	if (!svc->panic_percent || c->n * 100 >= (__u32)svc->n_backends * svc->panic_percent)
		return 0;
	count_panic(svc, ss);
	return 1;
}

/* The scan: candidates are the healthy backends whose breaker is closed, open ones beyond the
 * ejection cap, and a probe for an ejected backend that is due one. Returns a backend id (sets
 * *probe), -1 with *reason set when none is usable, -2 on an internal error. */
static __always_inline int scan(const struct mesh_svc *svc, struct mesh_svc_state *ss, int v4,
				__s32 not_closed, int *probe, int *reason)
{
	struct gather_state g = {
		.cap = (__u32)svc->n_backends * svc->max_ejection_percent / 100,
		.probe_slot = -1,
		.v4 = v4,
	};
	__u32 zero = 0;
	struct lb_cand *c;
	int slot;

	count(MESH_CNT_SCAN);
	c = bpf_map_lookup_elem(&mesh_scratch, &zero);
	if (!c)
		return -2;
	gather(svc, c, &g, 0);
	/* The count is a hint kept by transitions; a scan seeing every breaker closed settles
	 * it (unless a transition changed it meanwhile). A subset's scan sees only its own. */
	if (not_closed && !g.not_closed && !(svc->flags & MESH_SVC_F_SUBSET))
		__sync_val_compare_and_swap(&ss->not_closed, not_closed, 0);
	if (g.probe_slot >= 0) {
		__u32 id = slot_backend(svc, (__u32)g.probe_slot);

		if (id && try_probe(svc, id, g.now)) {
			*probe = 1;
			return (int)id;
		}
	}
	if (panic_mode(svc, ss, c))
		gather(svc, c, &g, 1);
	if (c->n == 0) {
		*reason = svc->n_backends == 0 ? MESH_REJECT_NO_BACKEND
			  : g.healthy == 0     ? MESH_REJECT_NO_HEALTHY
					       : MESH_REJECT_CIRCUIT_OPEN;
		return -1;
	}
	pick_inputs(svc, ss, c);
	slot = lb_pick(c);
	return slot < 0 ? -2 : (int)slot_backend(svc, (__u32)slot);
}

/* --- the no-scan path: draw, and draw again around open breakers ---------------------------- */

/* One connect's draws. */
struct draw {
	__u64 now;    /* clock, read at the first breaker found not closed */
	__u32 active; /* active count of the backend last found usable */
	__u32 all;    /* panic: draw over every backend, usable or not */
	__u32 probe;  /* the backend last found usable was granted a half-open probe */
	__u32 pad;
};

/* A drawn backend whose breaker is not closed: this connect becomes its half-open probe when
 * one is due and the breaker grants it (sets d->probe), else it is drawn again. A global
 * function: the lock and the event are verified once, not once per draw of every loop. */
__noinline int probe_drawn(const struct mesh_svc *svc, __u32 id, struct draw *d)
{
	struct mesh_be_state *bs;

	if (!svc || !d)
		return 0;
	bs = be_state(id);
	count(MESH_CNT_REDRAW);
	if (!bs)
		return 0;
	if (!d->now)
		d->now = bpf_ktime_get_ns();
	if (breaker_peek(&bs->br, &svc->breaker, d->now) != BREAKER_PROBE ||
	    !try_probe(svc, id, d->now))
		return 0;
	d->probe = 1;
	return 1;
}

/* Whether backend `id` may take this connect: a closed breaker (the common case, inline), or
 * an open one whose half-open probe this connect becomes. Sets d->active and d->probe. */
static __always_inline int usable(const struct mesh_svc *svc, __u32 id, struct draw *d)
{
	struct mesh_be_hot *hot = be_hot(id);

	if (!hot)
		return 0;
	d->active = hot->active > 0 ? (__u32)hot->active : 0;
	d->probe = 0;
	if (d->all || hot->state == MESH_CIRCUIT_CLOSED)
		return 1;
	return probe_drawn(svc, id, d);
}

/* The backend of draw `j` (< k): the j-th healthy backend, or in panic the j-th of all. */
static __always_inline __u32 drawn(const struct mesh_svc *svc, __u32 j, const struct draw *d)
{
	struct mesh_slot *s = slot_at(svc, j);

	return !s ? 0 : d->all ? s->backend_id : s->healthy_id;
}

/* round_robin: each draw takes the next cursor value, so a backend whose breaker is open passes
 * its turns on and every usable backend gets exactly one connect per cycle. */
__noinline int draw_rr(const struct mesh_svc *svc, __u32 k, struct draw *d)
{
	struct mesh_svc_state *ss;

	if (!svc || !d || !k)
		return -1;
	ss = svc_state(svc->service_id);
	if (!ss)
		return -1;
	for (__u32 t = 0; t < MESH_MAX_DRAWS; t++) {
		__u32 id = drawn(svc, (__u32)(ADD(ss->rr, 1) % k), d);

		if (id && usable(svc, id, d))
			return (int)id;
	}
	return -1;
}

__noinline int draw_random(const struct mesh_svc *svc, __u32 k, struct draw *d)
{
	__u32 seed = lb_seed();

	if (!svc || !d || !k)
		return -1;
	for (__u32 t = 0; t < MESH_MAX_DRAWS; t++) {
		__u32 id = drawn(svc, lb_rand_next(&seed) % k, d);

		if (id && usable(svc, id, d))
			return (int)id;
	}
	return -1;
}

/* weighted: a uniform cell of the alias table over the healthy backends, then the cell's coin. */
__noinline int draw_weighted(const struct mesh_svc *svc, __u32 k, struct draw *d)
{
	__u32 seed = lb_seed();

	if (!svc || !d || !k)
		return -1;
	for (__u32 t = 0; t < MESH_MAX_DRAWS; t++) {
		struct mesh_slot *s = slot_at(svc, lb_rand_next(&seed) % k);
		__u32 id;

		if (!s)
			return -1;
		id =
		    lb_alias_keep(s->alias_prob, lb_rand_next(&seed)) ? s->healthy_id : s->alias_id;
		if (id && usable(svc, id, d))
			return (int)id;
	}
	return -1;
}

/* least_request: lb_pick_least()'s draws (the first uniform, the others distinct from it),
 * each drawn again while it lands on a backend that cannot take the connect. */
/* One of least_request's later draws: distinct from `first`, drawn again while unusable.
 * Returns the backend id, or 0. */
static __always_inline int least_next(const struct mesh_svc *svc, __u32 k, __u32 first, __u32 *seed,
				      struct draw *d)
{
	if (k < 2)
		return 0;
	for (__u32 t = 0; t < MESH_MAX_DRAWS; t++) {
		__u32 id = drawn(svc, lb_least_next(k, first, seed), d);

		if (id && usable(svc, id, d))
			return (int)id;
	}
	return 0;
}

__noinline int draw_least(const struct mesh_svc *svc, __u32 k, struct draw *d)
{
	__u32 seed = lb_seed(), choices, first = 0;
	__u32 best = 0, best_active = 0, best_probe = 0, id;
	__u32 t;

	if (!svc || !d || !k)
		return -1;
	choices = lb_least_choices(svc->choice_count);
	for (t = 0; t < MESH_MAX_DRAWS && !best; t++) {
		first = lb_least_first(k, &seed);
		id = drawn(svc, first, d);
		if (id && usable(svc, id, d)) {
			best = id;
			best_active = d->active;
			best_probe = d->probe;
		}
	}
	if (!best)
		return -1;
	for (__u32 c = 1; c < LB_MAX_CHOICES && c < choices && k > 1 && !best_probe; c++) {
		id = (__u32)least_next(svc, k, first, &seed, d);
		if (!id || d->probe)
			break; /* a probe is a connect of its own backend's: keep the first */
		if (d->active < best_active) {
			best = id;
			best_active = d->active;
		}
	}
	d->probe = best_probe;
	return (int)best;
}

/* What one more connection to backend `id` costs peak_ewma (bpf/lib/split.h). The averages
 * decay with time between samples (sockops) and while no sample comes (meshd, every second:
 * datapath_peak_ewma_decay), so the connect program reads no clock. */
static __always_inline __u64 peak_cost(__u32 id, __u32 active)
{
	struct mesh_be_ewma *e = bpf_map_lookup_elem(&mesh_be_ewma, &id);

	return ewma_cost(e ? e->ewma_ns : 0, active, MESH_EWMA_PENALTY_NS);
}

/* peak_ewma: least_request's two distinct draws (each drawn again while it lands on a backend
 * that cannot take the connect), the lower cost ewma x (active + 1) wins. */
static __always_inline int draw_peak(const struct mesh_svc *svc, __u32 k, struct draw *d)
{
	__u32 seed = lb_seed(), first = 0, best = 0, best_probe = 0, id = 0, t;
	__u64 best_cost = 0;

	for (t = 0; t < MESH_MAX_DRAWS && !best; t++) {
		first = lb_least_first(k, &seed);
		id = drawn(svc, first, d);
		if (id && usable(svc, id, d)) {
			best = id;
			best_probe = d->probe;
			best_cost = peak_cost(id, d->active);
		}
	}
	if (!best)
		return -1;
	if (k > 1 && !best_probe) {
		for (t = 0; t < MESH_MAX_DRAWS; t++) {
			id = drawn(svc, lb_least_next(k, first, &seed), d);
			if (id && usable(svc, id, d))
				break;
		}
		/* a probe is a connect of its own backend's: keep the first */
		if (t < MESH_MAX_DRAWS && !d->probe && peak_cost(id, d->active) < best_cost)
			best = id;
	}
	d->probe = best_probe;
	return (int)best;
}

/* maglev: the table's entries for the caller's hash, as the scan would try them; then plain
 * hashing over the healthy backends. */
__noinline int draw_maglev(const struct mesh_svc *svc, __u32 k, struct draw *d)
{
	struct mesh_backend *be;
	__u32 h, m, id;

	if (!svc || !d || !k)
		return -1;
	h = lb_hash64(maglev_key(svc));
	m = svc->maglev_m;
	for (__u32 j = 0; j < LB_MAGLEV_PROBE && m; j++) {
		int s = maglev_entry(svc, (h + j) % m);

		if (s < 0 || (__u32)s >= svc->n_backends)
			break;
		id = slot_backend(svc, (__u32)s);
		be = bpf_map_lookup_elem(&mesh_backends, &id);
		if (be && (d->all || (be->flags & MESH_BE_F_HEALTHY)) && usable(svc, id, d))
			return (int)id;
	}
	for (__u32 t = 0; t < MESH_MAX_DRAWS; t++) {
		id = drawn(svc, (h + t) % k, d);
		if (id && usable(svc, id, d))
			return (int)id;
	}
	return -1;
}

/* Each draw_*() is a global function: the verifier checks it once on its own, instead of once
 * per path through every program that balances (TCP and UDP, four hooks), which would not fit
 * its limit; the call costs a few ns. They return a backend id, or -1 when every draw failed. */

/* The common case, whatever the size of the service: draws among the healthy backends (kept in
 * order by userspace), reading only the drawn ones; a draw landing on an open breaker is drawn
 * again, so the choice is the scan's over the usable set. Below the panic threshold (known
 * without breakers out of closed) it draws over every backend. Returns a backend id, -1 with
 * *reason set when nothing is usable, or -3 when the scan must decide. */
static __always_inline int choose_fast(const struct mesh_svc *svc, struct mesh_svc_state *ss,
				       __s32 not_closed, int *probe, int *reason)
{
	__u32 n = svc->n_backends, k = svc->n_healthy, open = not_closed > 0 ? not_closed : 0;
	struct draw d = {};
	int id;

	if (n == 0) {
		*reason = MESH_REJECT_NO_BACKEND;
		return -1;
	}
	if (k > n || n > MESH_MAX_BACKENDS_PER_SVC)
		return -3;
	/* Drawing around open breakers is the scan's choice only while every one of them is
	 * ejected (within the cap) and the healthy ones left keep the service above the panic
	 * threshold; otherwise the scan decides. */
	if (open && (open > n * svc->max_ejection_percent / 100 ||
		     (k > open ? k - open : 0) * 100 < n * svc->panic_percent))
		return -3;
	if (k * 100 < n * svc->panic_percent || (k == 0 && svc->panic_percent)) {
		if (svc->algorithm == MESH_LB_WEIGHTED)
			return -3; /* the alias table is over the healthy backends only */
		count_panic(svc, ss);
		d.all = 1;
		k = n;
	} else if (k == 0) {
		*reason = MESH_REJECT_NO_HEALTHY;
		return -1;
	}
	switch (svc->algorithm) {
	case MESH_LB_ROUND_ROBIN:
		id = draw_rr(svc, k, &d);
		break;
	case MESH_LB_LEAST_REQUEST:
		id = draw_least(svc, k, &d);
		break;
	case MESH_LB_WEIGHTED:
		id = draw_weighted(svc, k, &d);
		break;
	case MESH_LB_MAGLEV:
		id = draw_maglev(svc, k, &d);
		break;
	case MESH_LB_PEAK_EWMA:
		id = draw_peak(svc, k, &d);
		break;
	default:
		id = draw_random(svc, k, &d);
	}
	if (id <= 0)
		return -3; /* every draw unusable: let the scan look at all of them */
	*probe = d.probe;
	return id;
}

/* --- the quick path: the no-scan path's common case, inline in the connect program ----------- */

/* A backend a quick draw may take: its id when its breaker is closed, else 0 (the general path
 * decides: redraw or probe). Sets *active as usable() does. */
static __always_inline __u32 quick_take(const struct mesh_slot *s, __u32 *active)
{
	struct mesh_be_hot *hot;
	__u32 id;

	if (!s)
		return 0;
	id = s->healthy_id;
	hot = be_hot(id);
	if (!id || !hot || hot->state != MESH_CIRCUIT_CLOSED)
		return 0;
	*active = hot->active > 0 ? (__u32)hot->active : 0;
	return id;
}

/* Loads the line at `p` without using the value: the load starts now, so a later dependent read
 * of the same line finds it in cache or already on its way. */
static __always_inline void touch(const void *p)
{
	__u32 v;

	if (!p)
		return;
	v = *(const volatile __u32 *)p;
	asm volatile("" ::"r"(v));
}

/* A service's backends mostly have consecutive ids in list order (be_alloc's cursor gives a new
 * backend set consecutive ids), so the backend of healthy entry j is most often entry 0's plus
 * j. Loading those backends' hot and address entries now overlaps their cache misses with the
 * list entries' own: with a thousand backends each is a miss, and list entry -> hot entry ->
 * address was a chain of them. A wrong guess costs loads of no use (entry 0 itself stays in
 * cache); the draws read the real ids either way, so the choice is the same. */
static __always_inline void prefetch_drawn(const struct mesh_svc *svc, __u32 i, __u32 j)
{
	struct mesh_slot *s0 = slot_at(svc, 0);
	__u32 base = s0 ? s0->healthy_id : 0, a = base + i, b = base + j;

	touch(be_hot(a));
	touch(be_hot(b));
	touch(bpf_map_lookup_elem(&mesh_backends, &a));
	touch(bpf_map_lookup_elem(&mesh_backends, &b));
}

/* least_request with two choices and peak_ewma: draw_least()'s and draw_peak()'s first two
 * draws, from the same seed stream; with both breakers closed their choice is this one. Both
 * list entries are read before either hot entry: with many backends each is a cache miss, and
 * so they overlap. */
static __always_inline int quick_p2c(const struct mesh_svc *svc, __u32 k)
{
	__u32 seed = lb_seed(), first = lb_least_first(k, &seed), a_act = 0, b_act = 0, a, b;
	struct mesh_slot *sa, *sb;
	__u32 second;

	if (k == 1) {
		a = quick_take(slot_at(svc, first), &a_act);
		return a ? (int)a : -3;
	}
	second = lb_least_next(k, first, &seed);
	prefetch_drawn(svc, first, second);
	sa = slot_at(svc, first);
	sb = slot_at(svc, second);
	a = quick_take(sa, &a_act);
	b = quick_take(sb, &b_act);
	if (!a || !b)
		return -3;
	if (svc->algorithm == MESH_LB_PEAK_EWMA)
		return peak_cost(b, b_act) < peak_cost(a, a_act) ? (int)b : (int)a;
	return b_act < a_act ? (int)b : (int)a;
}

/* The common case without one BPF-to-BPF call: no breaker of the service out of closed (by the
 * hint, and for each drawn backend by its hot entry), above the panic threshold, one family,
 * round_robin, random, least_request with two choices or peak_ewma. Each call and return costs
 * here (return thunks under SRSO: 13-20 ns measured), and choose() with its draw_*() is two of
 * them (docs/datapath.md, Performance). The draws are the first ones
 * choose_fast() would make, so the choice is the same; anything else, including a drawn
 * breaker found not closed, returns -3 and choose() decides (a round_robin cursor value taken
 * here is passed on, as a draw of draw_rr() on an open breaker). Returns a backend id or -3. */
static __always_inline int choose_quick(const struct mesh_svc *svc, struct mesh_svc_state *ss)
{
	__u32 n = svc->n_backends, k = svc->n_healthy, a_act = 0;
	__u8 alg = svc->algorithm;

	if (!ss || ss->not_closed || !(svc->flags & MESH_SVC_F_SAME_FAMILY) || k == 0 || k > n ||
	    n > MESH_MAX_BACKENDS_PER_SVC || k * 100 < n * svc->panic_percent)
		return -3;
	if (alg == MESH_LB_PEAK_EWMA || (alg == MESH_LB_LEAST_REQUEST && svc->choice_count <= 2))
		return quick_p2c(svc, k);
	if (alg == MESH_LB_ROUND_ROBIN) {
		__u32 id = quick_take(slot_at(svc, (__u32)(ADD(ss->rr, 1) % k)), &a_act);

		return id ? (int)id : -3;
	}
	if (alg == MESH_LB_RANDOM) {
		__u32 seed = lb_seed();
		__u32 id = quick_take(slot_at(svc, lb_rand_next(&seed) % k), &a_act);

		return id ? (int)id : -3;
	}
	return -3;
}

/* Chooses a backend for this connect. Returns its id (sets *probe), -1 with *reason set when no
 * backend is usable, or -2 on an internal error. A global function: verified once per program
 * instead of once per path of its callers (TCP and UDP), which took seconds to load. */
__noinline int choose(const struct mesh_svc *svc, int v4, int *probe, int *reason)
{
	struct mesh_svc_state *ss;
	__s32 not_closed;
	int id = -3;

	if (!svc || !probe || !reason)
		return -2;
	ss = svc_state(svc->service_id);
	if (!ss)
		return -2;
	not_closed = ss->not_closed;
	if (svc->flags & MESH_SVC_F_SAME_FAMILY)
		id = choose_fast(svc, ss, not_closed, probe, reason);
	if (id != -3)
		return id;
	return scan(svc, ss, v4, not_closed, probe, reason);
}

/* Where a split connect stands: the subsets it may still go to, its draw and the subset the
 * weights alone gave it (on the connect program's stack; all-zero to start, as an initializer
 * with other values would become a .rodata map; balance() sets draw and drawn). */
struct split_walk {
	__u32 usable; /* subsets with a backend passing health checks, not tried yet */
	__u32 draw;
	__s32 drawn;
	__u32 started;
};

/* The next subset of a split connect (lib/split.h's draw over the ones left), or -1 when none is
 * left. A global function: verified once, with the mask unknown, rather than once per value the
 * mask takes in the caller's loop (which exceeded the verifier's budget). Only a connect whose
 * drawn subset could not take it comes here. */
__noinline int split_next(const struct mesh_split *sp, struct split_walk *w)
{
	int i;

	if (!sp || !w || sp->n == 0 || sp->n > MESH_SPLIT_MAX)
		return -1;
	if (!w->started) {
		w->started = 1;
		for (__u32 j = 0; j < MESH_SPLIT_MAX; j++)
			if (j < sp->n && sp->sub[j].n_healthy)
				w->usable |= 1u << j;
	}
	i = split_pick(sp->weight, sp->n, w->usable, w->draw);
	if (i < 0 || i >= MESH_SPLIT_MAX)
		return -1;
	w->usable &= ~(1u << i);
	return i;
}

/* The split of a split service: its mesh_split_fast entry (an inlined array lookup) when the
 * value names one that holds this service, else its mesh_split entry (a service published
 * before mesh_split_fast existed, or beyond its capacity). */
static __always_inline struct mesh_split *split_of(const struct mesh_svc *svc, __u32 sid)
{
	__u32 slot = svc->split_slot;
	struct mesh_split *sp;

	if (slot) {
		slot -= 1;
		sp = bpf_map_lookup_elem(&mesh_split_fast, &slot);
		if (sp && sp->n && sp->sub[0].service_id == sid)
			return sp;
	}
	return bpf_map_lookup_elem(&mesh_split, &sid);
}

/* Counts where a split connect went: subset `i` (>= 0), or the whole service (-1). */
static __always_inline void split_count(__u32 sid, const struct split_walk *w, int i)
{
	struct mesh_split_cnt *c = bpf_map_lookup_elem(&mesh_split_cnt, &sid);
	__u32 d = (__u32)w->drawn, k = (__u32)i;

	asm volatile("" : "+r"(k), "+r"(d)); /* keep the bound checks for the verifier */
	if (i >= 0)
		count(MESH_CNT_SPLIT);
	if (c && i >= 0 && k < MESH_SPLIT_MAX)
		ADD(c->picked[k], 1);
	if (i == w->drawn)
		return;
	count(MESH_CNT_SPLIT_FALLBACK);
	if (c && d < MESH_SPLIT_MAX)
		ADD(c->fallback[d], 1);
}

/* Chooses a backend for a connect to `svc`. A split service draws its subset (lib/split.h:
 * weights in 0.01%), then balances within it with the service's own code, given the service
 * value narrowed to the subset's lists (mesh_split's sub[i], written by userspace). A subset is
 * usable while one of its backends passes health checks; one drawn that cannot take the connect
 * (none healthy, or every breaker open beyond what the ejection cap keeps) is dropped from the
 * draw, which maps onto the weights of the usable ones left. With none left, the service as a
 * whole decides (its panic threshold, reject or passthrough). The loop runs choose() from the
 * connect program's own frame: the call chain below choose() leaves no stack for one more
 * frame. Returns as choose(). */
static __always_inline int balance(const struct mesh_svc *svc, struct mesh_svc_state *ss, int v4,
				   int *probe, int *reason)
{
	struct split_walk w = {};
	struct mesh_split *sp;
	struct mesh_svc *sub;
	__u32 sid;
	int i, id;

	if (!(svc->flags & MESH_SVC_F_SPLIT)) {
		id = choose_quick(svc, ss);
		return id > 0 ? id : choose(svc, v4, probe, reason);
	}
	sid = svc->service_id;
	sp = split_of(svc, sid);
	if (!sp)
		return choose(svc, v4, probe, reason);
	/* The common case inline: the drawn subset, balanced without a call. */
	w.draw = lb_seed();
	w.drawn = split_pick(sp->weight, sp->n, (1u << MESH_SPLIT_MAX) - 1, w.draw);
	i = w.drawn;
	if (i >= 0 && i < MESH_SPLIT_MAX) {
		sub = &sp->sub[(__u32)i & (MESH_SPLIT_MAX - 1)];
		id = sub->n_healthy ? choose_quick(sub, ss) : -3;
		if (id > 0) {
			split_count(sid, &w, i);
			return id;
		}
	}
	for (__u32 t = 0; t < MESH_SPLIT_MAX; t++) {
		i = split_next(sp, &w);
		if (i < 0 || i >= MESH_SPLIT_MAX)
			break;
		id = choose(&sp->sub[(__u32)i & (MESH_SPLIT_MAX - 1)], v4, probe, reason);
		if (id > 0) {
			split_count(sid, &w, i);
			return id;
		}
	}
	if (w.started)
		split_count(sid, &w, -1);
	return choose(svc, v4, probe, reason);
}

/* Fails the connect by decision, or lets it through under the passthrough policy. Without
 * bpf_set_retval (kernels before 5.18) a reject surfaces as EPERM. */
static __always_inline int no_backend(struct bpf_sock_addr *ctx, const struct mesh_svc *svc,
				      struct mesh_svc_state *ss, int reason)
{
	if (reason != MESH_REJECT_MAX_CONN && (svc->flags & MESH_SVC_F_PASSTHROUGH)) {
		count(MESH_CNT_PASSTHROUGH);
		if (ss)
			ADD(ss->passthrough, 1);
		return VERDICT_OK;
	}
	count(MESH_CNT_REJECTED);
	if (ss && reason >= 0 && reason < MESH_REJECT__COUNT)
		ADD(ss->rejects[reason & 3], 1);
	emit(MESH_EV_REJECT, svc->service_id, 0, 0, 0, reason);
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
		bpf_set_retval(reason == MESH_REJECT_MAX_CONN ? -MESH_ERRNO_MAX_CONN
							      : -MESH_ERRNO_NO_HEALTHY);
	return VERDICT_REJECT;
}

static __always_inline int over_limit(const struct mesh_svc *svc, const struct mesh_svc_state *ss)
{
	return svc->max_connections && ss && ss->epoch == svc->epoch &&
	       ss->active >= (__s64)svc->max_connections;
}

/* Writes backend `id` as the destination. Returns the backend, or NULL (internal error). */
static __always_inline struct mesh_backend *rewrite(struct bpf_sock_addr *ctx, __u32 id, int v4)
{
	struct mesh_backend *be = bpf_map_lookup_elem(&mesh_backends, &id);

	if (!be) {
		count(MESH_CNT_ERR_INTERNAL);
		return 0;
	}
	if (v4) {
		ctx->user_ip4 = *(__u32 *)&be->addr[12];
	} else {
		ctx->user_ip6[0] = *(__u32 *)&be->addr[0];
		ctx->user_ip6[1] = *(__u32 *)&be->addr[4];
		ctx->user_ip6[2] = *(__u32 *)&be->addr[8];
		ctx->user_ip6[3] = *(__u32 *)&be->addr[12];
	}
	ctx->user_port = be->port;
	return be;
}

/* Rewrites the destination to backend `id` and records the decision on the socket. */
static __always_inline int redirect(struct bpf_sock_addr *ctx, const struct mesh_svc *svc,
				    struct mesh_svc_state *ss, struct mesh_sock *sk, __u32 id,
				    int v4, int probe)
{
	struct mesh_backend *be = rewrite(ctx, id, v4);

	if (!be)
		return VERDICT_OK;
	sk->service_id = svc->service_id;
	sk->svc_epoch = svc->epoch;
	sk->backend_id = id;
	sk->be_epoch = be->epoch;
	sk->flags = MESH_SK_F_SERVICE | (probe ? MESH_SK_F_PROBE : 0);
	count(MESH_CNT_REDIRECTED);
	if (probe)
		count(MESH_CNT_PROBE);
	if (ss)
		ADD(ss->redirected, 1);
	ADD_HOT(id, selected); /* the line its draw read: mesh_be_state's would cost a miss */
	if (probe)
		ADD_BE(id, probes);
	return VERDICT_OK;
}

static __always_inline struct mesh_handoff *handoff_slot(__u64 cookie)
{
	__u32 i = (__u32)cookie & (MESH_HANDOFF_SLOTS - 1);

	return bpf_map_lookup_elem(&mesh_handoff, &i);
}

/* Frees the socket's hand-off slot if it holds one; with `pending`, only if sockops has not
 * taken its decision (not counted active): a connect that failed before TCP. A taken one is the
 * socket's until sockops sees it close, which comes after the release of a socket still
 * connecting. */
static __always_inline void handoff_release(__u64 cookie, int pending)
{
	struct mesh_handoff *h = handoff_slot(cookie);

	if (h && h->cookie == cookie && !(pending && (h->sock.flags & MESH_SK_F_ACTIVE)))
		__sync_val_compare_and_swap(&h->cookie, cookie, 0);
}

/* The decision a socket keeps in its hand-off slot, when the slot is its own. */
static __always_inline struct mesh_sock *held_sock(__u64 cookie)
{
	struct mesh_handoff *h = handoff_slot(cookie);

	return h && h->cookie == cookie && (h->sock.flags & MESH_SK_F_SERVICE) ? &h->sock : 0;
}

/* A decision already counted active stays: the socket is connecting or connected. The kernel
 * runs connect programs only on a closed socket, whose close has released the count, so this
 * guards against a path not seen rather than a known one. */
static __always_inline int reentry(const struct mesh_sock *ms)
{
	if (!(ms->flags & MESH_SK_F_ACTIVE))
		return 0;
	count(MESH_CNT_REENTRY);
	return 1;
}

/* Where this connect's decision goes, or NULL to leave the connect alone. Creating socket
 * storage costs more than all the rest of the connect program (~700 ns: two allocations,
 * charged to a memory cgroup), so the decision goes to a hand-off slot picked by the socket's
 * cookie, which the socket keeps until sockops sees it close (docs/datapath.md, Hand-off
 * slots). A slot held by another socket (a live connection whose cookie is a multiple of the
 * slot count apart, one in flight, or one whose connect failed before reaching TCP) sends this
 * one the slow way: storage now. `seen` is the slot's cookie as the caller read it before
 * balancing (a slot is a cache miss nearly every time, as cookies walk the slots; read early,
 * the miss overlaps the balancing): our own cookie stays ours, a free slot is claimed by
 * compare-and-swap, and a slot seen busy but freed since only sends this connect the slow way. */
static __always_inline struct mesh_sock *decision(struct bpf_sock_addr *ctx, __u64 cookie,
						  struct mesh_handoff *h, __u64 seen)
{
	struct mesh_sock *ms;

	if (h && seen == cookie && reentry(&h->sock))
		return 0;
	if (h && (seen == cookie ||
		  (seen == 0 && __sync_val_compare_and_swap(&h->cookie, 0, cookie) == 0)))
		return &h->sock;
	count(MESH_CNT_HANDOFF_BUSY);
	ms = bpf_sk_storage_get(&mesh_sockets, ctx->sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ms)
		count(MESH_CNT_ERR_STORAGE);
	return ms && !reentry(ms) ? ms : 0;
}

/* This connect() leaves the destination alone: drop what an earlier, failed connect() of the
 * socket decided, so getpeername and sockops leave it alone too. Off the redirect path. A
 * hand-off slot such a connect may still hold is not looked at here (the cookie would cost a
 * non-service connect ~100 ns): take_decision() only takes a decision whose backend is where
 * the socket is connecting, and frees the slot otherwise. */
static __always_inline void forget(struct bpf_sock_addr *ctx)
{
	struct mesh_sock *ms = bpf_sk_storage_get(&mesh_sockets, ctx->sk, 0, 0);

	if (ms && !(ms->flags & MESH_SK_F_ACTIVE))
		ms->flags = 0;
}

static __always_inline void outcome(struct mesh_sock *ms, struct mesh_be_state *bs, int ok,
				    __u64 rtt_ns);
static __always_inline struct mesh_be_state *sock_backend(const struct mesh_sock *ms);

#include "mesh_mtls.h"

static __always_inline int mesh_connect(struct bpf_sock_addr *ctx, struct mesh_svc_key *key, int v4)
{
	int probe = 0, reason = 0, id, mt, rc;
	struct mesh_svc_state *ss;
	struct mesh_handoff *h;
	struct mesh_svc *svc;
	struct mesh_sock *ms;
	__u64 cookie, seen;
	__u32 identity = 0;

	count(MESH_CNT_CONNECT);
	svc = bpf_map_lookup_elem(&mesh_services, key);
	if (!svc) {
		count(MESH_CNT_NOT_SERVICE);
		forget(ctx);
		return VERDICT_OK;
	}
	mt = mtls_verdict(ctx, svc, &identity);
	if (mt == MTLS_REFUSE) {
		forget(ctx);
		handoff_release(bpf_get_socket_cookie(ctx), 0);
		return mtls_refuse(ctx);
	}
	ss = svc_state(svc->service_id);
	cookie = bpf_get_socket_cookie(ctx);
	h = handoff_slot(cookie);
	seen = h ? h->cookie : 0;
	asm volatile("" : "+r"(seen)); /* the load stays here, ahead of the balancing */
	if (over_limit(svc, ss)) {
		id = -1;
		reason = MESH_REJECT_MAX_CONN;
	} else {
		id = balance(svc, ss, v4, &probe, &reason);
	}
	if (id <= 0) { /* a service connect left alone: nothing of an earlier one may stay */
		forget(ctx);
		handoff_release(cookie, 0);
	}
	if (id == -1)
		return no_backend(ctx, svc, ss, reason);
	if (id <= 0) {
		count(MESH_CNT_ERR_INTERNAL);
		return VERDICT_OK;
	}
	ms = decision(ctx, cookie, h, seen);
	if (!ms)
		return VERDICT_OK;
	ms->vip = *key;
	rc = redirect(ctx, svc, ss, ms, (__u32)id, v4, probe);
	if (mt == MTLS_DIVERT && (ms->flags & MESH_SK_F_SERVICE))
		mtls_divert(ctx, ms, v4, identity);
	return rc;
}

/* --- UDP: balanced at connect (connected sockets) and per datagram at sendmsg (unconnected,
 * sticky per socket and service address); replies and the peer name show the VIP ---------- */

/* The key of a backend as a UDP socket's peer. */
static __always_inline void udp_rkey(struct mesh_udp_rkey *rk, __u64 cookie, const __u8 *addr,
				     __u16 port)
{
	rk->cookie = cookie;
	__builtin_memcpy(rk->addr, addr, 16);
	rk->port = port;
}

/* Remembers that replies from backend `be` to this socket are to show the VIP. */
static __always_inline void udp_remember(__u64 cookie, const struct mesh_backend *be,
					 const struct mesh_svc_key *vip, __u32 service_id)
{
	struct mesh_udp_rkey rk = {};
	struct mesh_udp_rev rev = { .vip = *vip, .service_id = service_id };

	udp_rkey(&rk, cookie, be->addr, be->port);
	bpf_map_update_elem(&mesh_udp_rev, &rk, &rev, BPF_ANY);
}

/* Whether the backend of a UDP flow can still take its datagrams: the same id allocation,
 * healthy, breaker closed, and (for v4 sockets) IPv4. */
static __always_inline int flow_usable(const struct mesh_udp_flow *f, int v4)
{
	__u32 id = f->backend_id;
	struct mesh_backend *be = bpf_map_lookup_elem(&mesh_backends, &id);
	struct mesh_be_hot *hot = be_hot(id);

	return be && hot && be->epoch == f->be_epoch && (be->flags & MESH_BE_F_HEALTHY) &&
	       hot->state == MESH_CIRCUIT_CLOSED && (!v4 || is_v4mapped(be->addr));
}

/* Chooses a backend for a UDP datagram or connect and writes it; an unconnected socket keeps
 * its earlier choice for this service address while that backend is usable. */
static __always_inline int udp_balance(struct bpf_sock_addr *ctx, struct mesh_svc_key *key, int v4,
				       int connected)
{
	struct mesh_udp_key fk = {};
	struct mesh_udp_flow *f = 0, nf;
	int probe = 0, reason = 0, id;
	struct mesh_svc_state *ss;
	struct mesh_backend *be;
	struct mesh_svc *svc;

	fk.vip = *key;
	svc = bpf_map_lookup_elem(&mesh_services, key);
	if (!svc)
		return VERDICT_OK;
	ss = svc_state(svc->service_id);
	fk.cookie = bpf_get_socket_cookie(ctx);
	if (!connected)
		f = bpf_map_lookup_elem(&mesh_udp_fwd, &fk);
	if (f && f->service_id == svc->service_id && flow_usable(f, v4)) {
		count(MESH_CNT_UDP_STICKY);
		id = (int)f->backend_id;
	} else {
		id = balance(svc, ss, v4, &probe, &reason);
		if (id == -1)
			return no_backend(ctx, svc, ss, reason);
		if (id <= 0) {
			count(MESH_CNT_ERR_INTERNAL);
			return VERDICT_OK;
		}
		f = 0;
	}
	be = rewrite(ctx, (__u32)id, v4);
	if (!be)
		return VERDICT_OK;
	count(connected ? MESH_CNT_UDP_CONNECT : MESH_CNT_UDP_SENDMSG);
	if (f)
		return VERDICT_OK;
	nf = (struct mesh_udp_flow){ (__u32)id, be->epoch, svc->service_id, svc->generation };
	if (!connected)
		bpf_map_update_elem(&mesh_udp_fwd, &fk, &nf, BPF_ANY);
	udp_remember(fk.cookie, be, key, svc->service_id);
	if (ss)
		ADD(ss->redirected, 1);
	ADD_HOT(id, selected);
	return VERDICT_OK;
}

static __always_inline int udp_socket(struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP;
}

static __always_inline int tcp_socket(struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
}

/* The service key of the destination of a v4 or v6 sock_addr hook. */
static __always_inline void dest_key(struct bpf_sock_addr *ctx, struct mesh_svc_key *key, int v4,
				     __u8 proto)
{
	if (v4) {
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		*(__u32 *)&key->addr[12] = ctx->user_ip4;
	} else {
		*(__u32 *)&key->addr[0] = ctx->user_ip6[0];
		*(__u32 *)&key->addr[4] = ctx->user_ip6[1];
		*(__u32 *)&key->addr[8] = ctx->user_ip6[2];
		*(__u32 *)&key->addr[12] = ctx->user_ip6[3];
	}
	key->port = (__u16)ctx->user_port;
	key->proto = proto;
}

static __always_inline int connect_hook(struct bpf_sock_addr *ctx, int v4)
{
	struct mesh_svc_key key = {};

	if (tcp_socket(ctx)) {
		dest_key(ctx, &key, v4, IPPROTO_TCP);
		return mesh_connect(ctx, &key, v4);
	}
	if (udp_socket(ctx)) {
		dest_key(ctx, &key, v4, IPPROTO_UDP);
		return udp_balance(ctx, &key, v4, 1);
	}
	return VERDICT_OK;
}

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
	return connect_hook(ctx, 1);
}

SEC("cgroup/connect6")
int mesh_connect6(struct bpf_sock_addr *ctx)
{
	return connect_hook(ctx, 0);
}

/* Unconnected UDP: every datagram with a destination. */
static __always_inline int sendmsg_hook(struct bpf_sock_addr *ctx, int v4)
{
	struct mesh_svc_key key = {};

	if (!udp_socket(ctx))
		return VERDICT_OK;
	dest_key(ctx, &key, v4, IPPROTO_UDP);
	return udp_balance(ctx, &key, v4, 0);
}

SEC("cgroup/sendmsg4")
int mesh_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sendmsg_hook(ctx, 1);
}

SEC("cgroup/sendmsg6")
int mesh_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sendmsg_hook(ctx, 0);
}

/* The VIP a UDP socket's peer (a reply's source, or its connected peer) is to be shown as, when
 * the datapath sent it there. */
static __always_inline struct mesh_udp_rev *udp_peer(struct bpf_sock_addr *ctx, int v4)
{
	struct mesh_svc_key peer = {};
	struct mesh_udp_rkey rk = {};
	struct mesh_udp_rev *rev;

	dest_key(ctx, &peer, v4, IPPROTO_UDP);
	udp_rkey(&rk, bpf_get_socket_cookie(ctx), peer.addr, peer.port);
	rev = bpf_map_lookup_elem(&mesh_udp_rev, &rk);
	if (rev)
		count(MESH_CNT_UDP_REVERSE);
	return rev;
}

static __always_inline void show_vip(struct bpf_sock_addr *ctx, const struct mesh_svc_key *vip,
				     int v4)
{
	if (v4) {
		ctx->user_ip4 = *(__u32 *)&vip->addr[12];
	} else {
		ctx->user_ip6[0] = *(__u32 *)&vip->addr[0];
		ctx->user_ip6[1] = *(__u32 *)&vip->addr[4];
		ctx->user_ip6[2] = *(__u32 *)&vip->addr[8];
		ctx->user_ip6[3] = *(__u32 *)&vip->addr[12];
	}
	ctx->user_port = vip->port;
}

static __always_inline int recvmsg_hook(struct bpf_sock_addr *ctx, int v4)
{
	struct mesh_udp_rev *rev;

	if (!udp_socket(ctx))
		return VERDICT_OK;
	rev = udp_peer(ctx, v4);
	if (rev)
		show_vip(ctx, &rev->vip, v4);
	return VERDICT_OK;
}

SEC("cgroup/recvmsg4")
int mesh_recvmsg4(struct bpf_sock_addr *ctx)
{
	return recvmsg_hook(ctx, 1);
}

SEC("cgroup/recvmsg6")
int mesh_recvmsg6(struct bpf_sock_addr *ctx)
{
	return recvmsg_hook(ctx, 0);
}

/* A service socket's decision: in its hand-off slot, else (its slot was busy, or an older build
 * decided it) in socket storage. */
static __always_inline struct mesh_sock *service_sock(__u64 cookie, struct bpf_sock *sk)
{
	struct mesh_sock *ms = held_sock(cookie);

	if (ms || !sk)
		return ms;
	ms = bpf_sk_storage_get(&mesh_sockets, sk, 0, 0);
	return ms && (ms->flags & MESH_SK_F_SERVICE) ? ms : 0;
}

/* The application sees the service address it connected to: TCP from the socket's decision,
 * UDP from the backends the socket was sent to (as for a reply's source). */
static __always_inline int getpeername_hook(struct bpf_sock_addr *ctx, int v4)
{
	struct mesh_sock *ms;

	if (udp_socket(ctx))
		return recvmsg_hook(ctx, v4);
	ms = service_sock(bpf_get_socket_cookie(ctx), ctx->sk);
	if (ms)
		show_vip(ctx, &ms->vip, v4);
	return VERDICT_OK;
}

SEC("cgroup/getpeername4")
int mesh_getpeername4(struct bpf_sock_addr *ctx)
{
	return getpeername_hook(ctx, 1);
}

SEC("cgroup/getpeername6")
int mesh_getpeername6(struct bpf_sock_addr *ctx)
{
	return getpeername_hook(ctx, 0);
}

/* The backend state of a socket's decision, or NULL when its id was reallocated since. */
static __always_inline struct mesh_be_state *sock_backend(const struct mesh_sock *ms)
{
	__u32 id = ms->backend_id;
	struct mesh_backend *be = bpf_map_lookup_elem(&mesh_backends, &id);

	if (!be || be->epoch != ms->be_epoch) {
		count(MESH_CNT_STALE);
		return 0;
	}
	return be_state(id);
}

/* The hot entry (active count) of a socket's backend, when the socket's decision is current:
 * `bs` from sock_backend() says so. */
static __always_inline struct mesh_be_hot *sock_hot(const struct mesh_sock *ms,
						    const struct mesh_be_state *bs)
{
	return bs ? be_hot(ms->backend_id) : 0;
}

static __always_inline struct mesh_svc_state *sock_service(const struct mesh_sock *ms)
{
	struct mesh_svc_state *ss = svc_state(ms->service_id);

	return ss && ss->epoch == ms->svc_epoch ? ss : 0;
}

/* The mesh_trace_ring slot of the socket with cookie `cookie`. */
static __always_inline struct mesh_trace_slot *trace_slot(__u64 cookie)
{
	__u32 i = (__u32)cookie & (MESH_TRACE_RING - 1);

	return bpf_map_lookup_elem(&mesh_trace_ring, &i);
}

/* While tracing is on, a service socket's start (SYN sent) is kept by its cookie for the close
 * record; tracing off costs this one array lookup. */
static __always_inline void trace_start(struct bpf_sock_ops *skops)
{
	struct mesh_trace_slot *v;
	__u64 cookie;

	if (!tracing())
		return;
	cookie = bpf_get_socket_cookie(skops);
	v = trace_slot(cookie);
	if (!v)
		return;
	v->start_ns = bpf_ktime_get_ns();
	v->est_ns = 0;
	asm volatile(
	    "" ::
		: "memory"); /* the times before the cookie: a reader matching it finds them */
	v->cookie = cookie;
}

/* At establishment (after the outcome, which may flag the breaker), the sample draw: a
 * connection neither flagged nor sampled is marked and its close does nothing for tracing (the
 * common case at low ratios: no cookie read, no clock); the others get the establishment time. */
static __always_inline void trace_established(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_trace_cfg *t = tracing();
	struct mesh_trace_slot *v;
	__u64 cookie;

	if (!t)
		return;
	if (!(ms->flags & (MESH_SK_F_PROBE | MESH_SK_F_BREAKER)) &&
	    (__u64)lb_seed() >= t->sample_threshold) {
		ms->flags |= MESH_SK_F_UNTRACED;
		return;
	}
	cookie = bpf_get_socket_cookie(skops);
	v = trace_slot(cookie);
	if (v && v->cookie == cookie)
		v->est_ns = bpf_ktime_get_ns();
}

/* SYN about to be sent: from here on the kernel reports every state change up to CLOSE, so the
 * active counts taken here are released exactly once in on_close(). */
static __always_inline void on_connect(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_svc_state *ss = sock_service(ms);
	struct mesh_be_hot *hot = sock_hot(ms, sock_backend(ms));

	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (ms->flags & MESH_SK_F_ACTIVE)
		return;
	ms->flags |= MESH_SK_F_ACTIVE;
	trace_start(skops);
	if (hot)
		ADD(hot->active, 1);
	if (ss)
		ADD(ss->active, 1);
}

static __always_inline __u64 ewma(__u64 avg, __u64 sample)
{
	return avg ? avg - avg / 8 + sample / 8 : sample;
}

/* One handshake RTT into the backend's peak EWMA (a statistic: racy updates are fine). */
static __always_inline void peak_update(__u32 id, __u64 rtt_ns, __u32 decay_ms, __u64 now)
{
	struct mesh_be_ewma *e = bpf_map_lookup_elem(&mesh_be_ewma, &id);

	if (!e)
		return;
	e->ewma_ns =
	    ewma_peak_update(e->ewma_ns, rtt_ns ? rtt_ns : 1,
			     e->updated_ns && now > e->updated_ns ? now - e->updated_ns : 0,
			     (__u64)decay_ms * 1000000);
	e->updated_ns = now;
}

/* Feeds one outcome to the backend's breaker; `ok` with the handshake RTT in ns. */
static __always_inline void outcome(struct mesh_sock *ms, struct mesh_be_state *bs, int ok,
				    __u64 rtt_ns)
{
	struct mesh_svc *svc = bpf_map_lookup_elem(&mesh_services, (void *)&ms->vip);
	int probe = !!(ms->flags & MESH_SK_F_PROBE);
	struct mesh_be_hot *hot;
	__u8 from, to;
	__u32 rnd;
	__u64 now;

	if (!bs || !svc || svc->service_id != ms->service_id)
		return; /* backend or service replaced meanwhile: nothing to judge */
	/* The clock is a helper call: a success needs it only for peak_ewma and the error rate's
	 * window (breaker_success_lockless() reads `now` for nothing else); the lock path reads it. */
	now = ok && svc->algorithm != MESH_LB_PEAK_EWMA && !svc->breaker.error_rate_permille
		  ? 0
		  : bpf_ktime_get_ns();
	if (ok && svc->algorithm == MESH_LB_PEAK_EWMA)
		peak_update(ms->backend_id, rtt_ns, svc->ewma_decay_ms, now);
	if (ok && breaker_success_lockless(&bs->br, &svc->breaker, now, probe)) {
		bs->latency_ewma_ns = ewma(bs->latency_ewma_ns, rtt_ns); /* a statistic: racy ok */
		return;
	}
	if (!now)
		now = bpf_ktime_get_ns();
	rnd = bpf_get_prandom_u32();
	hot = be_hot(ms->backend_id);
	bpf_spin_lock(&bs->lock);
	from = bs->br.state;
	if (ok) {
		breaker_on_success(&bs->br, &svc->breaker, now, probe);
		bs->latency_ewma_ns = ewma(bs->latency_ewma_ns, rtt_ns);
	} else {
		breaker_on_failure(&bs->br, &svc->breaker, now, probe, rnd);
	}
	to = bs->br.state;
	breaker_unlock(bs, hot);
	if (from != to)
		ms->flags |= MESH_SK_F_BREAKER;
	circuit_changed(ms->service_id, ms->backend_id, bs, from, to);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_be_state *bs;

	if (ms->flags & MESH_SK_F_DONE)
		return;
	ms->flags |= MESH_SK_F_DONE | MESH_SK_F_ESTABLISHED;
	if (ms->flags & MESH_SK_F_MTLS) { /* meshd reports the backend's outcome */
		trace_established(skops, ms);
		mtls_record(skops, ms);
		return;
	}
	count(MESH_CNT_ESTABLISHED);
	bs = sock_backend(ms);
	if (bs)
		ADD(bs->ok, 1);
	outcome(ms, bs, 1, (__u64)(skops->srtt_us >> 3) * 1000);
	trace_established(skops, ms);
}

/* The address words of a sockops context as mesh ABI addresses (IPv4 as v4-mapped). */
static __always_inline void sockops_addrs(struct bpf_sock_ops *skops, struct mesh_conn_event *e)
{
	__u32 family = skops->family, l4 = skops->local_ip4, r4 = skops->remote_ip4;

	if (family == AF_INET) {
		e->local[10] = e->local[11] = e->remote[10] = e->remote[11] = 0xff;
		*(__u32 *)&e->local[12] = l4;
		*(__u32 *)&e->remote[12] = r4;
	} else {
		*(__u32 *)&e->local[0] = skops->local_ip6[0];
		*(__u32 *)&e->local[4] = skops->local_ip6[1];
		*(__u32 *)&e->local[8] = skops->local_ip6[2];
		*(__u32 *)&e->local[12] = skops->local_ip6[3];
		*(__u32 *)&e->remote[0] = skops->remote_ip6[0];
		*(__u32 *)&e->remote[4] = skops->remote_ip6[1];
		*(__u32 *)&e->remote[8] = skops->remote_ip6[2];
		*(__u32 *)&e->remote[12] = skops->remote_ip6[3];
	}
	e->local_port = (__u16)skops->local_port;
	e->remote_port = bpf_ntohs((__u16)(skops->remote_port >> 16));
}

/* Whether this close gets a record: always for failed connects, half-open probes and connects
 * that moved the breaker; otherwise when the sample draw says so (made at establishment when
 * tracing was on then: its entry has est_ns and was kept because sampled). Returns the
 * MESH_CONN_F_* flags, or -1 for no record. */
static __always_inline int trace_verdict(const struct mesh_trace_cfg *t, const struct mesh_sock *ms,
					 const struct mesh_trace_slot *ts)
{
	int flags = 0;

	if (ms->flags & MESH_SK_F_PROBE)
		flags |= MESH_CONN_F_PROBE;
	if (ms->flags & MESH_SK_F_BREAKER)
		flags |= MESH_CONN_F_BREAKER;
	if (flags || !(ms->flags & MESH_SK_F_ESTABLISHED))
		return flags;
	if (ts->est_ns)
		return MESH_CONN_F_SAMPLED;
	return (__u64)lb_seed() < t->sample_threshold ? MESH_CONN_F_SAMPLED : -1;
}

/* At close, a record for the connection's trace span (mesh_conn_event), for connects seen from
 * their start while tracing was on (their mesh_trace_ring slot, freed here) and not left out
 * at establishment. */
static __always_inline void trace_close(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_trace_cfg *t = tracing();
	struct mesh_conn_event *e;
	struct mesh_trace_slot *ts;
	struct mesh_be_state *bs;
	__u64 cookie;
	int flags;

	if (!t || (ms->flags & MESH_SK_F_UNTRACED))
		return;
	cookie = bpf_get_socket_cookie(skops);
	ts = trace_slot(cookie);
	if (!ts || ts->cookie != cookie)
		return; /* started before tracing was on, or its slot was taken since */
	flags = trace_verdict(t, ms, ts);
	e = flags < 0 ? 0 : bpf_ringbuf_reserve(&mesh_events, sizeof(*e), 0);
	if (!e) {
		if (flags >= 0)
			count(MESH_CNT_TRACE_DROP);
		ts->cookie = 0;
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->type = MESH_EV_CONN;
	e->service_id = ms->service_id;
	e->backend_id = ms->backend_id;
	e->result = !(ms->flags & MESH_SK_F_ESTABLISHED);
	bs = sock_backend(ms);
	e->breaker = bs ? bs->br.state : 0;
	e->flags = (__u8)flags;
	e->start_ns = ts->start_ns;
	e->est_ns = ts->est_ns;
	e->bytes_sent = skops->bytes_acked;
	e->bytes_received = skops->bytes_received;
	sockops_addrs(skops, e);
	e->vip = ms->vip;
	ts->cookie = 0;
	bpf_ringbuf_submit(e, 0);
	count(MESH_CNT_TRACE_EVENT);
}

static __always_inline void on_close(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_be_state *bs = sock_backend(ms);
	struct mesh_be_hot *hot = sock_hot(ms, bs);
	struct mesh_svc_state *ss = sock_service(ms);
	__u64 sent = skops->bytes_acked, received = skops->bytes_received;

	/* A diverted connect that failed reached meshd's listener, not the backend. */
	if (!(ms->flags & MESH_SK_F_DONE) && !(ms->flags & MESH_SK_F_MTLS)) {
		count(MESH_CNT_FAILED);
		if (bs)
			ADD(bs->failed, 1);
		outcome(ms, bs, 0, 0);
	}
	ms->flags |= MESH_SK_F_DONE;
	if (ms->flags & MESH_SK_F_ACTIVE) {
		ms->flags &= ~MESH_SK_F_ACTIVE;
		if (hot)
			ADD(hot->active, -1);
		if (ss)
			ADD(ss->active, -1);
		count(MESH_CNT_CLOSED);
	}
	if (bs) {
		ADD(bs->bytes_sent, sent);
		ADD(bs->bytes_received, received);
	}
	if (ss) {
		ADD(ss->bytes_sent, sent);
		ADD(ss->bytes_received, received);
	}
	trace_close(skops, ms);
}

/* Whether the socket is connecting to the backend of a hand-off decision. */
static __always_inline int connecting_to(struct bpf_sock *sk, const struct mesh_sock *d)
{
	/* Every field read up front: the verifier refuses the variable offsets the compiler
	 * makes of reads in different branches. */
	__u32 id = d->backend_id, family = sk->family, v4 = sk->dst_ip4, w0 = sk->dst_ip6[0];
	__u32 w1 = sk->dst_ip6[1], w2 = sk->dst_ip6[2], w3 = sk->dst_ip6[3];
	__u16 port = sk->dst_port;
	struct mesh_backend *be = bpf_map_lookup_elem(&mesh_backends, &id);
	const __u32 *a;

	if (d->flags & MESH_SK_F_MTLS)
		return mtls_connecting(family, v4, w0, w1, w2, w3, port);
	if (!be || port != be->port)
		return 0;
	a = (const __u32 *)be->addr;
	if (family == AF_INET)
		return is_v4mapped(be->addr) && v4 == a[3];
	return w0 == a[0] && w1 == a[1] && w2 == a[2] && w3 == a[3];
}

/* An MPTCP socket (`mptcpize run`, IPPROTO_MPTCP) connects through its first subflow, a TCP
 * socket: connect4/6 and sockops see the subflow, while the application's getpeername() asks
 * the MPTCP socket. The decision is copied onto the MPTCP socket too, for getpeername only (the
 * subflow keeps the counts: sockops follows its states). Needs bpf_skc_to_mptcp_sock (5.19+,
 * CAP_PERFMON); elsewhere MPTCP applications see the backend (docs/datapath.md). */
static __always_inline void mptcp_share(struct bpf_sock *sk, const struct mesh_sock *d)
{
	struct mptcp_sock *msk;
	struct mesh_sock *ms;

	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_skc_to_mptcp_sock))
		return;
	msk = bpf_skc_to_mptcp_sock(sk);
	if (!msk)
		return;
	ms = bpf_sk_storage_get(&mesh_sockets, msk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ms && !(ms->flags & MESH_SK_F_ACTIVE)) {
		*ms = *d;
		ms->flags = MESH_SK_F_SERVICE;
	}
}

/* TCP_CONNECT_CB: takes the decision connect4/6 left in the socket's hand-off slot, which the
 * socket keeps from here until sockops sees it close (no socket storage). A decision for
 * another destination is one a connect that failed before TCP left behind (the socket now
 * connects elsewhere, not through a service): dropped, the slot freed. Returns the decision,
 * or NULL when there is none in the slot (the caller looks in socket storage, where connect4
 * put it when the slot was busy). */
static __always_inline struct mesh_sock *take_decision(struct bpf_sock_ops *skops, __u64 cookie)
{
	struct mesh_handoff *h = handoff_slot(cookie);
	struct bpf_sock *sk = skops->sk;

	if (!h || h->cookie != cookie || !sk)
		return 0; /* not a service connect, or decided straight into storage */
	if (connecting_to(sk, &h->sock)) {
		if (skops->is_fullsock)
			mptcp_share(sk, &h->sock);
		if (h->sock.flags & MESH_SK_F_SERVICE)
			return &h->sock; /* kept for the socket's life: on_close frees it */
	}
	__sync_val_compare_and_swap(&h->cookie, cookie, 0);
	return 0;
}

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	struct mesh_sock *ms = 0;
	__u64 cookie;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    (op != BPF_SOCK_OPS_STATE_CB || skops->args[1] != BPF_TCP_CLOSE))
		return 1; /* before any lookup: most callbacks are of no interest */
	cookie = bpf_get_socket_cookie(skops);
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		ms = take_decision(skops, cookie);
	if (!ms)
		ms = service_sock(cookie, skops->sk);
	if (!ms)
		return 1;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		on_connect(skops, ms);
	} else if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		on_established(skops, ms);
	} else {
		on_close(skops, ms);
		handoff_release(cookie, 0); /* the socket's slot, if it kept one */
	}
	return 1;
}

/* UDP traffic of the services, per service: datagrams and payload bytes both ways, counted on
 * the packets of sockets the datapath sent to a backend (mesh_udp_rev). Other packets leave at
 * the protocol check. */
static __always_inline int udp_count(struct __sk_buff *skb, int egress)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct mesh_udp_rkey rk = {};
	struct mesh_udp_rev *rev;
	struct mesh_svc_state *ss;
	struct udphdr *uh;
	__u64 len;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data;

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP || ip->ihl != 5)
			return 1;
		uh = (void *)(ip + 1);
		rk.addr[10] = 0xff;
		rk.addr[11] = 0xff;
		*(__u32 *)&rk.addr[12] = egress ? ip->daddr : ip->saddr;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data;

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return 1;
		uh = (void *)(ip6 + 1);
		__builtin_memcpy(rk.addr, egress ? &ip6->daddr : &ip6->saddr, 16);
	} else {
		return 1;
	}
	if ((void *)(uh + 1) > end)
		return 1;
	rk.port = egress ? uh->dest : uh->source;
	rk.cookie = bpf_get_socket_cookie(skb);
	rev = bpf_map_lookup_elem(&mesh_udp_rev, &rk);
	ss = rev ? svc_state(rev->service_id) : 0;
	if (!ss)
		return 1;
	len = bpf_ntohs(uh->len) > sizeof(*uh) ? bpf_ntohs(uh->len) - sizeof(*uh) : 0;
	if (egress) {
		ADD(ss->dgrams_sent, 1);
		ADD(ss->bytes_sent, len);
	} else {
		ADD(ss->dgrams_received, 1);
		ADD(ss->bytes_received, len);
	}
	return 1;
}

SEC("cgroup_skb/egress")
int mesh_skb_out(struct __sk_buff *skb)
{
	return udp_count(skb, 1);
}

SEC("cgroup_skb/ingress")
int mesh_skb_in(struct __sk_buff *skb)
{
	return udp_count(skb, 0);
}

/* A socket whose connect() failed before reaching TCP may still hold a hand-off slot: free it
 * when the socket goes. Connect programs run only on a socket in CLOSE, and a slot is freed at
 * TCP_CONNECT_CB; so only a socket in CLOSE (the connect failed), SYN_SENT (a fast-open connect
 * that sent nothing yet) or LISTEN (listen() after a failed connect) can hold one. The others,
 * nearly every socket here (released before the protocol's close), skip the cookie (a helper
 * call). */
SEC("cgroup/sock_release")
int mesh_sock_release(struct bpf_sock *sk)
{
	__u32 state = sk->state;

	if (sk->type != SOCK_STREAM || sk->protocol != IPPROTO_TCP)
		return 1;
	if (state == BPF_TCP_CLOSE || state == BPF_TCP_SYN_SENT || state == BPF_TCP_LISTEN)
		handoff_release(bpf_get_socket_cookie(sk), 1);
	return 1;
}

/* Input of mesh_adjust, written by userspace before each run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_adjust);
} mesh_adjust_in SEC(".maps");

/* The upgrade from ABI 4 for backend `id`: its ABI 4 active count, which no program moves any
 * more, added to the hot one (exchanged for 0, so a repeated hand-over adds nothing), and its
 * breaker state copied to the hot entry under the lock. */
static __always_inline void from_v4(__u32 id)
{
	struct mesh_be_state *bs = be_state(id);
	struct mesh_be_hot *hot = be_hot(id);
	__s64 v;

	if (!bs || !hot)
		return;
	v = __sync_lock_test_and_set(&bs->active_v4, 0);
	if (v)
		ADD(hot->active, (__s32)v);
	v = (__s64)__sync_lock_test_and_set(&bs->selected_v4, 0);
	if (v)
		ADD(hot->selected, (__u64)v);
	bpf_spin_lock(&bs->lock);
	breaker_unlock(bs, hot);
}

/* Run by userspace (BPF_PROG_RUN), never attached: adds deltas to active counts with the same
 * atomics sockops uses, so an upgrade can hand counts over while live sockets keep moving them
 * (user/datapath/migrate.c). */
SEC("syscall")
int mesh_adjust(void *ctx)
{
	__u32 zero = 0;
	struct mesh_adjust *a = bpf_map_lookup_elem(&mesh_adjust_in, &zero);

	if (!a)
		return 0;
	for (__u32 i = 0; i < MESH_ADJUST_MAX && i < a->n; i++) {
		__u32 id = a->e[i].id;
		__s64 delta = a->e[i].delta;

		if (a->kind == MESH_ADJUST_BACKENDS) {
			struct mesh_be_hot *hot = be_hot(id);

			if (hot)
				ADD(hot->active, (__s32)delta);
		} else if (a->kind == MESH_ADJUST_SERVICES) {
			struct mesh_svc_state *ss = svc_state(id);

			if (ss)
				ADD(ss->active, delta);
		} else if (a->kind == MESH_ADJUST_FROM_V4) {
			from_v4(id);
		}
	}
	return 0;
}

/* --- drains: closing the connections of removed backends --------------------------------- */

/* Backends to drain in the current pass, written by userspace before it reads the iterator. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_DRAIN_MAX);
	__type(key, struct mesh_drain_key);
	__type(value, __u64);
} mesh_drain SEC(".maps");

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/* Walks every TCP socket of the network namespace reading the iterator and aborts those whose
 * decision names a backend being drained (the peer gets a reset, the application
 * ECONNABORTED; sockops sees the close and releases the counts). Not attached: userspace creates
 * an iterator from it per drain pass. Loaded only where bpf_sock_destroy exists (6.5+). */
SEC("iter/tcp")
int mesh_drain_iter(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct mesh_drain_key k = {};
	struct mesh_svc_state *ss;
	struct mesh_be_state *bs;
	struct tcp_sock *tp;
	struct mesh_sock *ms;
	__u64 *n;

	/* Reading a field also puts struct sock_common itself in the object's BTF: libbpf matches
	 * the kfunc's prototype against the kernel's and refuses a forward declaration. */
	if (!skc || (skc->skc_family != AF_INET && skc->skc_family != AF_INET6))
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	ms = held_sock(bpf_get_socket_cookie(skc));
	if (!ms)
		ms = bpf_sk_storage_get(&mesh_sockets, tp, 0, 0);
	if (!ms || !(ms->flags & MESH_SK_F_SERVICE))
		return 0;
	k.backend_id = ms->backend_id;
	k.be_epoch = ms->be_epoch;
	n = bpf_map_lookup_elem(&mesh_drain, &k);
	if (!n || bpf_sock_destroy(skc))
		return 0;
	ADD(*n, 1);
	count(MESH_CNT_DRAINED);
	ss = sock_service(ms);
	if (ss)
		ADD(ss->drained, 1);
	bs = sock_backend(ms);
	if (bs)
		ADD(bs->drained, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
