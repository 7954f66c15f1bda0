/* dpbench: the C side of bench/bench_datapath.sh (a tool, so bench/run.sh does not run it bare).
 *   serve PORT COUNT          1-byte echo servers on 127.0.0.1:PORT..PORT+COUNT-1 (one thread each)
 *   serve-many PORT COUNT     listeners on 127.1.x.y:PORT for backends 10..COUNT-1 of populate,
 *                             accepting and closing (one epoll thread)
 *   rtt VIP PORT DADDR DPORT N  connect + 1-byte request/response + close, alternating through the
 *                             VIP and directly to the backend; prints medians, p99s and ratios
 *   connects ADDR PORT N      N plain connect + close by reset (drives the connect4 program)
 *   datagrams ADDR PORT N PROG_ID...
 *                             N datagrams from one unconnected UDP socket (sendto); prints the
 *                             first program's run time per run (drives sendmsg4)
 *   cost ADDR PORT N CHUNK PROG_ID...
 *                             N such connects; per chunk, the first program's run time per
 *                             run and all the programs' (ns)
 *   populate PIN N BASEPORT [FROM [BACKENDS [ALG]]]
 *                             writes services FROM..N-1 (default 0) of BACKENDS (10) backends
 *                             (ALG least_request, peak_ewma, or split: least_request with a
 *                             90/10 split, the last tenth of the backends in subset b)
 *                             each (127.0.0.1:BASEPORT+0..9, then 127.1.x.y:BASEPORT) and
 *                             removes any from N on
 *   propagate PIN VIP:PORT ADDR:PORT URL BODY
 *                             PUTs BODY to URL (a discovery write, e.g. a Consul registration)
 *                             and times until the service's backends in the maps include
 *                             ADDR:PORT (bench/bench_discovery.sh)
 * Results are key=value lines. */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "datapath/datapath.h"
#include "mesh_abi.h"

#define BENCH_BACKENDS 10
#define BENCH_MAX_BACKENDS MESH_MAX_BACKENDS_PER_SVC

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct sockaddr_in addr4(const char *ip, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static void *serve_one(void *arg)
{
	int lfd = (int)(long)arg;

	for (;;) {
		char b;
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			continue;
		if (read(fd, &b, 1) == 1 && write(fd, &b, 1) != 1)
			perror("write");
		close(fd);
	}
	return NULL;
}

static int cmd_serve(int port, int count)
{
	pthread_t th;

	for (int i = 0; i < count; i++) {
		struct sockaddr_in a = addr4("127.0.0.1", port + i);
		int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4096)) {
			perror("bind/listen");
			return 1;
		}
		pthread_create(&th, NULL, serve_one, (void *)(long)fd);
	}
	printf("serving=%d\n", count);
	fflush(stdout);
	pause();
	return 0;
}

/* Listeners for populate's backends beyond the tenth; every connection is accepted and closed. */
static int cmd_serve_many(int port, int count)
{
	int ep = epoll_create1(0), n = 0;

	for (int b = BENCH_BACKENDS; b < count; b++) {
		char ip[32];
		struct sockaddr_in a;
		struct epoll_event ev = { .events = EPOLLIN };
		int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

		snprintf(ip, sizeof(ip), "127.1.%d.%d", b / 256, b % 256);
		a = addr4(ip, port);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4096)) {
			perror("bind/listen");
			return 1;
		}
		ev.data.fd = fd;
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
		n++;
	}
	printf("serving=%d\n", n);
	fflush(stdout);
	for (;;) {
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, -1);

		for (int i = 0; i < k; i++) {
			int c;

			while ((c = accept(evs[i].data.fd, NULL, NULL)) >= 0)
				close(c);
		}
	}
	return 0;
}

/* One connect + 1-byte request/response + close; returns its duration or 0 on error. */
/* Connects to `a`, with a 1-byte request/response if `with_data`, and closes; a close with
 * `rst` resets the connection instead, leaving no TIME_WAIT socket behind (a run of many
 * thousand connects would otherwise fill the host with them, and slow what it measures).
 * Returns the time taken, 0 on failure. */
static uint64_t one_rtt(const struct sockaddr_in *a, int with_data, int rst)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	uint64_t t0 = now_ns();
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
	char b = 'x';

	if (fd < 0)
		return 0;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)a, sizeof(*a)) ||
	    (with_data && (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1))) {
		close(fd);
		return 0;
	}
	if (rst)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	return now_ns() - t0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, int n, int p)
{
	return v[(long)n * p / 100 < n ? (long)n * p / 100 : n - 1];
}

static int cmd_rtt(const char *vip, int vport, const char *dip, int dport, int n)
{
	struct sockaddr_in v = addr4(vip, vport), d = addr4(dip, dport);
	uint64_t *tv = calloc((size_t)n, sizeof(*tv)), *td = calloc((size_t)n, sizeof(*td));
	int nv = 0, nd = 0, errors = 0;

	if (!tv || !td)
		return 1;
	for (int i = 0; i < 200; i++) /* warm up both paths */
		one_rtt(&v, 1, 0), one_rtt(&d, 1, 0);
	for (int i = 0; i < n; i++) {
		/* Alternate which goes first so neither path always follows the other. */
		uint64_t a = i & 1 ? one_rtt(&d, 1, 0) : one_rtt(&v, 1, 0);
		uint64_t b = i & 1 ? one_rtt(&v, 1, 0) : one_rtt(&d, 1, 0);
		uint64_t x = i & 1 ? b : a, y = i & 1 ? a : b;

		if (x)
			tv[nv++] = x;
		if (y)
			td[nd++] = y;
		errors += !x + !y;
	}
	if (!nv || !nd)
		return 1;
	qsort(tv, (size_t)nv, sizeof(*tv), cmp_u64);
	qsort(td, (size_t)nd, sizeof(*td), cmp_u64);
	printf("rtt_samples=%d\nrtt_errors=%d\n", n, errors);
	printf("rtt_vip_median_ns=%llu\nrtt_direct_median_ns=%llu\n",
	       (unsigned long long)pct(tv, nv, 50), (unsigned long long)pct(td, nd, 50));
	printf("rtt_vip_p99_ns=%llu\nrtt_direct_p99_ns=%llu\n", (unsigned long long)pct(tv, nv, 99),
	       (unsigned long long)pct(td, nd, 99));
	printf("rtt_median_ratio=%.3f\nrtt_p99_ratio=%.3f\n",
	       (double)pct(tv, nv, 50) / (double)pct(td, nd, 50),
	       (double)pct(tv, nv, 99) / (double)pct(td, nd, 99));
	free(tv);
	free(td);
	return 0;
}

static int cmd_connects(const char *ip, int port, int n)
{
	struct sockaddr_in a = addr4(ip, port);
	int failed = 0;

	for (int i = 0; i < n; i++)
		failed += one_rtt(&a, 0, 1) == 0;
	printf("connects=%d\nconnect_failed=%d\n", n, failed);
	return 0;
}

static int prog_stats(const unsigned *ids, int n, uint64_t *run_ns, uint64_t *runs);

static int cmd_datagrams(const char *ip, int port, int n, const unsigned *ids, int n_ids)
{
	struct sockaddr_in a = addr4(ip, port);
	uint64_t t0, r0, t1, r1;
	int fd = socket(AF_INET, SOCK_DGRAM, 0), failed = 0;

	if (fd < 0 || n_ids < 1 || prog_stats(ids, 1, &t0, &r0))
		return 1;
	for (int i = 0; i < n; i++)
		failed += sendto(fd, "x", 1, 0, (const struct sockaddr *)&a, sizeof(a)) != 1;
	if (prog_stats(ids, 1, &t1, &r1) || r1 == r0)
		return 1;
	close(fd);
	printf("datagrams=%d\ndatagram_failed=%d\nprog_ns_per_run=%llu\n", n, failed,
	       (unsigned long long)((t1 - t0) / (r1 - r0)));
	return 0;
}

/* Run time and runs so far of the programs `ids` (kernel.bpf_stats_enabled must be on). */
static int prog_stats(const unsigned *ids, int n, uint64_t *run_ns, uint64_t *runs)
{
	*run_ns = *runs = 0;
	for (int i = 0; i < n; i++) {
		struct bpf_prog_info info = { 0 };
		__u32 len = sizeof(info);
		int fd = bpf_prog_get_fd_by_id(ids[i]), err;

		if (fd < 0)
			return -errno;
		err = bpf_obj_get_info_by_fd(fd, &info, &len);
		close(fd);
		if (err)
			return -errno;
		*run_ns += info.run_time_ns;
		if (i == 0)
			*runs = info.run_cnt;
	}
	return 0;
}

/* N connects by reset in chunks of CHUNK. Prints one line per chunk, `chunk=C A`: the first
 * program's run time per run (C) and all the programs' run time per run of the first (A), in ns.
 * Reading the counters in-process, between chunks, keeps other processes from running between
 * them. */
static int cmd_cost(const char *ip, int port, int n, int chunk, const unsigned *ids, int n_ids)
{
	struct sockaddr_in a = addr4(ip, port);
	uint64_t t0, r0, t1, r1, f0, f1;

	if (chunk <= 0 || n_ids <= 0)
		return 2;
	for (int done = 0; done + chunk <= n; done += chunk) {
		if (prog_stats(ids, 1, &t0, &r0) || prog_stats(ids, n_ids, &f0, &r0))
			return 1;
		for (int i = 0; i < chunk; i++)
			one_rtt(&a, 0, 1);
		if (prog_stats(ids, 1, &t1, &r1) || prog_stats(ids, n_ids, &f1, &r1) || r1 == r0)
			return 1;
		printf("chunk=%llu %llu\n", (unsigned long long)((t1 - t0) / (r1 - r0)),
		       (unsigned long long)((f1 - f0) / (r1 - r0)));
	}
	return 0;
}

/* Service i: VIP 127.77.(2 + i / 65536).(100 + i / 1000 % 100)... see vip_of(); backends
 * 127.0.0.1:baseport+0..9 and beyond ten 127.1.(b / 256).(b % 256):baseport. */
static void vip_of(int i, struct config_endpoint *vip)
{
	char ip[32];

	snprintf(ip, sizeof(ip), "127.77.%d.%d", 2 + i / 100000, 100 + i / 1000 % 100);
	vip->family = AF_INET;
	inet_pton(AF_INET, ip, &vip->addr.v4);
	vip->port = (uint16_t)(18000 + i % 1000);
}

static int cmd_populate(const char *pin, int n, int baseport, int from, int nb,
			enum mesh_lb_algorithm alg, bool split)
{
	static char sub_a[] = "a", sub_b[] = "b";
	static struct config_split halves[2] = { { sub_a, 9000 }, { sub_b, 1000 } };
	struct datapath_opts opts = { .pin_path = pin };
	static struct config_backend be[BENCH_MAX_BACKENDS];
	struct config_service svc = { .backends = be, .n_backends = (size_t)nb };
	struct datapath *dp = datapath_open(&opts);
	char name[32];
	int err = 0;

	if (!dp || nb < 1 || nb > BENCH_MAX_BACKENDS)
		return 1;
	for (int b = 0; b < nb; b++) {
		char ip[32];

		be[b] = (struct config_backend){ .weight = 1 };
		be[b].endpoint.family = AF_INET;
		be[b].endpoint.port = (uint16_t)(baseport + (b < BENCH_BACKENDS ? b : 0));
		if (b < BENCH_BACKENDS)
			snprintf(ip, sizeof(ip), "127.0.0.1");
		else
			snprintf(ip, sizeof(ip), "127.1.%d.%d", b / 256, b % 256);
		inet_pton(AF_INET, ip, &be[b].endpoint.addr.v4);
		be[b].subset = b < nb - (nb + 9) / 10 || nb == 1 ? sub_a : sub_b;
	}
	if (split && nb >= 2) {
		svc.split = halves;
		svc.n_split = 2;
	}
	svc.name = name;
	svc.load_balancer = (struct config_load_balancer){ .algorithm = alg,
							   .choice_count = 2,
							   .panic_threshold = 0.5,
							   .peak_ewma_decay_ns = 10000000000ull };
	svc.circuit_breaker = (struct config_circuit_breaker){ .consecutive_failures = 5,
							       .open_duration_ns = 30000000000ull,
							       .max_ejection_percent = 50 };
	for (int i = from; i < n && !err; i++) {
		snprintf(name, sizeof(name), "bench-%d", i);
		vip_of(i, &svc.vip);
		err = datapath_service_set(dp, &svc);
		if (err)
			printf("held=%d\nerror=%s\n", i, strerror(-err));
	}
	for (int i = n; !err; i++) { /* shrink: services from an earlier, larger populate */
		snprintf(name, sizeof(name), "bench-%d", i);
		if (datapath_service_del(dp, name))
			break;
	}
	datapath_close(dp);
	printf("services=%d\n", err ? -1 : n);
	return err ? 1 : 0;
}

/* Whether the service at `vip` lists a backend at `be` in the pinned maps (read directly: a
 * datapath handle's userspace mirror would not see meshd's writes). */
static int in_maps(const int *fd, const struct mesh_svc_key *vip, const struct config_endpoint *be)
{
	struct mesh_svc svc;
	struct mesh_slot slot;
	struct mesh_backend b;

	if (bpf_map_lookup_elem(fd[0], vip, &svc))
		return 0;
	for (__u32 i = 0; i < svc.n_backends && i < MESH_MAX_BACKENDS_PER_SVC; i++) {
		__u32 k = svc.slot_base + i;

		if (bpf_map_lookup_elem(fd[1], &k, &slot) ||
		    bpf_map_lookup_elem(fd[2], &slot.backend_id, &b))
			continue;
		if (b.port == htons(be->port) && !memcmp(&b.addr[12], &be->addr.v4, 4))
			return 1;
	}
	return 0;
}

static int v4_endpoint(const char *s, struct config_endpoint *ep)
{
	char ip[64], *colon;

	snprintf(ip, sizeof(ip), "%s", s);
	colon = strrchr(ip, ':');
	if (!colon)
		return -EINVAL;
	*colon = 0;
	ep->family = AF_INET;
	ep->port = (uint16_t)atoi(colon + 1);
	return inet_pton(AF_INET, ip, &ep->addr.v4) == 1 ? 0 : -EINVAL;
}

static int http_put(const char *url, const char *body)
{
	CURL *c = curl_easy_init();
	long status = 0;
	int err;

	if (!c)
		return -ENOMEM;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	err = curl_easy_perform(c) == CURLE_OK ? 0 : -EIO;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return err ? err : status == 200 ? 0 : -EPROTO;
}

/* Polls the maps every 100 us for up to 10 s. */
static int cmd_propagate(const char *pin, const char *vip_s, const char *ep, const char *url,
			 const char *body)
{
	struct mesh_svc_key vip = { .addr = { [10] = 0xff, [11] = 0xff }, .proto = IPPROTO_TCP };
	struct config_endpoint want, v;
	static const char *const maps[3] = { "mesh_services", "mesh_slots", "mesh_backends" };
	char path[512];
	uint64_t t0, deadline;
	int fd[3], found = 0;

	if (v4_endpoint(vip_s, &v) || v4_endpoint(ep, &want))
		return 2;
	memcpy(&vip.addr[12], &v.addr.v4, 4);
	vip.port = htons(v.port);
	for (int m = 0; m < 3; m++) {
		snprintf(path, sizeof(path), "%s/%s", pin, maps[m]);
		fd[m] = bpf_obj_get(path);
		if (fd[m] < 0)
			return fprintf(stderr, "dpbench: no %s pinned at %s\n", maps[m], pin), 1;
	}
	t0 = now_ns();
	deadline = t0 + 10000000000ull;
	if (http_put(url, body))
		return fprintf(stderr, "dpbench: PUT %s failed\n", url), 1;
	while (!(found = in_maps(fd, &vip, &want)) && now_ns() < deadline)
		usleep(100);
	if (!found)
		return fprintf(stderr, "dpbench: %s never reached the maps\n", ep), 1;
	printf("propagate_ms=%.3f\n", (double)(now_ns() - t0) / 1e6);
	return 0;
}

int main(int argc, char **argv)
{
	log_setup(LOG_LEVEL_WARN, LOG_FORMAT_LOGFMT, 2);
	if (argc == 4 && !strcmp(argv[1], "serve-many"))
		return cmd_serve_many(atoi(argv[2]), atoi(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return cmd_serve(atoi(argv[2]), atoi(argv[3]));
	if (argc == 7 && !strcmp(argv[1], "rtt"))
		return cmd_rtt(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), atoi(argv[6]));
	if (argc == 5 && !strcmp(argv[1], "connects"))
		return cmd_connects(argv[2], atoi(argv[3]), atoi(argv[4]));
	if (argc >= 7 && argc <= 16 && !strcmp(argv[1], "cost")) {
		unsigned ids[10];

		for (int i = 6; i < argc; i++)
			ids[i - 6] = (unsigned)atoi(argv[i]);
		return cmd_cost(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), ids,
				argc - 6);
	}
	if (argc >= 6 && argc <= 10 && !strcmp(argv[1], "datagrams")) {
		unsigned ids[5];

		for (int i = 5; i < argc; i++)
			ids[i - 5] = (unsigned)atoi(argv[i]);
		return cmd_datagrams(argv[2], atoi(argv[3]), atoi(argv[4]), ids, argc - 5);
	}
	if (argc >= 5 && argc <= 8 && !strcmp(argv[1], "populate"))
		return cmd_populate(
		    argv[2], atoi(argv[3]), atoi(argv[4]), argc >= 6 ? atoi(argv[5]) : 0,
		    argc >= 7 ? atoi(argv[6]) : BENCH_BACKENDS,
		    argc == 8 && !strcmp(argv[7], "peak_ewma") ? MESH_LB_PEAK_EWMA
							       : MESH_LB_LEAST_REQUEST,
		    argc == 8 && !strcmp(argv[7], "split"));
	if (argc == 7 && !strcmp(argv[1], "propagate"))
		return cmd_propagate(argv[2], argv[3], argv[4], argv[5], argv[6]);
	fprintf(stderr, "usage: dpbench serve|rtt|connects|populate ...\n");
	return 2;
}
