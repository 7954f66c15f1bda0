/* The c-ares resolver on meshd's event loop: c-ares tells us which sockets it wants watched
 * (ARES_OPT_SOCK_STATE_CB) and we add them to the loop; one loop timer follows ares_timeout();
 * readiness and timeouts go back to c-ares through ares_process_fd(). So a lookup never blocks
 * and no thread runs per query. Answers are parsed here (dns_answer.c) and handed over as parsed
 * records. The only c-ares user in the tree. Loop thread only. */
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/log.h"
#include "discovery/dns/dns.h"

#define EDNS_UDP_SIZE 1232 /* the DNS flag day 2020 size: no IP fragmentation */

struct dns_resolver {
	struct evloop *loop;
	ares_channel channel;
	int64_t timer; /* ares_timeout() deadline, 0 when none */
	bool freeing;
};

/* One query in flight: where its answer goes. */
struct query {
	struct dns_resolver *r;
	int type;
	dns_answer_cb cb;
	void *arg;
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_err;

static void lib_init(void)
{
	lib_err = ares_library_init(ARES_LIB_INIT_ALL);
}

/* --- the loop side ---------------------------------------------------------------------------- */

static void arm_timer(struct dns_resolver *r);

static void on_timer(struct evloop *loop, void *arg)
{
	struct dns_resolver *r = arg;

	r->timer = 0;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	arm_timer(r);
}

/* Follows c-ares' next timeout (a retry, the end of a query) with one loop timer. */
static void arm_timer(struct dns_resolver *r)
{
	struct timeval tv, *t;
	uint64_t ns;

	if (r->freeing)
		return;
	if (r->timer) {
		evloop_del_timer(r->loop, r->timer);
		r->timer = 0;
	}
	t = ares_timeout(r->channel, NULL, &tv);
	if (!t)
		return;
	ns = (uint64_t)t->tv_sec * 1000000000ull + (uint64_t)t->tv_usec * 1000ull;
	r->timer = evloop_add_timer(r->loop, ns, on_timer, r);
	if (r->timer < 0)
		r->timer = 0;
}

static void on_fd(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct dns_resolver *r = arg;
	bool rd = events & (EPOLLIN | EPOLLERR | EPOLLHUP), wr = events & EPOLLOUT;

	ares_process_fd(r->channel, rd ? fd : ARES_SOCKET_BAD, wr ? fd : ARES_SOCKET_BAD);
	arm_timer(r);
}

/* c-ares opens, switches and closes its sockets: the loop watches what it asks for. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);

	if (!ev) {
		evloop_del_fd(r->loop, fd);
		return;
	}
	if (evloop_mod_fd(r->loop, fd, ev) == -ENOENT && evloop_add_fd(r->loop, fd, ev, on_fd, r))
		LOG_WARN("dns", "cannot watch a resolver socket", "fd=%d", fd);
}

/* --- setup ------------------------------------------------------------------------------------ */

/* "ip:port,[ip6]:port" for ares_set_servers_ports_csv. */
static int servers_csv(const struct config_endpoint *eps, size_t n, char *buf, size_t len)
{
	size_t pos = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		char ep[64];
		int w;

		config_endpoint_str(&eps[i], ep, sizeof(ep));
		w = snprintf(buf + pos, len - pos, "%s%s", i ? "," : "", ep);
		if (w < 0 || (size_t)w >= len - pos)
			return -ENAMETOOLONG;
		pos += (size_t)w;
	}
	return 0;
}

struct dns_resolver *dns_resolver_new(struct evloop *loop, const struct dns_resolver_opts *o)
{
	struct dns_resolver *r = calloc(1, sizeof(*r));
	struct ares_options opts = { 0 }; /* lookups: c-ares' default, /etc/hosts then DNS */
	int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_FLAGS | ARES_OPT_EDNSPSZ | ARES_OPT_TIMEOUTMS |
		   ARES_OPT_TRIES;
	char csv[2048];
	int err;

	pthread_once(&lib_once, lib_init);
	if (!r || lib_err) {
		free(r);
		errno = ENOMEM;
		return NULL;
	}
	r->loop = loop;
	opts.sock_state_cb = on_sock_state;
	opts.sock_state_cb_data = r;
	opts.flags = ARES_FLAG_EDNS; /* a truncated answer is retried over TCP (no IGNTC) */
	opts.ednspsz = EDNS_UDP_SIZE;
	opts.timeout = o->timeout_ms ? (int)o->timeout_ms : 1000;
	opts.tries = o->tries ? (int)o->tries : 2;
	err = ares_init_options(&r->channel, &opts, mask);
	if (err == ARES_SUCCESS && o->n_servers) {
		err = servers_csv(o->servers, o->n_servers, csv, sizeof(csv)) ? ARES_EBADSTR
									      : ARES_SUCCESS;
		if (err == ARES_SUCCESS)
			err = ares_set_servers_ports_csv(r->channel, csv);
		if (err != ARES_SUCCESS)
			ares_destroy(r->channel);
	}
	if (err != ARES_SUCCESS) {
		LOG_ERR("dns", "cannot set up the resolver", "err=%s", log_q(ares_strerror(err)));
		free(r);
		errno = EINVAL;
		return NULL;
	}
	return r;
}

void dns_resolver_free(struct dns_resolver *r)
{
	if (!r)
		return;
	r->freeing = true;
	if (r->timer)
		evloop_del_timer(r->loop, r->timer);
	ares_destroy(r->channel); /* callbacks run with ARES_EDESTRUCTION; sockets unwatched */
	free(r);
}

/* --- queries ---------------------------------------------------------------------------------- */

static enum dns_status from_ares(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return DNS_OK;
	case ARES_ENODATA:
		return DNS_NODATA;
	case ARES_ENOTFOUND:
		return DNS_NXDOMAIN;
	case ARES_ESERVFAIL:
		return DNS_SERVFAIL;
	case ARES_EREFUSED:
		return DNS_REFUSED;
	case ARES_ETIMEOUT:
		return DNS_TIMEOUT;
	case ARES_EDESTRUCTION:
	case ARES_ECANCELLED:
		return DNS_CANCELLED;
	default:
		return DNS_ERROR;
	}
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct query *q = arg;
	struct dns_answer a = { 0 };
	enum dns_status st = from_ares(status);

	if (st == DNS_OK) {
		if (dns_parse_answer(abuf, (size_t)alen, q->type, &a))
			st = DNS_ERROR;
		else
			st = dns_answer_status(&a);
	}
	q->cb(q->arg, st, &a);
	dns_answer_free(&a);
	free(q);
}

int dns_resolver_query(struct dns_resolver *r, const char *name, int type, dns_answer_cb cb,
		       void *arg)
{
	struct query *q = malloc(sizeof(*q));

	if (!q)
		return -ENOMEM;
	*q = (struct query){ r, type, cb, arg };
	ares_query(r->channel, name, 1 /* C_IN */, type, on_answer, q);
	arm_timer(r);
	return 0;
}

/* The addresses of a getaddrinfo result as an answer (TTLs from the records). */
static int addrs_answer(const struct ares_addrinfo *ai, struct dns_answer *a)
{
	const struct ares_addrinfo_node *n;
	size_t count = 0;

	for (n = ai ? ai->nodes : NULL; n; n = n->ai_next)
		count++;
	a->addr = calloc(count + 1, sizeof(*a->addr));
	a->min_ttl = UINT32_MAX;
	if (!a->addr)
		return -ENOMEM;
	for (n = ai ? ai->nodes : NULL; n && a->n_addr < DNS_MAX_RECORDS; n = n->ai_next) {
		struct dns_addr *d = &a->addr[a->n_addr];

		if (n->ai_family == AF_INET)
			d->addr.v4 = ((const struct sockaddr_in *)n->ai_addr)->sin_addr;
		else if (n->ai_family == AF_INET6)
			d->addr.v6 = ((const struct sockaddr_in6 *)n->ai_addr)->sin6_addr;
		else
			continue;
		d->family = n->ai_family;
		d->ttl = n->ai_ttl > 0 ? (uint32_t)n->ai_ttl : 0;
		if (d->ttl < a->min_ttl)
			a->min_ttl = d->ttl;
		a->n_addr++;
	}
	return 0;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	struct query *q = arg;
	struct dns_answer a = { 0 };
	enum dns_status st = from_ares(status);

	if (st == DNS_OK && addrs_answer(ai, &a))
		st = DNS_ERROR;
	if (st == DNS_OK && !a.n_addr)
		st = DNS_NODATA;
	q->cb(q->arg, st, &a);
	dns_answer_free(&a);
	ares_freeaddrinfo(ai);
	free(q);
}

int dns_resolver_addrs(struct dns_resolver *r, const char *host, dns_answer_cb cb, void *arg)
{
	struct ares_addrinfo_hints hints = { .ai_family = AF_UNSPEC };
	struct query *q = malloc(sizeof(*q));

	if (!q)
		return -ENOMEM;
	*q = (struct query){ r, DNS_TYPE_A, cb, arg };
	ares_getaddrinfo(r->channel, host, NULL, &hints, on_addrinfo, q);
	arm_timer(r);
	return 0;
}
