/* Builds meshd's exposition (exposition.h). Per-service and per-backend samples arrive one
 * object at a time from datapath_stats() but Prometheus wants each family's samples together, so
 * each collected family has its own buffer, concatenated after its HELP/TYPE at render time.
 * Runs on the event-loop thread during a scrape. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/prom.h"
#include "telemetry/exposition.h"

enum family {
	FAM_CONNECTIONS = 0,
	FAM_REJECTS,
	FAM_BYTES,
	FAM_PASSTHROUGH,
	FAM_ACTIVE,
	FAM_HEALTHY,
	FAM_CIRCUIT_STATE,
	FAM_CIRCUIT_TRANSITIONS,
	FAM_CONSECUTIVE_FAILURES,
	FAM_LATENCY,
	FAM__COUNT,
};

static const struct {
	const char *name, *type, *help;
} families[FAM__COUNT] = {
	[FAM_CONNECTIONS] = { "meshd_connections_total", "counter",
			      "Connections to a service address by backend and outcome (ok, "
			      "failed; "
			      "rejected by the datapath is counted per service with "
			      "backend=\"\")." },
	[FAM_REJECTS] = { "meshd_rejects_total", "counter",
			  "Connections the datapath refused, by service and reason." },
	[FAM_BYTES] = { "meshd_bytes_total", "counter",
			"Bytes on connections through a service address, by direction (sent by "
			"the client, received by the client)." },
	[FAM_PASSTHROUGH] = { "meshd_passthrough_connections_total", "counter",
			      "Connections to a service address let through untouched (fail "
			      "open)." },
	[FAM_ACTIVE] = { "meshd_backend_active_connections", "gauge",
			 "Open connections to a backend." },
	[FAM_HEALTHY] = { "meshd_backend_healthy", "gauge",
			  "1 when the backend passes its health checks, else 0." },
	[FAM_CIRCUIT_STATE] = { "meshd_backend_circuit_state", "gauge",
				"Circuit breaker state: 0 closed, 1 open, 2 half-open." },
	[FAM_CIRCUIT_TRANSITIONS] = { "meshd_circuit_transitions_total", "counter",
				      "Circuit breaker transitions of a backend, by target "
				      "state." },
	[FAM_CONSECUTIVE_FAILURES] = { "meshd_backend_consecutive_failures", "gauge",
				       "Consecutive failed connects to a backend (breaker "
				       "input)." },
	[FAM_LATENCY] = { "meshd_backend_connect_latency_seconds", "gauge",
			  "Moving average of the connect (handshake) time to a backend." },
};

struct exposition {
	const char *(*reason_name)(int reason);
	struct strbuf fam[FAM__COUNT];
	struct strbuf labels; /* scratch: the current object's label list */
};

struct exposition *expo_new(const char *(*reason_name)(int reason))
{
	struct exposition *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->reason_name = reason_name;
	return e;
}

void expo_free(struct exposition *e)
{
	int i;

	if (!e)
		return;
	for (i = 0; i < FAM__COUNT; i++)
		strbuf_free(&e->fam[i]);
	strbuf_free(&e->labels);
	free(e);
}

const char *expo_endpoint(const struct config_endpoint *ep, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	inet_ntop(ep->family, &ep->addr, ip, sizeof(ip));
	if (ep->family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip, ep->port);
	else
		snprintf(buf, len, "%s:%u", ip, ep->port);
	return buf;
}

void expo_service(const struct datapath_service_stats *s, void *arg)
{
	struct exposition *e = arg;
	struct strbuf *l = &e->labels;
	uint64_t rejected = 0;
	size_t base;
	int i;

	strbuf_reset(l);
	prom_label(l, "service", s->service);
	base = l->len;
	for (i = 0; i < 8; i++) {
		const char *reason = e->reason_name ? e->reason_name(i) : NULL;

		rejected += s->rejects[i];
		/* Unused slots of the 8-entry array have no name (or "unknown"): no series. */
		if (!reason || !strcmp(reason, "unknown"))
			continue;
		prom_label(l, "reason", reason);
		prom_sample_u64(&e->fam[FAM_REJECTS], families[FAM_REJECTS].name, l->data, NULL,
				s->rejects[i]);
		l->len = base;
		l->data[base] = '\0';
	}
	prom_sample_u64(&e->fam[FAM_CONNECTIONS], families[FAM_CONNECTIONS].name, l->data,
			"backend=\"\",result=\"rejected\"", rejected);
	prom_sample_u64(&e->fam[FAM_BYTES], families[FAM_BYTES].name, l->data, "direction=\"sent\"",
			s->bytes_sent);
	prom_sample_u64(&e->fam[FAM_BYTES], families[FAM_BYTES].name, l->data,
			"direction=\"received\"", s->bytes_received);
	prom_sample_u64(&e->fam[FAM_PASSTHROUGH], families[FAM_PASSTHROUGH].name, l->data, NULL,
			s->passthrough);
}

static void backend_sample(struct exposition *e, enum family f, const char *extra, uint64_t v)
{
	prom_sample_u64(&e->fam[f], families[f].name, e->labels.data, extra, v);
}

void expo_backend(const struct datapath_backend_stats *b, void *arg)
{
	struct exposition *e = arg;
	char ep[64];

	strbuf_reset(&e->labels);
	prom_label(&e->labels, "service", b->service);
	prom_label(&e->labels, "backend", expo_endpoint(&b->backend, ep, sizeof(ep)));
	backend_sample(e, FAM_CONNECTIONS, "result=\"ok\"", b->conn_ok);
	backend_sample(e, FAM_CONNECTIONS, "result=\"failed\"", b->conn_failed);
	backend_sample(e, FAM_ACTIVE, NULL, b->active);
	backend_sample(e, FAM_HEALTHY, NULL, b->healthy);
	backend_sample(e, FAM_CIRCUIT_STATE, NULL, (uint64_t)b->circuit);
	backend_sample(e, FAM_CIRCUIT_TRANSITIONS, "to=\"closed\"",
		       b->transitions_to[DATAPATH_CIRCUIT_CLOSED]);
	backend_sample(e, FAM_CIRCUIT_TRANSITIONS, "to=\"open\"",
		       b->transitions_to[DATAPATH_CIRCUIT_OPEN]);
	backend_sample(e, FAM_CIRCUIT_TRANSITIONS, "to=\"half_open\"",
		       b->transitions_to[DATAPATH_CIRCUIT_HALF_OPEN]);
	backend_sample(e, FAM_CONSECUTIVE_FAILURES, NULL, b->consecutive_failures);
	prom_sample_nanos(&e->fam[FAM_LATENCY], families[FAM_LATENCY].name, e->labels.data, NULL,
			  b->latency_ewma_ns);
}

static void render_config(struct strbuf *out, const struct expo_daemon *d)
{
	struct strbuf l = STRBUF_INIT;

	prom_label(&l, "version", d->version ? d->version : "unknown");
	prom_family(out, "meshd_build_info", "gauge",
		    "Always 1; the version label says which meshd.");
	prom_sample_u64(out, "meshd_build_info", l.data, NULL, 1);
	strbuf_free(&l);
	prom_family(out, "meshd_up", "gauge", "Always 1 while meshd serves this endpoint.");
	prom_sample_u64(out, "meshd_up", NULL, NULL, 1);
	prom_family(out, "meshd_ready", "gauge",
		    "1 when the datapath is attached and the config loaded (as /readyz).");
	prom_sample_u64(out, "meshd_ready", NULL, NULL, d->ready);
	prom_family(out, "meshd_config_generation", "gauge",
		    "Generation of the running config: 1 at start, +1 per applied reload.");
	prom_sample_u64(out, "meshd_config_generation", NULL, NULL, d->config_generation);
	prom_family(out, "meshd_config_reloads_total", "counter",
		    "Config reloads by result (error: the old config stayed).");
	prom_sample_u64(out, "meshd_config_reloads_total", NULL, "result=\"ok\"", d->reloads[0]);
	prom_sample_u64(out, "meshd_config_reloads_total", NULL, "result=\"error\"", d->reloads[1]);
}

static void render_discovery(struct strbuf *out, const struct expo_daemon *d)
{
	struct strbuf l = STRBUF_INIT;

	prom_label(&l, "backend", d->discovery ? d->discovery : "static");
	prom_family(out, "meshd_discovery_sync_total", "counter",
		    "Discovery synchronisations by discovery backend and result.");
	prom_sample_u64(out, "meshd_discovery_sync_total", l.data, "result=\"ok\"",
			d->discovery_sync[0]);
	prom_sample_u64(out, "meshd_discovery_sync_total", l.data, "result=\"error\"",
			d->discovery_sync[1]);
	prom_family(out, "meshd_discovery_last_sync_timestamp_seconds", "gauge",
		    "Unix time of the last successful discovery sync (0 = never).");
	prom_sample_double(out, "meshd_discovery_last_sync_timestamp_seconds", l.data, NULL,
			   d->discovery_last_sync_ts);
	strbuf_free(&l);
}

static void render_daemon_misc(struct strbuf *out, const struct expo_daemon *d)
{
	static const char *const mtls[2][2] = {
		{ "direction=\"inbound\",result=\"ok\"", "direction=\"inbound\",result=\"error\"" },
		{ "direction=\"outbound\",result=\"ok\"",
		  "direction=\"outbound\",result=\"error\"" },
	};
	int i, j;

	prom_family(out, "meshd_mtls_handshakes_total", "counter",
		    "TLS handshakes of the mTLS proxy by direction and result.");
	for (i = 0; i < 2; i++)
		for (j = 0; j < 2; j++)
			prom_sample_u64(out, "meshd_mtls_handshakes_total", NULL, mtls[i][j],
					d->mtls_handshakes[i][j]);
	prom_family(out, "meshd_health_transitions_total", "counter",
		    "Backend health-check state changes by new state.");
	prom_sample_u64(out, "meshd_health_transitions_total", NULL, "to=\"unhealthy\"",
			d->health_transitions[0]);
	prom_sample_u64(out, "meshd_health_transitions_total", NULL, "to=\"healthy\"",
			d->health_transitions[1]);
	if (d->rss_bytes) {
		prom_family(out, "process_resident_memory_bytes", "gauge",
			    "Resident memory of meshd.");
		prom_sample_u64(out, "process_resident_memory_bytes", NULL, NULL, d->rss_bytes);
	}
	prom_family(out, "process_start_time_seconds", "gauge", "Unix time meshd started.");
	prom_sample_double(out, "process_start_time_seconds", NULL, NULL, d->start_time_seconds);
}

int expo_render(struct exposition *e, const struct expo_daemon *d, struct strbuf *out)
{
	size_t total = 0;
	int i, err = 0;

	for (i = 0; i < FAM__COUNT; i++)
		total += e->fam[i].len + 512;
	strbuf_reserve(out, total + 8192); /* one allocation for the whole scrape */
	render_config(out, d);
	render_discovery(out, d);
	render_daemon_misc(out, d);
	for (i = 0; i < FAM__COUNT; i++) {
		prom_family(out, families[i].name, families[i].type, families[i].help);
		if (e->fam[i].len)
			strbuf_append(out, e->fam[i].data, e->fam[i].len);
		if (!err)
			err = strbuf_error(&e->fam[i]);
		/* Release, not reset: a scrape of 10,000 backends must not pin megabytes. */
		strbuf_free(&e->fam[i]);
	}
	return err ? err : strbuf_error(out);
}
