/* Hot reload: load -> validate -> plan -> apply to every component -> swap. The file is loaded,
 * validated and planned (config_plan: what changed, which changed keys need a restart) on a
 * worker thread, so a reload of 16,384 services costs the loop only what its changes cost; the
 * components then apply it as one transaction (lifecycle.c), in steps when it is large. The
 * running config is replaced only when every component took the new one; otherwise each is put
 * back on the running one, the generation stays and the log and
 * meshd_config_reloads_total{result="error"} say what failed. One audit line per changed setting
 * and one per added, removed or changed service. Also the optional inotify watch that triggers a
 * reload when the config file changes (debounced). Loop thread, except load_main(). */
#include <errno.h>
#include <malloc.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "common/log.h"
#include "discovery/discovery.h"
#include "meshd/config_kv.h"
#include "meshd/lifecycle.h"
#include "meshd/reload.h"
#include "meshd/sdnotify.h"

#define WATCH_DEBOUNCE_NS (250ull * 1000000ull)
#define AUDIT_BUDGET_NS 2000000ull

struct config_watch {
	int fd;		  /* inotify */
	char *dir, *base; /* the config file's directory and name */
	int64_t timer;	  /* pending debounced reload, 0 when none */
	struct meshd *m;
};

/* One audit line, formatted on the worker thread. */
struct audit {
	const char *msg;
	char *kv;
};

/* One reload: what the worker loaded and planned, then the apply. */
struct job {
	struct meshd *m;
	uint64_t seq;
	const struct mesh_config *old; /* the running config (stays until this job ends) */
	struct mesh_config *next;      /* NULL when the load failed */
	char *kv;		       /* the Consul KV document loaded over the file, or NULL */
	size_t kv_len;
	bool from_kv; /* started by a new KV value (else by the file, a signal, meshctl) */
	struct config_errors errs;
	int load_errno;
	struct config_plan plan;
	bool planned;
	struct audit *audit;
	size_t n_audit;
};

struct reloader {
	struct meshd *m;
	uint64_t seq;	  /* of the job in flight */
	struct job *job;  /* in flight: loading (worker) or applying (lifecycle) */
	pthread_t worker; /* valid while `loading` */
	bool loading;	  /* the worker runs; its result is posted */
	bool again;	  /* a reload was asked for while one was in flight */
	int result;	  /* of the last finished reload */
	char *kv_next;	  /* a KV value waiting for the next reload */
	size_t kv_next_len;
	bool kv_waiting;     /* kv_next is set (NULL there = the file alone) */
	struct audit *audit; /* lines still to log after a commit, from `audit_at` */
	size_t n_audit, audit_at;
	int64_t audit_timer;
};

static struct reloader *reloader(struct meshd *m)
{
	if (!m->reloader && (m->reloader = calloc(1, sizeof(*m->reloader))))
		m->reloader->m = m;
	return m->reloader;
}

/* --- the job: load, plan, audit lines (worker thread or loop) -------------------------------- */

static void audit_add(struct job *j, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void audit_add(struct job *j, const char *msg, const char *fmt, ...)
{
	struct audit *a = realloc(j->audit, (j->n_audit + 1) * sizeof(*a));
	va_list ap;

	if (!a)
		return;
	j->audit = a;
	va_start(ap, fmt);
	if (vasprintf(&a[j->n_audit].kv, fmt, ap) >= 0)
		a[j->n_audit++].msg = msg;
	va_end(ap);
}

/* One line per changed setting (config_diff has redacted secrets), one per changed service. */
static void audit_plan(struct job *j)
{
	const struct config_plan *p = &j->plan;
	char vip[64];
	size_t i;

	for (i = 0; i < p->settings.n; i++) {
		const struct config_change *c = &p->settings.changes[i];

		audit_add(j, "config changed", "path=%s old=%s new=%s", log_q(c->path),
			  log_q(c->old_value), log_q(c->new_value));
	}
	for (i = 0; i < p->n_services; i++) {
		const struct config_service_change *c = &p->services[i];

		if (!c->old)
			audit_add(j, "service added", "service=%s vip=%s backends=%zu",
				  log_q(c->name),
				  config_endpoint_str(&c->new->vip, vip, sizeof(vip)),
				  c->new->n_backends);
		else if (!c->new)
			audit_add(j, "service removed", "service=%s", log_q(c->name));
		else
			audit_add(j, "service changed", "service=%s keys=%s", log_q(c->name),
				  log_q(c->keys));
	}
}

static void job_load(struct job *j)
{
	j->next = config_load_kv(j->m->config_path, j->kv, j->kv_len, NULL, &j->errs);
	j->load_errno = errno;
	if (!j->next)
		return;
	j->planned = config_plan(j->old, j->next, &j->plan) == 0;
	if (j->planned)
		audit_plan(j);
}

static void audit_free(struct audit *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(a[i].kv);
	free(a);
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	config_errors_free(&j->errs);
	if (j->planned)
		config_plan_free(&j->plan);
	config_free(j->next);
	audit_free(j->audit, j->n_audit);
	free(j->kv);
	free(j);
}

/* --- logging what happened --------------------------------------------------------------------- */

static void on_audit_timer(struct evloop *loop, void *arg)
{
	struct reloader *r = arg;
	uint64_t t0 = evloop_now_ns();

	r->audit_timer = 0;
	while (r->audit_at < r->n_audit && evloop_now_ns() - t0 < AUDIT_BUDGET_NS) {
		const struct audit *a = &r->audit[r->audit_at++];

		LOG_INFO("config", a->msg, "%s", a->kv);
	}
	if (r->audit_at < r->n_audit) {
		r->audit_timer = evloop_add_timer(loop, 0, on_audit_timer, r);
		if (r->audit_timer > 0)
			return;
		r->audit_timer = 0;
	}
	audit_free(r->audit, r->n_audit);
	r->audit = NULL;
	r->n_audit = r->audit_at = 0;
}

/* Logs the job's audit lines, a budget's worth per loop iteration (16,384 changed services are
 * 16,384 lines), after any lines of an earlier reload still waiting. */
static void audit_emit(struct reloader *r, struct job *j)
{
	struct audit *a = realloc(r->audit, (r->n_audit + j->n_audit + 1) * sizeof(*a));

	if (!a)
		return;
	if (j->n_audit) /* none when only a secret file changed */
		memcpy(a + r->n_audit, j->audit, j->n_audit * sizeof(*a));
	r->audit = a;
	r->n_audit += j->n_audit;
	free(j->audit);
	j->audit = NULL;
	j->n_audit = 0;
	if (!r->audit_timer)
		on_audit_timer(r->m->loop, r);
}

static void log_load_errors(struct job *j)
{
	for (size_t i = 0; i < j->errs.n; i++)
		LOG_ERR("config", "invalid configuration", "error=%s", log_q(j->errs.msgs[i]));
	if (!j->errs.n)
		LOG_ERR("config", "cannot load configuration", "path=%s err=%s",
			log_q(j->m->config_path), log_q(strerror(j->load_errno)));
}

/* A changed key that only a restart applies (declared in the config table). */
static int check_restart(const struct job *j)
{
	const struct config_plan *p = &j->plan;

	char msg[128];

	for (size_t i = 0; i < p->n_restart && i < sizeof(p->restart) / sizeof(p->restart[0]);
	     i++) {
		snprintf(msg, sizeof(msg), "%s cannot change on reload; restart meshd to apply it",
			 p->restart[i]);
		LOG_ERR("config", msg, "key=%s", log_q(p->restart[i]));
	}
	return p->n_restart ? -EINVAL : 0;
}

/* --- the pipeline (loop thread) ---------------------------------------------------------------- */

static void reload_start(struct reloader *r);

/* What started job `j`, for the log. */
static const char *job_source(const struct job *j)
{
	return j && j->from_kv ? "consul_kv" : "file";
}

/* The job's KV document becomes the running one (a commit, or a value that changes nothing). */
static void adopt_kv(struct meshd *m, struct job *j)
{
	if (!j->from_kv)
		return;
	free(m->kv_doc);
	m->kv_doc = j->kv;
	m->kv_len = j->kv_len;
	j->kv = NULL;
	config_kv_applied(m);
}

static void finish(struct reloader *r, int err)
{
	struct meshd *m = r->m;
	const char *source = job_source(r->job);

	job_free(r->job);
	r->job = NULL;
	r->result = err;
	if (err) {
		m->reloads[MESHD_RELOAD_ERROR]++;
		LOG_ERR("config", "reload failed; the running configuration stays",
			"generation=%llu source=%s", (unsigned long long)m->cfg->generation,
			source);
	} else {
		m->reloads[MESHD_RELOAD_OK]++;
	}
	/* A load frees a whole config's worth of small blocks: hand them back to the kernel. */
	malloc_trim(0);
	sdnotify("READY=1\nSTATUS=running, config generation %llu",
		 (unsigned long long)m->cfg->generation);
	if (r->again) {
		r->again = false;
		reload_start(r);
	}
}

static void *free_main(void *arg)
{
	config_free(arg);
	return NULL;
}

/* A config of 16,384 services is ~100,000 blocks: freed by a short-lived thread, not the loop. */
static void free_off_loop(struct mesh_config *cfg)
{
	pthread_attr_t a;
	pthread_t t;
	bool started;

	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	started = pthread_create(&t, &a, free_main, cfg) == 0;
	pthread_attr_destroy(&a);
	if (!started)
		config_free(cfg);
}

static void on_applied(void *arg, int err, const char *failed)
{
	struct reloader *r = arg;
	struct job *j = r->job;
	struct meshd *m = r->m;

	if (err) {
		LOG_ERR("config",
			"reload not applied; every component is back on the running config",
			"component=%s err=%s", log_q(failed ? failed : "?"), log_q(strerror(-err)));
		finish(r, err);
		return;
	}
	audit_emit(r, j);
	adopt_kv(m, j);
	free_off_loop(m->cfg);
	m->cfg = j->next;
	j->next = NULL;
	m->reloaded_at_ns = evloop_now_ns();
	LOG_INFO("config", "configuration reloaded", "generation=%llu changes=%zu",
		 (unsigned long long)m->cfg->generation, config_plan_changes(&j->plan));
	finish(r, 0);
}

/* The loaded job goes on to the components, or ends here. */
static void job_loaded(struct reloader *r)
{
	struct job *j = r->job;
	struct meshd *m = r->m;
	int err;

	if (!j->next) {
		log_load_errors(j);
		finish(r, -EINVAL);
		return;
	}
	if (!j->planned) {
		LOG_ERR("config", "cannot plan the reload", "err=%s", log_q(strerror(ENOMEM)));
		finish(r, -ENOMEM);
		return;
	}
	LOG_DEBUG("config", "new configuration loaded", "generation=%llu changes=%zu",
		  (unsigned long long)j->next->generation, config_plan_changes(&j->plan));
	err = check_restart(j);
	if (err) {
		finish(r, err);
		return;
	}
	if (!config_plan_changes(&j->plan) && !discovery_files_changed(m->discovery, m->cfg)) {
		LOG_INFO("config", "configuration unchanged", "generation=%llu source=%s",
			 (unsigned long long)m->cfg->generation, job_source(j));
		adopt_kv(m, j);
		finish(r, 0);
		return;
	}
	if (!config_plan_changes(&j->plan))
		LOG_INFO("config", "secret file changed", "key=discovery.consul.token_file");
	err = lifecycle_reload_start(m->lifecycle, m->cfg, j->next, &j->plan, on_applied, r);
	if (err)
		finish(r, err);
}

/* What the worker posts: which job finished loading (the job itself may be gone by then). */
struct loaded {
	struct meshd *m;
	uint64_t seq;
};

static void on_loaded(void *arg)
{
	struct loaded *l = arg;
	struct reloader *r = l->m->reloader;
	bool mine = r && r->loading && r->seq == l->seq;

	free(l);
	if (!mine)
		return; /* a synchronous reload collected it already */
	pthread_join(r->worker, NULL);
	r->loading = false;
	job_loaded(r);
}

static void *load_main(void *arg)
{
	struct job *j = arg;
	struct loaded *l = malloc(sizeof(*l));
	struct meshd *m = j->m;

	job_load(j);
	if (l) { /* `j` is not touched after this: the loop may free it as soon as it sees l */
		l->m = m;
		l->seq = j->seq;
	}
	if (!l || evloop_post(m->loop, on_loaded, l)) {
		free(l);
		LOG_ERR("config",
			"cannot hand the loaded configuration to the loop; a synchronous "
			"reload or the next signal collects it",
			NULL);
	}
	return NULL;
}

/* A job loads the file with the KV value waiting, else with the running KV document. */
static int job_take_kv(struct reloader *r, struct job *j)
{
	const struct meshd *m = r->m;

	if (r->kv_waiting) {
		j->kv = r->kv_next;
		j->kv_len = r->kv_next_len;
		j->from_kv = true;
		r->kv_next = NULL;
		r->kv_waiting = false;
		return 0;
	}
	if (!m->kv_doc)
		return 0;
	j->kv = malloc(m->kv_len + 1);
	if (!j->kv)
		return -ENOMEM;
	memcpy(j->kv, m->kv_doc, m->kv_len);
	j->kv[m->kv_len] = '\0';
	j->kv_len = m->kv_len;
	return 0;
}

static struct job *job_new(struct reloader *r)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j) {
		j->m = r->m;
		j->seq = ++r->seq;
		j->old = r->m->cfg;
	}
	if (j && job_take_kv(r, j)) {
		free(j);
		return NULL;
	}
	if (j)
		LOG_INFO("config", "reloading configuration", "path=%s source=%s",
			 log_q(r->m->config_path), job_source(j));
	return j;
}

static void reload_start(struct reloader *r)
{
	sdnotify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(evloop_now_ns() / 1000));
	r->job = job_new(r);
	if (r->job && pthread_create(&r->worker, NULL, load_main, r->job) == 0) {
		r->loading = true;
		return;
	}
	if (!r->job) {
		finish(r, -ENOMEM);
		return;
	}
	job_load(r->job); /* no thread: load here rather than not at all */
	job_loaded(r);
}

/* Runs the reload in flight to its end on this thread. */
static void drain(struct reloader *r)
{
	if (r->loading) {
		pthread_join(r->worker, NULL); /* its post finds the job collected and returns */
		r->loading = false;
		job_loaded(r);
	}
	if (lifecycle_reloading(r->m->lifecycle))
		lifecycle_reload_drain(r->m->lifecycle);
	else if (r->job && !r->loading)
		finish(r, -ECANCELED); /* nothing left to drive it */
}

void meshd_reload_async(struct meshd *m)
{
	struct reloader *r = reloader(m);

	if (!r) {
		LOG_ERR("config", "cannot reload", "err=%s", log_q(strerror(ENOMEM)));
		return;
	}
	if (r->job) {
		r->again = true;
		LOG_INFO("config", "reload requested while one runs; it follows", NULL);
		return;
	}
	reload_start(r);
}

int meshd_reload(struct meshd *m)
{
	struct reloader *r = reloader(m);

	if (!r)
		return -ENOMEM;
	r->again = false; /* this reload reads the file as it is now */
	while (r->job)
		drain(r);
	sdnotify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(evloop_now_ns() / 1000));
	r->job = job_new(r);
	if (!r->job) {
		finish(r, -ENOMEM);
		return -ENOMEM;
	}
	job_load(r->job);
	job_loaded(r);
	drain(r);
	return r->result;
}

void meshd_reload_kv(struct meshd *m, char *doc, size_t len)
{
	struct reloader *r = reloader(m);

	if (!r) {
		free(doc);
		LOG_ERR("config", "cannot reload", "err=%s", log_q(strerror(ENOMEM)));
		return;
	}
	free(r->kv_next); /* a newer value replaces one still waiting */
	r->kv_next = doc;
	r->kv_next_len = len;
	r->kv_waiting = true;
	if (r->job) {
		r->again = true;
		LOG_INFO("config", "Consul KV value arrived while a reload runs; it follows", NULL);
		return;
	}
	reload_start(r);
}

void meshd_reload_shutdown(struct meshd *m)
{
	struct reloader *r = m->reloader;

	if (!r)
		return;
	r->again = false;
	drain(r);
	free(r->kv_next);
	if (r->audit_timer)
		evloop_del_timer(m->loop, r->audit_timer);
	audit_free(r->audit, r->n_audit);
	free(r);
	m->reloader = NULL;
}

/* --- config file watch ------------------------------------------------------------------------ */

static void on_watch_timer(struct evloop *loop, void *arg)
{
	struct config_watch *w = arg;

	w->timer = 0;
	LOG_INFO("config", "config file changed", "path=%s", log_q(w->m->config_path));
	meshd_reload_async(w->m);
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
