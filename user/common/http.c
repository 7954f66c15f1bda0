/* HTTP server and client behind http.h. The server is nonblocking on the event loop: one listener
 * (TCP or unix), per-connection read buffer bounded by the header and body limits, one response in
 * flight per connection (pipelined requests wait), bodies sent whole or streamed as chunks.
 * Anyone who can connect is assumed hostile: each phase of a connection (idle, receiving one
 * request, sending one response) has a whole deadline that no trickle of bytes extends, and a
 * full server evicts its idlest connection for a new one instead of refusing it. The client is
 * blocking, for meshctl. Framing is in http_parse.c. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/http.h"
#include "common/sockaddr.h"
#include "common/log.h"
#include "common/pathperm.h"

#define CONN_BUF_MAX (HTTP_HEADER_MAX + HTTP_BODY_MAX)
#define CLIENT_RESP_MAX (64u << 20)
/* A response whose peer has taken no byte for this long may be evicted for a new connection. */
#define STALLED_MS 500
/* A connection younger than this is never evicted: its request is on its way. */
#define MIN_AGE_MS 100
/* Producing a streamed body yields the event loop after this long (it goes on next iteration). */
#define STREAM_BUDGET_NS (2 * 1000 * 1000ULL)

/* What a connection is doing; its deadline is the start of that plus the server's timeout. */
enum conn_phase {
	CONN_IDLE = 0,	  /* no byte of a request yet (new, or kept alive between requests) */
	CONN_READING = 1, /* part of a request received */
	CONN_WRITING = 2, /* answering */
};

struct http_conn {
	struct http_server *srv;
	struct http_conn *prev, *next;
	int fd;
	char *rbuf;
	size_t rlen, rcap;
	struct strbuf head, body; /* response in flight: head then body */
	size_t woff;		  /* bytes of head+body already written */
	/* Set while a chunked body streams (see struct http_response). */
	int (*produce)(void *state, struct strbuf *body);
	void (*release)(void *state);
	void *state;
	bool writing;
	bool close_after;
	uint64_t accepted_ns;
	uint64_t since_ns;   /* start of the current phase (conn_phase) */
	uint64_t blocked_ns; /* writing: since when the peer takes no bytes; 0 = it does */
	int64_t timer;
	int64_t resume; /* a stream that used its budget goes on at this timer (0 = none) */
};

struct http_server {
	struct evloop *loop;
	int fd;
	char *unix_path; /* set when we created a unix socket (unlinked on free) */
	const char *name;
	uint64_t timeout_ns;
	unsigned max_conns, n_conns;
	http_handler_fn handler;
	void *arg;
	struct http_conn *conns;
	bool paused;		     /* full: new connections wait in the listen backlog */
	int64_t resume_timer;	     /* while paused: look for an evictable connection again */
	struct log_ratelimit log_rl; /* waiting and evicted connections: caused at will */
};

static void server_resume(struct http_server *srv);

/* Ends a streamed body: its producer state is released exactly once. */
static void stream_end(struct http_conn *c)
{
	if (c->release)
		c->release(c->state);
	c->produce = NULL;
	c->release = NULL;
	c->state = NULL;
}

static void conn_close(struct http_conn *c)
{
	struct http_server *srv = c->srv;

	stream_end(c);
	evloop_del_fd(srv->loop, c->fd);
	evloop_del_timer(srv->loop, c->timer);
	if (c->resume)
		evloop_del_timer(srv->loop, c->resume);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->n_conns--;
	if (srv->paused)
		server_resume(srv);
	strbuf_free(&c->head);
	strbuf_free(&c->body);
	free(c->rbuf);
	free(c);
}

static enum conn_phase conn_phase(const struct http_conn *c)
{
	return c->writing ? CONN_WRITING : c->rlen ? CONN_READING : CONN_IDLE;
}

/* A new phase starts now: its whole deadline runs from here. Bytes arriving or leaving within a
 * phase never extend it (one byte a second must not hold a connection forever). */
static void conn_phase_start(struct http_conn *c)
{
	c->since_ns = evloop_now_ns();
	c->blocked_ns = 0;
}

static void conn_timer(struct evloop *loop, void *arg)
{
	struct http_conn *c = arg;
	uint64_t now = evloop_now_ns(), deadline = c->since_ns + c->srv->timeout_ns;

	c->timer = 0;
	if (now >= deadline) {
		LOG_DEBUG("http", "connection timed out", "server=%s phase=%s", c->srv->name,
			  (const char *[]){ "idle", "request", "response" }[conn_phase(c)]);
		conn_close(c);
		return;
	}
	c->timer = evloop_add_timer(loop, deadline - now, conn_timer, c);
	if (c->timer < 0)
		conn_close(c);
}

/* Frames the piece of a streamed body now in `body` as one chunk: its size line goes into `head`
 * (sent first), CRLF after the data; an empty piece is no chunk. */
static void chunk_frame(struct http_conn *c)
{
	if (!c->body.len)
		return;
	strbuf_printf(&c->head, "%zx\r\n", c->body.len);
	strbuf_puts(&c->body, "\r\n");
}

/* Queues the next piece of a streamed body as one chunk (the size line in `head`, the data and
 * CRLF in `body`), plus the terminating chunk after the last piece. Returns 1 when something was
 * queued, 0 when the response is complete, or -errno. */
static int conn_next_chunk(struct http_conn *c)
{
	int rc;

	if (!c->produce)
		return 0;
	strbuf_reset(&c->head);
	strbuf_reset(&c->body);
	c->woff = 0;
	rc = c->produce(c->state, &c->body);
	if (rc >= 0 && strbuf_error(&c->body))
		rc = strbuf_error(&c->body);
	if (rc < 0) {
		stream_end(c);
		return rc;
	}
	chunk_frame(c);
	if (rc == 0) {
		strbuf_puts(&c->body, "0\r\n\r\n");
		stream_end(c);
	}
	return strbuf_error(&c->head) ? strbuf_error(&c->head) : 1;
}

/* Writes what it can of head+body, then of the following chunks of a streamed body, for at most
 * STREAM_BUDGET_NS of producing: a long stream yields the loop and goes on when the socket is
 * writable again (the next iteration). Returns 1 when the whole response is written, 0 to wait
 * for the socket, 2 when the budget ran out with the socket still writable, or -errno. */
static int conn_flush(struct http_conn *c)
{
	uint64_t start = evloop_now_ns();

	for (;;) {
		int more;

		while (c->woff < c->head.len + c->body.len) {
			struct iovec iov[2];
			struct msghdr msg = { .msg_iov = iov };
			ssize_t n;

			if (c->woff < c->head.len) {
				iov[msg.msg_iovlen].iov_base = c->head.data + c->woff;
				iov[msg.msg_iovlen++].iov_len = c->head.len - c->woff;
			}
			if (c->body.len) {
				size_t off = c->woff > c->head.len ? c->woff - c->head.len : 0;

				iov[msg.msg_iovlen].iov_base = c->body.data + off;
				iov[msg.msg_iovlen++].iov_len = c->body.len - off;
			}
			/* sendmsg, not writev: MSG_NOSIGNAL, a peer gone must not SIGPIPE us. */
			n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				return -errno;
			if (n < 0) {
				if (!c->blocked_ns)
					c->blocked_ns = evloop_now_ns();
				return 0;
			}
			c->woff += (size_t)n;
			c->blocked_ns = 0;
		}
		if (c->produce && evloop_now_ns() - start >= STREAM_BUDGET_NS)
			return 2;
		more = conn_next_chunk(c);
		if (more <= 0)
			return more < 0 ? more : 1;
	}
}

static void conn_respond(struct http_conn *c, struct http_response *resp, bool keep_alive,
			 bool head_only)
{
	strbuf_reset(&c->head);
	strbuf_free(&c->body);
	c->close_after = !keep_alive || resp->close;
	http_format_head(resp, !c->close_after, &c->head);
	c->woff = 0;
	c->writing = true;
	conn_phase_start(c);
	if (head_only) {
		strbuf_free(&resp->body);
		if (resp->release)
			resp->release(resp->state);
		return;
	}
	c->body = resp->body;
	if (resp->produce) {
		c->produce = resp->produce;
		c->release = resp->release;
		c->state = resp->state;
		chunk_frame(c); /* the first piece, after the response head */
	}
}

static void conn_error(struct http_conn *c, int status)
{
	struct http_response resp = { .status = status };

	strbuf_printf(&resp.body, "%d %s\n", status, http_status_text(status));
	conn_respond(c, &resp, false, false);
}

/* Parses and answers one buffered request if complete. Returns bytes consumed, 0 to wait. */
static size_t conn_dispatch(struct http_conn *c)
{
	struct http_request req;
	struct http_response resp = { .status = 200 };
	long n = http_parse_request(c->rbuf, c->rlen, &req);

	if (n == 0)
		return 0;
	if (n < 0) {
		LOG_DEBUG("http", "bad request", "server=%s err=%ld", c->srv->name, n);
		conn_error(c, http_parse_error_status(n));
		return c->rlen;
	}
	if (req.method == HTTP_METHOD_OTHER) {
		resp.status = 405;
		strbuf_puts(&resp.body, "method not allowed\n");
	} else {
		c->srv->handler(&req, &resp, c->srv->arg);
	}
	conn_respond(c, &resp, req.keep_alive, req.method == HTTP_METHOD_HEAD);
	return (size_t)n;
}

static int conn_advance(struct http_conn *c);

static void conn_resume(struct evloop *loop, void *arg)
{
	struct http_conn *c = arg;

	(void)loop;
	c->resume = 0;
	if (conn_advance(c) < 0)
		conn_close(c);
}

/* A stream that used its budget goes on at the next iteration: from a timer, not from EPOLLOUT
 * (a socket with room but unsent bytes need not report it), and its peer is not stalled. */
static int conn_yield(struct http_conn *c)
{
	if (!c->resume) {
		int64_t id = evloop_add_timer(c->srv->loop, 0, conn_resume, c);

		if (id < 0)
			return (int)id;
		c->resume = id;
	}
	return evloop_mod_fd(c->srv->loop, c->fd, 0);
}

/* Answers every complete buffered request in turn (pipelining), writing each response before
 * parsing the next; then waits for input, or for the socket to drain. Returns 0 or -errno (close). */
static int conn_advance(struct http_conn *c)
{
	for (;;) {
		int err;

		while (c->rlen && !c->writing) {
			size_t consumed = conn_dispatch(c);

			if (!consumed)
				break;
			memmove(c->rbuf, c->rbuf + consumed, c->rlen - consumed);
			c->rlen -= consumed;
		}
		if (!c->writing)
			return evloop_mod_fd(c->srv->loop, c->fd, EPOLLIN);
		err = conn_flush(c);
		if (err < 0)
			return err;
		if (err == 0)
			return evloop_mod_fd(c->srv->loop, c->fd, EPOLLOUT);
		if (err == 2)
			return conn_yield(c);
		c->writing = false;
		conn_phase_start(c);   /* idle, or the next pipelined request */
		strbuf_free(&c->body); /* a big response's memory is not kept while idle */
		if (c->close_after)
			return -ECONNRESET;
	}
}

static int conn_read(struct http_conn *c)
{
	for (;;) {
		ssize_t n;

		if (c->rlen == c->rcap) {
			size_t cap = c->rcap ? c->rcap * 2 : 1024;
			char *p;

			if (c->rcap >= CONN_BUF_MAX)
				return -EMSGSIZE;
			cap = cap > CONN_BUF_MAX ? CONN_BUF_MAX : cap;
			p = realloc(c->rbuf, cap);
			if (!p)
				return -ENOMEM;
			c->rbuf = p;
			c->rcap = cap;
		}
		n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		if (!c->rlen && !c->writing)
			conn_phase_start(c); /* the first byte of a request */
		c->rlen += (size_t)n;
	}
}

static void conn_event(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct http_conn *c = arg;
	int err = 0;

	if (c->writing) {
		err = conn_advance(c);
	} else {
		int rerr = conn_read(c);

		if (rerr == -EMSGSIZE)
			conn_error(c, 413);
		err = conn_advance(c);
		/* Peer gone (or broken) and nothing left to answer. */
		if (!err && rerr < 0 && rerr != -EMSGSIZE && !c->writing)
			err = rerr;
	}
	if (err < 0)
		conn_close(c);
}

/* Whether bytes from the peer wait unread: its request is being delivered right now (this loop
 * turn handles the listener first), so it is no idler. */
static bool has_input(const struct http_conn *c)
{
	int n = 0;

	return !c->writing && ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

/* The connection to give up for a new one on a full server: of those idle or receiving a request,
 * the one in that state longest (an old slow trickle or idler before a client that just
 * connected) and with no bytes waiting, else the response whose peer stopped reading longest
 * ago (at least `min_blocked_ns`). Never one younger than MIN_AGE_MS: its request is on its
 * way, and a flood of connects must not push it out. */
static struct http_conn *eviction_victim(const struct http_server *srv, uint64_t min_blocked_ns)
{
	struct http_conn *c, *best = NULL;
	uint64_t now = evloop_now_ns(), best_at = 0, at;
	bool best_writing = true;

	for (c = srv->conns; c; c = c->next) {
		if (now - c->accepted_ns < (uint64_t)MIN_AGE_MS * 1000000 || has_input(c))
			continue;
		at = c->writing ? c->blocked_ns : c->since_ns;
		if (c->writing && (!at || now - at < min_blocked_ns))
			continue;
		if (!best || (best_writing && !c->writing) ||
		    (best_writing == c->writing && at < best_at)) {
			best = c;
			best_writing = c->writing;
			best_at = at;
		}
	}
	return best;
}

bool http_server_shed_stalled(struct http_server *srv, unsigned min_blocked_ms)
{
	struct http_conn *c, *best = NULL;
	uint64_t now = evloop_now_ns();

	for (c = srv->conns; c; c = c->next)
		if (c->writing && c->produce && c->blocked_ns &&
		    now - c->blocked_ns >= (uint64_t)min_blocked_ms * 1000000 &&
		    (!best || c->blocked_ns < best->blocked_ns))
			best = c;
	if (!best)
		return false;
	LOG_WARN_RL(&srv->log_rl, now, "http", "dropped a response its client does not read",
		    "server=%s blocked_ms=%llu", srv->name,
		    (unsigned long long)(now - best->blocked_ns) / 1000000);
	conn_close(best);
	return true;
}

static void resume_timer(struct evloop *loop, void *arg)
{
	struct http_server *srv = arg;

	srv->resume_timer = 0;
	server_resume(srv);
}

/* Full with nothing to evict: stop accepting, so new connections wait in the kernel's listen
 * backlog, in order, instead of being accepted and closed (which only makes a flooding client
 * reconnect faster than a real one). Accepting resumes when a connection closes, or after
 * MIN_AGE_MS when one may have become evictable. */
static void server_pause(struct http_server *srv)
{
	if (srv->paused)
		return;
	srv->paused = true;
	evloop_mod_fd(srv->loop, srv->fd, 0);
	srv->resume_timer =
	    evloop_add_timer(srv->loop, (uint64_t)MIN_AGE_MS * 1000000, resume_timer, srv);
	LOG_WARN_RL(&srv->log_rl, evloop_now_ns(), "http",
		    "connection limit reached: new connections wait", "server=%s conns=%u",
		    srv->name, srv->n_conns);
}

static void server_resume(struct http_server *srv)
{
	if (srv->resume_timer > 0)
		evloop_del_timer(srv->loop, srv->resume_timer);
	srv->resume_timer = 0;
	srv->paused = false;
	if (srv->fd >= 0)
		evloop_mod_fd(srv->loop, srv->fd, EPOLLIN);
}

/* Room for the connection waiting on the listener: free below the limit, else by evicting a
 * victim. False when everything is busy (the caller pauses). */
static bool make_room(struct http_server *srv)
{
	struct http_conn *victim;

	if (srv->n_conns < srv->max_conns)
		return true;
	victim = eviction_victim(srv, (uint64_t)STALLED_MS * 1000000);
	if (!victim)
		return false;
	LOG_WARN_RL(&srv->log_rl, evloop_now_ns(), "http",
		    "connection limit reached: evicted the oldest idle or slow connection",
		    "server=%s conns=%u evicted=%s", srv->name, srv->n_conns,
		    (const char *[]){ "idle", "request", "response" }[conn_phase(victim)]);
	conn_close(victim);
	return true;
}

/* Whether a connection waits on listening socket `fd` (the callback accepts several in a row). */
static bool pending(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

static void server_accept(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct http_server *srv = arg;

	for (;;) {
		struct http_conn *c;
		int cfd;

		if (srv->n_conns >= srv->max_conns && pending(fd) && !make_room(srv)) {
			server_pause(srv);
			return;
		}
		cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				LOG_WARN_RL(&srv->log_rl, evloop_now_ns(), "http", "accept failed",
					    "server=%s err=%s", srv->name, log_q(strerror(errno)));
			return;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->srv = srv;
		c->fd = cfd;
		c->accepted_ns = evloop_now_ns();
		conn_phase_start(c);
		c->timer = evloop_add_timer(loop, srv->timeout_ns, conn_timer, c);
		if (c->timer < 0 || evloop_add_fd(loop, cfd, EPOLLIN, conn_event, c) < 0) {
			if (c->timer > 0)
				evloop_del_timer(loop, c->timer);
			close(cfd);
			free(c);
			continue;
		}
		c->next = srv->conns;
		if (c->next)
			c->next->prev = c;
		srv->conns = c;
		srv->n_conns++;
	}
}

static struct http_server *server_new(struct evloop *loop, int fd,
				      const struct http_server_opts *opts, http_handler_fn handler,
				      void *arg)
{
	struct http_server *srv = calloc(1, sizeof(*srv));
	int err;

	if (!srv)
		return NULL;
	srv->loop = loop;
	srv->fd = fd;
	srv->name = opts && opts->name ? opts->name : "http";
	srv->timeout_ns = (uint64_t)(opts && opts->timeout_ms ? opts->timeout_ms : 10000) * 1000000;
	srv->max_conns = opts && opts->max_conns ? opts->max_conns : 64;
	srv->log_rl = (struct log_ratelimit)LOG_RATELIMIT_INIT(10000, 5);
	srv->handler = handler;
	srv->arg = arg;
	err = evloop_add_fd(loop, fd, EPOLLIN, server_accept, srv);
	if (err) {
		free(srv);
		errno = -err;
		return NULL;
	}
	return srv;
}

struct http_server *http_server_listen_tcp(struct evloop *loop, const struct config_endpoint *ep,
					   const struct http_server_opts *opts,
					   http_handler_fn handler, void *arg)
{
	struct sockaddr_storage ss;
	socklen_t sl = sockaddr_from_endpoint(ep, &ss);
	struct http_server *srv;
	int fd, one = 1, err;

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0)
		goto err_close;
	srv = server_new(loop, fd, opts, handler, arg);
	if (!srv)
		goto err_close;
	return srv;

err_close:
	err = errno;
	close(fd);
	errno = err;
	return NULL;
}

/* Creates each missing directory above `path` with mode 0700. Returns 0 or -errno. */
static int mkdir_parents(const char *path)
{
	char buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *p;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	strcpy(buf, path);
	for (p = buf + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		if (mkdir(buf, 0700) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sun)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	strcpy(sun->sun_path, path);
	return 0;
}

/* Removes a socket file nobody listens on. A live socket is -EADDRINUSE, a non-socket -EEXIST. */
static int remove_stale(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	close(fd);
	if (rc == 0)
		return -EADDRINUSE;
	if (errno != ECONNREFUSED)
		return -errno;
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* A socket where another user may write could be removed and replaced by theirs, which would then
 * answer our clients: the directory (and those above) must be root's or ours alone. */
static int private_parent(const char *path)
{
	char why[4200];
	int err = pathperm_private_parent(path, geteuid(), why, sizeof(why));

	if (err)
		LOG_ERR("http", "refusing a unix socket in a directory others can change",
			"socket=%s why=%s", log_q(path), log_q(why));
	return err;
}

static int unix_listen_fd(const char *path)
{
	struct sockaddr_un sun;
	mode_t mask;
	int fd, err;

	err = unix_addr(path, &sun);
	if (!err)
		err = private_parent(path);
	if (!err)
		err = mkdir_parents(path);
	if (!err)
		err = private_parent(path); /* what exists now, ours or not */
	if (!err)
		err = remove_stale(path, &sun);
	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* The umask makes bind create the path 0600 already, so it never exists wider. */
	mask = umask(0177);
	err = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(mask);
	if (err < 0)
		goto err_close;
	if (chmod(path, 0600) < 0 || listen(fd, 64) < 0)
		goto err_unlink;
	return fd;

err_unlink:
	err = -errno;
	unlink(path);
	close(fd);
	return err;
err_close:
	err = -errno;
	close(fd);
	return err;
}

struct http_server *http_server_listen_unix(struct evloop *loop, const char *path,
					    const struct http_server_opts *opts,
					    http_handler_fn handler, void *arg)
{
	struct http_server *srv;
	int fd = unix_listen_fd(path), err;

	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	srv = server_new(loop, fd, opts, handler, arg);
	if (!srv)
		goto err_close;
	srv->unix_path = strdup(path);
	if (!srv->unix_path) {
		http_server_free(srv);
		errno = ENOMEM;
		return NULL;
	}
	return srv;

err_close:
	err = errno;
	unlink(path);
	close(fd);
	errno = err;
	return NULL;
}

void http_server_stop_listening(struct http_server *srv)
{
	if (!srv || srv->fd < 0)
		return;
	if (srv->resume_timer > 0)
		evloop_del_timer(srv->loop, srv->resume_timer);
	srv->resume_timer = 0;
	srv->paused = false;
	evloop_del_fd(srv->loop, srv->fd);
	close(srv->fd);
	srv->fd = -1;
	if (srv->unix_path)
		unlink(srv->unix_path);
	free(srv->unix_path);
	srv->unix_path = NULL;
}

void http_server_free(struct http_server *srv)
{
	if (!srv)
		return;
	srv->paused = false; /* closing connections must not resume accepting */
	if (srv->resume_timer > 0)
		evloop_del_timer(srv->loop, srv->resume_timer);
	srv->resume_timer = 0;
	while (srv->conns)
		conn_close(srv->conns);
	http_server_stop_listening(srv);
	free(srv);
}

unsigned http_server_conns(const struct http_server *srv)
{
	return srv ? srv->n_conns : 0;
}

/* --- client ------------------------------------------------------------------------------- */

static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
	uint64_t now = evloop_now_ns();
	struct pollfd pfd = { .fd = fd, .events = events };
	int rc;

	if (now >= deadline_ns)
		return -ETIMEDOUT;
	rc = poll(&pfd, 1, (int)((deadline_ns - now) / 1000000 + 1));
	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	return rc == 0 ? -ETIMEDOUT : 0;
}

static int client_send(int fd, const char *p, size_t n, uint64_t deadline_ns)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		int err;

		if (w < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		err = wait_fd(fd, POLLOUT, deadline_ns);
		if (err)
			return err;
	}
	return 0;
}

/* Reads until EOF (we always send Connection: close). */
static int client_recv(int fd, struct strbuf *sb, uint64_t deadline_ns)
{
	for (;;) {
		ssize_t r;
		int err;

		if (strbuf_reserve(sb, 16384))
			return -ENOMEM;
		r = recv(fd, sb->data + sb->len, sb->cap - sb->len - 1, 0);
		if (r == 0)
			return 0;
		if (r > 0) {
			sb->len += (size_t)r;
			sb->data[sb->len] = '\0';
			if (sb->len > CLIENT_RESP_MAX)
				return -EMSGSIZE;
			continue;
		}
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		err = wait_fd(fd, POLLIN, deadline_ns);
		if (err)
			return err;
	}
}

/* Connects `fd` (blocking) to `sun` by `deadline_ns`, then makes it nonblocking. A unix socket
 * whose backlog is full (a flood of connects) fails a nonblocking connect at once with EAGAIN;
 * a blocking one waits for room, bounded here by SO_SNDTIMEO. Returns 0 or -errno. */
static int client_connect(int fd, const struct sockaddr_un *sun, uint64_t deadline_ns)
{
	uint64_t now = evloop_now_ns(), left = deadline_ns > now ? deadline_ns - now : 1000;
	struct timeval tv = { .tv_sec = (time_t)(left / 1000000000),
			      .tv_usec = (suseconds_t)(left % 1000000000 / 1000) };

	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) < 0)
		return errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
	return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ? -errno : 0;
}

/* Whether the process listening on connected unix socket `fd` runs as root or as us. Another
 * user's socket (left where meshd's should be) must not have its answers believed. */
static int peer_trusted(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		return -errno;
	return cr.uid == 0 || cr.uid == geteuid() ? 0 : -EPERM;
}

/* One exchange: connects to `sun`, sends `req`, reads the whole answer into `resp` by
 * `deadline_ns`. A server at its connection limit may close a new connection without reading it:
 * EPIPE while sending, or ECONNRESET (a unix socket closed with our bytes unread) before a byte
 * of answer. Nothing was processed then, so that is tried again until the deadline. */
static int client_exchange(const struct sockaddr_un *sun, const struct strbuf *req,
			   uint64_t deadline_ns, struct strbuf *resp)
{
	int fd, err;

	for (;;) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		err = client_connect(fd, sun, deadline_ns);
		if (!err)
			err = peer_trusted(fd);
		if (!err)
			err = client_send(fd, req->data, req->len, deadline_ns);
		if (!err)
			err = client_recv(fd, resp, deadline_ns);
		close(fd);
		if ((err != -EPIPE && err != -ECONNRESET) || resp->len ||
		    evloop_now_ns() >= deadline_ns)
			return err;
		poll(NULL, 0, 10);
	}
}

int http_unix_request(const char *path, const char *method, const char *target, const char *body,
		      size_t body_len, unsigned timeout_ms, int *status, char **resp_body,
		      size_t *resp_len)
{
	uint64_t deadline = evloop_now_ns() + (uint64_t)timeout_ms * 1000000;
	struct strbuf req = STRBUF_INIT, resp = STRBUF_INIT;
	struct sockaddr_un sun;
	const char *b;
	size_t blen;
	int err;

	err = unix_addr(path, &sun);
	if (err)
		return err;
	strbuf_printf(&req,
		      "%s %s HTTP/1.1\r\nHost: meshd\r\nUser-Agent: meshctl/%s\r\n"
		      "Connection: close\r\nContent-Length: %zu\r\n\r\n",
		      method, target, MESH_VERSION, body_len);
	if (body_len)
		strbuf_append(&req, body, body_len);
	err = strbuf_error(&req);
	if (!err)
		err = client_exchange(&sun, &req, deadline, &resp);
	if (err)
		goto out;
	err = http_parse_response(resp.data ? resp.data : "", resp.len, status, &b, &blen);
	if (err) {
		err = -EPROTO;
		goto out;
	}
	*resp_body = malloc(blen + 1);
	if (!*resp_body) {
		err = -ENOMEM;
		goto out;
	}
	memcpy(*resp_body, b, blen);
	(*resp_body)[blen] = '\0';
	if (resp_len)
		*resp_len = blen;
out:
	strbuf_free(&req);
	strbuf_free(&resp);
	return err;
}
