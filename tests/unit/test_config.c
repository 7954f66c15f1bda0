/* Config validation: every rule, each asserting the exact JSON path of its problem line. */
#include "config/config_int.h"
#include "config_helpers.h"

#define SVC(extra)                                                                                 \
	"{\"version\":1,\"services\":[{\"name\":\"api\",\"vip\":\"127.77.0.10\",\"port\":80,"      \
	"\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8081}]" extra "}]}"
#define RAW(fields) "{\"version\":1,\"services\":[{" fields "}]}"
#define NAMEVIP "\"name\":\"api\",\"vip\":\"127.77.0.10\",\"port\":80"
#define SVCB(backends) RAW(NAMEVIP ",\"backends\":" backends)
#define BK "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8081}]"
/* mTLS on with its certificate material, for keys that need it (prefix of TOP's extra). */
#define MTLS_ON                                                                                    \
	"\"mtls\":{\"enabled\":true,\"ca_file\":\"/etc/mesh/ca.pem\",\"cert_dir\":\"/etc/mesh\"},"
#define TOP(extra) "{\"version\":1,\"services\":[" BASE_SERVICE "]," extra "}"

TEST(config_minimal_loads)
{
	struct mesh_config *a = MUST_LOAD(MINIMAL, NULL), *b = MUST_LOAD(MINIMAL, NULL);

	if (!a || !b)
		goto out;
	CHECK_INT_EQ(a->version, 1);
	CHECK_INT_EQ(a->n_services, 1);
	CHECK_STR_EQ(a->services[0].name, "api");
	CHECK_INT_EQ(a->services[0].vip.port, 80);
	CHECK_INT_EQ(a->services[0].backends[0].endpoint.port, 8081);
	CHECK_INT_EQ(a->services[0].backends[0].weight, 1);
	CHECK(a->generation > 0);
	CHECK_INT_EQ(b->generation, a->generation + 1);
	CHECK(config_service_find(a, "api") == &a->services[0]);
	CHECK(config_service_find(a, "web") == NULL);
out:
	config_free(a);
	config_free(b);
}

TEST(config_defaults_only)
{
	struct config_errors e = { 0 };
	struct mesh_config *c = config_load_buf(NULL, 0, no_env, &e);

	CHECK(c != NULL);
	if (c) {
		CHECK_INT_EQ(c->load_balancer.algorithm, MESH_LB_LEAST_REQUEST);
		CHECK_INT_EQ(c->circuit_breaker.consecutive_failures, 5);
		CHECK_INT_EQ(c->circuit_breaker.max_open_duration_ns, 300000000000ull);
		CHECK_INT_EQ(c->load_balancer.retry.backoff_base_ns, 25000000ull);
		CHECK_STR_EQ(c->admin_socket, "/run/meshd/admin.sock");
		CHECK_INT_EQ(c->metrics_listen.port, 9464);
		CHECK(c->node_name != NULL);
		CHECK(!c->config_watch);
	}
	config_free(c);
	config_errors_free(&e);
}

TEST(config_unknown_keys_suggest)
{
	EXPECT_ERR(TOP("\"log\":{\"levle\":\"debug\"}"), NULL, "log.levle",
		   "unknown key, did you mean \"level\"?");
	EXPECT_ERR(TOP("\"circuit_braker\":{}"), NULL, "circuit_braker",
		   "did you mean \"circuit_breaker\"?");
	EXPECT_ERR(SVC(",\"circuit_breaker\":{\"windw\":\"1s\"}"), NULL,
		   "services[0].circuit_breaker.windw", "did you mean \"window\"?");
	EXPECT_ERR(SVCB("[{\"address\":\"127.0.0.1\",\"port\":1,\"wieght\":2}]"), NULL,
		   "services[0].backends[0].wieght", "did you mean \"weight\"?");
	EXPECT_ERR(TOP("\"zzzzzzzz\":1"), NULL, "zzzzzzzz", "unknown key (got");
	EXPECT_ERR(TOP("\"log.level\":\"debug\""), NULL, "log.level", "unknown key");
	EXPECT_ERR(TOP("\"lo\\ng\":1"), NULL, "lo?g", "did you mean \"log\"? (got \"lo?g\"");
}

TEST(config_duplicate_key)
{
	EXPECT_ERR(TOP("\"log\":{\"level\":\"debug\",\"level\":\"info\"}"), NULL, "log.level",
		   "duplicate key");
	EXPECT_ERR(TOP("\"log\":{\"level\":\"debug\"},\"log\":{\"format\":\"json\"}"), NULL, "log",
		   "duplicate key (got a second object");
	EXPECT_ERR(TOP("\"services\":[]"), NULL, "services", "duplicate key");
}

TEST(config_wrong_types)
{
	EXPECT_ERR(TOP("\"log\":\"debug\""), NULL, "log",
		   "wrong type (got a scalar, expected an object)");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"consecutive_failures\":\"5\"}"), NULL,
		   "circuit_breaker.consecutive_failures", "wrong type (got \"5\"");
	EXPECT_ERR(TOP("\"config_watch\":1"), NULL, "config_watch", "wrong type");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"window\":10}"), NULL, "circuit_breaker.window",
		   "wrong type");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"services\":\"api\"}}"), NULL,
		   "discovery.consul.services", "wrong type");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"services\":[1]}}"), NULL,
		   "discovery.consul.services[0]", "wrong type");
	EXPECT_ERR("{\"version\":1,\"services\":{}}", NULL, "services", "wrong type");
	EXPECT_ERR("{\"version\":1,\"services\":[3]}", NULL, "services[0]", "wrong type");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"consecutive_failures\":2.5}"), NULL,
		   "circuit_breaker.consecutive_failures", "not an integer");
}

TEST(config_out_of_range)
{
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"consecutive_failures\":0}"), NULL,
		   "circuit_breaker.consecutive_failures",
		   "out of range (got 0, expected an integer in 1..1000)");
	EXPECT_ERR(TOP("\"load_balancer\":{\"retry\":{\"budget_percent\":101}}"), NULL,
		   "load_balancer.retry.budget_percent", "out of range (got 101");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"max_ejection_percent\":-1}"), NULL,
		   "circuit_breaker.max_ejection_percent", "out of range");
	EXPECT_ERR(RAW("\"name\":\"api\",\"vip\":\"127.77.0.10\",\"port\":70000," BK), NULL,
		   "services[0].port", "out of range (got 70000");
	EXPECT_ERR(SVCB("[{\"address\":\"127.0.0.1\",\"port\":0}]"), NULL,
		   "services[0].backends[0].port", "out of range");
	EXPECT_ERR(TOP("\"load_balancer\":{\"choice_count\":17}"), NULL,
		   "load_balancer.choice_count", "out of range");
	EXPECT_ERR(
	    TOP("\"circuit_breaker\":{\"window\":\"2h\"}"), NULL, "circuit_breaker.window",
	    "out of range (got \"2h\", expected a duration like 250ms, 10s, 5m, 1h in 1s..1h)");
}

TEST(config_thresholds_at_least_one)
{
	EXPECT_ERR(TOP("\"load_balancer\":{\"health_check\":{\"unhealthy_threshold\":0}}"), NULL,
		   "load_balancer.health_check.unhealthy_threshold", "out of range");
	EXPECT_ERR(TOP("\"load_balancer\":{\"health_check\":{\"healthy_threshold\":0}}"), NULL,
		   "load_balancer.health_check.healthy_threshold", "out of range");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"request_volume_threshold\":0}"), NULL,
		   "circuit_breaker.request_volume_threshold", "out of range");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"half_open_probes\":0}"), NULL,
		   "circuit_breaker.half_open_probes", "out of range");
}

TEST(config_ratios)
{
	EXPECT_ERR(TOP("\"load_balancer\":{\"panic_threshold\":1.5}"), NULL,
		   "load_balancer.panic_threshold", "ratio outside 0..1 (got 1.5");
	EXPECT_ERR(TOP("\"circuit_breaker\":{\"error_rate_threshold\":-0.1}"), NULL,
		   "circuit_breaker.error_rate_threshold", "ratio outside 0..1");
	EXPECT_ERR(SVC(",\"circuit_breaker\":{\"error_rate_threshold\":2}"), NULL,
		   "services[0].circuit_breaker.error_rate_threshold", "ratio outside 0..1");
}

TEST(config_bad_durations)
{
	const char *bad[] = { "10 s", "5", "1m30", "ms", "-1s", "1d", "1.5s", "", "99999999999h" };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *j = fmt_json(TOP("\"circuit_breaker\":{\"open_duration\":\"%s\"}"), bad[i]);

		EXPECT_ERR(j, NULL, "circuit_breaker.open_duration", "invalid duration");
		free(j);
	}
}

TEST(config_bad_addresses)
{
	EXPECT_ERR(TOP("\"telemetry\":{\"metrics_listen\":\"localhost:9464\"}"), NULL,
		   "telemetry.metrics_listen", "invalid address (got \"localhost:9464\"");
	EXPECT_ERR(TOP("\"mtls\":{\"inbound_listen\":\"[::1]15008\"}"), NULL, "mtls.inbound_listen",
		   "invalid address");
	EXPECT_ERR(TOP("\"mtls\":{\"outbound_listen\":\"127.0.0.1:0\"}"), NULL,
		   "mtls.outbound_listen", "invalid address");
	EXPECT_ERR(RAW("\"name\":\"api\",\"vip\":\"300.1.1.1\",\"port\":80," BK), NULL,
		   "services[0].vip", "invalid address");
	EXPECT_ERR(SVCB("[{\"address\":\"127.0.0.1:80\",\"port\":1}]"), NULL,
		   "services[0].backends[0].address", "invalid address");
	EXPECT_ERR(TOP("\"discovery\":{\"dns\":{\"servers\":[\"127.0.0.1\"]}}"), NULL,
		   "discovery.dns.servers[0]", "invalid address");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"address\":\"ftp://127.0.0.1\"}}"), NULL,
		   "discovery.consul.address", "invalid URL");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"address\":\"http://:8500\"}}"), NULL,
		   "discovery.consul.address", "invalid URL");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"address\":\"http://h:99999\"}}"), NULL,
		   "discovery.consul.address", "invalid URL");
	EXPECT_ERR(TOP("\"state_dir\":\"relative/dir\""), NULL, "state_dir",
		   "not an absolute path");
	EXPECT_ERR(TOP("\"node\":{\"name\":\"a\\nb\"}"), NULL, "node.name",
		   "contains a control character");
}

TEST(config_bad_enums)
{
	EXPECT_ERR(TOP("\"load_balancer\":{\"algorithm\":\"fastest\"}"), NULL,
		   "load_balancer.algorithm",
		   "unknown value (got \"fastest\", expected one of "
		   "random|round_robin|least_request|weighted|maglev|peak_ewma)");
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"etcd\"}"), NULL, "discovery.backend",
		   "unknown value");
	EXPECT_ERR(TOP("\"preset\":\"staging\""), NULL, "preset", "unknown value");
	EXPECT_ERR(TOP("\"authorization\":{\"rules\":[{\"source\":\"*\",\"destination\":\"*\","
		       "\"action\":\"maybe\"}]}"),
		   NULL, "authorization.rules[0].action", "unknown value");
}

TEST(config_missing_required)
{
	EXPECT_ERR("{\"services\":[" BASE_SERVICE "]}", NULL, "version",
		   "missing required key (got nothing, expected 1)");
	EXPECT_ERR("{\"version\":1,\"services\":[{\"vip\":\"127.77.0.10\",\"port\":80,"
		   "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":1}]}]}",
		   NULL, "services[0].name", "missing required key");
	EXPECT_ERR("{\"version\":1,\"services\":[{\"name\":\"a\",\"port\":80,"
		   "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":1}]}]}",
		   NULL, "services[0].vip", "missing required key");
	EXPECT_ERR("{\"version\":1,\"services\":[{\"name\":\"a\",\"vip\":\"127.77.0.1\","
		   "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":1}]}]}",
		   NULL, "services[0].port", "missing required key");
	EXPECT_ERR(SVCB("[{\"port\":1}]"), NULL, "services[0].backends[0].address",
		   "missing required key");
	EXPECT_ERR(SVCB("[{\"address\":\"::1\"}]"), NULL, "services[0].backends[0].port",
		   "missing required key");
	EXPECT_ERR(
	    SVCB("[]"), NULL, "services[0].backends",
	    "no backends (got 0, expected at least one backend with discovery.backend static)");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\"}]"), NULL, "identities[0].service",
		   "missing required key");
}

TEST(config_service_names)
{
	const char *bad[] = {
		"API", "-api", "api-",
		"a_b", "a.b",  "a123456789012345678901234567890123456789012345678901234567890123"
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *j =
		    fmt_json("{\"version\":1,\"services\":[{\"name\":\"%s\",\"vip\":\"127.77.0.1\","
			     "\"port\":80,\"backends\":[{\"address\":\"127.0.0.1\",\"port\":1}]}]}",
			     bad[i]);
		EXPECT_ERR(j, NULL, "services[0].name", "invalid name");
		free(j);
	}
	config_free(MUST_LOAD("{\"version\":1,\"services\":[{\"name\":\"a-1-b\",\"vip\":"
			      "\"127.77.0.1\",\"port\":80,\"backends\":[{\"address\":\"::1\","
			      "\"port\":1}]}]}",
			      NULL));
}

#define TWO(n2, vip2, port2)                                                                       \
	"{\"version\":1,\"services\":[" BASE_SERVICE ",{\"name\":\"" n2 "\",\"vip\":\"" vip2       \
	"\",\"port\":" port2 ",\"backends\":[{\"address\":\"127.0.0.1\",\"port\":9}]}]}"

TEST(config_duplicates)
{
	struct mesh_config *c;

	EXPECT_ERR(TWO("api", "127.77.0.11", "80"), NULL, "services[1].name",
		   "duplicate service name (got \"api\", expected a name not used by services[0])");
	EXPECT_ERR(TWO("web", "127.77.0.10", "80"), NULL, "services[1].vip",
		   "VIP, port and protocol already used (got 127.77.0.10:80");
	c = MUST_LOAD(TWO("web", "127.77.0.10", "81"), NULL);
	config_free(c);
	EXPECT_ERR(SVCB("[{\"address\":\"127.0.0.1\",\"port\":1},"
			"{\"address\":\"127.0.0.1\",\"port\":1}]"),
		   NULL, "services[0].backends[1]", "duplicate backend");
}

TEST(config_cross_field)
{
	EXPECT_ERR(
	    TOP("\"load_balancer\":{\"retry\":{\"backoff_base\":\"2s\",\"backoff_max\":\"1s\"}}"),
	    NULL, "load_balancer.retry.backoff_base",
	    "must be at most load_balancer.retry.backoff_max (got 2s, expected at most 1s)");
	EXPECT_ERR(
	    TOP("\"circuit_breaker\":{\"open_duration\":\"10m\",\"max_open_duration\":\"5m\"}"),
	    NULL, "circuit_breaker.open_duration", "at most circuit_breaker.max_open_duration");
	EXPECT_ERR(
	    TOP("\"load_balancer\":{\"health_check\":{\"interval\":\"1s\",\"timeout\":\"1s\"}}"),
	    NULL, "load_balancer.health_check.timeout",
	    "must be below load_balancer.health_check.interval");
	EXPECT_ERR(SVC(",\"load_balancer\":{\"retry\":{\"backoff_base\":\"300ms\"}}"), NULL,
		   "services[0].load_balancer.retry.backoff_base", "must be at most");
	EXPECT_ERR(SVC(",\"circuit_breaker\":{\"max_open_duration\":\"1s\"}"), NULL,
		   "services[0].circuit_breaker.open_duration", "must be at most");
	EXPECT_ERR(
	    TOP("\"load_balancer\":{\"health_check\":{\"type\":\"http\",\"http_path\":\"\"}}"),
	    NULL, "load_balancer.health_check.http_path", "required for http checks");
	/* A check of type none has no timeout rule. */
	config_free(MUST_LOAD(TOP("\"load_balancer\":{\"health_check\":{\"type\":\"none\","
				  "\"interval\":\"1s\",\"timeout\":\"2s\"}}"),
			      NULL));
}

TEST(config_cross_field_reported_once)
{
	struct config_errors e = { 0 };
	const char *j = "{\"version\":1,\"circuit_breaker\":{\"open_duration\":\"10m\"},"
			"\"services\":[" BASE_SERVICE "]}";

	CHECK(load_env(j, NULL, &e) == NULL);
	CHECK_INT_EQ(e.n, 1);
	CHECK(find_err(&e, "circuit_breaker.open_duration", "at most") == 0);
	config_errors_free(&e);
}

TEST(config_discovery_needs_settings)
{
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"consul\"}"), NULL, "discovery.consul.address",
		   "required when discovery.backend is consul");
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"dns\"}"), NULL, "discovery.dns.servers",
		   "required when discovery.backend is dns");
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"dns\"}"), NULL, "discovery.dns.services",
		   "required when discovery.backend is dns");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"services\":[\"web\"]}}"), NULL,
		   "discovery.consul.services[0]", "unknown service (got \"web\"");
	EXPECT_ERR(
	    TOP("\"discovery\":{\"dns\":{\"services\":[{\"name\":\"web\",\"srv\":\"_w\"}]}}"), NULL,
	    "discovery.dns.services[0].name", "unknown service");
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"register\":[{\"name\":\"api\"}]}}"), NULL,
		   "discovery.consul.register[0].address", "missing required key");
#define REG(x)                                                                                     \
	TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"              \
	    "127.0.0.1:8500\","                                                                    \
	    "\"register\":[{\"name\":\"api\",\"address\":\"127.0.0.1:80\"," x "}]}}")
	EXPECT_ERR(REG("\"meta\":[\"novalue\"]"), NULL, "discovery.consul.register[0].meta[0]",
		   "invalid pair (got \"novalue\", expected a key=value string)");
	EXPECT_ERR(REG("\"meta\":[\"consul-x=1\"]"), NULL, "discovery.consul.register[0].meta[0]",
		   "without the prefix 'consul-'");
	EXPECT_ERR(REG("\"meta\":[\"ok=1\",\"mesh-port=1\"]"), NULL,
		   "discovery.consul.register[0].meta[1]", "meshd sets them");
	EXPECT_ERR(REG("\"meta\":[\"a b=1\"]"), NULL, "discovery.consul.register[0].meta[0]",
		   "letters, digits");
	EXPECT_ERR(REG("\"check\":{\"type\":\"http\",\"interval\":\"1s\",\"timeout\":\"2s\"}"),
		   NULL, "discovery.consul.register[0].check.timeout",
		   "must be below check.interval");
	EXPECT_ERR(REG("\"check\":{\"type\":\"grpc\"}"), NULL,
		   "discovery.consul.register[0].check.type", "grpc");
#undef REG
#define FO(x)                                                                                      \
	TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"              \
	    "127.0.0.1:8500\","                                                                    \
	    "\"datacenter\":\"dc1\",\"services\":[\"api\"],\"failover\":[" x "]}}")
	EXPECT_ERR(FO("{\"service\":\"web\",\"datacenters\":[\"dc2\"]}"), NULL,
		   "discovery.consul.failover[0].service", "not watched (got \"web\"");
	EXPECT_ERR(FO("{\"service\":\"api\",\"datacenters\":[\"dc1\"]}"), NULL,
		   "discovery.consul.failover[0].datacenters[0]", "not another datacenter");
	EXPECT_ERR(FO("{\"service\":\"api\",\"datacenters\":[\"dc2\"]},"
		      "{\"service\":\"api\",\"datacenters\":[\"dc3\"]}"),
		   NULL, "discovery.consul.failover[1].service", "listed twice");
	EXPECT_ERR(FO("{\"service\":\"api\"}"), NULL, "discovery.consul.failover[0].datacenters",
		   "missing required key");
#undef FO
	/* a section of another discovery backend would do nothing */
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"services\":[\"api\"],\"wait\":\"5m\"}}"), NULL,
		   "discovery.consul.services",
		   "unused with discovery.backend static (got \"api\", expected it only with "
		   "discovery.backend consul, or [])");
	EXPECT_ERR(TOP("\"discovery\":{\"dns\":{\"min_ttl\":\"2s\"}}"), NULL,
		   "discovery.dns.min_ttl", "unused with discovery.backend static");
	/* catalog discovery: only with the consul backend, and a tag that is a DNS label */
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"catalog\":{\"enabled\":true}}}"), NULL,
		   "discovery.consul.catalog.enabled", "unused with discovery.backend static");
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
		       "127.0.0.1:8500\",\"catalog\":{\"enabled\":true,\"tag\":\"Mesh\"}}}"),
		   NULL, "discovery.consul.catalog.tag", "expected a lowercase DNS label");
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
		       "127.0.0.1:8500\",\"catalog\":{\"tag\":\"prod\"}}}"),
		   NULL, "discovery.consul.catalog.tag",
		   "unused while discovery.consul.catalog.enabled is false");
	EXPECT_ERR(TOP("\"discovery\":{\"backend\":\"dns\",\"dns\":{\"servers\":[\"127.0.0.1:53\"],"
		       "\"min_ttl\":\"10m\",\"services\":[{\"name\":\"api\",\"srv\":\"_a\"}]}}"),
		   NULL, "discovery.dns.min_ttl", "must be at most discovery.dns.max_ttl");
	{ /* the resolver's servers serve Consul host-name instances too */
		struct mesh_config *c = MUST_LOAD(
		    TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":"
			"\"http://127.0.0.1:8500\"},\"dns\":{\"servers\":[\"127.0.0.1:53\"]}}"),
		    NULL);

		CHECK(c && c->dns.n_servers == 1);
		config_free(c);
	}
	{
		struct mesh_config *c = MUST_LOAD(
		    TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":"
			"\"http://[::1]:8500\",\"register\":[{\"name\":\"api\","
			"\"address\":\"127.0.0.1:8081\"},{\"name\":\"api\",\"id\":\"api-2\","
			"\"address\":\"[::1]:8082\"}]}}"),
		    NULL);

		CHECK(c && c->consul.n_reg == 2);
		if (c && c->consul.n_reg == 2) {
			CHECK_STR_EQ(c->consul.reg[0].id, "api");
			CHECK_STR_EQ(c->consul.reg[1].id, "api-2");
			CHECK_INT_EQ(c->consul.reg[1].endpoint.port, 8082);
		}
		config_free(c);
	}
	/* Services without static backends are fine when Consul provides them. */
	config_free(
	    MUST_LOAD("{\"version\":1,\"discovery\":{\"backend\":\"consul\",\"consul\":"
		      "{\"address\":\"https://[::1]:8501/\",\"services\":[\"api\"]}},"
		      "\"services\":[{\"name\":\"api\",\"vip\":\"127.77.0.10\",\"port\":80}]}",
		      NULL));
}

TEST(config_mtls_material)
{
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true}"), NULL, "mtls.ca_file",
		   "required when mtls.enabled is true and mtls.cert_source is files");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true}"), NULL, "mtls.cert_dir", "required");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"cert_source\":\"consul\"}"), NULL,
		   "discovery.consul.address", "required when mtls.cert_source is consul");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"cert_source\":\"consul\","
		       "\"trust_domain\":\"x.consul\"},\"discovery\":{\"consul\":"
		       "{\"address\":\"http://127.0.0.1:8500\"}}"),
		   NULL, "mtls.trust_domain", "unused with mtls.cert_source consul");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"cert_source\":\"consul\","
		       "\"ca_file\":\"/etc/ca.pem\"},\"discovery\":{\"consul\":"
		       "{\"address\":\"http://127.0.0.1:8500\"}}"),
		   NULL, "mtls.ca_file",
		   "unused with mtls.cert_source consul (got \"/etc/ca.pem\"");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"ca_file\":\"/etc/ca.pem\","
		       "\"cert_dir\":\"/etc/certs\"},\"authorization\":{\"intentions\":true}"),
		   NULL, "discovery.consul.address", "required when authorization.intentions");
	/* The agent's keys are used by the Connect CA with the static backend. */
	config_free(
	    MUST_LOAD(TOP("\"mtls\":{\"enabled\":true,\"cert_source\":\"consul\"},"
			  "\"discovery\":{\"consul\":{\"address\":\"http://127.0.0.1:8500\","
			  "\"wait\":\"30s\"}},\"authorization\":{\"intentions\":true}"),
		      NULL));
	EXPECT_ERR(TOP("\"discovery\":{\"consul\":{\"address\":\"http://127.0.0.1:8500\"}}"), NULL,
		   "discovery.consul.address", "unused with discovery.backend static");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"cert_source\":\"builtin_ca\","
		       "\"ca_file\":\"/etc/ca.pem\"}"),
		   NULL, "mtls.ca_key_file",
		   "required when mtls.enabled is true and mtls.cert_source is builtin_ca");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"ca_file\":\"/etc/ca.pem\","
		       "\"cert_dir\":\"/etc/certs\",\"outbound_listen\":\"[::1]:15001\"}"),
		   NULL, "mtls.outbound_listen", "not an IPv4 address with a port");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":true,\"cert_source\":\"builtin_ca\","
		       "\"trust_domain\":\"Mesh Local\"}"),
		   NULL, "mtls.trust_domain", "invalid trust domain");
	EXPECT_ERR(SVC(",\"mtls\":true"), NULL, "services[0].mtls",
		   "mTLS requested but mtls.enabled is false");
	config_free(MUST_LOAD(TOP("\"mtls\":{\"enabled\":true,\"ca_file\":\"/etc/ca.pem\","
				  "\"cert_dir\":\"/etc/certs\"}"),
			      NULL));
}

/* A service follows mtls.enabled unless it says otherwise: `mtls: false` opts it out. */
TEST(config_service_mtls_follows_enabled)
{
	const char *on = "\"mtls\":{\"enabled\":true,\"ca_file\":\"/etc/ca.pem\","
			 "\"cert_dir\":\"/etc/certs\"}";
	char json[1024];
	struct mesh_config *c;

	snprintf(json, sizeof(json),
		 "{\"version\":1,%s,\"services\":[{\"name\":\"a\",\"vip\":\"127.77.0.1\","
		 "\"port\":80,\"backends\":[{\"address\":\"127.0.0.1\",\"port\":81}]},"
		 "{\"name\":\"b\",\"vip\":\"127.77.0.2\",\"port\":80,\"mtls\":false,"
		 "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":82}]}]}",
		 on);
	c = MUST_LOAD(json, NULL);
	if (c) {
		CHECK(c->services[0].mtls);
		CHECK(!c->services[1].mtls);
	}
	config_free(c);
	c = MUST_LOAD(TOP("\"mtls\":{\"enabled\":false}"), NULL);
	if (c)
		CHECK(!c->services[0].mtls);
	config_free(c);
}

TEST(config_identities_and_rules)
{
	struct mesh_config *c;

	EXPECT_ERR(TOP("\"authorization\":{\"rules\":[{\"source\":\"Web!\",\"destination\":"
		       "\"api\"}]}"),
		   NULL, "authorization.rules[0].source", "invalid service name (got \"Web!\"");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\",\"service\":\"web\"},"
		       "{\"cgroup\":\"/a/b\",\"service\":\"db\"}]"),
		   NULL, "identities[1].cgroup", "inside identities[0].cgroup");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\",\"service\":\"web\",\"ports\":[80]},"
		       "{\"cgroup\":\"/b\",\"service\":\"db\",\"ports\":[81,80]}]"),
		   NULL, "identities[1].ports[1]", "port already serves identities[0].service");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\",\"service\":\"web\",\"ports\":[0]}]"),
		   NULL, "identities[0].ports[0]", "out of range");
	EXPECT_ERR(
	    TOP("\"authorization\":{\"rules\":[{\"source\":\"api\",\"destination\":\"db\"}]}"),
	    NULL, "authorization.rules[0].destination", "unknown service (got \"db\"");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\",\"service\":\"web\"},"
		       "{\"cgroup\":\"/a\",\"service\":\"db\"}]"),
		   NULL, "identities[1].cgroup", "duplicate cgroup");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\",\"service\":\"Web\"}]"), NULL,
		   "identities[0].service", "invalid name");
	/* Sources are remote identities: any service name goes (here "billing", unknown). */
	c = MUST_LOAD(TOP(MTLS_ON "\"identities\":[{\"cgroup\":\"/system.slice/web.service\","
				  "\"service\":\"web\",\"ports\":[8080,8081]},{\"cgroup\":\"/a\","
				  "\"service\":\"web\"}],\"authorization\":{\"rules\":["
				  "{\"source\":\"billing\",\"destination\":\"web\"},"
				  "{\"source\":\"*\",\"destination\":\"*\",\"action\":\"deny\"}]}"),
		      NULL);
	if (c) {
		CHECK_INT_EQ(c->identities[0].n_ports, 2);
		CHECK_INT_EQ(c->identities[0].ports[1], 8081);
		CHECK_INT_EQ(c->identities[1].n_ports, 0);
		CHECK_INT_EQ(c->n_authz_rules, 2);
		CHECK_INT_EQ(c->authz_rules[0].action, CONFIG_ACTION_ALLOW);
		CHECK_INT_EQ(c->authz_rules[1].action, CONFIG_ACTION_DENY);
		CHECK_INT_EQ(c->authz_default, CONFIG_ACTION_DENY);
	}
	config_free(c);
}

/* Keys under a switch (cfg_key.gate) set while it is off would do nothing: refused, naming the
 * switch, from the file and from the environment; accepted at their default, with the switch
 * on, and from a preset the user switched off. */
TEST(config_gated_keys_refused_while_switch_off)
{
	char *busy_env[] = { "MESH_MTLS__BUSY_POLL=300us", NULL };
	char *off_env[] = { "MESH_MTLS__ENABLED=false", NULL };
	struct mesh_config *c;

	EXPECT_ERR(TOP("\"mtls\":{\"busy_poll\":\"300us\"}"), NULL, "mtls.busy_poll",
		   "unused while mtls.enabled is false (got 300us, expected it only with "
		   "mtls.enabled true, or 0s)");
	EXPECT_ERR(TOP("\"mtls\":{\"enabled\":false,\"outbound_listen\":\"127.0.0.1:15011\"}"),
		   NULL, "mtls.outbound_listen", "unused while mtls.enabled is false");
	EXPECT_ERR(TOP("\"identities\":[{\"cgroup\":\"/a\",\"service\":\"web\"}]"), NULL,
		   "identities", "unused while mtls.enabled is false (got 1 entry");
	EXPECT_ERR(TOP("\"authorization\":{\"default_action\":\"allow\"}"), NULL,
		   "authorization.default_action", "unused while mtls.enabled is false");
	EXPECT_ERR(TOP("\"telemetry\":{\"tracing\":{\"sample_ratio\":0.5}}"), NULL,
		   "telemetry.tracing.sample_ratio",
		   "unused while telemetry.tracing.endpoint is unset (got 0.5, expected it only "
		   "with telemetry.tracing.endpoint set, or 0.01)");
	EXPECT_ERR(TOP("\"log\":{\"level\":\"info\"}"), busy_env, "mtls.busy_poll",
		   "unused while mtls.enabled is false");
	/* at the default, or with the switch on: accepted */
	config_free(MUST_LOAD(TOP("\"mtls\":{\"enabled\":false,\"busy_poll\":\"0\"},"
				  "\"telemetry\":{\"tracing\":{\"sample_ratio\":0.01}}"),
			      NULL));
	c = MUST_LOAD(TOP(MTLS_ON "\"telemetry\":{\"tracing\":{\"endpoint\":"
				  "\"http://127.0.0.1:4318/v1/traces\",\"sample_ratio\":0.5}}"),
		      busy_env);
	if (c)
		CHECK_INT_EQ(c->mtls.busy_poll_ns, 300000);
	config_free(c);
	/* the production preset turns mTLS and strict_inbound on; switched off, its own values
	 * under the switch are not the user's and stay accepted */
	c = MUST_LOAD(TOP("\"preset\":\"production\""), off_env);
	if (c)
		CHECK(!c->mtls.enabled && c->mtls.strict_inbound);
	config_free(c);
}

/* mtls.workers needs a restart, except in a reload that turns mTLS on or off (the proxy starts
 * or stops whole). */
TEST(config_restart_keys_under_a_switch)
{
	struct mesh_config *on2 = MUST_LOAD(TOP(MTLS_ON "\"log\":{}"), NULL), *on4, *off;
	char *w4[] = { "MESH_MTLS__WORKERS=4", NULL };
	const char *paths[4];

	on4 = MUST_LOAD(TOP(MTLS_ON "\"log\":{}"), w4);
	off = MUST_LOAD(TOP("\"log\":{}"), NULL);
	if (on2 && on4 && off) {
		CHECK_INT_EQ(config_restart_changes(on2, on4, paths, 4), 1);
		CHECK(!strcmp(paths[0], "mtls.workers"));
		CHECK_INT_EQ(config_restart_changes(on4, off, paths, 4), 0);
		CHECK_INT_EQ(config_restart_changes(off, on4, paths, 4), 0);
	}
	config_free(on2);
	config_free(on4);
	config_free(off);
}

TEST(config_all_problems_at_once)
{
	struct config_errors e = { 0 };
	const char *j =
	    "{\"version\":1,\"log\":{\"level\":\"loud\",\"fromat\":\"json\"},"
	    "\"load_balancer\":{\"panic_threshold\":7},"
	    "\"circuit_breaker\":{\"window\":\"soon\"},"
	    "\"services\":[{\"name\":\"API\",\"vip\":\"x\",\"port\":80,\"backends\":[]}]}";

	CHECK(load_env(j, NULL, &e) == NULL);
	CHECK(find_err(&e, "log.level", "unknown value") >= 0);
	CHECK(find_err(&e, "log.fromat", "did you mean \"format\"") >= 0);
	CHECK(find_err(&e, "load_balancer.panic_threshold", "ratio") >= 0);
	CHECK(find_err(&e, "circuit_breaker.window", "invalid duration") >= 0);
	CHECK(find_err(&e, "services[0].name", "invalid name") >= 0);
	CHECK(find_err(&e, "services[0].vip", "invalid address") >= 0);
	CHECK(find_err(&e, "services[0].backends", "no backends") >= 0);
	CHECK_INT_EQ(e.n, 7);
	config_errors_free(&e);
}

TEST(config_bad_json)
{
	EXPECT_ERR("{\"version\":1,", NULL, "(root)", "invalid JSON at line 1");
	EXPECT_ERR("{\"version\":1,\n\"log\": {]}", NULL, "(root)", "invalid JSON at line 2");
	EXPECT_ERR("[1,2]", NULL, "(root)", "wrong type (got a JSON array");
	EXPECT_ERR("{\"version\":1} x", NULL, "(root)", "invalid JSON");
	EXPECT_ERR("", NULL, "(root)", "invalid JSON");
}

TEST(config_error_line_form)
{
	struct config_errors e = { 0 };
	size_t i;

	CHECK(load_env(TOP("\"circuit_breaker\":{\"consecutive_failures\":0},\"log\":{\"x\":1}"),
		       NULL, &e) == NULL);
	CHECK_INT_EQ(e.n, 2);
	for (i = 0; i < e.n; i++) {
		CHECK(strstr(e.msgs[i], ": ") != NULL);
		CHECK(strstr(e.msgs[i], " (got ") != NULL);
		CHECK(strstr(e.msgs[i], ", expected ") != NULL);
		CHECK(e.msgs[i][strlen(e.msgs[i]) - 1] == ')');
		CHECK(strchr(e.msgs[i], '\n') == NULL);
	}
	config_errors_free(&e);
}

TEST(config_examples_validate)
{
	const char *files[] = { "config/meshd.json", "config/production.json", "config/demo.json" };
	size_t i;

	for (i = 0; i < 3; i++) {
		struct config_errors e = { 0 };
		struct mesh_config *c = config_load(files[i], no_env, &e);

		if (!c) {
			dump_errs(&e);
			test_fail(__FILE__, __LINE__, "%s does not validate", files[i]);
		}
		config_free(c);
		config_errors_free(&e);
	}
}

TEST(config_demo_values)
{
	struct config_errors e = { 0 };
	struct mesh_config *c = config_load("config/demo.json", no_env, &e);
	const struct config_service *api;

	CHECK(c != NULL);
	if (!c)
		return;
	api = config_service_find(c, "api");
	CHECK(api != NULL);
	if (api) {
		char buf[64];

		CHECK_STR_EQ(config_endpoint_str(&api->vip, buf, sizeof(buf)), "127.77.0.10:80");
		CHECK_INT_EQ(api->n_backends, 3);
		CHECK_INT_EQ(api->backends[2].endpoint.port, 8083);
		CHECK_INT_EQ(api->load_balancer.algorithm, MESH_LB_ROUND_ROBIN);
		CHECK_INT_EQ(api->circuit_breaker.consecutive_failures, 3);
		CHECK_INT_EQ(api->circuit_breaker.open_duration_ns, 2000000000ull);
		CHECK_INT_EQ(api->circuit_breaker.max_open_duration_ns, 20000000000ull);
	}
	CHECK_STR_EQ(c->cgroup, "/sys/fs/cgroup/unified/meshd-demo");
	CHECK_STR_EQ(c->bpf_pin_path, "/sys/fs/bpf/meshd-demo");
	CHECK_STR_EQ(c->state_dir, "/tmp/meshd-demo/state");
	CHECK_STR_EQ(c->admin_socket, "/tmp/meshd-demo/admin.sock");
	CHECK_INT_EQ(c->discovery, CONFIG_DISCOVERY_STATIC);
	config_free(c);
}

TEST(config_unreadable_file)
{
	struct config_errors e = { 0 };

	CHECK(config_load("/nonexistent/meshd.json", no_env, &e) == NULL);
	CHECK_INT_EQ(e.n, 1);
	if (e.n)
		CHECK_CONTAINS(e.msgs[0], "/nonexistent/meshd.json: cannot read the config file");
	config_errors_free(&e);
	CHECK(config_load("/tmp", no_env, &e) == NULL);
	CHECK_INT_EQ(e.n, 1);
	if (e.n)
		CHECK_CONTAINS(e.msgs[0], "/tmp: cannot read the config file (got a directory");
	config_errors_free(&e);
	CHECK(config_load("/dev/null", no_env, &e) == NULL);
	CHECK_INT_EQ(e.n, 1);
	if (e.n)
		CHECK_CONTAINS(e.msgs[0], "(got not a regular file");
	config_errors_free(&e);
}

/* A JSON value of key `k`'s type that differs from its default (lists: one valid element). */
static void other_value(const struct cfg_key *k, char *buf, size_t len)
{
	const char *def = k->def ? k->def : "";
	size_t i;

	switch (k->type) {
	case CT_BOOL:
		snprintf(buf, len, "%s", strcmp(def, "true") ? "true" : "false");
		return;
	case CT_UINT:
	case CT_INT:
	case CT_PORT:
		snprintf(buf, len, "%.0f", atof(def) < k->max ? atof(def) + 1 : k->min);
		return;
	case CT_DURATION:
		snprintf(buf, len, "\"%s\"", strcmp(def, "1s") && k->min <= 1e9 ? "1s" : "2s");
		return;
	case CT_ENUM:
		for (i = 0; k->names[i] && !strcmp(k->names[i], def); i++)
			;
		snprintf(buf, len, "\"%s\"", k->not_yet_value ? k->not_yet_value : k->names[i]);
		return;
	case CT_ENDPOINT:
		snprintf(buf, len, "\"127.0.0.1:1\"");
		return;
	case CT_PATH:
		snprintf(buf, len, "\"/x\"");
		return;
	case CT_STRING:
	case CT_STRLIST:
		snprintf(buf, len, k->type == CT_STRLIST ? "[\"api\"]" : "\"api\"");
		return;
	case CT_EPLIST:
		snprintf(buf, len, "[\"127.0.0.1:53\"]");
		return;
	default: /* CT_LIST: one element with every required key */
		snprintf(buf, len, "[{");
		for (i = 0; i < k->sub->n_keys; i++)
			if (k->sub->keys[i].flags & CF_REQUIRED)
				snprintf(buf + strlen(buf), len - strlen(buf), "%s\"%s\":%s",
					 buf[2] ? "," : "", k->sub->keys[i].path,
					 k->sub->keys[i].type == CT_PATH ? "\"/a\"" : "\"api\"");
		snprintf(buf + strlen(buf), len - strlen(buf), "}]");
		return;
	}
}

/* `{"a":{"b":VALUE}}` for path a.b, as members of the top object (no braces around). */
static void nest(const char *path, const char *value, char *buf, size_t len)
{
	const char *dot = strchr(path, '.');

	if (!dot) {
		snprintf(buf, len, "\"%s\":%s", path, value);
		return;
	}
	snprintf(buf, len, "\"%.*s\":{", (int)(dot - path), path);
	nest(dot + 1, value, buf + strlen(buf), len - strlen(buf));
	snprintf(buf + strlen(buf), len - strlen(buf), "}");
}

/* Every key the table marks as not built is refused when set, globally, per service and from
 * the environment, with a problem line naming it; derived from the table, so a new such key is
 * covered without touching this test. */
TEST(config_not_yet_keys_refused)
{
	char val[256], member[512], json[1024], want[300], var[200], envv[512];
	size_t i, n = 0;

	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];
		char *env[] = { envv, NULL };

		if (!k->not_yet)
			continue;
		n++;
		other_value(k, val, sizeof(val));
		nest(k->path, val, member, sizeof(member));
		snprintf(json, sizeof(json), "{\"version\":1,\"services\":[" BASE_SERVICE "],%s}",
			 member);
		EXPECT_ERR(json, NULL, k->path, "not supported yet: ");
		if (k->type == CT_LIST)
			continue;
		/* the same value from the environment: the JSON text without quotes, brackets */
		size_t e = (size_t)snprintf(envv, sizeof(envv),
					    "%s=", cfg_env_name("", k->path, var, sizeof(var)));
		for (const char *c = val; *c && e + 1 < sizeof(envv); c++)
			if (!strchr("\"[]", *c))
				envv[e++] = *c;
		envv[e] = '\0';
		snprintf(want, sizeof(want), "not supported yet in %s: ", var);
		EXPECT_ERR(MINIMAL, env, k->path, want);
	}
	(void)n; /* none today: the loop keeps the mechanism tested for the next such key */
	for (i = 0; i < cfg_service_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_service_desc.keys[i];

		if (!k->not_yet)
			continue;
		other_value(k, val, sizeof(val));
		nest(k->path, val, member, sizeof(member));
		snprintf(
		    json, sizeof(json),
		    "{\"version\":1,\"services\":[{\"name\":\"api\",\"vip\":\"127.77.0.10\","
		    "\"port\":80,\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8081}],%s}]}",
		    member);
		snprintf(want, sizeof(want), "services[0].%s", k->path);
		EXPECT_ERR(json, NULL, want, "not supported yet: ");
	}
	/* Defaults are accepted: the default config validates. */
	config_free(MUST_LOAD(MINIMAL, NULL));
}

/* No preset value turns on a key that is not built. */
TEST(config_not_yet_keys_have_no_preset)
{
	for (size_t i = 0; i < cfg_root_desc.n_keys; i++)
		if (cfg_root_desc.keys[i].not_yet && cfg_root_desc.keys[i].prod)
			test_fail(__FILE__, __LINE__, "%s: not supported yet but preset to %s",
				  cfg_root_desc.keys[i].path, cfg_root_desc.keys[i].prod);
}

/* Why switch `sw` cannot be a gate (cfg_key.gate): check_gated and cfg_gate_off read "at its
 * default" as off, so the default must be off: a bool defaulting to false, or a text key with no
 * default (unset); NULL when it can. */
static const char *switch_not_off(const struct cfg_key *sw)
{
	if (sw->def_from)
		return "its default is another key's value";
	if (sw->type == CT_BOOL)
		return sw->def && !strcmp(sw->def, "false") ? NULL
							    : "a bool not defaulting to false";
	if (sw->type == CT_STRING || sw->type == CT_PATH || sw->type == CT_URL)
		return !sw->def || !*sw->def ? NULL : "a text key with a default";
	return "neither a bool nor a text key";
}

/* Every gate of the keys of `d` (and of its lists' elements) names a root key that is off by
 * default, and following gates from any key ends (no loop). Returns the gated keys seen. */
static size_t check_gates(const struct cfg_desc *d)
{
	size_t i, hops, n = 0;

	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i], *sw;
		const char *why;

		if (k->type == CT_LIST && k->sub)
			n += check_gates(k->sub);
		if (!k->gate)
			continue;
		n++;
		sw = cfg_find_key(&cfg_root_desc, k->gate, NULL);
		if (!sw)
			test_fail(__FILE__, __LINE__, "%s: gate %s is no root key", k->path,
				  k->gate);
		else if ((why = switch_not_off(sw)))
			test_fail(__FILE__, __LINE__, "%s: gate %s is %s", k->path, sw->path, why);
		for (hops = 0; sw && sw->gate && hops < cfg_root_desc.n_keys; hops++)
			sw = cfg_find_key(&cfg_root_desc, sw->gate, NULL);
		if (sw && sw->gate)
			test_fail(__FILE__, __LINE__, "%s: its gates loop (at %s)", k->path,
				  sw->path);
	}
	return n;
}

/* The gate semantics hold for the whole table (root keys, and through the lists the services
 * and their elements), derived from it so a new gated key or switch is covered without touching
 * this test. */
TEST(config_gates_name_switches_off_by_default)
{
	CHECK(check_gates(&cfg_root_desc) > 0);
}

/* node.datacenter is the default of discovery.consul.datacenter; an explicit one wins. */
TEST(config_consul_datacenter_from_node)
{
	char *env[] = { "MESH_NODE__DATACENTER=eu-2", NULL };
	struct mesh_config *c = MUST_LOAD(MINIMAL, NULL);

	CHECK(c && !strcmp(c->consul.datacenter, "dc1"));
	CHECK_ORIGIN(c, "discovery.consul.datacenter", "dc1", "default");
	config_free(c);
	c = MUST_LOAD(
	    "{\"version\":1,\"node\":{\"datacenter\":\"eu-1\"},\"services\":[" BASE_SERVICE "]}",
	    NULL);
	CHECK(c && !strcmp(c->consul.datacenter, "eu-1"));
	CHECK_ORIGIN(c, "discovery.consul.datacenter", "eu-1", "file");
	config_free(c);
	c = MUST_LOAD("{\"version\":1,\"node\":{\"datacenter\":\"eu-1\"},\"discovery\":{"
		      "\"backend\":\"consul\",\"consul\":{\"address\":\"http://127.0.0.1:1\","
		      "\"datacenter\":\"us-1\"}},\"services\":[" BASE_SERVICE "]}",
		      env);
	CHECK(c && !strcmp(c->consul.datacenter, "us-1") && !strcmp(c->node_datacenter, "eu-2"));
	CHECK_ORIGIN(c, "discovery.consul.datacenter", "us-1", "file");
	config_free(c);
	c = MUST_LOAD(MINIMAL, env);
	CHECK(c && !strcmp(c->consul.datacenter, "eu-2"));
	CHECK_ORIGIN(c, "discovery.consul.datacenter", "eu-2", "env");
	config_free(c);
}

/* `n` services named s0.. on distinct VIPs with `per` backends each, as JSON (caller frees). */
static char *many_services(size_t n, size_t per)
{
	char *p = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&p, &len);
	size_t i, j;

	fprintf(f, "{\"version\":1,\"services\":[");
	for (i = 0; i < n; i++) {
		fprintf(
		    f,
		    "%s{\"name\":\"s%zu\",\"vip\":\"127.%zu.%zu.%zu\",\"port\":80,\"backends\":[",
		    i ? "," : "", i, 100 + i / 65536, i / 256 % 256, i % 256);
		for (j = 0; j < per; j++)
			fprintf(f, "%s{\"address\":\"127.0.0.1\",\"port\":%zu}", j ? "," : "",
				1 + j);
		fprintf(f, "]}");
	}
	fprintf(f, "]}");
	fclose(f);
	return p;
}

/* The datapath's limits (include/mesh_abi.h) are validation rules naming the limit: a config
 * beyond them used to validate and then fail to start (E2BIG, ENOSPC). */
TEST(config_datapath_limits)
{
	char *j = many_services(1, MESH_MAX_BACKENDS_PER_SVC + 1), want[160];
	size_t per = MESH_MAX_BACKENDS_PER_SVC, n = (MESH_DEF_BACKENDS + per - 1) / per;

	snprintf(want, sizeof(want),
		 "too many backends for one service (got %u, expected at most %u",
		 MESH_MAX_BACKENDS_PER_SVC + 1, MESH_MAX_BACKENDS_PER_SVC);
	EXPECT_ERR(j, NULL, "services[0].backends", want);
	free(j);
	j = many_services(1, MESH_MAX_BACKENDS_PER_SVC);
	config_free(MUST_LOAD(j, NULL));
	free(j);
	j = many_services(MESH_DEF_SERVICES + 1, 1);
	snprintf(want, sizeof(want),
		 "too many services for the datapath (got %u, expected at most %u, "
		 "datapath.max_services)",
		 MESH_DEF_SERVICES + 1, MESH_DEF_SERVICES);
	EXPECT_ERR(j, NULL, "services", want);
	free(j);
	j = many_services(MESH_DEF_SERVICES, 1);
	config_free(MUST_LOAD(j, NULL));
	free(j);
	/* the total, when the per-service and service limits allow reaching it */
	if (n <= MESH_DEF_SERVICES) {
		j = many_services(n, per);
		EXPECT_ERR(j, NULL, "services", "too many backends for the datapath (got ");
		free(j);
	}
}
