/* Logger behind log.h. Global level/format set once at start and on reload (atomics, so threads
 * that log concurrently need no lock); each line is formatted into a stack buffer and written
 * with a single write(2) so lines from different threads never interleave. */
#include <bpf/libbpf.h>
#include <ctype.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#define LINE_MAX_LEN 4096

static int log_level_v = LOG_LEVEL_INFO;
static int log_format_v = LOG_FORMAT_LOGFMT;
static int log_fd = 2;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_setup(enum log_level level, enum log_format format, int fd)
{
	__atomic_store_n(&log_level_v, level, __ATOMIC_RELAXED);
	__atomic_store_n(&log_format_v, format, __ATOMIC_RELAXED);
	log_fd = fd;
}

void log_set_level(enum log_level level)
{
	__atomic_store_n(&log_level_v, level, __ATOMIC_RELAXED);
}

enum log_level log_get_level(void)
{
	return __atomic_load_n(&log_level_v, __ATOMIC_RELAXED);
}

bool log_enabled(enum log_level level)
{
	return (int)level <= __atomic_load_n(&log_level_v, __ATOMIC_RELAXED);
}

static bool bare_word(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s == '"' || *s == '=' || *s == '\\' || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* Appends `s` escaped for a double-quoted string (same rules for logfmt and JSON). */
static size_t put_escaped(char *dst, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			dst[n++] = '\\';
			dst[n++] = (char)c;
		} else if (c == '\n') {
			dst[n++] = '\\';
			dst[n++] = 'n';
		} else if (c < 0x20) {
			n += (size_t)snprintf(dst + n, cap - n, "\\u%04x", c);
		} else {
			dst[n++] = (char)c;
		}
	}
	dst[n] = '\0';
	return n;
}

const char *log_q(const char *s)
{
	static __thread char ring[8][512];
	static __thread unsigned idx;
	char *buf = ring[idx++ % 8];
	size_t n;

	if (!s)
		return "\"\"";
	if (bare_word(s))
		return s;
	buf[0] = '"';
	n = 1 + put_escaped(buf + 1, sizeof(ring[0]) - 2, s);
	buf[n++] = '"';
	buf[n] = '\0';
	return buf;
}

/* Converts logfmt pairs in `kv` into `,"k":"v"` JSON members appended to `dst`. */
static size_t kv_to_json(char *dst, size_t cap, const char *kv)
{
	size_t n = 0;
	char key[128], val[1024];

	while (*kv && n + 8 < cap) {
		size_t k = 0, v = 0;
		while (*kv == ' ')
			kv++;
		while (*kv && *kv != '=' && *kv != ' ' && k + 1 < sizeof(key))
			key[k++] = *kv++;
		key[k] = '\0';
		if (*kv == '=')
			kv++;
		if (*kv == '"') {
			for (kv++; *kv && *kv != '"' && v + 1 < sizeof(val); kv++) {
				if (*kv == '\\' && kv[1])
					kv++;
				val[v++] = *kv;
			}
			if (*kv == '"')
				kv++;
		} else {
			while (*kv && *kv != ' ' && v + 1 < sizeof(val))
				val[v++] = *kv++;
		}
		val[v] = '\0';
		if (!k)
			continue;
		n += (size_t)snprintf(dst + n, cap - n, ",\"%s\":\"", key);
		if (n >= cap)
			break;
		n += put_escaped(dst + n, cap - n, val);
		if (n + 2 < cap)
			dst[n++] = '"';
		dst[n] = '\0';
	}
	return n;
}

void log_emit(enum log_level level, const char *subsys, const char *msg, const char *kv, ...)
{
	char line[LINE_MAX_LEN], pairs[LINE_MAX_LEN / 2] = "", ts[40];
	struct timespec now;
	struct tm tm;
	size_t n;
	va_list ap;

	if (kv) {
		va_start(ap, kv);
		vsnprintf(pairs, sizeof(pairs), kv, ap);
		va_end(ap);
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", now.tv_nsec / 1000000);

	if (__atomic_load_n(&log_format_v, __ATOMIC_RELAXED) == LOG_FORMAT_JSON) {
		n = (size_t)snprintf(line, sizeof(line),
				     "{\"ts\":\"%s\",\"level\":\"%s\",\"subsys\":\"%s\",\"msg\":\"",
				     ts, level_names[level], subsys);
		n += put_escaped(line + n, sizeof(line) - n - 2, msg);
		n += (size_t)snprintf(line + n, sizeof(line) - n, "\"");
		n += kv_to_json(line + n, sizeof(line) - n - 3, pairs);
		n += (size_t)snprintf(line + n, sizeof(line) - n, "}\n");
	} else {
		n = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s subsys=%s msg=%s%s%s\n",
				     ts, level_names[level], subsys, log_q(msg),
				     pairs[0] ? " " : "", pairs);
	}
	if (n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	ssize_t w = write(log_fd, line, n);
	(void)w;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	enum log_level l = level == LIBBPF_WARN ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG;
	char buf[1024];
	size_t n;

	if (!log_enabled(l))
		return 0;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	n = strlen(buf);
	while (n && isspace((unsigned char)buf[n - 1]))
		buf[--n] = '\0';
	log_emit(l, "libbpf", buf, NULL);
	return 0;
}

void log_route_libbpf(void)
{
	libbpf_set_print(libbpf_print);
}

bool log_ratelimit(struct log_ratelimit *rl, uint64_t now_ns, unsigned long *suppressed)
{
	uint64_t interval = (uint64_t)rl->interval_ms * 1000000;

	if (!rl->window_start_ns || now_ns - rl->window_start_ns >= interval) {
		rl->window_start_ns = now_ns ? now_ns : 1;
		rl->in_window = 0;
	}
	if (rl->in_window >= rl->burst) {
		rl->suppressed++;
		return false;
	}
	rl->in_window++;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}
