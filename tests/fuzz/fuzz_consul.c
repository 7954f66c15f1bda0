/* libFuzzer target for the Consul health-response parser (consul_parse_health, the streaming
 * parser fed whole and in two pieces) and the X-Consul-Index rules: arbitrary bytes must never
 * crash, leak or return inconsistent counts, and the split must not change the result. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct consul_health h;
	char why[128], hdr[32], *s;
	size_t i;

	int whole = consul_parse_health((const char *)data, size, &h, why, sizeof(why));
	struct consul_stream *st = consul_stream_new(true);
	struct consul_health h2;
	size_t cut = size ? data[0] % size : 0;

	if (whole == 0) {
		for (i = 0; i < h.n; i++)
			if (h.backends[i].endpoint.port == 0 || h.backends[i].weight == 0)
				abort();
		for (i = 0; i < h.n_named; i++)
			if (!h.named[i].host || !h.named[i].port)
				abort();
	}
	if (st) {
		consul_stream_feed(st, (const char *)data, cut);
		consul_stream_feed(st, (const char *)data + cut, size - cut);
		if ((consul_stream_finish(st, &h2, why, sizeof(why)) == 0) != (whole == 0))
			abort();
		if (whole == 0 &&
		    (h2.n != h.n || h2.n_named != h.n_named || h2.skipped != h.skipped))
			abort();
		consul_health_free(&h2);
		consul_stream_free(st);
	}
	if (whole == 0)
		consul_health_free(&h);
	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (consul_header_index(s, size, hdr, sizeof(hdr)))
		(void)consul_next_index(5, hdr);
	(void)consul_next_index(5, s);
	free(s);
	return 0;
}
