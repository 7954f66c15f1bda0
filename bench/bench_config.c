/* Benchmark: load and validate a generated 10,000-service config (10 backends each; every tenth
 * service overrides its circuit breaker, every tenth backend has a weight) with
 * config_load_buf, several times; prints the median as config_load_10000_services_ms=<x>, next to
 * the time cJSON alone takes to parse and free the same text (the floor for any loader). Each
 * timed step starts from a trimmed heap, as a daemon's occasional reload would, so the figure
 * does not depend on how glibc recycles the previous run's million small chunks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <malloc.h>

#include "config/config.h"

#define N_SERVICES 10000
#define N_BACKENDS 10
#define RUNS 7

/* Appends to a growing buffer; exits on ENOMEM (a benchmark has nothing to unwind). */
static void put(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s);

	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*buf = realloc(*buf, *cap);
		if (!*buf) {
			perror("realloc");
			exit(1);
		}
	}
	memcpy(*buf + *len, s, n + 1);
	*len += n;
}

static char *generate(size_t *len)
{
	char *buf = NULL, item[256];
	size_t cap = 0;
	int i, b;

	*len = 0;
	put(&buf, len, &cap, "{\"version\":1,\"services\":[");
	for (i = 0; i < N_SERVICES; i++) {
		snprintf(item, sizeof(item),
			 "%s{\"name\":\"svc-%d\",\"vip\":\"127.77.%d.%d\",\"port\":80,%s"
			 "\"backends\":[",
			 i ? "," : "", i, i / 250, i % 250 + 1,
			 i % 10 ? "" : "\"circuit_breaker\":{\"consecutive_failures\":3},");
		put(&buf, len, &cap, item);
		for (b = 0; b < N_BACKENDS; b++) {
			snprintf(item, sizeof(item),
				 "%s{\"address\":\"127.0.%d.%d\",\"port\":%d%s}", b ? "," : "",
				 i / 250, i % 250 + 1, 8000 + b, b ? "" : ",\"weight\":2");
			put(&buf, len, &cap, item);
		}
		put(&buf, len, &cap, "]}");
	}
	put(&buf, len, &cap, "]}");
	return buf;
}

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(void)
{
	char *env[] = { NULL }, *json;
	double ms[RUNS], parse[RUNS];
	size_t len;
	int i;

	json = generate(&len);
	for (i = 0; i < RUNS; i++) {
		struct config_errors errs = { 0 };
		struct mesh_config *cfg;
		double t;

		malloc_trim(0);
		t = now_ms();
		cJSON_Delete(cJSON_ParseWithLength(json, len));
		parse[i] = now_ms() - t;
		malloc_trim(0);
		t = now_ms();
		cfg = config_load_buf(json, len, env, &errs);
		ms[i] = now_ms() - t;
		if (!cfg || cfg->n_services != N_SERVICES) {
			fprintf(stderr, "bench_config: load failed (%zu problems): %s\n", errs.n,
				errs.n ? errs.msgs[0] : "?");
			return 1;
		}
		config_free(cfg);
		config_errors_free(&errs);
	}
	qsort(ms, RUNS, sizeof(ms[0]), cmp_double);
	qsort(parse, RUNS, sizeof(parse[0]), cmp_double);
	printf("config_bytes=%zu\n", len);
	printf("cjson_parse_10000_services_ms=%.1f\n", parse[RUNS / 2]);
	printf("config_load_10000_services_ms=%.1f\n", ms[RUNS / 2]);
	free(json);
	return 0;
}
