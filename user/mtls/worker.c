/* Proxy workers: one thread and event loop each, with their own SO_REUSEPORT listeners, pool
 * and connections, so the proxy uses every core and meshd's main loop stays free. The main loop
 * talks to a worker only by posting to its loop (new settings, certificate store, policy,
 * listeners, drain, stop); a worker's counters are read with relaxed loads. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "mtls/proxy.h"
#include "mtls/worker.h"

#define TICK_NS 1000000000ull

/* --- lists ------------------------------------------------------------------------------------ */

void link_init(struct link *head)
{
	head->prev = head->next = head;
}

void link_add(struct link *head, struct link *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

void link_del(struct link *n)
{
	if (!n->next || n->next == n)
		return;
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

bool link_empty(const struct link *head)
{
	return head->next == head;
}

uint32_t worker_rand(struct worker *w)
{
	uint64_t x = w->rnd;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	w->rnd = x;
	return (uint32_t)((x * 0x2545f4914f6cdd1dull) >> 32);
}

static uint64_t pair_hash(const char *a, const char *b)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *a; a++)
		h = (h ^ (unsigned char)*a) * 0x100000001b3ull;
	h = (h ^ 0xff) * 0x100000001b3ull;
	for (; *b; b++)
		h = (h ^ (unsigned char)*b) * 0x100000001b3ull;
	return h | 1;
}

/* Counts one decision for (caller SPIFFE ID, local service). The table holds PAIRS_MAX - 1
 * pairs; the rest share the last slot, labelled "other". */
void worker_count_pair(struct worker *w, const char *spiffe_id, const char *dst, bool allow)
{
	uint64_t h = pair_hash(spiffe_id, dst), seen;
	size_t i = h % (PAIRS_MAX - 1);

	for (size_t k = 0; k < PAIRS_MAX - 1; k++, i = (i + 1) % (PAIRS_MAX - 1)) {
		seen = __atomic_load_n(&w->st.pairs[i].hash, __ATOMIC_ACQUIRE);
		if (seen == h)
			break;
		if (seen)
			continue;
		snprintf(w->st.pairs[i].source, sizeof(w->st.pairs[i].source), "%s", spiffe_id);
		snprintf(w->st.pairs[i].destination, sizeof(w->st.pairs[i].destination), "%s", dst);
		__atomic_store_n(&w->st.pairs[i].hash, h, __ATOMIC_RELEASE);
		break;
	}
	if (__atomic_load_n(&w->st.pairs[i].hash, __ATOMIC_ACQUIRE) != h) {
		i = PAIRS_MAX - 1;
		if (!w->st.pairs[i].hash) {
			snprintf(w->st.pairs[i].source, sizeof(w->st.pairs[i].source), "other");
			snprintf(w->st.pairs[i].destination, sizeof(w->st.pairs[i].destination),
				 "other");
			__atomic_store_n(&w->st.pairs[i].hash, 1, __ATOMIC_RELEASE);
		}
	}
	STAT_ADD(w->st.pairs[i].n[allow], 1);
}

/* --- the thread --------------------------------------------------------------------------------- */

static void on_tick(struct evloop *loop, void *arg)
{
	struct worker *w = arg;

	w->tick = evloop_add_timer(loop, TICK_NS, on_tick, w);
	tunnel_sweep(w, evloop_now_ns());
}

static void *run(void *arg)
{
	struct worker *w = arg;
	char name[16];

	snprintf(name, sizeof(name), "mtls-%d", w->index);
	pthread_setname_np(pthread_self(), name);
	w->tick = evloop_add_timer(w->loop, TICK_NS, on_tick, w);
	if (evloop_run(w->loop))
		LOG_ERR("mtls", "proxy event loop failed", "worker=%d", w->index);
	return NULL;
}

struct worker *worker_new(struct mtls *px, int index)
{
	struct worker *w = calloc(1, sizeof(*w));
	struct timespec ts;

	if (!w)
		return NULL;
	w->px = px;
	w->index = index;
	w->loop = evloop_new();
	if (!w->loop) {
		free(w);
		return NULL;
	}
	link_init(&w->tunnels);
	link_init(&w->pool);
	link_init(&w->inbound);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	w->rnd = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(index + 1) * 0x9e3779b97f4a7c15ull;
	authz_limiter_init(&w->deny_log, 60ull * TICK_NS, 10);
	trace_rng_seed(&w->trng);
	return w;
}

int worker_start(struct worker *w)
{
	sigset_t all, old;
	int err;

	/* Signals go to the main loop's signalfd, never to a worker. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = pthread_create(&w->thread, NULL, run, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return -err;
	w->started = true;
	return 0;
}

/* --- messages from the main loop ---------------------------------------------------------------- */

struct msg {
	struct worker *w;
	struct snap *snap;
	struct certs *certs;
	struct authz_policy *policy;
	int *out_fds, *in_fds;
	size_t n_out, n_in;
	bool listeners;
};

static void unlisten(struct worker *w)
{
	for (size_t i = 0; i < w->n_out; i++)
		evloop_del_fd(w->loop, w->out_fds[i]);
	for (size_t i = 0; i < w->n_in; i++)
		evloop_del_fd(w->loop, w->in_fds[i]);
	free(w->out_fds);
	free(w->in_fds);
	w->out_fds = w->in_fds = NULL;
	w->n_out = w->n_in = 0;
}

static void listen_on(struct worker *w, struct msg *m)
{
	unlisten(w);
	w->out_fds = m->out_fds;
	w->in_fds = m->in_fds;
	w->n_out = m->n_out;
	w->n_in = m->n_in;
	m->out_fds = m->in_fds = NULL;
	for (size_t i = 0; i < w->n_out; i++)
		if (evloop_add_fd(w->loop, w->out_fds[i], EPOLLIN, outbound_accept, w))
			LOG_ERR("mtls", "cannot watch a listener", "worker=%d", w->index);
	for (size_t i = 0; i < w->n_in; i++)
		if (evloop_add_fd(w->loop, w->in_fds[i], EPOLLIN, inbound_accept, w))
			LOG_ERR("mtls", "cannot watch a listener", "worker=%d", w->index);
	w->accepting = !w->draining;
}

static void apply_msg(void *arg)
{
	struct msg *m = arg;
	struct worker *w = m->w;
	bool recheck = false;

	if (m->snap) {
		snap_unref(w->snap);
		w->snap = m->snap;
		evloop_set_busy_poll(w->loop, w->snap->busy_poll_ns);
	}
	if (m->certs) {
		certs_unref(w->certs);
		w->certs = m->certs;
	}
	if (m->policy) {
		recheck = w->policy != NULL;
		authz_policy_unref(w->policy);
		w->policy = m->policy;
	}
	if (m->listeners)
		listen_on(w, m);
	if (recheck)
		inbound_recheck(w);
	free(m->out_fds);
	free(m->in_fds);
	free(m);
}

int worker_update(struct worker *w, struct snap *snap, struct certs *certs,
		  struct authz_policy *policy)
{
	struct msg *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->w = w;
	m->snap = snap ? snap_ref(snap) : NULL;
	m->certs = certs ? certs_ref(certs) : NULL;
	m->policy = policy ? authz_policy_ref(policy) : NULL;
	if (!w->started) { /* before the thread runs: apply here */
		apply_msg(m);
		return 0;
	}
	return evloop_post(w->loop, apply_msg, m);
}

int worker_listen(struct worker *w, const int *out, size_t n_out, const int *in, size_t n_in)
{
	struct msg *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->w = w;
	m->listeners = true;
	m->out_fds = malloc((n_out + 1) * sizeof(int));
	m->in_fds = malloc((n_in + 1) * sizeof(int));
	if (!m->out_fds || !m->in_fds) {
		free(m->out_fds);
		free(m->in_fds);
		free(m);
		return -ENOMEM;
	}
	memcpy(m->out_fds, out, n_out * sizeof(int));
	memcpy(m->in_fds, in, n_in * sizeof(int));
	m->n_out = n_out;
	m->n_in = n_in;
	if (!w->started) {
		apply_msg(m);
		return 0;
	}
	return evloop_post(w->loop, apply_msg, m);
}

static void drain_msg(void *arg)
{
	struct worker *w = arg;
	struct link *n, *next;

	w->draining = true;
	w->accepting = false;
	unlisten(w);
	for (n = w->tunnels.next; n != &w->tunnels; n = next) {
		struct tunnel *t = link_entry(n, struct tunnel, node);

		next = n->next;
		if (!t->client) {
			tunnel_enter(t);
			tunnel_goaway(t);
			tunnel_leave(t);
		}
	}
}

int worker_drain(struct worker *w)
{
	return evloop_post(w->loop, drain_msg, w);
}

struct retire_msg {
	struct worker *w;
	char service[NAME_MAX_]; /* "" = every tunnel */
};

/* Tunnels made with a certificate (or roots) since replaced take no new streams; their live
 * streams go on, and new connections make new tunnels with the new material. */
static void retire_msg(void *arg)
{
	struct retire_msg *m = arg;
	struct link *n, *next;

	for (n = m->w->tunnels.next; n != &m->w->tunnels; n = next) {
		struct tunnel *t = link_entry(n, struct tunnel, node);
		const char *svc = t->client ? t->key.identity_name : t->peer.service;

		next = n->next;
		if (m->service[0] && strcmp(svc, m->service))
			continue;
		tunnel_enter(t);
		if (t->state == T_READY)
			tunnel_goaway(t);
		else
			t->goaway = true; /* still connecting: used by who waits, by no one else */
		tunnel_leave(t);
	}
	free(m);
}

int worker_retire(struct worker *w, const char *service)
{
	struct retire_msg *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->w = w;
	snprintf(m->service, sizeof(m->service), "%s", service ? service : "");
	if (!w->started) {
		retire_msg(m);
		return 0;
	}
	return evloop_post(w->loop, retire_msg, m);
}

/* Ends everything on the worker's thread, then its loop. */
static void stop_msg(void *arg)
{
	struct worker *w = arg;

	w->accepting = false;
	unlisten(w);
	while (!link_empty(&w->tunnels)) {
		struct tunnel *t = link_entry(w->tunnels.next, struct tunnel, node);

		tunnel_fail(t, TLS_R_CLOSED, "meshd stopping");
	}
	evloop_del_timer(w->loop, w->tick);
	evloop_stop(w->loop);
}

void worker_free(struct worker *w)
{
	if (!w)
		return;
	if (w->started) {
		evloop_post(w->loop, stop_msg, w);
		pthread_join(w->thread, NULL);
	} else {
		stop_msg(w);
	}
	evloop_free(w->loop);
	snap_unref(w->snap);
	certs_unref(w->certs);
	authz_policy_unref(w->policy);
	free(w->out_fds);
	free(w->in_fds);
	free(w);
}

unsigned worker_connections(struct worker *w)
{
	return __atomic_load_n(&w->n_legs, __ATOMIC_RELAXED);
}

/* --- pool listing: answered on the worker's thread while the main loop waits ------------------ */

struct pool_req {
	struct worker *w;
	void (*cb)(const struct mtls_pool_entry *e, void *arg);
	void *arg;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
};

static void pool_msg(void *arg)
{
	struct pool_req *r = arg;
	uint64_t now = evloop_now_ns();

	for (struct link *n = r->w->pool.next; n != &r->w->pool; n = n->next) {
		struct tunnel *t = link_entry(n, struct tunnel, pnode);
		struct mtls_pool_entry e = {
			.identity = t->key.identity_name,
			.service = t->key.service,
			.peer = t->key.peer,
			.streams = t->streams + t->n_waiting,
			.max_streams = r->w->snap->max_streams,
			.ready = t->state == T_READY,
			.draining = t->goaway,
			.worker = r->w->index,
			.age_ns = now - t->created_ns,
		};

		if (t->state == T_READY) {
			uint32_t remote = nghttp2_session_get_remote_settings(
			    t->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

			if (remote < e.max_streams)
				e.max_streams = remote;
		}
		r->cb(&e, r->arg);
	}
	pthread_mutex_lock(&r->lock);
	r->done = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

void worker_pool(struct worker *w, void (*cb)(const struct mtls_pool_entry *e, void *arg),
		 void *arg)
{
	struct pool_req r = { .w = w, .cb = cb, .arg = arg };

	pthread_mutex_init(&r.lock, NULL);
	pthread_cond_init(&r.cond, NULL);
	if (!w->started) {
		pool_msg(&r);
	} else if (evloop_post(w->loop, pool_msg, &r) == 0) {
		pthread_mutex_lock(&r.lock);
		while (!r.done)
			pthread_cond_wait(&r.cond, &r.lock);
		pthread_mutex_unlock(&r.lock);
	}
	pthread_cond_destroy(&r.cond);
	pthread_mutex_destroy(&r.lock);
}
