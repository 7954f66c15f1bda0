/* Circuit breaker decisions for one backend, as pure functions of (state, config, now, random).
 * Compiled into the BPF object (called with mesh_be_state.lock held, so no helper calls and no
 * loops here) and into tests/unit/test_breaker.c with an injected clock. Callers compare
 * `br->state` before and after a call to see transitions. State machine: docs/datapath.md. */
#ifndef MESH_LIB_BREAKER_H
#define MESH_LIB_BREAKER_H

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define BREAKER_MAX_SHIFT 20 /* open_ns << 20 is far beyond any sane max_open_ns */

enum breaker_verdict {
	BREAKER_DENY = 0,
	BREAKER_PASS = 1,  /* closed: normal traffic */
	BREAKER_PROBE = 2, /* half-open: this connect is a probe */
};

/* Starts a new fixed window when the current one is over. */
static __always_inline void breaker_roll_window(struct mesh_breaker *br,
						const struct mesh_breaker_cfg *cfg, __u64 now)
{
	if (now - br->win_start_ns >= cfg->window_ns) {
		br->win_start_ns = now;
		br->win_total = 0;
		br->win_failed = 0;
	}
}

static __always_inline __u64 breaker_open_duration(const struct mesh_breaker *br,
						   const struct mesh_breaker_cfg *cfg, __u32 rnd)
{
	__u64 max = cfg->max_open_ns > cfg->open_ns ? cfg->max_open_ns : cfg->open_ns;
	__u32 shift = br->streak < BREAKER_MAX_SHIFT ? br->streak : BREAKER_MAX_SHIFT;
	__u64 d = cfg->open_ns << shift;

	if (d > max || d < cfg->open_ns)
		d = max;
	/* Jitter of up to +1/8 spreads the probes of backends that tripped together; never
	 * negative, so no probe comes before open_duration. */
	return d + rnd % (d / 8 + 1);
}

/* Opens the breaker. A trip soon after the last close (within max_open_ns) or a failed probe
 * counts as a repeat and doubles the open duration. */
static __always_inline void breaker_trip(struct mesh_breaker *br,
					 const struct mesh_breaker_cfg *cfg, __u64 now, __u32 rnd)
{
	if (br->state == MESH_CIRCUIT_HALF_OPEN)
		br->streak++;
	else if (br->trips && now - br->changed_ns < cfg->max_open_ns)
		br->streak++;
	else
		br->streak = 0;
	if (br->streak > BREAKER_MAX_SHIFT)
		br->streak = BREAKER_MAX_SHIFT;
	br->state = MESH_CIRCUIT_OPEN;
	br->open_until_ns = now + breaker_open_duration(br, cfg, rnd);
	br->changed_ns = now;
	br->trips++;
	br->consecutive = 0;
	br->probes_left = 0;
	br->win_start_ns = now;
	br->win_total = 0;
	br->win_failed = 0;
}

/* Whether a connect may use this backend now. Moves open -> half-open once open_until_ns is
 * reached and hands out at most half_open_probes probe tokens. Tokens whose outcome never came
 * back (the connect died before reaching TCP) are refilled after another open_ns. */
static __always_inline int breaker_admit(struct mesh_breaker *br,
					 const struct mesh_breaker_cfg *cfg, __u64 now)
{
	__u32 probes = cfg->half_open_probes ? cfg->half_open_probes : 1;

	if (br->state == MESH_CIRCUIT_CLOSED)
		return BREAKER_PASS;
	if (br->state == MESH_CIRCUIT_OPEN) {
		if (now < br->open_until_ns)
			return BREAKER_DENY;
		br->state = MESH_CIRCUIT_HALF_OPEN;
		br->changed_ns = now;
		br->probes_left = probes;
	} else if (br->probes_left == 0) {
		if (now - br->changed_ns < cfg->open_ns)
			return BREAKER_DENY;
		br->changed_ns = now;
		br->probes_left = probes;
	}
	br->probes_left--;
	return BREAKER_PROBE;
}

/* Whether the closed-state counters call for a trip. */
static __always_inline int breaker_should_trip(const struct mesh_breaker *br,
					       const struct mesh_breaker_cfg *cfg)
{
	if (cfg->consecutive_failures && br->consecutive >= cfg->consecutive_failures)
		return 1;
	if (!cfg->error_rate_permille || br->win_total < cfg->request_volume || !br->win_total)
		return 0;
	return (__u64)br->win_failed * 1000 >= (__u64)cfg->error_rate_permille * br->win_total;
}

/* A connect through this backend was established. A probe success closes the breaker. */
static __always_inline void breaker_on_success(struct mesh_breaker *br,
					       const struct mesh_breaker_cfg *cfg, __u64 now,
					       int probe)
{
	if (br->state == MESH_CIRCUIT_HALF_OPEN && probe) {
		br->state = MESH_CIRCUIT_CLOSED;
		br->changed_ns = now;
		br->consecutive = 0;
		br->probes_left = 0;
		br->win_start_ns = now;
		br->win_total = 0;
		br->win_failed = 0;
		return;
	}
	if (br->state != MESH_CIRCUIT_CLOSED)
		return; /* late outcome of a connect made before the trip */
	breaker_roll_window(br, cfg, now);
	br->win_total++;
	br->consecutive = 0;
}

/* Records a success without the lock when that is safe: closed, no probe, no failure streak to
 * reset, and either no error rate or a window still open (its count is added atomically; a
 * window roll racing with it may drop that one count, which a rate tolerates). Fields are read
 * without the lock: a failure racing with this success counts as having come after it. Returns
 * 1 when done, 0 when the caller must take the lock and call breaker_on_success(). */
static __always_inline int breaker_success_lockless(struct mesh_breaker *br,
						    const struct mesh_breaker_cfg *cfg, __u64 now,
						    int probe)
{
	if (br->state != MESH_CIRCUIT_CLOSED || probe || br->consecutive)
		return 0;
	if (!cfg->error_rate_permille)
		return 1;
	if (now - br->win_start_ns >= cfg->window_ns)
		return 0;
	__sync_fetch_and_add(&br->win_total, 1);
	return 1;
}

/* A connect through this backend failed before it was established. A probe failure reopens the
 * breaker for longer; in the closed state the counters may trip it. */
static __always_inline void breaker_on_failure(struct mesh_breaker *br,
					       const struct mesh_breaker_cfg *cfg, __u64 now,
					       int probe, __u32 rnd)
{
	if (br->state == MESH_CIRCUIT_HALF_OPEN) {
		if (probe)
			breaker_trip(br, cfg, now, rnd);
		return;
	}
	if (br->state != MESH_CIRCUIT_CLOSED)
		return;
	breaker_roll_window(br, cfg, now);
	br->win_total++;
	br->win_failed++;
	br->consecutive++;
	if (breaker_should_trip(br, cfg))
		breaker_trip(br, cfg, now, rnd);
}

/* Lock-free hint for the balancer: may this backend take normal traffic (1), a probe (2), or
 * nothing (0)? Read without the lock, so it can be stale; breaker_admit() decides for probes. */
static __always_inline int breaker_peek(const struct mesh_breaker *br,
					const struct mesh_breaker_cfg *cfg, __u64 now)
{
	if (br->state == MESH_CIRCUIT_CLOSED)
		return BREAKER_PASS;
	if (br->state == MESH_CIRCUIT_OPEN)
		return now >= br->open_until_ns ? BREAKER_PROBE : BREAKER_DENY;
	if (br->probes_left || now - br->changed_ns >= cfg->open_ns)
		return BREAKER_PROBE;
	return BREAKER_DENY;
}

#endif
