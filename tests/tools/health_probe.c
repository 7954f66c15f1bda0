/* Runs one health probe (health/health_probe.h) on a real event loop and prints its verdict, so
 * e2e suites can exercise the probe against real servers without a daemon.
 *   health_probe tcp|http ADDR:PORT [PATH] [TIMEOUT_MS]
 * Prints `ok <reason>` (exit 0) or `fail <reason>` (exit 1); exit 2 on usage errors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/evloop.h"
#include "health/health_probe.h"

struct verdict {
	struct evloop *loop;
	int done;
	bool ok;
};

static void on_result(bool ok, const char *reason, void *arg)
{
	struct verdict *v = arg;

	printf("%s %s\n", ok ? "ok" : "fail", reason);
	v->done = 1;
	v->ok = ok;
	evloop_stop(v->loop);
}

static int usage(void)
{
	fprintf(stderr, "usage: health_probe tcp|http ADDR:PORT [PATH] [TIMEOUT_MS]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct health_probe_opts opts = { .timeout_ns = 1000000000ull };
	struct verdict v = { 0 };

	if (argc < 3 || argc > 5)
		return usage();
	if (strcmp(argv[1], "tcp") == 0)
		opts.type = CONFIG_HEALTH_TCP;
	else if (strcmp(argv[1], "http") == 0)
		opts.type = CONFIG_HEALTH_HTTP;
	else
		return usage();
	if (config_parse_endpoint(argv[2], &opts.target) < 0)
		return usage();
	opts.http_path = argc > 3 ? argv[3] : "/health";
	if (argc > 4)
		opts.timeout_ns = strtoull(argv[4], NULL, 10) * 1000000ull;

	v.loop = evloop_new();
	if (!v.loop || !health_probe_start(v.loop, &opts, on_result, &v)) {
		fprintf(stderr, "health_probe: %s\n", strerror(errno));
		return 1;
	}
	evloop_run(v.loop);
	evloop_free(v.loop);
	return v.done && v.ok ? 0 : 1;
}
