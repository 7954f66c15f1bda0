/* Unit tests for the Consul client's pure parts: health JSON (the shared fixtures), the
 * X-Consul-Index rules, the token bucket, backoff, wait and URL formatting, token files. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discovery/consul/consul.h"
#include "discovery/state.h"
#include "test.h"

#define CORPUS "tests/fuzz/corpus/consul/"

static int parse_str(const char *json, struct consul_health *h)
{
	char why[128];

	return consul_parse_health(json, strlen(json), h, why, sizeof(why));
}

static const char *ip(const struct config_backend *b)
{
	static char buf[INET6_ADDRSTRLEN];

	return inet_ntop(b->endpoint.family, &b->endpoint.addr, buf, sizeof(buf));
}

TEST(parse_fixture_all_instances_keeps_only_fully_passing)
{
	struct consul_health h;
	char why[128];
	size_t len;
	char *json = test_read_file(CORPUS "health-service-web.json", &len);

	CHECK(json != NULL);
	if (!json)
		return;
	CHECK_INT_EQ(consul_parse_health(json, len, &h, why, sizeof(why)), 0);
	/* web-2 has a warning check, web-3 a critical one: only web-1 is passing. Instances that
	 * are not passing are left out, not counted as unusable. */
	CHECK_INT_EQ(h.n, 1);
	CHECK_INT_EQ(h.skipped, 0);
	CHECK_STR_EQ(ip(&h.backends[0]), "10.0.1.11");
	CHECK_INT_EQ(h.backends[0].endpoint.port, 8080);
	CHECK_INT_EQ(h.backends[0].weight, 10);
	consul_health_free(&h);
	free(json);
}

TEST(parse_fixture_passing_and_empty)
{
	struct consul_health h;
	char why[128];
	size_t len;
	char *json = test_read_file(CORPUS "health-service-web-passing.json", &len);

	CHECK(json != NULL);
	if (!json)
		return;
	CHECK_INT_EQ(consul_parse_health(json, len, &h, why, sizeof(why)), 0);
	CHECK_INT_EQ(h.n, 1);
	consul_health_free(&h);
	free(json);
	CHECK_INT_EQ(parse_str("[]", &h), 0);
	CHECK_INT_EQ(h.n, 0);
	consul_health_free(&h);
}

TEST(parse_falls_back_to_node_address_and_default_weight)
{
	struct consul_health h;
	const char *json = "[{\"Node\":{\"Address\":\"127.0.0.1\"},\"Service\":{\"Address\":\"\","
			   "\"Port\":22001},\"Checks\":[]},"
			   "{\"Node\":{\"Address\":\"10.0.0.1\"},\"Service\":{\"Address\":\"::1\","
			   "\"Port\":22002,\"Weights\":{\"Passing\":3,\"Warning\":1}}}]";

	CHECK_INT_EQ(parse_str(json, &h), 0);
	CHECK_INT_EQ(h.n, 2);
	CHECK_STR_EQ(ip(&h.backends[0]), "127.0.0.1");
	CHECK_INT_EQ(h.backends[0].weight, 1);
	CHECK_INT_EQ(h.backends[1].endpoint.family, AF_INET6);
	CHECK_INT_EQ(h.backends[1].endpoint.port, 22002);
	CHECK_INT_EQ(h.backends[1].weight, 3);
	consul_health_free(&h);
}

TEST(parse_skips_bad_entries_and_duplicates)
{
	struct consul_health h;
	const char *json = "[{\"Service\":{\"Address\":\"db.example\",\"Port\":1}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":0}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":70000}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":1.5}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":5,"
			   "\"Weights\":{\"Passing\":0}}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":6}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":6}},"
			   "{\"Service\":{\"Address\":\"127.0.0.1\",\"Port\":7},"
			   "\"Checks\":[{\"Status\":\"passing\"},{\"Status\":\"critical\"}]},"
			   "42, null, {}]";

	CHECK_INT_EQ(parse_str(json, &h), 0);
	/* The instance listed twice stays twice (the registry merges repeats); the host name is
	 * kept for the caller to resolve. */
	CHECK_INT_EQ(h.n, 2);
	CHECK_INT_EQ(h.backends[0].endpoint.port, 6);
	CHECK_INT_EQ(h.backends[1].endpoint.port, 6);
	CHECK_INT_EQ(h.n_named, 1);
	CHECK_STR_EQ(h.named[0].host, "db.example");
	CHECK_INT_EQ(h.named[0].port, 1);
	/* Unusable: ports 0, 70000 and 1.5, weight 0, 42, null, {} (the instance with a critical
	 * check is left out without counting). */
	CHECK_INT_EQ(h.skipped, 7);
	CHECK_STR_EQ(h.skip_reason, "port is not an integer in 1..65535");
	consul_health_free(&h);
}

TEST(parse_rejects_non_arrays)
{
	struct consul_health h;
	char why[128] = "";

	CHECK_INT_EQ(consul_parse_health("{}", 2, &h, why, sizeof(why)), -EINVAL);
	CHECK_STR_EQ(why, "not a JSON array");
	CHECK_INT_EQ(consul_parse_health("Invalid wait time", 17, &h, why, sizeof(why)), -EINVAL);
	CHECK_STR_EQ(why, "invalid JSON");
	CHECK_INT_EQ(consul_parse_health("[1,", 3, &h, why, sizeof(why)), -EINVAL);
	CHECK(h.backends == NULL);
	CHECK_INT_EQ(consul_parse_health("[{},]", 5, &h, why, sizeof(why)), -EINVAL);
	CHECK_INT_EQ(consul_parse_health("[{}{}]", 6, &h, why, sizeof(why)), -EINVAL);
	CHECK_INT_EQ(consul_parse_health("[{\"a\":1}", 8, &h, why, sizeof(why)), -EINVAL);
	CHECK_INT_EQ(consul_parse_health("[] x", 4, &h, why, sizeof(why)), -EINVAL);
	CHECK_INT_EQ(consul_parse_health(" [ ] ", 5, &h, why, sizeof(why)), 0);
	consul_health_free(&h);
}

/* Service.Meta["mesh-port"]: a port string is taken, absent is 0, anything else is 0 with the
 * instance noted (the instance itself stays a backend). */
TEST(parse_mesh_port_meta)
{
	const char *json = "[{\"Service\":{\"ID\":\"a\",\"Address\":\"127.0.0.1\",\"Port\":1,"
			   "\"Meta\":{\"mesh-port\":\"15009\"}}},"
			   "{\"Service\":{\"ID\":\"b\",\"Address\":\"127.0.0.2\",\"Port\":1}},"
			   "{\"Service\":{\"ID\":\"c\",\"Address\":\"127.0.0.3\",\"Port\":1,"
			   "\"Meta\":{\"mesh-port\":\"99999\"}}},"
			   "{\"Service\":{\"Address\":\"127.0.0.4\",\"Port\":4,"
			   "\"Meta\":{\"mesh-port\":15010}}},"
			   "{\"Service\":{\"ID\":\"e\",\"Address\":\"127.0.0.5\",\"Port\":1,"
			   "\"Meta\":{\"mesh-port\":\"0\"}}},"
			   "{\"Service\":{\"ID\":\"f\",\"Address\":\"h.test\",\"Port\":1,"
			   "\"Meta\":{\"mesh-port\":\"15011\"}}}]";
	struct consul_health h;

	CHECK_INT_EQ(parse_str(json, &h), 0);
	CHECK_INT_EQ(h.n, 5);
	CHECK_INT_EQ(h.skipped, 0);
	CHECK_INT_EQ(h.backends[0].mesh_port, 15009);
	CHECK_INT_EQ(h.backends[1].mesh_port, 0);
	CHECK_INT_EQ(h.backends[2].mesh_port, 0);
	CHECK_INT_EQ(h.backends[3].mesh_port, 0);
	CHECK_INT_EQ(h.backends[4].mesh_port, 0);
	CHECK_INT_EQ(h.n_named, 1);
	CHECK_INT_EQ(h.named[0].mesh_port, 15011);
	CHECK_INT_EQ(h.n_bad_mesh_port, 3);
	CHECK_STR_EQ(h.bad_mesh_port[0].instance, "c");
	CHECK_STR_EQ(h.bad_mesh_port[0].value, "99999");
	CHECK_STR_EQ(h.bad_mesh_port[1].instance, "127.0.0.4:4");
	CHECK_STR_EQ(h.bad_mesh_port[1].value, "(not a string)");
	CHECK_STR_EQ(h.bad_mesh_port[2].instance, "e");
	consul_health_free(&h);
}

/* The same answer fed in pieces of every size parses to the same result; strings holding
 * brackets, commas and escaped quotes do not fool the element scanner. */
TEST(stream_in_pieces_matches_whole)
{
	const char *json =
	    "[{\"Node\":{\"Address\":\"127.0.0.1\"},\"Service\":{\"Address\":\"\",\"Port\":1,"
	    "\"Meta\":{\"k\":\"]},{\\\"x\\\\\"}}},{\"Service\":{\"Address\":\"h.test\","
	    "\"Port\":2}}, 7 ,{\"Service\":{\"Address\":\"::1\",\"Port\":3}}]";
	size_t len = strlen(json);

	for (size_t piece = 1; piece <= len; piece++) {
		struct consul_stream *st = consul_stream_new(true);
		struct consul_health h;
		char why[128] = "";

		for (size_t at = 0; at < len; at += piece)
			consul_stream_feed(st, json + at, at + piece > len ? len - at : piece);
		if (consul_stream_finish(st, &h, why, sizeof(why))) {
			test_fail(__FILE__, __LINE__, "piece %zu: %s", piece, why);
			consul_stream_free(st);
			break;
		}
		if (h.n != 2 || h.n_named != 1 || h.skipped != 1 ||
		    h.backends[1].endpoint.family != AF_INET6)
			test_fail(__FILE__, __LINE__, "piece %zu: n=%zu named=%zu skipped=%zu",
				  piece, h.n, h.n_named, h.skipped);
		consul_health_free(&h);
		consul_stream_free(st);
	}
}

/* 100,000 instances: the parser keeps the backends, never the answer (nor, not asked for,
 * their selector documents). */
TEST(stream_of_a_large_answer_keeps_only_backends)
{
	const char *entry = "{\"Node\":{\"Node\":\"n\",\"Address\":\"10.0.0.1\"},\"Service\":"
			    "{\"ID\":\"x\",\"Address\":\"10.1.%u.%u\",\"Port\":%u},\"Checks\":[]}";
	struct consul_stream *st = consul_stream_new(false);
	struct consul_health h;
	char buf[256], why[64];

	consul_stream_feed(st, "[", 1);
	for (unsigned i = 0; i < 100000; i++) {
		int n = snprintf(buf, sizeof(buf), entry, (i >> 8) & 255, i & 255, 1 + i % 60000);

		if (i)
			consul_stream_feed(st, ",", 1);
		consul_stream_feed(st, buf, (size_t)n);
	}
	consul_stream_feed(st, "]", 1);
	CHECK_INT_EQ(consul_stream_finish(st, &h, why, sizeof(why)), 0);
	CHECK_INT_EQ(h.n, 100000);
	CHECK(h.n && !h.backends[0].subset && !h.backends[h.n - 1].subset);
	consul_health_free(&h);
	consul_stream_free(st);
}

TEST(next_index_follows_consul_client_rules)
{
	CHECK_INT_EQ(consul_next_index(0, "120"), 120);
	CHECK_INT_EQ(consul_next_index(100, "120"), 120);
	CHECK_INT_EQ(consul_next_index(120, "120"), 120); /* timeout: unchanged */
	CHECK_INT_EQ(consul_next_index(120, "7"), 0);	  /* went backwards: reset */
	CHECK_INT_EQ(consul_next_index(5, "0"), 1);	  /* <= 0 is treated as 1 */
	CHECK_INT_EQ(consul_next_index(5, "-3"), 1);
	CHECK_INT_EQ(consul_next_index(5, NULL), 1);
	CHECK_INT_EQ(consul_next_index(5, "12abc"), 1);
	CHECK_INT_EQ(consul_next_index(5, "99999999999999999999999"), 1);
}

TEST(header_index_matches_case_insensitively)
{
	char v[32];

	CHECK(consul_header_index("X-Consul-Index: 42\r\n", 20, v, sizeof(v)));
	CHECK_STR_EQ(v, "42");
	CHECK(consul_header_index("x-consul-index:7\r\n", 18, v, sizeof(v)));
	CHECK_STR_EQ(v, "7");
	CHECK(!consul_header_index("X-Consul-Indexx: 1\r\n", 20, v, sizeof(v)));
	CHECK(!consul_header_index("X-Consul-Knownleader: true\r\n", 28, v, sizeof(v)));
}

TEST(bucket_allows_burst_then_paces)
{
	struct consul_bucket b = { 0 };
	uint64_t s = 1000000000ull;

	CHECK_INT_EQ(consul_bucket_take(&b, 10 * s, 2, s), 0);
	CHECK_INT_EQ(consul_bucket_take(&b, 10 * s, 2, s), 0);
	uint64_t wait = consul_bucket_take(&b, 10 * s, 2, s);
	CHECK(wait > s - 10 && wait <= s + 1);
	CHECK_INT_EQ(consul_bucket_take(&b, 11 * s, 2, s), 0);
	/* A long quiet blocking query refills to the burst, not beyond. */
	CHECK_INT_EQ(consul_bucket_take(&b, 500 * s, 2, s), 0);
	CHECK_INT_EQ(consul_bucket_take(&b, 500 * s, 2, s), 0);
	CHECK(consul_bucket_take(&b, 500 * s, 2, s) > 0);
}

TEST(backoff_doubles_caps_and_jitters_down)
{
	uint64_t ms = 1000000ull;

	CHECK_INT_EQ(consul_backoff_ns(1, 500 * ms, 10000 * ms, 0), 500 * ms);
	CHECK_INT_EQ(consul_backoff_ns(2, 500 * ms, 10000 * ms, 0), 1000 * ms);
	CHECK_INT_EQ(consul_backoff_ns(5, 500 * ms, 10000 * ms, 0), 8000 * ms);
	CHECK_INT_EQ(consul_backoff_ns(6, 500 * ms, 10000 * ms, 0), 10000 * ms);
	CHECK_INT_EQ(consul_backoff_ns(60, 500 * ms, 10000 * ms, 0), 10000 * ms);
	CHECK_INT_EQ(consul_backoff_ns(60, 500 * ms, 10000 * ms, UINT32_MAX), 7500 * ms);
}

TEST(wait_is_a_go_duration)
{
	char buf[32];

	consul_format_wait(300000000000ull, buf, sizeof(buf));
	CHECK_STR_EQ(buf, "300s");
	consul_format_wait(1500000000ull, buf, sizeof(buf));
	CHECK_STR_EQ(buf, "1500ms");
	consul_format_wait(3600000000000ull, buf, sizeof(buf));
	CHECK_STR_EQ(buf, "600s");
}

TEST(health_url_blocking_and_not)
{
	char buf[256];

	CHECK(consul_health_url(buf, sizeof(buf), "http://127.0.0.1:22500/", "api", "dc1", 0,
				5000000000ull) > 0);
	CHECK_STR_EQ(buf, "http://127.0.0.1:22500/v1/health/service/api?passing=1&dc=dc1");
	CHECK(consul_health_url(buf, sizeof(buf), "http://h:1", "a b", "", 42, 5000000000ull) > 0);
	CHECK_STR_EQ(buf, "http://h:1/v1/health/service/a%20b?passing=1&index=42&wait=5s");
	CHECK(consul_health_url(buf, sizeof(buf), "http://h:1", "api", NULL, 42, 0) > 0);
	CHECK_STR_EQ(buf, "http://h:1/v1/health/service/api?passing=1&index=42");
	CHECK_INT_EQ(consul_health_url(buf, 20, "http://h:1", "api", NULL, 42, 0), -ENAMETOOLONG);
}

TEST(kv_path_and_get_url)
{
	char path[256], url[512];

	CHECK(consul_kv_path(path, sizeof(path), "meshd/node 1/a+b", "dc1") > 0);
	CHECK_STR_EQ(path, "/v1/kv/meshd/node%201/a%2Bb?raw&dc=dc1");
	CHECK(consul_kv_path(path, sizeof(path), "meshd/n", NULL) > 0);
	CHECK_STR_EQ(path, "/v1/kv/meshd/n?raw");
	CHECK(consul_get_url(url, sizeof(url), "http://h:1/", path, 0, 5000000000ull) > 0);
	CHECK_STR_EQ(url, "http://h:1/v1/kv/meshd/n?raw");
	CHECK(consul_get_url(url, sizeof(url), "http://h:1", path, 42, 5000000000ull) > 0);
	CHECK_STR_EQ(url, "http://h:1/v1/kv/meshd/n?raw&index=42&wait=5s");
	CHECK(consul_get_url(url, sizeof(url), "http://h:1", "/v1/x", 7, 0) > 0);
	CHECK_STR_EQ(url, "http://h:1/v1/x?index=7");
	CHECK_INT_EQ(consul_get_url(url, 20, "http://h:1", path, 42, 0), -ENAMETOOLONG);
	CHECK_INT_EQ(consul_kv_path(path, 12, "meshd/n", NULL), -ENAMETOOLONG);
}

/* Each instance keeps the parts a resolver Filter reads, and they match as the whole entry. */
TEST(instances_keep_their_selector_document)
{
	static const char json[] =
	    "[{\"Node\":{\"Node\":\"n1\",\"Address\":\"10.0.0.1\",\"Meta\":{\"z\":\"a\"}},"
	    "\"Service\":{\"ID\":\"api-2\",\"Service\":\"api\",\"Tags\":[\"v2\"],"
	    "\"Meta\":{\"version\":\"v2\"},\"Port\":80,\"Address\":\"10.0.0.2\","
	    "\"Proxy\":{\"Big\":1}},\"Checks\":[]}]";
	const char *filters[] = { "\"v2\" in Service.Tags", "Service.Meta.version == v2",
				  "Service.ID matches \"^api-\"", "Node.Meta.z == a",
				  "Node.Node == n1 and Service.Port == 80" };
	struct consul_health h;
	char why[160];
	cJSON *doc;

	CHECK_INT_EQ(consul_parse_health(json, strlen(json), &h, why, sizeof(why)), 0);
	CHECK_INT_EQ(h.n, 1);
	doc = h.n ? cJSON_Parse(h.backends[0].subset) : NULL;
	CHECK(doc != NULL);
	CHECK(!strstr(h.n ? h.backends[0].subset : "", "Proxy")); /* only what filters read */
	for (size_t i = 0; doc && i < sizeof(filters) / sizeof(filters[0]); i++) {
		struct consul_filter *f = consul_filter_parse(filters[i], why, sizeof(why));

		CHECK(f != NULL);
		CHECK(consul_filter_match(f, doc));
		consul_filter_free(f);
	}
	cJSON_Delete(doc);
	consul_health_free(&h);
}

TEST(config_entry_paths)
{
	char path[256];

	CHECK(consul_entry_path(path, sizeof(path), "service-splitter", "api", NULL) > 0);
	CHECK_STR_EQ(path, "/v1/config/service-splitter/api");
	CHECK(consul_entry_path(path, sizeof(path), "service-resolver", "a b", "dc2") > 0);
	CHECK_STR_EQ(path, "/v1/config/service-resolver/a%20b?dc=dc2");
	CHECK_INT_EQ(consul_entry_path(path, 20, "service-resolver", "api", NULL), -ENAMETOOLONG);
}

/* What the rollout delivers and asks for, through a sink that only counts. */
struct rollout_seen {
	int plain, split, wants;
	bool plain_subset; /* a plain set still carried a selector document */
	bool want_on;	   /* the last selectors asked for */
	size_t n_split;	   /* of the last split delivered */
	int labelled;	   /* instances of the last split delivered with a subset */
};

static void seen_deliver(void *arg, const char *service, uint64_t index, struct config_backend *b,
			 size_t n)
{
	struct rollout_seen *s = arg;

	(void)service;
	(void)index;
	s->plain++;
	for (size_t i = 0; i < n; i++)
		s->plain_subset |= b[i].subset != NULL;
	state_backends_free(b, n);
}

static void seen_split(void *arg, const char *service, uint64_t index, struct config_backend *b,
		       size_t n, const struct config_split *split, size_t n_split)
{
	struct rollout_seen *s = arg;

	(void)service;
	(void)index;
	(void)split;
	s->split++;
	s->n_split = n_split;
	s->labelled = 0;
	for (size_t i = 0; i < n; i++)
		s->labelled += b[i].subset != NULL;
	state_backends_free(b, n);
}

static const struct config_service *seen_current(void *arg, const char *service)
{
	(void)arg;
	(void)service;
	return NULL;
}

static void seen_want(void *arg, const char *service, bool on)
{
	struct rollout_seen *s = arg;

	(void)service;
	s->wants++;
	s->want_on = on;
}

/* A rollout delivering to, and asking through, `seen`. */
static struct consul_rollout *seen_rollout(struct rollout_seen *seen)
{
	struct discovery_sink sink = { .deliver = seen_deliver,
				       .deliver_split = seen_split,
				       .current = seen_current,
				       .arg = seen };

	return consul_rollout_new(&sink, seen_want, seen);
}

/* A health answer of `service`: instances v1 (Meta.version v1) and v2, with their selector
 * documents when `sel`. */
static void answer_instances(struct consul_rollout *r, const struct config_consul *c,
			     const char *service, bool sel)
{
	static const char *const docs[] = {
		"{\"Service\":{\"Meta\":{\"version\":\"v1\"}},\"Node\":{}}",
		"{\"Service\":{\"Meta\":{\"version\":\"v2\"}},\"Node\":{}}"
	};
	struct consul_update *u = calloc(1, sizeof(*u));

	if (!u || !(u->service = strdup(service)) ||
	    !(u->backends = calloc(2, sizeof(*u->backends)))) {
		consul_update_free(u);
		return;
	}
	u->n_backends = 2;
	u->index = 1;
	u->selectors = sel;
	for (size_t i = 0; sel && i < 2; i++)
		u->backends[i].subset = strdup(docs[i]);
	consul_rollout_instances(r, c, u);
	consul_update_free(u);
}

/* An entry answer: `body` (200) or NULL (404). */
static void answer_entry(struct consul_rollout *r, const char *path, const char *body)
{
	struct consul_update *u = calloc(1, sizeof(*u));

	if (!u || !(u->service = strdup(path)) || (body && !(u->body = strdup(body)))) {
		consul_update_free(u);
		return;
	}
	u->status = body ? 200 : 404;
	u->body_len = body ? strlen(body) : 0;
	CHECK(consul_rollout_entry(r, u));
	consul_update_free(u);
}

#define API_RESOLVER "/v1/config/service-resolver/api"
#define API_SPLITTER "/v1/config/service-splitter/api"

/* The rollout governs configured services that do not fail over: only theirs are the entries
 * watched, and only their sets wait for the entries. Any other set (a failover or catalog
 * service) goes through at once, without selector documents. */
TEST(rollout_governs_configured_services_only)
{
	char *services[] = { "api", "db" }, *dcs[] = { "dc2" }, **paths = NULL;
	struct config_consul_failover fo = { .service = "db",
					     .datacenters = dcs,
					     .n_datacenters = 1 };
	struct config_consul c = {
		.services = services, .n_services = 2, .failover = &fo, .n_failover = 1
	};
	struct rollout_seen seen = { 0 };
	struct consul_rollout *r = seen_rollout(&seen);
	ssize_t n = consul_rollout_paths(&c, &paths);

	CHECK(r != NULL);
	CHECK_INT_EQ(n, 2);
	CHECK_STR_EQ(n == 2 ? paths[0] : "", API_RESOLVER);
	CHECK_STR_EQ(n == 2 ? paths[1] : "", API_SPLITTER);
	for (ssize_t i = 0; i < n; i++)
		free(paths[i]);
	free(paths);
	if (!r)
		return;
	answer_instances(r, &c, "db", true);  /* fails over */
	answer_instances(r, &c, "web", true); /* e.g. from the catalog */
	CHECK_INT_EQ(seen.plain, 2);
	CHECK(!seen.plain_subset);
	answer_instances(r, &c, "api", false);
	CHECK_INT_EQ(seen.plain + seen.split, 2); /* waits for both entries */
	answer_entry(r, API_RESOLVER, NULL);
	answer_entry(r, API_SPLITTER, NULL);
	CHECK_INT_EQ(seen.split, 1);
	CHECK_INT_EQ(seen.plain, 2);
	CHECK_INT_EQ(seen.wants, 0); /* no resolver: no selector documents asked for */
	consul_rollout_free(r);
}

/* Selector documents are asked of the watcher only while the service has a resolver entry; a
 * split waits for instances that carry them, and is then delivered labelled. */
TEST(rollout_asks_selectors_only_with_a_resolver)
{
	char *services[] = { "api" };
	struct config_consul c = { .services = services, .n_services = 1 };
	struct rollout_seen seen = { 0 };
	struct consul_rollout *r = seen_rollout(&seen);

	CHECK(r != NULL);
	if (!r)
		return;
	answer_instances(r, &c, "api", false);
	answer_entry(
	    r, API_SPLITTER,
	    "{\"Kind\":\"service-splitter\",\"Name\":\"api\",\"Splits\":["
	    "{\"Weight\":90,\"ServiceSubset\":\"v1\"},{\"Weight\":10,\"ServiceSubset\":\"v2\"}]}");
	CHECK(!consul_rollout_selectors(r, "api"));
	CHECK_INT_EQ(seen.wants, 0);
	answer_entry(r, API_RESOLVER,
		     "{\"Kind\":\"service-resolver\",\"Name\":\"api\",\"Subsets\":{"
		     "\"v1\":{\"Filter\":\"Service.Meta.version == v1\"},"
		     "\"v2\":{\"Filter\":\"Service.Meta.version == v2\"}}}");
	CHECK(consul_rollout_selectors(r, "api"));
	CHECK(seen.wants == 1 && seen.want_on);
	CHECK_INT_EQ(seen.split, 0); /* the instances have no documents to label them by */
	answer_instances(r, &c, "api", true);
	CHECK_INT_EQ(seen.split, 1);
	CHECK_INT_EQ(seen.n_split, 2);
	CHECK_INT_EQ(seen.labelled, 2);
	answer_entry(r, API_RESOLVER, NULL); /* deleted: documents no longer wanted */
	CHECK(seen.wants == 2 && !seen.want_on);
	CHECK(!consul_rollout_selectors(r, "api"));
	consul_rollout_free(r);
}

TEST(token_file_trimmed_and_control_chars_rejected)
{
	char path[] = "/tmp/test_consul_token.XXXXXX";
	int fd = mkstemp(path);
	char *tok;

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK_INT_EQ(write(fd, "  s3cr3t-token\n", 15), 15);
	tok = consul_read_token(path);
	CHECK_STR_EQ(tok, "s3cr3t-token");
	free(tok);
	CHECK_INT_EQ(ftruncate(fd, 0), 0);
	CHECK_INT_EQ(pwrite(fd, "a\r\nX-Evil: 1", 12, 0), 12);
	errno = 0;
	CHECK(consul_read_token(path) == NULL);
	CHECK_INT_EQ(errno, EINVAL);
	close(fd);
	unlink(path);
	CHECK(consul_read_token(path) == NULL);
}

/* Exact bodies, field for field as api.AgentServiceRegistration / AgentServiceCheck
 * (shared/consul/agent-service-register-request-{tcp,http,ttl}.json). */
TEST(registration_bodies_per_check_type)
{
	const char *tags[] = { "v2", "mesh" }, *meta[] = { "version=v2", "team=a=b" };
	struct consul_registration r = { .id = "web-1",
					 .name = "web",
					 .tags = tags,
					 .n_tags = 2,
					 .meta = meta,
					 .n_meta = 2,
					 .interval_ns = 10000000000ull,
					 .timeout_ns = 1500000000ull,
					 .http_path = "/health",
					 .mesh_port = 15008,
					 .deregister_critical_after_ns = 90000000000ull };
	const char *head =
	    "{\"ID\":\"web-1\",\"Name\":\"web\",\"Tags\":[\"v2\",\"mesh\"],"
	    "\"Address\":\"127.0.0.1\",\"Port\":22001,\"Meta\":{\"version\":\"v2\","
	    "\"team\":\"a=b\",\"managed-by\":\"meshd\",\"mesh-port\":\"15008\"},"
	    "\"Connect\":{\"Native\":true},\"Check\":{\"CheckID\":\"service:web-1\",";
	char want[1024], *json;

	r.endpoint.family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &r.endpoint.addr.v4);
	r.endpoint.port = 22001;
	r.check = CONFIG_CONSUL_CHECK_TCP;
	json = consul_registration_json(&r);
	snprintf(want, sizeof(want),
		 "%s\"Name\":\"meshd TCP check 127.0.0.1:22001\",\"TCP\":\"127.0.0.1:22001\","
		 "\"Interval\":\"10s\",\"Timeout\":\"1500ms\","
		 "\"DeregisterCriticalServiceAfter\":\"90s\"}}",
		 head);
	CHECK_STR_EQ(json, want);
	free(json);
	r.check = CONFIG_CONSUL_CHECK_HTTP;
	json = consul_registration_json(&r);
	snprintf(want, sizeof(want),
		 "%s\"Name\":\"meshd HTTP check 127.0.0.1:22001\","
		 "\"HTTP\":\"http://127.0.0.1:22001/health\",\"Method\":\"GET\","
		 "\"Interval\":\"10s\",\"Timeout\":\"1500ms\","
		 "\"DeregisterCriticalServiceAfter\":\"90s\"}}",
		 head);
	CHECK_STR_EQ(json, want);
	free(json);
	r.check = CONFIG_CONSUL_CHECK_TTL;
	json = consul_registration_json(&r);
	snprintf(want, sizeof(want),
		 "%s\"Name\":\"meshd TTL check 127.0.0.1:22001\",\"TTL\":\"10s\","
		 "\"DeregisterCriticalServiceAfter\":\"90s\"}}",
		 head);
	CHECK_STR_EQ(json, want);
	free(json);
}

TEST(registration_body_ipv6_no_reaper_no_mesh_port)
{
	struct consul_registration r = { .id = "web-1",
					 .name = "web",
					 .interval_ns = 10000000000ull,
					 .timeout_ns = 2000000000ull };
	char *json;

	r.endpoint.family = AF_INET6;
	inet_pton(AF_INET6, "::1", &r.endpoint.addr.v6);
	r.endpoint.port = 22001;
	json = consul_registration_json(&r);
	CHECK_CONTAINS(json, "\"Tags\":[],\"Address\":\"::1\"");
	CHECK_CONTAINS(json, "\"Meta\":{\"managed-by\":\"meshd\"}");
	CHECK_CONTAINS(json, "\"TCP\":\"[::1]:22001\"");
	CHECK(json && !strstr(json, "DeregisterCriticalServiceAfter"));
	free(json);
	r.id = NULL;
	CHECK(consul_registration_json(&r) == NULL);
}

TEST(agent_url_escapes_id)
{
	char buf[128];

	CHECK(consul_agent_url(buf, sizeof(buf), "http://h:1/", "/v1/agent/service/deregister/",
			       "web 1/x") > 0);
	CHECK_STR_EQ(buf, "http://h:1/v1/agent/service/deregister/web%201%2Fx");
	CHECK(consul_agent_url(buf, sizeof(buf), "http://h:1", "/v1/agent/service/register", NULL) >
	      0);
	CHECK_STR_EQ(buf, "http://h:1/v1/agent/service/register");
	CHECK_INT_EQ(consul_agent_url(buf, 10, "http://h:1", "/v1/agent/service/register", NULL),
		     -ENAMETOOLONG);
}

/* An answer of `n` instances (ports 1..n) for api in `dc` (NULL = local). */
static struct consul_update *answer(const char *dc, size_t n)
{
	struct consul_update *u = calloc(1, sizeof(*u));

	u->service = strdup("api");
	u->dc = dc ? strdup(dc) : NULL;
	u->backends = calloc(n + 1, sizeof(*u->backends));
	u->n_backends = n;
	for (size_t i = 0; i < n; i++)
		u->backends[i].endpoint.port = (uint16_t)(i + 1);
	u->index = 10 + n;
	return u;
}

/* Returns consul_failover_take's result; `pick` is freed, its dc and n kept. */
static int take(struct consul_failover *f, const char *dc, size_t n, const char **got_dc,
		size_t *got_n)
{
	struct consul_update *u = answer(dc, n);
	struct consul_failover_pick p;
	int r = consul_failover_take(f, u, &p);

	if (r == 1) {
		*got_dc = p.dc;
		*got_n = p.n;
		free(p.backends);
	}
	consul_update_free(u);
	return r;
}

TEST(failover_picks_first_datacenter_with_a_passing_instance)
{
	char *dcs[] = { "dc2", "dc3" };
	struct config_consul_failover fo = { .service = "api",
					     .datacenters = dcs,
					     .n_datacenters = 2 };
	struct config_consul c = { .failover = &fo, .n_failover = 1 };
	struct consul_failover *f = consul_failover_new(&c);
	const char *dc = "x";
	size_t n = 99;
	struct consul_update *other = answer(NULL, 1);
	struct consul_failover_pick p;

	free(other->service);
	other->service = strdup("web"); /* no failover: untouched */
	CHECK_INT_EQ(consul_failover_take(f, other, &p), 0);
	CHECK_INT_EQ(other->n_backends, 1);
	consul_update_free(other);
	/* dc2 answers before the local datacenter: nothing chosen yet */
	CHECK_INT_EQ(take(f, "dc2", 2, &dc, &n), 2);
	CHECK_INT_EQ(take(f, NULL, 1, &dc, &n), 1);
	CHECK(dc == NULL && n == 1);
	CHECK_INT_EQ(take(f, NULL, 0, &dc, &n), 1); /* none passes locally: dc2 */
	CHECK_STR_EQ(dc, "dc2");
	CHECK_INT_EQ(n, 2);
	CHECK(consul_failover_serving(f, "api", &dc) && dc && !strcmp(dc, "dc2"));
	CHECK_INT_EQ(take(f, "dc2", 0, &dc, &n), 1); /* dc3 has not answered: local (empty) */
	CHECK(dc == NULL && n == 0);
	CHECK_INT_EQ(take(f, "dc3", 3, &dc, &n), 1);
	CHECK_STR_EQ(dc, "dc3");
	CHECK_INT_EQ(take(f, NULL, 4, &dc, &n), 1); /* back home */
	CHECK(dc == NULL && n == 4);
	CHECK_INT_EQ(take(f, "dc9", 1, &dc, &n), 0); /* not a listed datacenter */
	CHECK(!consul_failover_serving(f, "web", &dc));
	consul_failover_free(f);
}
