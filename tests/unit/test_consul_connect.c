/* Unit tests for the Connect decoding (consul_connect.c: roots, leaves, intentions and Consul's
 * precedence) and the compilation of intentions into authorization rules (intentions.c), on the
 * seed corpus built from ../shared/consul (PEM bodies replaced: no key material committed; each
 * seed starts with fuzz_connect's decoder digit, skipped here). */
#include <errno.h>
#include <stdlib.h>

#include "discovery/consul/consul.h"
#include "mtls/authz.h"
#include "mtls/intentions.h"
#include "test.h"

#define CORPUS "tests/fuzz/corpus/connect/"

/* A seed without its decoder digit. */
static char *slurp(const char *path, size_t *len)
{
	char *buf = test_read_file(path, len);

	if (!buf || !*len) {
		free(buf);
		return NULL;
	}
	memmove(buf, buf + 1, (*len)--); /* the NUL moves too */
	return buf;
}

TEST(roots_fixture)
{
	struct consul_ca_roots r;
	char why[256] = "";
	size_t len;
	char *json = slurp(CORPUS "roots.json", &len);

	CHECK(json != NULL);
	CHECK_INT_EQ(consul_parse_roots(json, len, &r, why, sizeof(why)), 0);
	CHECK_STR_EQ(r.trust_domain, "124df5a0-9820-76c3-9aa9-6f62164ba1c2.consul");
	CHECK_INT_EQ(r.n, 1);
	CHECK(r.n == 1 && r.roots[0].active);
	CHECK_CONTAINS(r.n ? r.roots[0].pem : NULL, "BEGIN CERTIFICATE");
	consul_ca_roots_free(&r);
	free(json);
}

TEST(roots_rotation_lists_both_with_intermediates)
{
	struct consul_ca_roots r;
	char why[256] = "";
	size_t len;
	char *json = slurp(CORPUS "roots-rotation.json", &len);

	CHECK_INT_EQ(consul_parse_roots(json, len, &r, why, sizeof(why)), 0);
	CHECK_INT_EQ(r.n, 2);
	if (r.n == 2) {
		CHECK(!r.roots[0].active && r.roots[1].active);
		CHECK_STR_EQ(r.active_id, r.roots[1].id);
		/* root then one intermediate: two certificates in the PEM text */
		CHECK(strstr(strstr(r.roots[1].pem, "BEGIN") + 1, "BEGIN CERTIFICATE") != NULL);
	}
	consul_ca_roots_free(&r);
	free(json);
}

static int roots_str(const char *json, char *why, size_t wlen)
{
	struct consul_ca_roots r;
	int err = consul_parse_roots(json, strlen(json), &r, why, wlen);

	consul_ca_roots_free(&r);
	return err;
}

TEST(roots_refused)
{
	char why[256];
	const char *pem = "\"-----BEGIN CERTIFICATE-----\\nx\\n-----END CERTIFICATE-----\"";
	char buf[512];

	CHECK_INT_EQ(roots_str("[]", why, sizeof(why)), -EINVAL);
	CHECK_INT_EQ(roots_str("{\"TrustDomain\":\"\",\"ActiveRootID\":\"a\",\"Roots\":[]}", why,
			       sizeof(why)),
		     -EINVAL);
	CHECK_CONTAINS(why, "TrustDomain");
	snprintf(buf, sizeof(buf),
		 "{\"TrustDomain\":\"t.consul\",\"ActiveRootID\":\"a\",\"Roots\":[{\"ID\":\"b\","
		 "\"RootCert\":%s,\"Active\":true}]}",
		 pem);
	CHECK_INT_EQ(roots_str(buf, why, sizeof(why)), -EINVAL); /* active is not ActiveRootID */
	snprintf(buf, sizeof(buf),
		 "{\"TrustDomain\":\"t.consul\",\"ActiveRootID\":\"a\",\"Roots\":[{\"ID\":\"a\","
		 "\"RootCert\":%s,\"Active\":false}]}",
		 pem);
	CHECK_INT_EQ(roots_str(buf, why, sizeof(why)), -EINVAL); /* none active */
	CHECK_CONTAINS(why, "0 roots marked Active");
	snprintf(buf, sizeof(buf),
		 "{\"TrustDomain\":\"t.consul\",\"ActiveRootID\":\"a\",\"Roots\":[{\"ID\":\"a\","
		 "\"RootCert\":\"nope\",\"Active\":true}]}");
	CHECK_INT_EQ(roots_str(buf, why, sizeof(why)), -EINVAL);
	CHECK_CONTAINS(why, "no PEM RootCert");
}

TEST(leaf_fixture_and_wrong_service)
{
	struct consul_leaf l;
	char why[256] = "";
	size_t len;
	char *json = slurp(CORPUS "leaf-web.json", &len);

	CHECK_INT_EQ(consul_parse_leaf(json, len, "web", &l, why, sizeof(why)), 0);
	CHECK_STR_EQ(l.service, "web");
	CHECK_CONTAINS(l.service_uri, "/svc/web");
	CHECK_CONTAINS(l.key_pem, "PRIVATE KEY");
	CHECK_INT_EQ(l.modify_index, 5);
	consul_leaf_free(&l);
	CHECK_INT_EQ(consul_parse_leaf(json, len, "api", &l, why, sizeof(why)), -EINVAL);
	CHECK_CONTAINS(why, "expected api");
	CHECK(strstr(why, "PRIVATE") == NULL); /* never the key */
	free(json);
	json = slurp(CORPUS "leaf-wrong-service.json", &len);
	CHECK_INT_EQ(consul_parse_leaf(json, len, "web", &l, why, sizeof(why)), -EINVAL);
	CHECK_CONTAINS(why, "a leaf for service \"api\"");
	free(json);
}

TEST(precedence_is_consuls)
{
	CHECK_INT_EQ(consul_intention_precedence("web", "db"), 9);
	CHECK_INT_EQ(consul_intention_precedence("*", "db"), 8);
	CHECK_INT_EQ(consul_intention_precedence("web", "*"), 6);
	CHECK_INT_EQ(consul_intention_precedence("*", "*"), 5);
}

TEST(intentions_sorted_and_scoped)
{
	struct consul_intention *v;
	char why[256] = "";
	size_t len, n;
	char *json = slurp(CORPUS "intentions-match-api.json", &len);
	const char *bad;

	CHECK_INT_EQ(consul_parse_intentions(json, len, "api", &v, &n, why, sizeof(why)), 0);
	/* the peer's and the other namespace's are left out */
	CHECK_INT_EQ(n, 3);
	if (n == 3) {
		CHECK_STR_EQ(v[0].source, "web"); /* L7 web -> api: 9, denies at L4 */
		CHECK(!v[0].allow && v[0].precedence == 9);
		CHECK_STR_EQ(v[1].source, "*"); /* * -> api: 8 */
		CHECK(v[1].allow);
		CHECK_STR_EQ(v[2].destination, "*"); /* web -> *: 6 */
		CHECK(!v[2].allow && v[2].precedence == 6);
	}
	consul_intentions_free(v, n);
	CHECK_INT_EQ(consul_parse_intentions(json, len, "db", &v, &n, why, sizeof(why)), -EINVAL);
	free(json);
	bad = "{\"api\":[{\"SourceName\":\"a\",\"DestinationName\":\"api\",\"Action\":\"maybe\"}]}";
	CHECK_INT_EQ(consul_parse_intentions(bad, strlen(bad), "api", &v, &n, why, sizeof(why)),
		     -EINVAL);
	CHECK_CONTAINS(why, "maybe");
}

TEST(compile_applies_precedence_and_unknown_denies)
{
	const char *svcs[] = { "api", "db" };
	size_t len, n;
	char *json = slurp(CORPUS "intentions-match-api.json", &len), why[256];
	const char *answers[] = { json, NULL };
	struct authz_rule *rules;
	struct authz_policy *p = authz_policy_new(AUTHZ_ALLOW);

	CHECK_INT_EQ(intentions_compile(svcs, answers, 2, &rules, &n, why, sizeof(why)), 0);
	CHECK_INT_EQ(n, 4);
	CHECK_INT_EQ(authz_policy_set_layer(p, AUTHZ_LAYER_INTENTIONS, rules, n), 0);
	/* web -> api: the L7 intention (exact, exact) denies before * -> api allows */
	CHECK_INT_EQ(authz_decide(p, "web", "api").action, AUTHZ_DENY);
	/* other -> api: * -> api (8) */
	CHECK_INT_EQ(authz_decide(p, "other", "api").action, AUTHZ_ALLOW);
	/* db: nothing known, closed although the default allows */
	CHECK_INT_EQ(authz_decide(p, "other", "db").action, AUTHZ_DENY);
	/* a config rule comes first */
	{
		struct authz_rule cfg = { "web", "api", AUTHZ_ALLOW };

		CHECK_INT_EQ(authz_policy_set_layer(p, AUTHZ_LAYER_CONFIG, &cfg, 1), 0);
		CHECK_INT_EQ(authz_decide(p, "web", "api").action, AUTHZ_ALLOW);
	}
	intentions_rules_free(rules, n);
	authz_policy_unref(p);
	answers[0] = "{\"api\":[]}";
	CHECK_INT_EQ(intentions_compile(svcs, answers, 1, &rules, &n, why, sizeof(why)), 0);
	CHECK_INT_EQ(n, 0); /* known and empty: the default action decides */
	intentions_rules_free(rules, n);
	free(json);
}

TEST(get_url)
{
	char buf[256];

	CHECK(consul_get_url(buf, sizeof(buf), "http://h:8500/", "/v1/agent/connect/ca/roots", 0,
			     0) > 0);
	CHECK_STR_EQ(buf, "http://h:8500/v1/agent/connect/ca/roots");
	CHECK(consul_get_url(buf, sizeof(buf), "http://h:8500", "/v1/agent/connect/ca/roots", 7,
			     30000000000ull) > 0);
	CHECK_STR_EQ(buf, "http://h:8500/v1/agent/connect/ca/roots?index=7&wait=30s");
	CHECK(consul_get_url(buf, sizeof(buf), "http://h:8500",
			     "/v1/connect/intentions/match?by=destination&name=api", 3,
			     1500000000ull) > 0);
	CHECK_STR_EQ(buf, "http://h:8500/v1/connect/intentions/match?by=destination&name=api"
			  "&index=3&wait=1500ms");
	CHECK_INT_EQ(consul_get_url(buf, 20, "http://h:8500", "/v1/agent/connect/ca/roots", 0, 0),
		     -ENAMETOOLONG);
}
