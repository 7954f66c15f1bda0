/* Unit tests for the Prometheus writer (common/prom.c) and meshd's exposition built from snapshot
 * structs (telemetry/exposition.c): names, labels, escaping, family grouping. */
#include <errno.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/prom.h"
#include "telemetry/exposition.h"
#include "test.h"

static const char *reason_name(int r)
{
	static const char *const names[] = { NULL, "circuit_open", "no_healthy_backend",
					     "max_connections" };
	return r >= 0 && r < 4 ? names[r] : "unknown";
}

static const char *counter_name(int c)
{
	static const char *const names[] = { "connect", NULL, "redirected" };
	return c >= 0 && c < 3 ? names[c] : NULL;
}

TEST(label_values_are_escaped)
{
	struct strbuf l = STRBUF_INIT, out = STRBUF_INIT;

	prom_label(&l, "a", "x\"y\\z\nw");
	prom_label(&l, "b", "plain");
	CHECK_STR_EQ(l.data, "a=\"x\\\"y\\\\z\\nw\",b=\"plain\"");
	prom_sample_u64(&out, "m_total", l.data, "result=\"ok\"", 18446744073709551615ull);
	CHECK_STR_EQ(out.data, "m_total{a=\"x\\\"y\\\\z\\nw\",b=\"plain\",result=\"ok\"} "
			       "18446744073709551615\n");
	strbuf_free(&l);
	strbuf_free(&out);
}

/* The fixed-buffer label writer escapes exactly as prom_label (one escaper behind both) and
 * appends nothing when the list would not fit. */
TEST(label_buffer_same_as_strbuf)
{
	struct strbuf l = STRBUF_INIT;
	char buf[64] = "", small[16] = "k=\"v\"";

	prom_label(&l, "service", "a\"b\\c\nd");
	prom_label(&l, "backend", "127.0.0.1:80");
	CHECK_INT_EQ(prom_label_buf(buf, sizeof(buf), "service", "a\"b\\c\nd"), 0);
	CHECK_INT_EQ(prom_label_buf(buf, sizeof(buf), "backend", "127.0.0.1:80"), 0);
	CHECK_STR_EQ(buf, l.data);
	CHECK_INT_EQ(prom_label_buf(small, sizeof(small), "x", "123456"), -ENAMETOOLONG);
	CHECK_STR_EQ(small, "k=\"v\"");
	CHECK_INT_EQ(prom_label_buf(small, sizeof(small), "x", "1234"), 0);
	CHECK_STR_EQ(small, "k=\"v\",x=\"1234\"");
	strbuf_free(&l);
}

TEST(family_header_and_unlabelled_sample)
{
	struct strbuf out = STRBUF_INIT;

	prom_family(&out, "meshd_up", "gauge", "line one\nback\\slash");
	prom_sample_u64(&out, "meshd_up", NULL, NULL, 0);
	prom_sample_double(&out, "x_seconds", "", NULL, 1.5);
	prom_sample_nanos(&out, "y_seconds", NULL, NULL, 2000000000);
	prom_sample_nanos(&out, "z_seconds", NULL, NULL, 1000050);
	CHECK_STR_EQ(out.data, "# HELP meshd_up line one\\nback\\\\slash\n# TYPE meshd_up gauge\n"
			       "meshd_up 0\nx_seconds 1.5\ny_seconds 2\nz_seconds 0.00100005\n");
	strbuf_free(&out);
}

static struct datapath_backend_stats backend(const char *svc, const char *ip, uint16_t port)
{
	struct datapath_backend_stats b = { .service = svc };

	b.backend.family = AF_INET;
	inet_pton(AF_INET, ip, &b.backend.addr.v4);
	b.backend.port = port;
	return b;
}

static char *render_sample(struct expo_daemon *d)
{
	struct exposition *e = expo_new(reason_name);
	struct datapath_service_stats s = { .service = "api",
					    .bytes_sent = 100,
					    .bytes_received = 2000,
					    .passthrough = 4,
					    .panic = 6 };
	struct datapath_backend_stats b1 = backend("api", "127.0.0.1", 8081);
	struct datapath_backend_stats b2 = backend("api", "127.0.0.1", 8082);
	struct strbuf out = STRBUF_INIT;

	s.rejects[1] = 3;
	s.rejects[3] = 2;
	b1.conn_ok = 7;
	b1.conn_failed = 1;
	b1.active = 2;
	b1.healthy = true;
	b2.circuit = DATAPATH_CIRCUIT_OPEN;
	b2.transitions_to[DATAPATH_CIRCUIT_OPEN] = 5;
	b2.latency_ewma_ns = 250000;
	expo_service(&s, e);
	expo_backend(&b1, e);
	expo_backend(&b2, e);
	CHECK_INT_EQ(expo_render(e, d, &out), 0);
	expo_free(e);
	return strbuf_detach(&out, NULL);
}

TEST(exposition_has_backend_and_service_samples)
{
	struct expo_daemon d = { .version = "1.2.3",
				 .config_generation = 4,
				 .reloads = { 3, 1 },
				 .n_datapath_counters = 3,
				 .counter_name = counter_name,
				 .datapath_counters = { 10, 20, 30 } };
	char *t = render_sample(&d);

	CHECK_CONTAINS(t, "meshd_build_info{version=\"1.2.3\"} 1\n");
	CHECK_CONTAINS(t, "meshd_config_generation 4\n");
	CHECK_CONTAINS(t, "meshd_config_reloads_total{result=\"error\"} 1\n");
	CHECK_CONTAINS(t, "meshd_connections_total{service=\"api\",backend=\"127.0.0.1:8081\","
			  "result=\"ok\"} 7\n");
	CHECK_CONTAINS(t, "meshd_connections_total{service=\"api\",backend=\"127.0.0.1:8081\","
			  "result=\"failed\"} 1\n");
	CHECK_CONTAINS(t, "meshd_connections_total{service=\"api\",backend=\"\","
			  "result=\"rejected\"} 5\n");
	CHECK_CONTAINS(t, "meshd_rejects_total{service=\"api\",reason=\"circuit_open\"} 3\n");
	CHECK_CONTAINS(t, "meshd_rejects_total{service=\"api\",reason=\"max_connections\"} 2\n");
	CHECK(!strstr(t, "reason=\"(null)\""));
	CHECK(!strstr(t, "reason=\"unknown\""));
	CHECK_CONTAINS(t, "meshd_bytes_total{service=\"api\",direction=\"received\"} 2000\n");
	CHECK_CONTAINS(t, "meshd_backend_active_connections{service=\"api\","
			  "backend=\"127.0.0.1:8081\"} 2\n");
	CHECK_CONTAINS(t, "meshd_backend_healthy{service=\"api\",backend=\"127.0.0.1:8082\"} 0\n");
	CHECK_CONTAINS(
	    t, "meshd_backend_circuit_state{service=\"api\",backend=\"127.0.0.1:8082\"} 1\n");
	CHECK_CONTAINS(t,
		       "meshd_circuit_transitions_total{service=\"api\",backend=\"127.0.0.1:8082\","
		       "to=\"open\"} 5\n");
	CHECK_CONTAINS(t, "meshd_backend_connect_latency_seconds{service=\"api\","
			  "backend=\"127.0.0.1:8082\"} 0.00025\n");
	CHECK_CONTAINS(t, "meshd_discovery_sync_total{backend=\"static\",result=\"ok\"} 0\n");
	CHECK_CONTAINS(t, "meshd_panic_connections_total{service=\"api\"} 6\n");
	CHECK_CONTAINS(t, "meshd_datapath_events_total{event=\"connect\"} 10\n");
	CHECK_CONTAINS(t, "meshd_datapath_events_total{event=\"redirected\"} 30\n");
	CHECK(!strstr(t, "event=\"(null)\""));
	CHECK_CONTAINS(t, "meshd_mtls_handshakes_total{direction=\"outbound\",result=\"ok\","
			  "reason=\"ok\"} 0\n");
	free(t);
}

/* Every sample follows its own family's TYPE line, and each family appears once. */
TEST(exposition_groups_families)
{
	struct expo_daemon d = { 0 };
	char *t = render_sample(&d), *line, *save = NULL;
	char family[128] = "";
	int types = 0, bad = 0;

	for (line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "# TYPE ", 7)) {
			sscanf(line + 7, "%127s", family);
			types++;
		} else if (line[0] != '#' && strncmp(line, family, strlen(family)) != 0) {
			bad++;
		}
	}
	CHECK_INT_EQ(bad, 0);
	CHECK(types >= 20);
	free(t);
}

TEST(exposition_resets_between_scrapes)
{
	struct exposition *e = expo_new(reason_name);
	struct datapath_backend_stats b = backend("api", "127.0.0.1", 1);
	struct expo_daemon d = { 0 };
	struct strbuf a = STRBUF_INIT, c = STRBUF_INIT;

	expo_backend(&b, e);
	CHECK_INT_EQ(expo_render(e, &d, &a), 0);
	CHECK_INT_EQ(expo_render(e, &d, &c), 0);
	CHECK_CONTAINS(a.data, "backend=\"127.0.0.1:1\"");
	CHECK(!strstr(c.data, "backend=\"127.0.0.1:1\""));
	strbuf_free(&a);
	strbuf_free(&c);
	expo_free(e);
}

/* Builds an exposition of `n` services with one backend each (labels unique), plus `dups`
 * second copies of services and backends seen again (moved ids during a stepped read). */
static struct exposition *collected(int n, int dups)
{
	struct exposition *e = expo_new(reason_name);
	char names[64][16];

	for (int i = 0; i < n + dups && i < 64; i++) {
		struct datapath_service_stats s = { .service = names[i % n], .bytes_sent = i };
		struct datapath_backend_stats b;

		snprintf(names[i % n], sizeof(names[0]), "svc-%d", i % n);
		b = backend(names[i % n], "127.0.0.1", (uint16_t)(1000 + i % n));
		b.conn_ok = i;
		expo_service(&s, e);
		expo_backend(&b, e);
	}
	return e;
}

/* A stepped render (any piece size) writes exactly what the one-shot render writes. */
TEST(exposition_steps_same_as_whole)
{
	struct expo_daemon d = { .version = "t", .counter_name = counter_name };
	struct strbuf whole = STRBUF_INIT;
	struct exposition *e = collected(40, 0);

	CHECK_INT_EQ(expo_render(e, &d, &whole), 0);
	expo_free(e);
	for (size_t max = 1; max <= 64; max *= 4) {
		struct strbuf out = STRBUF_INIT;
		struct expo_pos pos = { 0 };
		int rc, pieces = 0;

		e = collected(40, 0);
		do {
			rc = expo_render_step(e, &d, &pos, max, &out);
			pieces++;
		} while (rc == 1 && pieces < 100000);
		CHECK_INT_EQ(rc, 0);
		CHECK(max > 64 || pieces > 13);
		CHECK_STR_EQ(out.data, whole.data);
		strbuf_free(&out);
		expo_free(e);
	}
	strbuf_free(&whole);
}

/* An object reported twice (it moved to another id between two steps of the read) gives one
 * series, with the values read first. */
TEST(exposition_keeps_first_copy_of_a_label_set)
{
	struct expo_daemon d = { 0 };
	struct strbuf out = STRBUF_INIT;
	struct exposition *e = collected(20, 20);
	const char *p;
	int n = 0;

	CHECK_INT_EQ(expo_render(e, &d, &out), 0);
	for (p = out.data; (p = strstr(p, "meshd_backend_healthy{")); p++)
		n++;
	CHECK_INT_EQ(n, 20);
	CHECK_CONTAINS(out.data, "meshd_bytes_total{service=\"svc-3\",direction=\"sent\"} 3\n");
	CHECK(!strstr(out.data, "meshd_bytes_total{service=\"svc-3\",direction=\"sent\"} 23\n"));
	CHECK_CONTAINS(out.data, "meshd_connections_total{service=\"svc-3\",backend=\"127.0.0.1:"
				 "1003\",result=\"ok\"} 3\n");
	strbuf_free(&out);
	expo_free(e);
}

TEST(endpoint_formatting)
{
	struct config_endpoint ep = { .family = AF_INET6, .port = 443 };
	char buf[64];

	inet_pton(AF_INET6, "::1", &ep.addr.v6);
	CHECK_STR_EQ(config_endpoint_str(&ep, buf, sizeof(buf)), "[::1]:443");
	ep.family = AF_INET;
	inet_pton(AF_INET, "10.0.200.255", &ep.addr.v4);
	ep.port = 65535;
	CHECK_STR_EQ(config_endpoint_str(&ep, buf, sizeof(buf)), "10.0.200.255:65535");
	inet_pton(AF_INET, "0.0.0.0", &ep.addr.v4);
	ep.port = 0;
	CHECK_STR_EQ(config_endpoint_str(&ep, buf, sizeof(buf)), "0.0.0.0:0");
}

/* Two services whose backends arrive after both (as datapath_stats reports them): each tally
 * goes to its own service, and the state set has one 1 per service. */
TEST(exposition_service_state)
{
	struct exposition *e = expo_new(reason_name);
	struct datapath_service_stats a = { .service = "a", .panic_percent = 50 };
	struct datapath_service_stats b = { .service = "b", .panic_percent = 50 };
	struct datapath_backend_stats a1 = backend("a", "127.0.0.1", 1);
	struct datapath_backend_stats a2 = backend("a", "127.0.0.1", 2);
	struct datapath_backend_stats b1 = backend("b", "127.0.0.1", 3);
	struct datapath_backend_stats b2 = backend("b", "127.0.0.1", 4);
	struct expo_daemon d = { 0 };
	struct strbuf out = STRBUF_INIT;

	a1.healthy = a2.healthy = true;	    /* a: healthy */
	b1.healthy = true;		    /* b: b1 healthy but open, b2 unhealthy:   */
	b1.circuit = DATAPATH_CIRCUIT_OPEN; /* none usable: 0 < 50% -> panic */
	expo_service(&a, e);
	expo_service(&b, e);
	expo_backend(&a1, e);
	expo_backend(&a2, e);
	expo_backend(&b1, e);
	expo_backend(&b2, e);
	CHECK_INT_EQ(expo_render(e, &d, &out), 0);
	CHECK_CONTAINS(out.data, "meshd_service_state{service=\"a\",state=\"healthy\"} 1\n");
	CHECK_CONTAINS(out.data, "meshd_service_state{service=\"a\",state=\"panic\"} 0\n");
	CHECK_CONTAINS(out.data, "meshd_service_state{service=\"b\",state=\"panic\"} 1\n");
	CHECK_CONTAINS(out.data, "meshd_service_state{service=\"b\",state=\"healthy\"} 0\n");
	CHECK_CONTAINS(out.data, "meshd_service_state{service=\"b\",state=\"down\"} 0\n");
	CHECK_CONTAINS(out.data, "meshd_service_backends{service=\"a\"} 2\n");
	CHECK_CONTAINS(out.data, "meshd_service_backends_usable{service=\"a\"} 2\n");
	CHECK_CONTAINS(out.data, "meshd_service_backends{service=\"b\"} 2\n");
	CHECK_CONTAINS(out.data, "meshd_service_backends_usable{service=\"b\"} 0\n");
	strbuf_free(&out);
	expo_free(e);
}
