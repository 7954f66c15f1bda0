/* Health of one service, aggregated from its backends: each backend is usable when it passes its
 * health checks and its breaker is closed. The state says what the datapath does with connects:
 *   healthy   every backend usable
 *   degraded  some backends out, the rest take the traffic
 *   panic     usable share below panic_threshold: the datapath balances across all backends,
 *             usable or not (so some connects go to failing backends)
 *   down      no backend at all, or none usable with panic off: connects are rejected (or let
 *             through untouched under no_healthy_backend: passthrough)
 * Pure logic, no I/O: metrics, the admin API and /readyz?service= all count with it. */
#ifndef MESH_SERVICE_STATE_H
#define MESH_SERVICE_STATE_H

#include <stdbool.h>
#include <stdint.h>

enum service_state {
	SERVICE_HEALTHY = 0,
	SERVICE_DEGRADED = 1,
	SERVICE_PANIC = 2,
	SERVICE_DOWN = 3,
	SERVICE__COUNT,
};

/* One service's tally; zero it, set panic_percent (0..100, 0 = panic off), add its backends. */
struct service_health {
	uint32_t backends;
	uint32_t healthy; /* passing health checks */
	uint32_t usable;  /* healthy and breaker closed */
	uint32_t panic_percent;
};

/* Counts one backend: `healthy` its health-check flag, `closed` its breaker closed. */
void service_health_add(struct service_health *h, bool healthy, bool closed);
/* The service's state from its tally (the datapath's panic rule: usable x 100 < backends x
 * panic_percent). */
enum service_state service_health_state(const struct service_health *h);
/* "healthy", "degraded", "panic", "down"; "unknown" for anything else. */
const char *service_state_name(int state);
/* Whether the service can serve connects from usable backends (healthy or degraded): what
 * /readyz?service= answers 200 for. */
bool service_state_ready(enum service_state s);

#endif
