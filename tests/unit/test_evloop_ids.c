/* Regression test for common/evloop.c: the id evloop_add_timer() returns must name the timer it
 * added even when the new timer sifts up past earlier ones (it used to return the id of whatever
 * timer ended in the new slot, so cancelling a short timer cancelled a long one instead). */
#include <stdint.h>

#include "common/evloop.h"
#include "test.h"

#define MS 1000000ull

static void on_fire(struct evloop *loop, void *arg)
{
	(*(int *)arg)++;
}

static void on_stop(struct evloop *loop, void *arg)
{
	evloop_stop(loop);
}

TEST(cancel_uses_the_id_of_the_timer_added)
{
	struct evloop *loop = evloop_new();
	int long_fired = 0, short_fired = 0;
	int64_t id;

	CHECK(loop);
	evloop_add_timer(loop, 20 * MS, on_fire, &long_fired);
	/* Sooner than the one above: sifts up to the root. */
	id = evloop_add_timer(loop, 5 * MS, on_fire, &short_fired);
	evloop_del_timer(loop, id);
	evloop_add_timer(loop, 40 * MS, on_stop, NULL);
	CHECK_INT_EQ(evloop_run(loop), 0);
	CHECK_INT_EQ(short_fired, 0);
	CHECK_INT_EQ(long_fired, 1);
	evloop_free(loop);
}

#define N_RANDOM 3000

static int fired[N_RANDOM];
static int fire_order[N_RANDOM];
static int n_fire_order;
/* Each timer's deadline lies in [due_lo, due_hi]: the clock read just before and just after
 * evloop_add_timer() plus the delay (the process may be preempted in between). */
static uint64_t due_lo[N_RANDOM], due_hi[N_RANDOM];

static void on_fire_slot(struct evloop *loop, void *arg)
{
	int i = (int)(intptr_t)arg;

	fired[i]++;
	fire_order[n_fire_order++] = i;
}

/* Thousands of timers with random deadlines, a random half cancelled (while the heap keeps
 * reshuffling), some cancelled twice, plus unknown ids: exactly the others fire, each once, in
 * deadline order. Exercises the id -> heap position index under churn. */
TEST(random_cancels_fire_exactly_the_rest_in_order)
{
	struct evloop *loop = evloop_new();
	static int64_t ids[N_RANDOM];
	static bool cancelled[N_RANDOM];
	uint64_t seed = 42;

	CHECK(loop);
	for (int i = 0; i < N_RANDOM; i++) {
		uint64_t delay = (test_rand(&seed) % 30) * MS;

		/* Deadlines are absolute: adding thousands of timers takes milliseconds under ASan
		 * on a busy host, so a later timer with a shorter delay may be due after an
		 * earlier one. */
		due_lo[i] = evloop_now_ns() + delay;
		ids[i] = evloop_add_timer(loop, delay, on_fire_slot, (void *)(intptr_t)i);
		due_hi[i] = evloop_now_ns() + delay;
		CHECK(ids[i] > 0);
		/* interleave cancels with adds so removals hit every heap depth */
		if (i > 10 && test_rand(&seed) % 2) {
			int v = (int)(test_rand(&seed) % (uint32_t)i);
			evloop_del_timer(loop, ids[v]);
			evloop_del_timer(loop, ids[v]); /* second cancel: ignored */
			cancelled[v] = true;
		}
	}
	evloop_del_timer(loop, 999999999);
	evloop_del_timer(loop, -1);
	evloop_add_timer(loop, 80 * MS, on_stop, NULL);
	CHECK_INT_EQ(evloop_run(loop), 0);
	for (int i = 0; i < N_RANDOM; i++)
		CHECK_INT_EQ(fired[i], cancelled[i] ? 0 : 1);
	for (int k = 1; k < n_fire_order; k++)
		CHECK(due_lo[fire_order[k - 1]] <= due_hi[fire_order[k]]);
	evloop_free(loop);
}
