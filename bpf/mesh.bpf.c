/* The datapath: cgroup connect4/6 choose a backend for connects to a service address and rewrite
 * the destination; getpeername4/6 show the application the service address; sockops turns TCP
 * outcomes into per-backend breaker decisions, active counts and counters. Decision logic lives
 * in lib/lb.h and lib/breaker.h (pure, unit tested); this file gathers inputs from the maps and
 * applies verdicts. Fail open: unknown destinations and internal errors leave connect() alone. */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mesh_abi.h"
#include "lib/breaker.h"
#include "lib/lb.h"

#define VERDICT_OK 1
#define VERDICT_REJECT 0
#define AF_INET 2 /* not in vmlinux.h (a macro) */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_abi_info);
} mesh_abi SEC(".maps");

/* Sized (and so bucketed) for MESH_SVC_HASH_ENTRIES, 4x the services there can be: the lookup on
 * every connect rarely walks a chain. Not preallocated: only the services present take memory,
 * and a replaced value is freed after an RCU grace period, never reused under a reader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MESH_SVC_HASH_ENTRIES);
	__type(key, struct mesh_svc_key);
	__type(value, struct mesh_svc);
} mesh_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_svc_name);
} mesh_svc_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_svc_state);
} mesh_svc_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_backend);
} mesh_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_be_state);
} mesh_be_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct mesh_be_stats);
} mesh_be_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct mesh_svc_stats);
} mesh_svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_CNT__COUNT);
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

/* Key: service_id * 2 + (generation & 1), so a service update writes the table of the next
 * generation while connects still read the current one. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MESH_MAX_SERVICES * 2);
	__type(key, __u32);
	__type(value, struct lb_maglev);
} mesh_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_cand);
} mesh_scratch SEC(".maps");

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

static __always_inline struct mesh_svc_stats *svc_stats(__u32 service_id)
{
	return bpf_map_lookup_elem(&mesh_svc_stats, &service_id);
}

static __always_inline struct mesh_be_stats *be_stats(__u32 backend_id)
{
	return bpf_map_lookup_elem(&mesh_be_stats, &backend_id);
}

static __always_inline void emit(__u32 type, __u32 service_id, __u32 backend_id, __u8 from, __u8 to,
				 __u8 reason)
{
	struct mesh_event ev = {
		.ts_ns = bpf_ktime_get_ns(),
		.type = type,
		.service_id = service_id,
		.backend_id = backend_id,
		.from = from,
		.to = to,
		.reason = reason,
	};

	if (bpf_ringbuf_output(&mesh_events, &ev, sizeof(ev), 0))
		count(MESH_CNT_EVENT_DROP);
}

/* Counts and reports a breaker transition (from != to), and keeps the service's count of
 * breakers out of closed that lets connects skip the backend scan. */
static __always_inline void circuit_changed(__u32 service_id, __u32 backend_id, __u8 from, __u8 to)
{
	struct mesh_svc_state *ss = bpf_map_lookup_elem(&mesh_svc_state, &service_id);
	struct mesh_be_stats *bst = be_stats(backend_id);
	__u32 i = to;

	if (from == to)
		return;
	if (ss && from == MESH_CIRCUIT_CLOSED)
		__sync_fetch_and_add(&ss->not_closed, 1);
	else if (ss && to == MESH_CIRCUIT_CLOSED)
		__sync_fetch_and_add(&ss->not_closed, -1);
	asm volatile("" : "+r"(i)); /* keep the bound check for the verifier */
	if (bst && i < MESH_CIRCUIT__COUNT)
		bst->transitions[i] += 1;
	emit(MESH_EV_CIRCUIT, service_id, backend_id, from, to, 0);
}

static __always_inline int is_v4mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

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
};

/* Looks at backend slot `i` and adds it to the candidates when healthy and closed, or open but
 * beyond the ejection cap. */
static __always_inline void gather_backend(const struct mesh_svc *svc, struct lb_cand *c,
					   struct gather_state *g, __u32 i)
{
	struct mesh_backend *be;
	struct mesh_be_state *bs;
	__u32 id, active;
	int peek;

	if (i >= MESH_MAX_BACKENDS_PER_SVC)
		return;
	id = svc->backend_ids[lb_idx(i)];
	be = bpf_map_lookup_elem(&mesh_backends, &id);
	bs = bpf_map_lookup_elem(&mesh_be_state, &id);
	if (!be || !bs)
		return;
	if (!g->panic && bs->br.state != MESH_CIRCUIT_CLOSED)
		g->not_closed++;
	if (g->v4 && !is_v4mapped(be->addr)) {
		count(MESH_CNT_FAMILY);
		return;
	}
	active = bs->active > 0 ? (__u32)bs->active : 0;
	if (!g->panic) {
		if (!(be->flags & MESH_BE_F_HEALTHY))
			return;
		g->healthy++;
		/* The clock costs a helper call (~50 ns a connect) and only a breaker that is not
		 * closed needs it. Seen closed here, it counts as closed even if it trips meanwhile,
		 * so breaker_peek() never runs with the clock unread. */
		peek = BREAKER_PASS;
		if (bs->br.state != MESH_CIRCUIT_CLOSED) {
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
 * not once per path of the connect program (inlined there, the 64-slot loop made the program
 * too big to load). Several slots per call because each BPF-to-BPF call and return costs (with
 * return thunks, as under the SRSO mitigation): 8 slots a call measured ~50 ns less per connect
 * with 10 backends than one call per slot; larger chunks cost verifier time, not run time. */
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

static __always_inline void gather(const struct mesh_svc *svc, struct lb_cand *c,
				   struct gather_state *g, __u32 panic)
{
	__u32 n = svc->n_backends;

	c->n = 0;
	c->mask = 0;
	g->panic = panic;
	for (__u32 i = 0; i < MESH_MAX_BACKENDS_PER_SVC; i += GATHER_CHUNK) {
		if (i >= n)
			break;
		gather_chunk(svc, c, g, i);
	}
}

/* Asks the breaker of `slot` for a half-open probe token. Returns 1 when granted. */
static __always_inline int try_probe(const struct mesh_svc *svc, __u32 slot, __u64 now)
{
	__u32 id = svc->backend_ids[slot & LB_MASK];
	struct mesh_be_state *bs = bpf_map_lookup_elem(&mesh_be_state, &id);
	__u8 from, to;
	int v;

	if (!bs)
		return 0;
	bpf_spin_lock(&bs->lock);
	from = bs->br.state;
	v = breaker_admit(&bs->br, &svc->breaker, now);
	to = bs->br.state;
	bpf_spin_unlock(&bs->lock);
	circuit_changed(svc->service_id, id, from, to);
	return v == BREAKER_PROBE;
}

/* Fills the per-connect inputs only the service's algorithm reads (each helper call costs on
 * every connect) and returns its maglev table, if any. */
static __always_inline struct lb_maglev *pick_inputs(const struct mesh_svc *svc, struct lb_cand *c)
{
	struct lb_maglev *maglev = 0;
	struct mesh_svc_state *ss;

	c->algorithm = svc->algorithm;
	c->choice_count = svc->choice_count;
	c->seed = 0;
	c->key = 0;
	c->rr = 0;
	if (svc->algorithm == MESH_LB_ROUND_ROBIN) {
		ss = bpf_map_lookup_elem(&mesh_svc_state, &svc->service_id);
		if (ss)
			c->rr = __sync_fetch_and_add(&ss->rr, 1);
	} else if (svc->algorithm == MESH_LB_MAGLEV) {
		__u32 key = svc->service_id * 2 + (svc->generation & 1);

		maglev = bpf_map_lookup_elem(&mesh_maglev, &key);
		c->key = bpf_get_current_cgroup_id();
	} else {
		c->seed = lb_seed();
	}
	return maglev;
}

/* Too few usable backends left: balance across all of them rather than black-hole. */
static __always_inline int panic_mode(const struct mesh_svc *svc, const struct lb_cand *c)
{
	struct mesh_svc_stats *st;

	if (!svc->panic_percent || c->n * 100 >= (__u32)svc->n_backends * svc->panic_percent)
		return 0;
	count(MESH_CNT_PANIC);
	st = svc_stats(svc->service_id);
	if (st)
		st->panic += 1;
	return 1;
}

/* Whether the backend in `slot` may take normal traffic, for the no-scan path (family is vouched
 * for by MESH_SVC_F_SAME_FAMILY). Sets *active to its active count. */
static __always_inline int slot_usable(const struct mesh_svc *svc, __u32 slot, __u32 *active)
{
	__u32 id = svc->backend_ids[lb_idx(slot)];
	struct mesh_be_state *bs = bpf_map_lookup_elem(&mesh_be_state, &id);

	if (!bs || bs->br.state != MESH_CIRCUIT_CLOSED || !(svc->healthy_mask >> lb_idx(slot) & 1))
		return 0;
	*active = bs->active > 0 ? (__u32)bs->active : 0;
	return 1;
}

/* The slot of the j-th healthy backend (j < n_healthy): the j-th candidate the scan would list
 * with every breaker closed. */
static __always_inline __u32 healthy_slot(const struct mesh_svc *svc, __u32 j)
{
	return svc->healthy_slots[lb_idx(j)];
}

/* least_request without the scan: the draws lb_pick_least() makes over the healthy backends,
 * reading only the drawn ones. */
static __always_inline int least_fast(const struct mesh_svc *svc, __u32 k)
{
	__u32 seed = lb_seed(), choices = lb_least_choices(svc->choice_count);
	__u32 first = lb_least_first(k, &seed), best = healthy_slot(svc, first), best_active,
	      active;

	if (!slot_usable(svc, best, &best_active))
		return -1;
	if (k == 1)
		return (int)best;
	for (__u32 c = 1; c < LB_MAX_CHOICES && c < choices; c++) {
		__u32 slot = healthy_slot(svc, lb_least_next(k, first, &seed));

		if (!slot_usable(svc, slot, &active))
			return -1;
		if (active < best_active) {
			best = slot;
			best_active = active;
		}
	}
	return (int)best;
}

/* The common case: no breaker out of closed and every backend of the VIP's family. Then the
 * scan's candidates would be exactly the healthy slots in order (svc->healthy_slots), so the
 * algorithm draws among them directly, reading only the backends it draws: the same choices
 * lb_pick() makes over the scanned set. Returns the slot, or -1 when the service needs the
 * scan: weighted; no healthy backend, or too few (panic); maglev's first choice unhealthy (the
 * scan tries the next entries); a drawn breaker that tripped before not_closed showed it. */
static __always_inline int choose_fast(const struct mesh_svc *svc, struct mesh_svc_state *ss)
{
	__u32 n = svc->n_backends, k = svc->n_healthy, slot, seed, active;

	if (n > MESH_MAX_BACKENDS_PER_SVC || k == 0 || k > n || k * 100 < n * svc->panic_percent)
		return -1;
	switch (svc->algorithm) {
	case MESH_LB_LEAST_REQUEST:
		return least_fast(svc, k);
	case MESH_LB_RANDOM:
		seed = lb_seed();
		slot = healthy_slot(svc, lb_rand_next(&seed) % k);
		break;
	case MESH_LB_ROUND_ROBIN:
		slot = healthy_slot(svc, (__u32)(__sync_fetch_and_add(&ss->rr, 1) % k));
		break;
	case MESH_LB_MAGLEV: {
		__u32 key = svc->service_id * 2 + (svc->generation & 1);
		struct lb_maglev *table = bpf_map_lookup_elem(&mesh_maglev, &key);
		__u64 caller = bpf_get_current_cgroup_id();

		slot = table ? lb_maglev_first(table, n, caller)
			     : healthy_slot(svc, lb_hash64(caller) % k);
		break;
	}
	default:
		return -1;
	}
	return slot < n && slot_usable(svc, slot, &active) ? (int)slot : -1;
}

/* Chooses a slot for this connect. Returns the slot (sets *probe), -1 with *reason set when no
 * backend is usable, or -2 on an internal error. */
static __always_inline int choose(const struct mesh_svc *svc, struct mesh_svc_state *ss, int v4,
				  int *probe, int *reason)
{
	struct gather_state g = {
		.cap = svc->n_backends * svc->max_ejection_percent / 100,
		.probe_slot = -1,
		.v4 = v4,
	};
	__u32 zero = 0;
	struct lb_cand *c;
	__s32 not_closed;
	int slot;

	if (!ss)
		return -2;
	not_closed = ss->not_closed;
	if ((svc->flags & MESH_SVC_F_SAME_FAMILY) && not_closed == 0) {
		slot = choose_fast(svc, ss);
		if (slot >= 0)
			return slot;
	}
	count(MESH_CNT_SCAN);
	c = bpf_map_lookup_elem(&mesh_scratch, &zero);
	if (!c)
		return -2;
	gather(svc, c, &g, 0);
	/* The count is a hint kept by transitions; a scan seeing every breaker closed settles
	 * it (unless a transition changed it meanwhile). */
	if (not_closed && !g.not_closed)
		__sync_val_compare_and_swap(&ss->not_closed, not_closed, 0);
	if (g.probe_slot >= 0 && try_probe(svc, g.probe_slot, g.now)) {
		*probe = 1;
		return g.probe_slot;
	}
	if (panic_mode(svc, c))
		gather(svc, c, &g, 1);
	if (c->n == 0) {
		*reason = svc->n_backends == 0 ? MESH_REJECT_NO_BACKEND
			  : g.healthy == 0     ? MESH_REJECT_NO_HEALTHY
					       : MESH_REJECT_CIRCUIT_OPEN;
		return -1;
	}
	return lb_pick(c, pick_inputs(svc, c));
}

/* Fails the connect by decision, or lets it through under the passthrough policy. */
static __always_inline int no_backend(struct bpf_sock_addr *ctx, const struct mesh_svc *svc,
				      int reason)
{
	struct mesh_svc_stats *st = svc_stats(svc->service_id);

	if (reason != MESH_REJECT_MAX_CONN && (svc->flags & MESH_SVC_F_PASSTHROUGH)) {
		count(MESH_CNT_PASSTHROUGH);
		if (st)
			st->passthrough += 1;
		return VERDICT_OK;
	}
	count(MESH_CNT_REJECTED);
	if (st && reason < 8)
		st->rejects[reason & 7] += 1;
	emit(MESH_EV_REJECT, svc->service_id, 0, 0, 0, reason);
	bpf_set_retval(reason == MESH_REJECT_MAX_CONN ? -MESH_ERRNO_MAX_CONN
						      : -MESH_ERRNO_NO_HEALTHY);
	return VERDICT_REJECT;
}

static __always_inline int over_limit(const struct mesh_svc *svc, const struct mesh_svc_state *ss)
{
	return svc->max_connections && ss && ss->epoch == svc->epoch &&
	       ss->active >= (__s64)svc->max_connections;
}

/* Rewrites the destination to backend `id` and records the decision on the socket. */
static __always_inline int redirect(struct bpf_sock_addr *ctx, const struct mesh_svc *svc,
				    struct mesh_sock *sk, __u32 id, int v4, int probe)
{
	struct mesh_backend *be = bpf_map_lookup_elem(&mesh_backends, &id);
	struct mesh_svc_stats *st = svc_stats(svc->service_id);
	struct mesh_be_stats *bst = be_stats(id);

	if (!be) {
		count(MESH_CNT_ERR_INTERNAL);
		return VERDICT_OK;
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
	sk->service_id = svc->service_id;
	sk->svc_epoch = svc->epoch;
	sk->backend_id = id;
	sk->be_epoch = be->epoch;
	sk->flags = MESH_SK_F_SERVICE | (probe ? MESH_SK_F_PROBE : 0);
	count(MESH_CNT_REDIRECTED);
	if (probe)
		count(MESH_CNT_PROBE);
	if (st)
		st->redirected += 1;
	if (bst) {
		bst->selected += 1;
		bst->probes += probe;
	}
	return VERDICT_OK;
}

static __always_inline struct mesh_handoff *handoff_slot(__u64 cookie)
{
	__u32 i = (__u32)cookie & (MESH_HANDOFF_SLOTS - 1);

	return bpf_map_lookup_elem(&mesh_handoff, &i);
}

/* Frees the socket's hand-off slot if it holds one. */
static __always_inline void handoff_release(__u64 cookie)
{
	struct mesh_handoff *h = handoff_slot(cookie);

	if (h && h->cookie == cookie)
		__sync_val_compare_and_swap(&h->cookie, cookie, 0);
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
 * cookie, and sockops moves it into storage at TCP_CONNECT_CB later in the same connect(). A
 * slot held by another socket (in flight, or whose connect failed before reaching TCP) sends
 * this one the slow way: storage now. A socket that connected before may have storage
 * already; it is found at TCP_CONNECT_CB, so fresh sockets (nearly all) skip the lookup. */
static __always_inline struct mesh_sock *decision(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx), seen;
	struct mesh_handoff *h = handoff_slot(cookie);
	struct mesh_sock *ms;

	if (h) {
		seen = h->cookie;
		if (seen == cookie ||
		    (seen == 0 && __sync_val_compare_and_swap(&h->cookie, 0, cookie) == 0))
			return &h->sock;
	}
	count(MESH_CNT_HANDOFF_BUSY);
	ms = bpf_sk_storage_get(&mesh_sockets, ctx->sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ms)
		count(MESH_CNT_ERR_STORAGE);
	return ms && !reentry(ms) ? ms : 0;
}

/* This connect() leaves the destination alone: drop what an earlier, failed connect() of the
 * socket decided, so getpeername and sockops leave it alone too. Off the redirect path. A
 * hand-off slot such a connect may still hold is not looked at here (the cookie would cost a
 * non-service connect ~100 ns): take_decision() only applies a decision whose backend is where
 * the socket is connecting, and frees the slot either way. */
static __always_inline void forget(struct bpf_sock_addr *ctx)
{
	struct mesh_sock *ms = bpf_sk_storage_get(&mesh_sockets, ctx->sk, 0, 0);

	if (ms && !(ms->flags & MESH_SK_F_ACTIVE))
		ms->flags = 0;
}

static __always_inline int mesh_connect(struct bpf_sock_addr *ctx, struct mesh_svc_key *key, int v4)
{
	int probe = 0, reason = 0, slot;
	struct mesh_svc_state *ss;
	struct mesh_svc *svc;
	struct mesh_sock *ms;

	count(MESH_CNT_CONNECT);
	svc = bpf_map_lookup_elem(&mesh_services, key);
	if (!svc) {
		count(MESH_CNT_NOT_SERVICE);
		forget(ctx);
		return VERDICT_OK;
	}
	ss = bpf_map_lookup_elem(&mesh_svc_state, &svc->service_id);
	if (over_limit(svc, ss)) {
		slot = -1;
		reason = MESH_REJECT_MAX_CONN;
	} else {
		slot = choose(svc, ss, v4, &probe, &reason);
	}
	if (slot < 0) { /* a service connect left alone: nothing of an earlier one may stay */
		forget(ctx);
		handoff_release(bpf_get_socket_cookie(ctx));
	}
	if (slot == -1)
		return no_backend(ctx, svc, reason);
	if (slot < 0) {
		count(MESH_CNT_ERR_INTERNAL);
		return VERDICT_OK;
	}
	ms = decision(ctx);
	if (!ms)
		return VERDICT_OK;
	ms->vip = *key;
	return redirect(ctx, svc, ms, svc->backend_ids[slot & LB_MASK], v4, probe);
}

static __always_inline int tcp_socket(struct bpf_sock_addr *ctx)
{
	return ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP;
}

SEC("cgroup/connect4")
int mesh_connect4(struct bpf_sock_addr *ctx)
{
	struct mesh_svc_key key = {};

	if (!tcp_socket(ctx))
		return VERDICT_OK;
	key.addr[10] = 0xff;
	key.addr[11] = 0xff;
	*(__u32 *)&key.addr[12] = ctx->user_ip4;
	key.port = (__u16)ctx->user_port;
	key.proto = IPPROTO_TCP;
	return mesh_connect(ctx, &key, 1);
}

SEC("cgroup/connect6")
int mesh_connect6(struct bpf_sock_addr *ctx)
{
	struct mesh_svc_key key = {};

	if (!tcp_socket(ctx))
		return VERDICT_OK;
	*(__u32 *)&key.addr[0] = ctx->user_ip6[0];
	*(__u32 *)&key.addr[4] = ctx->user_ip6[1];
	*(__u32 *)&key.addr[8] = ctx->user_ip6[2];
	*(__u32 *)&key.addr[12] = ctx->user_ip6[3];
	key.port = (__u16)ctx->user_port;
	key.proto = IPPROTO_TCP;
	return mesh_connect(ctx, &key, 0);
}

static __always_inline struct mesh_sock *service_sock(struct bpf_sock *sk)
{
	struct mesh_sock *ms;

	if (!sk)
		return 0;
	ms = bpf_sk_storage_get(&mesh_sockets, sk, 0, 0);
	return ms && (ms->flags & MESH_SK_F_SERVICE) ? ms : 0;
}

SEC("cgroup/getpeername4")
int mesh_getpeername4(struct bpf_sock_addr *ctx)
{
	struct mesh_sock *ms = service_sock(ctx->sk);

	if (ms) {
		ctx->user_ip4 = *(__u32 *)&ms->vip.addr[12];
		ctx->user_port = ms->vip.port;
	}
	return VERDICT_OK;
}

SEC("cgroup/getpeername6")
int mesh_getpeername6(struct bpf_sock_addr *ctx)
{
	struct mesh_sock *ms = service_sock(ctx->sk);

	if (ms) {
		ctx->user_ip6[0] = *(__u32 *)&ms->vip.addr[0];
		ctx->user_ip6[1] = *(__u32 *)&ms->vip.addr[4];
		ctx->user_ip6[2] = *(__u32 *)&ms->vip.addr[8];
		ctx->user_ip6[3] = *(__u32 *)&ms->vip.addr[12];
		ctx->user_port = ms->vip.port;
	}
	return VERDICT_OK;
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
	return bpf_map_lookup_elem(&mesh_be_state, &id);
}

static __always_inline struct mesh_svc_state *sock_service(const struct mesh_sock *ms)
{
	__u32 id = ms->service_id;
	struct mesh_svc_state *ss = bpf_map_lookup_elem(&mesh_svc_state, &id);

	return ss && ss->epoch == ms->svc_epoch ? ss : 0;
}

/* SYN about to be sent: from here on the kernel reports every state change up to CLOSE, so the
 * active counts taken here are released exactly once in on_close(). */
static __always_inline void on_connect(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_svc_state *ss = sock_service(ms);
	struct mesh_be_state *bs = sock_backend(ms);

	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (ms->flags & MESH_SK_F_ACTIVE)
		return;
	ms->flags |= MESH_SK_F_ACTIVE;
	if (bs)
		__sync_fetch_and_add(&bs->active, 1);
	if (ss)
		__sync_fetch_and_add(&ss->active, 1);
}

/* Feeds one outcome to the backend's breaker; `ok` with the handshake RTT in ns. */
static __always_inline __u64 ewma(__u64 avg, __u64 sample)
{
	return avg ? avg - avg / 8 + sample / 8 : sample;
}

static __always_inline void outcome(const struct mesh_sock *ms, int ok, __u64 rtt_ns)
{
	struct mesh_be_state *bs = sock_backend(ms);
	struct mesh_svc *svc = bpf_map_lookup_elem(&mesh_services, (void *)&ms->vip);
	int probe = !!(ms->flags & MESH_SK_F_PROBE);
	__u8 from, to;
	__u32 rnd;
	__u64 now;

	if (!bs || !svc || svc->service_id != ms->service_id)
		return; /* backend or service replaced meanwhile: nothing to judge */
	now = bpf_ktime_get_ns();
	if (ok && breaker_success_lockless(&bs->br, &svc->breaker, now, probe)) {
		bs->latency_ewma_ns = ewma(bs->latency_ewma_ns, rtt_ns); /* a statistic: racy ok */
		return;
	}
	rnd = bpf_get_prandom_u32();
	bpf_spin_lock(&bs->lock);
	from = bs->br.state;
	if (ok) {
		breaker_on_success(&bs->br, &svc->breaker, now, probe);
		bs->latency_ewma_ns = ewma(bs->latency_ewma_ns, rtt_ns);
	} else {
		breaker_on_failure(&bs->br, &svc->breaker, now, probe, rnd);
	}
	to = bs->br.state;
	bpf_spin_unlock(&bs->lock);
	circuit_changed(ms->service_id, ms->backend_id, from, to);
}

static __always_inline void on_established(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_be_stats *bst = be_stats(ms->backend_id);

	if (ms->flags & MESH_SK_F_DONE)
		return;
	ms->flags |= MESH_SK_F_DONE | MESH_SK_F_ESTABLISHED;
	count(MESH_CNT_ESTABLISHED);
	if (bst)
		bst->ok += 1;
	outcome(ms, 1, (__u64)(skops->srtt_us >> 3) * 1000);
}

static __always_inline void on_close(struct bpf_sock_ops *skops, struct mesh_sock *ms)
{
	struct mesh_be_stats *bst = be_stats(ms->backend_id);
	struct mesh_svc_stats *st = svc_stats(ms->service_id);

	if (!(ms->flags & MESH_SK_F_DONE)) {
		ms->flags |= MESH_SK_F_DONE;
		count(MESH_CNT_FAILED);
		if (bst)
			bst->failed += 1;
		outcome(ms, 0, 0);
	}
	if (ms->flags & MESH_SK_F_ACTIVE) {
		struct mesh_svc_state *ss = sock_service(ms);
		struct mesh_be_state *bs = sock_backend(ms);

		ms->flags &= ~MESH_SK_F_ACTIVE;
		if (bs)
			__sync_fetch_and_add(&bs->active, -1);
		if (ss)
			__sync_fetch_and_add(&ss->active, -1);
		count(MESH_CNT_CLOSED);
	}
	if (bst) {
		bst->bytes_sent += skops->bytes_acked;
		bst->bytes_received += skops->bytes_received;
	}
	if (st) {
		st->bytes_sent += skops->bytes_acked;
		st->bytes_received += skops->bytes_received;
	}
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

	if (!be || port != be->port)
		return 0;
	a = (const __u32 *)be->addr;
	if (family == AF_INET)
		return is_v4mapped(be->addr) && v4 == a[3];
	return w0 == a[0] && w1 == a[1] && w2 == a[2] && w3 == a[3];
}

/* TCP_CONNECT_CB: moves a decision connect4/6 left in the hand-off slot into socket storage.
 * A decision for another destination is one a connect that failed before TCP left behind (the
 * socket now connects elsewhere, not through a service): dropped. */
static __always_inline void take_decision(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct mesh_handoff *h = handoff_slot(cookie);
	struct bpf_sock *sk = skops->sk;
	struct mesh_sock *ms;

	if (!h || h->cookie != cookie || !sk)
		return; /* not a service connect, or decided straight into storage */
	if (connecting_to(sk, &h->sock)) {
		ms = bpf_sk_storage_get(&mesh_sockets, sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!ms)
			count(MESH_CNT_ERR_STORAGE);
		else if (!reentry(ms))
			*ms = h->sock;
	}
	__sync_val_compare_and_swap(&h->cookie, cookie, 0);
}

SEC("sockops")
int mesh_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	struct mesh_sock *ms;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    (op != BPF_SOCK_OPS_STATE_CB || skops->args[1] != BPF_TCP_CLOSE))
		return 1; /* before the storage lookup: most callbacks are of no interest */
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		take_decision(skops);
	ms = service_sock(skops->sk);
	if (!ms)
		return 1;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB)
		on_connect(skops, ms);
	else if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		on_established(skops, ms);
	else
		on_close(skops, ms);
	return 1;
}

/* A socket whose connect() failed before reaching TCP may still hold a hand-off slot: free it
 * when the socket goes. */
SEC("cgroup/sock_release")
int mesh_sock_release(struct bpf_sock *sk)
{
	if (sk->type == SOCK_STREAM && sk->protocol == IPPROTO_TCP)
		handoff_release(bpf_get_socket_cookie(sk));
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
