/* Lifecycle engine behind lifecycle.h: dependency order (Kahn's algorithm, stable in table
 * order), start with reverse unwind, stop, reload as a transaction over the components (stepped
 * on the loop while one asks for more time, rolled back as a whole when one fails), and restart
 * of failed components on an evloop timer with capped exponential backoff. Loop thread only. */
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

struct lc_reload {
	bool active;
	const struct mesh_config *old, *new;
	const struct config_plan *plan;
	size_t next;   /* next component in start order */
	int64_t timer; /* continuation of a component that asked for more time */
	lifecycle_reload_done done;
	void *arg;
};

#define MAX_DEPS (sizeof(((struct meshd_component *)0)->deps) / sizeof(const char *))

struct lifecycle {
	struct meshd *m;
	struct lifecycle_opts opts;
	size_t n;
	struct comp *order; /* components in start order */
	bool stopping;
	struct lc_reload *reload; /* the reload in flight (reload.active) */
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
	lc->reload = calloc(1, sizeof(*lc->reload));
	if (!lc->order || !lc->reload)
		goto err_order;
	lc->m = m;
	lc->n = n;
	lc->opts = *opts;
	if (check_deps(tab, n) || sort_components(lc, tab, n)) {
		errno = EINVAL;
		goto err_order;
	}
	return lc;

err_order:
	free(lc->reload);
	free(lc->order);
	free(lc);
	return NULL;
}

void lifecycle_free(struct lifecycle *lc)
{
	if (!lc)
		return;
	free(lc->reload);
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

static void reload_cancel(struct lifecycle *lc);

void lifecycle_stop(struct lifecycle *lc)
{
	reload_cancel(lc);
	lc->stopping = true;
	for (size_t i = lc->n; i-- > 0;)
		stop_one(lc, &lc->order[i]);
}

/* --- reload: a transaction over the components, stepped on the loop ------------------------- */

static bool reloadable(const struct comp *c)
{
	return c->state == COMP_UP && !c->restart_timer && c->def->reload;
}

/* Puts components [0, upto) back on the running config, last first: `end(false)` for those that
 * keep their own undo, the reverse change for the others. */
static void rollback(struct lifecycle *lc, size_t upto, const struct lc_reload *r)
{
	struct config_plan rev;
	bool have_rev = config_plan_reverse(r->plan, &rev) == 0;

	while (upto-- > 0) {
		struct comp *c = &lc->order[upto];
		int err;

		if (!reloadable(c))
			continue;
		if (c->def->end) {
			c->def->end(lc->m, false);
			continue;
		}
		if (!have_rev) {
			LOG_ERR("lifecycle", "no memory to roll back a component", "component=%s",
				c->def->name);
			continue;
		}
		do /* a reverse change is small: finish it here */
			err = c->def->reload(lc->m, r->new, r->old, &rev);
		while (err == -EINPROGRESS);
		if (err)
			LOG_ERR("lifecycle", "rollback failed", "component=%s err=%s", c->def->name,
				log_q(strerror(-err)));
	}
	if (have_rev)
		config_plan_free(&rev);
}

static void reload_finish(struct lifecycle *lc, int err, const char *failed)
{
	struct lc_reload *r = lc->reload;

	r->active = false;
	if (r->done)
		r->done(r->arg, err, failed);
}

/* Runs the component reloads from r->next on. Returns -EINPROGRESS when one asked to go on
 * later, else the reload's result (reload_finish has run). */
static int reload_step(struct lifecycle *lc)
{
	struct lc_reload *r = lc->reload;

	while (r->next < lc->n) {
		struct comp *c = &lc->order[r->next];
		bool applied = false;
		int err;

		if (c->state != COMP_UP || c->restart_timer) {
			r->next++;
			continue;
		}
		/* A component without a reload hook has nothing to apply (the fault hook still
		 * sees it, so tests can fail a reload at every step). */
		err = c->def->reload ? c->def->reload(lc->m, r->old, r->new, r->plan) : 0;
		if (err == -EINPROGRESS)
			return err;
		if (!err && lc->opts.fault && (err = lc->opts.fault(c->def->name)))
			applied = true; /* injected after the component applied: it is undone too */
		if (err) {
			LOG_ERR("lifecycle", "component rejected the new config",
				"component=%s err=%s", c->def->name, log_q(strerror(-err)));
			rollback(lc, r->next + applied, r);
			reload_finish(lc, err, c->def->name);
			return err;
		}
		LOG_DEBUG("lifecycle", "component reloaded", "component=%s", c->def->name);
		r->next++;
	}
	for (size_t i = 0; i < lc->n; i++)
		if (reloadable(&lc->order[i]) && lc->order[i].def->end)
			lc->order[i].def->end(lc->m, true);
	reload_finish(lc, 0, NULL);
	return 0;
}

static void on_reload_timer(struct evloop *loop, void *arg)
{
	struct lifecycle *lc = arg;

	lc->reload->timer = 0;
	if (reload_step(lc) == -EINPROGRESS)
		lc->reload->timer = evloop_add_timer(loop, 0, on_reload_timer, lc);
}

int lifecycle_reload_start(struct lifecycle *lc, const struct mesh_config *old,
			   const struct mesh_config *new, const struct config_plan *plan,
			   lifecycle_reload_done done, void *arg)
{
	struct lc_reload *r = lc->reload;
	int err;

	if (r->active)
		return -EBUSY;
	*r = (struct lc_reload){ true, old, new, plan, 0, 0, done, arg };
	err = reload_step(lc);
	if (err != -EINPROGRESS)
		return 0;
	r->timer = evloop_add_timer(lc->m->loop, 0, on_reload_timer, lc);
	if (r->timer < 0) { /* no timer: finish now rather than stall */
		r->timer = 0;
		lifecycle_reload_drain(lc);
	}
	return 0;
}

bool lifecycle_reloading(const struct lifecycle *lc)
{
	return lc->reload->active;
}

void lifecycle_reload_drain(struct lifecycle *lc)
{
	struct lc_reload *r = lc->reload;

	if (r->timer) {
		evloop_del_timer(lc->m->loop, r->timer);
		r->timer = 0;
	}
	while (r->active && reload_step(lc) == -EINPROGRESS)
		;
}

/* Cancels a reload in flight: every component goes back on the running config. */
static void reload_cancel(struct lifecycle *lc)
{
	struct lc_reload *r = lc->reload;

	if (!r->active)
		return;
	if (r->timer)
		evloop_del_timer(lc->m->loop, r->timer);
	r->timer = 0;
	rollback(lc, r->next + 1 <= lc->n ? r->next + 1 : lc->n, r);
	reload_finish(lc, -ECANCELED, "lifecycle");
}

static void store_result(void *arg, int err, const char *failed)
{
	*(int *)arg = err;
}

int lifecycle_reload(struct lifecycle *lc, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_plan *plan)
{
	int result = -EBUSY;

	if (lifecycle_reload_start(lc, old, new, plan, store_result, &result) == 0)
		lifecycle_reload_drain(lc);
	return result;
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
