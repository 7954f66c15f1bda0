/* libFuzzer target for the traffic-split config entries and their filters (consul_entry.c):
 * the input is parsed as a service-splitter, a service-resolver and a bare filter expression;
 * whatever parses is applied to a fixed health entry. Arbitrary bytes must never crash or leak,
 * and a parsed splitter's weights must sum to 100%. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char entry_json[] =
    "{\"Node\":{\"Node\":\"n1\"},\"Service\":{\"ID\":\"web-1\",\"Service\":\"web\","
    "\"Tags\":[\"v2\",\"canary\"],\"Meta\":{\"version\":\"2\"},\"Port\":80}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct consul_resolver r;
	struct config_split *sp;
	struct consul_filter *f;
	cJSON *entry = cJSON_Parse(entry_json);
	char why[160], *s, *subsets;
	uint32_t sum = 0;
	size_t n;

	if (consul_parse_splitter((const char *)data, size, "web", &sp, &n, why, sizeof(why)) ==
	    0) {
		for (size_t i = 0; i < n; i++)
			sum += sp[i].weight;
		if (sum != MESH_SPLIT_SCALE || n == 0 || n > MESH_SPLIT_MAX)
			abort();
		consul_splits_free(sp, n);
	}
	if (consul_parse_resolver((const char *)data, size, &r, why, sizeof(why)) == 0) {
		subsets = consul_subsets_of(&r, entry);
		free(subsets);
		consul_resolver_free(&r);
	}
	s = malloc(size + 1);
	if (s) {
		memcpy(s, data, size);
		s[size] = '\0';
		f = consul_filter_parse(s, why, sizeof(why));
		(void)consul_filter_match(f, entry);
		consul_filter_free(f);
		free(s);
	}
	cJSON_Delete(entry);
	return 0;
}
