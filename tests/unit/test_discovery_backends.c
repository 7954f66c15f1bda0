/* Unit tests for the backend-set helpers of the discovery module (deep copy, canonical order,
 * normalisation) and for config_service_changes(), the table-derived comparison that decides
 * whether a service changed. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/config_int.h"
#include "discovery/state.h"
#include "test.h"

static struct config_backend be4(const char *ip, uint16_t port, uint32_t weight)
{
	struct config_backend b = { .weight = weight };

	b.endpoint.family = AF_INET;
	inet_pton(AF_INET, ip, &b.endpoint.addr.v4);
	b.endpoint.port = port;
	return b;
}

static struct config_service svc_template(struct config_backend *b, size_t n)
{
	struct config_service s = { .name = "api", .backends = b, .n_backends = n };

	s.vip = be4("127.77.6.1", 80, 0).endpoint;
	s.load_balancer.health_check.http_path = "/health";
	return s;
}

TEST(svc_copy_is_deep_and_equal)
{
	struct config_backend b[2] = { be4("127.0.0.1", 22001, 1), be4("127.0.0.1", 22002, 5) };
	struct config_service src = svc_template(b, 2), dst;

	CHECK_INT_EQ(config_service_copy(&dst, &src, b, 2), 0);
	CHECK(dst.name != src.name);
	CHECK(dst.backends != b);
	CHECK(dst.load_balancer.health_check.http_path != src.load_balancer.health_check.http_path);
	CHECK_INT_EQ(config_service_changes(&dst, &src, true, NULL, 0), 0);
	config_service_release(&dst);
	CHECK(dst.name == NULL && dst.backends == NULL && dst.n_backends == 0);
}

/* Every text key of the per-service table (derived from it) is the copy's own: the registry
 * keeps its copies after the config they came from is freed (a health check read a freed
 * dns_name after a reload when only the name and http_path were copied). */
TEST(svc_copy_owns_every_text_key)
{
	struct config_backend b[1] = { be4("127.0.0.1", 22001, 1) };
	struct config_service src = svc_template(b, 1), dst;
	size_t i, texts = 0;

	for (i = 0; i < cfg_service_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_service_desc.keys[i];

		if (k->type == CT_STRING || k->type == CT_PATH || k->type == CT_URL) {
			*(char **)((char *)&src + k->off) = strdup(k->path);
			texts++;
		} else {
			/* owned storage the copy does not know about would be shared (lists are
			 * copied element by element, per their own tables) */
			CHECK(k->type < CT_STRLIST || k->type == CT_LIST);
		}
	}
	CHECK(texts >= 4); /* name, http_path, udp_payload, dns_name */
	CHECK_INT_EQ(config_service_copy(&dst, &src, b, 1), 0);
	for (i = 0; i < cfg_service_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_service_desc.keys[i];
		char **p = (char **)((char *)&src + k->off);

		if (k->type == CT_STRING || k->type == CT_PATH || k->type == CT_URL) {
			CHECK(*(char **)((char *)&dst + k->off) != *p);
			free(*p);
			*p = NULL;
		}
	}
	for (i = 0; i < cfg_service_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_service_desc.keys[i];

		if (k->type == CT_STRING || k->type == CT_PATH || k->type == CT_URL)
			CHECK_STR_EQ(*(char **)((char *)&dst + k->off), k->path);
	}
	config_service_release(&dst);
}

/* The split and the backends' subset labels are the copy's own (lists copied per their tables),
 * and a change of the split or of a subset label is a change. */
TEST(svc_copy_owns_split_and_subsets)
{
	struct config_backend b[2] = { be4("127.0.0.1", 22001, 1), be4("127.0.0.1", 22002, 1) };
	struct config_split sp[2] = { { .weight = 9000 }, { .weight = 1000 } };
	struct config_service src = svc_template(b, 2), dst, c;
	char keys[64];

	b[0].subset = strdup("v1");
	b[1].subset = strdup("v2");
	sp[0].subset = strdup("v1");
	sp[1].subset = strdup("v2");
	src.split = sp;
	src.n_split = 2;
	CHECK_INT_EQ(config_service_copy(&dst, &src, b, 2), 0);
	CHECK(dst.split != sp && dst.n_split == 2);
	CHECK(dst.split[0].subset != sp[0].subset && dst.backends[1].subset != b[1].subset);
	CHECK_INT_EQ(config_service_changes(&dst, &src, true, NULL, 0), 0);
	CHECK(state_backends_equal(dst.backends, 2, b, 2));
	c = dst;
	c.split = (struct config_split[2]){ dst.split[0], dst.split[1] };
	c.split[1].weight = 1001;
	CHECK_INT_EQ(config_service_changes(&dst, &c, false, keys, sizeof(keys)), 1);
	CHECK_STR_EQ(keys, "split");
	for (int i = 0; i < 2; i++) {
		free(b[i].subset);
		free(sp[i].subset);
	}
	CHECK_STR_EQ(dst.split[1].subset, "v2");
	CHECK_STR_EQ(dst.backends[0].subset, "v1");
	b[0].subset = "v1";
	b[1].subset = "canary";
	CHECK(!state_backends_equal(dst.backends, 2, b, 2));
	config_service_release(&dst);
}

TEST(svc_copy_replaces_backends)
{
	struct config_backend b[1] = { be4("127.0.0.1", 22001, 1) };
	struct config_backend nb[2] = { be4("127.0.0.2", 22001, 1), be4("127.0.0.3", 22001, 1) };
	struct config_service src = svc_template(b, 1), dst;

	CHECK_INT_EQ(config_service_copy(&dst, &src, nb, 2), 0);
	CHECK_INT_EQ(dst.n_backends, 2);
	CHECK_INT_EQ(config_service_changes(&dst, &src, true, NULL, 0), 1);
	CHECK_INT_EQ(config_service_changes(&dst, &src, false, NULL, 0), 0);
	CHECK(state_backends_equal(dst.backends, 2, nb, 2));
	config_service_release(&dst);
}

TEST(service_changes_see_every_policy_key_and_name_them)
{
	struct config_backend b[1] = { be4("127.0.0.1", 22001, 1) };
	struct config_service a = svc_template(b, 1), c = a;
	char keys[256];

	CHECK_INT_EQ(config_service_changes(&a, &c, true, keys, sizeof(keys)), 0);
	CHECK_STR_EQ(keys, "");
	c.circuit_breaker.consecutive_failures = 7;
	CHECK_INT_EQ(config_service_changes(&a, &c, true, keys, sizeof(keys)), 1);
	CHECK_STR_EQ(keys, "circuit_breaker.consecutive_failures");
	c = a;
	c.load_balancer.health_check.http_path = "/ready";
	c.vip.port = 81;
	CHECK_INT_EQ(config_service_changes(&a, &c, true, keys, sizeof(keys)), 2);
	CHECK_STR_EQ(keys, "port,load_balancer.health_check.http_path");
	c = a;
	c.mtls = true;
	c.load_balancer.retry.budget_percent = 3; /* keys nobody listed by hand are seen too */
	CHECK_INT_EQ(config_service_changes(&a, &c, true, keys, sizeof(keys)), 2);
	CHECK_STR_EQ(keys, "mtls,load_balancer.retry.budget_percent");
	c = a;
	c.vip.addr.v4.s_addr ^= 1;
	CHECK_INT_EQ(config_service_changes(&a, &c, false, keys, sizeof(keys)), 1);
	CHECK_STR_EQ(keys, "vip");
}

TEST(normalize_sorts_and_drops_repeats)
{
	struct config_backend b[4] = { be4("127.0.0.2", 1, 1), be4("127.0.0.1", 2, 1),
				       be4("127.0.0.2", 1, 1), be4("127.0.0.1", 1, 3) };

	CHECK_INT_EQ(state_backends_normalize(b, 4), 3);
	CHECK_INT_EQ(b[0].endpoint.port, 1);
	CHECK_INT_EQ(b[0].weight, 3);
	CHECK_INT_EQ(b[1].endpoint.port, 2);
	CHECK_INT_EQ(b[2].endpoint.addr.v4.s_addr, be4("127.0.0.2", 1, 1).endpoint.addr.v4.s_addr);
	CHECK_INT_EQ(state_backends_normalize(b, 0), 0);
}

TEST(backends_equal_weight_and_order_matter)
{
	struct config_backend a[2] = { be4("127.0.0.1", 1, 1), be4("127.0.0.1", 2, 1) };
	struct config_backend b[2] = { be4("127.0.0.1", 2, 1), be4("127.0.0.1", 1, 1) };
	struct config_backend c[2] = { be4("127.0.0.1", 1, 1), be4("127.0.0.1", 2, 9) };

	CHECK(!state_backends_equal(a, 2, b, 2));
	CHECK(!state_backends_equal(a, 2, c, 2));
	CHECK(!state_backends_equal(a, 2, a, 1));
	state_backends_sort(b, 2);
	CHECK(state_backends_equal(a, 2, b, 2));
}

TEST(sort_orders_v4_before_v6_and_by_address_then_port)
{
	struct config_backend b[3] = { be4("127.0.0.2", 1, 1), be4("127.0.0.1", 9, 1),
				       be4("127.0.0.1", 2, 1) };
	struct config_backend v6 = { .weight = 1 };

	v6.endpoint.family = AF_INET6;
	inet_pton(AF_INET6, "::1", &v6.endpoint.addr.v6);
	struct config_backend all[4] = { v6, b[0], b[1], b[2] };

	state_backends_sort(all, 4);
	CHECK_INT_EQ(all[0].endpoint.port, 2);
	CHECK_INT_EQ(all[1].endpoint.port, 9);
	CHECK_INT_EQ(all[2].endpoint.port, 1);
	CHECK_INT_EQ(all[3].endpoint.family, AF_INET6);
}
