/* Events fan-out: the datapath's ring buffer (breaker transitions, rejects, sampled connection
 * closes) is read once, on the loop, and each decoded record handed to every subscriber in the
 * order they subscribed: the log (here: transitions at warn/info, rejects at debug), the close-on-
 * open drains, the metrics component's counters and connection traces (tracing.c). Subscribers
 * must not block. Loop thread only. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "common/log.h"
#include "meshd/meshd.h"

struct subscriber {
	meshd_event_fn fn;
	void *arg;
};

struct events {
	struct meshd *m;
	int fd; /* the ring buffer's epoll fd watched by the loop, -1 when none */
	struct subscriber *subs;
	size_t n, cap;
};

/* Breaker transitions are what an operator needs to see (warn when a backend is ejected);
 * rejects can come by the thousand, so they stay at debug (counted anyway). */
static void log_event(const struct datapath_event *ev, void *arg)
{
	char be[INET6_ADDRSTRLEN + 8];

	config_endpoint_str(&ev->backend, be, sizeof(be));
	if (ev->type == MESH_EV_CIRCUIT) {
		if (ev->to == DATAPATH_CIRCUIT_OPEN)
			LOG_WARN("breaker", "circuit changed",
				 "service=%s backend=%s from=%s to=%s", log_q(ev->service), be,
				 datapath_circuit_name(ev->from), datapath_circuit_name(ev->to));
		else
			LOG_INFO("breaker", "circuit changed",
				 "service=%s backend=%s from=%s to=%s", log_q(ev->service), be,
				 datapath_circuit_name(ev->from), datapath_circuit_name(ev->to));
	} else if (ev->type == MESH_EV_REJECT) {
		LOG_DEBUG("datapath", "connect rejected", "service=%s reason=%s",
			  log_q(ev->service), datapath_reject_reason_name(ev->reason));
	}
}

static void fan_out(const struct datapath_event *ev, void *arg)
{
	struct events *e = arg;

	for (size_t i = 0; i < e->n; i++)
		e->subs[i].fn(ev, e->subs[i].arg);
}

static void on_readable(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct events *e = arg;

	if (e->m->dp)
		datapath_drain_events(e->m->dp, fan_out, e);
}

static struct events *get(struct meshd *m)
{
	if (!m->events && (m->events = calloc(1, sizeof(*m->events)))) {
		m->events->m = m;
		m->events->fd = -1;
	}
	return m->events;
}

int events_subscribe(struct meshd *m, meshd_event_fn fn, void *arg)
{
	struct events *e = get(m);

	if (!e)
		return -ENOMEM;
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 4;
		struct subscriber *s = realloc(e->subs, cap * sizeof(*s));

		if (!s)
			return -ENOMEM;
		e->subs = s;
		e->cap = cap;
	}
	e->subs[e->n++] = (struct subscriber){ fn, arg };
	return 0;
}

void events_unsubscribe(struct meshd *m, meshd_event_fn fn, void *arg)
{
	struct events *e = m->events;

	for (size_t i = 0; e && i < e->n; i++) {
		if (e->subs[i].fn != fn || e->subs[i].arg != arg)
			continue;
		memmove(&e->subs[i], &e->subs[i + 1], (e->n - i - 1) * sizeof(e->subs[0]));
		e->n--;
		return;
	}
}

/* Events are best effort: without them the datapath still works and counts everything. */
void events_start(struct meshd *m)
{
	struct events *e = get(m);
	int fd = m->dp ? datapath_event_fd(m->dp) : -ENODEV;

	if (!e || events_subscribe(m, log_event, NULL) ||
	    (fd >= 0 && evloop_add_fd(m->loop, fd, EPOLLIN, on_readable, e) < 0) || fd < 0) {
		LOG_WARN("datapath", "cannot watch datapath events; transitions will not be logged",
			 "err=%s",
			 log_q(strerror(fd < 0	? -fd
					: errno ? errno
						: ENOMEM)));
		return;
	}
	e->fd = fd;
}

void events_stop(struct meshd *m)
{
	struct events *e = m->events;

	if (!e)
		return;
	if (e->fd >= 0)
		evloop_del_fd(m->loop, e->fd);
	free(e->subs);
	free(e);
	m->events = NULL;
}
