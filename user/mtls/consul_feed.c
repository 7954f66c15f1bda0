/* The Consul feed behind consul_feed.h. The watcher thread appends each answer to a queue
 * under a mutex and posts one delivery to the main loop when the queue was empty; the queue
 * (`struct core`) is reference counted so a delivery still posted when the feed is freed finds
 * no owner and only frees what it holds. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "mtls/consul_feed.h"

struct item {
	struct item *next;
	struct consul_update *u;
	size_t i;
};

struct core {
	atomic_int refs;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct item *head, **tail;
	bool posted;
	struct consul_feed *owner; /* main loop; NULL once the feed is freed */
	struct evloop *loop;
	const char **paths; /* owned copies */
	bool *answered, *ok;
	uint64_t *last; /* digest of the last 200 body delivered per path (main loop), 0 = none */
	bool *failed;	/* the last answer delivered per path was an error (main loop) */
	size_t n;
};

struct consul_feed {
	struct core *c;
	struct consul_watch *watch;
	consul_feed_cb cb;
	void *arg;
};

static void core_put(struct core *c)
{
	struct item *it;

	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	while ((it = c->head)) {
		c->head = it->next;
		consul_update_free(it->u);
		free(it);
	}
	for (size_t i = 0; i < c->n; i++)
		free((char *)c->paths[i]);
	free(c->paths);
	free(c->answered);
	free(c->ok);
	free(c->last);
	free(c->failed);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cond);
	free(c);
}

/* FNV-1a of a body, never 0. */
static uint64_t digest(const char *b, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)b[i]) * 0x100000001b3ull;
	return h | 1;
}

/* A 200 answer equal to the last one delivered (a blocking query that timed out) is not news:
 * 1 = drop it, -1 = deliver it without its body (the path answers again after errors), 0 =
 * deliver it. */
static int repeated(struct core *c, size_t i, const struct consul_update *u)
{
	bool failed = c->failed[i];
	uint64_t d;

	c->failed[i] = u->err != 0;
	if (u->err)
		return 0;
	d = digest(u->body, u->body_len);
	if (c->last[i] == d)
		return failed ? -1 : 1;
	c->last[i] = d;
	return 0;
}

/* Takes the queue and hands each answer to the owner. Main loop. */
static void deliver(struct core *c)
{
	struct item *it, *next;
	struct consul_feed *f;

	pthread_mutex_lock(&c->lock);
	it = c->head;
	c->head = NULL;
	c->tail = &c->head;
	pthread_mutex_unlock(&c->lock);
	for (; it; it = next) {
		struct consul_update *u = it->u;

		next = it->next;
		f = c->owner;
		switch (f ? repeated(c, it->i, u) : 1) {
		case 0:
			f->cb(f->arg, it->i, u->body, u->body_len, u->err, u->status);
			break;
		case -1:
			f->cb(f->arg, it->i, NULL, 0, 0, u->status);
			break;
		}
		consul_update_free(u);
		free(it);
	}
}

static void on_posted(void *arg)
{
	struct core *c = arg;

	pthread_mutex_lock(&c->lock);
	c->posted = false;
	pthread_mutex_unlock(&c->lock);
	deliver(c);
	core_put(c);
}

/* Watcher thread: queue the answer, post a delivery unless one is pending. */
static void on_update(struct consul_update *u, void *arg)
{
	struct core *c = arg;
	struct item *it = calloc(1, sizeof(*it));
	bool post = false;
	size_t i;

	for (i = 0; i < c->n && strcmp(c->paths[i], u->service); i++)
		;
	if (!it || i == c->n) {
		free(it);
		consul_update_free(u);
		return;
	}
	it->u = u;
	it->i = i;
	pthread_mutex_lock(&c->lock);
	*c->tail = it;
	c->tail = &it->next;
	c->answered[i] = true;
	c->ok[i] |= u->err == 0;
	if (!c->posted)
		post = c->posted = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (!post)
		return;
	atomic_fetch_add(&c->refs, 1);
	if (evloop_post(c->loop, on_posted, c)) {
		pthread_mutex_lock(&c->lock);
		c->posted = false;
		pthread_mutex_unlock(&c->lock);
		core_put(c);
	}
}

static struct core *core_new(struct evloop *loop, const char *const *paths, size_t n)
{
	struct core *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	atomic_init(&c->refs, 1);
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->cond, NULL);
	c->tail = &c->head;
	c->loop = loop;
	c->paths = calloc(n + 1, sizeof(*c->paths));
	c->answered = calloc(n + 1, sizeof(bool));
	c->ok = calloc(n + 1, sizeof(bool));
	c->last = calloc(n + 1, sizeof(uint64_t));
	c->failed = calloc(n + 1, sizeof(bool));
	for (; c->paths && c->n < n; c->n++)
		if (!(c->paths[c->n] = strdup(paths[c->n])))
			break;
	if (!c->paths || !c->answered || !c->ok || !c->last || !c->failed || c->n < n) {
		core_put(c);
		return NULL;
	}
	return c;
}

static struct consul_watch *start_watch(const struct mesh_config *cfg, struct core *c, char *why,
					size_t wlen)
{
	const struct config_consul *cc = &cfg->consul;
	char *token = NULL;
	struct consul_watch *w;
	struct consul_watch_opts o = {
		.address = cc->address,
		.ca_file = cc->ca_file,
		.wait_ns = cc->wait_ns,
		/* Each change applied within one round trip, up to 10 a second: a loop on a
		 * broken index still cannot spin. */
		.rate_burst = 10,
		.rate_period_ns = 100000000ull,
		.gets = c->paths,
		.n_gets = c->n,
	};

	if (cc->token_file && cc->token_file[0] && !(token = consul_read_token(cc->token_file))) {
		snprintf(why, wlen, "discovery.consul.token_file: %s", strerror(errno));
		return NULL;
	}
	o.token = token;
	w = consul_watch_new(&o, on_update, c);
	if (!w)
		snprintf(why, wlen, "cannot start the Consul watcher: %s", strerror(errno));
	if (token)
		explicit_bzero(token, strlen(token));
	free(token);
	return w;
}

struct consul_feed *consul_feed_new(struct evloop *loop, const struct mesh_config *cfg,
				    const char *const *paths, size_t n, consul_feed_cb cb,
				    void *arg, char *why, size_t wlen)
{
	struct consul_feed *f = calloc(1, sizeof(*f));

	snprintf(why, wlen, "out of memory");
	if (!f || !cfg->consul.address || !(f->c = core_new(loop, paths, n))) {
		if (f && !cfg->consul.address)
			snprintf(why, wlen, "discovery.consul.address is not set");
		free(f);
		errno = EINVAL;
		return NULL;
	}
	f->cb = cb;
	f->arg = arg;
	f->c->owner = f;
	f->watch = start_watch(cfg, f->c, why, wlen);
	if (!f->watch) {
		consul_feed_free(f);
		errno = EIO;
		return NULL;
	}
	return f;
}

size_t consul_feed_wait_first(struct consul_feed *f, uint64_t timeout_ns)
{
	struct core *c = f->c;
	struct timespec dl;
	size_t left, ok = 0;

	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += (time_t)(timeout_ns / 1000000000ull);
	dl.tv_nsec += (long)(timeout_ns % 1000000000ull);
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&c->lock);
	for (;;) {
		left = 0;
		for (size_t i = 0; i < c->n; i++)
			left += !c->answered[i];
		if (!left || pthread_cond_timedwait(&c->cond, &c->lock, &dl) == ETIMEDOUT)
			break;
	}
	for (size_t i = 0; i < c->n; i++)
		ok += c->ok[i];
	pthread_mutex_unlock(&c->lock);
	deliver(c);
	return ok;
}

void consul_feed_free(struct consul_feed *f)
{
	if (!f)
		return;
	consul_watch_free(f->watch); /* joins: no answer is queued after this */
	if (f->c) {
		f->c->owner = NULL;
		core_put(f->c);
	}
	free(f);
}
