/* Traffic split (canary) and peak-EWMA latency as pure functions, compiled into the BPF object
 * (included by mesh.bpf.c) and into tests/unit/test_split.c. Only decision logic: the connect
 * program gathers the inputs from the maps (mesh_split, mesh_be_ewma).
 *
 * Split: a service's backends fall into subsets; each subset has a weight in hundredths of a
 * percent (SPLIT_SCALE = 10000 = 100%). A connection draws its subset, then the service's
 * algorithm runs among that subset's backends. A drawn subset with no usable backend falls back:
 * the draw is made again among the subsets that have usable backends, in proportion to their
 * weights; with none usable anywhere, the service's own rules apply (panic, reject).
 *
 * Peak EWMA (Finagle/Linkerd): each backend keeps a moving average of its connect RTT that jumps
 * to a sample above it at once (peak) and otherwise decays towards samples with a time constant
 * `tau`: w = tau / (tau + dt), a first-order stand-in for exp(-dt/tau) that needs no floating
 * point. A pick draws two distinct candidates and takes the lower cost ewma x (active + 1). */
#ifndef MESH_LIB_SPLIT_H
#define MESH_LIB_SPLIT_H

#include "mesh_abi.h"

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define SPLIT_SCALE MESH_SPLIT_SCALE /* weights in 0.01% steps (include/mesh_abi.h) */
#define SPLIT_MAX MESH_SPLIT_MAX     /* subsets per service */

/* The subset `draw` falls in, given weights w[0..n) summing to SPLIT_SCALE (the remainder, if
 * they sum to less, goes to the last subset). Among the subsets whose bit is set in `usable`:
 * when the drawn one is not usable, the draw is mapped onto the usable ones' weights alone.
 * Returns the subset index, or -1 when no subset is usable (or n is 0). */
static __always_inline int split_pick(const __u16 *w, __u32 n, __u32 usable, __u32 draw)
{
	__u32 total = 0, r, i;

	if (n == 0 || n > SPLIT_MAX)
		return -1;
	r = draw % SPLIT_SCALE;
	for (i = 0; i < SPLIT_MAX && i < n; i++) {
		if (r < w[i] || i == n - 1)
			break;
		r -= w[i];
	}
	if (i < SPLIT_MAX && (usable >> i & 1))
		return (int)i;
	for (i = 0; i < SPLIT_MAX && i < n; i++)
		if (usable >> i & 1)
			total += w[i];
	if (total == 0) { /* usable subsets of weight 0 only: take the first of them */
		for (i = 0; i < SPLIT_MAX && i < n; i++)
			if (usable >> i & 1)
				return (int)i;
		return -1;
	}
	r = draw / SPLIT_SCALE % total; /* the draw's other digits: independent of the first */
	for (i = 0; i < SPLIT_MAX && i < n; i++) {
		if (!(usable >> i & 1))
			continue;
		if (r < w[i])
			return (int)i;
		r -= w[i];
	}
	return -1;
}

/* One RTT sample into a peak EWMA: `dt_ns` since the last update, time constant `tau_ns`. */
#define EWMA_MAX_NS (1ULL << 40) /* ~18 minutes: RTTs and tau below it, so products fit */

static __always_inline __u64 ewma_peak_update(__u64 avg, __u64 sample, __u64 dt_ns, __u64 tau_ns)
{
	__u64 w; /* tau / (tau + dt) in 1/65536 */

	if (avg == 0 || sample >= avg || tau_ns == 0)
		return sample;
	if (tau_ns > EWMA_MAX_NS)
		tau_ns = EWMA_MAX_NS;
	if (dt_ns > EWMA_MAX_NS)
		dt_ns = EWMA_MAX_NS;
	if (avg > EWMA_MAX_NS)
		avg = EWMA_MAX_NS;
	w = (tau_ns << 16) / (tau_ns + dt_ns);
	return (avg * w + sample * (65536 - w)) >> 16;
}

/* Cost of sending one more connection to a backend: its latency times the connections it would
 * then carry. A backend with no sample yet costs nothing while idle (so it gets its first
 * samples) and `unknown_ns` per connection once it has some in flight (Finagle's penalty: a new
 * backend is tried without taking the whole load at once). */
static __always_inline __u64 ewma_cost(__u64 ewma_ns, __u32 active, __u64 unknown_ns)
{
	if (!ewma_ns)
		return (__u64)active * unknown_ns;
	return ewma_ns * ((__u64)active + 1);
}

/* Power of two choices over cost: candidates i, j (distinct) from two draws over n >= 2. */
static __always_inline __u32 ewma_p2c(const __u64 *ewma, const __u32 *active, __u32 n, __u32 draw1,
				      __u32 draw2, __u64 unknown_ns)
{
	__u32 i, j;

	if (n < 2)
		return 0;
	i = draw1 % n;
	j = (i + 1 + draw2 % (n - 1)) % n;
	if (i >= 64 || j >= 64)
		return 0;
	return ewma_cost(ewma[j], active[j], unknown_ns) < ewma_cost(ewma[i], active[i], unknown_ns)
		   ? j
		   : i;
}

#endif
