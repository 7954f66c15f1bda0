/* libFuzzer target for the Consul Connect decoding: CA roots, leaf certificates and intentions
 * (consul_connect.c) and their compilation into authorization rules (intentions.c). The first
 * byte picks the decoder; arbitrary bytes must never crash, leak or give inconsistent results. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"
#include "mtls/intentions.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roots(const char *s, size_t n)
{
	struct consul_ca_roots r;
	char why[256];
	size_t active = 0;

	if (consul_parse_roots(s, n, &r, why, sizeof(why)))
		return;
	for (size_t i = 0; i < r.n; i++)
		active += r.roots[i].active;
	if (active != 1 || !r.trust_domain || !r.roots[0].pem)
		abort();
	consul_ca_roots_free(&r);
}

static void leaf(const char *s, size_t n)
{
	struct consul_leaf l;
	char why[256];

	if (consul_parse_leaf(s, n, "web", &l, why, sizeof(why)))
		return;
	if (strcmp(l.service, "web") || !strstr(l.service_uri, "/svc/web"))
		abort();
	consul_leaf_free(&l);
}

static void intentions(const char *s, size_t n)
{
	const char *svcs[] = { "web" }, *answers[] = { s };
	struct consul_intention *v;
	struct authz_rule *rules;
	size_t nv, nr;
	char why[256];

	if (consul_parse_intentions(s, n, "web", &v, &nv, why, sizeof(why)))
		return;
	for (size_t i = 1; i < nv; i++)
		if (v[i].precedence > v[i - 1].precedence)
			abort();
	consul_intentions_free(v, nv);
	if (strlen(s) != n) /* intentions_compile takes C strings */
		return;
	if (intentions_compile(svcs, answers, 1, &rules, &nr, why, sizeof(why)) || nr != nv)
		abort();
	intentions_rules_free(rules, nr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (!size)
		return 0;
	s = malloc(size);
	if (!s)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 3) {
	case 0:
		roots(s, size - 1);
		break;
	case 1:
		leaf(s, size - 1);
		break;
	default:
		intentions(s, size - 1);
	}
	free(s);
	return 0;
}
