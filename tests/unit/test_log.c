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
