/* Unit tests for the discovery registry (user/discovery/registry.c) with fake sources and a fake
 * datapath behind the hooks, on a real event loop: the start writes every service in one
 * transaction and restores persisted sets under the live limits; deliveries are flushed in
 * batches, unchanged sets write nothing, one unwritable set does not hold the others back; a
 * reload is planned once, written in steps, and commits or undoes as a whole; deliveries during a
 * reload wait for its end; switching sources stops the old one as switched away; services the
 * source defines (catalog) go in and out through the same hooks, refused on a clash. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "discovery/discovery.h"
#include "discovery/source.h"
#include "discovery/state.h"
#include "test.h"

/* --- a fake datapath behind the hooks -------------------------------------------------------- */

#define MAX_SVCS 512

struct fake_dp {
	char names[MAX_SVCS][64]; /* committed services */
	size_t backends[MAX_SVCS];
	size_t n;
	struct discovery_change staged[MAX_SVCS]; /* applied in the open transaction */
	size_t n_staged;
	int begins, applies, commits, aborts;
	const char *fail_on; /* apply fails when a batch contains this service */
	char changed[2048];  /* names the changed hook saw, space-separated */
};

static struct fake_dp dp;

static int dp_find(const char *name)
{
	for (size_t i = 0; i < dp.n; i++)
		if (!strcmp(dp.names[i], name))
			return (int)i;
	return -1;
}

static void *h_begin(void *arg)
{
	dp.begins++;
	dp.n_staged = 0;
	return &dp;
}

static int h_apply(void *arg, void *txn, const struct discovery_change *ch, size_t n)
{
	dp.applies++;
	for (size_t i = 0; i < n; i++)
		if (dp.fail_on && !strcmp(ch[i].name, dp.fail_on))
			return -EIO;
	for (size_t i = 0; i < n && dp.n_staged < MAX_SVCS; i++) {
		dp.staged[dp.n_staged] = ch[i];
		/* the registry's definitions live until the end: keep only what we need */
		dp.staged[dp.n_staged].svc =
		    ch[i].svc ? (void *)(uintptr_t)(ch[i].svc->n_backends + 1) : NULL;
		dp.staged[dp.n_staged].name = strdup(ch[i].name);
		dp.n_staged++;
	}
	return 0;
}

static void h_end(void *arg, void *txn, bool commit)
{
	for (size_t i = 0; i < dp.n_staged; i++) {
		const char *name = dp.staged[i].name;
		int at = dp_find(name);

		if (commit && dp.staged[i].svc) {
			if (at < 0) {
				at = (int)dp.n++;
				snprintf(dp.names[at], sizeof(dp.names[at]), "%s", name);
			}
			dp.backends[at] = (uintptr_t)dp.staged[i].svc - 1;
		} else if (commit && at >= 0) {
			dp.n--;
			memcpy(dp.names[at], dp.names[dp.n], sizeof(dp.names[at]));
			dp.backends[at] = dp.backends[dp.n];
		}
		free((char *)name);
	}
	dp.n_staged = 0;
	if (commit)
		dp.commits++;
	else
		dp.aborts++;
}

static void h_changed(void *arg, const char *name, const struct config_service *svc, bool undone)
{
	size_t n = strlen(dp.changed);

	snprintf(dp.changed + n, sizeof(dp.changed) - n, "%s%s%s", n ? " " : "", name,
		 svc ? "" : "-");
}

/* --- fake sources ----------------------------------------------------------------------------- */

struct discovery_source {
	int kind;
};

static struct discovery_sink sinks[3]; /* the last sink each kind was started with */
static char trace[256];		       /* "start:consul stop:static:switched ..." */

static void note(const char *what, const char *src)
{
	size_t n = strlen(trace);

	snprintf(trace + n, sizeof(trace) - n, "%s%s:%s", n ? " " : "", what, src);
}

static const char *kind_name(int kind)
{
	return kind == CONFIG_DISCOVERY_CONSUL ? "consul" : "static";
}

static bool f_static_provides(const struct mesh_config *cfg, const char *name)
{
	return false;
}

static bool f_consul_provides(const struct mesh_config *cfg, const char *name)
{
	for (size_t i = 0; cfg->discovery == CONFIG_DISCOVERY_CONSUL && i < cfg->consul.n_services;
	     i++)
		if (!strcmp(cfg->consul.services[i], name))
			return true;
	return false;
}

static bool f_consul_defines(const struct mesh_config *cfg)
{
	return cfg->discovery == CONFIG_DISCOVERY_CONSUL;
}

static int f_start(const struct mesh_config *cfg, struct evloop *loop,
		   const struct discovery_sink *sink, struct discovery_source **out)
{
	struct discovery_source *s = calloc(1, sizeof(*s));

	s->kind = cfg->discovery;
	sinks[s->kind] = *sink;
	note("start", kind_name(s->kind));
	*out = s;
	return 0;
}

static int f_reload(struct discovery_source *s, const struct mesh_config *old,
		    const struct mesh_config *new)
{
	note("reload", kind_name(s->kind));
	return 0;
}

static void f_stop(struct discovery_source *s, bool switched)
{
	if (!s)
		return;
	note(switched ? "switched" : "stop", kind_name(s->kind));
	free(s);
}

static const struct discovery_source_ops f_static = {
	.name = "static",
	.kind = CONFIG_DISCOVERY_STATIC,
	.provides = f_static_provides,
	.start = f_start,
	.reload = f_reload,
	.stop = f_stop,
};
static const struct discovery_source_ops f_consul = {
	.name = "consul",
	.kind = CONFIG_DISCOVERY_CONSUL,
	.provides = f_consul_provides,
	.defines = f_consul_defines,
	.start = f_start,
	.reload = f_reload,
	.stop = f_stop,
};
static const struct discovery_source_ops *const fake_sources[] = { &f_static, &f_consul, NULL };

/* --- helpers ---------------------------------------------------------------------------------- */

/* A config of `n` services s0..s<n-1> on 127.77.20.x/.21.x, each with one static backend; with
 * `consul`, discovery is consul and watches the first `watched` of them. */
static struct mesh_config *make_config(size_t n, bool consul, size_t watched, const char *extra)
{
	size_t cap = 256 + n * 160, len = 0;
	char *buf = malloc(cap);
	struct config_errors errs = { 0 };
	struct mesh_config *cfg;

	len += (size_t)snprintf(
	    buf + len, cap - len, "{\"version\":1,%s%s\"discovery\":{\"backend\":\"%s\"",
	    extra && strstr(extra, "state_dir") ? "" : "\"state_dir\":\"\",", /* no persistence */
	    extra ? extra : "", consul ? "consul" : "static");
	if (consul) {
		len += (size_t)snprintf(buf + len, cap - len,
					",\"consul\":{\"address\":\"http://127.0.0.1:1\","
					"\"services\":[");
		for (size_t i = 0; i < watched; i++)
			len +=
			    (size_t)snprintf(buf + len, cap - len, "%s\"s%zu\"", i ? "," : "", i);
		len += (size_t)snprintf(buf + len, cap - len, "]}");
	}
	len += (size_t)snprintf(buf + len, cap - len, "},\"services\":[");
	for (size_t i = 0; i < n; i++)
		len +=
		    (size_t)snprintf(buf + len, cap - len,
				     "%s{\"name\":\"s%zu\",\"vip\":\"127.77.%zu.%zu\",\"port\":80,"
				     "\"backends\":[{\"address\":\"127.0.0.1\",\"port\":%zu}]}",
				     i ? "," : "", i, 20 + i / 250, 1 + i % 250, 20000 + i);
	snprintf(buf + len, cap - len, "]}");
	cfg = config_load_buf(buf, strlen(buf), (char *const[]){ NULL }, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "config: %s\n", errs.msgs[i]);
	config_errors_free(&errs);
	free(buf);
	return cfg;
}

static struct discovery *registry(struct evloop *loop, uint64_t budget_ns)
{
	struct discovery_opts o = {
		.loop = loop,
		.hooks = { h_begin, h_apply, h_end, h_changed, NULL },
		.budget_ns = budget_ns,
		.sources = fake_sources,
	};

	memset(&dp, 0, sizeof(dp));
	trace[0] = '\0';
	return discovery_new(&o);
}

static void on_stop(struct evloop *loop, void *arg)
{
	evloop_stop(loop);
}

/* Runs the loop until nothing is due for a few milliseconds. */
static void settle(struct evloop *loop)
{
	evloop_add_timer(loop, 20000000ull, on_stop, NULL);
	evloop_run(loop);
}

static struct config_backend *backends(size_t n, uint16_t base)
{
	struct config_backend *b = calloc(n + 1, sizeof(*b));

	for (size_t i = 0; i < n; i++) {
		b[i].endpoint.family = AF_INET;
		b[i].endpoint.addr.v4.s_addr = htonl(0x7f000001);
		b[i].endpoint.port = (uint16_t)(base + i);
		b[i].weight = 1;
	}
	return b;
}

static void deliver(const char *name, uint64_t index, size_t n, uint16_t base)
{
	struct discovery_sink *s = &sinks[CONFIG_DISCOVERY_CONSUL];

	s->deliver(s->arg, name, index, backends(n, base), n);
}

/* --- tests ------------------------------------------------------------------------------------ */

TEST(start_writes_every_service_in_one_transaction)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *cfg = make_config(300, false, 0, NULL);

	CHECK(cfg && d);
	CHECK_INT_EQ(discovery_start(d, cfg), 0);
	CHECK_INT_EQ(dp.begins, 1);
	CHECK_INT_EQ(dp.commits, 1);
	CHECK_INT_EQ(dp.n, 300);
	CHECK_INT_EQ(discovery_count(d), 300);
	CHECK(discovery_find(d, "s299") && discovery_find(d, "s299")->n_backends == 1);
	CHECK(discovery_find_vip(d, &cfg->services[7].vip) &&
	      !strcmp(discovery_find_vip(d, &cfg->services[7].vip)->name, "s7"));
	CHECK_STR_EQ(trace, "start:static");
	discovery_free(d);
	CHECK_STR_EQ(trace, "start:static stop:static");
	config_free(cfg);
	evloop_free(loop);
}

TEST(start_restores_persisted_sets_under_the_live_limits)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	char dir[] = "/tmp/test_discovery.XXXXXX", path[64], extra[128];
	struct mesh_config *cfg;
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/%s", dir, STATE_FILE_NAME);
	f = fopen(path, "w");
	/* More backends for s0 than the datapath holds per service: served capped, start goes on
	 * (it used to fail with E2BIG); s1's set came from dns: not restored. */
	fprintf(f, "meshd-discovery-state 2\nservice s0 consul 7 %d\n",
		MESH_MAX_BACKENDS_PER_SVC + 36);
	for (int i = 0; i < MESH_MAX_BACKENDS_PER_SVC + 36; i++)
		fprintf(f, "backend 127.0.0.2 %d 1\n", 30000 + i);
	fprintf(f, "service s1 dns 3 1\nbackend 127.0.0.3 1 1\nend 2\n");
	fclose(f);
	snprintf(extra, sizeof(extra), "\"state_dir\":\"%s\",", dir);
	cfg = make_config(2, true, 2, extra);
	CHECK(cfg != NULL);
	CHECK_INT_EQ(discovery_start(d, cfg), 0);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, MESH_MAX_BACKENDS_PER_SVC);
	CHECK_INT_EQ(discovery_find(d, "s0")->backends[0].endpoint.port, 30000);
	CHECK_INT_EQ(discovery_find(d, "s1")->n_backends, 1); /* the config's */
	CHECK_INT_EQ(discovery_find(d, "s1")->backends[0].endpoint.port, 20001);
	discovery_free(d);
	unlink(path);
	rmdir(dir);
	config_free(cfg);
	evloop_free(loop);
}

TEST(deliveries_are_flushed_in_batches_and_unchanged_sets_write_nothing)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *cfg = make_config(4, true, 3, NULL);
	struct discovery_stats st;

	CHECK_INT_EQ(discovery_start(d, cfg), 0);
	deliver("s0", 10, 3, 100);
	deliver("s1", 10, 2, 200);
	deliver("s2", 10, 0, 0);
	deliver("s3", 10, 5, 300); /* not watched: ignored */
	deliver("nope", 10, 5, 300);
	discovery_get_stats(d, &st);
	CHECK_INT_EQ(st.pending, 3);
	settle(loop);
	CHECK_INT_EQ(dp.begins, 2); /* start + one batch */
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, 3);
	CHECK_INT_EQ(discovery_find(d, "s2")->n_backends, 0);
	CHECK_INT_EQ(discovery_find(d, "s3")->n_backends, 1);
	CHECK_STR_EQ(dp.changed, "s0 s1 s2");
	deliver("s0", 11, 3, 100); /* same set, newer index: nothing to write */
	settle(loop);
	CHECK_INT_EQ(dp.begins, 2);
	discovery_free(d);
	config_free(cfg);
	evloop_free(loop);
}

TEST(an_unwritable_set_does_not_hold_the_others_back)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *cfg = make_config(3, true, 3, NULL);

	CHECK_INT_EQ(discovery_start(d, cfg), 0);
	dp.fail_on = "s1";
	deliver("s0", 1, 2, 100);
	deliver("s1", 1, 2, 200);
	deliver("s2", 1, 2, 300);
	settle(loop);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, 2);
	CHECK_INT_EQ(discovery_find(d, "s1")->n_backends, 1); /* keeps what it served */
	CHECK_INT_EQ(discovery_find(d, "s2")->n_backends, 2);
	CHECK_INT_EQ(dp.backends[dp_find("s1")], 1);
	discovery_free(d);
	config_free(cfg);
	evloop_free(loop);
}

/* Reloads `d` from `old` to `new` step by step; returns the steps taken or -errno. */
static int reload_steps(struct discovery *d, const struct mesh_config *old,
			const struct mesh_config *new, struct config_plan *plan)
{
	int steps = 0, err;

	CHECK_INT_EQ(config_plan(old, new, plan), 0);
	do
		steps++;
	while ((err = discovery_reload(d, old, new, plan)) == -EINPROGRESS && steps < 100);
	return err ? err : steps;
}

TEST(reload_is_written_in_steps_and_commits_as_a_whole)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 1); /* 1 ns: one chunk per step */
	struct mesh_config *old = make_config(300, false, 0, NULL);
	struct mesh_config *new =
	    make_config(300, false, 0, "\"load_balancer\":{\"algorithm\":\"random\"},");
	struct config_plan plan;
	int steps;

	CHECK_INT_EQ(discovery_start(d, old), 0);
	dp.changed[0] = '\0';
	steps = reload_steps(d, old, new, &plan);
	CHECK(steps >= 3);	     /* 300 changes, 128 per step */
	CHECK_INT_EQ(dp.commits, 1); /* only the start's so far */
	CHECK_INT_EQ(discovery_find(d, "s0")->load_balancer.algorithm, MESH_LB_LEAST_REQUEST);
	discovery_reload_end(d, true);
	CHECK_INT_EQ(dp.commits, 2);
	CHECK_INT_EQ(discovery_find(d, "s0")->load_balancer.algorithm, MESH_LB_RANDOM);
	CHECK_INT_EQ(strlen(dp.changed) > 0, 1);
	config_plan_free(&plan);
	discovery_free(d);
	config_free(old);
	config_free(new);
	evloop_free(loop);
}

TEST(reload_abort_leaves_table_and_datapath_as_they_were)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *old = make_config(3, false, 0, NULL);
	struct mesh_config *new = make_config(2, false, 0, NULL); /* s2 removed */
	struct config_plan plan;

	CHECK_INT_EQ(discovery_start(d, old), 0);
	CHECK_INT_EQ(reload_steps(d, old, new, &plan), 1);
	discovery_reload_end(d, false);
	CHECK_INT_EQ(dp.aborts, 1);
	CHECK_INT_EQ(dp.n, 3);
	CHECK(discovery_find(d, "s2") != NULL);
	config_plan_free(&plan);
	/* A failed write undoes by itself: nothing to end. */
	dp.fail_on = "s2";
	CHECK_INT_EQ(reload_steps(d, old, new, &plan), -EIO);
	CHECK_INT_EQ(dp.aborts, 2);
	CHECK(discovery_find(d, "s2") != NULL);
	config_plan_free(&plan);
	discovery_free(d);
	config_free(old);
	config_free(new);
	evloop_free(loop);
}

TEST(deliveries_during_a_reload_wait_for_its_end)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *old = make_config(3, true, 2, NULL);
	struct mesh_config *new = make_config(3, true, 3, NULL); /* s2 watched too */
	struct config_plan plan;

	CHECK_INT_EQ(discovery_start(d, old), 0);
	CHECK_INT_EQ(reload_steps(d, old, new, &plan), 1);
	deliver("s0", 5, 4, 100);
	deliver("s2", 5, 6, 200); /* only the new config watches it */
	settle(loop);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, 1); /* held */
	discovery_reload_end(d, true);
	settle(loop);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, 4);
	CHECK_INT_EQ(discovery_find(d, "s2")->n_backends, 6);
	CHECK_STR_EQ(trace, "start:consul reload:consul");
	config_plan_free(&plan);
	discovery_free(d);
	config_free(old);
	config_free(new);
	evloop_free(loop);
}

TEST(switching_source_stops_the_old_one_as_switched_away)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *st = make_config(2, false, 0, NULL);
	struct mesh_config *co = make_config(2, true, 1, NULL);
	struct config_plan plan;
	struct discovery_stats s;

	CHECK_INT_EQ(discovery_start(d, st), 0);
	CHECK_INT_EQ(reload_steps(d, st, co, &plan), 1);
	discovery_reload_end(d, false); /* undone: the new source goes, the old one stays */
	CHECK_STR_EQ(trace, "start:static start:consul switched:consul");
	config_plan_free(&plan);
	trace[0] = '\0';
	CHECK_INT_EQ(reload_steps(d, st, co, &plan), 1);
	discovery_reload_end(d, true);
	CHECK_STR_EQ(trace, "start:consul switched:static");
	discovery_get_stats(d, &s);
	CHECK_STR_EQ(s.source, "consul");
	deliver("s0", 1, 3, 100);
	settle(loop);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, 3);
	config_plan_free(&plan);
	/* Back to static: the discovered set gives way to the config's (no stale backends). */
	trace[0] = '\0';
	CHECK_INT_EQ(reload_steps(d, co, st, &plan), 1);
	discovery_reload_end(d, true);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_backends, 1);
	CHECK_INT_EQ(dp.backends[dp_find("s0")], 1);
	CHECK_STR_EQ(trace, "start:static switched:consul");
	config_plan_free(&plan);
	discovery_free(d);
	config_free(st);
	config_free(co);
	evloop_free(loop);
}

static struct discovery_def def(const char *name, const char *vip)
{
	struct discovery_def d = { name, { 0 } };

	config_parse_endpoint(vip, &d.vip);
	return d;
}

/* A defined service is written, takes deliveries and leaves; a clash by name or VIP (with the
 * config or within the set) is refused; after a reload the last define is applied again. */
TEST(defined_services_in_and_out_and_refused_on_a_clash)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *cfg = make_config(2, true, 1, NULL);
	struct discovery_sink *s = &sinks[CONFIG_DISCOVERY_CONSUL];
	struct discovery_def set[] = {
		def("cat", "127.77.30.1:80"),
		def("dup", "127.77.20.2:80"), /* s1's VIP */
		def("s0", "127.77.30.2:80"),
		def("twin", "127.77.30.1:80"),
	};

	CHECK_INT_EQ(discovery_start(d, cfg), 0);
	s->define(s->arg, set, 4);
	CHECK(dp_find("cat") >= 0 && discovery_defined(d, "cat"));
	CHECK(dp_find("dup") < 0 && dp_find("twin") < 0 && !discovery_defined(d, "s0"));
	CHECK_INT_EQ(discovery_count(d), 3);
	CHECK(discovery_find_vip(d, &set[0].vip) != NULL);
	CHECK_INT_EQ(discovery_find(d, "cat")->load_balancer.algorithm,
		     cfg->load_balancer.algorithm);
	deliver("cat", 5, 2, 21000);
	settle(loop);
	CHECK_INT_EQ(dp.backends[dp_find("cat")], 2);
	s->define(s->arg, set, 1); /* the same again: nothing written */
	CHECK_INT_EQ(dp.backends[dp_find("cat")], 2);
	s->define(s->arg, NULL, 0);
	CHECK(dp_find("cat") < 0 && !discovery_find(d, "cat"));
	CHECK(strstr(dp.changed, "cat-") != NULL);
	CHECK_INT_EQ(discovery_count(d), 2);
	discovery_free(d);
	config_free(cfg);
	evloop_free(loop);
}

/* A reload whose config lists a defined service's VIP takes it over in the same transaction; the
 * last define, applied again after the commit, is then refused. A reload back frees the VIP and
 * the defined service comes back; a reload to another global policy changes its policy. */
TEST(reload_takes_over_a_defined_vip_and_gives_it_back)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *two = make_config(2, true, 1, NULL),
			   *three = make_config(3, true, 1, NULL);
	struct mesh_config *lc =
	    make_config(2, true, 1, "\"load_balancer\":{\"algorithm\":\"maglev\"},");
	struct discovery_sink *s = &sinks[CONFIG_DISCOVERY_CONSUL];
	struct discovery_def set[] = { def("cat", "127.77.20.3:80") }; /* s2's VIP in `three` */
	struct config_plan plan;

	CHECK(two && three && lc);
	CHECK_INT_EQ(discovery_start(d, two), 0);
	s->define(s->arg, set, 1);
	CHECK(dp_find("cat") >= 0);
	CHECK(reload_steps(d, two, three, &plan) > 0);
	discovery_reload_end(d, true);
	config_plan_free(&plan);
	CHECK(dp_find("cat") < 0 && dp_find("s2") >= 0 && !discovery_defined(d, "cat"));
	CHECK(!strcmp(discovery_find_vip(d, &set[0].vip)->name, "s2"));
	CHECK(reload_steps(d, three, two, &plan) > 0);
	discovery_reload_end(d, true);
	config_plan_free(&plan);
	CHECK(dp_find("s2") < 0 && dp_find("cat") >= 0 && discovery_defined(d, "cat"));
	CHECK(reload_steps(d, two, lc, &plan) > 0);
	discovery_reload_end(d, true);
	config_plan_free(&plan);
	CHECK_INT_EQ(discovery_find(d, "cat")->load_balancer.algorithm,
		     lc->load_balancer.algorithm);
	CHECK(lc->load_balancer.algorithm != two->load_balancer.algorithm);
	discovery_free(d);
	config_free(two);
	config_free(three);
	config_free(lc);
	evloop_free(loop);
}

/* A source's split (Consul entries): delivered with labelled backends, kept by a reload that
 * changes the service's policy, replaced by a newer one (also when delivered during a reload),
 * dropped by an empty one; entry errors counted. */
TEST(a_source_split_is_served_kept_across_reloads_and_replaced)
{
	struct evloop *loop = evloop_new();
	struct discovery *d = registry(loop, 0);
	struct mesh_config *old = make_config(2, true, 2, NULL);
	struct mesh_config *new =
	    make_config(2, true, 2, "\"load_balancer\":{\"algorithm\":\"random\"},");
	struct config_split sp[2] = { { .subset = "v1", .weight = 9000 },
				      { .subset = "v2", .weight = 1000 } };
	const struct config_service *s0;
	struct discovery_stats st;
	struct config_backend *b;
	struct config_plan plan;

	CHECK_INT_EQ(discovery_start(d, old), 0);
	b = backends(2, 100);
	b[0].subset = strdup("v1");
	b[1].subset = strdup("v2,canary");
	sinks[CONFIG_DISCOVERY_CONSUL].deliver_split(sinks[CONFIG_DISCOVERY_CONSUL].arg, "s0", 3, b,
						     2, sp, 2);
	settle(loop);
	s0 = discovery_find(d, "s0");
	CHECK(s0->n_split == 2 && s0->split[1].weight == 1000);
	CHECK_STR_EQ(s0->backends[1].subset, "v2,canary");
	CHECK_INT_EQ(reload_steps(d, old, new, &plan), 1);
	sp[0].weight = sp[1].weight = 5000; /* a rollout step while the reload is in flight */
	b = backends(2, 100);
	b[0].subset = strdup("v1");
	b[1].subset = strdup("v2");
	sinks[CONFIG_DISCOVERY_CONSUL].deliver_split(sinks[CONFIG_DISCOVERY_CONSUL].arg, "s0", 4, b,
						     2, sp, 2);
	discovery_reload_end(d, true);
	config_plan_free(&plan);
	s0 = discovery_find(d, "s0");
	CHECK(s0->n_split == 2 && s0->split[1].weight == 1000); /* the reload kept it */
	CHECK_INT_EQ(s0->load_balancer.algorithm, MESH_LB_RANDOM);
	settle(loop);
	s0 = discovery_find(d, "s0");
	CHECK(s0->n_split == 2 && s0->split[1].weight == 5000); /* then the held step went in */
	sinks[CONFIG_DISCOVERY_CONSUL].deliver_split(sinks[CONFIG_DISCOVERY_CONSUL].arg, "s0", 5,
						     backends(2, 100), 2, NULL, 0);
	settle(loop);
	CHECK_INT_EQ(discovery_find(d, "s0")->n_split, 0);
	CHECK(discovery_find(d, "s0")->backends[0].subset == NULL);
	sinks[CONFIG_DISCOVERY_CONSUL].entry_error(sinks[CONFIG_DISCOVERY_CONSUL].arg);
	discovery_get_stats(d, &st);
	CHECK_INT_EQ(st.entry_errors, 1);
	discovery_free(d);
	config_free(old);
	config_free(new);
	evloop_free(loop);
}
