/* Unit tests for meshd/lifecycle.c with fake components: dependency order independent of table
 * order, unknown dependencies and cycles rejected, a failing start unwinding exactly what started
 * in reverse, the reload transaction (rollback by reverse reload or by `end`, a component that
 * needs several steps, an injected fault after a component applied), and restart of a failed
 * component with backoff on a real evloop (millisecond delays). Each fake records "+name"
 * (start), "-name" (stop), "~name" (reload), and discovery's `end` hook "^discovery" (commit) or
 * "!discovery" (abort). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "meshd/lifecycle.h"
#include "test.h"

#define MS 1000000ull

static char trace[512];
static const char *fail_start;	/* component whose start fails */
static const char *fail_reload; /* component whose reload fails */
static int fail_start_times;	/* how many more starts of fail_start fail (-1: always) */
static int discovery_steps;	/* how many more times discovery's reload asks to go on later */
static const char *fault_after; /* component after whose reload the fault hook fails */

static void note(char op, const char *name)
{
	size_t n = strlen(trace);

	snprintf(trace + n, sizeof(trace) - n, "%s%c%s", n ? " " : "", op, name);
}

/* Each fake component's hooks learn their name from a static per-component wrapper. */
static int fake_start(const char *name)
{
	note('+', name);
	if (fail_start && strcmp(fail_start, name) == 0 && fail_start_times != 0) {
		if (fail_start_times > 0)
			fail_start_times--;
		return -EADDRINUSE;
	}
	return 0;
}

static int fake_reload(const char *name, const struct config_plan *plan)
{
	note('~', name);
	if (fail_reload && strcmp(fail_reload, name) == 0)
		return -EINVAL;
	if (!strcmp(name, "discovery") && discovery_steps > 0) {
		discovery_steps--;
		return -EINPROGRESS;
	}
	return 0;
}

static void fake_discovery_end(struct meshd *m, bool commit)
{
	note(commit ? '^' : '!', "discovery");
}

static int fake_fault(const char *component)
{
	return fault_after && !strcmp(fault_after, component) ? -EIO : 0;
}

#define FAKE(n)                                                                                    \
	static int fake_##n##_start(struct meshd *m)                                               \
	{                                                                                          \
		return fake_start(#n);                                                             \
	}                                                                                          \
	static void fake_##n##_stop(struct meshd *m)                                               \
	{                                                                                          \
		note('-', #n);                                                                     \
	}                                                                                          \
	static int fake_##n##_reload(struct meshd *m, const struct mesh_config *o,                 \
				     const struct mesh_config *nw, const struct config_plan *p)    \
	{                                                                                          \
		return fake_reload(#n, p);                                                         \
	}

FAKE(config)
FAKE(log)
FAKE(datapath)
FAKE(discovery)
FAKE(metrics)
FAKE(admin)

#define COMP(n, ...)                                                                               \
	{                                                                                          \
#n, { __VA_ARGS__ }, fake_##n##_start, fake_##n##_stop, fake_##n##_reload,         \
		      !strcmp(#n, "discovery") ? fake_discovery_end : NULL                         \
	}

/* Deliberately not in dependency order. */
static const struct meshd_component table[] = {
	COMP(admin, "config", "metrics"), COMP(discovery, "datapath"), COMP(metrics, "datapath"),
	COMP(datapath, "config", "log"),  COMP(log, "config"),	       COMP(config, NULL),
};
#define N_TABLE (sizeof(table) / sizeof(table[0]))

static const struct lifecycle_opts opts = { .backoff_base_ns = 2 * MS,
					    .backoff_max_ns = 8 * MS,
					    .fault = fake_fault };

static void reset(void)
{
	trace[0] = '\0';
	fail_start = fail_reload = fault_after = NULL;
	fail_start_times = -1;
	discovery_steps = 0;
}

TEST(start_order_follows_dependencies)
{
	struct meshd m = { 0 };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);

	reset();
	CHECK(lc);
	CHECK_STR_EQ(lifecycle_order_name(lc, 0), "config");
	CHECK_STR_EQ(lifecycle_order_name(lc, 1), "log");
	CHECK_STR_EQ(lifecycle_order_name(lc, 2), "datapath");
	CHECK_STR_EQ(lifecycle_order_name(lc, 3), "discovery");
	CHECK_STR_EQ(lifecycle_order_name(lc, 4), "metrics");
	CHECK_STR_EQ(lifecycle_order_name(lc, 5), "admin");
	CHECK(lifecycle_order_name(lc, 6) == NULL);
	CHECK_INT_EQ(lifecycle_start(lc, NULL), 0);
	lifecycle_stop(lc);
	CHECK_STR_EQ(trace, "+config +log +datapath +discovery +metrics +admin "
			    "-admin -metrics -discovery -datapath -log -config");
	lifecycle_free(lc);
}

TEST(unknown_dependency_and_cycle_rejected)
{
	static const struct meshd_component unknown[] = { COMP(config, "nope") };
	static const struct meshd_component cycle[] = {
		COMP(config, NULL),
		COMP(log, "admin"),
		COMP(admin, "log"),
	};
	struct meshd m = { 0 };

	errno = 0;
	CHECK(lifecycle_new(&m, unknown, 1, &opts) == NULL);
	CHECK_INT_EQ(errno, EINVAL);
	errno = 0;
	CHECK(lifecycle_new(&m, cycle, 3, &opts) == NULL);
	CHECK_INT_EQ(errno, EINVAL);
}

TEST(failed_start_unwinds_in_reverse_and_names_the_component)
{
	struct meshd m = { 0 };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);
	const char *failed = NULL;

	reset();
	fail_start = "metrics";
	CHECK_INT_EQ(lifecycle_start(lc, &failed), -EADDRINUSE);
	CHECK_STR_EQ(failed, "metrics");
	CHECK(m.start_failed);
	/* metrics itself is not stopped (it never started), admin never started. */
	CHECK_STR_EQ(trace, "+config +log +datapath +discovery +metrics "
			    "-discovery -datapath -log -config");
	trace[0] = '\0';
	lifecycle_stop(lc); /* nothing left running: a second stop does nothing */
	CHECK_STR_EQ(trace, "");
	lifecycle_free(lc);
}

TEST(reload_failure_rolls_back_applied_components)
{
	struct meshd m = { 0 };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);
	struct config_plan plan = { 0 };

	reset();
	lifecycle_start(lc, NULL);
	trace[0] = '\0';
	CHECK_INT_EQ(lifecycle_reload(lc, NULL, NULL, &plan), 0);
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~discovery ~metrics ~admin ^discovery");
	trace[0] = '\0';
	fail_reload = "metrics";
	CHECK_INT_EQ(lifecycle_reload(lc, NULL, NULL, &plan), -EINVAL);
	/* Forward up to the failing one, then back down: end(false) for discovery (it keeps its
	 * own undo), the reverse change for the others. */
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~discovery ~metrics !discovery ~datapath ~log "
			    "~config");
	lifecycle_stop(lc);
	lifecycle_free(lc);
}

TEST(reload_fault_after_apply_rolls_back_that_component_too)
{
	struct meshd m = { 0 };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);
	struct config_plan plan = { 0 };

	reset();
	lifecycle_start(lc, NULL);
	trace[0] = '\0';
	fault_after = "datapath";
	CHECK_INT_EQ(lifecycle_reload(lc, NULL, NULL, &plan), -EIO);
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~datapath ~log ~config");
	trace[0] = '\0';
	fault_after = "admin"; /* the last one: everything applied is undone */
	CHECK_INT_EQ(lifecycle_reload(lc, NULL, NULL, &plan), -EIO);
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~discovery ~metrics ~admin ~admin ~metrics "
			    "!discovery ~datapath ~log ~config");
	lifecycle_stop(lc);
	lifecycle_free(lc);
}

struct done {
	int calls, err;
	const char *failed;
};

static void on_done(void *arg, int err, const char *failed)
{
	struct done *d = arg;

	d->calls++;
	d->err = err;
	d->failed = failed;
}

static void stop_when_done(struct evloop *loop, void *arg)
{
	struct meshd *m = arg;

	if (!lifecycle_reloading(m->lifecycle))
		evloop_stop(loop);
	else
		evloop_add_timer(loop, MS, stop_when_done, m);
}

TEST(reload_in_steps_yields_to_the_loop)
{
	struct meshd m = { .loop = evloop_new() };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);
	struct config_plan plan = { 0 };
	struct done d = { 0 };

	reset();
	m.lifecycle = lc;
	lifecycle_start(lc, NULL);
	trace[0] = '\0';
	discovery_steps = 3;
	CHECK_INT_EQ(lifecycle_reload_start(lc, NULL, NULL, &plan, on_done, &d), 0);
	/* It stopped at discovery and waits for the loop. */
	CHECK(lifecycle_reloading(lc));
	CHECK_INT_EQ(d.calls, 0);
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~discovery");
	CHECK_INT_EQ(lifecycle_reload_start(lc, NULL, NULL, &plan, on_done, &d), -EBUSY);
	evloop_add_timer(m.loop, 0, stop_when_done, &m);
	evloop_run(m.loop);
	CHECK_INT_EQ(d.calls, 1);
	CHECK_INT_EQ(d.err, 0);
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~discovery ~discovery ~discovery ~discovery "
			    "~metrics ~admin ^discovery");
	/* Stopping in the middle of a stepped reload undoes it first. */
	trace[0] = '\0';
	discovery_steps = 5;
	memset(&d, 0, sizeof(d));
	lifecycle_reload_start(lc, NULL, NULL, &plan, on_done, &d);
	lifecycle_stop(lc);
	CHECK_INT_EQ(d.calls, 1);
	CHECK_INT_EQ(d.err, -ECANCELED);
	CHECK_STR_EQ(trace, "~config ~log ~datapath ~discovery !discovery ~datapath ~log ~config "
			    "-admin -metrics -discovery -datapath -log -config");
	lifecycle_free(lc);
	evloop_free(m.loop);
}

static void on_deadline(struct evloop *loop, void *arg)
{
	evloop_stop(loop);
}

TEST(runtime_failure_restarts_with_backoff_others_untouched)
{
	struct meshd m = { .loop = evloop_new() };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);
	uint64_t t0;

	reset();
	m.lifecycle = lc;
	CHECK_INT_EQ(lifecycle_start(lc, NULL), 0);
	trace[0] = '\0';
	fail_start = "discovery";
	fail_start_times = 2; /* two restarts fail (2 ms, 4 ms), the third (8 ms) succeeds */
	t0 = evloop_now_ns();
	meshd_component_failed(&m, "discovery", -ECONNREFUSED);
	meshd_component_failed(&m, "discovery", -ECONNREFUSED); /* ignored: restart pending */
	CHECK(!lifecycle_running(lc, "discovery"));
	CHECK(lifecycle_running(lc, "metrics"));
	evloop_add_timer(m.loop, 200 * MS, on_deadline, NULL);
	evloop_run(m.loop);
	CHECK(evloop_now_ns() - t0 >= 14 * MS); /* 2 + 4 + 8 */
	CHECK_STR_EQ(trace, "-discovery +discovery +discovery +discovery");
	CHECK(lifecycle_running(lc, "discovery"));
	CHECK_INT_EQ(lifecycle_component_failed(lc, "nope", -EIO), -ENOENT);
	lifecycle_stop(lc);
	lifecycle_free(lc);
	evloop_free(m.loop);
}

TEST(stop_cancels_pending_restart)
{
	struct meshd m = { .loop = evloop_new() };
	struct lifecycle *lc = lifecycle_new(&m, table, N_TABLE, &opts);

	reset();
	m.lifecycle = lc;
	lifecycle_start(lc, NULL);
	meshd_component_failed(&m, "metrics", -EIO);
	trace[0] = '\0';
	lifecycle_stop(lc);
	evloop_add_timer(m.loop, 20 * MS, on_deadline, NULL);
	evloop_run(m.loop); /* the cancelled restart must not fire */
	CHECK_STR_EQ(trace, "-admin -metrics -discovery -datapath -log -config");
	lifecycle_free(lc);
	evloop_free(m.loop);
}
