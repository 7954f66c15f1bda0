/* Regression test for common/evloop.c: the id evloop_add_timer() returns must name the timer it
 * added even when the new timer sifts up past earlier ones (it used to return the id of whatever
 * timer ended in the new slot, so cancelling a short timer cancelled a long one instead). */
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
