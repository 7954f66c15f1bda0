/* Maglev table population (user/datapath/maglev.c): every slot gets floor or ceil of M/N
 * entries, removing one of N backends moves about 1/N of the entries, and bad input is refused. */
#include <errno.h>
#include <stdlib.h>

#include "datapath/maglev.h"
#include "mesh_abi.h"
#include "test.h"

#define M MESH_MAGLEV_M_MIN

static void keys_for(const char **kp, char (*keys)[32], uint32_t n, uint32_t skip)
{
	for (uint32_t i = 0, k = 0; i < n; i++) {
		if (i == skip)
			continue;
		snprintf(keys[k], 32, "127.0.0.1:%u", 18000 + i);
		kp[k] = keys[k];
		k++;
	}
}

TEST(maglev_balances_within_one_entry)
{
	static uint16_t table[M];
	char keys[64][32];
	const char *kp[64];
	const uint32_t sizes[] = { 1, 2, 3, 10, 64 };

	for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		uint32_t n = sizes[t], count[64] = { 0 }, lo = M, hi = 0;

		keys_for(kp, keys, n, n);
		CHECK_INT_EQ(maglev_fill(table, M, kp, n), 0);
		for (uint32_t e = 0; e < M; e++) {
			CHECK(table[e] < n);
			count[table[e] < 64 ? table[e] : 0]++;
		}
		for (uint32_t i = 0; i < n; i++) {
			lo = count[i] < lo ? count[i] : lo;
			hi = count[i] > hi ? count[i] : hi;
		}
		CHECK(hi - lo <= 1);
	}
}

/* Removing backend 3 of 10: its ~10 % of entries must move; the issue allows at most
 * 1/N + 5 % of all entries to change owner. */
TEST(maglev_removing_one_backend_moves_about_one_nth)
{
	static uint16_t before[M], after[M];
	char kb[10][32], ka[10][32];
	const char *pb[10], *pa[10];
	uint32_t changed = 0;

	keys_for(pb, kb, 10, 10);
	keys_for(pa, ka, 10, 3);
	CHECK_INT_EQ(maglev_fill(before, M, pb, 10), 0);
	CHECK_INT_EQ(maglev_fill(after, M, pa, 9), 0);
	for (uint32_t e = 0; e < M; e++) {
		/* Map slots back to backend numbers: after removal, slots >= 3 shift by one. */
		uint32_t b = before[e], a = after[e] >= 3 ? after[e] + 1u : after[e];

		changed += a != b;
		if (b == 3)
			CHECK(a != 3);
	}
	CHECK(changed * 100 <= M * (100 / 10 + 5));
	CHECK(changed * 100 >= M * 9); /* at least the removed backend's share moved */
}

TEST(maglev_is_deterministic)
{
	static uint16_t a[M], b[M];
	char keys[5][32];
	const char *kp[5];

	keys_for(kp, keys, 5, 5);
	CHECK_INT_EQ(maglev_fill(a, M, kp, 5), 0);
	CHECK_INT_EQ(maglev_fill(b, M, kp, 5), 0);
	CHECK(memcmp(a, b, sizeof(a)) == 0);
}

TEST(maglev_rejects_bad_input)
{
	static uint16_t table[M];
	const char *kp[1] = { "x" };

	CHECK_INT_EQ(maglev_fill(table, M, kp, 0), -EINVAL);
	CHECK_INT_EQ(maglev_fill(table, 1, kp, 1), -EINVAL);
	CHECK_INT_EQ(maglev_fill(table, M, kp, 70000), -EINVAL);
}

/* 1,024 backends in the scaled table (65,537 entries): balanced within one entry, and removing
 * one moves about 1/1024 of the entries. */
TEST(maglev_1024_backends_balanced_and_minimal_disruption)
{
	static uint16_t before[MESH_MAGLEV_M_MAX], after[MESH_MAGLEV_M_MAX];
	static char kb[1024][32], ka[1024][32];
	static const char *pb[1024], *pa[1024];
	static uint32_t count[1024];
	uint32_t m = maglev_size(1024, 0), changed = 0, lo = m, hi = 0;

	CHECK_INT_EQ(m, MESH_MAGLEV_M_MAX);
	keys_for(pb, kb, 1024, 1024);
	keys_for(pa, ka, 1024, 500);
	CHECK_INT_EQ(maglev_fill(before, m, pb, 1024), 0);
	CHECK_INT_EQ(maglev_fill(after, m, pa, 1023), 0);
	for (uint32_t e = 0; e < m; e++) {
		uint32_t b = before[e], a = after[e] >= 500 ? after[e] + 1u : after[e];

		count[b]++;
		changed += a != b;
	}
	for (uint32_t i = 0; i < 1024; i++) {
		lo = count[i] < lo ? count[i] : lo;
		hi = count[i] > hi ? count[i] : hi;
	}
	CHECK(hi - lo <= 1);
	CHECK(changed * 100 <= m * 6); /* 1/1024 + 5 % */
	CHECK(changed >= count[500]);
}

TEST(maglev_size_scales_and_never_shrinks)
{
	CHECK_INT_EQ(maglev_size(10, 0), 4093);
	CHECK_INT_EQ(maglev_size(64, 0), 4093);
	CHECK_INT_EQ(maglev_size(65, 0), 8191);
	CHECK_INT_EQ(maglev_size(1024, 0), 65537);
	CHECK_INT_EQ(maglev_size(2, 65537), 65537); /* shrinking keeps the table */
	CHECK_INT_EQ(maglev_size(127, 4093), 4093); /* still >= 32 per backend */
	CHECK_INT_EQ(maglev_size(128, 4093), 8191);
}
