/* Graceful restart and upgrade (SIGUSR2): the running meshd starts a new one from the same
 * binary path (a package upgrade has put the new binary there) and hands over. The old process
 * first releases its admin socket and metrics port, starts the new process, and waits for it to
 * say it is ready (a pipe named by MESHD_UPGRADE_FD); the new one adopts the pinned datapath and
 * takes the mTLS listening sockets from the fd store, so new connections go to it. The old one
 * then stops accepting, sends GOAWAY on its inbound tunnels and keeps serving its live proxied
 * connections until they end (or mtls.drain_timeout), then exits. If the new process dies before
 * it is ready, the old one takes its admin socket and metrics port back and carries on. Under
 * systemd the new process reports MAINPID (the unit needs NotifyAccess=all). Loop thread. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "meshd/lifecycle.h"
#include "meshd/meshd.h"
#include "meshd/upgrade.h"
#include "mtls/mtls.h"

struct upgrade {
	struct meshd *m;
	pid_t child;
	int fd; /* read end of the readiness pipe */
	struct mtls *draining;
	struct mtls_glue *glue;
};

static char self_exe[4096];
static char **saved_argv;

void upgrade_init(char **argv)
{
	ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);

	self_exe[n > 0 ? n : 0] = '\0';
	saved_argv = argv;
}

const char *upgrade_self_exe(void)
{
	return self_exe;
}

void upgrade_notify_ready(void)
{
	const char *v = getenv("MESHD_UPGRADE_FD");
	int fd = v ? atoi(v) : -1;

	if (fd < 3)
		return;
	if (write(fd, "ready\n", 6) != 6)
		LOG_WARN("meshd", "cannot tell the previous meshd we are ready", NULL);
	close(fd);
	unsetenv("MESHD_UPGRADE_FD");
}

static void drained(void *arg)
{
	struct upgrade *u = arg;

	LOG_INFO("meshd", "previous meshd drained; exiting", "pid=%ld", (long)getpid());
	evloop_stop(u->m->loop);
}

/* The new meshd runs: stop everything here but the live proxied connections. */
static void hand_over(struct upgrade *u)
{
	struct meshd *m = u->m;
	uint64_t timeout = m->cfg->mtls.drain_timeout_ns; /* the config goes with the stop */

	LOG_INFO("meshd", "new meshd ready; draining", "new_pid=%ld", (long)u->child);
	meshd_reload_shutdown(m); /* a reload in flight ends before the components stop */
	u->draining = m->mtls;
	u->glue = m->mtls_glue;
	m->mtls = NULL;
	m->mtls_glue = NULL;
	lifecycle_stop(m->lifecycle); /* the datapath stays pinned and attached */
	if (!u->draining) {
		evloop_stop(m->loop);
		return;
	}
	mtls_drain(u->draining, timeout, drained, u);
}

static void give_back(struct upgrade *u, const char *why)
{
	struct meshd *m = u->m;
	int st;

	LOG_ERR("meshd", "upgrade failed; this meshd carries on", "reason=%s", log_q(why));
	if (u->child > 0)
		waitpid(u->child, &st, WNOHANG);
	if (metrics_start(m) || admin_start(m))
		LOG_ERR("meshd", "cannot take the admin socket or metrics port back", NULL);
	m->upgrade = NULL;
	free(u);
}

static void on_pipe(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct upgrade *u = arg;
	char buf[16];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);

	if (n < 0 && errno == EAGAIN)
		return;
	evloop_del_fd(loop, fd);
	close(fd);
	u->fd = -1;
	if (n > 0 && !strncmp(buf, "ready", 5))
		hand_over(u);
	else
		give_back(u, "the new meshd exited before it was ready");
}

/* Starts the new process with the readiness pipe's write end as MESHD_UPGRADE_FD. */
static pid_t spawn(int wfd)
{
	char v[16];
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	snprintf(v, sizeof(v), "%d", wfd);
	setenv("MESHD_UPGRADE_FD", v, 1);
	execv(self_exe, saved_argv);
	_exit(127);
}

int meshd_upgrade(struct meshd *m)
{
	struct upgrade *u;
	int p[2];

	if (m->upgrade) {
		LOG_WARN("meshd", "an upgrade is already under way", NULL);
		return -EALREADY;
	}
	if (!self_exe[0] || !saved_argv || pipe2(p, O_CLOEXEC) < 0)
		return -errno ? -errno : -EINVAL;
	u = calloc(1, sizeof(*u));
	if (!u || fcntl(p[1], F_SETFD, 0) < 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) < 0 ||
	    evloop_add_fd(m->loop, p[0], EPOLLIN, on_pipe, u)) {
		free(u);
		close(p[0]);
		close(p[1]);
		return -ENOMEM;
	}
	u->m = m;
	u->fd = p[0];
	m->upgrade = u;
	LOG_INFO("meshd", "upgrade: starting a new meshd", "binary=%s", log_q(self_exe));
	/* The new process binds these itself. */
	admin_stop(m);
	metrics_stop(m);
	u->child = spawn(p[1]);
	close(p[1]);
	if (u->child < 0) { /* EOF on the pipe then gives everything back */
		LOG_ERR("meshd", "cannot start the new meshd", "err=%s", log_q(strerror(errno)));
	}
	return 0;
}

void upgrade_finish(struct meshd *m)
{
	struct upgrade *u = m->upgrade;

	if (!u)
		return;
	if (u->fd >= 0) {
		evloop_del_fd(m->loop, u->fd);
		close(u->fd);
	}
	m->mtls = u->draining;
	m->mtls_glue = u->glue;
	mtls_comp_stop(m);
	m->upgrade = NULL;
	free(u);
}
