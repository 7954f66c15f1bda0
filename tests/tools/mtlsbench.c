/* mtlsbench: the client and server bench/bench_mtls.sh drives, the same for every contender
 * (mTLS path, plain VIP path, haproxy pair, stunnel pair):
 *   mtlsbench server ADDR:PORT              echo server; a connection starting with 'S' is a
 *                                           sink that answers the byte count at EOF
 *   mtlsbench rr ADDR:PORT SIZE COUNT       held connection, SIZE-byte request/response x COUNT
 *   mtlsbench crr ADDR:PORT COUNT           connect + 1 B request/response + close, x COUNT
 *   mtlsbench stream ADDR:PORT SECONDS      one connection's throughput to the sink
 *   mtlsbench hold ADDR:PORT N STOPFILE     N connections after one 1 KB exchange, held
 *   mtlsbench busy ADDR:PORT N SECONDS      N connections doing 1 KB request/response
 *   mtlsbench hs ADDR:PORT SECONDS THREADS CA CERT KEY SNI
 *                                           full TLS 1.3 mutual handshakes per second
 * Latencies print as p50_us/p99_us, rates as per-second figures: key=value lines. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int parse_ep(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(colon + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int dial(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int full(int fd, void *buf, size_t n, int rd)
{
	size_t off = 0;

	while (off < n) {
		ssize_t r = rd ? read(fd, (char *)buf + off, n - off)
			       : write(fd, (const char *)buf + off, n - off);

		if (r <= 0)
			return -1;
		off += (size_t)r;
	}
	return 0;
}

/* --- server -------------------------------------------------------------------------------------- */

static void *serve_conn(void *arg)
{
	int fd = (int)(intptr_t)arg, one = 1;
	static __thread char buf[65536];
	uint64_t total = 0;
	ssize_t n;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	n = read(fd, buf, sizeof(buf));
	if (n > 0 && buf[0] == 'S') { /* sink */
		total = (uint64_t)n - 1;
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			total += (uint64_t)n;
		full(fd, &total, sizeof(total), 0);
	} else {
		while (n > 0 && full(fd, buf, (size_t)n, 0) == 0)
			n = read(fd, buf, sizeof(buf));
	}
	close(fd);
	return NULL;
}

static int server(const char *ep)
{
	struct sockaddr_in sa;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	pthread_attr_t attr;

	if (parse_ep(ep, &sa) || s < 0)
		return 2;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 4096) < 0) {
		perror("bind");
		return 1;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	printf("listening=%s\n", ep);
	fflush(stdout);
	for (;;) {
		int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
		pthread_t t;

		if (c >= 0 && pthread_create(&t, &attr, serve_conn, (void *)(intptr_t)c))
			close(c);
	}
}

/* --- latency ------------------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *ns, size_t n, size_t fails)
{
	double sum = 0;

	qsort(ns, n, sizeof(*ns), cmp_u64);
	for (size_t i = 0; i < n; i++)
		sum += (double)ns[i];
	printf("%s_count=%zu %s_failed=%zu %s_p50_us=%.1f %s_p99_us=%.1f %s_mean_us=%.1f\n", what,
	       n, what, fails, what, n ? (double)ns[n / 2] / 1e3 : 0, what,
	       n ? (double)ns[(n * 99) / 100] / 1e3 : 0, what, n ? sum / (double)n / 1e3 : 0);
}

static int rr(const char *ep, size_t size, size_t count)
{
	struct sockaddr_in sa;
	uint64_t *lat = calloc(count + 1, sizeof(*lat));
	char *buf = malloc(size), *back = malloc(size);
	size_t n = 0;
	int fd;

	if (parse_ep(ep, &sa) || !lat || !buf || !back || (fd = dial(&sa)) < 0) {
		free(lat);
		free(buf);
		free(back);
		return 1;
	}
	memset(buf, 'r', size);
	for (size_t i = 0; i < count + count / 10; i++) { /* the first tenth warms up */
		uint64_t t0 = now_ns();

		if (full(fd, buf, size, 0) || full(fd, back, size, 1))
			break;
		if (i >= count / 10)
			lat[n++] = now_ns() - t0;
	}
	close(fd);
	report("rr", lat, n, count - n);
	free(lat);
	free(buf);
	free(back);
	return 0;
}

static int crr(const char *ep, size_t count)
{
	struct sockaddr_in sa;
	uint64_t *lat = calloc(count + 1, sizeof(*lat));
	uint64_t *dl = calloc(count + 1, sizeof(*dl)), *ex = calloc(count + 1, sizeof(*ex));
	size_t n = 0, fails = 0;
	char c = 'c';

	if (parse_ep(ep, &sa) || !lat || !dl || !ex) {
		free(lat);
		free(dl);
		free(ex);
		return 1;
	}
	for (size_t i = 0; i < count; i++) {
		uint64_t t0 = now_ns(), t1, t2;
		int fd = dial(&sa);

		t1 = now_ns();
		if (fd < 0 || full(fd, &c, 1, 0) || full(fd, &c, 1, 1)) {
			fails++;
		} else {
			t2 = now_ns();
			close(fd);
			fd = -1;
			dl[n] = t1 - t0;
			ex[n] = t2 - t1;
			lat[n++] = now_ns() - t0;
		}
		if (fd >= 0)
			close(fd);
	}
	report("crr", lat, n, fails);
	report("crr_dial", dl, n, 0);
	report("crr_exchange", ex, n, 0);
	free(lat);
	free(dl);
	free(ex);
	return 0;
}

static int stream(const char *ep, double seconds)
{
	static char buf[65536];
	struct sockaddr_in sa;
	uint64_t t0, end, sent = 0, got = 0;
	int fd;

	if (parse_ep(ep, &sa) || (fd = dial(&sa)) < 0)
		return 1;
	memset(buf, 'x', sizeof(buf));
	buf[0] = 'S';
	t0 = now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	if (full(fd, buf, sizeof(buf), 0))
		return 1;
	buf[0] = 'x';
	sent = sizeof(buf) - 1;
	while (now_ns() < end) {
		if (full(fd, buf, sizeof(buf), 0))
			return 1;
		sent += sizeof(buf);
	}
	shutdown(fd, SHUT_WR);
	if (full(fd, &got, sizeof(got), 1))
		return 1;
	printf("stream_bytes=%llu stream_MBps=%.1f\n", (unsigned long long)got,
	       (double)got / ((double)(now_ns() - t0) / 1e9) / 1e6);
	close(fd);
	return got == sent ? 0 : 1;
}

/* --- many connections ------------------------------------------------------------------------ */

static int open_many(const struct sockaddr_in *sa, int *fds, int n)
{
	char buf[1024];

	memset(buf, 'h', sizeof(buf));
	for (int i = 0; i < n; i++) {
		fds[i] = dial(sa);
		if (fds[i] < 0 || full(fds[i], buf, sizeof(buf), 0) ||
		    full(fds[i], buf, sizeof(buf), 1))
			return i;
	}
	return n;
}

static int hold(const char *ep, int n, const char *stop)
{
	struct sockaddr_in sa;
	int *fds = calloc((size_t)n, sizeof(int)), ok;

	if (parse_ep(ep, &sa) || !fds)
		return 1;
	ok = open_many(&sa, fds, n);
	printf("held=%d\n", ok);
	fflush(stdout);
	while (access(stop, F_OK))
		usleep(50000);
	return ok == n ? 0 : 1;
}

/* Every connection keeps one 1 KB request in flight: poll, read the echo, send the next. */
static int busy(const char *ep, int n, double seconds)
{
	struct sockaddr_in sa;
	int *fds = calloc((size_t)n, sizeof(int)), ok;
	struct pollfd *p = calloc((size_t)n, sizeof(*p));
	size_t *have = calloc((size_t)n, sizeof(size_t));
	uint64_t end, rounds = 0;
	char buf[1024];

	if (parse_ep(ep, &sa) || !fds || !p || !have)
		return 1;
	ok = open_many(&sa, fds, n);
	memset(buf, 'b', sizeof(buf));
	for (int i = 0; i < ok; i++) {
		p[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		full(fds[i], buf, sizeof(buf), 0);
	}
	end = now_ns() + (uint64_t)(seconds * 1e9);
	while (now_ns() < end && poll(p, (nfds_t)ok, 100) >= 0) {
		for (int i = 0; i < ok; i++) {
			ssize_t r;

			if (!(p[i].revents & POLLIN))
				continue;
			r = read(fds[i], buf, sizeof(buf) - have[i]);
			if (r <= 0)
				return 1;
			have[i] += (size_t)r;
			if (have[i] == sizeof(buf)) {
				have[i] = 0;
				rounds++;
				full(fds[i], buf, sizeof(buf), 0);
			}
		}
	}
	printf("busy_connections=%d busy_rounds_per_s=%.0f\n", ok, (double)rounds / seconds);
	return ok == n ? 0 : 1;
}

/* --- TLS handshakes --------------------------------------------------------------------------- */

struct hs_arg {
	struct sockaddr_in sa;
	SSL_CTX *ctx;
	const char *sni;
	uint64_t end, done, failed;
};

static void *hs_loop(void *arg)
{
	struct hs_arg *a = arg;
	char c;

	while (now_ns() < a->end) {
		int fd = dial(&a->sa);
		SSL *ssl = fd >= 0 ? SSL_new(a->ctx) : NULL;

		if (ssl && SSL_set_fd(ssl, fd) && SSL_set_tlsext_host_name(ssl, a->sni) &&
		    SSL_connect(ssl) == 1) {
			/* The server has the client's certificate now; a peek makes sure it judged
			 * it (meshd sends SETTINGS, haproxy nothing: a short wait, then on). */
			struct pollfd p = { .fd = fd, .events = POLLIN };

			if (poll(&p, 1, 5) > 0) {
				fcntl(fd, F_SETFL, O_NONBLOCK); /* tickets only: do not wait */
				SSL_peek(ssl, &c, 1);
			}
			a->done++;
		} else {
			a->failed++;
		}
		ERR_clear_error();
		SSL_free(ssl);
		if (fd >= 0)
			close(fd);
	}
	return NULL;
}

static SSL_CTX *hs_ctx(const char *ca, const char *cert, const char *key)
{
	static const unsigned char alpn[] = { 2, 'h', '2' };
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") ||
	    !SSL_CTX_set1_groups_list(ctx, "X25519") ||
	    !SSL_CTX_load_verify_locations(ctx, ca, NULL) ||
	    !SSL_CTX_use_certificate_chain_file(ctx, cert) ||
	    !SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM))
		return NULL;
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn));
	return ctx;
}

static int hs(const char *ep, double seconds, int threads, const char *ca, const char *cert,
	      const char *key, const char *sni)
{
	struct hs_arg a[16];
	pthread_t t[16];
	uint64_t done = 0, failed = 0;
	SSL_CTX *ctx = hs_ctx(ca, cert, key);

	if (!ctx || threads < 1 || threads > 16)
		return 2;
	for (int i = 0; i < threads; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		if (parse_ep(ep, &a[i].sa))
			return 2;
		a[i].ctx = ctx;
		a[i].sni = sni;
		a[i].end = now_ns() + (uint64_t)(seconds * 1e9);
		pthread_create(&t[i], NULL, hs_loop, &a[i]);
	}
	for (int i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		done += a[i].done;
		failed += a[i].failed;
	}
	printf("handshakes=%llu handshakes_failed=%llu handshakes_per_s=%.0f\n",
	       (unsigned long long)done, (unsigned long long)failed, (double)done / seconds);
	return 0;
}

int main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc == 3 && !strcmp(argv[1], "server"))
		return server(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "rr"))
		return rr(argv[2], (size_t)atol(argv[3]), (size_t)atol(argv[4]));
	if (argc == 4 && !strcmp(argv[1], "crr"))
		return crr(argv[2], (size_t)atol(argv[3]));
	if (argc == 4 && !strcmp(argv[1], "stream"))
		return stream(argv[2], atof(argv[3]));
	if (argc == 5 && !strcmp(argv[1], "hold"))
		return hold(argv[2], atoi(argv[3]), argv[4]);
	if (argc == 5 && !strcmp(argv[1], "busy"))
		return busy(argv[2], atoi(argv[3]), atof(argv[4]));
	if (argc == 9 && !strcmp(argv[1], "hs"))
		return hs(argv[2], atof(argv[3]), atoi(argv[4]), argv[5], argv[6], argv[7],
			  argv[8]);
	fprintf(stderr, "usage: see the comment at the top of tests/tools/mtlsbench.c\n");
	return 2;
}
