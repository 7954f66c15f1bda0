/* Hands a Consul watcher's answers from its thread to the loop thread. The owner's callback runs
 * on the loop for each answer until the owner closes the hand-off; answers still queued then are
 * dropped. Each queued answer holds a reference, so the hand-off outlives its owner until the last
 * one ran. consul_post_update() runs on the watcher thread; everything else on the loop. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "discovery/consul/consul.h"

struct consul_post {
	atomic_int refs; /* the owner's, and one per queued answer */
	struct evloop *loop;
	consul_update_cb cb; /* loop thread only; NULL once closed */
	void *arg;
};

struct posted {
	struct consul_post *p;
	struct consul_update *u;
};

static void post_put(struct consul_post *p)
{
	if (atomic_fetch_sub(&p->refs, 1) == 1)
		free(p);
}

struct consul_post *consul_post_new(struct evloop *loop, consul_update_cb cb, void *arg)
{
	struct consul_post *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	atomic_init(&p->refs, 1);
	p->loop = loop;
	p->cb = cb;
	p->arg = arg;
	return p;
}

static void on_posted(void *arg)
{
	struct posted *q = arg;

	if (q->p->cb)
		q->p->cb(q->u, q->p->arg);
	else
		consul_update_free(q->u);
	post_put(q->p);
	free(q);
}

void consul_post_update(struct consul_update *u, void *post)
{
	struct consul_post *p = post;
	struct posted *q = malloc(sizeof(*q));

	if (!q) {
		consul_update_free(u);
		return;
	}
	q->p = p;
	q->u = u;
	atomic_fetch_add(&p->refs, 1);
	if (evloop_post(p->loop, on_posted, q) != 0) {
		consul_update_free(u);
		post_put(p);
		free(q);
	}
}

void consul_post_close(struct consul_post *p)
{
	if (!p)
		return;
	p->cb = NULL;
	post_put(p);
}
