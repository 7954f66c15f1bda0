/* The outbound side: an application connection redirected by connect4 arrives on
 * mtls.outbound_listen; the datapath's record (keyed by the client's 4-tuple) names the service,
 * the backend connect4 chose and the caller's identity. Each attempt opens one CONNECT stream
 * over a pooled TLS connection to the backend host's meshd and sends the application's first
 * bytes (up to EARLY_BYTES) with it, kept until the answer. An attempt that fails before the
 * answer 200 feeds that backend's breaker and, within `load_balancer.retry` (attempts, jittered
 * exponential backoff, budget), moves to another backend, replaying the kept bytes, when the
 * remote meshd certainly passed nothing on (an error answer, a refused stream, nothing sent);
 * when it may have (a tunnel lost or a timeout after early bytes went), the application is
 * reset instead. The application sees a failure (a reset) only when no attempt succeeded.
 * Worker thread only. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "mtls/proxy.h"

#define ACCEPT_BATCH 64
#define MAX_BACKENDS 1024

static void start_attempt(struct leg *l);

static void refuse(struct leg *l, enum mtls_refusal why)
{
	STAT_ADD(l->w->st.refused[why], 1);
	trace_result(l, mtls_refusal_name(why), "refused");
	leg_close(l, true);
}

static const struct snap_service *service_of(const struct leg *l)
{
	return snap_service(l->w->snap, &l->orig.vip);
}

/* --- the per-service budget (shared by workers) ------------------------------------------------- */

static void budget_deposit(struct leg *l)
{
	const struct snap_service *s = service_of(l);

	if (!s || !s->budget)
		return;
	pthread_mutex_lock(l->w->snap->budget_lock);
	retry_budget_deposit(s->budget, evloop_now_ns());
	pthread_mutex_unlock(l->w->snap->budget_lock);
}

static bool budget_withdraw(struct leg *l)
{
	const struct snap_service *s = service_of(l);
	bool ok;

	if (!s || !s->budget)
		return false;
	pthread_mutex_lock(l->w->snap->budget_lock);
	ok = retry_budget_withdraw(s->budget, evloop_now_ns());
	pthread_mutex_unlock(l->w->snap->budget_lock);
	return ok;
}

/* --- accepting ------------------------------------------------------------------------------------ */

static void outbound_new(struct worker *w, int fd, const struct sockaddr_storage *peer)
{
	const struct snap *s = w->snap;
	struct config_endpoint client, local;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	const struct snap_service *svc;
	const char *ident;
	struct leg *l = leg_new(w, LEG_OUTBOUND, fd);

	if (!l) {
		sock_close_reset(fd);
		return;
	}
	sock_nodelay(fd);
	sockaddr_to_endpoint(peer, &client);
	local = s->outbound;
	/* The listener's own address, unless it is a wildcard: then ask the socket. */
	if (!local.addr.v4.s_addr) {
		if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
			sockaddr_to_endpoint(&ss, &local);
	}
	if (!s->dp.take_orig || s->dp.take_orig(s->dp.ctx, &client, &local, &l->orig)) {
		refuse(l, MTLS_REFUSE_NO_ORIG);
		return;
	}
	trace_outbound_begin(l);
	svc = snap_service(s, &l->orig.vip);
	ident = snap_identity(s, l->orig.identity);
	if (!svc || !ident) {
		refuse(l, svc ? MTLS_REFUSE_NO_IDENTITY : MTLS_REFUSE_NO_SERVICE);
		return;
	}
	snprintf(l->service, sizeof(l->service), "%s", svc->name);
	snprintf(l->identity, sizeof(l->identity), "%s", ident);
	l->target = l->orig.backend;
	l->target_id = l->orig.backend_id;
	l->target_epoch = l->orig.backend_epoch;
	l->target_probe = l->orig.probe;
	l->attempt = 1;
	l->tried[0] = l->target_id;
	budget_deposit(l);
	if (leg_watch(l)) { /* early bytes and resets are seen from now on */
		leg_close(l, true);
		return;
	}
	start_attempt(l);
}

void outbound_accept(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct worker *w = arg;

	for (int i = 0; i < ACCEPT_BATCH && w->accepting; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int c = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				LOG_WARN("mtls", "cannot accept", "err=%s", log_q(strerror(errno)));
			return;
		}
		outbound_new(w, c, &ss);
	}
}

/* --- attempts ----------------------------------------------------------------------------------- */

static void on_response_timeout(struct evloop *loop, void *arg)
{
	struct leg *l = arg;

	l->timer = 0;
	leg_enter(l);
	outbound_attempt_failed(l, "response_timeout", true, false);
	leg_leave(l);
}

/* The CONNECT's headers (at most 3): the W3C `traceparent` of the leg's span when traced. */
static size_t connect_headers(const struct leg *l, char *authority, char *traceparent,
			      nghttp2_nv *nv)
{
#define NV(n, v, vl)                                                                               \
	(nghttp2_nv){ (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NONE }
	size_t k = 0;

	nv[k++] = NV(":method", "CONNECT", 7);
	nv[k++] = NV(":authority", authority, strlen(authority));
	if (trace_header(l, traceparent, TRACEPARENT_LEN + 1))
		nv[k++] = NV("traceparent", traceparent, TRACEPARENT_LEN);
	return k;
#undef NV
}

static void submit(struct leg *l, struct tunnel *t)
{
	struct sref *s = sref_new(t);
	char authority[64], traceparent[TRACEPARENT_LEN + 1];
	nghttp2_nv nv[4];
	nghttp2_data_provider prov;
	size_t n;

	if (!s) {
		outbound_attempt_failed(l, "out of memory", false, true);
		return;
	}
	prov = leg_provider(s);
	wire_format_authority(&l->target, authority, sizeof(authority));
	n = connect_headers(l, authority, traceparent, nv);
	s->sid = nghttp2_submit_request(t->h2, NULL, nv, n, &prov, s);
	if (s->sid < 0) {
		sref_free(s);
		outbound_attempt_failed(l, "cannot submit the CONNECT", false, true);
		return;
	}
	t->streams++;
	leg_bind(l, t, s);
	l->state = L_REQUESTED;
	l->early_off = 0;
	l->early_sent = false;
	l->deferred = false;
	tunnel_flush(t); /* the CONNECT and the early bytes: one TLS record */
}

void outbound_tunnel_ready(struct leg *l)
{
	struct tunnel *t = l->t;

	link_del(&l->tnode);
	l->t = NULL;
	t->n_waiting--;
	submit(l, t);
}

/* The backend host's mTLS port: its own (Consul `mesh-port` meta) when discovery gave one, else
 * mtls.inbound_listen's, which every meshd of a uniform fleet listens on. */
uint16_t outbound_peer_port(const struct leg *l)
{
	uint16_t own = l->w->px ? mtls_mesh_port(l->w->px, &l->orig.vip, &l->target) : 0;

	return own ? own : l->w->snap->inbound_port;
}

static void start_attempt(struct leg *l)
{
	const struct snap *s = l->w->snap;
	struct pool_key key = { .identity = l->orig.identity };
	const char *why = NULL;
	struct tunnel *t;

	snprintf(key.identity_name, sizeof(key.identity_name), "%s", l->identity);
	snprintf(key.service, sizeof(key.service), "%s", l->service);
	key.peer = l->target;
	key.peer.port = outbound_peer_port(l);
	memcpy(key.addr_bytes, &l->target.addr, l->target.family == AF_INET6 ? 16 : 4);
	l->status = 0;
	l->resp_reason[0] = '\0';
	l->held_ns = 0;
	l->attempt_ns = evloop_now_ns();
	l->timer =
	    evloop_add_timer(l->w->loop, 2 * s->connect_ns + 1000000000ull, on_response_timeout, l);
	t = pool_get(l->w, &key, &why);
	if (!t) {
		if (why && !strcmp(why, TLS_R_NO_IDENTITY)) {
			STAT_ADD(l->w->st.handshakes[MTLS_OUTBOUND][RS_NO_IDENTITY_CERT], 1);
			refuse(l, MTLS_REFUSE_NO_CERT);
		} else {
			outbound_attempt_failed(l, why ? why : "no tunnel", true, true);
		}
		return;
	}
	if (t->state == T_READY) {
		submit(l, t);
		return;
	}
	l->t = t;
	t->n_waiting++;
	link_add(&t->waiting, &l->tnode);
	l->state = L_PENDING;
}

static void feed_breaker(struct leg *l, bool ok)
{
	const struct snap *s = l->w->snap;

	if (s->dp.outcome && l->target_id)
		s->dp.outcome(s->dp.ctx, &l->orig.vip, l->target_id, l->target_epoch, ok,
			      l->target_probe, evloop_now_ns() - l->attempt_ns);
}

void outbound_outcomes_flush(struct worker *w)
{
	const struct snap *s = w->snap;

	for (unsigned i = 0; i < w->n_outcomes; i++) {
		const struct pending_outcome *o = &w->outcomes[i];

		if (s->dp.outcome)
			s->dp.outcome(s->dp.ctx, &o->vip, o->backend_id, o->epoch, true, o->probe,
				      o->latency_ns);
	}
	w->n_outcomes = 0;
}

/* A success: its outcome (a bpf(2) call) waits until the bytes that came with the answer are
 * delivered. Its latency leaves out the time the remote meshd held the answer (waiting for the
 * backend's first bytes): the tunnel round trip and the remote backend connect, as before. */
static void defer_success(struct leg *l)
{
	struct worker *w = l->w;
	struct pending_outcome *o;
	uint64_t took = evloop_now_ns() - l->attempt_ns;

	if (!l->target_id)
		return;
	if (w->n_outcomes == PENDING_OUTCOMES)
		outbound_outcomes_flush(w);
	o = &w->outcomes[w->n_outcomes++];
	o->vip = l->orig.vip;
	o->backend_id = l->target_id;
	o->epoch = l->target_epoch;
	o->probe = l->target_probe;
	o->latency_ns = took > l->held_ns ? took - l->held_ns : 0;
}

void outbound_response(struct leg *l, int status, const char *reason)
{
	evloop_del_timer(l->w->loop, l->timer);
	l->timer = 0;
	if (status == WIRE_OK) {
		if (l->attempt > 1)
			STAT_ADD(l->w->st.retries[0], 1);
		defer_success(l);
		leg_establish(l);
		if (!l->dead && l->reset) /* the application went before the answer */
			leg_close(l, true);
		return;
	}
	if (wire_status_retriable(status)) {
		outbound_attempt_failed(l, *reason ? reason : wire_status_reason(status), true,
					true);
		return;
	}
	trace_result(l, wire_status_reason(status), *reason ? reason : "");
	if (status == WIRE_DENIED) {
		STAT_ADD(l->w->st.refused[MTLS_REFUSE_DENIED], 1);
		LOG_DEBUG("mtls", "connection denied by the remote meshd", "service=%s identity=%s",
			  l->service, l->identity);
	}
	leg_close(l, true);
}

/* --- retries ------------------------------------------------------------------------------------ */

static bool tried(const struct leg *l, uint32_t id)
{
	for (unsigned i = 0; i < l->attempt && i < MAX_ATTEMPTS; i++)
		if (l->tried[i] == id)
			return true;
	return false;
}

/* Another backend: an untried usable one at random, else a tried usable one (a transient failure
 * may pass), else none. */
static bool pick_next(struct leg *l)
{
	static __thread struct mtls_backend be[MAX_BACKENDS];
	const struct snap *s = l->w->snap;
	int n = s->dp.backends ? s->dp.backends(s->dp.ctx, &l->orig.vip, be, MAX_BACKENDS) : 0;
	int fresh = 0, usable = 0, pick = -1;

	for (int i = 0; i < n; i++) {
		fresh += be[i].usable && !tried(l, be[i].id);
		usable += be[i].usable;
	}
	if (!usable)
		return false;
	for (int i = 0, k = (int)(worker_rand(l->w) % (unsigned)(fresh ? fresh : usable)); i < n;
	     i++) {
		if (!be[i].usable || (fresh && tried(l, be[i].id)))
			continue;
		if (k-- == 0) {
			pick = i;
			break;
		}
	}
	l->target = be[pick].addr;
	l->target_id = be[pick].id;
	l->target_epoch = be[pick].epoch;
	l->target_probe = false;
	return true;
}

static void on_backoff(struct evloop *loop, void *arg)
{
	struct leg *l = arg;

	l->timer = 0;
	leg_enter(l);
	start_attempt(l);
	leg_leave(l);
}

static void give_up(struct leg *l, int retry_result, const char *why)
{
	STAT_ADD(l->w->st.failed, 1);
	trace_result(l, "failed", why);
	if (retry_result >= 0)
		STAT_ADD(l->w->st.retries[retry_result], 1);
	LOG_DEBUG("mtls", "connection failed", "service=%s attempts=%u last=%s", l->service,
		  l->attempt, log_q(why));
	leg_close(l, true);
}

/* Leaves the tunnel the attempt used: a waiting slot or a stream (cancelled). */
static void leave_tunnel(struct leg *l)
{
	if (l->t && !l->sref) {
		l->t->n_waiting--;
		link_del(&l->tnode);
		l->t = NULL;
	}
	leg_unbind(l, NGHTTP2_CANCEL);
}

void outbound_attempt_failed(struct leg *l, const char *why, bool breaker_failure, bool unprocessed)
{
	const struct snap_service *svc = service_of(l);
	uint64_t delay;

	if (l->dead)
		return;
	evloop_del_timer(l->w->loop, l->timer);
	l->timer = 0;
	leave_tunnel(l);
	l->state = L_PENDING;
	if (breaker_failure)
		feed_breaker(l, false);
	if (l->reset) {
		give_up(l, -1, "application reset");
		return;
	}
	if (l->early_sent && !unprocessed) {
		give_up(l, 3, why);
		return;
	}
	if (!svc || l->attempt >= svc->retry.connect_attempts || l->attempt >= MAX_ATTEMPTS) {
		give_up(l, svc && svc->retry.connect_attempts > 1 ? 1 : -1, why);
		return;
	}
	if (!budget_withdraw(l)) {
		give_up(l, 2, why);
		return;
	}
	if (!pick_next(l)) {
		give_up(l, 1, why);
		return;
	}
	l->tried[l->attempt++] = l->target_id;
	delay = retry_backoff_ns(svc->retry.backoff_base_ns, svc->retry.backoff_max_ns,
				 l->attempt - 1, worker_rand(l->w));
	l->timer = evloop_add_timer(l->w->loop, delay, on_backoff, l);
}
