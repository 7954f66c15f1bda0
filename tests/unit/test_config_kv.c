/* The Consul KV config document layered over the file (config_load_kv): what it may change,
 * what it may not, how its problems are named, and the config_source.consul_kv rules. */
#include <unistd.h>

#include "config_helpers.h"

#define FILE_DOC                                                                                   \
	"{\"version\":1,\"state_dir\":\"/tmp\",\"log\":{\"level\":\"info\"},"                      \
	"\"config_source\":{\"consul_kv\":\"meshd/node-1\"},"                                      \
	"\"discovery\":{\"consul\":{\"address\":\"http://127.0.0.1:8500\"}},"                      \
	"\"services\":[" BASE_SERVICE "]}"
#define TOP_KV(extra) "{\"version\":1,\"services\":[" BASE_SERVICE "]," extra "}"
#define WEB_SERVICE                                                                                \
	"{\"name\":\"web\",\"vip\":\"127.77.0.11\",\"port\":80,"                                   \
	"\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8082}]}"

/* Writes `doc` to a temporary file whose path goes into `path` (unlink it after). */
static int write_tmp(char *path, const char *doc)
{
	int fd = mkstemp(path);
	ssize_t n = fd >= 0 ? write(fd, doc, strlen(doc)) : -1;

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)strlen(doc) ? 0 : -1;
}

/* Loads FILE_DOC with `kv` over it and `env`; the errors go to `e`. */
static struct mesh_config *load_kv(const char *kv, char *const *env, struct config_errors *e)
{
	char path[] = "/tmp/test_config_kv.XXXXXX";
	struct mesh_config *c = NULL;

	if (write_tmp(path, FILE_DOC) == 0)
		c = config_load_kv(path, kv, kv ? strlen(kv) : 0, env ? env : no_env, e);
	unlink(path);
	return c;
}

static void expect_kv_err(const char *kv, const char *path, const char *what, int line)
{
	struct config_errors e = { 0 };
	struct mesh_config *c = load_kv(kv, NULL, &e);

	if (c || find_err(&e, path, what) < 0) {
		dump_errs(&e);
		test_fail(__FILE__, line, "no problem \"%s: ...%s...\"", path, what);
	}
	config_free(c);
	config_errors_free(&e);
}
#define EXPECT_KV_ERR(kv, path, what) expect_kv_err(kv, path, what, __LINE__)

TEST(config_kv_overrides_file_and_env_wins)
{
	char *const env[] = { "MESH_CIRCUIT_BREAKER__CONSECUTIVE_FAILURES=9", NULL };
	struct config_errors e = { 0 };
	struct mesh_config *c = load_kv("{\"log\":{\"level\":\"debug\"},\"circuit_breaker\":"
					"{\"consecutive_failures\":7,\"window\":\"20s\"}}",
					env, &e);
	char value[256], origin[64];

	CHECK(c != NULL);
	if (!c) {
		dump_errs(&e);
		goto out;
	}
	CHECK_INT_EQ(c->log_level, CONFIG_LOG_DEBUG);
	CHECK_INT_EQ(c->circuit_breaker.consecutive_failures, 9);
	CHECK_INT_EQ(c->circuit_breaker.window_ns, 20000000000ull);
	CHECK_INT_EQ(c->n_services, 1); /* not in the document: the file's */
	CHECK_STR_EQ(c->config_kv_key, "meshd/node-1");
	CHECK(show_value(c, "log.level", value, origin) == 0);
	CHECK_STR_EQ(origin, "consul_kv");
	CHECK(show_value(c, "circuit_breaker.consecutive_failures", value, origin) == 0);
	CHECK_STR_EQ(origin, "env");
	CHECK(show_value(c, "state_dir", value, origin) == 0);
	CHECK_STR_EQ(origin, "file");
out:
	config_free(c);
	config_errors_free(&e);
}

TEST(config_kv_replaces_lists_whole)
{
	struct config_errors e = { 0 };
	struct mesh_config *c = load_kv("{\"version\":1,\"services\":[" WEB_SERVICE "]}", NULL, &e);

	CHECK(c != NULL);
	if (c) {
		CHECK_INT_EQ(c->n_services, 1);
		CHECK_STR_EQ(c->services[0].name, "web");
		CHECK_INT_EQ(c->services[0].backends[0].endpoint.port, 8082);
	}
	config_free(c);
	config_errors_free(&e);
}

TEST(config_kv_refuses_restart_only_keys)
{
	EXPECT_KV_ERR("{\"cgroup\":\"/sys/fs/cgroup\"}", "cgroup",
		      "cannot come from the Consul KV config");
	EXPECT_KV_ERR("{\"config_source\":{\"consul_kv\":\"meshd/other\"}}",
		      "config_source.consul_kv", "it needs a restart");
	EXPECT_KV_ERR("{\"mtls\":{\"workers\":2}}", "mtls.workers",
		      "cannot come from the Consul KV config");
	EXPECT_KV_ERR("{\"datapath\":{\"max_services\":16384}}", "datapath.max_services",
		      "local file only");
}

TEST(config_kv_problems_named)
{
	EXPECT_KV_ERR("{\"log\":{\"level\":\"loud\"}}", "log.level", "got \"loud\"");
	EXPECT_KV_ERR("{\"log\":", "(consul_kv)", "invalid JSON at line 1");
	EXPECT_KV_ERR("[1]", "(consul_kv)", "expected a JSON object");
	EXPECT_KV_ERR("{\"version\":2}", "version", "unsupported configuration version");
	EXPECT_KV_ERR("{\"lgo\":{}}", "lgo", "did you mean \"log\"?");
	EXPECT_KV_ERR("{\"log\":{\"level\":\"debug\",\"level\":\"info\"}}", "log.level",
		      "duplicate key");
	EXPECT_KV_ERR("{\"services\":[{\"name\":\"web\"}]}", "services[0].vip",
		      "missing required key");
}

TEST(config_source_rules)
{
	EXPECT_ERR(TOP_KV("\"config_source\":{\"consul_kv\":\"meshd/n\"}"), NULL,
		   "discovery.consul.address", "when config_source.consul_kv is set");
	EXPECT_ERR(TOP_KV("\"config_source\":{\"consul_kv\":\"/meshd/n\"},"
			  "\"discovery\":{\"consul\":{\"address\":\"http://127.0.0.1:8500\"}}"),
		   NULL, "config_source.consul_kv", "invalid key");
	EXPECT_ERR(TOP_KV("\"discovery\":{\"consul\":{\"address\":\"http://127.0.0.1:8500\"}}"),
		   NULL, "discovery.consul.address", "unused with discovery.backend static");
	config_free(MUST_LOAD(TOP_KV("\"config_source\":{\"consul_kv\":\"meshd/n\"},"
				     "\"discovery\":{\"consul\":{\"address\":\"http://127.0.0.1:"
				     "8500\",\"token_file\":\"\",\"wait\":\"2s\"}}"),
			      NULL));
}
