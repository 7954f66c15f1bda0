/* Unit tests for the backends' mesh-port table (user/mtls/meshports.c): entries per (VIP,
 * backend), replaced per service, removed with it, absent for backends without a port. */
#include <arpa/inet.h>
#include <string.h>

#include "mtls/meshports.h"
#include "test.h"

static struct config_endpoint ep(const char *ip, uint16_t port)
{
	struct config_endpoint e = { .port = port };

	if (inet_pton(AF_INET, ip, &e.addr.v4) == 1)
		e.family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &e.addr.v6) == 1)
		e.family = AF_INET6;
	return e;
}

TEST(set_get_replace_remove)
{
	struct meshports *t = meshports_new();
	struct config_backend b[3] = {
		{ .endpoint = ep("127.0.0.1", 8080), .weight = 1, .mesh_port = 15018 },
		{ .endpoint = ep("127.0.0.2", 8080), .weight = 1 },
		{ .endpoint = ep("::1", 8080), .weight = 1, .mesh_port = 15019 },
	};
	struct config_service api = {
		.name = "api", .vip = ep("127.77.0.1", 80), .backends = b, .n_backends = 3
	};
	struct config_service web = {
		.name = "web", .vip = ep("127.77.0.2", 80), .backends = b, .n_backends = 1
	};
	struct config_endpoint be1 = ep("127.0.0.1", 8080), be2 = ep("127.0.0.2", 8080);
	struct config_endpoint be6 = ep("::1", 8080), other_port = ep("127.0.0.1", 8081);

	CHECK(t != NULL);
	if (!t)
		return;
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be1), 0);
	CHECK_INT_EQ(meshports_set(t, "api", &api), 0);
	CHECK_INT_EQ(meshports_set(t, "web", &web), 0);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be1), 15018);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be2), 0);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be6), 15019);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &other_port), 0);
	CHECK_INT_EQ(meshports_get(t, &web.vip, &be1), 15018);
	CHECK_INT_EQ(meshports_get(t, &web.vip, &be6), 0);
	b[0].mesh_port = 15020;
	api.n_backends = 1;
	CHECK_INT_EQ(meshports_set(t, "api", &api), 0);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be1), 15020);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be6), 0);
	CHECK_INT_EQ(meshports_set(t, "api", NULL), 0);
	CHECK_INT_EQ(meshports_get(t, &api.vip, &be1), 0);
	CHECK_INT_EQ(meshports_get(t, &web.vip, &be1), 15018); /* web's entry is its own */
	meshports_free(t);
	meshports_free(NULL);
}
