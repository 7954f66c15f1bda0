/* Connection spans of the mTLS proxy (issue 12): the outbound leg draws the trace (sampled at
 * telemetry.tracing.sample_ratio), sends it on each CONNECT as a W3C `traceparent` whose
 * parent-id is the outbound leg's own span, and the inbound leg joins it as the SERVER span's
 * parent; an invalid traceparent is counted and ignored (the inbound leg then starts a trace of
 * its own), never half used. Each leg hands one record to the proxy's tracing hooks at its close
 * when it was sampled or did not end ok (failures are always exported, as for plain
 * connections). Worker thread only. */
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "mtls/proxy.h"

/* The ratio while tracing is on, negative while off. */
static double ratio(const struct worker *w)
{
	return w->tr.ratio && w->tr.span ? w->tr.ratio(w->tr.ctx) : -1;
}

void trace_outbound_begin(struct leg *l)
{
	struct leg_trace *t = &l->trace;
	double r = ratio(l->w);

	if (r < 0)
		return;
	t->on = true;
	trace_rng_id(&l->w->trng, t->trace_id, sizeof(t->trace_id));
	trace_rng_id(&l->w->trng, t->span_id, sizeof(t->span_id));
	t->sampled = trace_rng_draw(&l->w->trng, r);
}

/* The caller's trace context, when its traceparent is valid. */
static bool caller_context(struct leg *l, struct trace_context *c)
{
	const struct wire_request *req = &l->req;

	if (!req->traceparent[0] && !req->traceparent_bad)
		return false;
	if (!req->traceparent_bad &&
	    !traceparent_parse(req->traceparent, strlen(req->traceparent), c))
		return true;
	STAT_ADD(l->w->st.traceparent_invalid, 1);
	LOG_DEBUG("mtls", "invalid traceparent ignored", "source=%s value=%s", log_q(l->source_id),
		  log_q(req->traceparent));
	return false;
}

void trace_inbound_begin(struct leg *l)
{
	struct leg_trace *t = &l->trace;
	struct trace_context c;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	double r = ratio(l->w);

	if (r < 0)
		return;
	t->on = true;
	if (l->t && !getpeername(l->t->fd, (struct sockaddr *)&ss, &len))
		sockaddr_to_endpoint(&ss, &t->peer);
	trace_rng_id(&l->w->trng, t->span_id, sizeof(t->span_id));
	if (caller_context(l, &c)) {
		memcpy(t->trace_id, c.trace_id, sizeof(t->trace_id));
		memcpy(t->parent_span_id, c.span_id, sizeof(t->parent_span_id));
		t->sampled = c.sampled; /* the caller's decision, as W3C's sampled flag means */
		return;
	}
	trace_rng_id(&l->w->trng, t->trace_id, sizeof(t->trace_id));
	t->sampled = trace_rng_draw(&l->w->trng, r);
}

bool trace_header(const struct leg *l, char *buf, size_t len)
{
	struct trace_context c = { .sampled = l->trace.sampled };

	if (!l->trace.on)
		return false;
	memcpy(c.trace_id, l->trace.trace_id, sizeof(c.trace_id));
	memcpy(c.span_id, l->trace.span_id, sizeof(c.span_id));
	return traceparent_format(&c, buf, len) > 0;
}

void trace_result(struct leg *l, const char *result, const char *detail)
{
	if (!l->trace.on || l->trace.result)
		return;
	l->trace.result = result;
	snprintf(l->trace.detail, sizeof(l->trace.detail), "%s", detail ? detail : "");
}

/* Outbound: the app's connection to the service, the chosen backend, the other meshd. */
static void outbound_record(const struct leg *l, struct mtls_trace *r)
{
	r->dir = MTLS_TRACE_OUTBOUND;
	r->service = l->service;
	r->identity = l->identity;
	r->caller_id = "";
	r->vip = l->orig.vip;
	r->backend = l->target;
	r->peer = l->target;
	r->peer.port = outbound_peer_port(l);
	r->attempts = l->attempt;
	r->probe = l->orig.probe;
}

/* Inbound: the caller's verified identity, the local backend, the calling meshd. */
static void inbound_record(const struct leg *l, struct mtls_trace *r)
{
	r->dir = MTLS_TRACE_INBOUND;
	r->service = l->destination;
	r->identity = l->source;
	r->caller_id = l->source_id;
	r->backend = l->req.target;
	r->peer = l->trace.peer;
}

void trace_end(struct leg *l)
{
	const struct leg_trace *t = &l->trace;
	struct mtls_trace r = { 0 };

	if (!t->on)
		return;
	r.result = t->result ? t->result : l->state == L_ESTABLISHED ? "ok" : "failed";
	if (!t->sampled && !strcmp(r.result, "ok"))
		return;
	memcpy(r.trace_id, t->trace_id, sizeof(r.trace_id));
	memcpy(r.span_id, t->span_id, sizeof(r.span_id));
	memcpy(r.parent_span_id, t->parent_span_id, sizeof(r.parent_span_id));
	r.detail = t->detail;
	r.start_ns = l->started_ns;
	r.established_ns = t->established_ns;
	r.end_ns = evloop_now_ns();
	r.bytes_sent = l->bytes_up;
	r.bytes_received = l->bytes_down;
	if (l->role == LEG_OUTBOUND)
		outbound_record(l, &r);
	else
		inbound_record(l, &r);
	l->w->tr.span(l->w->tr.ctx, &r);
}
