/* Lifecycle engine behind lifecycle.h: dependency order (Kahn's algorithm, stable in table
 * order), start with reverse unwind, stop, reload fan-out with rollback, and restart of failed
 * components on an evloop timer with capped exponential backoff. Event-loop thread only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "meshd/lifecycle.h"

enum comp_state {
	COMP_DOWN = 0,
	COMP_UP = 1,
};

struct comp {
	const struct meshd_component *def;
	enum comp_state state;
	int64_t restart_timer; /* pending restart timer id, 0 when none */
	unsigned int attempts; /* consecutive restarts without a quiet period */
	uint64_t up_since_ns;  /* evloop_now_ns() of the last successful start */
	struct lifecycle *lc;  /* back pointer for timer callbacks */
};

#define MAX_DEPS (sizeof(((struct meshd_component *)0)->deps) / sizeof(const char *))

struct lifecycle {
	struct meshd *m;
	struct lifecycle_opts opts;
	size_t n;
	struct comp *order; /* components in start order */
	bool stopping;
};

/* Index of `name` in `tab`, or -1. */
static int find_def(const struct meshd_component *tab, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tab[i].name, name) == 0)
			return (int)i;
	return -1;
}

static struct comp *find_comp(const struct lifecycle *lc, const char *name)
{
	for (size_t i = 0; i < lc->n; i++)
		if (strcmp(lc->order[i].def->name, name) == 0)
			return &lc->order[i];
	return NULL;
}

/* True when every dependency of tab[i] is already placed (done[] marks placed entries). */
static bool deps_placed(const struct meshd_component *tab, size_t n, size_t i, const bool *done)
{
	for (size_t d = 0; d < MAX_DEPS && tab[i].deps[d]; d++)
		if (!done[find_def(tab, n, tab[i].deps[d])])
			return false;
	return true;
}

static int check_deps(const struct meshd_component *tab, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t d = 0; d < MAX_DEPS && tab[i].deps[d]; d++) {
			if (find_def(tab, n, tab[i].deps[d]) < 0) {
				LOG_ERR("lifecycle", "unknown dependency", "component=%s dep=%s",
					tab[i].name, tab[i].deps[d]);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* Fills lc->order with a topological order; the first ready entry in table order goes next. */
static int sort_components(struct lifecycle *lc, const struct meshd_component *tab, size_t n)
{
	bool done[n];
	size_t placed = 0;

	memset(done, 0, sizeof(done));
	while (placed < n) {
		size_t i;

		for (i = 0; i < n; i++)
			if (!done[i] && deps_placed(tab, n, i, done))
				break;
		if (i == n) {
			LOG_ERR("lifecycle", "dependency cycle", "placed=%zu total=%zu", placed, n);
			return -EINVAL;
		}
		done[i] = true;
		lc->order[placed].def = &tab[i];
		lc->order[placed].lc = lc;
		placed++;
	}
	return 0;
}

struct lifecycle *lifecycle_new(struct meshd *m, const struct meshd_component *tab, size_t n,
				const struct lifecycle_opts *opts)
{
	struct lifecycle *lc = calloc(1, sizeof(*lc));

	if (!lc)
		return NULL;
	lc->order = calloc(n ? n : 1, sizeof(*lc->order));
	if (!lc->order)
		goto err_free;
	lc->m = m;
	lc->n = n;
	lc->opts = *opts;
	if (check_deps(tab, n) || sort_components(lc, tab, n)) {
		errno = EINVAL;
		goto err_order;
	}
	return lc;

err_order:
	free(lc->order);
err_free:
	free(lc);
	return NULL;
}

void lifecycle_free(struct lifecycle *lc)
{
	if (!lc)
		return;
	free(lc->order);
	free(lc);
}

const char *lifecycle_order_name(const struct lifecycle *lc, size_t i)
{
	return i < lc->n ? lc->order[i].def->name : NULL;
}

bool lifecycle_running(const struct lifecycle *lc, const char *name)
{
	const struct comp *c = find_comp(lc, name);

	return c && c->state == COMP_UP && !c->restart_timer;
}

static int start_one(struct lifecycle *lc, struct comp *c)
{
	int err = c->def->start ? c->def->start(lc->m) : 0;

	if (err) {
		LOG_ERR("lifecycle", "component failed to start", "component=%s err=%s",
			c->def->name, log_q(strerror(-err)));
		return err;
	}
	c->state = COMP_UP;
	c->up_since_ns = evloop_now_ns();
	LOG_DEBUG("lifecycle", "component started", "component=%s", c->def->name);
	return 0;
}

static void stop_one(struct lifecycle *lc, struct comp *c)
{
	if (c->restart_timer) {
		evloop_del_timer(lc->m->loop, c->restart_timer);
		c->restart_timer = 0;
	}
	if (c->state != COMP_UP)
		return;
	if (c->def->stop)
		c->def->stop(lc->m);
	c->state = COMP_DOWN;
	LOG_DEBUG("lifecycle", "component stopped", "component=%s", c->def->name);
}

int lifecycle_start(struct lifecycle *lc, const char **failed)
{
	size_t i;
	int err = 0;

	lc->stopping = false;
	lc->m->start_failed = false;
	for (i = 0; i < lc->n; i++) {
		err = start_one(lc, &lc->order[i]);
		if (err)
			break;
	}
	if (!err)
		return 0;
	if (failed)
		*failed = lc->order[i].def->name;
	/* Lets the stop hooks tell an unwind from a graceful stop (the datapath cleans up then). */
	lc->m->start_failed = true;
	while (i-- > 0) {
		LOG_INFO("lifecycle", "unwinding", "component=%s", lc->order[i].def->name);
		stop_one(lc, &lc->order[i]);
	}
	return err;
}

void lifecycle_stop(struct lifecycle *lc)
{
	lc->stopping = true;
	for (size_t i = lc->n; i-- > 0;)
		stop_one(lc, &lc->order[i]);
}

/* The same change set with old and new swapped, for rolling back. `buf` holds n entries. */
static void reverse_diff(const struct config_diff *diff, struct config_diff *out,
			 struct config_change *buf)
{
	for (size_t i = 0; i < diff->n; i++) {
		buf[i].path = diff->changes[i].path;
		buf[i].old_value = diff->changes[i].new_value;
		buf[i].new_value = diff->changes[i].old_value;
	}
	out->changes = buf;
	out->n = diff->n;
}

static void rollback(struct lifecycle *lc, size_t upto, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_diff *diff)
{
	struct config_change *buf = calloc(diff->n ? diff->n : 1, sizeof(*buf));
	struct config_diff rev;

	if (!buf) {
		LOG_ERR("lifecycle", "no memory to roll back a failed reload", NULL);
		return;
	}
	reverse_diff(diff, &rev, buf);
	while (upto-- > 0) {
		struct comp *c = &lc->order[upto];

		if (c->state != COMP_UP || c->restart_timer || !c->def->reload)
			continue;
		if (c->def->reload(lc->m, new, old, &rev))
			LOG_ERR("lifecycle", "rollback failed", "component=%s", c->def->name);
	}
	free(buf);
}

int lifecycle_reload(struct lifecycle *lc, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_diff *diff)
{
	for (size_t i = 0; i < lc->n; i++) {
		struct comp *c = &lc->order[i];
		int err;

		/* A component waiting for a restart picks the new config up when it starts. */
		if (c->state != COMP_UP || c->restart_timer || !c->def->reload)
			continue;
		err = c->def->reload(lc->m, old, new, diff);
		if (err) {
			LOG_ERR("lifecycle", "component rejected the new config",
				"component=%s err=%s", c->def->name, log_q(strerror(-err)));
			rollback(lc, i, old, new, diff);
			return err;
		}
		LOG_DEBUG("lifecycle", "component reloaded", "component=%s", c->def->name);
	}
	return 0;
}

static uint64_t backoff_ns(const struct lifecycle *lc, unsigned int attempts)
{
	uint64_t d = lc->opts.backoff_base_ns;

	while (attempts-- > 0 && d < lc->opts.backoff_max_ns)
		d *= 2;
	return d < lc->opts.backoff_max_ns ? d : lc->opts.backoff_max_ns;
}

static void restart_fire(struct evloop *loop, void *arg);

static void schedule_restart(struct comp *c)
{
	uint64_t delay = backoff_ns(c->lc, c->attempts);
	int64_t id = evloop_add_timer(c->lc->m->loop, delay, restart_fire, c);

	if (id < 0) {
		LOG_ERR("lifecycle", "cannot schedule restart", "component=%s", c->def->name);
		return;
	}
	c->restart_timer = id;
	c->attempts++;
	LOG_WARN("lifecycle", "component restart scheduled", "component=%s in_ms=%llu attempt=%u",
		 c->def->name, (unsigned long long)(delay / 1000000), c->attempts);
}

static void restart_fire(struct evloop *loop, void *arg)
{
	struct comp *c = arg;

	c->restart_timer = 0;
	stop_one(c->lc, c);
	if (start_one(c->lc, c) == 0) {
		LOG_INFO("lifecycle", "component restarted", "component=%s", c->def->name);
		return;
	}
	schedule_restart(c);
}

int lifecycle_component_failed(struct lifecycle *lc, const char *name, int err)
{
	struct comp *c = find_comp(lc, name);

	if (!c)
		return -ENOENT;
	if (lc->stopping || c->restart_timer || c->state != COMP_UP)
		return 0;
	LOG_ERR("lifecycle", "component failed", "component=%s err=%s", name,
		log_q(strerror(err < 0 ? -err : err)));
	/* A component that ran quietly for longer than the cap starts over at the base delay. */
	if (evloop_now_ns() - c->up_since_ns > lc->opts.backoff_max_ns)
		c->attempts = 0;
	schedule_restart(c);
	return 0;
}

void meshd_component_failed(struct meshd *m, const char *name, int err)
{
	if (m->lifecycle)
		lifecycle_component_failed(m->lifecycle, name, err);
}
