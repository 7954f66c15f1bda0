/* mTLS metric families behind expo_mtls.h. Label values are bounded: reasons and results are
 * fixed sets; authorization pairs are capped by the proxy (PAIRS_MAX, then "other"); identities
 * are the configured ones. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/prom.h"
#include "telemetry/expo_mtls.h"

static const char *const dirs[2] = { "inbound", "outbound" };

static void add_cert(const struct mtls_identity *id, void *arg)
{
	struct expo_mtls *x = arg;
	struct expo_mtls_cert *c;

	if (id->root || !id->has_cert)
		return;
	c = realloc(x->certs, (x->n_certs + 1) * sizeof(*c));
	if (!c)
		return;
	x->certs = c;
	c[x->n_certs].identity = strdup(id->service);
	c[x->n_certs].not_after = (double)id->not_after;
	if (c[x->n_certs].identity)
		x->n_certs++;
}

static void add_pair(const struct mtls_authz_pair *p, void *arg)
{
	struct expo_mtls *x = arg;
	struct expo_mtls_pair *q = realloc(x->pairs, (x->n_pairs + 1) * sizeof(*q));

	if (!q)
		return;
	x->pairs = q;
	q += x->n_pairs;
	q->source = strdup(p->source);
	q->destination = strdup(p->destination);
	q->allowed = p->allowed;
	q->denied = p->denied;
	if (q->source && q->destination)
		x->n_pairs++;
	else {
		free(q->source);
		free(q->destination);
	}
}

struct expo_mtls *expo_mtls_collect(struct mtls *m)
{
	struct expo_mtls *x = calloc(1, sizeof(*x));

	if (!x || !m)
		return x;
	mtls_stats(m, &x->st);
	mtls_identities(m, add_cert, x);
	mtls_authz_pairs(m, add_pair, x);
	return x;
}

void expo_mtls_free(struct expo_mtls *x)
{
	if (!x)
		return;
	for (size_t i = 0; i < x->n_certs; i++)
		free(x->certs[i].identity);
	for (size_t i = 0; i < x->n_pairs; i++) {
		free(x->pairs[i].source);
		free(x->pairs[i].destination);
	}
	free(x->certs);
	free(x->pairs);
	free(x);
}

static void handshakes(struct strbuf *out, const struct mtls_stats *st)
{
	char extra[160];

	prom_family(out, "meshd_mtls_handshakes_total", "counter",
		    "TLS handshakes of the mTLS proxy by direction, result and reason (ok, or why "
		    "it failed: unknown_ca, expired, spiffe_id, trust_domain, not_tls, ...).");
	for (int d = 0; d < 2; d++) {
		for (int r = 0; r < MTLS_REASONS_MAX && st->reason_names[r]; r++) {
			snprintf(extra, sizeof(extra),
				 "direction=\"%s\",result=\"%s\",reason=\"%s\"", dirs[d],
				 r ? "error" : "ok", st->reason_names[r]);
			prom_sample_u64(out, "meshd_mtls_handshakes_total", NULL, extra,
					st->handshakes[d][r]);
		}
	}
}

static void per_dir(struct strbuf *out, const char *name, const char *type, const char *help,
		    const uint64_t v[2])
{
	char extra[64];

	prom_family(out, name, type, help);
	for (int d = 0; d < 2; d++) {
		snprintf(extra, sizeof(extra), "direction=\"%s\"", dirs[d]);
		prom_sample_u64(out, name, NULL, extra, v[d]);
	}
}

static void connections(struct strbuf *out, const struct mtls_stats *st)
{
	uint64_t active[2] = {
		st->connections_active[0] > 0 ? (uint64_t)st->connections_active[0] : 0,
		st->connections_active[1] > 0 ? (uint64_t)st->connections_active[1] : 0
	};
	uint64_t tunnels[2] = { st->inbound_tunnels, st->pool_connections };
	char extra[96];

	per_dir(out, "meshd_mtls_connections_active", "gauge",
		"Proxied connections open now (outbound: applications, inbound: to backends).",
		active);
	per_dir(out, "meshd_mtls_connections_total", "counter", "Proxied connections accepted.",
		st->connections_total);
	per_dir(out, "meshd_mtls_tunnels", "gauge",
		"TLS connections to other meshds (outbound: the pool) and from them (inbound).",
		tunnels);
	prom_family(
	    out, "meshd_mtls_bytes_total", "counter",
	    "Payload bytes of proxied connections, sent to or received from the peer meshd.");
	for (int d = 0; d < 2; d++) {
		for (int w = 0; w < 2; w++) {
			snprintf(extra, sizeof(extra), "direction=\"%s\",way=\"%s\"", dirs[d],
				 w ? "received" : "sent");
			prom_sample_u64(out, "meshd_mtls_bytes_total", NULL, extra,
					st->bytes[d][w]);
		}
	}
}

static void retries(struct strbuf *out, const struct mtls_stats *st)
{
	static const char *const results[MTLS_RETRY_RESULTS] = { "retried", "exhausted", "budget",
								 "not_replayed" };
	char extra[64];

	prom_family(out, "meshd_mtls_retries_total", "counter",
		    "Connect retries of mTLS connections: retried (a later attempt succeeded), "
		    "exhausted (every attempt failed), budget (no retry: budget spent), "
		    "not_replayed (no retry: the application's early bytes may have reached a "
		    "backend).");
	for (int i = 0; i < MTLS_RETRY_RESULTS; i++) {
		snprintf(extra, sizeof(extra), "result=\"%s\"", results[i]);
		prom_sample_u64(out, "meshd_mtls_retries_total", NULL, extra, st->retries[i]);
	}
	prom_family(
	    out, "meshd_mtls_failed_total", "counter",
	    "Outbound mTLS connections that failed after every attempt (the app got a reset).");
	prom_sample_u64(out, "meshd_mtls_failed_total", NULL, NULL, st->failed);
	prom_family(out, "meshd_mtls_refused_total", "counter",
		    "Outbound mTLS connections refused before any attempt, by reason.");
	for (int i = 0; i < MTLS_REFUSE__COUNT; i++) {
		snprintf(extra, sizeof(extra), "reason=\"%s\"", mtls_refusal_name(i));
		prom_sample_u64(out, "meshd_mtls_refused_total", NULL, extra, st->refused[i]);
	}
	prom_family(out, "meshd_mtls_traceparent_invalid_total", "counter",
		    "Inbound CONNECTs whose W3C traceparent was malformed and ignored (the server "
		    "span starts a trace of its own).");
	prom_sample_u64(out, "meshd_mtls_traceparent_invalid_total", NULL, NULL,
			st->traceparent_invalid);
}

static void authz(struct strbuf *out, const struct expo_mtls *x)
{
	struct strbuf l = STRBUF_INIT;

	prom_family(
	    out, "meshd_authz_decisions_total", "counter",
	    "Authorization decisions on inbound mTLS connections by result, caller SPIFFE ID "
	    "(source) and local service (destination).");
	if (!x || !x->n_pairs) {
		prom_sample_u64(out, "meshd_authz_decisions_total", NULL, "result=\"allow\"", 0);
		prom_sample_u64(out, "meshd_authz_decisions_total", NULL, "result=\"deny\"", 0);
	}
	for (size_t i = 0; x && i < x->n_pairs; i++) {
		strbuf_reset(&l);
		prom_label(&l, "source", x->pairs[i].source);
		prom_label(&l, "destination", x->pairs[i].destination);
		prom_sample_u64(out, "meshd_authz_decisions_total", l.data, "result=\"allow\"",
				x->pairs[i].allowed);
		prom_sample_u64(out, "meshd_authz_decisions_total", l.data, "result=\"deny\"",
				x->pairs[i].denied);
	}
	prom_family(out, "meshd_authz_closed_total", "counter",
		    "Established inbound connections closed because a new policy denies them.");
	prom_sample_u64(out, "meshd_authz_closed_total", NULL, NULL, x ? x->st.authz_closed : 0);
	prom_family(out, "meshd_mtls_cert_expiry_timestamp_seconds", "gauge",
		    "Unix time the certificate of each local identity expires.");
	for (size_t i = 0; x && i < x->n_certs; i++) {
		strbuf_reset(&l);
		prom_label(&l, "identity", x->certs[i].identity);
		prom_sample_double(out, "meshd_mtls_cert_expiry_timestamp_seconds", l.data, NULL,
				   x->certs[i].not_after);
	}
	strbuf_free(&l);
}

void expo_mtls_render(struct strbuf *out, const struct expo_mtls *x)
{
	struct mtls_stats zero;

	memset(&zero, 0, sizeof(zero));
	zero.reason_names[0] = "ok";
	handshakes(out, x ? &x->st : &zero);
	connections(out, x ? &x->st : &zero);
	retries(out, x ? &x->st : &zero);
	authz(out, x);
}
