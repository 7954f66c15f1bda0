/* Identity resolution behind identity.h: a cgroup v2 directory's inode number is its cgroup id. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "mtls/identity.h"
#include "mtls/mtls.h"

#define POLL_NS (2ull * 1000000000ull)

struct identity_watch {
	struct evloop *loop;
	identity_apply_fn apply;
	void *ctx;
	char mount[PATH_MAX];
	char **paths; /* absolute */
	uint32_t *hashes;
	uint64_t *ids; /* last resolved, 0 = absent */
	size_t n;
	int fd; /* inotify */
	int64_t timer;
	bool applied;
};

int identity_cgroup2_mount(char *buf, size_t len)
{
	FILE *f = setmntent("/proc/self/mounts", "re");
	struct mntent *e;
	int err = -ENOENT;

	if (!f)
		return -errno;
	while ((e = getmntent(f))) {
		if (!strcmp(e->mnt_type, "cgroup2")) {
			snprintf(buf, len, "%s", e->mnt_dir);
			err = 0;
			break;
		}
	}
	endmntent(f);
	return err;
}

static uint64_t cgroup_id(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? (uint64_t)st.st_ino : 0;
}

/* Resolves every path; applies when anything changed (or never applied). */
static void resolve(struct identity_watch *w)
{
	uint64_t ids[w->n + 1];
	uint32_t hashes[w->n + 1];
	size_t k = 0;
	bool changed = !w->applied;

	for (size_t i = 0; i < w->n; i++) {
		uint64_t id = cgroup_id(w->paths[i]);

		if (id != w->ids[i]) {
			if (w->applied)
				LOG_INFO("mtls",
					 id ? "identity cgroup resolved" : "identity cgroup gone",
					 "cgroup=%s cgroup_id=%llu", log_q(w->paths[i]),
					 (unsigned long long)id);
			w->ids[i] = id;
			changed = true;
		}
		if (id) {
			ids[k] = id;
			hashes[k++] = w->hashes[i];
		}
	}
	if (!changed)
		return;
	if (w->apply(w->ctx, ids, hashes, k))
		LOG_WARN("mtls", "cannot write caller identities to the datapath", "count=%zu", k);
	else
		w->applied = true;
}

static void on_poll(struct evloop *loop, void *arg)
{
	struct identity_watch *w = arg;

	w->timer = evloop_add_timer(loop, POLL_NS, on_poll, w);
	resolve(w);
}

static void on_inotify(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct identity_watch *w = arg;

	while (read(fd, buf, sizeof(buf)) > 0)
		;
	resolve(w);
}

/* Watches the nearest existing ancestor directory of `path` for entries coming and going. */
static void watch_parent(struct identity_watch *w, const char *path)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s", path);
	do {
		snprintf(dir, sizeof(dir), "%s", dirname(dir));
	} while (strlen(dir) > strlen(w->mount) && access(dir, F_OK));
	inotify_add_watch(w->fd, dir, IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM);
}

static int fill(struct identity_watch *w, const struct mesh_config *cfg)
{
	w->paths = calloc(cfg->n_identities + 1, sizeof(*w->paths));
	w->hashes = calloc(cfg->n_identities + 1, sizeof(*w->hashes));
	w->ids = calloc(cfg->n_identities + 1, sizeof(*w->ids));
	if (!w->paths || !w->hashes || !w->ids)
		return -ENOMEM;
	for (; w->n < cfg->n_identities; w->n++) {
		const struct config_identity *id = &cfg->identities[w->n];

		if (asprintf(&w->paths[w->n], "%s%s", w->mount, id->cgroup) < 0) {
			w->paths[w->n] = NULL;
			return -ENOMEM;
		}
		w->hashes[w->n] = mtls_identity_hash(id->service);
	}
	return 0;
}

struct identity_watch *identity_watch_new(struct evloop *loop, const struct mesh_config *cfg,
					  identity_apply_fn apply, void *ctx)
{
	struct identity_watch *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return NULL;
	w->loop = loop;
	w->apply = apply;
	w->ctx = ctx;
	w->fd = -1;
	err = identity_cgroup2_mount(w->mount, sizeof(w->mount));
	if (!err)
		err = fill(w, cfg);
	if (err) {
		identity_watch_free(w);
		errno = -err;
		return NULL;
	}
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	for (size_t i = 0; w->fd >= 0 && i < w->n; i++)
		watch_parent(w, w->paths[i]);
	if (w->fd >= 0 && evloop_add_fd(loop, w->fd, EPOLLIN, on_inotify, w)) {
		close(w->fd);
		w->fd = -1;
	}
	resolve(w);
	for (size_t i = 0; i < w->n; i++)
		if (!w->ids[i])
			LOG_WARN("mtls", "identity cgroup does not exist yet; watching for it",
				 "cgroup=%s", log_q(w->paths[i]));
	w->timer = evloop_add_timer(loop, POLL_NS, on_poll, w);
	return w;
}

void identity_watch_reapply(struct identity_watch *w)
{
	if (!w)
		return;
	w->applied = false;
	resolve(w);
}

void identity_watch_free(struct identity_watch *w)
{
	if (!w)
		return;
	evloop_del_timer(w->loop, w->timer);
	if (w->fd >= 0) {
		evloop_del_fd(w->loop, w->fd);
		close(w->fd);
	}
	for (size_t i = 0; w->paths && i < w->n; i++)
		free(w->paths[i]);
	free(w->paths);
	free(w->hashes);
	free(w->ids);
	free(w);
}
