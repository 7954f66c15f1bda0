/* Unit tests for the health rise/fall state machine, first-check jitter and HTTP status parsing,
 * driven by an injected clock and random source. */
#include <errno.h>

#include "health/health_state.h"
#include "test.h"

#define SEC 1000000000ull

static const struct health_thresholds th_3_2 = { .unhealthy = 3, .healthy = 2 };

/* Feeds `n` results of `ok` one second apart; returns how many of them were transitions. */
static int feed(struct health_state *st, const struct health_thresholds *th, struct test_clock *c,
		bool ok, int n)
{
	int flips = 0;

	for (int i = 0; i < n; i++) {
		c->now_ns += SEC;
		flips += health_state_record(st, th, ok, c->now_ns);
	}
	return flips;
}

TEST(starts_healthy)
{
	struct health_state st;

	health_state_init(&st, 42);
	CHECK(st.healthy);
	CHECK_INT_EQ(st.changed_at_ns, 42);
	CHECK_INT_EQ(st.checks, 0);
}

TEST(falls_after_unhealthy_threshold_failures)
{
	struct test_clock c = { .now_ns = SEC };
	struct health_state st;

	health_state_init(&st, c.now_ns);
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, false, 2), 0);
	CHECK(st.healthy);
	CHECK_INT_EQ(st.consecutive_fail, 2);
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, false, 1), 1);
	CHECK(!st.healthy);
	CHECK_INT_EQ(st.changed_at_ns, 4 * SEC);
	CHECK_INT_EQ(st.consecutive_fail, 0);
	/* More failures while down are not transitions. */
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, false, 5), 0);
	CHECK_INT_EQ(st.failures, 8);
}

TEST(a_pass_resets_the_fall_counter)
{
	struct test_clock c = { 0 };
	struct health_state st;

	health_state_init(&st, 0);
	feed(&st, &th_3_2, &c, false, 2);
	feed(&st, &th_3_2, &c, true, 1);
	CHECK_INT_EQ(st.consecutive_fail, 0);
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, false, 2), 0);
	CHECK(st.healthy);
}

TEST(rises_after_healthy_threshold_passes)
{
	struct test_clock c = { 0 };
	struct health_state st;

	health_state_init(&st, 0);
	feed(&st, &th_3_2, &c, false, 3);
	CHECK(!st.healthy);
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, true, 1), 0);
	CHECK(!st.healthy);
	/* A failure in the middle of the rise starts it again. */
	feed(&st, &th_3_2, &c, false, 1);
	CHECK_INT_EQ(st.consecutive_ok, 0);
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, true, 1), 0);
	CHECK_INT_EQ(feed(&st, &th_3_2, &c, true, 1), 1);
	CHECK(st.healthy);
	CHECK_INT_EQ(st.changed_at_ns, c.now_ns);
}

TEST(zero_thresholds_act_as_one)
{
	const struct health_thresholds th = { 0, 0 };
	struct test_clock c = { 0 };
	struct health_state st;

	health_state_init(&st, 0);
	CHECK_INT_EQ(feed(&st, &th, &c, false, 1), 1);
	CHECK_INT_EQ(feed(&st, &th, &c, true, 1), 1);
	CHECK(st.healthy);
}

TEST(retuning_keeps_counters)
{
	const struct health_thresholds lower = { .unhealthy = 2, .healthy = 1 };
	struct test_clock c = { 0 };
	struct health_state st;

	health_state_init(&st, 0);
	feed(&st, &th_3_2, &c, false, 1);
	/* A reload lowered the threshold: the failure already counted still counts. */
	CHECK_INT_EQ(feed(&st, &lower, &c, false, 1), 1);
	CHECK(!st.healthy);
}

TEST(first_delay_is_within_interval_and_spread)
{
	uint64_t rnd = 7, lo = ~0ull, hi = 0;

	CHECK_INT_EQ(health_first_delay_ns(0, 123), 0);
	CHECK_INT_EQ(health_first_delay_ns(5 * SEC, 0), 0);
	CHECK(health_first_delay_ns(5 * SEC, UINT32_MAX) < 5 * SEC);
	for (int i = 0; i < 1000; i++) {
		uint64_t d = health_first_delay_ns(10 * SEC, test_rand(&rnd));

		CHECK(d < 10 * SEC);
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	CHECK(lo < SEC);
	CHECK(hi > 9 * SEC);
}

static int status(const char *s)
{
	return health_http_status(s, strlen(s));
}

TEST(http_status_line_parses)
{
	CHECK_INT_EQ(status("HTTP/1.1 200 OK\r\n"), 200);
	CHECK_INT_EQ(status("HTTP/1.0 204 No Content\r\nX: y\r\n\r\n"), 204);
	CHECK_INT_EQ(status("HTTP/1.1 503 Service Unavailable\r\n"), 503);
	CHECK_INT_EQ(status("HTTP/1.1 404\r\n"), 404);
	CHECK_INT_EQ(status("HTTP/1.1 301\n"), 301);
}

TEST(http_status_line_needs_more)
{
	CHECK_INT_EQ(status(""), 0);
	CHECK_INT_EQ(status("HTT"), 0);
	CHECK_INT_EQ(status("HTTP/1.1 200 OK"), 0);
	CHECK_INT_EQ(status("HTTP/1.1 200 OK\r"), 0);
}

TEST(http_status_line_rejects_garbage)
{
	CHECK_INT_EQ(status("api\n"), -EINVAL);
	CHECK_INT_EQ(status("SSH-2.0"), -EINVAL);
	CHECK_INT_EQ(status("HTTP/2 200\r\n"), -EINVAL);
	CHECK_INT_EQ(status("HTTP/1.1 20\r\n"), -EINVAL);
	CHECK_INT_EQ(status("HTTP/1.1 2x0 OK\r\n"), -EINVAL);
	CHECK_INT_EQ(status("HTTP/1.1 2000 OK\r\n"), -EINVAL);
	CHECK_INT_EQ(status("HTTP/1.1 600 OK\r\n"), -EINVAL);
	CHECK_INT_EQ(status("HTTP/1.1  200 OK\r\n"), -EINVAL);
}
