/* Split draws and peak EWMA (bpf/lib/split.h) with an injected random source: 90/10 and
 * 0.01%-step weights within stated binomial bounds, fallback when a subset has no usable
 * backend (proportional over the usable ones), peak EWMA jumping up and decaying with time,
 * power-of-two choices steering away from a slow backend. */
#include <linux/types.h>
#include <math.h>

#include "lib/split.h"
#include "test.h"

#define DRAWS 100000

/* Counts subsets over DRAWS draws. */
static void draw_many(const __u16 *w, __u32 n, __u32 usable, long *hits)
{
	uint64_t rs = 12345;

	for (int k = 0; k < DRAWS; k++) {
		int s = split_pick(w, n, usable, test_rand(&rs));

		if (s >= 0)
			hits[s]++;
	}
}

/* |hits - p x DRAWS| within 5 binomial standard deviations. */
static bool near(long hits, double p)
{
	double mean = p * DRAWS, sd = sqrt(DRAWS * p * (1 - p));

	return fabs((double)hits - mean) <= 5 * sd + 1;
}

TEST(ninety_ten)
{
	const __u16 w[] = { 9000, 1000 };
	long hits[2] = { 0 };

	draw_many(w, 2, 0x3, hits);
	CHECK(near(hits[0], 0.9));
	CHECK(near(hits[1], 0.1));
}

TEST(hundredths_of_a_percent)
{
	const __u16 w[] = { 9999, 1 }; /* 99.99% / 0.01% */
	const __u16 v[] = { 3333, 3333, 3334 };
	long hits[3] = { 0 };

	draw_many(w, 2, 0x3, hits);
	CHECK(near(hits[1], 0.0001));
	CHECK(hits[1] > 0);
	hits[0] = hits[1] = 0;
	draw_many(v, 3, 0x7, hits);
	CHECK(near(hits[0], 0.3333) && near(hits[1], 0.3333) && near(hits[2], 0.3334));
}

TEST(zero_weight_never_drawn)
{
	const __u16 w[] = { 10000, 0 };
	long hits[2] = { 0 };

	draw_many(w, 2, 0x3, hits);
	CHECK_INT_EQ(hits[1], 0);
	CHECK_INT_EQ(hits[0], DRAWS);
}

TEST(unusable_subset_falls_back_in_proportion)
{
	const __u16 w[] = { 6000, 3000, 1000 };
	long hits[3] = { 0 };

	draw_many(w, 3, 0x5, hits); /* subset 1 (30%) has no usable backend */
	CHECK_INT_EQ(hits[1], 0);
	CHECK(near(hits[0], 0.6 + 0.3 * 6.0 / 7.0));
	CHECK(near(hits[2], 0.1 + 0.3 * 1.0 / 7.0));
}

TEST(nothing_usable)
{
	const __u16 w[] = { 5000, 5000 };

	CHECK_INT_EQ(split_pick(w, 2, 0, 42), -1);
	CHECK_INT_EQ(split_pick(w, 0, 0x3, 42), -1);
	CHECK_INT_EQ(split_pick(w, SPLIT_MAX + 1, 0x3, 42), -1);
}

TEST(only_zero_weight_usable)
{
	const __u16 w[] = { 10000, 0 };

	CHECK_INT_EQ(split_pick(w, 2, 0x2, 7), 1);
}

TEST(peak_ewma_jumps_up_decays_down)
{
	const __u64 ms = 1000000, tau = 10000 * ms;
	__u64 avg = ewma_peak_update(0, 5 * ms, 0, tau);

	CHECK_INT_EQ(avg, 5 * ms);
	avg = ewma_peak_update(avg, 50 * ms, 1 * ms, tau); /* a peak is taken at once */
	CHECK_INT_EQ(avg, 50 * ms);
	/* after tau, a lower sample moves it half way: w = tau / (tau + tau) */
	CHECK_INT_EQ(ewma_peak_update(50 * ms, 10 * ms, tau, tau), 30 * ms);
	/* soon after, hardly at all */
	CHECK(ewma_peak_update(50 * ms, 10 * ms, ms, tau) > 49 * ms);
	/* long after, nearly the sample (w = 1/101: the first-order decay is slower than exp) */
	CHECK(ewma_peak_update(50 * ms, 10 * ms, 100 * tau, tau) < 10500 * 1000);
}

TEST(p2c_avoids_slow_backend)
{
	__u64 ewma[4] = { 100000, 100000, 100000, 5000000 }; /* backend 3: 50x slower */
	__u32 active[4] = { 0 };
	uint64_t rs = 99;
	long hits[4] = { 0 };

	for (int k = 0; k < DRAWS; k++)
		hits[ewma_p2c(ewma, active, 4, test_rand(&rs), test_rand(&rs), 1000000)]++;
	CHECK_INT_EQ(hits[3], 0); /* never the lower cost of two distinct draws */
	CHECK(near(hits[0], 1.0 / 3) && near(hits[1], 1.0 / 3) && near(hits[2], 1.0 / 3));
	/* load counts: a fast backend with many connections loses to an idle slower one */
	active[0] = 100;
	CHECK_INT_EQ(ewma_p2c(ewma, active, 4, 0, 2, 1000000), 3);
	CHECK_INT_EQ(ewma_cost(0, 1, 7), 7); /* unknown latency with load: the penalty */
	CHECK_INT_EQ(ewma_cost(0, 0, 7), 0); /* unknown and idle: tried first */
	CHECK_INT_EQ(ewma_cost(5, 2, 7), 15);
}
