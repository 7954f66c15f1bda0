/* The tunnel's wire format (docs/mtls.md, "Wire format"): TLS 1.3, ALPN "h2", SNI = destination
 * service; one HTTP/2 CONNECT stream per proxied connection, `:authority` = the backend's
 * `ip:port` (`[ip6]:port`); the answer's `:status` says what became of the backend connect and
 * `mesh-reason` names why in one token. This file validates what a peer sends (strictly: no
 * host names, no extended CONNECT, bounded header count and size). Pure; any thread. */
#ifndef MESH_MTLS_WIRE_H
#define MESH_MTLS_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define WIRE_ALPN "h2"
#define WIRE_REASON_HEADER "mesh-reason"
/* On a 200 the server held (waiting for the backend's first bytes to send with it): how long,
 * in microseconds, so the caller's connect latency leaves it out. */
#define WIRE_HELD_HEADER "mesh-held-us"
#define WIRE_MAX_HEADERS 16	   /* regular headers accepted on a CONNECT */
#define WIRE_MAX_HEADER_BYTES 4096 /* names + values, all headers */
#define WIRE_TRACEPARENT_MAX 128

/* Answers to a CONNECT. */
enum wire_status {
	WIRE_OK = 200,
	WIRE_BAD_REQUEST = 400,	   /* malformed CONNECT */
	WIRE_DENIED = 403,	   /* authorization */
	WIRE_NOT_SERVED = 421,	   /* target is not a port of a service this host serves */
	WIRE_BACKEND_FAILED = 502, /* local backend refused or unreachable */
	WIRE_UNAVAILABLE = 503,	   /* draining or out of resources: try elsewhere */
	WIRE_BACKEND_TIMEOUT = 504,
};

/* True when the caller may try another backend after this answer (and counts it as that
 * backend's failure): the backend was never reached. */
bool wire_status_retriable(int status);
/* Short token for `mesh-reason` and logs ("denied", "backend_refused", ...). */
const char *wire_status_reason(int status);

/* The value of `mesh-held-us` (len bytes, no NUL needed): 1 to 7 decimal digits, in ns; 0 for
 * anything else (the header is then ignored). */
uint64_t wire_held_ns(const uint8_t *value, size_t len);

/* Parses an authority `ip:port` / `[ip6]:port` (len bytes, no NUL needed): no host names, no
 * zone, port 1..65535 without sign or leading zeros. Returns 0 or -EINVAL. */
int wire_parse_authority(const char *s, size_t len, struct config_endpoint *ep);
/* Formats `ep` as an authority; returns length or -ENOSPC. */
int wire_format_authority(const struct config_endpoint *ep, char *buf, size_t len);

/* A CONNECT request's headers, checked one at a time as nghttp2 hands them over. */
struct wire_request {
	bool have_method, have_authority, bad;
	const char *why; /* first problem, static text */
	unsigned n_headers;
	size_t header_bytes;
	struct config_endpoint target;
	/* W3C trace context (tracing, issue 12), unchecked: "" when absent or unusable (empty,
	 * longer than WIRE_TRACEPARENT_MAX, repeated: then traceparent_bad). */
	char traceparent[WIRE_TRACEPARENT_MAX + 1];
	bool traceparent_bad;
};

void wire_request_init(struct wire_request *r);
/* Takes one header (pseudo-headers first, as HTTP/2 requires). Returns 0, or -EINVAL once the
 * request is known bad (r->why says why; later headers are ignored). */
int wire_request_header(struct wire_request *r, const uint8_t *name, size_t namelen,
			const uint8_t *value, size_t valuelen);
/* After the last header: 0 when the request is a valid CONNECT, else -EINVAL with r->why. */
int wire_request_finish(struct wire_request *r);

#endif
