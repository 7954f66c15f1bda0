/* libFuzzer target for catalog discovery's decoding (consul_catalog.c): the /v1/catalog/services
 * map filtered by tag, the mesh-vip of a /v1/catalog/service answer, and the tagged set fed
 * both: arbitrary bytes must never crash or leak, names kept must carry the tag's shape (DNS
 * labels), and a VIP is only ever returned with a port. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!names[i] || !names[i][0] || strlen(names[i]) > 63 ||
		    (i && strcmp(names[i - 1], names[i]) > 0))
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct consul_catalog *c = consul_catalog_new();
	const char *json = (const char *)data, *why_now;
	struct config_endpoint vip;
	struct discovery_def *defs;
	enum consul_catalog_state st;
	char why[160], **names;
	bool changed;
	size_t n;

	if (!c)
		return 0;
	if (consul_parse_catalog_services(json, size, "mesh", &names, &n, why, sizeof(why)) == 0) {
		check_names(names, n);
		if (consul_catalog_set_names(c, names, n, &changed) == 0 && n) {
			/* the same bytes as the first service's instances */
			consul_catalog_set_meta(c, consul_catalog_name(c, 0), json, size, &st,
						&why_now);
			if (consul_catalog_defs(c, &defs, &n) == 0) {
				for (size_t i = 0; i < n; i++)
					if (!defs[i].vip.port)
						abort();
				free(defs);
			}
		}
	}
	if (consul_parse_catalog_vip(json, size, &vip, why, sizeof(why)) == 0 && !vip.port)
		abort();
	consul_catalog_free(c);
	return 0;
}
