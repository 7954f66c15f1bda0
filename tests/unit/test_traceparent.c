/* Unit tests for the W3C traceparent parser and formatter and the trace id source
 * (user/telemetry/traceparent.c): the spec's valid and invalid forms, round trips, ids never
 * all zero, sampling draws at the edges and near the ratio. */
#include <errno.h>
#include <string.h>

#include "telemetry/traceparent.h"
#include "test.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, struct trace_context *c)
{
	return traceparent_parse(s, strlen(s), c);
}

TEST(traceparent_valid)
{
	struct trace_context c;
	char buf[TRACEPARENT_LEN + 1];

	CHECK_INT_EQ(parse(TP, &c), 0);
	CHECK(c.trace_id[0] == 0x4b && c.trace_id[15] == 0x36);
	CHECK(c.span_id[0] == 0x00 && c.span_id[7] == 0xb7);
	CHECK(c.sampled);
	CHECK_INT_EQ(traceparent_format(&c, buf, sizeof(buf)), TRACEPARENT_LEN);
	CHECK_STR_EQ(buf, TP);
	CHECK_INT_EQ(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
	CHECK(!c.sampled);
	/* unknown flag bits are kept out of the decision, the sampled bit read */
	CHECK_INT_EQ(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", &c), 0);
	CHECK(c.sampled);
	/* a later version may carry more after a dash */
	CHECK_INT_EQ(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", &c), 0);
	CHECK_INT_EQ(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &c), 0);
	CHECK_INT_EQ(traceparent_format(&c, buf, TRACEPARENT_LEN), -ENOSPC);
}

TEST(traceparent_invalid)
{
	static const char *const bad[] = {
		"",
		"00",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 is exact */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent */
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* separators */
		"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
		"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", /* not hex */
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
		"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* no dash after */
		" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	};
	struct trace_context c = { .sampled = true, .trace_id = { 7 } };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &c) != -EINVAL)
			fprintf(stderr, "accepted: '%s'\n", bad[i]);
		CHECK_INT_EQ(parse(bad[i], &c), -EINVAL);
	}
	CHECK(c.sampled && c.trace_id[0] == 7); /* untouched */
}

TEST(trace_ids_and_draws)
{
	struct trace_rng r = { { 1, 0 } };
	uint8_t id[16], zero[16] = { 0 }, prev[16];
	int hits = 0;

	trace_rng_id(&r, prev, sizeof(prev));
	for (int i = 0; i < 1000; i++) {
		trace_rng_id(&r, id, sizeof(id));
		CHECK(memcmp(id, zero, sizeof(id)) != 0);
		CHECK(memcmp(id, prev, sizeof(id)) != 0);
		memcpy(prev, id, sizeof(id));
	}
	for (int i = 0; i < 100; i++) {
		CHECK(!trace_rng_draw(&r, 0));
		CHECK(!trace_rng_draw(&r, -1));
		CHECK(trace_rng_draw(&r, 1));
	}
	/* 10,000 draws at 0.25: mean 2,500, sd 43.3; +-10 sd */
	for (int i = 0; i < 10000; i++)
		hits += trace_rng_draw(&r, 0.25);
	CHECK(hits > 2067 && hits < 2933);
	trace_rng_seed(&r);
	CHECK(r.s[0] | r.s[1]);
}
