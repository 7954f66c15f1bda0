/* The metrics component: an HTTP listener on telemetry.metrics_listen serving /metrics (the
 * Prometheus exposition of the daemon counters and the datapath's per-service and per-backend
 * stats, read with batch lookups by datapath_stats), /healthz (alive) and /readyz (ready; with
 * ?service=NAME, whether that service has usable backends).
 * Runs on the event-loop thread. A scrape answers at once with the daemon families (taken when
 * the request arrives), then reads the datapath in bounded steps into one snapshot and sends it a
 * bounded piece of a family per HTTP chunk, so neither a 24 MB exposition nor its collection
 * holds the loop or sits in memory whole (the HTTP server yields between pieces). */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "common/prom.h"
#include "discovery/discovery.h"
#include "health/service_state.h"
#include "meshd/meshd.h"
#include "telemetry/expo_mtls.h"
#include "telemetry/exposition.h"

struct metrics {
	struct meshd *m;
	struct http_server *srv;
	struct config_endpoint listen;
	uint64_t scrapes;
	unsigned in_flight; /* scrapes holding a snapshot (a few MB each at 10,000 backends) */
	uint64_t events[2]; /* datapath events read: [0] circuit transitions, [1] rejects */
};

#define SCRAPES_IN_FLIGHT_MAX 4
/* A scrape whose client has taken no byte for this long gives its snapshot up for a new one. */
#define SCRAPE_STALLED_MS 200
/* Datapath ids read, and services + backends rendered, per piece of a response. */
#define SCRAPE_STEP 1024

/* One /metrics response in flight: the snapshot taken when the request arrived, rendered one
 * family per chunk as the socket drains (http_response streaming). */
struct scrape {
	struct metrics *mt;
	struct exposition *e;
	struct expo_daemon d;
	struct expo_pos pos;
	struct datapath_stats_cursor cur;
	bool collected;
	uint64_t started_ns, collect_ns, render_ns;
	size_t bytes;
};

/* Events subscriber: datapath records counted by type (the ring buffer is read once, events.c). */
static void count_event(const struct datapath_event *ev, void *arg)
{
	struct metrics *mt = arg;

	if (ev->type == MESH_EV_CIRCUIT)
		mt->events[0]++;
	else if (ev->type == MESH_EV_REJECT)
		mt->events[1]++;
}

static uint64_t rss_bytes(void)
{
	unsigned long size, resident;
	FILE *f = fopen("/proc/self/statm", "re");
	int n;

	if (!f)
		return 0;
	n = fscanf(f, "%lu %lu", &size, &resident);
	fclose(f);
	return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

/* Unix time at which the daemon started, from the monotonic start stamp. */
static double start_time_seconds(const struct meshd *m)
{
	struct timespec now;
	double up = (double)(evloop_now_ns() - m->started_at_ns) / 1e9;

	clock_gettime(CLOCK_REALTIME, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9 - up;
}

static uint64_t load(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static void fill_tracing(const struct meshd *m, struct expo_daemon *d)
{
	const struct tracer_counters *c = &m->trace_counters;

	d->trace_exported = load(&c->exported);
	d->trace_dropped_full = load(&c->dropped_full);
	d->trace_dropped_error = load(&c->dropped_error);
	d->trace_exports[0] = load(&c->exports_ok);
	d->trace_exports[1] = load(&c->exports_error);
	if (d->n_datapath_counters > MESH_CNT_TRACE_DROP)
		d->trace_dropped_ringbuf = d->datapath_counters[MESH_CNT_TRACE_DROP];
}

/* A copy of the registration states, freed with the scrape (scrape_release). */
static void fill_registrations(const struct meshd *m, struct expo_daemon *d)
{
	struct discovery_registration one, *regs = NULL, *n;
	size_t count = 0;

	while (discovery_registration(m->discovery, count, &one) == 0) {
		n = realloc(regs, (count + 1) * sizeof(*regs));
		if (!n)
			break;
		regs = n;
		regs[count++] = one;
	}
	d->regs = regs;
	d->n_regs = count;
}

/* Where each service under discovery.consul.failover is served from, freed with the scrape. */
static void fill_failover(const struct meshd *m, struct expo_daemon *d)
{
	const struct config_consul *c = m->cfg ? &m->cfg->consul : NULL;
	struct expo_failover *f;
	const char *dc;

	if (!c || !c->n_failover)
		return;
	f = calloc(c->n_failover, sizeof(*f));
	d->failover = f;
	for (size_t i = 0; f && i < c->n_failover; i++) {
		if (!discovery_failover(m->discovery, c->failover[i].service, &dc))
			continue;
		snprintf(f[d->n_failover].service, sizeof(f->service), "%s",
			 c->failover[i].service);
		snprintf(f[d->n_failover].datacenter, sizeof(f->datacenter), "%s", dc ? dc : "");
		d->n_failover++;
	}
}

static void fill_daemon(const struct metrics *mt, struct expo_daemon *d)
{
	const struct meshd *m = mt->m;
	struct discovery_stats ds;

	memset(d, 0, sizeof(*d));
	discovery_get_stats(m->discovery, &ds);
	d->version = MESH_VERSION;
	d->ready = m->ready;
	d->config_generation = m->cfg ? m->cfg->generation : 0;
	memcpy(d->reloads, m->reloads, sizeof(d->reloads));
	d->discovery = ds.source;
	d->discovery_sync[0] = ds.sync_ok;
	d->discovery_sync[1] = ds.sync_error;
	d->discovery_entry_errors = ds.entry_errors;
	d->discovery_last_sync_ts = ds.last_sync_ts;
	d->discovery_up = ds.up;
	memcpy(d->datapath_events, mt->events, sizeof(d->datapath_events));
	evloop_get_stats(m->loop, &d->loop);
	memcpy(d->health_transitions, m->health_transitions, sizeof(d->health_transitions));
	d->rss_bytes = rss_bytes();
	d->start_time_seconds = start_time_seconds(m);
	d->counter_name = datapath_counter_name;
	fill_registrations(m, d);
	fill_failover(m, d);
	if (m->dp) {
		int n = datapath_counters(m->dp, d->datapath_counters, EXPO_COUNTERS_MAX);

		d->n_datapath_counters = n > 0 ? (size_t)n : 0;
	}
	fill_tracing(m, d);
}

/* One step of the datapath read; the snapshot is complete when it returns with collected set. */
static void scrape_collect(struct scrape *s)
{
	struct datapath *dp = s->mt->m->dp;
	uint64_t t0 = evloop_now_ns();
	int rc =
	    dp ? datapath_stats_step(dp, &s->cur, SCRAPE_STEP, expo_service, expo_backend, s->e)
	       : 0;

	if (rc < 0) /* logged by datapath_stats_step: serve what was read */
		LOG_WARN("metrics", "datapath stats unavailable", "err=%s", log_q(strerror(-rc)));
	s->collected = rc <= 0;
	s->collect_ns += evloop_now_ns() - t0;
}

/* The daemon families first, then a step of the datapath read per call (empty pieces) until the
 * snapshot is whole, then a bounded piece of it per call. */
static int scrape_produce(void *state, struct strbuf *body)
{
	struct scrape *s = state;
	uint64_t t0;
	int rc;

	if (s->pos.part > 0 && !s->collected) {
		scrape_collect(s);
		return 1;
	}
	t0 = evloop_now_ns();
	rc = expo_render_step(s->e, &s->d, &s->pos, SCRAPE_STEP, body);
	s->render_ns += evloop_now_ns() - t0;
	s->bytes += body->len;
	return rc;
}

static void scrape_release(void *state)
{
	struct scrape *s = state;

	LOG_DEBUG("metrics", "scrape", "collect_us=%llu render_us=%llu total_us=%llu bytes=%zu",
		  (unsigned long long)s->collect_ns / 1000, (unsigned long long)s->render_ns / 1000,
		  (unsigned long long)(evloop_now_ns() - s->started_ns) / 1000, s->bytes);
	s->mt->in_flight--;
	expo_free(s->e);
	expo_mtls_free((struct expo_mtls *)s->d.mtls);
	free((void *)s->d.regs);
	free((void *)s->d.failover);
	free(s);
}

/* Takes the daemon values now; the datapath is read and the text produced piece by piece while
 * it is sent. */
static void serve_metrics(struct metrics *mt, struct http_response *resp)
{
	struct scrape *s;
	/* Clients that stopped reading must not hold every snapshot (and so /metrics) until their
	 * response deadline: the one stalled longest is dropped for this one. */
	while (mt->in_flight >= SCRAPES_IN_FLIGHT_MAX &&
	       http_server_shed_stalled(mt->srv, SCRAPE_STALLED_MS))
		;
	if (mt->in_flight >= SCRAPES_IN_FLIGHT_MAX) {
		resp->status = 503;
		strbuf_puts(&resp->body, "too many concurrent scrapes\n");
		return;
	}
	s = calloc(1, sizeof(*s));
	if (s)
		s->e = expo_new(datapath_reject_reason_name);
	if (!s || !s->e) {
		free(s);
		resp->status = 503;
		strbuf_puts(&resp->body, "out of memory\n");
		return;
	}
	s->mt = mt;
	mt->in_flight++;
	s->started_ns = evloop_now_ns();
	fill_daemon(mt, &s->d);
	if (mt->m->mtls)
		s->d.mtls = expo_mtls_collect(mt->m->mtls);
	s->collect_ns = evloop_now_ns() - s->started_ns;
	resp->content_type = PROM_CONTENT_TYPE;
	resp->produce = scrape_produce;
	resp->release = scrape_release;
	resp->state = s;
	mt->scrapes++;
}

/* One service's health tally, from a datapath snapshot. */
struct one_service {
	const char *name;
	bool found;
	struct service_health h;
};

static void one_service_svc(const struct datapath_service_stats *s, void *arg)
{
	struct one_service *o = arg;

	if (strcmp(s->service, o->name))
		return;
	o->found = true;
	o->h.panic_percent = s->panic_percent;
}

static void one_service_be(const struct datapath_backend_stats *b, void *arg)
{
	struct one_service *o = arg;

	if (!strcmp(b->service, o->name))
		service_health_add(&o->h, b->healthy, b->circuit == DATAPATH_CIRCUIT_CLOSED);
}

/* /readyz?service=NAME: 200 while the service has usable backends (healthy or degraded), 503
 * in panic or down (or while meshd is not ready), 404 for a service the datapath does not hold.
 * The body names the state and the counts. */
static void readyz_service(struct metrics *mt, const char *name, struct http_response *resp)
{
	struct one_service o = { .name = name };
	enum service_state st;
	int err;

	if (!mt->m->ready || !mt->m->dp) {
		resp->status = 503;
		strbuf_puts(&resp->body, "not ready\n");
		return;
	}
	err = datapath_stats(mt->m->dp, one_service_svc, one_service_be, &o);
	if (err) {
		resp->status = 503;
		strbuf_printf(&resp->body, "datapath stats unavailable: %s\n", strerror(-err));
		return;
	}
	if (!o.found) {
		resp->status = 404;
		strbuf_puts(&resp->body, "no such service\n");
		return;
	}
	st = service_health_state(&o.h);
	resp->status = service_state_ready(st) ? 200 : 503;
	strbuf_printf(&resp->body, "%s (%u/%u backends usable, %u healthy)\n",
		      service_state_name(st), o.h.usable, o.h.backends, o.h.healthy);
}

static void metrics_handle(const struct http_request *req, struct http_response *resp, void *arg)
{
	char name[MESH_SVC_NAME_MAX + 1];
	int q;
	struct metrics *mt = arg;

	if (strcmp(req->path, "/metrics") && strcmp(req->path, "/healthz") &&
	    strcmp(req->path, "/readyz")) {
		resp->status = 404;
		strbuf_puts(&resp->body, "not found: try /metrics, /healthz or /readyz\n");
		return;
	}
	if (req->method == HTTP_METHOD_POST) {
		resp->status = 405;
		strbuf_puts(&resp->body, "method not allowed\n");
		return;
	}
	q = http_query_get(req->query, "service", name, sizeof(name));
	if (!strcmp(req->path, "/metrics")) {
		serve_metrics(mt, resp);
	} else if (!strcmp(req->path, "/healthz")) {
		strbuf_puts(&resp->body, "ok\n");
	} else if (q == 0) {
		readyz_service(mt, name, resp);
	} else if (q != -ENOENT) {
		resp->status = 400;
		strbuf_puts(&resp->body, "bad service name\n");
	} else if (mt->m->ready) {
		strbuf_puts(&resp->body, "ready\n");
	} else {
		resp->status = 503;
		strbuf_puts(&resp->body, "not ready\n");
	}
}

static struct http_server *listen_on(struct metrics *mt, const struct config_endpoint *ep)
{
	static const struct http_server_opts opts = { .name = "metrics", .timeout_ms = 10000 };
	struct http_server *srv =
	    http_server_listen_tcp(mt->m->loop, ep, &opts, metrics_handle, mt);
	char buf[64];

	if (!srv) {
		int err = errno;

		LOG_ERR("metrics", "cannot listen", "addr=%s err=%s",
			config_endpoint_str(ep, buf, sizeof(buf)), log_q(strerror(err)));
		errno = err;
		return NULL;
	}
	LOG_INFO("metrics", "listening", "addr=%s", config_endpoint_str(ep, buf, sizeof(buf)));
	return srv;
}

/* Starts the /metrics listener on m->cfg->metrics_listen. Returns 0 or -errno (EADDRINUSE when
 * the port is taken; logged with the address). */
int metrics_start(struct meshd *m)
{
	struct metrics *mt = calloc(1, sizeof(*mt));
	int err;

	if (!mt)
		return -ENOMEM;
	/* A scrape of 10,000 backends allocates megabytes (the snapshot, one family's chunk):
	 * serve such buffers from mmap so they go back to the kernel when freed instead of
	 * pinning the heap (idle RSS target). */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	mt->m = m;
	mt->listen = m->cfg->metrics_listen;
	mt->srv = listen_on(mt, &mt->listen);
	if (!mt->srv)
		goto err_free;
	events_subscribe(m, count_event, mt); /* best effort: the counters stay 0 without it */
	m->metrics = mt;
	return 0;

err_free:
	err = -errno;
	free(mt);
	return err;
}

/* Closes the listener and its connections. Safe when not started. */
void metrics_stop(struct meshd *m)
{
	struct metrics *mt = m->metrics;

	if (!mt)
		return;
	events_unsubscribe(m, count_event, mt);
	http_server_free(mt->srv);
	free(mt);
	m->metrics = NULL;
}

static bool endpoint_equal(const struct config_endpoint *a, const struct config_endpoint *b)
{
	if (a->family != b->family || a->port != b->port)
		return false;
	return a->family == AF_INET6 ? !memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6))
				     : a->addr.v4.s_addr == b->addr.v4.s_addr;
}

/* Moves the listener when telemetry.metrics_listen changed: the new one is bound first, so a
 * failure (-errno) leaves the old one serving. */
int metrics_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		   const struct config_plan *plan)
{
	struct metrics *mt = m->metrics;
	struct http_server *srv;

	if (!mt || endpoint_equal(&mt->listen, &new->metrics_listen))
		return 0;
	srv = listen_on(mt, &new->metrics_listen);
	if (!srv)
		return -errno;
	http_server_free(mt->srv);
	mt->srv = srv;
	mt->listen = new->metrics_listen;
	return 0;
}
