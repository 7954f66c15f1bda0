/* Unit tests for service health aggregation: each state at its edges, the panic rule as the
 * datapath applies it (usable x 100 < backends x panic_percent), names and readiness. */
#include "health/service_state.h"
#include "test.h"

/* A tally of `n` backends of which the first `healthy` pass checks and, among those, `open`
 * have their breaker open. */
static struct service_health tally(uint32_t n, uint32_t healthy, uint32_t open, uint32_t panic)
{
	struct service_health h = { .panic_percent = panic };

	for (uint32_t i = 0; i < n; i++)
		service_health_add(&h, i < healthy, !(i < healthy && i >= healthy - open));
	return h;
}

TEST(all_usable_is_healthy)
{
	struct service_health h = tally(4, 4, 0, 50);

	CHECK_INT_EQ(h.backends, 4);
	CHECK_INT_EQ(h.usable, 4);
	CHECK_INT_EQ(service_health_state(&h), SERVICE_HEALTHY);
}

TEST(no_backend_is_down)
{
	struct service_health h = tally(0, 0, 0, 50);

	CHECK_INT_EQ(service_health_state(&h), SERVICE_DOWN);
}

TEST(some_out_above_threshold_is_degraded)
{
	struct service_health h = tally(4, 3, 0, 50); /* 3 of 4 usable: 75% >= 50% */

	CHECK_INT_EQ(service_health_state(&h), SERVICE_DEGRADED);
	h = tally(4, 4, 2, 50); /* breakers count as well: 2 of 4, exactly the threshold */
	CHECK_INT_EQ(h.healthy, 4);
	CHECK_INT_EQ(h.usable, 2);
	CHECK_INT_EQ(service_health_state(&h), SERVICE_DEGRADED);
}

TEST(below_threshold_is_panic)
{
	struct service_health h = tally(4, 1, 0, 50); /* 25% < 50% */

	CHECK_INT_EQ(service_health_state(&h), SERVICE_PANIC);
	h = tally(4, 0, 0, 50); /* none usable, panic on: the datapath still balances */
	CHECK_INT_EQ(service_health_state(&h), SERVICE_PANIC);
	h = tally(3, 2, 1, 50); /* 1 of 3: 33% */
	CHECK_INT_EQ(service_health_state(&h), SERVICE_PANIC);
}

TEST(none_usable_without_panic_is_down)
{
	struct service_health h = tally(4, 0, 0, 0);

	CHECK_INT_EQ(service_health_state(&h), SERVICE_DOWN);
	h = tally(2, 2, 2, 0);
	CHECK_INT_EQ(service_health_state(&h), SERVICE_DOWN);
	h = tally(4, 1, 0, 0); /* panic off: one left is degraded, not panic */
	CHECK_INT_EQ(service_health_state(&h), SERVICE_DEGRADED);
}

TEST(names_and_readiness)
{
	CHECK_STR_EQ(service_state_name(SERVICE_HEALTHY), "healthy");
	CHECK_STR_EQ(service_state_name(SERVICE_DEGRADED), "degraded");
	CHECK_STR_EQ(service_state_name(SERVICE_PANIC), "panic");
	CHECK_STR_EQ(service_state_name(SERVICE_DOWN), "down");
	CHECK_STR_EQ(service_state_name(SERVICE__COUNT), "unknown");
	CHECK_STR_EQ(service_state_name(-1), "unknown");
	CHECK(service_state_ready(SERVICE_HEALTHY));
	CHECK(service_state_ready(SERVICE_DEGRADED));
	CHECK(!service_state_ready(SERVICE_PANIC));
	CHECK(!service_state_ready(SERVICE_DOWN));
}
