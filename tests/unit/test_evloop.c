/* Unit tests for common/evloop.c: timer order (by deadline, ties in creation order), cancel,
 * re-arming from a callback, fd readiness through a pipe, and evloop_post() from another thread.
 * Delays are a few milliseconds of the real monotonic clock; no sockets. */
#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/evloop.h"
#include "test.h"

#define MS 1000000ull

struct trace {
	struct evloop *loop;
	int order[16];
	int n;
	int stop_after; /* evloop_stop() once n reaches it */
};

struct mark {
	struct trace *t;
	int tag;
};

static void record(struct trace *t, int tag)
{
	if (t->n < 16)
		t->order[t->n++] = tag;
	if (t->n == t->stop_after)
		evloop_stop(t->loop);
}

static void on_timer(struct evloop *loop, void *arg)
{
	struct mark *m = arg;

	record(m->t, m->tag);
}

/* A watchdog so a broken loop fails the test instead of hanging it. */
static void on_deadline(struct evloop *loop, void *arg)
{
	*(int *)arg = 1;
	evloop_stop(loop);
}

TEST(timers_fire_in_deadline_order)
{
	struct trace t = { .loop = evloop_new(), .stop_after = 4 };
	struct mark m[4] = { { &t, 30 }, { &t, 10 }, { &t, 20 }, { &t, 11 } };
	int timed_out = 0;

	CHECK(t.loop);
	evloop_add_timer(t.loop, 30 * MS, on_timer, &m[0]);
	evloop_add_timer(t.loop, 10 * MS, on_timer, &m[1]);
	evloop_add_timer(t.loop, 20 * MS, on_timer, &m[2]);
	evloop_add_timer(t.loop, 10 * MS, on_timer, &m[3]); /* may tie with 10: created later */
	evloop_add_timer(t.loop, 2000 * MS, on_deadline, &timed_out);
	CHECK_INT_EQ(evloop_run(t.loop), 0);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(t.n, 4);
	CHECK_INT_EQ(t.order[0], 10);
	CHECK_INT_EQ(t.order[1], 11);
	CHECK_INT_EQ(t.order[2], 20);
	CHECK_INT_EQ(t.order[3], 30);
	evloop_free(t.loop);
}

TEST(timer_cancel_and_unknown_ids)
{
	struct trace t = { .loop = evloop_new(), .stop_after = 2 };
	struct mark m[3] = { { &t, 1 }, { &t, 2 }, { &t, 3 } };
	int64_t id;
	int timed_out = 0;

	evloop_add_timer(t.loop, 1 * MS, on_timer, &m[0]);
	id = evloop_add_timer(t.loop, 5 * MS, on_timer, &m[1]);
	evloop_add_timer(t.loop, 10 * MS, on_timer, &m[2]);
	CHECK(id > 0);
	evloop_del_timer(t.loop, id);
	evloop_del_timer(t.loop, id);	  /* already gone: ignored */
	evloop_del_timer(t.loop, 999999); /* never existed: ignored */
	evloop_add_timer(t.loop, 2000 * MS, on_deadline, &timed_out);
	evloop_run(t.loop);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(t.n, 2);
	CHECK_INT_EQ(t.order[0], 1);
	CHECK_INT_EQ(t.order[1], 3);
	evloop_free(t.loop);
}

struct rearm {
	struct trace *t;
	int left;
};

static void on_rearm(struct evloop *loop, void *arg)
{
	struct rearm *r = arg;

	record(r->t, r->left);
	if (--r->left > 0)
		evloop_add_timer(loop, 0, on_rearm, r);
}

TEST(timer_rearms_from_callback)
{
	struct trace t = { .loop = evloop_new(), .stop_after = 5 };
	struct rearm r = { &t, 5 };
	int timed_out = 0;

	evloop_add_timer(t.loop, 0, on_rearm, &r);
	evloop_add_timer(t.loop, 2000 * MS, on_deadline, &timed_out);
	evloop_run(t.loop);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(t.n, 5);
	CHECK_INT_EQ(t.order[4], 1);
	evloop_free(t.loop);
}

static void on_readable(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	char c;

	CHECK(read(fd, &c, 1) == 1);
	record(arg, c);
	evloop_del_fd(loop, fd);
}

TEST(fd_readiness_runs_callback_once)
{
	struct trace t = { .loop = evloop_new(), .stop_after = 1 };
	int p[2], timed_out = 0;

	CHECK_INT_EQ(pipe(p), 0);
	CHECK_INT_EQ(evloop_add_fd(t.loop, p[0], EPOLLIN, on_readable, &t), 0);
	CHECK_INT_EQ(evloop_add_fd(t.loop, p[0], EPOLLIN, on_readable, &t), -EEXIST);
	CHECK(write(p[1], "x", 1) == 1);
	evloop_add_timer(t.loop, 2000 * MS, on_deadline, &timed_out);
	evloop_run(t.loop);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(t.n, 1);
	CHECK_INT_EQ(t.order[0], 'x');
	CHECK_INT_EQ(evloop_del_fd(t.loop, p[0]), -ENOENT);
	close(p[0]);
	close(p[1]);
	evloop_free(t.loop);
}

/* Busy polling: within the window after an event the loop never sleeps (no voluntary context
 * switch: sched_yield() keeps the thread runnable), and an event still runs its callback once. */
static long voluntary_switches(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return ru.ru_nvcsw;
}

TEST(busy_poll_keeps_the_loop_awake_after_an_event)
{
	struct trace t = { .loop = evloop_new(), .stop_after = 2 };
	struct mark m = { &t, 0 };
	int p[2], timed_out = 0;
	long before;

	CHECK_INT_EQ(pipe(p), 0);
	evloop_set_busy_poll(t.loop, 2000 * MS);
	CHECK_INT_EQ(evloop_add_fd(t.loop, p[0], EPOLLIN, on_readable, &t), 0);
	CHECK(write(p[1], "x", 1) == 1);
	evloop_add_timer(t.loop, 100 * MS, on_timer, &m); /* tag 0: while spinning */
	evloop_add_timer(t.loop, 5000 * MS, on_deadline, &timed_out);
	before = voluntary_switches();
	evloop_run(t.loop);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(t.n, 2);
	CHECK_INT_EQ(t.order[0], 'x');
	/* 100 ms between the event and the timer, spent polling: nothing blocked (without busy
	 * polling, epoll_wait sleeps until the timer) */
	CHECK_INT_EQ(voluntary_switches() - before, 0);
	close(p[0]);
	close(p[1]);
	evloop_free(t.loop);
}

struct poster {
	struct trace *t;
	pthread_t loop_thread;
	int ran_on_loop_thread;
	int n;
};

static void on_post(void *arg)
{
	struct poster *p = arg;

	if (pthread_equal(pthread_self(), p->loop_thread))
		p->ran_on_loop_thread++;
	record(p->t, ++p->n);
}

static void *post_from_thread(void *arg)
{
	struct poster *p = arg;

	for (int i = 0; i < 3; i++)
		evloop_post(p->t->loop, on_post, p);
	return NULL;
}

TEST(post_from_another_thread_runs_on_loop_in_order)
{
	struct trace t = { .loop = evloop_new(), .stop_after = 3 };
	struct poster p = { .t = &t, .loop_thread = pthread_self() };
	pthread_t th;
	int timed_out = 0;

	evloop_add_timer(t.loop, 2000 * MS, on_deadline, &timed_out);
	CHECK_INT_EQ(pthread_create(&th, NULL, post_from_thread, &p), 0);
	evloop_run(t.loop);
	pthread_join(th, NULL);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(p.ran_on_loop_thread, 3);
	CHECK_INT_EQ(t.order[0], 1);
	CHECK_INT_EQ(t.order[2], 3);
	evloop_free(t.loop);
}

static void count_post(void *arg)
{
	(*(int *)arg)++;
}

/* A post the loop never got to run still runs when the loop is freed, so whatever it carries is
 * released (the Consul watcher's results, for one). */
TEST(pending_posts_run_at_free)
{
	struct evloop *loop = evloop_new();
	int ran = 0;

	CHECK(loop);
	CHECK_INT_EQ(evloop_post(loop, count_post, &ran), 0);
	CHECK_INT_EQ(evloop_post(loop, count_post, &ran), 0);
	evloop_free(loop);
	CHECK_INT_EQ(ran, 2);
}

struct slow_posts {
	struct evloop *loop;
	int ran;
	uint64_t first_iterations, iterations_at_end;
};

static void slow_post(void *arg)
{
	struct slow_posts *sp = arg;
	struct evloop_stats st;
	uint64_t t0 = evloop_now_ns();

	while (evloop_now_ns() - t0 < 200000) /* 0.2 ms of work */
		;
	evloop_get_stats(sp->loop, &st);
	if (sp->ran == 0)
		sp->first_iterations = st.iterations;
	if (++sp->ran == 100) {
		sp->iterations_at_end = st.iterations;
		evloop_stop(sp->loop);
	}
}

/* A hundred posts of 0.2 ms each are not all run in one iteration (they go on at the next ones,
 * in posting order); every one runs. */
TEST(posts_run_a_budget_per_iteration)
{
	struct slow_posts sp = { .loop = evloop_new() };
	int timed_out = 0;

	CHECK(sp.loop);
	for (int i = 0; i < 100; i++)
		CHECK_INT_EQ(evloop_post(sp.loop, slow_post, &sp), 0);
	evloop_add_timer(sp.loop, 5000 * MS, on_deadline, &timed_out);
	evloop_run(sp.loop);
	CHECK_INT_EQ(timed_out, 0);
	CHECK_INT_EQ(sp.ran, 100);
	CHECK(sp.iterations_at_end > sp.first_iterations);
	evloop_free(sp.loop);
}

static void *stop_from_thread(void *arg)
{
	usleep(5000);
	evloop_stop(arg);
	return NULL;
}

TEST(stop_from_another_thread_wakes_the_loop)
{
	struct evloop *loop = evloop_new();
	uint64_t t0 = evloop_now_ns();
	pthread_t th;
	int timed_out = 0;

	evloop_add_timer(loop, 2000 * MS, on_deadline, &timed_out);
	pthread_create(&th, NULL, stop_from_thread, loop);
	CHECK_INT_EQ(evloop_run(loop), 0);
	pthread_join(th, NULL);
	CHECK_INT_EQ(timed_out, 0);
	CHECK(evloop_now_ns() - t0 < 1000 * MS);
	evloop_free(loop);
}
