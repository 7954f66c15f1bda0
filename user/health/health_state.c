/* Rise/fall state machine for one backend and the small pure helpers the health checker needs
 * (first-check jitter, HTTP status-line parsing). See health_state.h for the semantics; the
 * event-loop side lives in health_probe.c and meshd/health_checks.c. */
#include <errno.h>
#include <string.h>

#include "health/health_state.h"

void health_state_init(struct health_state *st, uint64_t now_ns)
{
	memset(st, 0, sizeof(*st));
	st->healthy = true;
	st->changed_at_ns = now_ns;
}

static uint32_t at_least_one(uint32_t v)
{
	return v ? v : 1;
}

bool health_state_record(struct health_state *st, const struct health_thresholds *th, bool ok,
			 uint64_t now_ns)
{
	st->checks++;
	st->last_check_ns = now_ns;
	if (!ok)
		st->failures++;

	if (st->healthy) {
		/* A pass while healthy clears any run of failures (fall restarts). */
		st->consecutive_fail = ok ? 0 : st->consecutive_fail + 1;
		if (st->consecutive_fail < at_least_one(th->unhealthy))
			return false;
	} else {
		st->consecutive_ok = ok ? st->consecutive_ok + 1 : 0;
		if (st->consecutive_ok < at_least_one(th->healthy))
			return false;
	}
	st->healthy = !st->healthy;
	st->consecutive_ok = 0;
	st->consecutive_fail = 0;
	st->changed_at_ns = now_ns;
	return true;
}

uint64_t health_first_delay_ns(uint64_t interval_ns, uint32_t random)
{
	if (interval_ns == 0)
		return 0;
	/* Scale instead of modulo so long intervals use the whole range. */
	return (uint64_t)(((unsigned __int128)interval_ns * random) >> 32);
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

int health_http_status(const char *buf, size_t len)
{
	static const char prefix[] = "HTTP/1.";
	const size_t plen = sizeof(prefix) - 1;
	const char *nl;
	const char *code;

	/* Reject early what can never become a status line. */
	if (memcmp(buf, prefix, len < plen ? len : plen) != 0)
		return -EINVAL;
	nl = memchr(buf, '\n', len);
	if (!nl)
		return 0;
	/* "HTTP/1.x SSS" then a space or the end of the line. */
	if ((size_t)(nl - buf) < plen + 5 || !is_digit(buf[plen]) || buf[plen + 1] != ' ')
		return -EINVAL;
	code = buf + plen + 2;
	if (!is_digit(code[0]) || !is_digit(code[1]) || !is_digit(code[2]))
		return -EINVAL;
	if (code[3] != ' ' && code[3] != '\r' && code[3] != '\n')
		return -EINVAL;
	if (code[0] < '1' || code[0] > '5')
		return -EINVAL;
	return (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
}
