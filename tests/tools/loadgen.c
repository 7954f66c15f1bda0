/* loadgen: the load client and servers of `make bench` (bench/bench_l4.sh and others), in C so
 * the client is never the bottleneck it measures.
 *   loadgen serve PORT COUNT
 *       servers on 127.0.0.1:PORT..PORT+COUNT-1; the first byte of a connection picks the mode:
 *       'e' echo every byte until EOF, 'S' sink until EOF then answer the byte count (8 bytes,
 *       little endian), anything else: answer that byte and close (connect + 1 B req/resp)
 *   loadgen [--cgroup CG] [-n N] [--warmup W] [--bytes B] rr|held|stream NAME=IP:PORT[@cg]...
 *       rr:     connect + 1 B request/response + close, N per target, targets interleaved
 *       held:   one connection per target, N 1-byte round trips each, interleaved in batches
 *       stream: one connection per target sending B bytes (default 256 MiB), N times
 *   loadgen http-sink PORT
 *       an HTTP/1.1 server on 127.0.0.1:PORT answering every request 200 with an empty body
 *       (keep-alive): an OTLP collector that costs next to nothing, for the tracing benchmark
 *   loadgen breaker VIP:PORT VICTIM_PORT
 *       run inside the mesh cgroup: serves 127.0.0.1:VICTIM_PORT itself, makes serial
 *       connect + 1 B + close through the VIP, closes the victim's listener and counts the
 *       connects that fail until the breaker has taken it out (eject_failed, eject_ms: until the
 *       last failure), then listens again and times until the victim is served (recover_ms)
 * A target marked @cg is measured from a child process moved into CG (the mesh's cgroup), the
 * others from a child outside it, so baselines run with no BPF program on their path. The two
 * children take turns at the parent's request (a pipe each); only the work inside a child is
 * timed. Prints key=value lines per target: NAME.p50_us, .p90_us, .p99_us, .mean_us, .errors for
 * rr/held; NAME.gbit_s (median), NAME.gbit_s_max for stream. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 8
#define HELD_BATCH 100
#define HELD_CONNS 8 /* held connections per target, used in turn */
#define CHUNK (256 * 1024)

enum op {
	OP_RR = 1,
	OP_HELD_OPEN = 2,
	OP_HELD = 3,
	OP_STREAM = 4,
	OP_QUIT = 5,
};

struct target {
	char name[32];
	struct sockaddr_in addr;
	int in_cgroup;
	int held_fd[HELD_CONNS]; /* in the child that owns the target */
	unsigned next_held;
};

/* Request from the parent to a child; the child answers `count` uint64 samples (0 = failed). */
struct request {
	int op;
	int target;
	uint32_t count;
	uint64_t bytes;
};

struct worker {
	pid_t pid;
	int req_fd, resp_fd;
};

static struct target targets[MAX_TARGETS];
static int n_targets;
static char chunk[CHUNK];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int read_full(int fd, void *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t r = read(fd, (char *)buf + got, len - got);

		if (r <= 0)
			return r == 0 ? -EPIPE : -errno;
		got += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	for (size_t put = 0; put < len;) {
		ssize_t w = write(fd, (const char *)buf + put, len - put);

		if (w <= 0)
			return -errno;
		put += (size_t)w;
	}
	return 0;
}

/* --- servers ---------------------------------------------------------------------------------*/

static void *serve_stream(void *arg)
{
	int fd = (int)(long)arg;
	char first;
	uint64_t total = 0;
	ssize_t r;

	if (read(fd, &first, 1) == 1) {
		if (first == 'S') {
			while ((r = read(fd, chunk, sizeof(chunk))) > 0) /* contents unused */
				total += (uint64_t)r;
			write_full(fd, &total, sizeof(total));
		} else {
			char buf[4096];

			write_full(fd, &first, 1);
			while ((r = read(fd, buf, sizeof(buf))) > 0 &&
			       !write_full(fd, buf, (size_t)r))
				;
		}
	}
	close(fd);
	return NULL;
}

/* One-shot connections (nearly all) are answered inline; echo and sink ones get a thread, so a
 * held connection never stalls the port. */
static void *serve_port(void *arg)
{
	int lfd = (int)(long)arg, one = 1;
	pthread_t th;

	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		char b;

		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (recv(fd, &b, 1, MSG_PEEK) == 1 && (b == 'e' || b == 'S')) {
			if (pthread_create(&th, NULL, serve_stream, (void *)(long)fd) == 0) {
				pthread_detach(th);
				continue;
			}
		} else if (read(fd, &b, 1) == 1) {
			write_full(fd, &b, 1);
		}
		close(fd);
	}
	return NULL;
}

static int listen_on(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4096)) {
		fprintf(stderr, "loadgen: port %d: %s\n", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int cmd_serve(int port, int count)
{
	pthread_t th;

	for (int i = 0; i < count; i++) {
		int fd = listen_on(port + i);

		if (fd < 0)
			return 1;
		pthread_create(&th, NULL, serve_port, (void *)(long)fd);
	}
	printf("serving=%d\n", count);
	fflush(stdout);
	pause();
	return 0;
}

/* --- client operations, run in a child --------------------------------------------------------*/

static int connect_to(const struct target *t)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&t->addr, sizeof(t->addr))) {
		close(fd);
		return -1;
	}
	return fd;
}

/* connect + 1 B request/response + close; the server closes first (as an HTTP/1.0 server). */
static uint64_t op_rr(const struct target *t)
{
	uint64_t t0 = now_ns();
	int fd = connect_to(t);
	char b = 'x';

	if (fd < 0)
		return 0;
	if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1) {
		close(fd);
		return 0;
	}
	close(fd);
	return now_ns() - t0;
}

/* Several connections per target, used in turn: on a small VM the server thread of one
 * connection may keep waking on the client's CPU and another's on the other CPU, which differ by
 * 2x; every target gets the same mix. */
static int op_held_open(struct target *t)
{
	for (int i = 0; i < HELD_CONNS; i++) {
		char b = 'e';

		t->held_fd[i] = connect_to(t);
		if (t->held_fd[i] < 0 || write(t->held_fd[i], &b, 1) != 1 ||
		    read(t->held_fd[i], &b, 1) != 1)
			return -1;
	}
	return 0;
}

static uint64_t op_held(struct target *t)
{
	int fd = t->held_fd[t->next_held++ % HELD_CONNS];
	uint64_t t0 = now_ns();
	char b = 'x';

	if (write(fd, &b, 1) != 1 || read(fd, &b, 1) != 1)
		return 0;
	return now_ns() - t0;
}

/* One stream of `bytes` to the sink; returns the time until the sink confirmed the count. */
static uint64_t op_stream(const struct target *t, uint64_t bytes)
{
	uint64_t t0 = now_ns(), got = 0;
	int fd = connect_to(t);
	char mode = 'S';

	if (fd < 0)
		return 0;
	if (write(fd, &mode, 1) != 1)
		goto fail;
	for (uint64_t left = bytes; left;) {
		size_t n = left < CHUNK ? (size_t)left : CHUNK;

		if (write_full(fd, chunk, n))
			goto fail;
		left -= n;
	}
	shutdown(fd, SHUT_WR);
	if (read_full(fd, &got, sizeof(got)) || got != bytes)
		goto fail;
	close(fd);
	return now_ns() - t0;
fail:
	close(fd);
	return 0;
}

static uint64_t run_one(const struct request *rq)
{
	struct target *t = &targets[rq->target];

	switch (rq->op) {
	case OP_RR:
		return op_rr(t);
	case OP_HELD:
		return op_held(t);
	case OP_HELD_OPEN:
		return op_held_open(t) ? 0 : 1;
	case OP_STREAM:
		return op_stream(t, rq->bytes);
	}
	return 0;
}

static void worker_loop(int req_fd, int resp_fd)
{
	uint64_t samples[HELD_BATCH];
	struct request rq;

	while (!read_full(req_fd, &rq, sizeof(rq)) && rq.op != OP_QUIT) {
		uint32_t n = rq.count < HELD_BATCH ? rq.count : HELD_BATCH;

		for (uint32_t i = 0; i < n; i++)
			samples[i] = run_one(&rq);
		if (write_full(resp_fd, samples, n * sizeof(samples[0])))
			break;
	}
	_exit(0);
}

/* Forks a child that serves requests; with `cgroup` it first moves itself into it. */
static int worker_start(struct worker *w, const char *cgroup)
{
	int req[2], resp[2];

	if (pipe(req) || pipe(resp))
		return -errno;
	w->pid = fork();
	if (w->pid < 0)
		return -errno;
	if (w->pid == 0) {
		close(req[1]);
		close(resp[0]);
		if (cgroup) {
			char path[512];
			FILE *f;

			snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
			f = fopen(path, "w");
			if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f)) {
				fprintf(stderr, "loadgen: cannot join %s\n", cgroup);
				_exit(1);
			}
		}
		worker_loop(req[0], resp[1]);
	}
	close(req[0]);
	close(resp[1]);
	w->req_fd = req[1];
	w->resp_fd = resp[0];
	return 0;
}

/* --- parent: scheduling and statistics --------------------------------------------------------*/

struct run {
	struct worker workers[2]; /* [0] outside the cgroup, [1] inside */
	uint64_t *samples[MAX_TARGETS];
	uint32_t n_samples[MAX_TARGETS];
	uint32_t errors[MAX_TARGETS];
};

/* Asks the target's child for `count` samples; keeps the non-zero ones when `keep`. */
static int ask(struct run *r, int ti, int op, uint32_t count, uint64_t bytes, int keep)
{
	struct worker *w = &r->workers[targets[ti].in_cgroup];
	struct request rq = { .op = op, .target = ti, .count = count, .bytes = bytes };
	uint64_t got[HELD_BATCH];

	if (write_full(w->req_fd, &rq, sizeof(rq)) ||
	    read_full(w->resp_fd, got, count * sizeof(got[0])))
		return -EPIPE;
	for (uint32_t i = 0; keep && i < count; i++) {
		if (got[i])
			r->samples[ti][r->n_samples[ti]++] = got[i];
		else
			r->errors[ti]++;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *v, uint32_t n, int p)
{
	uint32_t i = (uint32_t)((uint64_t)n * (uint64_t)p / 100);

	return (double)v[i < n ? i : n - 1] / 1e3;
}

static void report_latency(struct run *r)
{
	for (int t = 0; t < n_targets; t++) {
		uint32_t n = r->n_samples[t];
		uint64_t *v = r->samples[t];
		double sum = 0;

		qsort(v, n, sizeof(*v), cmp_u64);
		for (uint32_t i = 0; i < n; i++)
			sum += (double)v[i];
		printf("%s.samples=%u\n%s.errors=%u\n", targets[t].name, n, targets[t].name,
		       r->errors[t]);
		if (!n)
			continue;
		printf("%s.p50_us=%.2f\n%s.p90_us=%.2f\n%s.p99_us=%.2f\n%s.mean_us=%.2f\n",
		       targets[t].name, pct_us(v, n, 50), targets[t].name, pct_us(v, n, 90),
		       targets[t].name, pct_us(v, n, 99), targets[t].name, sum / n / 1e3);
	}
}

static void report_stream(struct run *r, uint64_t bytes)
{
	for (int t = 0; t < n_targets; t++) {
		uint32_t n = r->n_samples[t];
		uint64_t *v = r->samples[t];

		printf("%s.errors=%u\n", targets[t].name, r->errors[t]);
		if (!n)
			continue;
		qsort(v, n, sizeof(*v), cmp_u64);
		printf("%s.gbit_s=%.3f\n%s.gbit_s_max=%.3f\n", targets[t].name,
		       (double)bytes * 8 / (double)v[n / 2], targets[t].name,
		       (double)bytes * 8 / (double)v[0]);
	}
}

/* Interleaves the targets: each round visits all of them, starting one further each time so no
 * target always follows the same one. */
static int schedule(struct run *r, const char *mode, uint32_t n, uint32_t warmup, uint64_t bytes)
{
	int op = !strcmp(mode, "rr") ? OP_RR : !strcmp(mode, "held") ? OP_HELD : OP_STREAM;
	uint32_t batch = op == OP_HELD ? HELD_BATCH : 1;

	if (op == OP_HELD)
		for (int t = 0; t < n_targets; t++)
			if (ask(r, t, OP_HELD_OPEN, 1, 0, 0))
				return -EPIPE;
	for (uint32_t i = 0; i < warmup; i += batch)
		for (int t = 0; t < n_targets; t++)
			if (ask(r, t, op, batch, bytes, 0))
				return -EPIPE;
	for (uint32_t i = 0, round = 0; i < n; i += batch, round++)
		for (int k = 0; k < n_targets; k++)
			if (ask(r, (int)((k + round) % (uint32_t)n_targets), op,
				batch < n - i ? batch : n - i, bytes, 1))
				return -EPIPE;
	return 0;
}

static int parse_target(const char *s, struct target *t)
{
	char buf[128], *eq, *colon, *at;

	snprintf(buf, sizeof(buf), "%s", s);
	eq = strchr(buf, '=');
	colon = eq ? strrchr(eq, ':') : NULL;
	if (!eq || !colon || eq - buf >= (long)sizeof(t->name))
		return -EINVAL;
	*eq = *colon = 0;
	at = strchr(colon + 1, '@');
	t->in_cgroup = at && !strcmp(at, "@cg");
	if (at)
		*at = 0;
	memcpy(t->name, buf, (size_t)(eq - buf) + 1);
	t->addr = (struct sockaddr_in){ .sin_family = AF_INET,
					.sin_port = htons((uint16_t)atoi(colon + 1)) };
	return inet_pton(AF_INET, eq + 1, &t->addr.sin_addr) == 1 ? 0 : -EINVAL;
}

/* --- HTTP sink --------------------------------------------------------------------------------*/

/* Reads requests (headers, then Content-Length bytes) and answers each 200 until EOF. */
static void *sink_conn(void *arg)
{
	static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	int fd = (int)(long)arg;
	char buf[65536];
	size_t have = 0;

	for (;;) {
		char *end = memmem(buf, have, "\r\n\r\n", 4), *cl;
		size_t head, body = 0;
		ssize_t r;

		if (!end) {
			if (have == sizeof(buf))
				break;
			r = read(fd, buf + have, sizeof(buf) - have);
			if (r <= 0)
				break;
			have += (size_t)r;
			continue;
		}
		head = (size_t)(end - buf) + 4;
		cl = memmem(buf, head, "Content-Length:", 15);
		if (!cl)
			cl = memmem(buf, head, "content-length:", 15);
		if (cl)
			body = strtoul(cl + 15, NULL, 10);
		for (size_t left = head + body; left;) { /* discard headers and body */
			size_t n = left < have ? left : have;

			memmove(buf, buf + n, have - n);
			have -= n;
			left -= n;
			if (left && (r = read(fd, buf, sizeof(buf))) > 0)
				have = (size_t)r;
			else if (left)
				goto out;
		}
		if (write_full(fd, ok, sizeof(ok) - 1))
			break;
	}
out:
	close(fd);
	return NULL;
}

static int cmd_http_sink(int port)
{
	int lfd = listen_on(port);
	pthread_t th;

	if (lfd < 0)
		return 1;
	printf("sink=%d\n", port);
	fflush(stdout);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd >= 0 && pthread_create(&th, NULL, sink_conn, (void *)(long)fd) == 0)
			pthread_detach(th);
		else if (fd >= 0)
			close(fd);
	}
	return 0;
}

/* --- breaker reaction -------------------------------------------------------------------------*/

static int usage(void);

static volatile int victim_fd = -1;
static volatile long victim_served;

/* The victim backend: answers one-shot connects while its listener is open. */
static void *victim_loop(void *arg)
{
	(void)arg;
	for (;;) {
		int lfd = victim_fd, fd;
		char b;

		if (lfd < 0) {
			usleep(1000);
			continue;
		}
		fd = accept(lfd, NULL, NULL);
		if (fd < 0)
			continue;
		if (read(fd, &b, 1) == 1 && !write_full(fd, &b, 1))
			__sync_fetch_and_add(&victim_served, 1);
		close(fd);
	}
	return NULL;
}

static int cmd_breaker(const char *vip, int victim_port)
{
	struct target t = { 0 };
	uint64_t t0, last_fail = 0, deadline;
	long failed = 0, ok_run = 0, before;
	char spec[96];
	pthread_t th;

	snprintf(spec, sizeof(spec), "vip=%s", vip);
	if (parse_target(spec, &t) || (victim_fd = listen_on(victim_port)) < 0)
		return usage();
	pthread_create(&th, NULL, victim_loop, NULL);
	for (int i = 0; i < 200; i++) /* warm: both backends in use */
		if (!op_rr(&t))
			return fprintf(stderr, "loadgen: warm-up connect failed\n"), 1;
	if (!victim_served)
		return fprintf(stderr, "loadgen: the victim got no traffic\n"), 1;
	t0 = now_ns();
	shutdown(victim_fd, SHUT_RDWR); /* from now on connects to it are refused */
	deadline = t0 + 5000000000ull;
	while (ok_run < 500 && now_ns() < deadline) {
		if (op_rr(&t)) {
			ok_run++;
		} else {
			failed++;
			ok_run = 0;
			last_fail = now_ns();
		}
	}
	printf("eject_failed=%ld\neject_ms=%.3f\n", failed,
	       last_fail ? (double)(last_fail - t0) / 1e6 : 0.0);
	close(victim_fd);
	victim_fd = -1;
	victim_fd = listen_on(victim_port);
	before = victim_served;
	t0 = now_ns();
	deadline = t0 + 60000000000ull;
	while (victim_served == before && now_ns() < deadline)
		op_rr(&t);
	if (victim_served == before)
		return fprintf(stderr, "loadgen: the victim was never served again\n"), 1;
	printf("recover_ms=%.3f\n", (double)(now_ns() - t0) / 1e6);
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: loadgen serve PORT COUNT\n"
			"       loadgen [--cgroup CG] [-n N] [--warmup W] [--bytes B] "
			"rr|held|stream NAME=IP:PORT[@cg]...\n"
			"       loadgen http-sink PORT\n"
			"       loadgen breaker VIP:PORT VICTIM_PORT\n");
	return 2;
}

static void run_free(struct run *r)
{
	for (int t = 0; t < MAX_TARGETS; t++)
		free(r->samples[t]);
}

/* Starts the children, runs the schedule, stops them, reports. Returns 0 or 1. */
static int run_all(struct run *r, const char *cgroup, const char *mode, uint32_t n, uint32_t warmup,
		   uint64_t bytes)
{
	int err;

	if (worker_start(&r->workers[0], NULL) || (cgroup && worker_start(&r->workers[1], cgroup)))
		return 1;
	err = schedule(r, mode, n, warmup, bytes);
	for (int w = 0; w < 1 + !!cgroup; w++) {
		struct request quit = { .op = OP_QUIT };

		write_full(r->workers[w].req_fd, &quit, sizeof(quit));
		waitpid(r->workers[w].pid, NULL, 0);
	}
	if (err) {
		fprintf(stderr, "loadgen: a worker died\n");
		return 1;
	}
	if (!strcmp(mode, "stream"))
		report_stream(r, bytes);
	else
		report_latency(r);
	return 0;
}

static int run_client(const char *cgroup, const char *mode, uint32_t n, uint32_t warmup,
		      uint64_t bytes)
{
	struct run r = { 0 };
	int rc;

	for (int t = 0; t < n_targets; t++)
		if (targets[t].in_cgroup && !cgroup)
			return usage();
	for (int t = 0; t < n_targets; t++) {
		r.samples[t] = calloc(n + HELD_BATCH, sizeof(uint64_t));
		if (!r.samples[t]) {
			run_free(&r);
			return 1;
		}
	}
	rc = run_all(&r, cgroup, mode, n, warmup, bytes);
	run_free(&r);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "cgroup", 1, 0, 'c' },
		{ "warmup", 1, 0, 'w' },
		{ "bytes", 1, 0, 'b' },
		{ 0, 0, 0, 0 },
	};
	uint32_t n = 1000, warmup = 200;
	uint64_t bytes = 256ull << 20;
	const char *cgroup = NULL;
	int opt;

	signal(SIGPIPE, SIG_IGN);
	if (argc == 4 && !strcmp(argv[1], "serve"))
		return cmd_serve(atoi(argv[2]), atoi(argv[3]));
	if (argc == 3 && !strcmp(argv[1], "http-sink"))
		return cmd_http_sink(atoi(argv[2]));
	if (argc == 4 && !strcmp(argv[1], "breaker"))
		return cmd_breaker(argv[2], atoi(argv[3]));
	while ((opt = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
		if (opt == 'n')
			n = (uint32_t)atoi(optarg);
		else if (opt == 'w')
			warmup = (uint32_t)atoi(optarg);
		else if (opt == 'b')
			bytes = strtoull(optarg, NULL, 10);
		else if (opt == 'c')
			cgroup = optarg;
		else
			return usage();
	}
	if (argc - optind < 2 || argc - optind - 1 > MAX_TARGETS || !n)
		return usage();
	if (strcmp(argv[optind], "rr") && strcmp(argv[optind], "held") &&
	    strcmp(argv[optind], "stream"))
		return usage();
	for (int i = optind + 1; i < argc; i++)
		if (parse_target(argv[i], &targets[n_targets++]))
			return usage();
	if (!strcmp(argv[optind], "stream"))
		warmup = warmup ? 1 : 0;
	return run_client(cgroup, argv[optind], n, warmup, bytes);
}
