/* Alias tables for `weighted` (user/datapath/alias.c): the probability each entry gets, summed
 * exactly over cells, equals its weight share (to 2^-32 per cell); equal weights give full
 * cells; bad input is refused. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "datapath/alias.h"
#include "test.h"

/* Probability mass of each entry, x 2^32 x n, from the cells. */
static void masses(const uint32_t *prob, const uint32_t *alias, uint32_t n, double *m)
{
	for (uint32_t i = 0; i < n; i++)
		m[i] = 0;
	for (uint32_t j = 0; j < n; j++) {
		double keep = prob[j] == 0xffffffffu ? 1.0 : prob[j] / 4294967296.0;

		m[j] += keep;
		m[alias[j]] += 1.0 - keep;
	}
}

TEST(alias_matches_weights)
{
	const uint32_t w[] = { 1, 2, 3, 0, 10, 7 };
	uint32_t n = 6, prob[6], alias[6];
	double m[6], total = 1 + 2 + 3 + 1 + 10 + 7;

	CHECK_INT_EQ(alias_build(w, n, prob, alias), 0);
	masses(prob, alias, n, m);
	for (uint32_t i = 0; i < n; i++) {
		double want = (w[i] ? w[i] : 1) / total * n;

		CHECK(m[i] > want - 1e-6 && m[i] < want + 1e-6);
		CHECK(alias[i] < n);
	}
}

TEST(alias_equal_weights_are_full_cells)
{
	uint32_t w[1024], prob[1024], alias[1024];

	for (int i = 0; i < 1024; i++)
		w[i] = 5;
	CHECK_INT_EQ(alias_build(w, 1024, prob, alias), 0);
	for (int i = 0; i < 1024; i++)
		CHECK(prob[i] == 0xffffffffu && alias[i] == (uint32_t)i);
}

TEST(alias_large_set_matches_weights)
{
	static uint32_t w[1024], prob[1024], alias[1024];
	static double m[1024];
	double total = 0;
	uint64_t rs = 3;

	for (int i = 0; i < 1024; i++)
		total += w[i] = 1 + (uint32_t)(test_rand(&rs) % 10000);
	CHECK_INT_EQ(alias_build(w, 1024, prob, alias), 0);
	masses(prob, alias, 1024, m);
	for (int i = 0; i < 1024; i++) {
		double want = w[i] / total * 1024;

		CHECK(m[i] > want - 1e-5 && m[i] < want + 1e-5);
	}
}

TEST(alias_rejects_empty)
{
	uint32_t w[1] = { 1 }, p[1], a[1];

	CHECK_INT_EQ(alias_build(w, 0, p, a), -EINVAL);
}
