/* libFuzzer target for the Consul health-response parser (consul_parse_health) and the
 * X-Consul-Index rules: arbitrary bytes must never crash, leak or return inconsistent counts. */
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

	if (consul_parse_health((const char *)data, size, &h, why, sizeof(why)) == 0) {
		for (i = 0; i < h.n; i++)
			if (h.backends[i].endpoint.port == 0 || h.backends[i].weight == 0)
				abort();
		free(h.backends);
	}
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
