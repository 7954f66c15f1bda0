/* Minimal unit-test harness: TEST() registers a case, CHECK*() record failures without aborting
 * the case, test_main.c runs every case and prints one `PASS name` / `FAIL name: why` line per
 * case (tests/run.sh counts those lines). Pure logic only: no sockets, no real clock. */
#ifndef MESH_TEST_H
#define MESH_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void test_register(const char *name, void (*fn)(void));
/* A whole file, NUL-terminated (caller frees), its length in *len; NULL when unreadable. */
char *test_read_file(const char *path, size_t *len);
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                                                 \
	static void name(void);                                                                    \
	__attribute__((constructor)) static void register_##name(void)                             \
	{                                                                                          \
		test_register(#name, name);                                                        \
	}                                                                                          \
	static void name(void)

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                         \
	} while (0)

#define CHECK_INT_EQ(a, b)                                                                         \
	do {                                                                                       \
		long long _a = (long long)(a), _b = (long long)(b);                                \
		if (_a != _b)                                                                      \
			test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, _a, _b);   \
	} while (0)

#define CHECK_STR_EQ(a, b)                                                                         \
	do {                                                                                       \
		const char *_a = (a), *_b = (b);                                                   \
		if (!_a || !_b || strcmp(_a, _b) != 0)                                             \
			test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,        \
				  _a ? _a : "(null)", _b ? _b : "(null)");                         \
	} while (0)

#define CHECK_CONTAINS(hay, needle)                                                                \
	do {                                                                                       \
		const char *_h = (hay), *_n = (needle);                                            \
		if (!_h || !strstr(_h, _n))                                                        \
			test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"",            \
				  _h ? _h : "(null)", _n);                                         \
	} while (0)

/* Injected clock and random source for pure logic under test. */
struct test_clock {
	uint64_t now_ns;
};

/* xorshift64*: deterministic, seedable. */
static inline uint32_t test_rand(uint64_t *state)
{
	uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return (uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32);
}

#endif
