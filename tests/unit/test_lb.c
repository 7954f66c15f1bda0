/* Balancer selection (bpf/lib/lb.h) with an injected random seed: round_robin exactly even,
 * random and weighted within stated statistical bounds, least_request avoiding the busiest
 * candidate, maglev stickiness and its fallback when the table's choice is not usable. */
#include <linux/types.h>
#include <stdlib.h>

#include "mesh_abi.h"
#include "lib/lb.h"
#include "datapath/maglev.h"
#include "test.h"

#define PICKS 30000

/* lb_pick() with the per-connect inputs filled in. */
static int pick(const struct lb_cand *in, __u8 alg, __u64 rr, __u32 seed, const uint16_t *table,
		__u64 key)
{
	static struct lb_cand c;

	c = *in;
	c.algorithm = alg;
	c.choice_count = 2;
	c.rr = rr;
	c.seed = seed;
	c.key = key;
	c.n_maglev = 0;
	/* As the connect program does: the slots of the entries the key's hash probes. */
	for (__u32 j = 0; table && j < LB_MAGLEV_PROBE; j++)
		c.maglev[c.n_maglev++] = table[(lb_hash64(key) + j) % MESH_MAGLEV_M_MIN];
	return lb_pick(&c);
}

static struct lb_cand cands(__u32 n)
{
	struct lb_cand c = { 0 };

	for (__u32 i = 0; i < n; i++)
		lb_cand_add(&c, i, 1, 0);
	return c;
}

static void pick_many(const struct lb_cand *c, __u8 alg, long *hits, int picks)
{
	uint64_t rs = 7;

	for (int i = 0; i < picks; i++) {
		int s = pick(c, alg, (__u64)i, test_rand(&rs), NULL, 0);

		if (s >= 0 && s < MESH_MAX_BACKENDS_PER_SVC)
			hits[s]++;
	}
}

TEST(lb_no_candidates_returns_minus_one)
{
	struct lb_cand c = { 0 };

	for (__u8 a = 0; a < MESH_LB__COUNT; a++)
		CHECK_INT_EQ(pick(&c, a, 0, 1, NULL, 0), -1);
}

TEST(lb_round_robin_is_exactly_even)
{
	struct lb_cand c = cands(3);
	long hits[MESH_MAX_BACKENDS_PER_SVC] = { 0 };

	pick_many(&c, MESH_LB_ROUND_ROBIN, hits, 3000);
	for (int s = 0; s < 3; s++)
		CHECK_INT_EQ(hits[s], 1000);
}

TEST(lb_round_robin_uses_candidate_slots)
{
	struct lb_cand c = { 0 };

	lb_cand_add(&c, 4, 1, 0);
	lb_cand_add(&c, 9, 1, 0);
	CHECK_INT_EQ(pick(&c, MESH_LB_ROUND_ROBIN, 0, 1, NULL, 0), 4);
	CHECK_INT_EQ(pick(&c, MESH_LB_ROUND_ROBIN, 1, 1, NULL, 0), 9);
	CHECK_INT_EQ(pick(&c, MESH_LB_ROUND_ROBIN, 2, 1, NULL, 0), 4);
}

/* Random over 4 slots, 30000 picks: each count is Binomial(30000, 1/4), sd = 75; we allow
 * 5 sd (+-375), which a fair picker exceeds with probability < 1e-6 per slot. */
TEST(lb_random_is_uniform_within_5_sd)
{
	struct lb_cand c = cands(4);
	long hits[MESH_MAX_BACKENDS_PER_SVC] = { 0 };

	pick_many(&c, MESH_LB_RANDOM, hits, PICKS);
	for (int s = 0; s < 4; s++)
		CHECK(labs(hits[s] - PICKS / 4) <= 375);
}

/* Weights 1:2:3 over 30000 picks: expected 5000/10000/15000; sd at most sqrt(30000/4) = 87,
 * bound 5 sd = 435. */
TEST(lb_weighted_follows_weights_within_5_sd)
{
	struct lb_cand c = { 0 };
	long hits[MESH_MAX_BACKENDS_PER_SVC] = { 0 };

	lb_cand_add(&c, 0, 1, 0);
	lb_cand_add(&c, 1, 2, 0);
	lb_cand_add(&c, 2, 3, 0);
	pick_many(&c, MESH_LB_WEIGHTED, hits, PICKS);
	CHECK(labs(hits[0] - 5000) <= 435);
	CHECK(labs(hits[1] - 10000) <= 435);
	CHECK(labs(hits[2] - 15000) <= 435);
}

TEST(lb_least_request_never_picks_the_busiest)
{
	struct lb_cand c = { 0 };
	long hits[MESH_MAX_BACKENDS_PER_SVC] = { 0 };

	lb_cand_add(&c, 0, 1, 50);
	lb_cand_add(&c, 1, 1, 0);
	lb_cand_add(&c, 2, 1, 0);
	pick_many(&c, MESH_LB_LEAST_REQUEST, hits, 3000);
	CHECK_INT_EQ(hits[0], 0);
	/* The two idle ones share evenly: Binomial(3000, 1/2), sd 27, bound 5 sd. */
	CHECK(labs(hits[1] - 1500) <= 137);
}

TEST(lb_least_request_prefers_fewer_active)
{
	struct lb_cand c = { 0 };
	long hits[MESH_MAX_BACKENDS_PER_SVC] = { 0 };

	lb_cand_add(&c, 0, 1, 1);
	lb_cand_add(&c, 1, 1, 2);
	lb_cand_add(&c, 2, 1, 3);
	lb_cand_add(&c, 3, 1, 4);
	pick_many(&c, MESH_LB_LEAST_REQUEST, hits, 12000);
	/* P2C over distinct pairs: slot k wins the pairs with a busier partner; expected shares
	 * 3/6, 2/6, 1/6, 0 of picks. */
	CHECK(hits[0] > hits[1] && hits[1] > hits[2]);
	CHECK_INT_EQ(hits[3], 0);
	CHECK(labs(hits[0] - 6000) <= 300);
}

TEST(lb_least_request_single_candidate)
{
	struct lb_cand c = { 0 };

	lb_cand_add(&c, 5, 1, 100);
	CHECK_INT_EQ(pick(&c, MESH_LB_LEAST_REQUEST, 0, 3, NULL, 0), 5);
}

static void fill_table(uint16_t *table, __u32 n)
{
	char keys[16][32];
	const char *kp[16];

	for (__u32 i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "10.0.0.%u:80", i + 1);
		kp[i] = keys[i];
	}
	CHECK_INT_EQ(maglev_fill(table, MESH_MAGLEV_M_MIN, kp, n), 0);
}

TEST(lb_maglev_is_sticky_per_caller)
{
	static uint16_t table[MESH_MAGLEV_M_MIN];
	struct lb_cand c = cands(5);
	uint64_t rs = 1;

	fill_table(table, 5);
	for (__u64 cg = 1; cg < 200; cg++) {
		int first = pick(&c, MESH_LB_MAGLEV, 0, test_rand(&rs), table, cg);

		for (int k = 0; k < 5; k++)
			CHECK_INT_EQ(pick(&c, MESH_LB_MAGLEV, k, test_rand(&rs), table, cg), first);
	}
}

TEST(lb_maglev_skips_unusable_slot)
{
	static uint16_t table[MESH_MAGLEV_M_MIN];
	struct lb_cand all = cands(4), some = { 0 };
	int moved = 0;

	fill_table(table, 4);
	lb_cand_add(&some, 0, 1, 0);
	lb_cand_add(&some, 1, 1, 0);
	lb_cand_add(&some, 3, 1, 0); /* slot 2 ejected */
	for (__u64 cg = 1; cg < 1000; cg++) {
		int a = pick(&all, MESH_LB_MAGLEV, 0, 1, table, cg);
		int b = pick(&some, MESH_LB_MAGLEV, 0, 1, table, cg);

		CHECK(b != 2);
		moved += a != b;
		if (a != 2)
			CHECK_INT_EQ(a, b); /* callers of usable slots stay put */
	}
	CHECK(moved > 150 && moved < 350); /* about a quarter of callers were on slot 2 */
}

TEST(lb_maglev_without_table_hashes)
{
	struct lb_cand c = cands(3);
	int s = pick(&c, MESH_LB_MAGLEV, 0, 1, NULL, 77);

	CHECK(s >= 0 && s < 3);
	CHECK_INT_EQ(pick(&c, MESH_LB_MAGLEV, 5, 9, NULL, 77), s);
}
