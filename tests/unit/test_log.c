/* Unit tests for the logger: logfmt quoting, JSON conversion, level filtering. */
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "test.h"

static char *capture(enum log_format fmt, enum log_level lvl, const char *msg, const char *k,
		     const char *v)
{
	int fds[2];
	static char buf[4096];
	ssize_t n;

	if (pipe(fds))
		return NULL;
	log_setup(LOG_LEVEL_INFO, fmt, fds[1]);
	if (log_enabled(lvl))
		log_emit(lvl, "test", msg, "%s=%s", k, log_q(v));
	close(fds[1]);
	n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	buf[n > 0 ? n : 0] = '\0';
	log_setup(LOG_LEVEL_INFO, LOG_FORMAT_LOGFMT, 2);
	return buf;
}

TEST(logfmt_quotes_values_with_spaces)
{
	char *line = capture(LOG_FORMAT_LOGFMT, LOG_LEVEL_INFO, "config changed", "old", "a b\"c");
	CHECK_CONTAINS(line, "level=info subsys=test msg=\"config changed\" old=\"a b\\\"c\"");
}

TEST(logfmt_bare_words_unquoted)
{
	char *line = capture(LOG_FORMAT_LOGFMT, LOG_LEVEL_WARN, "x", "path", "load_balancer.x");
	CHECK_CONTAINS(line, "msg=x path=load_balancer.x\n");
}

TEST(json_format_converts_pairs)
{
	char *line = capture(LOG_FORMAT_JSON, LOG_LEVEL_INFO, "hello", "k", "v w");
	CHECK_CONTAINS(line,
		       "\"level\":\"info\",\"subsys\":\"test\",\"msg\":\"hello\",\"k\":\"v w\"}");
}

TEST(level_filters_debug)
{
	char *line = capture(LOG_FORMAT_LOGFMT, LOG_LEVEL_DEBUG, "hidden", "k", "v");
	CHECK_STR_EQ(line, "");
}

/* The rate limiter lets `burst` lines through per interval, counts the rest, and hands that
 * count to the next line that goes out (then starts again from zero). */
TEST(log_ratelimit_counts_what_it_holds_back)
{
	struct log_ratelimit rl = LOG_RATELIMIT_INIT(1000, 2);
	uint64_t t = 5000000000ull, ms = 1000000;
	unsigned long supp = 99;
	int i, allowed = 0;

	CHECK(log_ratelimit(&rl, t, &supp));
	CHECK_INT_EQ(supp, 0);
	CHECK(log_ratelimit(&rl, t + 1 * ms, &supp));
	for (i = 0; i < 10; i++)
		allowed += log_ratelimit(&rl, t + 2 * ms + (uint64_t)i, &supp);
	CHECK_INT_EQ(allowed, 0);
	CHECK(!log_ratelimit(&rl, t + 999 * ms, &supp));
	/* a new window: the next line reports the 11 held back */
	CHECK(log_ratelimit(&rl, t + 1000 * ms, &supp));
	CHECK_INT_EQ(supp, 11);
	CHECK(log_ratelimit(&rl, t + 1001 * ms, &supp));
	CHECK_INT_EQ(supp, 0);
	CHECK(!log_ratelimit(&rl, t + 1002 * ms, &supp));
}
