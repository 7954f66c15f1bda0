/* Pure logic of the mTLS module: SPIFFE ID parsing and formatting, authorization matching and
 * the deny-log limiter, the retry budget and backoff (injected clock and random values), and the
 * CONNECT request validation of the tunnel's wire format. */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>

#include "mtls/authz.h"
#include "mtls/retry.h"
#include "mtls/spiffe.h"
#include "mtls/wire.h"
#include "test.h"

#define SEC 1000000000ull
#define MS 1000000ull

static int parse(const char *uri, struct spiffe_id *id, const char **why)
{
	return spiffe_parse(uri, strlen(uri), id, why);
}

TEST(spiffe_parses_consul_service_ids)
{
	struct spiffe_id id;
	char buf[SPIFFE_ID_MAX];

	CHECK_INT_EQ(parse("spiffe://mesh.local/ns/default/dc/dc1/svc/api", &id, NULL), 0);
	CHECK_STR_EQ(id.trust_domain, "mesh.local");
	CHECK_STR_EQ(id.ns, "default");
	CHECK_STR_EQ(id.dc, "dc1");
	CHECK_STR_EQ(id.service, "api");
	CHECK_INT_EQ(spiffe_format(&id, buf, sizeof(buf)), 45);
	CHECK_STR_EQ(buf, "spiffe://mesh.local/ns/default/dc/dc1/svc/api");
	CHECK_INT_EQ(spiffe_service_id("a_b.example", "east-1", "web", buf, sizeof(buf)) > 0, 1);
	CHECK_STR_EQ(buf, "spiffe://a_b.example/ns/default/dc/east-1/svc/web");
	CHECK_INT_EQ(spiffe_format(&id, buf, 20), -ENOSPC);
}

TEST(spiffe_refuses_what_the_spec_forbids)
{
	static const struct {
		const char *uri, *why;
	} bad[] = {
		{ "SPIFFE://mesh.local/ns/default/dc/dc1/svc/api", "scheme" },
		{ "spiffe://Mesh.local/ns/default/dc/dc1/svc/api", "invalid character" },
		{ "spiffe://mesh.local:443/ns/default/dc/dc1/svc/api", "port" },
		{ "spiffe://u@mesh.local/ns/default/dc/dc1/svc/api", "user info" },
		{ "spiffe:///ns/default/dc/dc1/svc/api", "empty trust domain" },
		{ "spiffe://mesh.local", "no path" },
		{ "spiffe://mesh.local/", "empty path segment" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/api/", "empty path segment" },
		{ "spiffe://mesh.local/ns//dc/dc1/svc/api", "empty path segment" },
		{ "spiffe://mesh.local/ns/./dc/dc1/svc/api", "dot segment" },
		{ "spiffe://mesh.local/ns/../dc/dc1/svc/api", "dot segment" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/a%20i", "invalid character" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/api?x=1", "invalid character" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/api#f", "invalid character" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/API", "DNS label" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/-api", "DNS label" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/api", "not a service ID" },
		{ "spiffe://mesh.local/ns/default/dc/dc1/svc/api/x", "not a service ID" },
		{ "spiffe://mesh.local/ap/p/ns/default/dc/dc1/svc/api", "not a service ID" },
		{ "spiffe://mesh.local/workload/api", "not a service ID" },
	};
	struct spiffe_id id;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;

		if (parse(bad[i].uri, &id, &why) != -EINVAL) {
			test_fail(__FILE__, __LINE__, "accepted %s", bad[i].uri);
			continue;
		}
		CHECK_CONTAINS(why, bad[i].why);
	}
	/* A NUL or any byte past `len` is data, not an end. */
	CHECK_INT_EQ(
	    spiffe_parse("spiffe://mesh.local/ns/default/dc/dc1/svc/api\0x", 47, &id, NULL),
	    -EINVAL);
	CHECK_INT_EQ(
	    spiffe_parse("spiffe://mesh.local/ns/default/dc/dc1/svc/apiXYZ", 45, &id, NULL), 0);
}

static struct authz_policy *policy(enum authz_action def, const struct authz_rule *r, size_t n)
{
	struct authz_policy *p = authz_policy_new(def);

	CHECK(p && authz_policy_set_layer(p, AUTHZ_LAYER_CONFIG, r, n) == 0);
	return p;
}

TEST(authz_first_match_wins_then_default)
{
	const struct authz_rule rules[] = {
		{ "web", "api", AUTHZ_ALLOW },
		{ "*", "api", AUTHZ_DENY },
		{ "batch", "*", AUTHZ_ALLOW },
	};
	struct authz_policy *p = policy(AUTHZ_DENY, rules, 3);
	struct authz_decision d;

	d = authz_decide(p, "web", "api");
	CHECK_INT_EQ(d.action, AUTHZ_ALLOW);
	CHECK_INT_EQ(d.rule, 0);
	d = authz_decide(p, "batch", "api"); /* rule 1 comes before rule 2 */
	CHECK_INT_EQ(d.action, AUTHZ_DENY);
	CHECK_INT_EQ(d.rule, 1);
	d = authz_decide(p, "batch", "db");
	CHECK_INT_EQ(d.action, AUTHZ_ALLOW);
	CHECK_INT_EQ(d.rule, 2);
	d = authz_decide(p, "web", "db");
	CHECK_INT_EQ(d.action, AUTHZ_DENY);
	CHECK_INT_EQ(d.rule, -1);
	authz_policy_set_default(p, AUTHZ_ALLOW);
	CHECK_INT_EQ(authz_decide(p, "web", "db").action, AUTHZ_ALLOW);
	/* "webx" is not "web": names match exactly. */
	CHECK_INT_EQ(authz_decide(p, "webx", "api").action, AUTHZ_DENY);
	authz_policy_unref(p);
}

TEST(authz_layers_config_before_intentions_and_copies_are_independent)
{
	const struct authz_rule cfg[] = { { "web", "api", AUTHZ_DENY } };
	const struct authz_rule intentions[] = { { "*", "*", AUTHZ_ALLOW } };
	struct authz_policy *p = policy(AUTHZ_DENY, cfg, 1), *c;
	struct authz_decision d;

	CHECK_INT_EQ(authz_policy_set_layer(p, AUTHZ_LAYER_INTENTIONS, intentions, 1), 0);
	d = authz_decide(p, "web", "api");
	CHECK_INT_EQ(d.action, AUTHZ_DENY);
	CHECK_INT_EQ(d.layer, AUTHZ_LAYER_CONFIG);
	d = authz_decide(p, "db", "api");
	CHECK_INT_EQ(d.action, AUTHZ_ALLOW);
	CHECK_INT_EQ(d.layer, AUTHZ_LAYER_INTENTIONS);
	c = authz_policy_copy(p);
	CHECK(c != NULL);
	authz_policy_set_layer(c, AUTHZ_LAYER_INTENTIONS, NULL, 0);
	CHECK_INT_EQ(authz_decide(c, "db", "api").action, AUTHZ_DENY);
	CHECK_INT_EQ(authz_decide(p, "db", "api").action, AUTHZ_ALLOW);
	authz_policy_unref(authz_policy_ref(c));
	CHECK_INT_EQ(authz_decide(c, "web", "api").rule, 0);
	authz_policy_unref(c);
	authz_policy_unref(p);
}

TEST(authz_limiter_logs_each_pair_once_per_interval_and_caps_bursts)
{
	struct authz_limiter l;
	uint64_t t = 5 * SEC;
	int logged = 0;
	char src[16];

	authz_limiter_init(&l, 60 * SEC, 3);
	CHECK(authz_limiter_allow(&l, "web", "api", t));
	CHECK(!authz_limiter_allow(&l, "web", "api", t + 1));
	CHECK(!authz_limiter_allow(&l, "web", "api", t + 59 * SEC));
	CHECK(authz_limiter_allow(&l, "web", "api", t + 61 * SEC));
	/* The separator keeps ("ab","c") and ("a","bc") apart. */
	CHECK(authz_limiter_allow(&l, "ab", "c", t + 61 * SEC));
	CHECK(authz_limiter_allow(&l, "a", "bc", t + 61 * SEC));
	/* 3 lines per second at most, new pairs included. */
	CHECK(!authz_limiter_allow(&l, "x", "y", t + 61 * SEC));
	for (int i = 0; i < 10; i++) {
		snprintf(src, sizeof(src), "s%d", i);
		logged += authz_limiter_allow(&l, src, "api", t + 70 * SEC);
	}
	CHECK_INT_EQ(logged, 3);
	CHECK(l.suppressed >= 8);
}

TEST(retry_budget_allows_percent_of_requests_plus_floor)
{
	struct retry_budget b;
	uint64_t t = 100 * SEC;
	int ok = 0;

	retry_budget_init(&b, 20, 0);
	for (int i = 0; i < 50; i++)
		retry_budget_deposit(&b, t);
	for (int i = 0; i < 20; i++)
		ok += retry_budget_withdraw(&b, t);
	CHECK_INT_EQ(ok, 10); /* 20% of 50 */
	/* The floor: 1 per second over the 10 s window, with no traffic at all. */
	retry_budget_init(&b, 20, 1);
	ok = 0;
	for (int i = 0; i < 20; i++)
		ok += retry_budget_withdraw(&b, t);
	CHECK_INT_EQ(ok, 10);
	/* budget_percent 0 and no floor: never. */
	retry_budget_init(&b, 0, 0);
	retry_budget_deposit(&b, t);
	CHECK(!retry_budget_withdraw(&b, t));
}

TEST(retry_budget_forgets_what_left_the_window)
{
	struct retry_budget b;
	uint64_t t = 1000 * SEC;

	retry_budget_init(&b, 50, 0);
	for (int i = 0; i < 4; i++)
		retry_budget_deposit(&b, t);
	CHECK(retry_budget_withdraw(&b, t));
	CHECK(retry_budget_withdraw(&b, t + 9 * SEC));
	CHECK(!retry_budget_withdraw(&b, t + 9 * SEC)); /* 2 of 50% x 4 used */
	/* 10 s later the deposits and withdrawals of second t are gone. */
	CHECK(!retry_budget_withdraw(&b, t + 10 * SEC));
	for (int i = 0; i < 2; i++)
		retry_budget_deposit(&b, t + 10 * SEC);
	CHECK(!retry_budget_withdraw(&b, t + 10 * SEC)); /* the one at t+9 s is still inside */
	CHECK(retry_budget_withdraw(&b, t + 19 * SEC + 1));
	/* Fractions count: 20% of 7 deposits = 1.4 retries -> 1. */
	retry_budget_init(&b, 20, 0);
	for (int i = 0; i < 7; i++)
		retry_budget_deposit(&b, t);
	CHECK(retry_budget_withdraw(&b, t));
	CHECK(!retry_budget_withdraw(&b, t));
	/* A reload keeps the counts. */
	retry_budget_set(&b, 100, 0);
	CHECK(retry_budget_withdraw(&b, t));
}

TEST(retry_backoff_doubles_caps_and_jitters_within_half)
{
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 1, 0), 25 * MS / 2);
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 1, UINT32_MAX) <= 25 * MS, 1);
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 1, UINT32_MAX) > 24 * MS, 1);
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 2, 0), 25 * MS);
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 3, 0), 50 * MS);
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 5, 0), 125 * MS); /* 400 capped to 250 */
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 60, 0), 125 * MS);
	CHECK_INT_EQ(retry_backoff_ns(25 * MS, 250 * MS, 3, 1u << 31), 75 * MS);
}

static int add(struct wire_request *r, const char *n, const char *v)
{
	return wire_request_header(r, (const uint8_t *)n, strlen(n), (const uint8_t *)v, strlen(v));
}

TEST(wire_accepts_a_plain_connect_to_ip_port)
{
	struct wire_request r;
	char buf[64];

	wire_request_init(&r);
	CHECK_INT_EQ(add(&r, ":method", "CONNECT"), 0);
	CHECK_INT_EQ(add(&r, ":authority", "198.18.0.2:8080"), 0);
	CHECK_INT_EQ(
	    add(&r, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), 0);
	CHECK_INT_EQ(wire_request_finish(&r), 0);
	CHECK_INT_EQ(r.target.family, AF_INET);
	CHECK_INT_EQ(r.target.port, 8080);
	CHECK_CONTAINS(r.traceparent, "4bf92f35");
	CHECK_INT_EQ(wire_format_authority(&r.target, buf, sizeof(buf)), 15);
	CHECK_STR_EQ(buf, "198.18.0.2:8080");
	wire_request_init(&r);
	add(&r, ":authority", "[2001:db8::2]:443");
	add(&r, ":method", "CONNECT");
	CHECK_INT_EQ(wire_request_finish(&r), 0);
	CHECK_INT_EQ(r.target.family, AF_INET6);
	wire_format_authority(&r.target, buf, sizeof(buf));
	CHECK_STR_EQ(buf, "[2001:db8::2]:443");
}

/* One traceparent is kept as sent (traceparent.c judges it); a repeated, empty, oversized or
 * NUL-bearing one is unusable; none of them fails the CONNECT. */
TEST(wire_keeps_one_traceparent_and_never_fails_on_it)
{
	static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
	char big[WIRE_TRACEPARENT_MAX + 2];
	struct wire_request r;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	for (int c = 0; c < 4; c++) {
		wire_request_init(&r);
		add(&r, ":method", "CONNECT");
		add(&r, ":authority", "198.18.0.2:8080");
		if (c == 0) {
			CHECK_INT_EQ(add(&r, "traceparent", tp), 0);
			CHECK_INT_EQ(add(&r, "traceparent", tp), 0);
		} else if (c == 1) {
			CHECK_INT_EQ(add(&r, "traceparent", ""), 0);
		} else if (c == 2) {
			CHECK_INT_EQ(add(&r, "traceparent", big), 0);
		} else {
			CHECK_INT_EQ(wire_request_header(&r, (const uint8_t *)"traceparent", 11,
							 (const uint8_t *)"00-\0x", 6),
				     0);
		}
		CHECK_INT_EQ(wire_request_finish(&r), 0);
		CHECK(r.traceparent_bad);
		CHECK_STR_EQ(r.traceparent, "");
	}
	wire_request_init(&r);
	add(&r, ":method", "CONNECT");
	add(&r, ":authority", "198.18.0.2:8080");
	add(&r, "traceparent", tp);
	CHECK_STR_EQ(r.traceparent, tp);
	CHECK(!r.traceparent_bad);
}

TEST(wire_held_header_takes_plain_microseconds_only)
{
	static const struct {
		const char *v;
		uint64_t ns;
	} cases[] = {
		{ "0", 0 },	   { "1", 1000 }, { "250", 250000 }, { "9999999", 9999999000ull },
		{ "", 0 },	   { "-1", 0 },	  { "+5", 0 },	     { "12a", 0 },
		{ "10000000", 0 }, { " 12", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_INT_EQ(wire_held_ns((const uint8_t *)cases[i].v, strlen(cases[i].v)),
			     cases[i].ns);
}

TEST(wire_refuses_anything_but_a_plain_connect)
{
	static const struct {
		const char *n1, *v1, *n2, *v2, *why;
	} bad[] = {
		{ ":method", "GET", ":authority", "1.2.3.4:80", "not CONNECT" },
		{ ":method", "CONNECT", ":authority", "example.com:80", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "1.2.3.4", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "1.2.3.4:0", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "1.2.3.4:65536", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "1.2.3.4:080", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "1.2.3.4:+80", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "[fe80::1%eth0]:80", "not ip:port" },
		{ ":method", "CONNECT", ":authority", "2001:db8::1:80", "not ip:port" },
		{ ":method", "CONNECT", ":protocol", "websocket", "unexpected pseudo-header" },
		{ ":method", "CONNECT", ":path", "/", "unexpected pseudo-header" },
		{ ":method", "CONNECT", ":method", "CONNECT", "duplicate :method" },
		{ ":method", "CONNECT", "x", "y", "no :authority" },
		{ ":authority", "1.2.3.4:80", "x", "y", "no :method" },
		{ "x", "y", ":method", "CONNECT", "pseudo-header after a regular header" },
	};
	struct wire_request r;
	char big[WIRE_MAX_HEADER_BYTES];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		wire_request_init(&r);
		add(&r, bad[i].n1, bad[i].v1);
		add(&r, bad[i].n2, bad[i].v2);
		if (wire_request_finish(&r) != -EINVAL) {
			test_fail(__FILE__, __LINE__, "accepted case %zu", i);
			continue;
		}
		CHECK_CONTAINS(r.why, bad[i].why);
	}
	wire_request_init(&r);
	add(&r, ":method", "CONNECT");
	add(&r, ":authority", "1.2.3.4:80");
	for (int i = 0; i < WIRE_MAX_HEADERS + 1; i++)
		add(&r, "x", "y");
	CHECK_INT_EQ(wire_request_finish(&r), -EINVAL);
	CHECK_CONTAINS(r.why, "too many headers");
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	wire_request_init(&r);
	add(&r, ":method", "CONNECT");
	CHECK_INT_EQ(add(&r, "x", big), -EINVAL);
	CHECK_CONTAINS(r.why, "too large");
}

TEST(wire_status_tells_retriable_answers)
{
	CHECK(wire_status_retriable(WIRE_BACKEND_FAILED));
	CHECK(wire_status_retriable(WIRE_BACKEND_TIMEOUT));
	CHECK(wire_status_retriable(WIRE_UNAVAILABLE));
	CHECK(wire_status_retriable(WIRE_NOT_SERVED));
	CHECK(!wire_status_retriable(WIRE_DENIED));
	CHECK(!wire_status_retriable(WIRE_BAD_REQUEST));
	CHECK(!wire_status_retriable(WIRE_OK));
	CHECK_STR_EQ(wire_status_reason(WIRE_DENIED), "denied");
}
