/* Maglev table population: each backend walks its own permutation of the table (offset and
 * skip from two hashes of its key) and the backends take turns claiming their next free entry
 * until the table is full. Pure: no maps, no I/O; tests/unit/test_maglev.c covers it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "datapath/maglev.h"

#define MAGLEV_EMPTY 0xffff

/* FNV-1a, 64 bit, with a seed folded in first. */
static uint64_t hash_key(const char *s, uint64_t seed)
{
	uint64_t h = 0xcbf29ce484222325ull ^ seed;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ull;
	}
	h ^= h >> 31; /* FNV's low bits are weak for short keys */
	h *= 0x7fb5d329728ea185ull;
	h ^= h >> 27;
	return h;
}

int maglev_fill(uint16_t *table, uint32_t m, const char *const *keys, uint32_t n)
{
	uint32_t *offset, *skip, *next, filled = 0;

	if (n == 0 || n >= MAGLEV_EMPTY || m <= n)
		return -EINVAL;
	offset = calloc(3 * (size_t)n, sizeof(*offset));
	if (!offset)
		return -ENOMEM;
	skip = offset + n;
	next = skip + n;
	for (uint32_t i = 0; i < n; i++) {
		offset[i] = hash_key(keys[i], 0x6d61676c) % m;
		skip[i] = hash_key(keys[i], 0x65763121) % (m - 1) + 1;
	}
	for (uint32_t e = 0; e < m; e++)
		table[e] = MAGLEV_EMPTY;
	while (filled < m) {
		for (uint32_t i = 0; i < n && filled < m; i++) {
			uint32_t c = (uint32_t)((offset[i] + (uint64_t)next[i] * skip[i]) % m);

			while (table[c] != MAGLEV_EMPTY) {
				next[i]++;
				c = (uint32_t)((offset[i] + (uint64_t)next[i] * skip[i]) % m);
			}
			table[c] = (uint16_t)i;
			next[i]++;
			filled++;
		}
	}
	free(offset);
	return 0;
}

/* Table sizes, primes, each about twice the last. */
static const uint32_t maglev_sizes[] = { 4093, 8191, 16381, 32771, 65537 };

uint32_t maglev_size(uint32_t n, uint32_t current)
{
	size_t i, last = sizeof(maglev_sizes) / sizeof(maglev_sizes[0]) - 1;

	if (current && (uint64_t)current >= 32ull * n)
		return current;
	for (i = 0; i < last && maglev_sizes[i] < 63ull * n; i++)
		;
	return maglev_sizes[i] > current ? maglev_sizes[i] : current;
}
