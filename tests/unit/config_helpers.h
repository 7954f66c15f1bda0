/* Helpers shared by the config unit tests: load a JSON text with an environment, find a problem
 * line by its path, read a value's origin from `config show`. Header-only (static functions) so
 * each test_config*.c binary stays self-contained. */
#ifndef TEST_CONFIG_HELPERS_H
#define TEST_CONFIG_HELPERS_H

#include <stdarg.h>
#include <stdlib.h>

#include "config/config.h"
#include "test.h"

/* A valid base: one static service with one backend. */
#define BASE_SERVICE                                                                               \
	"{\"name\":\"api\",\"vip\":\"127.77.0.10\",\"port\":80,"                                   \
	"\"backends\":[{\"address\":\"127.0.0.1\",\"port\":8081}]}"
#define MINIMAL "{\"version\":1,\"services\":[" BASE_SERVICE "]}"

static char *const no_env[] = { NULL };

static inline struct mesh_config *load_env(const char *json, char *const *env,
					   struct config_errors *errs)
{
	return config_load_buf(json, strlen(json), env ? env : no_env, errs);
}

/* Index of the first problem starting with "<path>: " and containing `what`, or -1. */
static inline int find_err(const struct config_errors *errs, const char *path, const char *what)
{
	size_t i, n = strlen(path);

	for (i = 0; i < errs->n; i++)
		if (!strncmp(errs->msgs[i], path, n) && !strncmp(errs->msgs[i] + n, ": ", 2) &&
		    strstr(errs->msgs[i], what))
			return (int)i;
	return -1;
}

static inline void dump_errs(const struct config_errors *errs)
{
	size_t i;

	for (i = 0; i < errs->n; i++)
		fprintf(stderr, "  problem: %s\n", errs->msgs[i]);
}

/* Loads `json` with `env`, expects failure with a problem at `path` mentioning `what`. */
#define EXPECT_ERR(json, env, path, what)                                                          \
	do {                                                                                       \
		struct config_errors _e = { 0 };                                                   \
		struct mesh_config *_c = load_env(json, env, &_e);                                 \
		CHECK(_c == NULL);                                                                 \
		if (find_err(&_e, path, what) < 0) {                                               \
			dump_errs(&_e);                                                            \
			test_fail(__FILE__, __LINE__, "no problem \"%s: ...%s...\"", path, what);  \
		}                                                                                  \
		config_free(_c);                                                                   \
		config_errors_free(&_e);                                                           \
	} while (0)

/* Loads `json` with `env` and expects success; returns the config (caller frees). */
static inline struct mesh_config *must_load(const char *json, char *const *env, const char *file,
					    int line)
{
	struct config_errors e = { 0 };
	struct mesh_config *c = load_env(json, env, &e);

	if (!c) {
		dump_errs(&e);
		test_fail(file, line, "config did not load");
	}
	config_errors_free(&e);
	return c;
}
#define MUST_LOAD(json, env) must_load(json, env, __FILE__, __LINE__)

/* Loads `json` with `env` and expects exactly `n` problems, each one a key refused as `not
 * supported yet` (the rest of the config is valid). When the feature lands, the case becomes a
 * MUST_LOAD. */
static inline void expect_only_not_yet(const char *json, char *const *env, size_t n,
				       const char *file, int line)
{
	struct config_errors e = { 0 };
	struct mesh_config *c = load_env(json, env, &e);
	size_t i, refused = 0;

	for (i = 0; i < e.n; i++)
		refused += strstr(e.msgs[i], ": not supported yet") != NULL;
	if (c || e.n != n || refused != n) {
		dump_errs(&e);
		test_fail(file, line, "want %zu not-supported-yet problems only, got %zu (%zu)", n,
			  e.n, refused);
	}
	config_free(c);
	config_errors_free(&e);
}
#define EXPECT_ONLY_NOT_YET(json, env, n) expect_only_not_yet(json, env, n, __FILE__, __LINE__)

/* Builds a config text from a printf format (caller frees). */
static inline char *fmt_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *fmt_json(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return s;
}

/* Value and origin columns of `path` in `config show` output; returns 0 if found. */
static inline int show_value(const struct mesh_config *cfg, const char *path, char *value,
			     char *origin)
{
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0, n = strlen(path);
	FILE *f = open_memstream(&buf, &len);
	int found = -1;

	if (!f)
		return -1;
	config_show(cfg, false, f);
	fclose(f);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, path, n) || line[n] != ' ')
			continue;
		if (sscanf(line + n, " %255s %63s", value, origin) == 2)
			found = 0;
		break;
	}
	free(buf);
	return found;
}

static inline void check_origin(const struct mesh_config *cfg, const char *path, const char *want,
				const char *want_origin, const char *file, int line)
{
	char v[256] = "", o[64] = "";

	if (!cfg || show_value(cfg, path, v, o)) {
		test_fail(file, line, "no show line for %s", path);
		return;
	}
	if ((want && strcmp(v, want)) || strcmp(o, want_origin))
		test_fail(file, line, "%s: got %s (%s), want %s (%s)", path, v, o,
			  want ? want : "*", want_origin);
}
#define CHECK_ORIGIN(cfg, path, want, origin)                                                      \
	check_origin(cfg, path, want, origin, __FILE__, __LINE__)

#endif
