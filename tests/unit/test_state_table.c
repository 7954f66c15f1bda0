/* Unit tests for the discovery service table: deep copy, equality over every field that reaches
 * the datapath, canonical backend order. */
#include <arpa/inet.h>
#include <stdlib.h>

#include "state/state.h"
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

	CHECK_INT_EQ(state_svc_copy(&dst, &src, b, 2), 0);
	CHECK(dst.name != src.name);
	CHECK(dst.backends != b);
	CHECK(dst.load_balancer.health_check.http_path != src.load_balancer.health_check.http_path);
	CHECK(state_svc_equal(&dst, &src));
	state_svc_release(&dst);
	CHECK(dst.name == NULL && dst.backends == NULL && dst.n_backends == 0);
}

TEST(svc_copy_replaces_backends)
{
	struct config_backend b[1] = { be4("127.0.0.1", 22001, 1) };
	struct config_backend nb[2] = { be4("127.0.0.2", 22001, 1), be4("127.0.0.3", 22001, 1) };
	struct config_service src = svc_template(b, 1), dst;

	CHECK_INT_EQ(state_svc_copy(&dst, &src, nb, 2), 0);
	CHECK_INT_EQ(dst.n_backends, 2);
	CHECK(!state_svc_equal(&dst, &src));
	CHECK(state_backends_equal(dst.backends, 2, nb, 2));
	state_svc_release(&dst);
}

TEST(svc_equal_sees_policy_changes)
{
	struct config_backend b[1] = { be4("127.0.0.1", 22001, 1) };
	struct config_service a = svc_template(b, 1), c = a;

	CHECK(state_svc_equal(&a, &c));
	c.circuit_breaker.consecutive_failures = 7;
	CHECK(!state_svc_equal(&a, &c));
	c = a;
	c.load_balancer.health_check.http_path = "/ready";
	CHECK(!state_svc_equal(&a, &c));
	c = a;
	c.vip.port = 81;
	CHECK(!state_svc_equal(&a, &c));
	c = a;
	c.mtls = true;
	CHECK(!state_svc_equal(&a, &c));
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

TEST(table_find_and_free)
{
	struct state_table t = { 0 };
	struct config_backend b[1] = { be4("127.0.0.1", 22001, 1) };
	struct config_service s = svc_template(b, 1);

	t.ents = calloc(2, sizeof(*t.ents));
	CHECK_INT_EQ(state_svc_copy(&t.ents[0].svc, &s, b, 1), 0);
	s.name = "web";
	CHECK_INT_EQ(state_svc_copy(&t.ents[1].svc, &s, b, 1), 0);
	t.n = 2;
	CHECK(state_table_find(&t, "web") == &t.ents[1]);
	CHECK(state_table_find(&t, "nope") == NULL);
	CHECK(state_table_find(&t, NULL) == NULL);
	state_table_free(&t);
	CHECK(t.n == 0 && t.ents == NULL);
}
