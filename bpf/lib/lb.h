/* Backend selection as pure functions: given the usable candidates of one service (gathered by
 * the connect program's scan), a random seed, the round-robin cursor and, for maglev, the slots
 * of the table entries the caller's hash probes, return the chosen slot (index into the
 * service's backends). Also the draws the no-scan path shares with it. Compiled into the BPF
 * object and into tests/unit/test_lb.c. Loops are bounded by MESH_MAX_BACKENDS_PER_SVC. */
#ifndef MESH_LIB_LB_H
#define MESH_LIB_LB_H

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define LB_MASK (MESH_MAX_BACKENDS_PER_SVC - 1)
#define LB_MAX_CHOICES 8   /* least_request draws at most this many candidates */
#define LB_MAGLEV_PROBE 16 /* table entries tried before maglev falls back to hashing */

/* Index into the candidate arrays. The empty asm hides the value's known range from the
 * compiler so the mask survives for the verifier, which does not follow `%`. */
static __always_inline __u32 lb_idx(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i & LB_MASK;
}

/* In BPF, lb_pick() is a global function: the verifier checks it once, on its own, instead of
 * once per path through the connect program (which made loading take seconds). */
#ifdef __bpf__
#define LB_ENTRY __attribute__((noinline))
#else
#define LB_ENTRY static inline
#endif

/* One connect's request and candidates: the slots usable for normal traffic with their weight
 * and active count. Lives in a per-CPU scratch map in BPF (too big for the stack). */
struct lb_cand {
	__u32 n;
	__u8 algorithm; /* enum mesh_lb_algorithm */
	__u8 choice_count;
	__u16 n_maglev; /* entries in maglev[] */
	__u64 rr;	/* round-robin cursor value for this connect */
	__u64 key;	/* maglev key: the caller's cgroup or process id */
	__u32 seed;	/* random seed */
	__u32 pad;
	__u16 maglev[LB_MAGLEV_PROBE];		    /* slots of table entries h, h+1, ... */
	__u64 mask[MESH_MAX_BACKENDS_PER_SVC / 64]; /* bit s set when slot s is a candidate */
	__u16 slot[MESH_MAX_BACKENDS_PER_SVC];
	__u32 weight[MESH_MAX_BACKENDS_PER_SVC];
	__u32 active[MESH_MAX_BACKENDS_PER_SVC];
};

/* xorshift32: a cheap stream of numbers from one bpf_get_prandom_u32() seed. */
static __always_inline __u32 lb_rand_next(__u32 *s)
{
	__u32 x = *s ? *s : 0x9e3779b9;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

/* Finalizer of MurmurHash3: spreads cgroup ids (small sequential numbers) over the table. */
static __always_inline __u32 lb_hash64(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return (__u32)x;
}

static __always_inline void lb_cand_add(struct lb_cand *c, __u32 slot, __u32 weight, __u32 active)
{
	__u32 i = c->n;

	if (i >= MESH_MAX_BACKENDS_PER_SVC)
		return;
	c->slot[lb_idx(i)] = slot;
	c->weight[lb_idx(i)] = weight ? weight : 1;
	c->active[lb_idx(i)] = active;
	c->mask[lb_idx(slot) / 64] |= 1ULL << (slot & 63);
	c->n = i + 1;
}

static __always_inline int lb_cand_has(const struct lb_cand *c, __u32 slot)
{
	return c->mask[lb_idx(slot) / 64] >> (slot & 63) & 1;
}

static __always_inline int lb_pick_index(const struct lb_cand *c, __u32 i)
{
	return c->slot[lb_idx(i % c->n)];
}

/* least_request's draws among n (>= 2 for lb_least_next) candidates: the first, then the
 * others, each different from the first. The connect program's no-scan path makes the same
 * draws over the healthy slots, so both paths balance alike. */
static __always_inline __u32 lb_least_first(__u32 n, __u32 *seed)
{
	return lb_rand_next(seed) % n;
}

static __always_inline __u32 lb_least_next(__u32 n, __u32 first, __u32 *seed)
{
	return (first + 1 + lb_rand_next(seed) % (n - 1)) % n;
}

static __always_inline __u32 lb_least_choices(__u32 choices)
{
	return choices < 2 ? 2 : choices > LB_MAX_CHOICES ? LB_MAX_CHOICES : choices;
}

/* Power of `choices` random choices over active connections (Envoy least_request). The second
 * draw differs from the first, so with two or more candidates the busiest one never wins. */
static __always_inline int lb_pick_least(const struct lb_cand *c, __u32 choices, __u32 *seed)
{
	__u32 first = lb_least_first(c->n, seed), best = first;

	if (c->n == 1)
		return c->slot[0];
	choices = lb_least_choices(choices);
	for (__u32 k = 1; k < LB_MAX_CHOICES && k < choices; k++) {
		__u32 i = lb_least_next(c->n, first, seed);

		if (c->active[lb_idx(i)] < c->active[lb_idx(best)])
			best = i;
	}
	return c->slot[lb_idx(best)];
}

static __always_inline int lb_pick_weighted(const struct lb_cand *c, __u32 rnd)
{
	__u64 total = 0, r;

	for (__u32 i = 0; i < MESH_MAX_BACKENDS_PER_SVC && i < c->n; i++)
		total += c->weight[i];
	r = rnd % total;
	for (__u32 i = 0; i < MESH_MAX_BACKENDS_PER_SVC && i < c->n; i++) {
		if (r < c->weight[i])
			return c->slot[i];
		r -= c->weight[i];
	}
	return c->slot[0];
}

/* Maglev: the table maps hash(caller) to a slot. If that slot is not a candidate right now,
 * the next entries are tried (they are a pseudo-random permutation of slots; the caller read
 * them into c->maglev), then plain hashing over the candidates. */
static __always_inline int lb_pick_maglev(const struct lb_cand *c)
{
	for (__u32 j = 0; j < LB_MAGLEV_PROBE && j < c->n_maglev; j++) {
		__u32 s = c->maglev[j];

		if (s < MESH_MAX_BACKENDS_PER_SVC && lb_cand_has(c, s))
			return s;
	}
	return lb_pick_index(c, lb_hash64(c->key));
}

/* Alias method (Vose): cell `j` of a table over k entries keeps its own entry with probability
 * prob / 2^32, else gives its alias. Userspace builds the cells (user/datapath/alias.c). */
static __always_inline int lb_alias_keep(__u32 prob, __u32 rnd)
{
	return rnd < prob || prob == 0xffffffffu;
}

/* Chooses a slot among the candidates with c->algorithm, or -1 when there are none. */
LB_ENTRY int lb_pick(const struct lb_cand *c)
{
	__u32 seed;

	if (!c || c->n == 0 || c->n > MESH_MAX_BACKENDS_PER_SVC)
		return -1;
	seed = c->seed;
	switch (c->algorithm) {
	case MESH_LB_ROUND_ROBIN:
		return lb_pick_index(c, (__u32)(c->rr % c->n));
	case MESH_LB_LEAST_REQUEST:
		return lb_pick_least(c, c->choice_count, &seed);
	case MESH_LB_PEAK_EWMA: /* the scan has no latencies at hand: by load, as P2C */
		return lb_pick_least(c, 2, &seed);
	case MESH_LB_WEIGHTED:
		return lb_pick_weighted(c, lb_rand_next(&seed));
	case MESH_LB_MAGLEV:
		return lb_pick_maglev(c);
	default:
		return lb_pick_index(c, lb_rand_next(&seed));
	}
}

#endif
