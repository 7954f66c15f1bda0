/* Hot reload: load -> validate -> diff -> apply to every running component -> swap. The running
 * config is replaced only when every component accepted the new one; otherwise nothing changes
 * and every problem is logged. Also the optional inotify watch that triggers a reload when the
 * config file changes (debounced). Loop thread only: SIGHUP, `meshctl reload` and the watch all
 * arrive there. */
#include <errno.h>
#include <malloc.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "common/log.h"
#include "meshd/lifecycle.h"
#include "meshd/reload.h"
#include "meshd/sdnotify.h"

#define WATCH_DEBOUNCE_NS (250ull * 1000000ull)

struct config_watch {
	int fd;		  /* inotify */
	char *dir, *base; /* the config file's directory and name */
	int64_t timer;	  /* pending debounced reload, 0 when none */
	struct meshd *m;
};

/* Loads the file again; on failure logs every problem and returns NULL. */
static struct mesh_config *load_next(struct meshd *m)
{
	struct config_errors errs = { 0 };
	struct mesh_config *next = config_load(m->config_path, NULL, &errs);

	if (!next) {
		for (size_t i = 0; i < errs.n; i++)
			LOG_ERR("config", "invalid configuration", "error=%s", log_q(errs.msgs[i]));
		if (!errs.n)
			LOG_ERR("config", "cannot load configuration", "path=%s err=%s",
				log_q(m->config_path), log_q(strerror(errno)));
	}
	config_errors_free(&errs);
	return next;
}

/* One audit line per changed key; config_diff() has already redacted secrets. */
static void log_changes(const struct config_diff *diff)
{
	for (size_t i = 0; i < diff->n; i++) {
		const struct config_change *c = &diff->changes[i];

		LOG_INFO("config", "config changed", "path=%s old=%s new=%s", log_q(c->path),
			 log_q(c->old_value), log_q(c->new_value));
	}
}

/* Applies `next` to the components and swaps it in; takes ownership of `next`. */
static int apply_next(struct meshd *m, struct mesh_config *next)
{
	struct config_diff diff = { 0 };
	struct mesh_config *old = m->cfg;
	int err = config_diff(old, next, &diff);

	LOG_DEBUG("config", "new configuration loaded", "generation=%llu changes=%zu",
		  (unsigned long long)next->generation, diff.n);
	if (err) {
		LOG_ERR("config", "cannot diff configurations", "err=%s", log_q(strerror(-err)));
		goto out;
	}
	if (!diff.n && !discovery_files_changed(m)) {
		LOG_INFO("config", "configuration unchanged", "generation=%llu",
			 (unsigned long long)old->generation);
		goto out;
	}
	if (!diff.n)
		LOG_INFO("config", "secret file changed", "key=discovery.consul.token_file");
	err = lifecycle_reload(m->lifecycle, old, next, &diff);
	if (err)
		goto out;
	log_changes(&diff);
	m->cfg = next;
	next = old;
	m->reloaded_at_ns = evloop_now_ns();
	LOG_INFO("config", "configuration reloaded", "generation=%llu changes=%zu",
		 (unsigned long long)m->cfg->generation, diff.n);
out:
	config_diff_free(&diff);
	config_free(next);
	return err;
}

int meshd_reload(struct meshd *m)
{
	struct mesh_config *next;
	int err;

	sdnotify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(evloop_now_ns() / 1000));
	LOG_INFO("config", "reloading configuration", "path=%s", log_q(m->config_path));
	next = load_next(m);
	err = next ? apply_next(m, next) : -EINVAL;
	if (err) {
		m->reloads[MESHD_RELOAD_ERROR]++;
		LOG_ERR("config", "reload failed; the running configuration stays",
			"generation=%llu", (unsigned long long)m->cfg->generation);
	} else {
		m->reloads[MESHD_RELOAD_OK]++;
	}
	/* A load frees a whole config's worth of small blocks: hand them back to the kernel. */
	malloc_trim(0);
	sdnotify("READY=1\nSTATUS=running, config generation %llu",
		 (unsigned long long)m->cfg->generation);
	return err;
}

/* --- config file watch ------------------------------------------------------------------------ */

static void on_watch_timer(struct evloop *loop, void *arg)
{
	struct config_watch *w = arg;

	w->timer = 0;
	LOG_INFO("config", "config file changed", "path=%s", log_q(w->m->config_path));
	meshd_reload(w->m);
}

/* True when the batch of events in `buf` touches the watched file. */
static bool touches_file(const struct config_watch *w, const char *buf, ssize_t len)
{
	const struct inotify_event *ev;

	for (const char *p = buf; p < buf + len; p += sizeof(*ev) + ev->len) {
		ev = (const struct inotify_event *)p;
		if (ev->len && strcmp(ev->name, w->base) == 0)
			return true;
	}
	return false;
}

static void on_watch_fd(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct config_watch *w = arg;
	bool hit = false;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		hit |= touches_file(w, buf, n);
	if (!hit)
		return;
	/* Editors write in bursts (truncate, write, rename): reload once it settles. */
	if (w->timer)
		evloop_del_timer(loop, w->timer);
	w->timer = evloop_add_timer(loop, WATCH_DEBOUNCE_NS, on_watch_timer, w);
	if (w->timer < 0)
		w->timer = 0;
}

static void watch_free(struct config_watch *w)
{
	if (w->fd >= 0)
		close(w->fd);
	free(w->dir);
	free(w->base);
	free(w);
}

/* Splits m->config_path into directory and file name. */
static int watch_paths(struct config_watch *w, const char *path)
{
	char *a = strdup(path), *b = strdup(path);

	if (a && b) {
		w->dir = strdup(dirname(a));
		w->base = strdup(basename(b));
	}
	free(a);
	free(b);
	return w->dir && w->base ? 0 : -ENOMEM;
}

int config_watch_start(struct meshd *m)
{
	uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE;
	struct config_watch *w;
	int err;

	if (m->watch || !m->config_path)
		return 0;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->m = m;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	err = w->fd < 0 ? -errno : watch_paths(w, m->config_path);
	if (!err && inotify_add_watch(w->fd, w->dir, mask) < 0)
		err = -errno;
	if (!err)
		err = evloop_add_fd(m->loop, w->fd, EPOLLIN, on_watch_fd, w);
	if (err) {
		LOG_ERR("config", "cannot watch the config file", "path=%s err=%s",
			log_q(m->config_path), log_q(strerror(-err)));
		watch_free(w);
		return err;
	}
	m->watch = w;
	LOG_INFO("config", "watching the config file", "path=%s", log_q(m->config_path));
	return 0;
}

void config_watch_stop(struct meshd *m)
{
	struct config_watch *w = m->watch;

	if (!w)
		return;
	if (w->timer)
		evloop_del_timer(m->loop, w->timer);
	evloop_del_fd(m->loop, w->fd);
	watch_free(w);
	m->watch = NULL;
}
