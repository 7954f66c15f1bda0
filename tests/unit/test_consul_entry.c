/* Traffic-split config entries (consul_entry.c): Consul's service-splitter and service-resolver
 * shapes as Consul answers them, and the go-bexpr subset their Filter expressions use, evaluated
 * against /v1/health/service entries. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"
#include "test.h"

static const char web1[] =
    "{\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\"},\"Service\":{\"ID\":\"web-1\","
    "\"Service\":\"web\",\"Tags\":[\"v2\",\"canary\"],\"Meta\":{\"version\":\"2\"},\"Port\":80}}";
static const char web2[] = "{\"Node\":{\"Node\":\"n2\"},\"Service\":{\"ID\":\"old-web-2\","
			   "\"Tags\":[],\"Meta\":{},\"Port\":80}}";

/* Whether `expr` parses and matches entry `json`; -1 when it does not parse. */
static int match(const char *expr, const char *json)
{
	char why[160];
	struct consul_filter *f = consul_filter_parse(expr, why, sizeof(why));
	cJSON *e = cJSON_Parse(json);
	int r = f ? consul_filter_match(f, e) : -1;

	consul_filter_free(f);
	cJSON_Delete(e);
	return r;
}

TEST(filter_operators)
{
	CHECK_INT_EQ(match("Service.Meta.version == 2", web1), 1);
	CHECK_INT_EQ(match("Service.Meta.version == \"2\"", web2), 0);
	CHECK_INT_EQ(match("Service.Meta.version != 2", web2), 1);
	CHECK_INT_EQ(match("\"canary\" in Service.Tags", web1), 1);
	CHECK_INT_EQ(match("canary not in Service.Tags", web2), 1);
	CHECK_INT_EQ(match("Service.Tags contains v2", web1), 1);
	CHECK_INT_EQ(match("Service.Tags not contains v2", web1), 0);
	CHECK_INT_EQ(match("version in Service.Meta", web1), 1);
	CHECK_INT_EQ(match("Service.Meta is empty", web2), 1);
	CHECK_INT_EQ(match("Service.Tags is not empty", web1), 1);
	CHECK_INT_EQ(match("Service.ID matches \"^old-\"", web2), 1);
	CHECK_INT_EQ(match("Service.ID not matches `^old-`", web1), 1);
	CHECK_INT_EQ(match("Node.Node == n2", web2), 1);
	CHECK_INT_EQ(match("Service.Port == 80", web1), 1);
}

TEST(filter_logic_and_precedence)
{
	CHECK_INT_EQ(match("Service.Meta.version == 2 and canary in Service.Tags", web1), 1);
	CHECK_INT_EQ(match("Service.Meta.version == 1 or Service.Meta.version == 2", web1), 1);
	/* and binds tighter than or */
	CHECK_INT_EQ(match("Service.ID == x and Service.ID == y or Node.Node == n1", web1), 1);
	CHECK_INT_EQ(match("not (Service.Meta.version == 2)", web1), 0);
	CHECK_INT_EQ(match("not Service.Tags is empty and (v2 in Service.Tags)", web1), 1);
}

TEST(filter_errors_say_why)
{
	const char *bad[] = { "",
			      "Service.Meta.version ==",
			      "Service.Tags foo v2",
			      "(Service.ID == a",
			      "Foo.Bar == 1",
			      "Service.ID matches \"(\"",
			      "\"x\" in",
			      "Service.ID == a b" };
	char why[160];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct consul_filter *f = consul_filter_parse(bad[i], why, sizeof(why));

		CHECK(f == NULL);
		CHECK(why[0] != '\0');
		consul_filter_free(f);
	}
	CHECK(!consul_filter_parse("Foo.Bar == 1", why, sizeof(why)));
	CHECK_CONTAINS(why, "unknown selector");
}

TEST(filter_depth_bounded)
{
	char expr[400] = "";
	char why[160];

	for (int i = 0; i < 60; i++)
		strcat(expr, "(");
	CHECK(!consul_filter_parse(expr, why, sizeof(why)));
}

TEST(splitter_as_consul_answers)
{
	const char *j =
	    "{\"Kind\":\"service-splitter\",\"Name\":\"web\",\"Splits\":[{\"Weight\":"
	    "99.99,\"ServiceSubset\":\"v1\"},{\"Weight\":0.01,\"ServiceSubset\":\"v2\"}],"
	    "\"CreateIndex\":3,\"ModifyIndex\":4}";
	struct config_split *s;
	char why[160];
	size_t n;

	CHECK_INT_EQ(consul_parse_splitter(j, strlen(j), "web", &s, &n, why, sizeof(why)), 0);
	CHECK_INT_EQ(n, 2);
	CHECK_STR_EQ(s[0].subset, "v1");
	CHECK_INT_EQ(s[0].weight, 9999);
	CHECK_INT_EQ(s[1].weight, 1);
	consul_splits_free(s, n);
}

TEST(splitter_refusals)
{
	const char *sum = "{\"Splits\":[{\"Weight\":90,\"ServiceSubset\":\"v1\"}]}";
	const char *other = "{\"Splits\":[{\"Weight\":100,\"Service\":\"api\"}]}";
	struct config_split *s;
	char why[160];
	size_t n;

	CHECK_INT_EQ(consul_parse_splitter(sum, strlen(sum), "web", &s, &n, why, sizeof(why)),
		     -EINVAL);
	CHECK_CONTAINS(why, "sum to 90.00");
	CHECK(s == NULL && n == 0);
	CHECK_INT_EQ(consul_parse_splitter(other, strlen(other), "web", &s, &n, why, sizeof(why)),
		     -EINVAL);
	CHECK_CONTAINS(why, "another service");
	CHECK_INT_EQ(consul_parse_splitter("[]", 2, "web", &s, &n, why, sizeof(why)), -EINVAL);
}

TEST(resolver_subsets_of_an_entry)
{
	const char *j = "{\"Kind\":\"service-resolver\",\"Name\":\"web\",\"DefaultSubset\":\"v1\","
			"\"Subsets\":{\"v1\":{\"Filter\":\"Service.Meta.version == 1\"},"
			"\"v2\":{\"Filter\":\"Service.Meta.version == 2\"},"
			"\"canary\":{\"Filter\":\"canary in Service.Tags\"},\"all\":{}}}";
	struct consul_resolver r;
	cJSON *e1 = cJSON_Parse(web1), *e2 = cJSON_Parse(web2);
	char why[160], *a, *b;

	CHECK_INT_EQ(consul_parse_resolver(j, strlen(j), &r, why, sizeof(why)), 0);
	CHECK_STR_EQ(r.default_subset, "v1");
	CHECK_INT_EQ(r.n, 4);
	a = consul_subsets_of(&r, e1);
	b = consul_subsets_of(&r, e2);
	CHECK_STR_EQ(a, "v2,canary,all");
	CHECK_STR_EQ(b, "all");
	free(a);
	free(b);
	consul_resolver_free(&r);
	cJSON_Delete(e1);
	cJSON_Delete(e2);
}

TEST(resolver_bad_filter_names_the_subset)
{
	const char *j = "{\"Subsets\":{\"v2\":{\"Filter\":\"Service.Meta.version ==\"}}}";
	struct consul_resolver r;
	char why[160];

	CHECK_INT_EQ(consul_parse_resolver(j, strlen(j), &r, why, sizeof(why)), -EINVAL);
	CHECK_CONTAINS(why, "Filter for subset \"v2\" is not a valid expression");
	CHECK(r.n == 0 && r.subsets == NULL);
}
