/* W3C traceparent and trace ids behind traceparent.h. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "telemetry/traceparent.h"

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* upper case is invalid in traceparent */
}

/* `n` bytes from 2n lowercase hex digits; -EINVAL on anything else. */
static int hex_bytes(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int hi = hex_val(s[2 * i]), lo = hex_val(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

int traceparent_parse(const char *s, size_t len, struct trace_context *out)
{
	struct trace_context c;
	uint8_t version, flags;

	if (len < TRACEPARENT_LEN || hex_bytes(s, &version, 1) || version == 0xff)
		return -EINVAL;
	if (version == 0 ? len != TRACEPARENT_LEN : len > TRACEPARENT_LEN && s[55] != '-')
		return -EINVAL;
	if (s[2] != '-' || s[35] != '-' || s[52] != '-')
		return -EINVAL;
	if (hex_bytes(s + 3, c.trace_id, 16) || hex_bytes(s + 36, c.span_id, 8) ||
	    hex_bytes(s + 53, &flags, 1))
		return -EINVAL;
	if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
		return -EINVAL;
	c.sampled = flags & 1;
	*out = c;
	return 0;
}

static char *put_hex(char *p, const uint8_t *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		*p++ = digits[b[i] >> 4];
		*p++ = digits[b[i] & 15];
	}
	return p;
}

int traceparent_format(const struct trace_context *c, char *buf, size_t len)
{
	uint8_t flags = c->sampled ? 1 : 0;
	char *p = buf;

	if (len < TRACEPARENT_LEN + 1)
		return -ENOSPC;
	memcpy(p, "00-", 3);
	p = put_hex(p + 3, c->trace_id, 16);
	*p++ = '-';
	p = put_hex(p, c->span_id, 8);
	*p++ = '-';
	p = put_hex(p, &flags, 1);
	*p = '\0';
	return TRACEPARENT_LEN;
}

void trace_rng_seed(struct trace_rng *r)
{
	if (getrandom(r->s, sizeof(r->s), 0) != sizeof(r->s) || !(r->s[0] | r->s[1])) {
		r->s[0] = (uint64_t)time(NULL) | 1;
		r->s[1] = (uint64_t)clock();
	}
}

static uint64_t next(struct trace_rng *r)
{
	uint64_t x = r->s[0], y = r->s[1];

	r->s[0] = y;
	x ^= x << 23;
	r->s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
	return r->s[1] + y;
}

void trace_rng_id(struct trace_rng *r, uint8_t *id, size_t n)
{
	do {
		for (size_t i = 0; i < n; i += 8) {
			uint64_t v = next(r);

			memcpy(id + i, &v, n - i < 8 ? n - i : 8);
		}
	} while (all_zero(id, n));
}

bool trace_rng_draw(struct trace_rng *r, double ratio)
{
	if (ratio <= 0)
		return false;
	if (ratio >= 1)
		return true;
	return (double)(next(r) >> 11) * (1.0 / 9007199254740992.0) < ratio;
}
