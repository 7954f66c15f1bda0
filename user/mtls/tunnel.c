/* Tunnels: one TCP connection carrying TLS 1.3 and an HTTP/2 session, to another meshd (client,
 * pooled) or from one (server). Owns the socket, the SSL and the nghttp2 session; routes
 * nghttp2's stream events to the legs; sends what nghttp2 queues in TLS-record-sized writes
 * (small frames coalesced, a DATA frame of DATA_FRAME_PAYLOAD filling one record exactly).
 * Edge-triggered: reads until the socket is empty, writes until it is full, keeps the rest.
 * Worker thread only. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "mtls/proxy.h"

#define FD_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

static nghttp2_session_callbacks *cbs;
static pthread_once_t cbs_once = PTHREAD_ONCE_INIT;

static void on_fd(struct evloop *loop, int fd, uint32_t events, void *arg);

void tunnel_enter(struct tunnel *t)
{
	t->busy++;
}

static void tunnel_free(struct tunnel *t)
{
	evloop_del_timer(t->w->loop, t->timer);
	link_del(&t->node);
	while (!link_empty(&t->srefs))
		sref_free(link_entry(t->srefs.next, struct sref, node));
	if (t->ssl)
		SSL_free(t->ssl);
	nghttp2_session_del(t->h2);
	certs_unref(t->certs);
	free(t->pend);
	free(t);
}

void tunnel_leave(struct tunnel *t)
{
	if (--t->busy == 0 && t->state == T_CLOSED)
		tunnel_free(t);
}

bool tunnel_usable(const struct tunnel *t)
{
	return t->state != T_CLOSED && !t->goaway;
}

static enum mtls_dir dir_of(const struct tunnel *t)
{
	return t->client ? MTLS_OUTBOUND : MTLS_INBOUND;
}

static void count_handshake(struct tunnel *t, const char *reason)
{
	if (t->confirmed)
		return;
	t->confirmed = true;
	STAT_ADD(t->w->st.handshakes[dir_of(t)][reason ? reason_index(reason) : RS_OK], 1);
}

/* --- failure and close ------------------------------------------------------------------------- */

static void log_failure(struct tunnel *t, const char *reason, const char *detail)
{
	char peer[64] = "", local[64] = "";
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	struct config_endpoint ep;

	if (t->client)
		config_endpoint_str(&t->key.peer, peer, sizeof(peer));
	else if (t->fd >= 0 && !getpeername(t->fd, (struct sockaddr *)&ss, &len)) {
		sockaddr_to_endpoint(&ss, &ep);
		config_endpoint_str(&ep, peer, sizeof(peer));
	}
	snprintf(local, sizeof(local), "%s", t->client ? t->key.service : t->peer.service);
	if (!authz_limiter_allow(&t->w->deny_log, reason, peer, evloop_now_ns()))
		return;
	LOG_WARN("mtls", t->confirmed ? "tunnel failed" : "mTLS handshake failed",
		 "direction=%s peer=%s service=%s reason=%s detail=%s peer_id=%s",
		 t->client ? "outbound" : "inbound", peer, local, reason, log_q(detail),
		 log_q(t->peer.id_str));
}

void tunnel_fail(struct tunnel *t, const char *reason, const char *detail)
{
	struct link *n;

	if (t->state == T_CLOSED)
		return;
	tunnel_enter(t);
	if (!t->confirmed) {
		log_failure(t, reason, detail);
		count_handshake(t, reason);
	} else if (reason && strcmp(reason, TLS_R_CLOSED)) {
		log_failure(t, reason, detail);
	}
	t->state = T_CLOSED;
	if (t->client) {
		pool_remove(t);
		STAT_ADD(t->w->st.pool, -1);
	} else {
		STAT_ADD(t->w->st.inbound_tunnels, -1);
	}
	if (t->fd >= 0) {
		evloop_del_fd(t->w->loop, t->fd);
		close(t->fd);
		t->fd = -1;
	}
	while (!link_empty(&t->waiting) || !link_empty(&t->legs)) {
		n = !link_empty(&t->waiting) ? t->waiting.next : t->legs.next;
		leg_tunnel_failed(link_entry(n, struct leg, tnode), reason);
	}
	tunnel_leave(t);
}

/* --- sending ----------------------------------------------------------------------------------- */

/* Keeps buf[0..len) for later (after what is pending). 0 or -ENOMEM. */
static int keep(struct tunnel *t, const uint8_t *buf, size_t len)
{
	size_t have = t->pend_len - t->pend_off;
	uint8_t *p = malloc(have + len);

	if (!p)
		return -ENOMEM;
	if (have)
		memcpy(p, t->pend + t->pend_off, have);
	memcpy(p + have, buf, len);
	free(t->pend);
	t->pend = p;
	t->pend_off = 0;
	t->pend_len = have + len;
	return 0;
}

/* Writes buf through TLS. Returns 0 when all went, 1 when the socket is full (the rest is kept),
 * -1 when the tunnel failed. */
static int write_out(struct tunnel *t, const uint8_t *buf, size_t len)
{
	char detail[160];
	size_t off = 0;

	while (off < len) {
		int n = SSL_write(t->ssl, buf + off, (int)(len - off));

		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (SSL_get_error(t->ssl, n) == SSL_ERROR_WANT_WRITE) {
			if (keep(t, buf + off, len - off)) {
				tunnel_fail(t, TLS_R_PROTOCOL, "out of memory");
				return -1;
			}
			return 1;
		}
		cert_ssl_error(detail, sizeof(detail));
		tunnel_fail(t, TLS_R_CLOSED, *detail ? detail : strerror(errno));
		return -1;
	}
	return 0;
}

/* Sends what was kept. 0 when all went, else as write_out. */
static int write_pending(struct tunnel *t)
{
	uint8_t *p = t->pend;
	size_t off = t->pend_off, len = t->pend_len;
	int rc;

	if (off == len)
		return 0;
	t->pend = NULL;
	t->pend_len = t->pend_off = 0;
	rc = write_out(t, p + off, len - off);
	free(p);
	return rc;
}

/* Pulls frames from nghttp2 into TLS records until it has none or the socket is full. */
static void pump(struct tunnel *t)
{
	uint8_t *stage = t->w->stage;
	size_t staged = 0;
	const uint8_t *data;
	ssize_t n;

	for (;;) {
		n = nghttp2_session_mem_send(t->h2, &data);
		if (n < 0) {
			tunnel_fail(t, TLS_R_PROTOCOL, nghttp2_strerror((int)n));
			return;
		}
		if (n == 0)
			break;
		if (staged && (staged + (size_t)n > STAGE_BYTES || n >= STAGE_BYTES / 2)) {
			if (write_out(t, stage, staged)) {
				if (t->state != T_CLOSED && keep(t, data, (size_t)n))
					tunnel_fail(t, TLS_R_PROTOCOL, "out of memory");
				return;
			}
			staged = 0;
		}
		if (n >= STAGE_BYTES / 2) {
			if (write_out(t, data, (size_t)n))
				return;
			continue;
		}
		memcpy(stage + staged, data, (size_t)n);
		staged += (size_t)n;
	}
	if (staged)
		write_out(t, stage, staged);
}

void tunnel_flush(struct tunnel *t)
{
	if (t->state != T_READY || t->in_flush || t->in_recv)
		return;
	tunnel_enter(t);
	t->in_flush = true;
	if (write_pending(t) == 0)
		pump(t);
	t->in_flush = false;
	if (t->state == T_READY && !nghttp2_session_want_read(t->h2) &&
	    !nghttp2_session_want_write(t->h2) && t->pend_len == t->pend_off)
		tunnel_fail(t, TLS_R_CLOSED, "session finished");
	tunnel_leave(t);
}

void tunnel_goaway(struct tunnel *t)
{
	if (t->state != T_READY || t->goaway)
		return;
	t->goaway = true;
	nghttp2_submit_goaway(t->h2, NGHTTP2_FLAG_NONE,
			      nghttp2_session_get_last_proc_stream_id(t->h2), NGHTTP2_NO_ERROR,
			      NULL, 0);
	tunnel_flush(t);
	if (t->state == T_READY && t->streams == 0)
		tunnel_fail(t, TLS_R_CLOSED, "going away");
}

/* --- nghttp2 callbacks --------------------------------------------------------------------------- */

static struct leg *leg_of(nghttp2_session *h2, int32_t sid)
{
	struct sref *s = nghttp2_session_get_stream_user_data(h2, sid);

	return s ? s->l : NULL;
}

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f, void *arg)
{
	struct tunnel *t = arg;

	if (t->client || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	if (!inbound_stream(t, f->hd.stream_id)) {
		nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, f->hd.stream_id,
					  NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	t->streams++;
	return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *arg)
{
	struct tunnel *t = arg;
	struct leg *l = leg_of(h2, f->hd.stream_id);

	if (!l || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (!t->client) {
		wire_request_header(&l->req, name, namelen, value, valuelen);
		return 0;
	}
	if (namelen == 7 && !memcmp(name, ":status", 7) && valuelen == 3)
		l->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
	else if (namelen == strlen(WIRE_REASON_HEADER) &&
		 !memcmp(name, WIRE_REASON_HEADER, namelen))
		snprintf(l->resp_reason, sizeof(l->resp_reason), "%.*s", (int)valuelen, value);
	else if (namelen == strlen(WIRE_HELD_HEADER) && !memcmp(name, WIRE_HELD_HEADER, namelen))
		l->held_ns = wire_held_ns(value, valuelen);
	return 0;
}

static void on_headers_frame(struct tunnel *t, const nghttp2_frame *f, struct leg *l)
{
	if (!t->client && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		inbound_request(l);
	else if (t->client && f->headers.cat == NGHTTP2_HCAT_RESPONSE)
		outbound_response(l, l->status, l->resp_reason);
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f, void *arg)
{
	struct tunnel *t = arg;
	struct leg *l = f->hd.stream_id ? leg_of(h2, f->hd.stream_id) : NULL;

	switch (f->hd.type) {
	case NGHTTP2_SETTINGS:
		if (t->client && !(f->hd.flags & NGHTTP2_FLAG_ACK))
			count_handshake(t, NULL); /* the server accepted our certificate */
		return 0;
	case NGHTTP2_GOAWAY:
		t->goaway = true;
		return 0;
	case NGHTTP2_HEADERS:
		if (l) {
			leg_enter(l);
			on_headers_frame(t, f, l);
			leg_leave(l);
		}
		break;
	case NGHTTP2_DATA:
		break;
	default:
		return 0;
	}
	l = leg_of(h2, f->hd.stream_id); /* the handlers above may have left the stream */
	if (l && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		leg_enter(l);
		leg_peer_eof(l);
		leg_leave(l);
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t sid, const uint8_t *data,
			 size_t len, void *arg)
{
	struct leg *l = leg_of(h2, sid);

	/* An inbound leg whose backend connect is in progress queues early bytes. */
	if (l &&
	    (l->state == L_ESTABLISHED || (l->role == LEG_INBOUND && l->state == L_REQUESTED))) {
		leg_enter(l);
		leg_data(l, data, len);
		leg_leave(l);
	} else {
		nghttp2_session_consume(h2, sid, len); /* nobody to take it: discard */
	}
	return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t sid, uint32_t error_code, void *arg)
{
	struct tunnel *t = arg;
	struct sref *s = nghttp2_session_get_stream_user_data(h2, sid);

	if (t->streams)
		t->streams--;
	if (!t->streams)
		t->idle_since_ns = evloop_now_ns();
	if (s) {
		nghttp2_session_set_stream_user_data(h2, sid, NULL);
		sref_closed(s, error_code);
	}
	if (t->goaway && !t->streams && t->client)
		nghttp2_session_terminate_session(h2, NGHTTP2_NO_ERROR);
	return 0;
}

static ssize_t frame_len(nghttp2_session *h2, uint8_t type, int32_t sid, int32_t conn_window,
			 int32_t stream_window, uint32_t max_frame, void *arg)
{
	ssize_t n = DATA_FRAME_PAYLOAD;

	if (conn_window < n)
		n = conn_window;
	if (stream_window < n)
		n = stream_window;
	if ((ssize_t)max_frame < n)
		n = (ssize_t)max_frame;
	return n > 0 ? n : 1;
}

static void make_callbacks(void)
{
	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, frame_len);
}

/* --- session setup ------------------------------------------------------------------------------ */

static int start_session(struct tunnel *t)
{
	nghttp2_settings_entry iv[3] = {
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, t->w->snap->max_streams },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};
	nghttp2_option *opt;
	int rv;

	pthread_once(&cbs_once, make_callbacks);
	if (!cbs || nghttp2_option_new(&opt))
		return -ENOMEM;
	nghttp2_option_set_no_auto_window_update(opt, 1);
	rv = t->client ? nghttp2_session_client_new2(&t->h2, cbs, t, opt)
		       : nghttp2_session_server_new2(&t->h2, cbs, t, opt);
	nghttp2_option_del(opt);
	if (rv)
		return -ENOMEM;
	if (nghttp2_submit_settings(t->h2, NGHTTP2_FLAG_NONE, iv, t->client ? 3 : 2) ||
	    nghttp2_session_set_local_window_size(t->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW))
		return -ENOMEM;
	return 0;
}

static void log_ready(struct tunnel *t)
{
	char peer[64];

	if (t->client)
		config_endpoint_str(&t->key.peer, peer, sizeof(peer));
	LOG_INFO("mtls", t->client ? "tunnel connected" : "peer connected",
		 "direction=%s peer_id=%s peer_serial=%s service=%s%s%s",
		 t->client ? "outbound" : "inbound", log_q(t->peer.id_str), t->peer.serial,
		 t->client ? t->key.service : t->peer.service, t->client ? " peer=" : "",
		 t->client ? peer : "");
}

static void handshake_done(struct tunnel *t)
{
	const char *why = tls_handshake_done(t->ssl, &t->peer);
	struct link *n;

	if (why) {
		tunnel_fail(t, why, t->peer.detail);
		return;
	}
	if (start_session(t)) {
		tunnel_fail(t, TLS_R_PROTOCOL, "cannot start HTTP/2");
		return;
	}
	evloop_del_timer(t->w->loop, t->timer);
	t->timer = 0;
	t->state = T_READY;
	t->idle_since_ns = evloop_now_ns();
	if (!t->client)
		count_handshake(t, NULL);
	log_ready(t);
	while (t->state == T_READY && !link_empty(&t->waiting)) {
		n = t->waiting.next;
		outbound_tunnel_ready(link_entry(n, struct leg, tnode));
	}
	tunnel_flush(t);
}

static void do_handshake(struct tunnel *t)
{
	int rc = SSL_do_handshake(t->ssl), err;

	if (rc == 1) {
		handshake_done(t);
		return;
	}
	err = SSL_get_error(t->ssl, rc);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return;
	tls_handshake_failed(t->ssl, &t->peer, rc);
	tunnel_fail(t, t->peer.reason, t->peer.detail);
}

/* --- reading ------------------------------------------------------------------------------------ */

/* Watches the socket reads OpenSSL makes (read-ahead: as much as the socket holds): a short one
 * found the socket empty. */
static long on_bio(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
		   size_t *processed)
{
	struct tunnel *t = (struct tunnel *)BIO_get_callback_arg(b);

	if (oper == (BIO_CB_READ | BIO_CB_RETURN) && t) {
		t->rd_short = ret <= 0 || !processed || *processed < len;
		t->rd_full |= !t->rd_short;
	}
	return ret;
}

bool tunnel_more_here(struct tunnel *t)
{
	return t->rd_full || SSL_has_pending(t->ssl);
}

void tunnel_uncork_leg(struct tunnel *t)
{
	struct leg *l = t->cork_leg;

	t->cork_leg = t->recv_leg = NULL;
	if (l && l->fd >= 0)
		sock_cork(l->fd, false);
}

static void read_records(struct tunnel *t)
{
	ssize_t rv;
	int n, err;

	while (t->state == T_READY) {
		t->rd_short = t->rd_full = false;
		n = SSL_read(t->ssl, t->w->rbuf, sizeof(t->w->rbuf));
		if (n > 0) {
			t->in_recv = true;
			rv = nghttp2_session_mem_recv(t->h2, t->w->rbuf, (size_t)n);
			t->in_recv = false;
			if (rv < 0)
				tunnel_fail(t, TLS_R_PROTOCOL, nghttp2_strerror((int)rv));
			/* A short read emptied the socket and nothing is buffered: done, without a
			 * read(2) for EAGAIN (edge-triggered: a later arrival wakes us). */
			if (t->rd_short && !SSL_has_pending(t->ssl))
				return;
			continue;
		}
		err = SSL_get_error(t->ssl, n);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			return;
		if (err == SSL_ERROR_ZERO_RETURN ||
		    (err == SSL_ERROR_SYSCALL && !ERR_peek_error())) {
			ERR_clear_error();
			tunnel_fail(t, TLS_R_CLOSED, "peer closed the connection");
			return;
		}
		tls_handshake_failed(t->ssl, &t->peer, n);
		tunnel_fail(t, t->peer.reason, t->peer.detail);
	}
}

/* Reads what the socket holds; DATA for one leg across several records leaves that leg's
 * socket in large packets (leg_data corks it, this uncorks it at the end). */
static void read_tls(struct tunnel *t)
{
	read_records(t);
	tunnel_uncork_leg(t);
}

static void on_connected(struct tunnel *t)
{
	int soerr = 0;
	socklen_t len = sizeof(soerr);

	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr) {
		tunnel_fail(t, TLS_R_CONNECT, strerror(soerr));
		return;
	}
	t->state = T_HANDSHAKE;
	do_handshake(t);
}

static void on_fd(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct tunnel *t = arg;

	tunnel_enter(t);
	if (t->state == T_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
		on_connected(t);
	else if (t->state == T_HANDSHAKE)
		do_handshake(t);
	else if (t->state == T_READY) {
		if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))
			read_tls(t);
		tunnel_flush(t);
	}
	outbound_outcomes_flush(t->w);
	tunnel_leave(t);
}

static void on_timeout(struct evloop *loop, void *arg)
{
	struct tunnel *t = arg;

	t->timer = 0;
	tunnel_fail(t, TLS_R_TIMEOUT,
		    t->state == T_CONNECTING ? "TCP connect timed out" : "TLS handshake timed out");
}

/* --- construction ------------------------------------------------------------------------------- */

static struct tunnel *tunnel_new(struct worker *w, int fd, bool client, SSL_CTX *ctx)
{
	struct tunnel *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->w = w;
	t->fd = fd;
	t->client = client;
	t->created_ns = evloop_now_ns();
	link_init(&t->legs);
	link_init(&t->waiting);
	link_init(&t->srefs);
	link_init(&t->pnode);
	t->certs = certs_ref(w->certs);
	t->peer.store = t->certs;
	t->peer.server = !client;
	certs_get_trust_domain(t->certs, t->peer.trust_domain, sizeof(t->peer.trust_domain));
	t->ssl = SSL_new(ctx);
	if (!t->ssl || !SSL_set_fd(t->ssl, fd)) {
		certs_unref(t->certs);
		SSL_free(t->ssl);
		free(t);
		return NULL;
	}
	BIO_set_callback_ex(SSL_get_rbio(t->ssl), on_bio);
	BIO_set_callback_arg(SSL_get_rbio(t->ssl), (char *)t);
	link_add(&w->tunnels, &t->node);
	t->timer = evloop_add_timer(w->loop, w->snap->connect_ns, on_timeout, t);
	return t;
}

static int tunnel_socket(const struct config_endpoint *peer)
{
	int fd = socket(peer->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	uint32_t mark = MESH_SOCKET_MARK;
	int one = 1, idle = 30, intvl = 10, cnt = 3;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)); /* EPERM without NET_ADMIN */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	sock_nodelay(fd);
	return fd;
}

struct tunnel *tunnel_connect(struct worker *w, const struct pool_key *key, SSL_CTX *ctx)
{
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_from_endpoint(&key->peer, &ss);
	int fd = tunnel_socket(&key->peer);
	struct tunnel *t;

	if (fd < 0)
		return NULL;
	t = tunnel_new(w, fd, true, ctx);
	if (!t) {
		close(fd);
		return NULL;
	}
	t->key = *key;
	snprintf(t->peer.service, sizeof(t->peer.service), "%s", key->service);
	SSL_set_connect_state(t->ssl);
	STAT_ADD(w->st.pool, 1);
	if (tls_peer_attach(t->ssl, &t->peer) ||
	    evloop_add_fd(w->loop, fd, FD_EVENTS, on_fd, t) < 0) {
		tunnel_fail(t, TLS_R_PROTOCOL, "out of memory");
		return NULL;
	}
	link_add(&w->pool, &t->pnode);
	t->state = T_CONNECTING;
	if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
		tunnel_fail(t, TLS_R_CONNECT, strerror(errno));
		return NULL;
	}
	return t;
}

struct tunnel *tunnel_accept(struct worker *w, int fd, SSL_CTX *dispatch)
{
	struct tunnel *t = tunnel_new(w, fd, false, dispatch);

	if (!t)
		return NULL;
	sock_nodelay(fd);
	SSL_set_accept_state(t->ssl);
	t->state = T_HANDSHAKE;
	STAT_ADD(w->st.inbound_tunnels, 1);
	if (tls_peer_attach(t->ssl, &t->peer) ||
	    evloop_add_fd(w->loop, fd, FD_EVENTS, on_fd, t) < 0) {
		tunnel_fail(t, TLS_R_PROTOCOL, "out of memory");
		return NULL;
	}
	return t;
}

void tunnel_sweep(struct worker *w, uint64_t now)
{
	struct link *n, *next;

	for (n = w->tunnels.next; n != &w->tunnels; n = next) {
		struct tunnel *t = link_entry(n, struct tunnel, node);
		uint64_t limit = t->client ? w->snap->idle_ns : 2 * w->snap->idle_ns;

		next = n->next;
		if (t->state == T_READY && !t->streams && link_empty(&t->waiting) &&
		    now - t->idle_since_ns >= limit) {
			tunnel_enter(t);
			tunnel_goaway(t);
			tunnel_leave(t);
		}
	}
}
