/* Trace context: W3C Trace Context `traceparent` (https://www.w3.org/TR/trace-context/, version
 * 00) parsed strictly and formatted, and the random trace and span ids every span needs. The
 * mTLS proxy carries a traceparent on each CONNECT so the inbound side's server span joins the
 * outbound side's trace; a value the peer sent is only ever used after traceparent_parse()
 * accepted it. Pure apart from trace_rng_seed() (getrandom); any thread, one rng per thread. */
#ifndef MESH_TRACEPARENT_H
#define MESH_TRACEPARENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

struct trace_context {
	uint8_t trace_id[16];
	uint8_t span_id[8]; /* the parent's span (parent-id) */
	bool sampled;	    /* trace-flags bit 0 */
};

/* Parses `len` bytes (no NUL needed). Version 00 must be exactly 55 characters; a later version
 * (01..fe) may be longer when the next character is '-' (the spec's forward compatibility);
 * version ff, upper-case hex, an all-zero trace-id or parent-id are invalid. Returns 0 or
 * -EINVAL (then `out` is untouched). */
int traceparent_parse(const char *s, size_t len, struct trace_context *out);
/* Writes the version-00 form of `c` and a NUL into `buf` (at least TRACEPARENT_LEN + 1 bytes).
 * Returns TRACEPARENT_LEN, or -ENOSPC. */
int traceparent_format(const struct trace_context *c, char *buf, size_t len);

/* xorshift128+ for ids and sampling draws: fast, never all-zero ids; not for secrets. */
struct trace_rng {
	uint64_t s[2];
};

/* Seeds from getrandom (the clock when that fails). */
void trace_rng_seed(struct trace_rng *r);
/* Fills `n` bytes of id, never all zero (the spec's invalid id). */
void trace_rng_id(struct trace_rng *r, uint8_t *id, size_t n);
/* True with probability `ratio` (<= 0 never, >= 1 always). */
bool trace_rng_draw(struct trace_rng *r, double ratio);

#endif
