/* Config parsers, secret files, diff, versions and migrations, `config show -o json` round trip,
 * admin JSON redaction and the env/docs listings. Secret tests use files under a mkdtemp dir. */
#include <cjson/cJSON.h>
#include <arpa/inet.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"
#include "config_helpers.h"

#define TOP(extra) "{\"version\":1,\"services\":[" BASE_SERVICE "]," extra "}"

TEST(config_parse_durations)
{
	static const struct {
		const char *s;
		uint64_t ns;
	} ok[] = { { "250ms", 250000000ull },
		   { "10s", 10000000000ull },
		   { "5m", 300000000000ull },
		   { "1h", 3600000000000ull },
		   { "1m30s", 90000000000ull },
		   { "0", 0 },
		   { "1h2m3s4ms", 3723004000000ull },
		   { "7us", 7000 },
		   { "9ns", 9 } };
	const char *bad[] = { "",
			      "s",
			      "10",
			      "10 s",
			      "1.5s",
			      "-1s",
			      "1d",
			      "5sm",
			      "99999999999999999999s",
			      "18446744073709551615h" };
	char buf[32];
	uint64_t ns;
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		CHECK_INT_EQ(config_parse_duration(ok[i].s, &ns), 0);
		CHECK_INT_EQ(ns, ok[i].ns);
		/* formatting gives back a string that parses to the same value */
		CHECK_INT_EQ(config_parse_duration(cfg_duration_str(ns, buf, sizeof(buf)), &ns), 0);
		CHECK_INT_EQ(ns, ok[i].ns);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT_EQ(config_parse_duration(bad[i], &ns), -EINVAL);
	CHECK_STR_EQ(cfg_duration_str(90000000000ull, buf, sizeof(buf)), "1m30s");
	CHECK_STR_EQ(cfg_duration_str(300000000000ull, buf, sizeof(buf)), "5m");
	CHECK_STR_EQ(cfg_duration_str(1500000000ull, buf, sizeof(buf)), "1500ms");
}

TEST(config_parse_endpoints)
{
	const char *bad[] = {
		"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "localhost:80",
		"::1:80",    "[::1]",	   "[::1]:x",	  "[127.0.0.1]:80",  "1.2.3.4:80x",
		""
	};
	struct config_endpoint ep;
	char buf[64];
	size_t i;

	CHECK_INT_EQ(config_parse_endpoint("127.0.0.1:8081", &ep), 0);
	CHECK_INT_EQ(ep.family, AF_INET);
	CHECK_INT_EQ(ep.port, 8081);
	CHECK_STR_EQ(config_endpoint_str(&ep, buf, sizeof(buf)), "127.0.0.1:8081");
	CHECK_INT_EQ(config_parse_endpoint("[::1]:65535", &ep), 0);
	CHECK_INT_EQ(ep.family, AF_INET6);
	CHECK_STR_EQ(config_endpoint_str(&ep, buf, sizeof(buf)), "[::1]:65535");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT_EQ(config_parse_endpoint(bad[i], &ep), -EINVAL);
	CHECK_INT_EQ(config_parse_url("http://127.0.0.1:8500"), 0);
	CHECK_INT_EQ(config_parse_url("https://consul.service:8501/v1"), 0);
	CHECK_INT_EQ(config_parse_url("http://[::1]:8500"), 0);
	CHECK_INT_EQ(config_parse_url("consul:8500"), -EINVAL);
	CHECK_INT_EQ(config_parse_url("http://a b"), -EINVAL);
}

/* The IPv4 fast path accepts exactly what inet_pton does, with the same bytes. */
TEST(config_parse_address_matches_inet_pton)
{
	const char *cases[] = { "127.0.0.1",  "0.0.0.0",   "255.255.255.255", "256.1.1.1",
				"1.2.3",      "1.2.3.4.5", "01.2.3.4",	      "1.2.3.04",
				"1..2.3",     ".1.2.3",	   "1.2.3.",	      "1.2.3.4 ",
				" 1.2.3.4",   "1.2.3.-4",  "1.2.3.4a",	      "1000.1.1.1",
				"10.0.0.0",   "::1",	   "::ffff:1.2.3.4",  "",
				"1.2.3.2555", "0.00.0.0" };
	struct config_endpoint ep;
	struct in_addr want4;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool v4 = inet_pton(AF_INET, cases[i], &want4) == 1;
		struct in6_addr want6;
		bool v6 = !v4 && inet_pton(AF_INET6, cases[i], &want6) == 1;

		memset(&ep, 0, sizeof(ep));
		CHECK_INT_EQ(config_parse_address(cases[i], &ep), v4 || v6 ? 0 : -EINVAL);
		if (v4) {
			CHECK_INT_EQ(ep.family, AF_INET);
			CHECK(!memcmp(&ep.addr.v4, &want4, sizeof(want4)));
		}
		if (v6)
			CHECK_INT_EQ(ep.family, AF_INET6);
	}
	CHECK_INT_EQ(config_parse_endpoint("10.20.30.40:80", &ep), 0);
	CHECK_INT_EQ(ntohl(ep.addr.v4.s_addr), 0x0a141e28);
	CHECK_INT_EQ(config_parse_endpoint("10.20.30.040:80", &ep), -EINVAL);
}

/* Writes a secret file with `mode` under a fresh temp dir; returns its path (static buffer). */
static const char *secret_file(const char *dir, int mode)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/token", dir);
	f = fopen(path, "w");
	if (f) {
		fputs("s3cr3t-token-value\n", f);
		fclose(f);
	}
	chmod(path, (mode_t)mode);
	return path;
}

TEST(config_secret_files)
{
	char dir[] = "/tmp/meshd-config-test-XXXXXX", *j;
	struct mesh_config *c;

	if (!mkdtemp(dir)) {
		test_fail(__FILE__, __LINE__, "mkdtemp");
		return;
	}
	j = fmt_json(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
			 "127.0.0.1:8500\",\"token_file\":\"%s/missing\"}}"),
		     dir);
	EXPECT_ERR(j, NULL, "discovery.consul.token_file", "No such file or directory");
	free(j);
	j = fmt_json(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
			 "127.0.0.1:8500\",\"token_file\":\"%s\"}}"),
		     dir);
	EXPECT_ERR(j, NULL, "discovery.consul.token_file", "secret file is not a regular file");
	free(j);
	j = fmt_json(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
			 "127.0.0.1:8500\",\"token_file\":\"%s\"}}"),
		     secret_file(dir, 0644));
	EXPECT_ERR(j, NULL, "discovery.consul.token_file", "secret file is world-readable (got \"");
	free(j);
	j = fmt_json(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
			 "127.0.0.1:8500\",\"token_file\":\"%s\"}}"),
		     secret_file(dir, 0600));
	c = MUST_LOAD(j, NULL);
	if (c) {
		char *admin = config_to_json(c), *show = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&show, &len);
		struct config_diff d;

		config_show(c, false, f);
		config_show(c, true, f);
		fclose(f);
		/* the contents never appear; show prints the path and marks it secret */
		CHECK(admin && !strstr(admin, "s3cr3t"));
		CHECK_CONTAINS(admin, "<redacted>");
		CHECK(show && !strstr(show, "s3cr3t"));
		CHECK_CONTAINS(show, "/token");
		CHECK_CONTAINS(show, "secret");
		CHECK_INT_EQ(config_diff(NULL, c, &d), 0);
		for (size_t i = 0; i < d.n; i++)
			if (!strcmp(d.changes[i].path, "discovery.consul.token_file"))
				CHECK_STR_EQ(d.changes[i].new_value, "<redacted>");
		config_diff_free(&d);
		free(admin);
		free(show);
	}
	config_free(c);
	free(j);
	unlink(secret_file(dir, 0600));
	rmdir(dir);
}

/* Moving a secret file is a change (reload must act on it), shown redacted. */
TEST(config_diff_sees_moved_secret_redacted)
{
	char dir[] = "/tmp/meshd-config-test-XXXXXX", moved[300], *j1, *j2;
	struct mesh_config *a, *b;
	struct config_diff d = { 0 };
	size_t hits = 0;

	if (!mkdtemp(dir)) {
		test_fail(__FILE__, __LINE__, "mkdtemp");
		return;
	}
	j1 = fmt_json(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
			  "127.0.0.1:8500\",\"token_file\":\"%s\"}}"),
		      secret_file(dir, 0600));
	snprintf(moved, sizeof(moved), "%s/token2", dir);
	link(secret_file(dir, 0600), moved);
	j2 = fmt_json(TOP("\"discovery\":{\"backend\":\"consul\",\"consul\":{\"address\":\"http://"
			  "127.0.0.1:8500\",\"token_file\":\"%s\"}}"),
		      moved);
	a = MUST_LOAD(j1, NULL);
	b = MUST_LOAD(j2, NULL);
	CHECK_INT_EQ(config_diff(a, b, &d), 0);
	for (size_t i = 0; i < d.n; i++) {
		if (strcmp(d.changes[i].path, "discovery.consul.token_file"))
			continue;
		hits++;
		CHECK_STR_EQ(d.changes[i].old_value, "<redacted>");
		CHECK_STR_EQ(d.changes[i].new_value, "<redacted>");
	}
	CHECK_INT_EQ(hits, 1);
	config_diff_free(&d);
	config_free(a);
	config_free(b);
	free(j1);
	free(j2);
	unlink(moved);
	unlink(secret_file(dir, 0600));
	rmdir(dir);
}

TEST(config_diff_lists_changed_paths)
{
	struct mesh_config *a = MUST_LOAD(MINIMAL, NULL), *b;
	struct config_diff d;
	char *env[] = { "MESH_LOG__LEVEL=debug", "MESH_SERVICES__API__CIRCUIT_BREAKER__WINDOW=20s",
			NULL };

	b = MUST_LOAD(MINIMAL, env);
	if (!a || !b)
		goto out;
	CHECK_INT_EQ(config_diff(a, a, &d), 0);
	CHECK_INT_EQ(d.n, 0);
	config_diff_free(&d);
	CHECK_INT_EQ(config_diff(a, b, &d), 0);
	CHECK_INT_EQ(d.n, 2);
	if (d.n == 2) {
		CHECK_STR_EQ(d.changes[0].path, "log.level");
		CHECK_STR_EQ(d.changes[0].old_value, "info");
		CHECK_STR_EQ(d.changes[0].new_value, "debug");
		CHECK_STR_EQ(d.changes[1].path, "services[0].circuit_breaker.window");
		CHECK_STR_EQ(d.changes[1].old_value, "10s");
		CHECK_STR_EQ(d.changes[1].new_value, "20s");
	}
	config_diff_free(&d);
	/* a service going away shows its leaves as removed */
	CHECK_INT_EQ(config_diff(b, NULL, &d), 0);
	CHECK(d.n > 40);
	CHECK_STR_EQ(d.changes[0].new_value, "(none)");
	config_diff_free(&d);
out:
	config_free(a);
	config_free(b);
}

TEST(config_versions)
{
	EXPECT_ERR("{\"version\":2,\"services\":[" BASE_SERVICE "]}", NULL, "version",
		   "unsupported configuration version (got 2, expected an integer in 1..1)");
	EXPECT_ERR("{\"version\":0}", NULL, "version", "unsupported configuration version");
	EXPECT_ERR("{\"version\":\"1\"}", NULL, "version", "unsupported configuration version");
	EXPECT_ERR("{\"version\":1.5}", NULL, "version", "unsupported configuration version");
}

/* Synthetic version 2: the top-level "loglevel" string of version 1 moved to log.level. */
static int migrate_1_to_2(cJSON *root, struct config_errors *errs)
{
	cJSON *old = cJSON_DetachItemFromObjectCaseSensitive(root, "loglevel"), *log;

	if (!old)
		return 0;
	log = cJSON_GetObjectItemCaseSensitive(root, "log");
	if (!log)
		log = cJSON_AddObjectToObject(root, "log");
	cJSON_AddItemToObject(log, "level", old);
	return 0;
}

static int migrate_fails(cJSON *root, struct config_errors *errs)
{
	return -EINVAL;
}

TEST(config_migration_steps)
{
	const char *v1 = "{\"version\":1,\"loglevel\":\"debug\",\"services\":[" BASE_SERVICE "]}";
	struct mesh_config *c;

	config_test_set_current_version(2);
	/* without a registered step, a version 1 file cannot be read */
	EXPECT_ERR(v1, NULL, "version", "no migration from version 1");
	CHECK_INT_EQ(config_test_add_migration(1, migrate_fails), 0);
	EXPECT_ERR(v1, NULL, "version", "migration to version 2 failed (got 1");
	CHECK_INT_EQ(config_test_add_migration(1, migrate_1_to_2), 0);
	c = MUST_LOAD(v1, NULL);
	if (c) {
		CHECK_INT_EQ(c->version, 2);
		CHECK_INT_EQ(c->log_level, CONFIG_LOG_DEBUG);
	}
	config_free(c);
	c = MUST_LOAD(
	    "{\"version\":2,\"log\":{\"level\":\"warn\"},\"services\":[" BASE_SERVICE "]}", NULL);
	CHECK(c && c->log_level == CONFIG_LOG_WARN);
	config_free(c);
	EXPECT_ERR("{\"version\":3}", NULL, "version", "expected an integer in 1..2");
	config_test_add_migration(1, NULL);
	config_test_set_current_version(CONFIG_VERSION_CURRENT);
	/* back to the real table: the synthetic key is unknown again */
	EXPECT_ERR(v1, NULL, "loglevel", "unknown key");
}

/* `config show -o json` → its "values" fed back as a config gives the same effective config. */
TEST(config_show_json_round_trip)
{
	char *env[] = { "MESH_LOG__LEVEL=warn",
			"MESH_SERVICES__API__LOAD_BALANCER__ALGORITHM=maglev",
			"MESH_DISCOVERY__BACKEND=consul",
			"MESH_DISCOVERY__CONSUL__ADDRESS=http://127.0.0.1:8500",
			"MESH_DISCOVERY__CONSUL__SERVICES=api",
			NULL };
	struct mesh_config *a = NULL, *b = NULL;
	struct config_errors e = { 0 };
	char *out = NULL, *values = NULL;
	struct config_diff d = { 0 };
	cJSON *doc = NULL;
	size_t len = 0;
	FILE *f;

	a = config_load("config/meshd.json", env, &e);
	CHECK(a != NULL);
	if (!a)
		goto out;
	f = open_memstream(&out, &len);
	CHECK_INT_EQ(config_show(a, true, f), 0);
	fclose(f);
	doc = cJSON_Parse(out);
	CHECK(doc != NULL);
	CHECK_STR_EQ(cJSON_GetStringValue(
			 cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "origins"), "log.level")),
		     "env");
	CHECK(cJSON_IsObject(cJSON_GetObjectItem(doc, "not_supported_yet")));
	CHECK(!cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "not_supported_yet"),
				   "mtls.cert_source")); /* the Connect CA is built */
	CHECK(!cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "not_supported_yet"),
				   "discovery.backend")); /* DNS SRV discovery is built */
	values = cJSON_PrintUnformatted(cJSON_GetObjectItem(doc, "values"));
	b = MUST_LOAD(values, NULL);
	if (!b)
		goto out;
	CHECK_INT_EQ(config_diff(a, b, &d), 0);
	CHECK_INT_EQ(d.n, 0);
	for (size_t i = 0; i < d.n; i++)
		fprintf(stderr, "  diff %s: %s -> %s\n", d.changes[i].path, d.changes[i].old_value,
			d.changes[i].new_value);
	CHECK_INT_EQ(b->services[0].load_balancer.algorithm, MESH_LB_MAGLEV);
out:
	config_diff_free(&d);
	config_errors_free(&e);
	cJSON_Delete(doc);
	free(out);
	cJSON_free(values);
	config_free(a);
	config_free(b);
}

TEST(config_env_and_docs_listings)
{
	char *env = NULL, *docs = NULL;
	size_t len = 0, i;
	FILE *f = open_memstream(&env, &len);

	CHECK_INT_EQ(config_print_env(f), 0);
	fclose(f);
	f = open_memstream(&docs, &len);
	CHECK_INT_EQ(config_print_docs(f), 0);
	fclose(f);
	CHECK_CONTAINS(env, "MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES (integer, default 5; an "
			    "integer in 1..1000): ");
	CHECK_CONTAINS(env, "MESH_SERVICES__<NAME>__LOAD_BALANCER__ALGORITHM (enum");
	CHECK_CONTAINS(env, "MESH_DISCOVERY__CONSUL__TOKEN_FILE (path");
	CHECK_CONTAINS(docs, "## Presets");
	CHECK_CONTAINS(docs, "| `log.format` | logfmt | json |");
	CHECK_CONTAINS(docs, "## Not supported yet");
	CHECK(!strstr(docs, "- `discovery.backend`: `dns` ("));	  /* DNS SRV discovery is built */
	CHECK(!strstr(docs, "- `mtls.cert_source`: `consul` (")); /* the Connect CA is built */
	CHECK_CONTAINS(docs, "Nothing: every key of the format is built.");
	CHECK_CONTAINS(docs, "| `discovery.consul.datacenter` | string | node.datacenter |");
	CHECK_CONTAINS(env, "MESH_MTLS__ENABLED (bool, default false, production true; true or "
			    "false): Run the mTLS proxy");
	/* every table key appears in the docs */
	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		char want[128];

		snprintf(want, sizeof(want), "| `%s` |", cfg_root_desc.keys[i].path);
		CHECK_CONTAINS(docs, want);
	}
	CHECK_CONTAINS(docs, "| `services[].backends[].weight` |");
	free(env);
	free(docs);
}

TEST(config_admin_json_is_loadable)
{
	struct mesh_config *a = MUST_LOAD(MINIMAL, NULL), *b = NULL;
	char *json = a ? config_to_json(a) : NULL;
	struct config_diff d = { 0 };

	CHECK(json != NULL);
	if (json) {
		b = MUST_LOAD(json, NULL);
		CHECK(b && config_diff(a, b, &d) == 0 && d.n == 0);
	}
	config_diff_free(&d);
	free(json);
	config_free(a);
	config_free(b);
}

TEST(config_helpers_names_and_distance)
{
	char buf[128];

	CHECK_STR_EQ(cfg_env_name("", "load_balancer.health_check.http_path", buf, sizeof(buf)),
		     "MESH_LOAD_BALANCER__HEALTH_CHECK__HTTP_PATH");
	CHECK_STR_EQ(cfg_env_name("SERVICES__MY_API__", "mtls", buf, sizeof(buf)),
		     "MESH_SERVICES__MY_API__MTLS");
	CHECK_INT_EQ(cfg_edit_distance("levle", "level"), 2);
	CHECK_INT_EQ(cfg_edit_distance("window", "window"), 0);
	CHECK_INT_EQ(cfg_edit_distance("", "abc"), 3);
	CHECK(cfg_is_dns_label("a"));
	CHECK(cfg_is_dns_label("a-0"));
	CHECK(!cfg_is_dns_label("a-"));
	CHECK(!cfg_is_dns_label(""));
}

/* A config another module builds by hand (no origins) can still be shown and diffed. */
TEST(config_show_hand_built)
{
	struct mesh_config cfg;
	struct config_diff d;
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	memset(&cfg, 0, sizeof(cfg));
	cfg.version = 1;
	CHECK_INT_EQ(config_show(&cfg, false, f), 0);
	fclose(f);
	CHECK_CONTAINS(out, "version");
	CHECK_CONTAINS(out, "unset");
	CHECK_INT_EQ(config_diff(&cfg, &cfg, &d), 0);
	CHECK_INT_EQ(d.n, 0);
	config_diff_free(&d);
	free(out);
}
