/* The listener store behind fdstore.h. Two backends: systemd's file-descriptor store (when
 * NOTIFY_SOCKET is set: sockets go up with FDSTORE=1 and come back as LISTEN_FDS with
 * LISTEN_FDNAMES), or the holder: a process running `meshd fdstore DIR` that keeps copies on a
 * SOCK_SEQPACKET unix socket DIR/fdstore.sock. Requests are one text line plus SCM_RIGHTS:
 * "PUT name ep" (fds), "GET name" (answered "OK ep" with fds, or "NONE"), "DEL name", "QUIT".
 * The holder exits when it holds nothing or on QUIT. Main loop thread (the holder: its own
 * process). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "mtls/fdstore.h"

#define MSG_MAX 256
#define NAMES_MAX 8

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static char self_path[PATH_MAX];
static bool systemd;

/* Sockets systemd handed over at start (LISTEN_FDS), by name. */
static struct {
	char name[64];
	int fd;
} inherited[FDSTORE_MAX * NAMES_MAX];
static size_t n_inherited;

/* --- messages with descriptors ------------------------------------------------------------------ */

static int send_fds(int sock, const char *text, const int *fds, size_t n)
{
	char cbuf[CMSG_SPACE(sizeof(int) * FDSTORE_MAX)];
	struct iovec iov = { .iov_base = (void *)text, .iov_len = strlen(text) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (n > FDSTORE_MAX)
		n = FDSTORE_MAX;
	if (n) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	}
	return sendmsg(sock, &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

/* One message: text (NUL-terminated) and its descriptors (CLOEXEC). Returns the number of
 * descriptors, or -errno (-ENODATA at end of stream). */
static int recv_fds(int sock, char *text, size_t tlen, int *fds, size_t max)
{
	char cbuf[CMSG_SPACE(sizeof(int) * FDSTORE_MAX)];
	struct iovec iov = { .iov_base = text, .iov_len = tlen - 1 };
	struct msghdr msg = { .msg_iov = &iov,
			      .msg_iovlen = 1,
			      .msg_control = cbuf,
			      .msg_controllen = sizeof(cbuf) };
	ssize_t r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	int n = 0;

	if (r <= 0)
		return r < 0 ? -errno : -ENODATA;
	text[r] = '\0';
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if ((size_t)n < max)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* --- systemd ---------------------------------------------------------------------------------- */

static void inherit_listen_fds(void)
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	char buf[4096], *save = NULL, *tok;
	int n;

	if (!pid || !nfds || atol(pid) != (long)getpid())
		return;
	n = atoi(nfds);
	snprintf(buf, sizeof(buf), "%s", names ? names : "");
	tok = strtok_r(buf, ":", &save);
	for (int i = 0; i < n && n_inherited < sizeof(inherited) / sizeof(inherited[0]); i++) {
		int fd = 3 + i;

		fcntl(fd, F_SETFD, FD_CLOEXEC);
		snprintf(inherited[n_inherited].name, sizeof(inherited[0].name), "%s",
			 tok ? tok : "");
		inherited[n_inherited++].fd = fd;
		tok = strtok_r(NULL, ":", &save);
	}
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
}

/* Sends `state` (and fds) to $NOTIFY_SOCKET. */
static int notify(const char *state, const int *fds, size_t n)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int s, err;

	if (!path || strlen(path) >= sizeof(sun.sun_path))
		return -ENOENT;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (sun.sun_path[0] == '@')
		sun.sun_path[0] = '\0';
	s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	err = connect(s, (struct sockaddr *)&sun,
		      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path))) < 0
		  ? -errno
		  : send_fds(s, state, fds, n);
	close(s);
	return err;
}

void fdstore_init(const char *dir, const char *self_exe)
{
	systemd = getenv("NOTIFY_SOCKET") != NULL;
	inherit_listen_fds();
	sock_path[0] = '\0';
	if (dir && strlen(dir) + sizeof("/fdstore.sock") <= sizeof(sock_path))
		snprintf(sock_path, sizeof(sock_path), "%s/fdstore.sock", dir);
	snprintf(self_path, sizeof(self_path), "%s", self_exe ? self_exe : "");
}

/* --- the holder's client side ------------------------------------------------------------------ */

static int connect_holder(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if (connect(s, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int err = -errno;

		close(s);
		return err;
	}
	return s;
}

/* Starts `meshd fdstore DIR` detached (its own session, no inherited descriptors). */
static int spawn_holder(void)
{
	char dir[PATH_MAX], *slash;
	pid_t pid;
	int st;

	snprintf(dir, sizeof(dir), "%s", sock_path);
	slash = strrchr(dir, '/');
	if (!slash || !self_path[0])
		return -EINVAL;
	*slash = '\0';
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		setsid();
		if (fork() != 0)
			_exit(0);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execl(self_path, "meshd", "fdstore", dir, (char *)NULL);
		_exit(127);
	}
	waitpid(pid, &st, 0);
	return 0;
}

/* A connection to the holder, started when none answers. -errno when there is none. */
static int holder(bool start)
{
	int s;

	if (!sock_path[0])
		return -ENOENT;
	s = connect_holder(sock_path);
	if (s >= 0 || !start || spawn_holder())
		return s;
	for (int i = 0; i < 100 && s < 0; i++) {
		struct timespec ts = { 0, 10000000 };

		nanosleep(&ts, NULL);
		s = connect_holder(sock_path);
	}
	return s;
}

static const char *ep_text(const struct config_endpoint *ep, char *buf, size_t len)
{
	return config_endpoint_str(ep, buf, len);
}

static size_t take_inherited(const char *name, const char *ep, int *fds, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < n_inherited; i++) {
		if (inherited[i].fd < 0 || strcmp(inherited[i].name, name))
			continue;
		/* Bound elsewhere (the config moved the listener): not ours to serve. */
		struct sockaddr_storage ss = { 0 };
		socklen_t len = sizeof(ss);
		struct config_endpoint got;
		char txt[64];

		getsockname(inherited[i].fd, (struct sockaddr *)&ss, &len);
		sockaddr_to_endpoint(&ss, &got);
		if (n < max && !strcmp(ep_text(&got, txt, sizeof(txt)), ep))
			fds[n++] = inherited[i].fd;
		else
			close(inherited[i].fd);
		inherited[i].fd = -1;
	}
	return n;
}

size_t fdstore_take(const char *name, const struct config_endpoint *ep, int *fds, size_t max)
{
	char want[64], msg[MSG_MAX], got[64];
	int s, n;

	ep_text(ep, want, sizeof(want));
	if (systemd)
		return take_inherited(name, want, fds, max);
	s = holder(false);
	if (s < 0)
		return 0;
	snprintf(msg, sizeof(msg), "GET %s\n", name);
	n = send_fds(s, msg, NULL, 0) ? -1 : recv_fds(s, msg, sizeof(msg), fds, max);
	close(s);
	if (n > 0 && (sscanf(msg, "OK %63s", got) != 1 || strcmp(got, want))) {
		for (int i = 0; i < n; i++) /* stored for another endpoint: forget them */
			close(fds[i]);
		fdstore_release(name);
		n = 0;
	}
	if (n > 0)
		LOG_INFO("mtls", "took over listening sockets", "name=%s endpoint=%s sockets=%d",
			 name, want, n);
	return n > 0 ? (size_t)n : 0;
}

void fdstore_keep(const char *name, const struct config_endpoint *ep, const int *fds, size_t n)
{
	char msg[MSG_MAX], txt[64];
	int s, err;

	if (systemd) {
		snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s\n", name);
		notify(msg, NULL, 0);
		snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s\n", name);
		err = notify(msg, fds, n);
	} else {
		s = holder(true);
		snprintf(msg, sizeof(msg), "PUT %s %s\n", name, ep_text(ep, txt, sizeof(txt)));
		err = s < 0 ? s : send_fds(s, msg, fds, n);
		if (s >= 0)
			close(s);
	}
	if (err)
		LOG_WARN("mtls", "cannot keep the listening sockets across restarts",
			 "name=%s err=%s", name, log_q(strerror(-err)));
}

void fdstore_release(const char *name)
{
	char msg[MSG_MAX];
	int s;

	if (systemd) {
		snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s\n", name);
		notify(msg, NULL, 0);
		return;
	}
	s = holder(false);
	if (s < 0)
		return;
	snprintf(msg, sizeof(msg), "DEL %s\n", name);
	send_fds(s, msg, NULL, 0);
	close(s);
}

int fdstore_shutdown(const char *dir)
{
	char path[sizeof(sock_path)];
	int s;

	snprintf(path, sizeof(path), "%s/fdstore.sock", dir);
	s = connect_holder(path);
	if (s < 0)
		return s;
	send_fds(s, "QUIT\n", NULL, 0);
	close(s);
	return 0;
}

/* --- the holder ---------------------------------------------------------------------------------- */

struct held {
	char name[64], ep[64];
	int fds[FDSTORE_MAX];
	size_t n;
};

static void drop(struct held *h)
{
	for (size_t i = 0; i < h->n; i++)
		close(h->fds[i]);
	h->n = 0;
	h->name[0] = '\0';
}

static struct held *find(struct held *t, const char *name, bool create)
{
	for (size_t i = 0; i < NAMES_MAX; i++)
		if (t[i].name[0] && !strcmp(t[i].name, name))
			return &t[i];
	for (size_t i = 0; create && i < NAMES_MAX; i++)
		if (!t[i].name[0])
			return &t[i];
	return NULL;
}

static bool empty(const struct held *t)
{
	for (size_t i = 0; i < NAMES_MAX; i++)
		if (t[i].name[0])
			return false;
	return true;
}

/* Serves one request; returns false when the holder should exit. */
static bool serve_one(int c, struct held *t)
{
	char msg[MSG_MAX], name[64] = "", ep[64] = "";
	int fds[FDSTORE_MAX], n = recv_fds(c, msg, sizeof(msg), fds, FDSTORE_MAX);
	struct held *h;

	if (n < 0)
		return true;
	sscanf(msg + 4, "%63s %63s", name, ep);
	if (!strncmp(msg, "PUT ", 4) && (h = find(t, name, true))) {
		drop(h);
		snprintf(h->name, sizeof(h->name), "%s", name);
		snprintf(h->ep, sizeof(h->ep), "%s", ep);
		memcpy(h->fds, fds, (size_t)n * sizeof(int));
		h->n = (size_t)n;
		return true;
	}
	for (int i = 0; i < n; i++)
		close(fds[i]);
	if (!strncmp(msg, "GET ", 4)) {
		h = find(t, name, false);
		snprintf(msg, sizeof(msg), h ? "OK %s\n" : "NONE\n", h ? h->ep : "");
		send_fds(c, msg, h ? h->fds : NULL, h ? h->n : 0);
		return true;
	}
	if (!strncmp(msg, "DEL ", 4) && (h = find(t, name, false))) {
		drop(h);
		return !empty(t);
	}
	return strncmp(msg, "QUIT", 4) != 0;
}

/* meshd blocks its signals for its signalfd, and a program exec'd inherits the blocked set: the
 * holder would not end on SIGTERM (an operator's kill, a test's cleanup) but only on SIGKILL. */
static void unblock_signals(void)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

int fdstore_holder_main(const char *dir)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct held table[NAMES_MAX];
	bool run = true;
	int s, c;

	memset(table, 0, sizeof(table));
	unblock_signals();
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	if (snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/fdstore.sock", dir) >=
	    (int)sizeof(sun.sun_path))
		return 1;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	unlink(sun.sun_path); /* only spawned when nobody answered on it */
	if (s < 0 || bind(s, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(s, 16) < 0)
		return 1;
	chmod(sun.sun_path, 0600);
	while (run && (c = accept4(s, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		run = serve_one(c, table);
		close(c);
	}
	unlink(sun.sun_path);
	return 0;
}
