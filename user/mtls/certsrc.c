/* Source table and the pieces every source shares (certsrc.h): the file watch (inotify on the
 * watched files' directories, debounced, plus a poll) and content digests. Main loop. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "mtls/certsrc.h"

#define DEBOUNCE_NS (200ull * 1000000ull)
#define POLL_NS (30ull * 1000000000ull)

extern const struct certsrc_ops certsrc_files_ops;
extern const struct certsrc_ops certsrc_builtin_ops;
extern const struct certsrc_ops certsrc_consul_ops;

const struct certsrc_ops *certsrc_find(enum config_cert_source kind)
{
	switch (kind) {
	case CONFIG_CERT_FILES:
		return &certsrc_files_ops;
	case CONFIG_CERT_BUILTIN_CA:
		return &certsrc_builtin_ops;
	case CONFIG_CERT_CONSUL:
		return &certsrc_consul_ops;
	default:
		return NULL;
	}
}

struct certsrc *certsrc_open(struct evloop *loop, struct certs *store,
			     const struct certsrc_cfg *cfg, char *why, size_t wlen)
{
	const struct certsrc_ops *ops = certsrc_find(cfg->mtls->cert_source);
	struct certsrc *src;

	if (!ops) {
		snprintf(why, wlen, "certificate source not supported by this build");
		errno = ENOTSUP;
		return NULL;
	}
	src = ops->open(loop, store, cfg, why, wlen);
	if (src)
		src->ops = ops; /* every source struct starts with struct certsrc */
	return src;
}

void certsrc_close(struct certsrc *src)
{
	if (src)
		src->ops->close(src);
}

int64_t certsrc_now(void)
{
	return (int64_t)time(NULL);
}

int certsrc_file_digest(const char *path, unsigned char out[32])
{
	unsigned int n = 32;
	size_t len;
	char *buf = cert_read_file(path, &len);
	int err = 0;

	if (!buf)
		return -errno;
	if (EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) != 1)
		err = -EINVAL;
	free(buf);
	return err;
}

/* --- file watch -------------------------------------------------------------------------------- */

struct filewatch {
	struct evloop *loop;
	int fd; /* inotify, -1 if unavailable */
	int64_t debounce, poll;
	void (*cb)(void *arg);
	void *arg;
};

static void fire(struct evloop *loop, void *arg)
{
	struct filewatch *w = arg;

	w->debounce = 0;
	w->cb(w->arg);
}

static void on_poll(struct evloop *loop, void *arg)
{
	struct filewatch *w = arg;

	w->poll = evloop_add_timer(loop, POLL_NS, on_poll, w);
	w->cb(w->arg);
}

static void on_inotify(struct evloop *loop, int fd, uint32_t events, void *arg)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct filewatch *w = arg;
	bool any = false;

	while (read(fd, buf, sizeof(buf)) > 0)
		any = true;
	if (!any || w->debounce)
		return;
	w->debounce = evloop_add_timer(loop, DEBOUNCE_NS, fire, w);
	if (w->debounce < 0)
		w->debounce = 0;
}

#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB)

static void watch_dir_of(struct filewatch *w, const char *path)
{
	char copy[PATH_MAX];

	snprintf(copy, sizeof(copy), "%s", path);
	if (inotify_add_watch(w->fd, dirname(copy), WATCH_MASK) < 0)
		LOG_WARN("mtls", "cannot watch a certificate directory; polling it",
			 "path=%s err=%s", log_q(path), log_q(strerror(errno)));
}

int filewatch_add_dir(struct filewatch *w, const char *dir)
{
	if (w->fd < 0)
		return -ENOTSUP;
	return inotify_add_watch(w->fd, dir, WATCH_MASK) < 0 ? -errno : 0;
}

struct filewatch *filewatch_new(struct evloop *loop, const char *const *paths, size_t n,
				void (*cb)(void *arg), void *arg)
{
	struct filewatch *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->loop = loop;
	w->cb = cb;
	w->arg = arg;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	for (size_t i = 0; w->fd >= 0 && i < n; i++)
		if (paths[i])
			watch_dir_of(w, paths[i]);
	if (w->fd >= 0 && evloop_add_fd(loop, w->fd, EPOLLIN, on_inotify, w) < 0) {
		close(w->fd);
		w->fd = -1;
	}
	w->poll = evloop_add_timer(loop, POLL_NS, on_poll, w);
	return w;
}

void filewatch_free(struct filewatch *w)
{
	if (!w)
		return;
	if (w->fd >= 0) {
		evloop_del_fd(w->loop, w->fd);
		close(w->fd);
	}
	evloop_del_timer(w->loop, w->debounce);
	evloop_del_timer(w->loop, w->poll);
	free(w);
}
