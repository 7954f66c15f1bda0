/* Writing the discovery state file off the event loop: the registry hands over a snapshot
 * (deep copy) and one background thread formats it, writes it, fsyncs it and renames it into
 * place (state_save). Only the newest snapshot matters, so one that arrives while a write runs
 * replaces any that waits. The thread starts with the first snapshot. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "discovery/persist.h"

struct persister {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	bool started, stop, busy;
	char *dir;		  /* of the waiting snapshot */
	struct state_saved *next; /* waiting snapshot, NULL when none */
	uint64_t written, failed; /* counters (under lock) */
};

static void saved_free(struct state_saved *s)
{
	if (!s)
		return;
	state_saved_free(s);
	free(s);
}

static void write_one(struct persister *p, char *dir, struct state_saved *s)
{
	int err = state_save(dir, s);

	if (err)
		LOG_WARN("discovery", "cannot persist discovery state", "dir=%s err=%s", log_q(dir),
			 log_q(strerror(-err)));
	pthread_mutex_lock(&p->lock);
	if (err)
		p->failed++;
	else
		p->written++;
	pthread_mutex_unlock(&p->lock);
	saved_free(s);
	free(dir);
}

static void *persist_main(void *arg)
{
	struct persister *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->next && !p->stop)
			pthread_cond_wait(&p->cond, &p->lock);
		if (!p->next)
			break;
		struct state_saved *s = p->next;
		char *dir = p->dir;

		p->next = NULL;
		p->dir = NULL;
		p->busy = true;
		pthread_mutex_unlock(&p->lock);
		write_one(p, dir, s);
		pthread_mutex_lock(&p->lock);
		p->busy = false;
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

struct persister *persister_new(void)
{
	struct persister *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	return p;
}

int persister_submit(struct persister *p, const char *dir, struct state_saved *s)
{
	char *d = strdup(dir);
	int err = 0;

	if (!d) {
		saved_free(s);
		return -ENOMEM;
	}
	pthread_mutex_lock(&p->lock);
	if (!p->started) {
		err = -pthread_create(&p->thread, NULL, persist_main, p);
		p->started = !err;
	}
	if (!err) {
		saved_free(p->next);
		free(p->dir);
		p->next = s;
		p->dir = d;
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
	if (err) { /* no thread: write here, late rather than never */
		write_one(p, d, s);
		return 0;
	}
	return 0;
}

void persister_flush(struct persister *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->started && (p->next || p->busy))
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

uint64_t persister_written(struct persister *p)
{
	uint64_t n;

	pthread_mutex_lock(&p->lock);
	n = p->written;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void persister_free(struct persister *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (p->started)
		pthread_join(p->thread, NULL); /* writes what waits first */
	saved_free(p->next);
	free(p->dir);
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
