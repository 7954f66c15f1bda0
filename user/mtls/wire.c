/* CONNECT request validation and authority parsing behind wire.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "mtls/wire.h"

bool wire_status_retriable(int status)
{
	return status == WIRE_NOT_SERVED || status == WIRE_BACKEND_FAILED ||
	       status == WIRE_UNAVAILABLE || status == WIRE_BACKEND_TIMEOUT;
}

uint64_t wire_held_ns(const uint8_t *value, size_t len)
{
	uint64_t us = 0;

	if (!len || len > 7)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (value[i] < '0' || value[i] > '9')
			return 0;
		us = us * 10 + (uint64_t)(value[i] - '0');
	}
	return us * 1000;
}

const char *wire_status_reason(int status)
{
	switch (status) {
	case WIRE_OK:
		return "ok";
	case WIRE_BAD_REQUEST:
		return "bad_request";
	case WIRE_DENIED:
		return "denied";
	case WIRE_NOT_SERVED:
		return "not_served";
	case WIRE_BACKEND_FAILED:
		return "backend_failed";
	case WIRE_UNAVAILABLE:
		return "unavailable";
	case WIRE_BACKEND_TIMEOUT:
		return "backend_timeout";
	default:
		return "unknown";
	}
}

static int parse_port(const char *s, size_t len, uint16_t *port)
{
	unsigned v = 0;

	if (!len || len > 5 || (s[0] == '0'))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int wire_parse_authority(const char *s, size_t len, struct config_endpoint *ep)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon;
	size_t hlen;

	memset(ep, 0, sizeof(*ep));
	if (len && s[0] == '[') {
		const char *close = memchr(s, ']', len);

		if (!close || close + 1 >= s + len || close[1] != ':')
			return -EINVAL;
		hlen = (size_t)(close - s - 1);
		colon = close + 1;
		if (!hlen || hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		ep->family = AF_INET6;
		if (inet_pton(AF_INET6, host, &ep->addr.v6) != 1)
			return -EINVAL;
	} else {
		colon = memchr(s, ':', len);
		hlen = colon ? (size_t)(colon - s) : 0;
		if (!hlen || hlen >= INET_ADDRSTRLEN)
			return -EINVAL;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		ep->family = AF_INET;
		if (inet_pton(AF_INET, host, &ep->addr.v4) != 1)
			return -EINVAL;
	}
	return parse_port(colon + 1, len - (size_t)(colon + 1 - s), &ep->port);
}

int wire_format_authority(const struct config_endpoint *ep, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	int n;

	if (!inet_ntop(ep->family, &ep->addr, a, sizeof(a)))
		return -EINVAL;
	n = snprintf(buf, len, ep->family == AF_INET6 ? "[%s]:%u" : "%s:%u", a, ep->port);
	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

void wire_request_init(struct wire_request *r)
{
	memset(r, 0, sizeof(*r));
}

static int bad(struct wire_request *r, const char *why)
{
	if (!r->bad) {
		r->bad = true;
		r->why = why;
	}
	return -EINVAL;
}

static bool is(const uint8_t *s, size_t len, const char *want)
{
	return len == strlen(want) && !memcmp(s, want, len);
}

static int pseudo_header(struct wire_request *r, const uint8_t *name, size_t nl,
			 const uint8_t *value, size_t vl)
{
	if (r->n_headers)
		return bad(r, "pseudo-header after a regular header");
	if (is(name, nl, ":method")) {
		if (r->have_method)
			return bad(r, "duplicate :method");
		if (!is(value, vl, "CONNECT"))
			return bad(r, "method is not CONNECT");
		r->have_method = true;
		return 0;
	}
	if (is(name, nl, ":authority")) {
		if (r->have_authority)
			return bad(r, "duplicate :authority");
		if (wire_parse_authority((const char *)value, vl, &r->target))
			return bad(r, ":authority is not ip:port");
		r->have_authority = true;
		return 0;
	}
	/* :scheme, :path and :protocol would make it an ordinary or extended CONNECT. */
	return bad(r, "unexpected pseudo-header");
}

/* Keeps one traceparent as sent; a second one (W3C: then none is valid), an empty, oversized or
 * NUL-bearing one makes it unusable. A bad trace context never fails the request. */
static void take_traceparent(struct wire_request *r, const uint8_t *value, size_t len)
{
	if (r->traceparent[0] || r->traceparent_bad || !len || len > WIRE_TRACEPARENT_MAX ||
	    memchr(value, '\0', len)) {
		r->traceparent_bad = true;
		r->traceparent[0] = '\0';
		return;
	}
	memcpy(r->traceparent, value, len);
	r->traceparent[len] = '\0';
}

int wire_request_header(struct wire_request *r, const uint8_t *name, size_t namelen,
			const uint8_t *value, size_t valuelen)
{
	if (r->bad)
		return -EINVAL;
	r->header_bytes += namelen + valuelen;
	if (r->header_bytes > WIRE_MAX_HEADER_BYTES)
		return bad(r, "headers too large");
	if (namelen && name[0] == ':')
		return pseudo_header(r, name, namelen, value, valuelen);
	if (++r->n_headers > WIRE_MAX_HEADERS)
		return bad(r, "too many headers");
	if (is(name, namelen, "traceparent"))
		take_traceparent(r, value, valuelen);
	return 0;
}

int wire_request_finish(struct wire_request *r)
{
	if (r->bad)
		return -EINVAL;
	if (!r->have_method)
		return bad(r, "no :method");
	if (!r->have_authority)
		return bad(r, "no :authority");
	return 0;
}
