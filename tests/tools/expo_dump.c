/* Prints a synthetic meshd exposition for N services x M backends (default 3 x 2) with varied
 * counters, and on stderr how long rendering took: lets tests run `promtool check metrics` on the
 * real formatter without a daemon, and bench the formatter alone.
 *   expo_dump [N_SERVICES [N_BACKENDS]] */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "telemetry/exposition.h"

static const char *reason_name(int r)
{
	static const char *const names[] = { "no_backend", "no_healthy", "circuit_open",
					     "max_connections" };

	return r >= 0 && r < 4 ? names[r] : "unknown";
}

static void feed(struct exposition *e, int n_svc, int n_be)
{
	char name[32];
	int i, j;

	for (i = 0; i < n_svc; i++) {
		struct datapath_service_stats s = { .service = name,
						    .bytes_sent = (uint64_t)i * 7 };

		snprintf(name, sizeof(name), "svc-%d", i);
		s.rejects[i % 4] = (uint64_t)i;
		expo_service(&s, e);
		for (j = 0; j < n_be; j++) {
			struct datapath_backend_stats b = { .service = name };

			b.backend.family = AF_INET;
			b.backend.addr.v4.s_addr = htonl(0x7f000001);
			b.backend.port = (uint16_t)(20000 + j);
			b.conn_ok = (uint64_t)(i * n_be + j);
			b.circuit = (enum datapath_circuit)(j % 3);
			b.healthy = j % 2;
			b.latency_ewma_ns = 123456;
			expo_backend(&b, e);
		}
	}
}

int main(int argc, char **argv)
{
	int n_svc = argc > 1 ? atoi(argv[1]) : 3, n_be = argc > 2 ? atoi(argv[2]) : 2;
	struct expo_daemon d = { .version = "test",
				 .ready = true,
				 .config_generation = 1,
				 .discovery = "static",
				 .rss_bytes = 4096,
				 .start_time_seconds = 1.7e9 };
	struct exposition *e = expo_new(reason_name);
	struct strbuf out = STRBUF_INIT;
	struct timespec t0, t1;

	if (!e)
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	feed(e, n_svc, n_be);
	if (expo_render(e, &d, &out))
		return 1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	fwrite(out.data, 1, out.len, stdout);
	fprintf(stderr, "render_ms=%.3f bytes=%zu\n",
		(double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
		out.len);
	strbuf_free(&out);
	expo_free(e);
	return 0;
}
