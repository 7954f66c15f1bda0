/* libFuzzer target for the tunnel's CONNECT request validation (user/mtls/wire.c) and the W3C
 * traceparent it may carry (user/telemetry/traceparent.c): the input is a list of headers as the
 * inbound side receives them from nghttp2 ([name length][name][value length][value]...), and the
 * raw bytes as an authority and as a traceparent. Checks the promises: an accepted request has a
 * method, an address of a known family and a port in 1..65535, and an authority that parses
 * formats back to text that parses to the same endpoint; a traceparent kept by the request is
 * one header's value, never marked bad at once; an accepted traceparent has non-zero ids and
 * formats to a version-00 value that parses to the same context (and, for version 00, to the
 * input itself up to the flags). The bytes as a `mesh-held-us` value: at most 9,999,999 us. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mtls/wire.h"
#include "telemetry/traceparent.h"

static void check_authority(const char *s, size_t len)
{
	struct config_endpoint ep, again;
	char buf[64];
	int n;

	if (wire_parse_authority(s, len, &ep))
		return;
	if (!ep.port || (ep.family != AF_INET && ep.family != AF_INET6))
		abort();
	n = wire_format_authority(&ep, buf, sizeof(buf));
	if (n < 0 || wire_parse_authority(buf, (size_t)n, &again) ||
	    memcmp(&again.addr, &ep.addr, sizeof(ep.addr)) || again.port != ep.port)
		abort();
}

static void check_traceparent(const char *s, size_t len)
{
	static const uint8_t zero[16];
	struct trace_context c, again;
	char buf[TRACEPARENT_LEN + 1];

	if (traceparent_parse(s, len, &c))
		return;
	if (!memcmp(c.trace_id, zero, 16) || !memcmp(c.span_id, zero, 8))
		abort();
	if (traceparent_format(&c, buf, sizeof(buf)) != TRACEPARENT_LEN ||
	    traceparent_parse(buf, TRACEPARENT_LEN, &again) || memcmp(&c, &again, sizeof(c)))
		abort();
	if (s[0] == '0' && s[1] == '0' && memcmp(buf, s, 53))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wire_request r;
	size_t i = 0;

	check_authority((const char *)data, size);
	check_traceparent((const char *)data, size);
	if (wire_held_ns(data, size) > 9999999000ull)
		abort();
	wire_request_init(&r);
	while (i + 2 <= size) {
		size_t nl = data[i], vl;
		const uint8_t *name = data + i + 1, *value;

		if (i + 1 + nl + 1 > size)
			break;
		vl = data[i + 1 + nl];
		value = data + i + 2 + nl;
		if (i + 2 + nl + vl > size)
			break;
		wire_request_header(&r, name, nl, value, vl);
		i += 2 + nl + vl;
	}
	if (r.traceparent[0] && (r.traceparent_bad || strlen(r.traceparent) > WIRE_TRACEPARENT_MAX))
		abort();
	if (r.traceparent[0])
		check_traceparent(r.traceparent, strlen(r.traceparent));
	if (wire_request_finish(&r) == 0) {
		if (!r.have_method || !r.have_authority || !r.target.port || r.why)
			abort();
		if (r.target.family != AF_INET && r.target.family != AF_INET6)
			abort();
	} else if (!r.why) {
		abort();
	}
	return 0;
}
