/* Health state of one backend under active checks: rise/fall counters in the style of HAProxy's
 * check.c. `unhealthy_threshold` consecutive failed checks take a healthy backend down,
 * `healthy_threshold` consecutive passed checks bring an unhealthy one back; anything in between
 * only moves a counter. Pure logic: the caller feeds results and the time; no sockets, no clock.
 *
 * Initial state is HEALTHY (not "unknown"): a meshd restart or reload must not eject every backend
 * until its first checks pass, and a new backend from discovery takes traffic at once. The kernel
 * breaker guards real connect failures meanwhile; a dead backend is ejected after
 * unhealthy_threshold checks. */
#ifndef MESH_HEALTH_STATE_H
#define MESH_HEALTH_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct health_state {
	bool healthy;
	uint32_t consecutive_ok;   /* passed checks in a row while unhealthy */
	uint32_t consecutive_fail; /* failed checks in a row while healthy */
	uint64_t checks;	   /* checks recorded in total */
	uint64_t failures;	   /* failed checks in total */
	uint64_t last_check_ns;	   /* caller's clock at the last recorded result, 0 = never */
	uint64_t changed_at_ns;	   /* caller's clock at init or at the last transition */
};

/* Thresholds in effect for one update; 0 is treated as 1. Passed per update (not stored) so a
 * reload can retune a backend without resetting its counters. */
struct health_thresholds {
	uint32_t unhealthy; /* consecutive failures: healthy -> unhealthy */
	uint32_t healthy;   /* consecutive successes: unhealthy -> healthy */
};

/* Puts `st` in the initial state (healthy, counters zero) at time `now_ns`. */
void health_state_init(struct health_state *st, uint64_t now_ns);

/* Records one check result at `now_ns`. Returns true when the backend's health flipped (read the
 * new value from st->healthy), false otherwise. */
bool health_state_record(struct health_state *st, const struct health_thresholds *th, bool ok,
			 uint64_t now_ns);

/* Delay before a backend's first check: uniform in [0, interval_ns) from the caller's random
 * value, so checks of many backends do not fire in the same instant. */
uint64_t health_first_delay_ns(uint64_t interval_ns, uint32_t random);

/* Parses the status line at the start of an HTTP/1.x response in `buf` (`len` bytes, need not be
 * NUL-terminated). Returns the status code (100..599) once the whole status line has arrived, 0
 * when more bytes are needed, or -EINVAL when it is not an HTTP/1.x status line. */
int health_http_status(const char *buf, size_t len);

#endif
