/* Logging: one line per event, logfmt (`ts=... level=info subsys=datapath msg="..." k=v`) or JSON.
 * The level is checked before anything is formatted. Any thread may log; lines are written whole
 * with one write(2). Never pass secrets. */
#ifndef MESH_LOG_H
#define MESH_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

enum log_format {
	LOG_FORMAT_LOGFMT = 0,
	LOG_FORMAT_JSON = 1,
};

void log_setup(enum log_level level, enum log_format format, int fd);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
bool log_enabled(enum log_level level);

/* Emits one line. `msg` is the human message; `kv`, when not NULL, is a printf format producing
 * logfmt pairs (`path=%s old=%s`) appended after it (converted to JSON fields in JSON mode).
 * Values containing spaces or quotes are quoted by log_emit when they come from %s through
 * log_q(). */
void log_emit(enum log_level level, const char *subsys, const char *msg, const char *kv, ...)
    __attribute__((format(printf, 4, 5)));

/* Returns `s` as a logfmt value: unchanged when it is a bare word, else double-quoted with
 * escapes. The result lives in a small per-thread ring of buffers (valid for the next few calls). */
const char *log_q(const char *s);

/* Routes libbpf's messages through the logger (warnings as WARN, info/debug as DEBUG). */
void log_route_libbpf(void);

/* A rate limiter for lines an outsider can cause at will (a refused connection, a timed-out
 * peer): at most `burst` lines per `interval_ms`, the rest counted and reported with the next
 * line that goes out. One per call site, e.g. a static or a struct member initialised with
 * LOG_RATELIMIT_INIT. Not thread-safe: use it from one thread (the event loop). */
struct log_ratelimit {
	unsigned interval_ms;
	unsigned burst;
	uint64_t window_start_ns;
	unsigned in_window;
	unsigned long suppressed;
};
#define LOG_RATELIMIT_INIT(interval_ms_, burst_)                                                   \
	{                                                                                          \
		.interval_ms = (interval_ms_), .burst = (burst_)                                   \
	}
/* True when a line may be emitted now (CLOCK_MONOTONIC `now_ns`); then `*suppressed` gets how
 * many were held back since the last line that went out (say it in that line). */
bool log_ratelimit(struct log_ratelimit *rl, uint64_t now_ns, unsigned long *suppressed);

/* LOG_WARN through a rate limiter; `kv` gets ` suppressed=N` appended. */
#define LOG_WARN_RL(rl, now_ns, subsys, msg, kv, ...)                                              \
	do {                                                                                       \
		unsigned long _supp;                                                               \
		if (log_enabled(LOG_LEVEL_WARN) && log_ratelimit(rl, now_ns, &_supp))              \
			log_emit(LOG_LEVEL_WARN, subsys, msg, kv " suppressed=%lu", __VA_ARGS__,   \
				 _supp);                                                           \
	} while (0)

#define LOG_ERR(subsys, msg, ...)                                                                  \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_ERROR))                                                  \
			log_emit(LOG_LEVEL_ERROR, subsys, msg, __VA_ARGS__);                       \
	} while (0)
#define LOG_WARN(subsys, msg, ...)                                                                 \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_WARN))                                                   \
			log_emit(LOG_LEVEL_WARN, subsys, msg, __VA_ARGS__);                        \
	} while (0)
#define LOG_INFO(subsys, msg, ...)                                                                 \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_INFO))                                                   \
			log_emit(LOG_LEVEL_INFO, subsys, msg, __VA_ARGS__);                        \
	} while (0)
#define LOG_DEBUG(subsys, msg, ...)                                                                \
	do {                                                                                       \
		if (log_enabled(LOG_LEVEL_DEBUG))                                                  \
			log_emit(LOG_LEVEL_DEBUG, subsys, msg, __VA_ARGS__);                       \
	} while (0)

#endif
