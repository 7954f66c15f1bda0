/* Legs: one proxied connection, an application socket (outbound) or a backend socket (inbound)
 * bridged to one HTTP/2 CONNECT stream. Bytes read from the socket go straight into nghttp2's
 * DATA frame buffer (the data provider reads the socket); bytes from the stream are written to
 * the socket at once (several chunks of one tunnel read under TCP_CORK, so a bulk transfer goes
 * out in large packets), and only what the socket cannot take is copied and queued,
 * unconsumed, so HTTP/2 flow control stops the peer when the application is slow. End of input becomes
 * END_STREAM and END_STREAM becomes shutdown(SHUT_WR) (half-close both ways); a socket error
 * becomes RST_STREAM(CONNECT_ERROR) and RST_STREAM becomes a TCP reset (RFC 9113 8.5).
 * An outbound leg sends the application's first bytes with the CONNECT, before the answer (no
 * round trip before data flows), and keeps them until the answer for a retry; an inbound leg
 * queues what arrives while its backend connect is in progress and writes it once connected.
 * Worker thread only; the socket is edge-triggered. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mtls/proxy.h"

#define FD_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

int sock_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void sock_cork(int fd, bool on)
{
	int v = on;

	setsockopt(fd, IPPROTO_TCP, TCP_CORK, &v, sizeof(v));
}

void sock_close_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

static enum mtls_dir dir_of(const struct leg *l)
{
	return l->role == LEG_OUTBOUND ? MTLS_OUTBOUND : MTLS_INBOUND;
}

static void on_leg_fd(struct evloop *loop, int fd, uint32_t events, void *arg);

struct leg *leg_new(struct worker *w, enum leg_role role, int fd)
{
	struct leg *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->w = w;
	l->role = role;
	l->fd = fd;
	l->sid = -1;
	l->wq_tail = &l->wq;
	l->started_ns = evloop_now_ns();
	link_init(&l->tnode);
	link_init(&l->inode);
	STAT_ADD(w->n_legs, 1);
	STAT_ADD(w->st.conns_total[dir_of(l)], 1);
	STAT_ADD(w->st.conns_active[dir_of(l)], 1);
	return l;
}

/* Watches the socket (once). 0 or -errno. */
int leg_watch(struct leg *l)
{
	int err;

	if (l->fd_registered || l->fd < 0)
		return 0;
	err = evloop_add_fd(l->w->loop, l->fd, FD_EVENTS, on_leg_fd, l);
	l->fd_registered = !err;
	return err;
}

static void leg_free(struct leg *l)
{
	struct chunk *c, *next;

	evloop_del_timer(l->w->loop, l->timer);
	link_del(&l->tnode);
	link_del(&l->inode);
	for (c = l->wq; c; c = next) {
		next = c->next;
		free(c);
	}
	free(l->early);
	STAT_ADD(l->w->n_legs, -1);
	STAT_ADD(l->w->st.conns_active[dir_of(l)], -1);
	free(l);
}

void leg_enter(struct leg *l)
{
	l->busy++;
}

void leg_leave(struct leg *l)
{
	if (--l->busy == 0 && l->dead)
		leg_free(l);
}

struct sref *sref_new(struct tunnel *t)
{
	struct sref *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->sid = -1;
	link_add(&t->srefs, &s->node);
	return s;
}

void sref_free(struct sref *s)
{
	link_del(&s->node);
	free(s);
}

void leg_bind(struct leg *l, struct tunnel *t, struct sref *s)
{
	link_del(&l->tnode);
	l->t = t;
	l->sref = s;
	l->sid = s->sid;
	s->l = l;
	link_add(&t->legs, &l->tnode);
}

/* Gives flow-control credit back for `n` queued bytes delivered to (or dropped for) the socket. */
static void consume(struct leg *l, size_t n)
{
	struct tunnel *t = l->t;

	if (n > l->unconsumed)
		n = l->unconsumed;
	l->unconsumed -= n;
	if (!t || !n || t->state != T_READY)
		return;
	if (l->sref)
		nghttp2_session_consume(t->h2, l->sid, n);
	else
		nghttp2_session_consume_connection(t->h2, n);
}

/* The leg leaves tunnel t: no reference to it may stay there (uncorked if it was corked). */
static void leg_forget(struct leg *l, struct tunnel *t)
{
	if (!t)
		return;
	if (t->cork_leg == l)
		tunnel_uncork_leg(t);
	if (t->recv_leg == l)
		t->recv_leg = NULL;
}

void leg_unbind(struct leg *l, uint32_t code)
{
	struct tunnel *t = l->t;
	bool flush = false;

	if (t && t->state == T_READY && l->unconsumed) {
		nghttp2_session_consume_connection(t->h2, l->unconsumed);
		l->unconsumed = 0;
		flush = true;
	}
	if (l->sref) {
		l->sref->l = NULL;
		if (code != NO_RST && t && t->state == T_READY) {
			nghttp2_submit_rst_stream(t->h2, NGHTTP2_FLAG_NONE, l->sid, code);
			flush = true;
		}
		l->sref = NULL;
	}
	link_del(&l->tnode);
	leg_forget(l, t);
	l->t = NULL;
	if (flush)
		tunnel_flush(t);
}

static void reset_stream(struct leg *l)
{
	if (l->t && l->sref && l->t->state == T_READY)
		nghttp2_submit_rst_stream(l->t->h2, NGHTTP2_FLAG_NONE, l->sid,
					  NGHTTP2_CONNECT_ERROR);
}

void leg_close(struct leg *l, bool reset)
{
	if (l->dead)
		return;
	leg_enter(l);
	l->dead = true;
	trace_end(l);
	l->state = L_DONE;
	if (l->fd >= 0) {
		if (l->fd_registered)
			evloop_del_fd(l->w->loop, l->fd);
		if (reset || l->reset)
			sock_close_reset(l->fd);
		else
			close(l->fd);
		l->fd = -1;
	}
	leg_unbind(l, reset || l->reset ? NGHTTP2_CONNECT_ERROR : NGHTTP2_CANCEL);
	leg_leave(l);
}

/* A closed stream with everything delivered ends the leg: normally FINs went both ways; a
 * stream the peer ended before we did (RST_STREAM NO_ERROR) cannot carry the rest: reset. */
static void maybe_finish(struct leg *l)
{
	if (l->state == L_ESTABLISHED && !l->sref && !l->wq)
		leg_close(l, !(l->fd_eof && l->peer_eof));
}

static void shut_writes(struct leg *l)
{
	if (l->wr_shut || l->wq || !l->peer_eof || l->fd < 0 || l->state != L_ESTABLISHED)
		return;
	shutdown(l->fd, SHUT_WR);
	l->wr_shut = true;
}

/* --- stream -> socket --------------------------------------------------------------------------- */

static int queue_copy(struct leg *l, const uint8_t *data, size_t len)
{
	struct chunk *c = malloc(sizeof(*c) + len);

	if (!c)
		return -ENOMEM;
	c->next = NULL;
	c->len = len;
	c->off = 0;
	memcpy(c->data, data, len);
	*l->wq_tail = c;
	l->wq_tail = &c->next;
	l->wq_bytes += len;
	l->unconsumed += len;
	return 0;
}

/* `n` bytes reached the socket; `queued` when they came from the queue (else straight from a
 * DATA frame, whose credit is returned at once). */
static void delivered(struct leg *l, size_t n, bool queued)
{
	l->bytes_down += n;
	STAT_ADD(l->w->st.bytes[dir_of(l)][1], n);
	if (queued) {
		consume(l, n);
	} else if (l->t && l->t->state == T_READY && n) {
		if (l->sref)
			nghttp2_session_consume(l->t->h2, l->sid, n);
		else
			nghttp2_session_consume_connection(l->t->h2, n);
	}
}

/* The socket failed under a write: the application or backend is gone. */
static void write_failed(struct leg *l)
{
	l->reset = true;
	reset_stream(l);
	leg_close(l, true);
}

/* A chunk for this leg with more records already here, or a second one in one tunnel read:
 * cork its socket until the read ends (see read_tls), so a bulk transfer reaches the
 * application in large packets and fewer wake-ups; a lone chunk goes at once. */
static void cork_run(struct leg *l)
{
	struct tunnel *t = l->t;

	if ((t->recv_leg == l || tunnel_more_here(t)) && !t->cork_leg) {
		sock_cork(l->fd, true);
		t->cork_leg = l;
	}
	t->recv_leg = l;
}

static void write_data(struct leg *l, const uint8_t *data, size_t len)
{
	ssize_t n = 0;

	/* Before L_ESTABLISHED (an inbound backend connect in progress) everything is queued. */
	if (!l->wq && l->state == L_ESTABLISHED) {
		cork_run(l);
		n = send(l->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			nghttp2_session_consume(l->t->h2, l->sid, len);
			write_failed(l);
			return;
		}
		if (n < 0)
			n = 0;
		delivered(l, (size_t)n, false);
		if ((size_t)n == len)
			return;
	}
	if (queue_copy(l, data + n, len - (size_t)n)) {
		nghttp2_session_consume(l->t->h2, l->sid, len - (size_t)n);
		write_failed(l);
	}
}

void leg_data(struct leg *l, const uint8_t *data, size_t len)
{
	write_data(l, data, len);
	/* The caller filled a whole frame before the answer: more may wait on it there. */
	if (!l->dead && l->answer_held && l->bytes_down + l->wq_bytes >= DATA_FRAME_PAYLOAD)
		inbound_answer(l);
}

/* Writes queued chunks until the socket is full. */
static void drain(struct leg *l)
{
	while (l->wq) {
		struct chunk *c = l->wq;
		ssize_t n =
		    send(l->fd, c->data + c->off, c->len - c->off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n < 0) {
			write_failed(l);
			return;
		}
		c->off += (size_t)n;
		l->wq_bytes -= (size_t)n;
		delivered(l, (size_t)n, true);
		if (c->off < c->len)
			return;
		l->wq = c->next;
		if (!l->wq)
			l->wq_tail = &l->wq;
		free(c);
	}
	shut_writes(l);
	maybe_finish(l);
}

void leg_peer_eof(struct leg *l)
{
	l->peer_eof = true;
	shut_writes(l);
	maybe_finish(l);
}

/* --- socket -> stream --------------------------------------------------------------------------- */

static ssize_t defer_read(struct leg *l)
{
	l->drained = false;
	l->deferred = true;
	return NGHTTP2_ERR_DEFERRED;
}

/* Reads the socket into one DATA frame: bytes, 0 with EOF flagged, or deferred. */
static ssize_t read_fd(struct leg *l, uint8_t *buf, size_t len, uint32_t *flags)
{
	ssize_t n = read(l->fd, buf, len);

	if (n > 0) {
		l->bytes_up += (uint64_t)n;
		STAT_ADD(l->w->st.bytes[dir_of(l)][0], (uint64_t)n);
		/* A short read emptied the socket: wait for the next edge rather than read(2)
		 * again for EAGAIN (edge-triggered: any later arrival wakes us). */
		l->drained = (size_t)n < len && !l->rdhup;
		return n;
	}
	if (n == 0) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		l->fd_eof = true;
		return 0;
	}
	l->deferred = true;
	if (errno == EAGAIN || errno == EINTR)
		return NGHTTP2_ERR_DEFERRED;
	/* Reset by the application or backend: tell the peer, then close with a reset (before
	 * the answer: once it is in, the breaker needs the outcome). */
	l->reset = true;
	if (l->state == L_ESTABLISHED)
		reset_stream(l);
	return NGHTTP2_ERR_DEFERRED;
}

/* Keeps the early bytes buf[0..n) for a replay. 0 or -ENOMEM. */
static int keep_early(struct leg *l, const uint8_t *buf, size_t n)
{
	uint8_t *p = realloc(l->early, l->early_len + n);

	if (!p)
		return -ENOMEM;
	memcpy(p + l->early_len, buf, n);
	l->early = p;
	l->early_len += n;
	l->early_off = l->early_len;
	return 0;
}

/* An outbound stream before its answer: replays what an earlier attempt sent, then reads more
 * of the application's bytes up to EARLY_BYTES in all, then waits for the answer. */
static ssize_t early_read(struct leg *l, uint8_t *buf, size_t len, uint32_t *flags)
{
	size_t left = l->early_len - l->early_off;
	ssize_t n;

	if (left) {
		n = (ssize_t)(len < left ? len : left);
		memcpy(buf, l->early + l->early_off, (size_t)n);
		l->early_off += (size_t)n;
		l->early_sent = true;
		return n;
	}
	if (l->early_eof) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		l->early_sent = true;
		return 0;
	}
	if (l->early_len >= EARLY_BYTES || l->fd < 0 || l->drained || l->reset)
		return defer_read(l);
	if (len > EARLY_BYTES - l->early_len)
		len = EARLY_BYTES - l->early_len;
	n = read_fd(l, buf, len, flags);
	if (n > 0 && keep_early(l, buf, (size_t)n)) {
		l->reset = true;
		return defer_read(l);
	}
	if (n >= 0)
		l->early_sent = true;
	if (n == 0)
		l->early_eof = true;
	return n;
}

ssize_t leg_read_cb(struct leg *l, uint8_t *buf, size_t len, uint32_t *flags)
{
	if (l->role == LEG_OUTBOUND && l->state == L_REQUESTED)
		return early_read(l, buf, len, flags);
	if (l->state != L_ESTABLISHED || l->fd < 0 || l->drained)
		return defer_read(l);
	return read_fd(l, buf, len, flags);
}

static ssize_t read_cb(nghttp2_session *h2, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
		       nghttp2_data_source *src, void *arg)
{
	struct sref *s = src->ptr;

	if (!s->l)
		return NGHTTP2_ERR_DEFERRED; /* left by its leg: a reset is on its way */
	return leg_read_cb(s->l, buf, len, flags);
}

nghttp2_data_provider leg_provider(struct sref *s)
{
	nghttp2_data_provider p = { .source.ptr = s, .read_callback = read_cb };

	return p;
}

void leg_establish(struct leg *l)
{
	l->state = L_ESTABLISHED;
	l->trace.established_ns = evloop_now_ns();
	free(l->early);
	l->early = NULL;
	l->early_len = l->early_off = 0;
	if (leg_watch(l)) {
		leg_close(l, true);
		return;
	}
	drain(l); /* what came before: an inbound leg's early bytes, END_STREAM */
	if (l->dead)
		return;
	l->deferred = false;
	if (l->t && l->sref)
		nghttp2_session_resume_data(l->t->h2, l->sid);
	if (l->t)
		tunnel_flush(l->t);
}

static void on_leg_fd(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct leg *l = arg;

	leg_enter(l);
	/* The peer's FIN came with this edge: read to the end, no new edge will say so. */
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		l->rdhup = true;
	/* New bytes: the next read must happen even if the stream is blocked by flow control now
	 * (this edge will not come again). */
	if (events & EPOLLIN)
		l->drained = false;
	if (l->role == LEG_INBOUND && l->state == L_REQUESTED) {
		inbound_connected(l, events);
	} else if (l->state == L_ESTABLISHED || l->state == L_REQUESTED) {
		if (l->answer_held && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
			inbound_answer(l);
		/* outbound L_REQUESTED: early bytes; a reset waits for the answer */
		if (!l->dead && l->wq && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
			drain(l);
			/* What drained was consumed: send the WINDOW_UPDATE it may have queued, or
			 * the peer, out of window, waits forever. */
			if (!l->dead && l->t)
				tunnel_flush(l->t);
		}
		if (!l->dead && l->deferred && l->sref && l->t &&
		    (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
			l->deferred = false;
			nghttp2_session_resume_data(l->t->h2, l->sid);
			tunnel_flush(l->t);
		}
		if (!l->dead && l->reset && l->state == L_ESTABLISHED)
			leg_close(l, true);
	}
	leg_leave(l);
}

/* --- stream end and tunnel failure -------------------------------------------------------------- */

void sref_closed(struct sref *s, uint32_t code)
{
	struct leg *l = s->l;

	sref_free(s);
	if (!l)
		return;
	leg_enter(l);
	if (l->t && l->t->state == T_READY && l->unconsumed) {
		/* Queued bytes of a closed stream: their credit goes back to the connection. */
		nghttp2_session_consume_connection(l->t->h2, l->unconsumed);
		l->unconsumed = 0;
	}
	l->sref = NULL;
	leg_stream_closed(l, code);
	leg_leave(l);
}

void leg_stream_closed(struct leg *l, uint32_t code)
{
	leg_enter(l);
	if (l->state == L_ESTABLISHED) {
		if (code != NGHTTP2_NO_ERROR || l->reset)
			leg_close(l, true);
		else
			maybe_finish(l);
	} else if (l->role == LEG_OUTBOUND && l->state == L_REQUESTED) {
		leg_unbind(l, NO_RST);
		/* Refused before any answer (GOAWAY, stream limit): the backend was not tried. */
		outbound_attempt_failed(
		    l, code == NGHTTP2_REFUSED_STREAM ? "refused_stream" : "stream_reset",
		    code != NGHTTP2_REFUSED_STREAM, code == NGHTTP2_REFUSED_STREAM);
	} else {
		leg_close(l, true);
	}
	leg_leave(l);
}

void leg_tunnel_failed(struct leg *l, const char *reason)
{
	leg_enter(l);
	l->unconsumed = 0;
	if (l->sref) {
		l->sref->l = NULL;
		l->sref = NULL;
	}
	link_del(&l->tnode);
	leg_forget(l, l->t);
	l->t = NULL;
	if (l->role == LEG_OUTBOUND && l->state != L_ESTABLISHED && l->state != L_DONE)
		outbound_attempt_failed(l, reason ? reason : "tunnel_failed", true,
					l->state == L_PENDING);
	else
		leg_close(l, true);
	leg_leave(l);
}
