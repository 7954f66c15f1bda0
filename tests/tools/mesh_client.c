/* mesh_client: a fast test client for the datapath. Makes N TCP connects to ADDR PORT (IPv4,
 * IPv6 or v4-mapped), sends a few bytes and reads the backend's name line (backend.py greets
 * after the client's first bytes), checks that getpeername() shows ADDR:PORT, then closes (FIN,
 * or RST with --rst) or holds every connection for --hold seconds. Prints key=value lines: ok,
 * failed, backend.NAME=count, errno.NAME=count, peer_mismatch. --threads spreads the connects. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_NAMES 2048
#define MAX_ERRNO 256
#define MAX_HOLD 100000

struct opts {
	struct sockaddr_storage dst;
	socklen_t dst_len;
	int count, threads, timeout_ms, hold_s;
	int rst, no_read, sleep_ms;
};

struct tally {
	pthread_mutex_t mu;
	long ok, failed, mismatch;
	long err[MAX_ERRNO];
	char names[MAX_NAMES][64];
	long name_count[MAX_NAMES];
	int held[MAX_HOLD];
	int n_held;
};

static struct opts o = { .count = 1, .threads = 1, .timeout_ms = 2000 };
static struct tally t = { .mu = PTHREAD_MUTEX_INITIALIZER };

static int connect_timeout(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t len = sizeof(int);
	int err = 0;

	if (connect(fd, (struct sockaddr *)&o.dst, o.dst_len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return errno;
	if (poll(&p, 1, o.timeout_ms) != 1)
		return ETIMEDOUT;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
	return err;
}

static int read_line(int fd, char *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t n = 0;

	while (n + 1 < len) {
		ssize_t r;

		if (poll(&p, 1, o.timeout_ms) != 1)
			return ETIMEDOUT;
		r = read(fd, buf + n, len - 1 - n);
		if (r <= 0)
			return r == 0 ? ECONNRESET : errno;
		n += (size_t)r;
		if (memchr(buf, '\n', n))
			break;
	}
	buf[n] = 0;
	buf[strcspn(buf, "\r\n")] = 0;
	return 0;
}

/* getpeername must return the address the application connected to, not the backend. */
static int peer_matches(int fd)
{
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);

	if (getpeername(fd, (struct sockaddr *)&peer, &len))
		return 0;
	if (o.dst.ss_family == AF_INET) {
		struct sockaddr_in *a = (void *)&peer, *b = (void *)&o.dst;

		return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
	}
	struct sockaddr_in6 *a = (void *)&peer, *b = (void *)&o.dst;

	return !memcmp(&a->sin6_addr, &b->sin6_addr, 16) && a->sin6_port == b->sin6_port;
}

static void record(int err, const char *name, int mismatch)
{
	pthread_mutex_lock(&t.mu);
	if (err) {
		t.failed++;
		t.err[err < MAX_ERRNO ? err : 0]++;
	} else {
		t.ok++;
		t.mismatch += mismatch;
		for (int i = 0; name && i < MAX_NAMES; i++) {
			if (!t.names[i][0])
				snprintf(t.names[i], sizeof(t.names[i]), "%s", name);
			if (!strcmp(t.names[i], name)) {
				t.name_count[i]++;
				break;
			}
		}
	}
	pthread_mutex_unlock(&t.mu);
}

static void finish(int fd, int err)
{
	if (!err && o.hold_s) {
		pthread_mutex_lock(&t.mu);
		if (t.n_held < MAX_HOLD) {
			t.held[t.n_held++] = fd;
			fd = -1;
		}
		pthread_mutex_unlock(&t.mu);
	}
	if (fd < 0)
		return;
	if (o.rst) {
		struct linger l = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	close(fd);
}

static void one_connect(void)
{
	char name[128] = "";
	int fd, err, mismatch = 0;

	fd = socket(o.dst.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		record(errno, NULL, 0);
		return;
	}
	err = connect_timeout(fd);
	if (!err) {
		mismatch = !peer_matches(fd);
		/* backend.py peeks at the first bytes (HTTP or not) before it greets. */
		if (!o.no_read && write(fd, "hi\n", 3) != 3)
			err = errno;
		if (!o.no_read && !err)
			err = read_line(fd, name, sizeof(name));
	}
	record(err, o.no_read ? "-" : name, mismatch);
	finish(fd, err);
	if (o.sleep_ms)
		usleep((useconds_t)o.sleep_ms * 1000);
}

static void *worker(void *arg)
{
	long n = (long)arg;

	for (long i = 0; i < n; i++)
		one_connect();
	return NULL;
}

static int parse_dst(const char *host, const char *port)
{
	struct sockaddr_in *a4 = (void *)&o.dst;
	struct sockaddr_in6 *a6 = (void *)&o.dst;

	memset(&o.dst, 0, sizeof(o.dst));
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)atoi(port));
		o.dst_len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)atoi(port));
		o.dst_len = sizeof(*a6);
		return 0;
	}
	return -1;
}

static void print_results(void)
{
	printf("ok=%ld\nfailed=%ld\npeer_mismatch=%ld\n", t.ok, t.failed, t.mismatch);
	for (int i = 0; i < MAX_NAMES && t.names[i][0]; i++)
		printf("backend.%s=%ld\n", t.names[i], t.name_count[i]);
	for (int e = 0; e < MAX_ERRNO; e++)
		if (t.err[e])
			printf("errno.%s=%ld\n", e ? strerrorname_np(e) : "other", t.err[e]);
	fflush(stdout);
}

static int usage(void)
{
	fprintf(stderr, "usage: mesh_client [-n COUNT] [-t THREADS] [--timeout MS] [--hold SECS]\n"
			"                   [--rst] [--no-read] [--sleep MS] ADDR PORT\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "timeout", 1, 0, 'T' }, { "hold", 1, 0, 'H' },  { "rst", 0, 0, 'R' },
		{ "no-read", 0, 0, 'N' }, { "sleep", 1, 0, 'S' }, { 0, 0, 0, 0 },
	};
	pthread_t th[64];
	int opt;

	while ((opt = getopt_long(argc, argv, "n:t:", lo, NULL)) != -1) {
		switch (opt) {
		case 'n':
			o.count = atoi(optarg);
			break;
		case 't':
			o.threads = atoi(optarg);
			break;
		case 'T':
			o.timeout_ms = atoi(optarg);
			break;
		case 'H':
			o.hold_s = atoi(optarg);
			break;
		case 'R':
			o.rst = 1;
			break;
		case 'N':
			o.no_read = 1;
			break;
		case 'S':
			o.sleep_ms = atoi(optarg);
			break;
		default:
			return usage();
		}
	}
	if (argc - optind != 2 || parse_dst(argv[optind], argv[optind + 1]) || o.threads < 1 ||
	    o.threads > 64)
		return usage();
	for (long i = 0; i < o.threads; i++)
		pthread_create(&th[i], NULL, worker,
			       (void *)(long)(o.count / o.threads + (i < o.count % o.threads)));
	for (int i = 0; i < o.threads; i++)
		pthread_join(th[i], NULL);
	print_results();
	if (o.hold_s) {
		printf("holding=%d\n", t.n_held);
		fflush(stdout);
		sleep((unsigned)o.hold_s);
		for (int i = 0; i < t.n_held; i++)
			close(t.held[i]);
	}
	return 0;
}
