/* The inbound side: TLS connections from other meshds on mtls.inbound_listen. The handshake
 * verifies the caller's chain and SPIFFE ID (tls.c); SNI picks the local service whose
 * certificate is presented. Each CONNECT stream is checked (wire.h), must target a port of that
 * service (identities[].ports) on an address of this host (never an arbitrary address: no open
 * relay), passes authorization, and is then connected to the local backend; the answer's status
 * tells the caller whether the backend was reachable. A policy change closes established
 * streams the new policy denies. Worker thread only. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "mtls/proxy.h"

#define ACCEPT_BATCH 64

void inbound_accept(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct worker *w = arg;
	SSL_CTX *dispatch = certs_dispatch_ctx(w->certs);

	for (int i = 0; i < ACCEPT_BATCH && w->accepting; i++) {
		int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				LOG_WARN("mtls", "cannot accept", "err=%s", log_q(strerror(errno)));
			break;
		}
		if (!tunnel_accept(w, c, dispatch))
			close(c);
	}
	SSL_CTX_free(dispatch);
}

struct leg *inbound_stream(struct tunnel *t, int32_t sid)
{
	struct sref *s = sref_new(t);
	struct leg *l = s ? leg_new(t->w, LEG_INBOUND, -1) : NULL;

	if (!l) {
		if (s)
			sref_free(s);
		return NULL;
	}
	s->sid = sid;
	nghttp2_session_set_stream_user_data(t->h2, sid, s);
	wire_request_init(&l->req);
	leg_bind(l, t, s);
	link_add(&t->w->inbound, &l->inode);
	snprintf(l->source_id, sizeof(l->source_id), "%s", t->peer.id_str);
	snprintf(l->source, sizeof(l->source), "%s", t->peer.id.service);
	snprintf(l->destination, sizeof(l->destination), "%s", t->peer.service);
	return l;
}

/* Answers the CONNECT with an error and ends the leg (the caller cancels its stream). */
static void respond_error(struct leg *l, int status, const char *detail)
{
	struct tunnel *t = l->t;
	char code[4];
	const char *reason = wire_status_reason(status);
	nghttp2_nv nv[2] = {
		{ (uint8_t *)":status", (uint8_t *)code, 7, 3, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)WIRE_REASON_HEADER, (uint8_t *)reason, sizeof(WIRE_REASON_HEADER) - 1,
		  strlen(reason), NGHTTP2_NV_FLAG_NONE },
	};

	snprintf(code, sizeof(code), "%03d", status);
	trace_result(l, reason, detail);
	LOG_DEBUG("mtls", "inbound CONNECT refused", "status=%d reason=%s source=%s detail=%s",
		  status, reason, log_q(l->source_id), log_q(detail));
	if (t && l->sref && t->state == T_READY)
		nghttp2_submit_response(t->h2, l->sid, nv, 2, NULL);
	leg_unbind(l, NO_RST); /* the answer ends our side; the caller cancels its own */
	leg_close(l, true);
	if (t)
		tunnel_flush(t);
}

/* Submits the 200 with the backend socket as the stream's data source, saying how long it was
 * held (`held_ns`, 0 = not held). 0, or -1 (leg closed). */
static int submit_ok(struct leg *l, uint64_t held_ns)
{
	char held[24];
	nghttp2_nv nv[2] = {
		{ (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)WIRE_HELD_HEADER, (uint8_t *)held, sizeof(WIRE_HELD_HEADER) - 1, 0,
		  NGHTTP2_NV_FLAG_NONE },
	};
	nghttp2_data_provider prov = leg_provider(l->sref);

	nv[1].valuelen =
	    (size_t)snprintf(held, sizeof(held), "%llu", (unsigned long long)(held_ns / 1000));
	if (nghttp2_submit_response(l->t->h2, l->sid, nv, held_ns ? 2 : 1, &prov)) {
		leg_close(l, true);
		return -1;
	}
	return 0;
}

static void on_hold_end(struct evloop *loop, void *arg)
{
	struct leg *l = arg;

	l->timer = 0;
	leg_enter(l);
	inbound_answer(l);
	leg_leave(l);
}

void inbound_answer(struct leg *l)
{
	if (!l->answer_held || l->dead)
		return;
	l->answer_held = false;
	evloop_del_timer(l->w->loop, l->timer);
	l->timer = 0;
	if (!l->t || !l->sref || submit_ok(l, evloop_now_ns() - l->held_ns))
		return;
	tunnel_flush(l->t); /* the 200 and what the backend sent: one TLS record */
}

/* The backend is connected. The early bytes are written to it at once; the 200 goes with the
 * backend's first bytes when they come within ANSWER_HOLD_NS (a request/response's reply, a
 * server's greeting), so the caller's meshd is woken once, not twice. Not held when the backend
 * has already sent something (`events`), and released early when the caller has sent a whole
 * frame (more may wait on the answer on its side: leg_data). */
static void respond_ok(struct leg *l, uint32_t events)
{
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ||
	    l->wq_bytes >= DATA_FRAME_PAYLOAD) {
		if (submit_ok(l, 0) == 0)
			leg_establish(l);
		return;
	}
	l->answer_held = true;
	l->held_ns = evloop_now_ns();
	l->timer = evloop_add_timer(l->w->loop, ANSWER_HOLD_NS, on_hold_end, l);
	leg_establish(l);
}

static void log_deny(struct leg *l)
{
	struct worker *w = l->w;
	char dst[SPIFFE_ID_MAX], td[SPIFFE_DOMAIN_MAX + 1];

	if (!authz_limiter_allow(&w->deny_log, l->source_id, l->destination, evloop_now_ns()))
		return;
	certs_get_trust_domain(w->certs, td, sizeof(td));
	if (spiffe_service_id(td, w->snap->dc, l->destination, dst, sizeof(dst)) < 0)
		dst[0] = '\0';
	LOG_WARN("authz", "connection denied", "source=%s destination_id=%s destination=%s",
		 log_q(l->source_id), log_q(dst), l->destination);
}

/* Authorization of the leg's caller for its destination; counts and logs a deny. */
static bool authorized(struct leg *l)
{
	struct authz_decision d = authz_decide(l->w->policy, l->source, l->destination);
	bool allow = d.action == AUTHZ_ALLOW;

	STAT_ADD(l->w->st.authz[allow], 1);
	worker_count_pair(l->w, l->source_id, l->destination, allow);
	if (!allow)
		log_deny(l);
	return allow;
}

static void on_connect_timeout(struct evloop *loop, void *arg)
{
	struct leg *l = arg;

	l->timer = 0;
	leg_enter(l);
	respond_error(l, WIRE_BACKEND_TIMEOUT, "backend connect timed out");
	leg_leave(l);
}

/* Whether `ep` is an address of this host: binding it succeeds (EADDRNOTAVAIL otherwise). */
static int host_address(const struct config_endpoint *ep)
{
	struct config_endpoint local = *ep;
	struct sockaddr_storage ss;
	socklen_t len;
	int fd = socket(ep->family, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;

	if (fd < 0)
		return -errno;
	local.port = 0;
	len = sockaddr_from_endpoint(&local, &ss);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		err = -errno;
	close(fd);
	return err;
}

/* The source of a backend connection: the loopback address of the target's family, port chosen
 * at connect(2) by the whole 4-tuple. A loopback source lets the kernel reuse the port of a
 * TIME_WAIT connection older than a second (net.ipv4.tcp_tw_reuse = 2, the default, covers
 * loopback only). With the target address as the source, meshd (which closes first when the
 * caller does) kept a TIME_WAIT per connection that nothing could reuse for 60 s: with 15,000
 * to 21,000 of them to one backend, each connect(2) searched the port range for 1 to 3 ms of
 * CPU, and past the range's size it fails. Loopback passes strict_inbound's "from this host"
 * test. */
static int bind_loopback(int fd, const struct config_endpoint *target)
{
	struct sockaddr_in in4 = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int one = 1;

	setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (target->family == AF_INET)
		return bind(fd, (struct sockaddr *)&in4, sizeof(in4));
	if (IN6_IS_ADDR_V4MAPPED(&target->addr.v6)) { /* ::1 becomes ::ffff:127.0.0.1 */
		in6.sin6_addr.s6_addr[10] = in6.sin6_addr.s6_addr[11] = 0xff;
		in6.sin6_addr.s6_addr[12] = 127;
	}
	return bind(fd, (struct sockaddr *)&in6, sizeof(in6));
}

/* Connects to the local backend: only to an address of this host (no open relay), from the
 * loopback address (bind_loopback). Returns 0, or the status to answer. */
static int connect_backend(struct leg *l)
{
	const struct config_endpoint *ep = &l->req.target;
	struct sockaddr_storage ss;
	uint32_t mark = MESH_SOCKET_MARK;
	socklen_t len;
	int fd, err = host_address(ep);

	if (err)
		return err == -EADDRNOTAVAIL ? WIRE_NOT_SERVED : WIRE_UNAVAILABLE;
	fd = socket(ep->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return WIRE_UNAVAILABLE;
	setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
	if (bind_loopback(fd, ep) < 0) {
		close(fd);
		return WIRE_UNAVAILABLE;
	}
	len = sockaddr_from_endpoint(ep, &ss);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
		close(fd);
		return WIRE_BACKEND_FAILED;
	}
	sock_nodelay(fd);
	l->fd = fd;
	if (leg_watch(l))
		return WIRE_UNAVAILABLE;
	l->state = L_REQUESTED;
	l->timer = evloop_add_timer(l->w->loop, l->w->snap->connect_ns, on_connect_timeout, l);
	return 0;
}

/* A local backend is usually connected when connect(2) returns (the handshake ran in our own
 * call): then answer in this round instead of the next epoll_wait's. */
static bool established(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
	       ti.tcpi_state == TCP_ESTABLISHED;
}

void inbound_request(struct leg *l)
{
	const char *owner;
	char detail[128];
	int status;

	trace_inbound_begin(l);
	if (wire_request_finish(&l->req)) {
		respond_error(l, WIRE_BAD_REQUEST, l->req.why);
		return;
	}
	owner = snap_port_service(l->w->snap, l->req.target.port);
	if (!owner || strcmp(owner, l->destination)) {
		snprintf(detail, sizeof(detail), "port %u is not a port of service %s",
			 l->req.target.port, l->destination);
		respond_error(l, WIRE_NOT_SERVED, detail);
		return;
	}
	if (!authorized(l)) {
		respond_error(l, WIRE_DENIED, "authorization");
		return;
	}
	status = connect_backend(l);
	if (status)
		respond_error(l, status, "backend connect");
	else if (established(l->fd))
		inbound_connected(l, EPOLLOUT);
}

void inbound_connected(struct leg *l, uint32_t events)
{
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		return;
	evloop_del_timer(l->w->loop, l->timer);
	l->timer = 0;
	if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr) {
		respond_error(l, soerr == ETIMEDOUT ? WIRE_BACKEND_TIMEOUT : WIRE_BACKEND_FAILED,
			      strerror(soerr));
		return;
	}
	if (!l->t || !l->sref) {
		leg_close(l, true);
		return;
	}
	respond_ok(l, events);
}

void inbound_recheck(struct worker *w)
{
	struct leg **deny = NULL;
	size_t n = 0, cap = 0;

	/* Collect first (held), close after: closing one may end others' streams. */
	for (struct link *k = w->inbound.next; k != &w->inbound; k = k->next) {
		struct leg *l = link_entry(k, struct leg, inode);

		if (l->dead || (l->state != L_ESTABLISHED && l->state != L_REQUESTED) ||
		    authz_decide(w->policy, l->source, l->destination).action == AUTHZ_ALLOW)
			continue;
		if (n == cap) {
			struct leg **p = realloc(deny, (cap = cap ? 2 * cap : 16) * sizeof(*p));

			if (!p)
				break;
			deny = p;
		}
		leg_enter(l);
		deny[n++] = l;
	}
	for (size_t i = 0; i < n; i++) {
		struct leg *l = deny[i];

		if (!l->dead) {
			STAT_ADD(w->st.authz_closed, 1);
			LOG_INFO("authz", "connection closed by a policy change",
				 "source=%s destination=%s", log_q(l->source_id), l->destination);
			l->reset = true;
			leg_close(l, true);
		}
		leg_leave(l);
	}
	free(deny);
}
