/* Circuit breaker state machine (bpf/lib/breaker.h) with an injected clock and random value:
 * consecutive-failure and error-rate trips, open duration growth, cap and jitter, half-open
 * probe tokens, and the outcomes that close or reopen it. */
#include <linux/types.h>

#include "mesh_abi.h"
#include "lib/breaker.h"
#include "test.h"

#define MS 1000000ull
#define SEC 1000000000ull

static struct mesh_breaker_cfg cfg(void)
{
	return (struct mesh_breaker_cfg){
		.consecutive_failures = 3,
		.error_rate_permille = 0,
		.request_volume = 10,
		.half_open_probes = 1,
		.window_ns = 10 * SEC,
		.open_ns = 1 * SEC,
		.max_open_ns = 8 * SEC,
	};
}

/* Trips a closed breaker with consecutive failures at time `now` (random 0: no jitter). */
static void trip(struct mesh_breaker *br, const struct mesh_breaker_cfg *c, __u64 now)
{
	for (__u32 i = 0; i < c->consecutive_failures; i++)
		breaker_on_failure(br, c, now, 0, 0);
}

TEST(breaker_trips_after_exactly_consecutive_failures)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	breaker_on_failure(&br, &c, 100, 0, 0);
	breaker_on_failure(&br, &c, 200, 0, 0);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
	CHECK_INT_EQ(breaker_admit(&br, &c, 300), BREAKER_PASS);
	breaker_on_failure(&br, &c, 300, 0, 0);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_OPEN);
	CHECK_INT_EQ(br.trips, 1);
	CHECK_INT_EQ(br.open_until_ns, 300 + SEC);
}

TEST(breaker_success_resets_consecutive_count)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	for (int i = 0; i < 10; i++) {
		breaker_on_failure(&br, &c, i, 0, 0);
		breaker_on_failure(&br, &c, i, 0, 0);
		breaker_on_success(&br, &c, i, 0);
	}
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
	CHECK_INT_EQ(br.consecutive, 0);
}

TEST(breaker_open_denies_until_duration_then_one_probe)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	trip(&br, &c, 0);
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC - 1), BREAKER_DENY);
	CHECK_INT_EQ(breaker_peek(&br, &c, SEC - 1), BREAKER_DENY);
	CHECK_INT_EQ(breaker_peek(&br, &c, SEC), BREAKER_PROBE);
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC), BREAKER_PROBE);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_HALF_OPEN);
	/* Exactly half_open_probes (1) connects get through while the probe is out. */
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC + 1), BREAKER_DENY);
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC + 500 * MS), BREAKER_DENY);
	CHECK_INT_EQ(breaker_peek(&br, &c, SEC + 500 * MS), BREAKER_DENY);
}

TEST(breaker_half_open_gives_configured_probe_count)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };
	int probes = 0;

	c.half_open_probes = 3;
	trip(&br, &c, 0);
	for (int i = 0; i < 10; i++)
		probes += breaker_admit(&br, &c, 2 * SEC) == BREAKER_PROBE;
	CHECK_INT_EQ(probes, 3);
}

TEST(breaker_probe_success_closes)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	trip(&br, &c, 0);
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC), BREAKER_PROBE);
	breaker_on_success(&br, &c, SEC + 1, 0); /* a late non-probe outcome changes nothing */
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_HALF_OPEN);
	breaker_on_success(&br, &c, SEC + 2, 1);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
	CHECK_INT_EQ(br.consecutive, 0);
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC + 3), BREAKER_PASS);
}

TEST(breaker_probe_failure_reopens_twice_as_long_up_to_max)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };
	__u64 now = 0, expect[] = { 2 * SEC, 4 * SEC, 8 * SEC, 8 * SEC, 8 * SEC };

	trip(&br, &c, now);
	for (int i = 0; i < 5; i++) {
		now = br.open_until_ns;
		CHECK_INT_EQ(breaker_admit(&br, &c, now), BREAKER_PROBE);
		breaker_on_failure(&br, &c, now + 10, 1, 0);
		CHECK_INT_EQ(br.state, MESH_CIRCUIT_OPEN);
		CHECK_INT_EQ(br.open_until_ns - (now + 10), expect[i]);
	}
	CHECK_INT_EQ(br.trips, 6);
}

TEST(breaker_jitter_adds_at_most_an_eighth)
{
	struct mesh_breaker_cfg c = cfg();
	uint64_t rnd = 42;

	for (int i = 0; i < 1000; i++) {
		struct mesh_breaker br = { 0 };
		__u32 r = test_rand(&rnd);

		for (__u32 k = 0; k < c.consecutive_failures; k++)
			breaker_on_failure(&br, &c, 0, 0, r);
		CHECK(br.open_until_ns >= SEC);
		CHECK(br.open_until_ns <= SEC + SEC / 8);
	}
}

TEST(breaker_retrip_soon_after_close_grows_late_retrip_does_not)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	trip(&br, &c, 0);
	breaker_admit(&br, &c, SEC);
	breaker_on_success(&br, &c, SEC, 1);
	trip(&br, &c, 2 * SEC); /* within max_open_ns of closing: a repeat */
	CHECK_INT_EQ(br.open_until_ns, 2 * SEC + 2 * SEC);
	breaker_admit(&br, &c, 4 * SEC);
	breaker_on_success(&br, &c, 4 * SEC, 1);
	trip(&br, &c, 100 * SEC); /* long after: back to the base duration */
	CHECK_INT_EQ(br.open_until_ns, 101 * SEC);
}

TEST(breaker_error_rate_needs_request_volume)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	c.consecutive_failures = 0; /* only the error rate */
	c.error_rate_permille = 500;
	/* Alternate: 50 % failures, but below the volume of 10 nothing trips. */
	for (int i = 0; i < 4; i++) {
		breaker_on_failure(&br, &c, i, 0, 0);
		breaker_on_success(&br, &c, i, 0);
	}
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
	CHECK_INT_EQ(br.win_total, 8);
	breaker_on_success(&br, &c, 9, 0);
	breaker_on_failure(&br, &c, 9, 0, 0); /* 10 outcomes, 5 failed: 50 % */
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_OPEN);
}

TEST(breaker_error_rate_below_threshold_stays_closed)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	c.consecutive_failures = 0;
	c.error_rate_permille = 500;
	for (int i = 0; i < 100; i++) {
		if (i % 3 == 0)
			breaker_on_failure(&br, &c, i, 0, 0); /* 34 % */
		else
			breaker_on_success(&br, &c, i, 0);
	}
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
}

TEST(breaker_window_rolls_over)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	c.consecutive_failures = 0;
	c.error_rate_permille = 500;
	for (int i = 0; i < 9; i++)
		breaker_on_failure(&br, &c, 1, 0, 0);
	/* The window ends before the 10th outcome: counts restart, no trip. */
	breaker_on_failure(&br, &c, 1 + c.window_ns, 0, 0);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
	CHECK_INT_EQ(br.win_total, 1);
}

TEST(breaker_lost_probe_is_refilled_after_open_duration)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	trip(&br, &c, 0);
	CHECK_INT_EQ(breaker_admit(&br, &c, SEC), BREAKER_PROBE);
	/* The probe's outcome never arrives (connect died before TCP). */
	CHECK_INT_EQ(breaker_admit(&br, &c, 2 * SEC - 1), BREAKER_DENY);
	CHECK_INT_EQ(breaker_admit(&br, &c, 2 * SEC), BREAKER_PROBE);
}

TEST(breaker_late_outcomes_while_open_are_ignored)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };
	__u64 until;

	trip(&br, &c, 0);
	until = br.open_until_ns;
	breaker_on_failure(&br, &c, 10, 0, 0);
	breaker_on_success(&br, &c, 20, 0);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_OPEN);
	CHECK_INT_EQ(br.open_until_ns, until);
	CHECK_INT_EQ(br.trips, 1);
}

TEST(breaker_disabled_triggers_never_trip)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	c.consecutive_failures = 0;
	for (int i = 0; i < 1000; i++)
		breaker_on_failure(&br, &c, i, 0, 0);
	CHECK_INT_EQ(br.state, MESH_CIRCUIT_CLOSED);
}

TEST(breaker_lockless_success_only_when_safe)
{
	struct mesh_breaker_cfg c = cfg();
	struct mesh_breaker br = { 0 };

	CHECK(breaker_success_lockless(&br, &c, 0, 0));
	CHECK(!breaker_success_lockless(&br, &c, 0, 1)); /* a probe outcome takes the lock */
	breaker_on_failure(&br, &c, 1, 0, 0);
	CHECK(!breaker_success_lockless(&br, &c, 1, 0)); /* a streak to reset */
	breaker_on_success(&br, &c, 2, 0);
	c.error_rate_permille = 500;
	CHECK(breaker_success_lockless(&br, &c, 3, 0)); /* counted in the open window */
	CHECK_INT_EQ(br.win_total, 3);
	CHECK(!breaker_success_lockless(&br, &c, 1 + c.window_ns, 0)); /* window over: lock */
	trip(&br, &c, 3);
	CHECK(!breaker_success_lockless(&br, &c, 4, 0));
}
