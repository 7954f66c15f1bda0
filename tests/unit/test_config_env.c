/* MESH_* environment overrides for every value type, per-service overrides by name, precedence
 * (default < preset < file < env), the two presets, and the origin `config show` reports. */
#include "config_helpers.h"

/* What the production preset (mTLS on, cert_source files) needs named. */
#define MTLS_MATERIAL "\"mtls\":{\"ca_file\":\"/etc/ca.pem\",\"cert_dir\":\"/etc/certs\"}"
#define MTLS_ENV "MESH_MTLS__CA_FILE=/etc/ca.pem", "MESH_MTLS__CERT_DIR=/etc/certs"

#define TOP(extra) "{\"version\":1,\"services\":[" BASE_SERVICE "]," extra "}"

TEST(config_env_every_type)
{
	char *env[] = {
		"MESH_CONFIG_WATCH=true",				  /* bool */
		"MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=7",		  /* integer */
		"MESH_LOAD_BALANCER__PANIC_THRESHOLD=0.25",		  /* ratio */
		"MESH_CIRCUIT_BREAKER__MAX_EJECTION_PERCENT=35",	  /* percent */
		"MESH_CIRCUIT_BREAKER__WINDOW=1m30s",			  /* duration */
		"MESH_NODE__NAME=node-7",				  /* string */
		"MESH_STATE_DIR=/tmp/meshd-state",			  /* path */
		"MESH_DISCOVERY__BACKEND=consul",			  /* enum */
		"MESH_DISCOVERY__CONSUL__ADDRESS=https://127.0.0.1:8501", /* url */
		"MESH_TELEMETRY__METRICS_LISTEN=[::1]:9100",		  /* endpoint */
		"MESH_LOG__LEVEL=debug",				  /* enum */
		"MESH_DISCOVERY__CONSUL__SERVICES=api",			  /* string list */
		NULL,
	};
	struct mesh_config *c = MUST_LOAD(MINIMAL, env);
	char buf[64];

	if (!c)
		return;
	CHECK(c->config_watch);
	CHECK_INT_EQ(c->circuit_breaker.consecutive_failures, 7);
	CHECK(c->load_balancer.panic_threshold == 0.25);
	CHECK_INT_EQ(c->circuit_breaker.max_ejection_percent, 35);
	CHECK_INT_EQ(c->circuit_breaker.window_ns, 90000000000ull);
	CHECK_STR_EQ(c->node_name, "node-7");
	CHECK_STR_EQ(c->state_dir, "/tmp/meshd-state");
	CHECK_STR_EQ(c->consul.address, "https://127.0.0.1:8501");
	CHECK_STR_EQ(config_endpoint_str(&c->metrics_listen, buf, sizeof(buf)), "[::1]:9100");
	CHECK_INT_EQ(c->log_level, CONFIG_LOG_DEBUG);
	CHECK_INT_EQ(c->consul.n_services, 1);
	CHECK_STR_EQ(c->consul.services[0], "api");
	/* the service inherits the env-set global breaker value */
	CHECK_INT_EQ(c->services[0].circuit_breaker.consecutive_failures, 7);
	CHECK_ORIGIN(c, "circuit_breaker.window", "1m30s", "env");
	config_free(c);
}

TEST(config_env_bool_forms)
{
	char *t[] = { "MESH_CONFIG_WATCH=1", NULL }, *f[] = { "MESH_CONFIG_WATCH=0", NULL };
	struct mesh_config *c = MUST_LOAD(MINIMAL, t);

	CHECK(c && c->config_watch);
	config_free(c);
	c = MUST_LOAD(TOP("\"config_watch\":true"), f);
	CHECK(c && !c->config_watch);
	config_free(c);
}

TEST(config_env_bad_values_name_the_variable)
{
	char *b[] = { "MESH_CONFIG_WATCH=yes", NULL },
	     *i[] = { "MESH_CIRCUIT_BREAKER__HALF_OPEN_PROBES=x", NULL },
	     *r[] = { "MESH_CIRCUIT_BREAKER__ERROR_RATE_THRESHOLD=1.01", NULL },
	     *d[] = { "MESH_CIRCUIT_BREAKER__WINDOW=ten", NULL },
	     *e[] = { "MESH_TELEMETRY__METRICS_LISTEN=127.0.0.1", NULL },
	     *u[] = { "MESH_DISCOVERY__CONSUL__ADDRESS=127.0.0.1:8500", NULL },
	     *n[] = { "MESH_LOG__FORMAT=yaml", NULL },
	     *l[] = { "MESH_DISCOVERY__DNS__SERVERS=127.0.0.1:53,,[::1]:53", NULL },
	     *p[] = { "MESH_BPF_PIN_PATH=bpf", NULL },
	     *s[] = { "MESH_DISCOVERY__CONSUL__SERVICES=api,Web", NULL },
	     *nl[] = { "MESH_LOG__LEVEL=de\nbug", NULL };

	EXPECT_ERR(MINIMAL, b, "config_watch", "not a boolean in MESH_CONFIG_WATCH (got \"yes\"");
	EXPECT_ERR(MINIMAL, i, "circuit_breaker.half_open_probes",
		   "not a number in MESH_CIRCUIT_BREAKER__HALF_OPEN_PROBES");
	EXPECT_ERR(MINIMAL, r, "circuit_breaker.error_rate_threshold", "ratio outside 0..1 in");
	EXPECT_ERR(MINIMAL, d, "circuit_breaker.window",
		   "invalid duration in MESH_CIRCUIT_BREAKER__WINDOW (got \"ten\"");
	EXPECT_ERR(MINIMAL, e, "telemetry.metrics_listen", "invalid address in");
	EXPECT_ERR(MINIMAL, u, "discovery.consul.address", "invalid URL in");
	EXPECT_ERR(MINIMAL, n, "log.format", "unknown value in MESH_LOG__FORMAT");
	EXPECT_ERR(MINIMAL, l, "discovery.dns.servers[1]", "empty item in");
	EXPECT_ERR(MINIMAL, p, "bpf_pin_path", "not an absolute path in");
	EXPECT_ERR(MINIMAL, s, "discovery.consul.services[1]", "invalid name in");
	EXPECT_ERR(MINIMAL, nl, "log.level", "unknown value in MESH_LOG__LEVEL (got \"de?bug\"");
}

/* Numbers from the environment follow the file's JSON grammar: what strtod alone would take
 * (hex, a plus sign, spaces, leading zeros, inf, nan, a bare dot) is refused, naming the
 * variable; what JSON allows (exponents, -0, fractions of ratios) is taken as in the file. */
TEST(config_env_numbers_as_strict_as_the_file)
{
	static const char *const bad[] = { "0x10", " 5", "5 ",	"+5",  "010", "5.",  ".5",   "inf",
					   "nan",  "1e", "1e+", "--1", "",    "5\t", "0x1p3" };
	static const struct {
		const char *text;
		unsigned want;
	} good[] = { { "16", 16 }, { "1e1", 10 }, { "2E1", 20 }, { "7.0", 7 }, { "1000e-2", 10 } };
	char var[64], *env[] = { var, NULL };
	struct mesh_config *c;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(var, sizeof(var), "MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=%s", bad[i]);
		EXPECT_ERR(MINIMAL, env, "circuit_breaker.consecutive_failures",
			   "not a number in MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES");
	}
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(var, sizeof(var), "MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=%s",
			 good[i].text);
		c = MUST_LOAD(MINIMAL, env);
		CHECK(c && c->circuit_breaker.consecutive_failures == good[i].want);
		config_free(c);
	}
	snprintf(var, sizeof(var), "MESH_LOAD_BALANCER__PANIC_THRESHOLD=.25");
	EXPECT_ERR(MINIMAL, env, "load_balancer.panic_threshold", "not a number in");
	snprintf(var, sizeof(var), "MESH_LOAD_BALANCER__PANIC_THRESHOLD=-0");
	c = MUST_LOAD(MINIMAL, env);
	CHECK(c && c->load_balancer.panic_threshold == 0);
	config_free(c);
}

/* A variable given twice in the environment is refused like a key given twice in the file. */
TEST(config_env_duplicate_variable)
{
	char *env[] = { "MESH_LOG__LEVEL=debug", "PATH=/bin", "MESH_LOG__LEVEL=warn", NULL },
	     *other[] = { "PATH=/bin", "PATH=/usr/bin", "MESH_LOG__LEVEL=warn", NULL };
	struct mesh_config *c;

	EXPECT_ERR(MINIMAL, env, "MESH_LOG__LEVEL",
		   "duplicate variable (got a second value \"warn\", expected one)");
	c = MUST_LOAD(MINIMAL, other); /* not ours: no opinion */
	CHECK(c && c->log_level == CONFIG_LOG_WARN);
	config_free(c);
}

/* cJSON turns \u0000 into a NUL that would cut a name or value ("api\u0000x" loading as
 * "api"): refused wherever it is, while an escaped backslash before u0000 is plain text. */
TEST(config_json_nul_refused)
{
	struct mesh_config *c;

	EXPECT_ERR("{\"version\":1,\"services\":[{\"name\":\"api\\u0000x\",\"vip\":\"127.77.0.10\","
		   "\"port\":80,\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8081}]}]}",
		   NULL, "(root)", "NUL character in a string at line 1 column 38 (got \"\\u0000x");
	EXPECT_ERR(TOP("\"log\\u0000x\":{}"), NULL, "(root)", "NUL character in a string");
	EXPECT_ERR(TOP("\"node\":{\"name\":\"a\\u0000\"}"), NULL, "(root)",
		   "expected text without");
	c = MUST_LOAD(TOP("\"node\":{\"name\":\"a\\\\u0000\"}"), NULL);
	CHECK(c && !strcmp(c->node_name, "a\\u0000"));
	config_free(c);
}

TEST(config_env_unknown_variables)
{
	char *typo[] = { "MESH_LOG__LEVL=debug", NULL }, *sec[] = { "MESH_LOG__COLOR=1", NULL },
	     *other[] = { "MESH_BUILD=build", "MESH_CONFIG=/x.json", "MESHX=1", "PATH=/bin", NULL },
	     *any[] = { "MESH_METRICS_LISTEN=127.0.0.1:1", NULL },
	     *obj[] = { "MESH_SERVICES=api", NULL }, *ver[] = { "MESH_VERSION=2", NULL };
	struct mesh_config *c;

	EXPECT_ERR(MINIMAL, typo, "MESH_LOG__LEVL",
		   "unknown variable, did you mean MESH_LOG__LEVEL?");
	EXPECT_ERR(MINIMAL, sec, "MESH_LOG__COLOR", "unknown variable");
	/* not a key and not close to one: still an error, never silently ignored */
	EXPECT_ERR(MINIMAL, any, "MESH_METRICS_LISTEN",
		   "unknown variable (got \"127.0.0.1:1\", expected a variable listed by meshd "
		   "config env)");
	EXPECT_ERR(MINIMAL, obj, "services", "cannot be set from the environment in MESH_SERVICES");
	EXPECT_ERR(MINIMAL, ver, "version", "cannot be set from the environment");
	c = MUST_LOAD(MINIMAL, other);
	config_free(c);
}

#define TWO_SVCS                                                                                   \
	"{\"version\":1,\"services\":[" BASE_SERVICE                                               \
	",{\"name\":\"my-db\",\"vip\":\"127.77.0.11\","                                            \
	"\"port\":5432,\"backends\":[{\"address\":\"127.0.0.1\",\"port\":5433}],"                  \
	"\"circuit_breaker\":{\"consecutive_failures\":9}}]}"

TEST(config_env_per_service)
{
	char *env[] = { "MESH_SERVICES__API__CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=3",
			"MESH_SERVICES__MY_DB__LOAD_BALANCER__ALGORITHM=maglev",
			"MESH_SERVICES__MY_DB__LOAD_BALANCER__HEALTH_CHECK__HTTP_PATH=/ready",
			"MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=4", NULL };
	struct mesh_config *c = MUST_LOAD(TWO_SVCS, env);

	if (!c)
		return;
	CHECK_INT_EQ(c->circuit_breaker.consecutive_failures, 4);
	CHECK_INT_EQ(c->services[0].circuit_breaker.consecutive_failures, 3);
	/* my-db set 9 in the file; the global env value does not override a service's own key */
	CHECK_INT_EQ(c->services[1].circuit_breaker.consecutive_failures, 9);
	CHECK_INT_EQ(c->services[1].load_balancer.algorithm, MESH_LB_MAGLEV);
	CHECK_INT_EQ(c->services[0].load_balancer.algorithm, MESH_LB_LEAST_REQUEST);
	CHECK_STR_EQ(c->services[1].load_balancer.health_check.http_path, "/ready");
	CHECK_STR_EQ(c->services[0].load_balancer.health_check.http_path, "/health");
	CHECK_ORIGIN(c, "services[0].circuit_breaker.consecutive_failures", "3", "env");
	CHECK_ORIGIN(c, "services[1].circuit_breaker.consecutive_failures", "9", "file");
	CHECK_ORIGIN(c, "services[1].load_balancer.algorithm", "maglev", "env");
	config_free(c);
}

TEST(config_env_per_service_errors)
{
	char *nosvc[] = { "MESH_SERVICES__WEB__CIRCUIT_BREAKER__WINDOW=5s", NULL },
	     *nokey[] = { "MESH_SERVICES__API__CIRCUIT_BREAKER__WINDW=5s", NULL },
	     *bad[] = { "MESH_SERVICES__API__CIRCUIT_BREAKER__WINDOW=5", NULL },
	     *vip[] = { "MESH_SERVICES__API__VIP=127.77.0.99", NULL },
	     *form[] = { "MESH_SERVICES__API=1", NULL };

	EXPECT_ERR(MINIMAL, nosvc, "services",
		   "no such service in MESH_SERVICES__WEB__CIRCUIT_BREAKER__WINDOW (got \"WEB\"");
	EXPECT_ERR(MINIMAL, nokey, "services[0]",
		   "unknown variable MESH_SERVICES__API__CIRCUIT_BREAKER__WINDW, did you mean "
		   "MESH_SERVICES__API__CIRCUIT_BREAKER__WINDOW?");
	EXPECT_ERR(MINIMAL, bad, "services[0].circuit_breaker.window",
		   "invalid duration in MESH_SERVICES__API__CIRCUIT_BREAKER__WINDOW");
	EXPECT_ERR(MINIMAL, vip, "services[0].vip", "cannot be set from the environment");
	EXPECT_ERR(MINIMAL, form, "services", "no such service in MESH_SERVICES__API");
}

TEST(config_service_inherits_key_by_key)
{
	const char *j =
	    "{\"version\":1,\"load_balancer\":{\"algorithm\":\"weighted\","
	    "\"health_check\":{\"interval\":\"10s\"}},\"circuit_breaker\":{\"window\":\"20s\"},"
	    "\"services\":[{\"name\":\"api\",\"vip\":\"127.77.0.10\",\"port\":80,"
	    "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8081,\"weight\":5}],"
	    "\"load_balancer\":{\"health_check\":{\"timeout\":\"2s\"}},"
	    "\"circuit_breaker\":{\"consecutive_failures\":2}}]}";
	struct mesh_config *c = MUST_LOAD(j, NULL);
	const struct config_service *s;

	if (!c)
		return;
	s = &c->services[0];
	CHECK_INT_EQ(s->load_balancer.algorithm, MESH_LB_WEIGHTED);
	CHECK_INT_EQ(s->load_balancer.health_check.timeout_ns, 2000000000ull);
	CHECK_INT_EQ(s->load_balancer.health_check.interval_ns, 10000000000ull);
	CHECK_INT_EQ(s->circuit_breaker.consecutive_failures, 2);
	CHECK_INT_EQ(s->circuit_breaker.window_ns, 20000000000ull);
	CHECK_INT_EQ(s->circuit_breaker.open_duration_ns, 30000000000ull);
	CHECK_INT_EQ(s->backends[0].weight, 5);
	CHECK_INT_EQ(c->load_balancer.health_check.timeout_ns, 1000000000ull);
	CHECK_ORIGIN(c, "services[0].circuit_breaker.window", "20s", "file");
	CHECK_ORIGIN(c, "services[0].circuit_breaker.open_duration", "30s", "default");
	config_free(c);
}

TEST(config_precedence)
{
	char *env_json[] = { "MESH_LOG__FORMAT=json", NULL },
	     *env_prod[] = { "MESH_PRESET=production", "MESH_CONFIG_WATCH=false", MTLS_ENV, NULL };
	struct mesh_config *c;

	/* default */
	c = MUST_LOAD(MINIMAL, NULL);
	CHECK(c && c->log_format == CONFIG_LOG_LOGFMT);
	CHECK_ORIGIN(c, "log.format", "logfmt", "default");
	config_free(c);
	/* preset over default */
	c = MUST_LOAD(TOP("\"preset\":\"production\"," MTLS_MATERIAL), NULL);
	CHECK(c && c->log_format == CONFIG_LOG_JSON);
	CHECK_ORIGIN(c, "log.format", "json", "preset");
	config_free(c);
	/* file over preset */
	c = MUST_LOAD(
	    TOP("\"preset\":\"production\",\"log\":{\"format\":\"logfmt\"}," MTLS_MATERIAL), NULL);
	CHECK(c && c->log_format == CONFIG_LOG_LOGFMT);
	CHECK_ORIGIN(c, "log.format", "logfmt", "file");
	config_free(c);
	/* env over file */
	c = MUST_LOAD(TOP("\"log\":{\"format\":\"logfmt\"}"), env_json);
	CHECK(c && c->log_format == CONFIG_LOG_JSON);
	CHECK_ORIGIN(c, "log.format", "json", "env");
	config_free(c);
	/* env picks the preset too */
	c = MUST_LOAD(MINIMAL, env_prod);
	CHECK(c && c->preset == CONFIG_PRESET_PRODUCTION && c->log_format == CONFIG_LOG_JSON);
	CHECK_ORIGIN(c, "preset", "production", "env");
	CHECK_ORIGIN(c, "config_watch", "false", "env");
	config_free(c);
}

TEST(config_presets)
{
	struct mesh_config *d = MUST_LOAD(MINIMAL, NULL), *p;

	p = MUST_LOAD(TOP("\"preset\":\"production\"," MTLS_MATERIAL), NULL);
	if (!d || !p)
		goto out;
	CHECK_INT_EQ(d->preset, CONFIG_PRESET_DEVELOPMENT);
	CHECK(!d->mtls.enabled && !d->mtls.strict_inbound);
	CHECK_INT_EQ(d->load_balancer.health_check.interval_ns, 5000000000ull);
	CHECK_INT_EQ(p->preset, CONFIG_PRESET_PRODUCTION);
	CHECK(p->mtls.enabled && p->mtls.strict_inbound); /* production turns mTLS on */
	CHECK(p->services[0].mtls);
	CHECK_INT_EQ(p->log_format, CONFIG_LOG_JSON);
	CHECK_INT_EQ(p->load_balancer.health_check.interval_ns, 2000000000ull);
	CHECK_INT_EQ(p->load_balancer.health_check.timeout_ns, 500000000ull);
	CHECK_INT_EQ(p->circuit_breaker.open_duration_ns, 15000000000ull);
	/* services inherit the preset's values too */
	CHECK_INT_EQ(p->services[0].load_balancer.health_check.timeout_ns, 500000000ull);
	CHECK_ORIGIN(p, "load_balancer.health_check.timeout", "500ms", "preset");
	CHECK_ORIGIN(p, "services[0].load_balancer.health_check.timeout", "500ms", "preset");
	CHECK_ORIGIN(p, "log.level", "info", "default");
out:
	config_free(d);
	config_free(p);
}

/* A preset may only change keys that are built: the production preset of a key refused as not
 * supported yet would make the preset itself invalid. (Production turns mTLS on, so it needs the
 * certificate material named.) */
TEST(config_presets_turn_on_nothing_unbuilt)
{
	char *env[] = { "MESH_PRESET=production", MTLS_ENV, NULL };

	config_free(MUST_LOAD(TOP("\"preset\":\"production\"," MTLS_MATERIAL), NULL));
	config_free(MUST_LOAD(MINIMAL, env));
	EXPECT_ERR(TOP("\"preset\":\"production\""), NULL, "mtls.ca_file",
		   "required when mtls.enabled is true");
}

TEST(config_env_list_replaces_file_list)
{
	char *env[] = { "MESH_DISCOVERY__CONSUL__SERVICES=", NULL };
	struct mesh_config *c =
	    MUST_LOAD(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":"
			  "\"http://127.0.0.1:8500\",\"services\":[\"api\"]}}"),
		      env);

	CHECK(c && c->consul.n_services == 0);
	config_free(c);
}
