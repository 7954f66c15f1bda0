/* `meshd [--config FILE]` and `meshd --cleanup`: builds the daemon context, starts the components
 * through the lifecycle engine, turns signals into loop events (SIGHUP reload, SIGTERM/SIGINT
 * graceful stop) via signalfd, speaks systemd's notify protocol (ready, reloading, stopping,
 * watchdog) and stops everything in reverse. The datapath stays pinned on every exit except an
 * unwound first start and --cleanup. Main thread = loop thread. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "install/uninstall.h"
#include "meshd/commands.h"
#include "meshd/components.h"
#include "meshd/lifecycle.h"
#include "meshd/meshd.h"
#include "meshd/sdnotify.h"
#include "meshd/upgrade.h"

#define BACKOFF_BASE_NS (1000ull * 1000000ull)
#define BACKOFF_MAX_NS (30000ull * 1000000ull)

static void on_signal(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	struct signalfd_siginfo si;
	struct meshd *m = arg;

	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGHUP && m->upgrade) {
			LOG_WARN("config", "reload ignored: an upgrade is under way", NULL);
			continue;
		}
		if (si.ssi_signo == SIGHUP) {
			meshd_reload_async(m);
			continue;
		}
		if (si.ssi_signo == SIGUSR2) {
			meshd_upgrade(m);
			continue;
		}
		LOG_INFO("meshd", "stopping", "signal=%s", log_q(strsignal((int)si.ssi_signo)));
		evloop_stop(loop);
	}
}

/* Blocks the handled signals (before any thread exists, so every thread inherits the mask) and
 * returns a signalfd for them, or -errno. */
static int signals_setup(void)
{
	sigset_t set;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR2);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return -errno;
	fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Pings systemd's watchdog at half its period, from the loop: a stuck loop stops the pings. */
static void on_watchdog(struct evloop *loop, void *arg)
{
	uint64_t period = sdnotify_watchdog_ns();

	sdnotify("WATCHDOG=1");
	if (period && evloop_add_timer(loop, period / 2, on_watchdog, arg) < 0)
		LOG_WARN("meshd", "cannot re-arm the systemd watchdog timer", NULL);
}

/* Test builds fail a component's reload on request (faults.c); meshd's returns 0. */
static int reload_fault(const char *component)
{
	char point[64];

	snprintf(point, sizeof(point), "reload.%s", component);
	return meshd_fault(point);
}

static int start_components(struct meshd *m)
{
	static const struct lifecycle_opts opts = {
		.backoff_base_ns = BACKOFF_BASE_NS,
		.backoff_max_ns = BACKOFF_MAX_NS,
		.fault = reload_fault,
	};
	const struct meshd_component *tab;
	const char *failed = "lifecycle";
	size_t n;
	int err;

	tab = meshd_components(&n);
	m->lifecycle = lifecycle_new(m, tab, n, &opts);
	if (!m->lifecycle) {
		err = -errno;
		goto err_report;
	}
	err = lifecycle_start(m->lifecycle, &failed);
	if (!err)
		return 0;
	lifecycle_free(m->lifecycle);
	m->lifecycle = NULL;
err_report:
	fprintf(stderr, "meshd: component %s failed to start: %s\n", failed, strerror(-err));
	return err;
}

/* Runs the loop until SIGTERM/SIGINT; returns 0, or -errno when epoll itself failed. */
static int serve(struct meshd *m)
{
	int err;

	sdnotify("READY=1\nSTATUS=running, config generation %llu\nMAINPID=%ld",
		 (unsigned long long)m->cfg->generation, (long)getpid());
	upgrade_notify_ready();
	if (sdnotify_watchdog_ns())
		on_watchdog(m->loop, m);
	/* Start-up parsing leaves megabytes of freed heap behind; idle RSS should not carry it. */
	malloc_trim(0);
	LOG_INFO("meshd", "meshd running", "version=%s pid=%ld config=%s generation=%llu",
		 MESH_VERSION, (long)getpid(), log_q(m->config_path),
		 (unsigned long long)m->cfg->generation);
	err = evloop_run(m->loop);
	if (err)
		LOG_ERR("meshd", "event loop failed", "err=%s", log_q(strerror(-err)));
	sdnotify("STOPPING=1");
	return err;
}

int cmd_run(const char *config_path)
{
	struct meshd m = { .config_path = config_path, .trace_lock = PTHREAD_MUTEX_INITIALIZER };
	int sigfd, err;

	sigfd = signals_setup();
	if (sigfd < 0) {
		fprintf(stderr, "meshd: cannot set up signals: %s\n", strerror(-sigfd));
		return 1;
	}
	m.loop = evloop_new();
	if (!m.loop) {
		fprintf(stderr, "meshd: cannot create the event loop: %s\n", strerror(errno));
		goto err_sigfd;
	}
	m.started_at_ns = evloop_now_ns();
	err = evloop_add_fd(m.loop, sigfd, EPOLLIN, on_signal, &m);
	if (err || start_components(&m))
		goto err_loop;
	err = serve(&m);
	meshd_reload_shutdown(&m);
	lifecycle_stop(m.lifecycle);
	upgrade_finish(&m);
	lifecycle_free(m.lifecycle);
	LOG_INFO("meshd", "meshd stopped; the datapath stays attached", NULL);
	evloop_free(m.loop);
	close(sigfd);
	return err ? 1 : 0;

err_loop:
	evloop_free(m.loop);
err_sigfd:
	close(sigfd);
	return 1;
}

/* `meshd --cleanup`: detaches and unpins the datapath and removes the admin socket named by the
 * config (defaults when no file is given). Exits 0 when nothing of meshd's is left. */
int cmd_cleanup(const char *config_path)
{
	struct config_errors errs = { 0 };
	struct mesh_config *cfg = config_load(config_path, NULL, &errs);
	int rc;

	if (!cfg) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msgs[i]);
		config_errors_free(&errs);
		fprintf(stderr, "meshd: cannot tell what to clean up without a valid config\n");
		return 1;
	}
	config_errors_free(&errs);
	rc = uninstall_host(cfg, "meshd", stdout, stderr);
	config_free(cfg);
	return rc ? 1 : 0;
}
