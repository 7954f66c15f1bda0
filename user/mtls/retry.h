/* Connect retries of the mTLS proxy: the retry budget and the backoff. Semantics follow
 * Linkerd's retry budget (retryRatio + minRetriesPerSecond over a 10 s TTL, as Tower's
 * TpsBudget): over the last RETRY_WINDOW_NS, retries may reach `percent`% of the connections
 * plus `min_per_sec` per second of the window, so a quiet service can still retry while a
 * failing busy one cannot multiply its load. Pure: the clock and the random value are
 * arguments; the caller serializes access to one budget. */
#ifndef MESH_MTLS_RETRY_H
#define MESH_MTLS_RETRY_H

#include <stdbool.h>
#include <stdint.h>

#define RETRY_WINDOW_NS (10ull * 1000000000ull)
#define RETRY_SLOTS 10 /* the window in 1 s slots */

struct retry_budget {
	uint32_t percent;		  /* 0..100 */
	uint32_t min_per_sec;		  /* floor, in retries per second of the window */
	uint64_t slot_start[RETRY_SLOTS]; /* start of the slot's second, ns; 0 = unused */
	uint32_t requests[RETRY_SLOTS];
	uint32_t retries[RETRY_SLOTS];
};

void retry_budget_init(struct retry_budget *b, uint32_t percent, uint32_t min_per_sec);
/* Changes the parameters, keeping the counts (a reload). */
void retry_budget_set(struct retry_budget *b, uint32_t percent, uint32_t min_per_sec);
/* Records one connection (a first attempt) at `now_ns`. */
void retry_budget_deposit(struct retry_budget *b, uint64_t now_ns);
/* Takes one retry from the budget at `now_ns`: true when allowed (and counted). */
bool retry_budget_withdraw(struct retry_budget *b, uint64_t now_ns);

/* Delay before retry number `retry` (1 = the first retry): base * 2^(retry-1), capped at max,
 * then "equal jitter": half fixed, half drawn from `rnd` (uniform 32 bits). */
uint64_t retry_backoff_ns(uint64_t base_ns, uint64_t max_ns, uint32_t retry, uint32_t rnd);

#endif
