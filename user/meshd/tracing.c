/* The tracing component: connection spans over OTLP (telemetry.tracing.*). It switches the
 * datapath's sampling on (mesh_trace: the ratio is drawn in BPF at each close), turns the
 * datapath's connection-close and reject events (a subscriber of the events fan-out, events.c:
 * the ring buffer has one reader) into one CLIENT span each, and the mTLS proxy's
 * finished connections into a CLIENT span (outbound) or a SERVER span (inbound) joined by the
 * CONNECT's traceparent (attributes after the OpenTelemetry semantic conventions plus the mesh's
 * own), and hands them to the exporter thread (user/telemetry/tracer.c). Runs on the event-loop
 * thread, except the mTLS hooks (proxy threads: m->trace_lock guards what they read); never
 * blocks on the network. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "meshd/meshd.h"
#include "mtls/mtls.h"
#include "telemetry/exposition.h"
#include "telemetry/tracer.h"
#include "telemetry/traceparent.h"

struct tracing {
	struct tracer *tracer; /* written under m->trace_lock */
	double ratio;	       /* telemetry.tracing.sample_ratio; under m->trace_lock */
	struct trace_rng rng;  /* loop thread's trace and span ids */
	char host[256];
};

/* CLOCK_MONOTONIC (the datapath's clock) to Unix nanoseconds. */
static uint64_t unix_ns(uint64_t mono_ns)
{
	struct timespec rt, mt;

	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mt);
	return mono_ns + ((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) -
	       ((uint64_t)mt.tv_sec * 1000000000ull + (uint64_t)mt.tv_nsec);
}

/* Address and port attributes, e.g. server.address + server.port. */
static void endpoint_attrs(struct span *s, const char *addr_key, const char *port_key,
			   const struct config_endpoint *ep)
{
	char buf[INET6_ADDRSTRLEN] = "";

	if (!ep->family)
		return;
	inet_ntop(ep->family, &ep->addr, buf, sizeof(buf));
	span_attr_str(s, addr_key, buf);
	span_attr_int(s, port_key, ep->port);
}

/* What every connection span carries: the service address as the server (the logical
 * destination), the transport, the mesh's service. */
static void common_attrs(struct span *s, const struct datapath_event *ev)
{
	snprintf(s->name, sizeof(s->name), "connect %s", ev->service);
	s->kind = SPAN_KIND_CLIENT;
	endpoint_attrs(s, "server.address", "server.port", &ev->vip);
	span_attr_str(s, "network.transport", "tcp");
	span_attr_str(s, "network.type", ev->vip.family == AF_INET6 ? "ipv6" : "ipv4");
	span_attr_str(s, "mesh.service", ev->service);
}

static void conn_span(struct span *s, const struct datapath_event *ev)
{
	char be[64];

	common_attrs(s, ev);
	s->start_unix_ns = unix_ns(ev->conn.start_ns);
	s->end_unix_ns = unix_ns(ev->ts_ns);
	endpoint_attrs(s, "network.peer.address", "network.peer.port", &ev->conn.remote);
	endpoint_attrs(s, "network.local.address", "network.local.port", &ev->conn.local);
	span_attr_str(s, "mesh.backend", config_endpoint_str(&ev->backend, be, sizeof(be)));
	span_attr_str(s, "mesh.result", ev->conn.failed ? "failed" : "ok");
	span_attr_str(s, "mesh.breaker.state", datapath_circuit_name((int)ev->conn.breaker));
	span_attr_bool(s, "mesh.breaker.moved", ev->conn.breaker_moved);
	span_attr_bool(s, "mesh.probe", ev->conn.probe);
	span_attr_bool(s, "mesh.sampled", ev->conn.sampled);
	span_attr_int(s, "mesh.bytes_sent", (int64_t)ev->conn.bytes_sent);
	span_attr_int(s, "mesh.bytes_received", (int64_t)ev->conn.bytes_received);
	if (ev->conn.est_ns >= ev->conn.start_ns && ev->conn.est_ns)
		span_attr_int(s, "mesh.connect_latency_ns",
			      (int64_t)(ev->conn.est_ns - ev->conn.start_ns));
	if (ev->conn.failed) {
		s->status = SPAN_STATUS_ERROR;
		snprintf(s->status_message, sizeof(s->status_message), "connect failed: %.50s", be);
	}
}

static void reject_span(struct span *s, const struct datapath_event *ev)
{
	const char *reason = datapath_reject_reason_name(ev->reason);

	common_attrs(s, ev);
	s->start_unix_ns = s->end_unix_ns = unix_ns(ev->ts_ns);
	span_attr_str(s, "mesh.result", "rejected");
	span_attr_str(s, "mesh.reject_reason", reason);
	s->status = SPAN_STATUS_ERROR;
	snprintf(s->status_message, sizeof(s->status_message), "rejected: %s", reason);
}

/* Events subscriber (events.c reads the datapath's ring buffer once, for every subscriber):
 * connection closes and rejects become spans while tracing is on. */
static void on_event(const struct datapath_event *ev, void *arg)
{
	struct tracing *t = arg;
	struct span s;

	if (!t->tracer || (ev->type != MESH_EV_CONN && ev->type != MESH_EV_REJECT))
		return;
	memset(&s, 0, sizeof(s));
	trace_rng_id(&t->rng, s.trace_id, sizeof(s.trace_id));
	trace_rng_id(&t->rng, s.span_id, sizeof(s.span_id));
	if (ev->type == MESH_EV_CONN)
		conn_span(&s, ev);
	else
		reject_span(&s, ev);
	tracer_submit(t->tracer, &s);
}

/* A tracer for `cfg` (NULL with tracing off, or on failure: logged, errno set). */
static struct tracer *new_tracer(struct meshd *m, struct tracing *t, const struct mesh_config *cfg)
{
	struct tracer_opts o = {
		.endpoint = cfg->tracing.endpoint,
		.json = cfg->tracing.protocol == CONFIG_TRACING_JSON,
		.resource = { .service_name = "unknown_service",
			      .host_name = cfg->node_name ? cfg->node_name : t->host,
			      .version = MESH_VERSION },
		.counters = &m->trace_counters,
	};
	struct tracer *tr;

	if (!cfg->tracing.endpoint) {
		errno = 0;
		return NULL;
	}
	tr = tracer_new(&o);
	if (!tr)
		LOG_ERR("tracing", "cannot start the span exporter", "err=%s",
			log_q(strerror(errno)));
	else
		LOG_INFO("tracing", "exporting connection spans",
			 "endpoint=%s protocol=%s ratio=%g", log_q(cfg->tracing.endpoint),
			 o.json ? "http/json" : "http/protobuf", cfg->tracing.sample_ratio);
	return tr;
}

/* The datapath's side: sampling on with an exporter, off without. */
static int set_datapath(struct meshd *m, const struct mesh_config *cfg, bool on)
{
	int err = m->dp ? datapath_set_tracing(m->dp, on, cfg->tracing.sample_ratio) : 0;

	if (err)
		LOG_ERR("tracing", "cannot set the datapath's sampling", "err=%s",
			log_q(strerror(-err)));
	return err;
}

/* --- mTLS connections (proxy threads) ---------------------------------------------------------- */

static const char *or_unknown(const char *s)
{
	return s && *s ? s : "unknown";
}

/* The mTLS attributes both sides share. */
static void mtls_common(struct span *s, const struct mtls_trace *r)
{
	snprintf(s->name, sizeof(s->name), "connect %s", or_unknown(r->service));
	s->start_unix_ns = unix_ns(r->start_ns);
	s->end_unix_ns = unix_ns(r->end_ns);
	span_attr_str(s, "network.transport", "tcp");
	span_attr_str(s, "mesh.service", r->service);
	span_attr_bool(s, "mesh.mtls", true);
	span_attr_str(s, "mesh.result", r->result);
	span_attr_int(s, "mesh.bytes_sent", (int64_t)r->bytes_sent);
	span_attr_int(s, "mesh.bytes_received", (int64_t)r->bytes_received);
	if (r->established_ns >= r->start_ns && r->established_ns)
		span_attr_int(s, "mesh.connect_latency_ns",
			      (int64_t)(r->established_ns - r->start_ns));
	if (strcmp(r->result, "ok")) {
		s->status = SPAN_STATUS_ERROR;
		snprintf(s->status_message, sizeof(s->status_message), "%s%s%.40s", r->result,
			 r->detail[0] ? ": " : "", r->detail);
	}
}

/* Outbound: the caller's CLIENT span, under the caller identity's service.name; the server is
 * the service address, the peer the backend host's meshd. */
static void mtls_client_span(struct span *s, const struct mtls_trace *r)
{
	char be[64];

	s->kind = SPAN_KIND_CLIENT;
	snprintf(s->service_name, sizeof(s->service_name), "%s",
		 r->identity[0] ? r->identity : "unknown_service"); /* OTel's default */
	mtls_common(s, r);
	endpoint_attrs(s, "server.address", "server.port", &r->vip);
	endpoint_attrs(s, "network.peer.address", "network.peer.port", &r->peer);
	span_attr_str(s, "network.type", r->vip.family == AF_INET6 ? "ipv6" : "ipv4");
	if (r->backend.family)
		span_attr_str(s, "mesh.backend", config_endpoint_str(&r->backend, be, sizeof(be)));
	span_attr_str(s, "mesh.identity", r->identity);
	span_attr_int(s, "mesh.attempts", r->attempts);
	span_attr_bool(s, "mesh.probe", r->probe);
}

/* Inbound: the SERVER span, on behalf of the local service; the caller is named by its verified
 * SPIFFE ID, the peer is the calling meshd, the server the local backend. */
static void mtls_server_span(struct span *s, const struct mtls_trace *r)
{
	s->kind = SPAN_KIND_SERVER;
	snprintf(s->service_name, sizeof(s->service_name), "%s", or_unknown(r->service));
	mtls_common(s, r);
	endpoint_attrs(s, "server.address", "server.port", &r->backend);
	endpoint_attrs(s, "network.peer.address", "network.peer.port", &r->peer);
	span_attr_str(s, "network.type", r->peer.family == AF_INET6 ? "ipv6" : "ipv4");
	span_attr_str(s, "mesh.source", r->identity);
	span_attr_str(s, "mesh.source.spiffe_id", r->caller_id);
}

static double mtls_ratio(void *ctx)
{
	struct meshd *m = ctx;
	double r = -1;

	pthread_mutex_lock(&m->trace_lock);
	if (m->tracing && m->tracing->tracer)
		r = m->tracing->ratio;
	pthread_mutex_unlock(&m->trace_lock);
	return r;
}

static void mtls_span(void *ctx, const struct mtls_trace *r)
{
	struct meshd *m = ctx;
	struct span s;

	memset(&s, 0, sizeof(s));
	memcpy(s.trace_id, r->trace_id, sizeof(s.trace_id));
	memcpy(s.span_id, r->span_id, sizeof(s.span_id));
	memcpy(s.parent_span_id, r->parent_span_id, sizeof(s.parent_span_id));
	if (r->dir == MTLS_TRACE_OUTBOUND)
		mtls_client_span(&s, r);
	else
		mtls_server_span(&s, r);
	pthread_mutex_lock(&m->trace_lock);
	if (m->tracing && m->tracing->tracer)
		tracer_submit(m->tracing->tracer, &s);
	pthread_mutex_unlock(&m->trace_lock);
}

void tracing_mtls_hooks(struct meshd *m, struct mtls_tracing *out)
{
	*out = (struct mtls_tracing){ .ctx = m, .ratio = mtls_ratio, .span = mtls_span };
}

/* --- the component ------------------------------------------------------------------------------ */

/* Swaps in `tr` and `ratio` where the proxy threads look; returns the tracer swapped out. */
static struct tracer *publish(struct meshd *m, struct tracing *t, struct tracer *tr, double ratio)
{
	struct tracer *old;

	pthread_mutex_lock(&m->trace_lock);
	old = t->tracer;
	t->tracer = tr;
	t->ratio = ratio;
	pthread_mutex_unlock(&m->trace_lock);
	return old;
}

int tracing_start(struct meshd *m)
{
	struct tracing *t = calloc(1, sizeof(*t));
	struct tracer *tr;
	int err;

	if (!t)
		return -ENOMEM;
	trace_rng_seed(&t->rng);
	if (gethostname(t->host, sizeof(t->host) - 1))
		snprintf(t->host, sizeof(t->host), "unknown");
	tr = new_tracer(m, t, m->cfg);
	if (!tr && errno) {
		err = -errno;
		free(t);
		return err;
	}
	publish(m, t, tr, m->cfg->tracing.sample_ratio);
	pthread_mutex_lock(&m->trace_lock);
	m->tracing = t;
	pthread_mutex_unlock(&m->trace_lock);
	err = events_subscribe(m, on_event, t);
	if (!err)
		err = set_datapath(m, m->cfg, tr != NULL);
	if (err)
		tracing_stop(m);
	return err;
}

/* The datapath stays pinned after meshd: with nobody reading, close records would only fill the
 * ring buffer the breaker events share. */
void tracing_stop(struct meshd *m)
{
	struct tracing *t = m->tracing;

	if (!t)
		return;
	events_unsubscribe(m, on_event, t);
	if (m->cfg)
		set_datapath(m, m->cfg, false);
	pthread_mutex_lock(&m->trace_lock);
	m->tracing = NULL;
	pthread_mutex_unlock(&m->trace_lock);
	tracer_free(t->tracer);
	free(t);
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* A new endpoint or protocol gets a new exporter (started before the old one goes, so a failure
 * keeps the old); a new ratio only a datapath write (and the proxy's next draw). */
int tracing_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		   const struct config_plan *plan)
{
	struct tracing *t = m->tracing;
	struct tracer *tr = t ? t->tracer : NULL, *prev;

	if (!t)
		return 0;
	if (!same_str(old->tracing.endpoint, new->tracing.endpoint) ||
	    old->tracing.protocol != new->tracing.protocol ||
	    !same_str(old->node_name, new->node_name)) {
		tr = new_tracer(m, t, new);
		if (!tr && errno)
			return -errno;
	}
	prev = publish(m, t, tr, new->tracing.sample_ratio);
	if (prev != tr)
		tracer_free(prev);
	return set_datapath(m, new, tr != NULL);
}
