/* One TCP, HTTP, UDP or DNS health probe as a small state machine on the event loop:
 * connecting -> (http, udp, dns: sending the request -> reading the answer) -> verdict. A one-shot timer bounds the whole
 * probe. Sockets are closed with an RST (linger 0), as HAProxy does, so frequent checks leave no
 * TIME_WAIT behind. Runs on the event-loop thread only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "health/health_probe.h"
#include "health/health_state.h"

enum probe_stage {
	PROBE_CONNECTING = 1,
	PROBE_SENDING = 2,
	PROBE_READING = 3,
};

static const char *const stage_names[] = {
	[PROBE_CONNECTING] = "connecting",
	[PROBE_SENDING] = "sending request",
	[PROBE_READING] = "reading response",
};

struct health_probe {
	struct evloop *loop;
	int fd;
	bool fd_watched;
	int64_t timer; /* timeout, or the deferred report of an immediate failure; 0 = none */
	enum probe_stage stage;
	enum config_health_type type;
	uint64_t timeout_ns;
	health_probe_cb cb;
	void *arg;
	char req[512];
	size_t req_len, req_off;
	char resp[512]; /* http: the status line; udp, dns: the first datagram */
	size_t resp_len;
	char reason[96];
};

static void probe_free(struct health_probe *p)
{
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };

	if (p->timer > 0)
		evloop_del_timer(p->loop, p->timer);
	if (p->fd_watched)
		evloop_del_fd(p->loop, p->fd);
	if (p->fd >= 0) {
		setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
		close(p->fd);
	}
	free(p);
}

void health_probe_cancel(struct health_probe *p)
{
	if (p)
		probe_free(p);
}

static void probe_finish(struct health_probe *p, bool ok, const char *reason)
{
	p->cb(ok, reason, p->arg);
	probe_free(p);
}

static void probe_fail_errno(struct health_probe *p, const char *what, int err)
{
	snprintf(p->reason, sizeof(p->reason), "%s: %s", what, strerror(err));
	probe_finish(p, false, p->reason);
}

static void on_timeout(struct evloop *loop, void *arg)
{
	struct health_probe *p = arg;

	p->timer = 0;
	snprintf(p->reason, sizeof(p->reason), "timeout after %llums %s",
		 (unsigned long long)(p->timeout_ns / 1000000), stage_names[p->stage]);
	probe_finish(p, false, p->reason);
}

static void on_deferred_failure(struct evloop *loop, void *arg)
{
	struct health_probe *p = arg;

	p->timer = 0;
	probe_finish(p, false, p->reason);
}

/* Verdict from the bytes read so far; returns without a verdict while the line is incomplete. */
static void probe_judge_response(struct health_probe *p)
{
	int status = health_http_status(p->resp, p->resp_len);

	if (status == 0 && p->resp_len < sizeof(p->resp))
		return;
	if (status <= 0) {
		probe_finish(p, false, "not an HTTP/1.x status line");
		return;
	}
	snprintf(p->reason, sizeof(p->reason), "http status %d", status);
	probe_finish(p, status >= 200 && status < 300, p->reason);
}

static bool datagram(const struct health_probe *p)
{
	return p->type == CONFIG_HEALTH_UDP || p->type == CONFIG_HEALTH_DNS;
}

/* A datagram answered: udp takes any; dns one with the query's id and the answer bit. */
static void probe_judge_datagram(struct health_probe *p, size_t n)
{
	const unsigned char *r = (const unsigned char *)p->resp;

	if (p->type == CONFIG_HEALTH_UDP) {
		snprintf(p->reason, sizeof(p->reason), "reply of %zu bytes", n);
		probe_finish(p, true, p->reason);
		return;
	}
	if (n < 12 || memcmp(r, p->req, 2) || !(r[2] & 0x80)) {
		probe_finish(p, false, "not a DNS answer to the query");
		return;
	}
	snprintf(p->reason, sizeof(p->reason), "dns rcode %d", r[3] & 0x0f);
	probe_finish(p, true, p->reason);
}

static void probe_read(struct health_probe *p)
{
	ssize_t n = recv(p->fd, p->resp + p->resp_len, sizeof(p->resp) - p->resp_len, 0);

	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			probe_fail_errno(p, "recv", errno); /* udp: ECONNREFUSED from ICMP */
		return;
	}
	if (datagram(p)) {
		probe_judge_datagram(p, (size_t)n);
		return;
	}
	if (n == 0) {
		probe_finish(p, false, "connection closed before the status line");
		return;
	}
	p->resp_len += (size_t)n;
	probe_judge_response(p);
}

static void probe_send(struct health_probe *p)
{
	while (p->req_off < p->req_len) {
		ssize_t n = send(p->fd, p->req + p->req_off, p->req_len - p->req_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				probe_fail_errno(p, "send", errno);
			return;
		}
		p->req_off += (size_t)n;
	}
	p->stage = PROBE_READING;
	if (evloop_mod_fd(p->loop, p->fd, EPOLLIN) < 0)
		probe_fail_errno(p, "epoll", errno);
}

/* The nonblocking connect finished, one way or the other. */
static void probe_connected(struct health_probe *p)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		probe_fail_errno(p, "connect", err);
		return;
	}
	if (p->type == CONFIG_HEALTH_TCP) {
		probe_finish(p, true, "connected");
		return;
	}
	p->stage = PROBE_SENDING;
	probe_send(p);
}

static void on_io(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct health_probe *p = arg;

	switch (p->stage) {
	case PROBE_CONNECTING:
		probe_connected(p);
		break;
	case PROBE_SENDING:
		probe_send(p);
		break;
	case PROBE_READING:
		probe_read(p);
		break;
	}
}

/* A DNS query (RFC 1035): header with a fresh id and RD, one question `name` IN A. */
static int probe_build_dns(struct health_probe *p, const char *name)
{
	static uint16_t next_id;
	unsigned char *q = (unsigned char *)p->req;
	size_t off = 12;
	uint16_t id = (uint16_t)(++next_id * 40503u + (uintptr_t)p);

	memset(q, 0, 12);
	q[0] = (unsigned char)(id >> 8);
	q[1] = (unsigned char)id;
	q[2] = 0x01; /* RD */
	q[5] = 1;    /* one question */
	while (name && *name) {
		size_t len = strcspn(name, ".");

		if (len == 0 || len > 63 || off + len + 1 + 5 >= sizeof(p->req))
			return -EINVAL;
		q[off++] = (unsigned char)len;
		memcpy(q + off, name, len);
		off += len;
		name += len + (name[len] == '.');
	}
	q[off++] = 0;
	memcpy(q + off, "\0\1\0\1", 4); /* type A, class IN */
	p->req_len = off + 4;
	return 0;
}

static int probe_build_request(struct health_probe *p, const struct health_probe_opts *opts)
{
	const char *path = opts->http_path && opts->http_path[0] ? opts->http_path : "/";
	char host[64];
	int n;

	config_endpoint_str(&opts->target, host, sizeof(host));
	n = snprintf(p->req, sizeof(p->req),
		     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshd-health-check\r\n"
		     "Connection: close\r\n\r\n",
		     path, host);
	if (n < 0 || (size_t)n >= sizeof(p->req))
		return -ENAMETOOLONG;
	p->req_len = (size_t)n;
	return 0;
}

/* Marks the socket and starts the nonblocking connect. Returns 0 when it is in progress (or done),
 * or -errno when the connect failed at once. */
static int probe_connect(struct health_probe *p, const struct config_endpoint *ep)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t sl;
	uint32_t mark = HEALTH_PROBE_MARK;

	if (ep->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_addr = ep->addr.v6;
		s6->sin6_port = htons(ep->port);
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_addr = ep->addr.v4;
		s4->sin_port = htons(ep->port);
		sl = sizeof(*s4);
	}
	/* Best effort: needs CAP_NET_ADMIN, which meshd has; without it probes still work. */
	setsockopt(p->fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
	if (connect(p->fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
		return -errno;
	return 0;
}

/* The connect failed at once (e.g. refused on loopback): report it from the loop, not from
 * inside health_probe_start, so callers see one code path. */
static int probe_defer_failure(struct health_probe *p, int err)
{
	snprintf(p->reason, sizeof(p->reason), "connect: %s", strerror(err));
	evloop_del_timer(p->loop, p->timer);
	p->timer = evloop_add_timer(p->loop, 0, on_deferred_failure, p);
	return p->timer > 0 ? 0 : (int)p->timer;
}

struct health_probe *health_probe_start(struct evloop *loop, const struct health_probe_opts *opts,
					health_probe_cb cb, void *arg)
{
	struct health_probe *p = calloc(1, sizeof(*p));
	int err;

	if (!p)
		return NULL;
	*p = (struct health_probe){ .loop = loop,
				    .fd = -1,
				    .stage = PROBE_CONNECTING,
				    .type = opts->type,
				    .timeout_ns = opts->timeout_ns,
				    .cb = cb,
				    .arg = arg };
	err = opts->type == CONFIG_HEALTH_HTTP	? probe_build_request(p, opts)
	      : opts->type == CONFIG_HEALTH_DNS ? probe_build_dns(p, opts->payload)
						: 0;
	if (!err && opts->type == CONFIG_HEALTH_UDP) {
		p->req_len = (size_t)snprintf(p->req, sizeof(p->req), "%s",
					      opts->payload ? opts->payload : "");
		p->req_len = p->req_len < sizeof(p->req) ? p->req_len : sizeof(p->req) - 1;
	}
	if (err)
		goto err_free;
	p->fd = socket(opts->target.family,
		       (datagram(p) ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->fd < 0)
		goto err_errno;
	p->timer = evloop_add_timer(loop, opts->timeout_ns, on_timeout, p);
	if (p->timer < 0) {
		err = (int)p->timer;
		p->timer = 0;
		goto err_free;
	}
	err = probe_connect(p, &opts->target);
	if (err)
		err = probe_defer_failure(p, -err);
	else if ((err = evloop_add_fd(loop, p->fd, EPOLLOUT, on_io, p)) == 0)
		p->fd_watched = true;
	if (err)
		goto err_free;
	return p;

err_errno:
	err = -errno;
err_free:
	probe_free(p);
	errno = -err;
	return NULL;
}
