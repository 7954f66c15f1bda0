/* Service health aggregation (service_state.h): a tally per service and the state it means. */
#include "health/service_state.h"

void service_health_add(struct service_health *h, bool healthy, bool closed)
{
	h->backends++;
	h->healthy += healthy;
	h->usable += healthy && closed;
}

enum service_state service_health_state(const struct service_health *h)
{
	if (h->backends == 0)
		return SERVICE_DOWN;
	if (h->usable == h->backends)
		return SERVICE_HEALTHY;
	if (h->panic_percent &&
	    (uint64_t)h->usable * 100 < (uint64_t)h->backends * h->panic_percent)
		return SERVICE_PANIC;
	return h->usable ? SERVICE_DEGRADED : SERVICE_DOWN;
}

const char *service_state_name(int state)
{
	static const char *const names[SERVICE__COUNT] = {
		[SERVICE_HEALTHY] = "healthy",
		[SERVICE_DEGRADED] = "degraded",
		[SERVICE_PANIC] = "panic",
		[SERVICE_DOWN] = "down",
	};

	return state >= 0 && state < SERVICE__COUNT ? names[state] : "unknown";
}

bool service_state_ready(enum service_state s)
{
	return s == SERVICE_HEALTHY || s == SERVICE_DEGRADED;
}
