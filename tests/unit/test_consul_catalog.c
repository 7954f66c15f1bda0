/* Unit tests for catalog discovery's decoding and tagged set (consul_catalog.c), on the seed
 * corpus of fuzz_catalog (the catalog fixtures of ../shared/consul plus hand-made answers). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "discovery/consul/consul.h"
#include "test.h"

#define CORPUS "tests/fuzz/corpus/catalog/"

static int vip_of(const char *text, struct config_endpoint *vip, char *why)
{
	return consul_parse_catalog_vip(text, strlen(text), vip, why, 160);
}

TEST(services_fixture_filtered_by_tag)
{
	size_t len, n;
	char *buf = test_read_file(CORPUS "catalog-services.json", &len), **names, why[160];

	CHECK(buf != NULL);
	CHECK_INT_EQ(consul_parse_catalog_services(buf, len, "v2", &names, &n, why, sizeof(why)),
		     0);
	CHECK_INT_EQ(n, 1);
	CHECK_STR_EQ(names[0], "web");
	consul_names_free(names, n);
	CHECK_INT_EQ(consul_parse_catalog_services(buf, len, "mesh", &names, &n, why, sizeof(why)),
		     0);
	CHECK_INT_EQ(n, 0);
	consul_names_free(names, n);
	free(buf);
}

TEST(services_sorted_dns_labels_only_and_errors)
{
	size_t len, n;
	char *buf = test_read_file(CORPUS "services-tagged.json", &len), **names, why[160];

	CHECK_INT_EQ(consul_parse_catalog_services(buf, len, "mesh", &names, &n, why, sizeof(why)),
		     0);
	CHECK_INT_EQ(n, 2); /* Bad_Name is no DNS label; web has null tags */
	CHECK_STR_EQ(names[0], "api");
	CHECK_STR_EQ(names[1], "shop");
	consul_names_free(names, n);
	free(buf);
	CHECK_INT_EQ(consul_parse_catalog_services("[]", 2, "mesh", &names, &n, why, sizeof(why)),
		     -EINVAL);
	CHECK_STR_EQ(why, "not a JSON object of service name -> tags");
	CHECK_INT_EQ(consul_parse_catalog_services("{\"a\":\"mesh\"}", 12, "mesh", &names, &n, why,
						   sizeof(why)),
		     -EINVAL);
	CHECK_STR_EQ(why, "tags of service \"a\" are not an array");
}

TEST(vip_from_meta)
{
	struct config_endpoint vip;
	char why[160] = "";
	size_t len;
	char *buf = test_read_file(CORPUS "service-vip.json", &len);

	CHECK_INT_EQ(consul_parse_catalog_vip(buf, len, &vip, why, sizeof(why)), 0);
	CHECK(vip.family == AF_INET && vip.port == 80);
	free(buf);
	CHECK_INT_EQ(vip_of("[{\"ServiceMeta\":{\"mesh-vip\":\"[2001:db8::1]:443\"}}]", &vip, why),
		     0);
	CHECK(vip.family == AF_INET6 && vip.port == 443);
	/* the fixture's web carries no mesh-vip; nor does an empty answer */
	buf = test_read_file(CORPUS "catalog-service-web.json", &len);
	CHECK_INT_EQ(consul_parse_catalog_vip(buf, len, &vip, why, sizeof(why)), -ENOENT);
	free(buf);
	CHECK_INT_EQ(vip_of("[]", &vip, why), -ENOENT);
}

TEST(vip_malformed_or_disagreeing)
{
	struct config_endpoint vip;
	char why[160] = "";

	CHECK_INT_EQ(vip_of("[{\"ServiceMeta\":{\"mesh-vip\":\"not-an-endpoint\"}}]", &vip, why),
		     -EINVAL);
	CHECK_STR_EQ(why, "meta mesh-vip \"not-an-endpoint\" is not an ip:port");
	CHECK_INT_EQ(vip_of("[{\"ServiceMeta\":{\"mesh-vip\":\"127.0.0.1:0\"}}]", &vip, why),
		     -EINVAL);
	CHECK_INT_EQ(vip_of("[{\"ServiceMeta\":{\"mesh-vip\":\"127.0.0.1:80\"}},"
			    "{\"ServiceMeta\":{\"mesh-vip\":\"127.0.0.2:80\"}}]",
			    &vip, why),
		     -EINVAL);
	CHECK_STR_EQ(why, "instances carry different mesh-vip values");
	CHECK_INT_EQ(vip_of("{}", &vip, why), -EINVAL);
	CHECK_INT_EQ(vip_of("[1]", &vip, why), -EINVAL);
}

static char **two(const char *a, const char *b, size_t *n)
{
	char **v = calloc(3, sizeof(*v));

	v[0] = strdup(a);
	*n = 1;
	if (b) {
		v[1] = strdup(b);
		*n = 2;
	}
	return v;
}

/* Defs wait for every tagged service's meta; names still listed keep what is known. */
TEST(set_defines_once_known)
{
	struct consul_catalog *c = consul_catalog_new();
	const char *vip_a = "[{\"ServiceMeta\":{\"mesh-vip\":\"127.0.0.1:80\"}}]";
	enum consul_catalog_state st;
	struct discovery_def *defs;
	const char *why;
	bool changed;
	char **names;
	size_t n;

	CHECK_INT_EQ(consul_catalog_defs(c, &defs, &n), -EAGAIN); /* no catalog answer yet */
	names = two("a", "b", &n);
	CHECK_INT_EQ(consul_catalog_set_names(c, names, n, &changed), 0);
	CHECK(changed);
	CHECK_INT_EQ(consul_catalog_set_meta(c, "a", vip_a, strlen(vip_a), &st, &why), 1);
	CHECK_INT_EQ(consul_catalog_defs(c, &defs, &n), -EAGAIN); /* b not read */
	CHECK_INT_EQ(consul_catalog_set_meta(c, "b", "[]", 2, &st, &why), 1);
	CHECK_INT_EQ(st, CONSUL_CATALOG_NO_VIP);
	CHECK_INT_EQ(consul_catalog_set_meta(c, "b", "[]", 2, &st, &why), 0); /* no change */
	CHECK_INT_EQ(consul_catalog_defs(c, &defs, &n), 0);
	CHECK_INT_EQ(n, 1);
	CHECK_STR_EQ(defs[0].name, "a");
	free(defs);
	names = two("a", NULL, &n);
	CHECK_INT_EQ(consul_catalog_set_names(c, names, n, &changed), 0);
	CHECK(changed);
	CHECK_INT_EQ(consul_catalog_defs(c, &defs, &n), 0); /* a's VIP kept */
	CHECK_INT_EQ(n, 1);
	free(defs);
	names = two("a", NULL, &n);
	CHECK_INT_EQ(consul_catalog_set_names(c, names, n, &changed), 0);
	CHECK(!changed);
	CHECK_INT_EQ(consul_catalog_set_meta(c, "zzz", "[]", 2, &st, &why), 0); /* not tagged */
	consul_catalog_free(c);
}
