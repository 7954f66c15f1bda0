/* Retry budget and backoff behind retry.h. The window is a ring of one-second slots indexed by
 * the second number; a slot whose second left the window is reset before use. */
#include <string.h>

#include "mtls/retry.h"

#define SEC_NS 1000000000ull

void retry_budget_init(struct retry_budget *b, uint32_t percent, uint32_t min_per_sec)
{
	memset(b, 0, sizeof(*b));
	retry_budget_set(b, percent, min_per_sec);
}

void retry_budget_set(struct retry_budget *b, uint32_t percent, uint32_t min_per_sec)
{
	b->percent = percent > 100 ? 100 : percent;
	b->min_per_sec = min_per_sec;
}

/* The slot of the second `now_ns` falls in, cleared if it held an older second. Seconds are
 * numbered from 1 so that 0 marks an unused slot. */
static unsigned slot_of(struct retry_budget *b, uint64_t now_ns)
{
	uint64_t sec = now_ns / SEC_NS + 1;
	unsigned i = (unsigned)(sec % RETRY_SLOTS);

	if (b->slot_start[i] != sec) {
		b->slot_start[i] = sec;
		b->requests[i] = 0;
		b->retries[i] = 0;
	}
	return i;
}

void retry_budget_deposit(struct retry_budget *b, uint64_t now_ns)
{
	b->requests[slot_of(b, now_ns)]++;
}

bool retry_budget_withdraw(struct retry_budget *b, uint64_t now_ns)
{
	unsigned cur = slot_of(b, now_ns);
	uint64_t sec = now_ns / SEC_NS + 1, requests = 0, retries = 0, allowed;

	for (unsigned i = 0; i < RETRY_SLOTS; i++) {
		if (!b->slot_start[i] || sec - b->slot_start[i] >= RETRY_SLOTS)
			continue;
		requests += b->requests[i];
		retries += b->retries[i];
	}
	/* In hundredths, so 20% of 7 requests allows 1.4 retries, not 1. */
	allowed = requests * b->percent + (uint64_t)b->min_per_sec * RETRY_SLOTS * 100;
	if ((retries + 1) * 100 > allowed)
		return false;
	b->retries[cur]++;
	return true;
}

uint64_t retry_backoff_ns(uint64_t base_ns, uint64_t max_ns, uint32_t retry, uint32_t rnd)
{
	uint64_t d = base_ns;

	for (uint32_t i = 1; i < retry && d < max_ns; i++)
		d *= 2;
	if (d > max_ns)
		d = max_ns;
	return d / 2 + (uint64_t)(((unsigned __int128)(d - d / 2) * rnd) >> 32);
}
