/* Unit tests for the health checker with an injected clock, fake timers and fake probes (no
 * sockets): scheduling and jitter, rise/fall through probes, transitions reported once, sync
 * passes that add/retune/remove without resetting the state of backends that stay. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "health/health_checker.h"
#include "test.h"

#define MS 1000000ull
#define MAX_TIMERS 256
#define MAX_PROBES 64
#define PORT0 21500

/* --- fakes ----------------------------------------------------------------------------------- */
static struct {
	uint64_t now;
	struct {
		int64_t id;
		uint64_t when;
		evloop_timer_cb cb;
		void *arg;
	} timers[MAX_TIMERS];
	int64_t next_id;
	struct health_probe *inflight[MAX_PROBES];
	int n_inflight;
	bool fail_probe_start;
	bool ok[16];	 /* verdict per backend index (port - PORT0) */
	int started[16]; /* probes started per backend index */
	int cancelled;
	struct health_probe_opts last_opts;
	int changes, drops;
	bool last_healthy;
	char last_reason[64];
	int last_port;
} F;

struct health_probe {
	health_probe_cb cb;
	void *arg;
	int idx;
};

static uint64_t fake_now(void)
{
	return F.now;
}

static int64_t fake_add_timer(struct evloop *loop, uint64_t delay, evloop_timer_cb cb, void *arg)
{
	for (int i = 0; i < MAX_TIMERS; i++) {
		if (F.timers[i].id)
			continue;
		F.timers[i].id = ++F.next_id;
		F.timers[i].when = F.now + delay;
		F.timers[i].cb = cb;
		F.timers[i].arg = arg;
		return F.timers[i].id;
	}
	return -ENOMEM;
}

static void fake_del_timer(struct evloop *loop, int64_t id)
{
	for (int i = 0; i < MAX_TIMERS; i++)
		if (F.timers[i].id == id)
			F.timers[i].id = 0;
}

static struct health_probe *fake_probe_start(struct evloop *loop, const struct health_probe_opts *o,
					     health_probe_cb cb, void *arg)
{
	struct health_probe *p;

	if (F.fail_probe_start) {
		errno = EMFILE;
		return NULL;
	}
	p = calloc(1, sizeof(*p));
	p->cb = cb;
	p->arg = arg;
	p->idx = o->target.port - PORT0;
	F.started[p->idx]++;
	F.last_opts = *o;
	F.inflight[F.n_inflight++] = p;
	return p;
}

static void fake_probe_cancel(struct health_probe *p)
{
	for (int i = 0; i < F.n_inflight; i++)
		if (F.inflight[i] == p)
			F.inflight[i] = F.inflight[--F.n_inflight];
	F.cancelled++;
	free(p);
}

/* Every probe answers at once with its backend's verdict. */
static void complete_probes(void)
{
	while (F.n_inflight) {
		struct health_probe *p = F.inflight[--F.n_inflight];

		p->cb(F.ok[p->idx], F.ok[p->idx] ? "http status 200" : "http status 503", p->arg);
		free(p);
	}
}

/* Moves the clock to now + `ns`, firing due timers in deadline order. */
static void advance(uint64_t ns)
{
	uint64_t end = F.now + ns;

	for (;;) {
		int best = -1;

		for (int i = 0; i < MAX_TIMERS; i++)
			if (F.timers[i].id && F.timers[i].when <= end &&
			    (best < 0 || F.timers[i].when < F.timers[best].when))
				best = i;
		if (best < 0)
			break;
		F.now = F.timers[best].when;
		F.timers[best].id = 0;
		F.timers[best].cb(NULL, F.timers[best].arg);
		complete_probes();
	}
	F.now = end;
}

static void on_changed(const char *service, const struct config_endpoint *be, bool healthy,
		       const char *reason, void *arg)
{
	F.changes++;
	F.last_healthy = healthy;
	F.last_port = be->port;
	snprintf(F.last_reason, sizeof(F.last_reason), "%s", reason);
}

static void on_dropped(const char *service, const struct config_endpoint *be, void *arg)
{
	F.drops++;
	F.last_port = be->port;
}

static bool never_probe_port9(const struct config_endpoint *be, void *arg)
{
	return be->port == PORT0 + 9;
}

/* --- helpers --------------------------------------------------------------------------------- */
static struct config_backend backends[16];
static struct config_health_check hc_http = {
	.type = CONFIG_HEALTH_HTTP,
	.interval_ns = 100 * MS,
	.timeout_ns = 50 * MS,
	.unhealthy_threshold = 3,
	.healthy_threshold = 2,
	.http_path = "/health",
};

static struct health_checker *setup(void)
{
	struct health_checker_hooks hooks = {
		.changed = on_changed,
		.dropped_unhealthy = on_dropped,
		.never_probe = never_probe_port9,
		.now_ns = fake_now,
		.add_timer = fake_add_timer,
		.del_timer = fake_del_timer,
		.probe_start = fake_probe_start,
		.probe_cancel = fake_probe_cancel,
		.seed = 12345,
	};

	memset(&F, 0, sizeof(F));
	F.now = 1000 * MS;
	for (int i = 0; i < 16; i++) {
		F.ok[i] = true;
		backends[i].endpoint.family = AF_INET;
		backends[i].endpoint.addr.v4.s_addr = htonl(INADDR_LOOPBACK);
		backends[i].endpoint.port = PORT0 + i;
	}
	return health_checker_new(NULL, &hooks);
}

static void sync1(struct health_checker *c, const struct config_health_check *hc, size_t first,
		  size_t n)
{
	health_checker_begin(c);
	CHECK_INT_EQ(health_checker_service(c, "web", hc, backends + first, n), 0);
	health_checker_end(c);
}

static bool healthy(struct health_checker *c, int idx)
{
	return health_checker_healthy(c, "web", &backends[idx].endpoint);
}

/* --- tests ----------------------------------------------------------------------------------- */
TEST(new_backends_start_healthy_with_jittered_first_check)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 0, 3);
	CHECK_INT_EQ(health_checker_count(c), 3);
	CHECK(healthy(c, 0) && healthy(c, 1) && healthy(c, 2));
	/* Each first check lands somewhere inside the first interval, exactly once. */
	advance(100 * MS);
	CHECK_INT_EQ(F.started[0] + F.started[1] + F.started[2], 3);
	CHECK_INT_EQ(F.last_opts.type, CONFIG_HEALTH_HTTP);
	CHECK_STR_EQ(F.last_opts.http_path, "/health");
	CHECK_INT_EQ(F.last_opts.timeout_ns, 50 * MS);
	advance(1000 * MS);
	CHECK(F.started[0] >= 10 && F.started[0] <= 11);
	CHECK_INT_EQ(F.changes, 0);
	health_checker_free(c);
}

TEST(failing_backend_goes_down_after_threshold_and_recovers)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 0, 3);
	advance(100 * MS);
	F.ok[1] = false;
	advance(200 * MS); /* two failures: not yet */
	CHECK(healthy(c, 1));
	advance(100 * MS);
	CHECK(!healthy(c, 1));
	CHECK_INT_EQ(F.changes, 1);
	CHECK(!F.last_healthy);
	CHECK_INT_EQ(F.last_port, PORT0 + 1);
	CHECK_STR_EQ(F.last_reason, "http status 503");
	CHECK(healthy(c, 0) && healthy(c, 2));

	F.ok[1] = true;
	advance(100 * MS);
	CHECK(!healthy(c, 1));
	advance(100 * MS);
	CHECK(healthy(c, 1));
	CHECK_INT_EQ(F.changes, 2);
	CHECK(F.last_healthy);
	health_checker_free(c);
}

TEST(resync_adds_backend_and_keeps_others_state)
{
	struct health_checker *c = setup();
	int before;

	sync1(c, &hc_http, 0, 3);
	F.ok[2] = false;
	advance(400 * MS);
	CHECK(!healthy(c, 2));
	before = F.started[2];
	sync1(c, &hc_http, 0, 4);
	CHECK_INT_EQ(health_checker_count(c), 4);
	CHECK(!healthy(c, 2));
	CHECK(healthy(c, 3));
	CHECK_INT_EQ(F.changes, 1);
	CHECK_INT_EQ(F.drops, 0);
	/* The kept backend's schedule was not reset into a burst of checks. */
	advance(100 * MS);
	CHECK_INT_EQ(F.started[2], before + 1);
	CHECK(F.started[3] == 1);
	health_checker_free(c);
}

TEST(removed_unhealthy_backend_is_reported_and_stops_checking)
{
	struct health_checker *c = setup();
	int before;

	sync1(c, &hc_http, 0, 3);
	F.ok[0] = false;
	F.ok[2] = false;
	advance(400 * MS);
	before = F.started[0];
	sync1(c, &hc_http, 1, 1); /* keep only backend 1 */
	CHECK_INT_EQ(health_checker_count(c), 1);
	CHECK_INT_EQ(F.drops, 2);
	CHECK(healthy(c, 0)); /* unknown now: no check, so healthy */
	advance(1000 * MS);
	CHECK_INT_EQ(F.started[0], before);
	health_checker_free(c);
}

TEST(service_without_checks_is_dropped)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 0, 2);
	F.ok[1] = false;
	advance(400 * MS);
	health_checker_begin(c);
	health_checker_end(c);
	CHECK_INT_EQ(health_checker_count(c), 0);
	CHECK_INT_EQ(F.drops, 1);
	CHECK_INT_EQ(F.last_port, PORT0 + 1);
	CHECK(healthy(c, 1));
	health_checker_free(c);
}

TEST(retune_applies_new_settings_without_reset)
{
	struct health_checker *c = setup();
	struct config_health_check patient = hc_http, tuned = hc_http;
	int before;

	patient.unhealthy_threshold = 10;
	sync1(c, &patient, 0, 1);
	F.ok[0] = false;
	advance(500 * MS); /* five or six failures counted, still healthy */
	CHECK(healthy(c, 0));
	tuned.interval_ns = 1000 * MS;
	tuned.unhealthy_threshold = 2;
	tuned.http_path = "/ready";
	tuned.type = CONFIG_HEALTH_TCP;
	sync1(c, &tuned, 0, 1);
	CHECK(healthy(c, 0));
	before = F.started[0];
	advance(1000 * MS);
	/* About one check per new interval, and the earlier failures still counted. */
	CHECK(F.started[0] >= before + 1 && F.started[0] <= before + 2);
	CHECK(!healthy(c, 0));
	CHECK_INT_EQ(F.changes, 1);
	CHECK_INT_EQ(F.last_opts.type, CONFIG_HEALTH_TCP);
	CHECK_STR_EQ(F.last_opts.http_path, "/ready");
	health_checker_free(c);
}

TEST(vip_backend_is_never_probed)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 8, 2); /* backends 8 and 9; 9 is a "VIP" */
	advance(1000 * MS);
	CHECK(F.started[8] > 0);
	CHECK_INT_EQ(F.started[9], 0);
	CHECK(healthy(c, 9));
	health_checker_free(c);
}

TEST(probe_start_failure_is_not_the_backends_fault)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 0, 1);
	F.fail_probe_start = true;
	advance(1000 * MS);
	CHECK(healthy(c, 0));
	F.fail_probe_start = false;
	advance(200 * MS);
	CHECK(F.started[0] >= 1); /* still scheduled */
	health_checker_free(c);
}

TEST(free_cancels_probes_in_flight_without_hooks)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 0, 2);
	/* Fire the timers without answering the probes. */
	for (int i = 0; i < MAX_TIMERS; i++) {
		if (!F.timers[i].id)
			continue;
		F.timers[i].id = 0;
		F.timers[i].cb(NULL, F.timers[i].arg);
	}
	CHECK_INT_EQ(F.n_inflight, 2);
	health_checker_free(c);
	CHECK_INT_EQ(F.cancelled, 2);
	CHECK_INT_EQ(F.n_inflight, 0);
	CHECK_INT_EQ(F.changes + F.drops, 0);
}

TEST(unknown_service_is_healthy)
{
	struct health_checker *c = setup();

	CHECK(health_checker_healthy(c, "nope", &backends[0].endpoint));
	CHECK(health_checker_healthy(NULL, "nope", &backends[0].endpoint));
	health_checker_free(c);
}

TEST(assumed_state_from_a_previous_run_needs_healthy_threshold)
{
	struct health_checker *c = setup();

	sync1(c, &hc_http, 0, 2);
	CHECK_INT_EQ(health_checker_assume(c, "web", &backends[1].endpoint, false), 0);
	CHECK_INT_EQ(health_checker_assume(c, "web", &backends[5].endpoint, false), -ENOENT);
	CHECK_INT_EQ(health_checker_assume(c, "api", &backends[0].endpoint, false), -ENOENT);
	CHECK(!healthy(c, 1));
	/* Still down after one pass; back after healthy_threshold (2), with one transition. */
	advance(100 * MS);
	CHECK(!healthy(c, 1));
	CHECK_INT_EQ(F.changes, 0);
	advance(100 * MS);
	CHECK(healthy(c, 1));
	CHECK_INT_EQ(F.changes, 1);
	/* Once checked, its own results win over any assumption. */
	CHECK_INT_EQ(health_checker_assume(c, "web", &backends[1].endpoint, false), -ENOENT);
	CHECK(healthy(c, 1));
	health_checker_free(c);
}

TEST(many_services_found_by_name_after_removals)
{
	struct health_checker *c = setup();
	char name[32];

	health_checker_begin(c);
	for (int i = 0; i < 3000; i++) {
		snprintf(name, sizeof(name), "svc-%d", i);
		CHECK_INT_EQ(health_checker_service(c, name, &hc_http, backends + i % 8, 1), 0);
	}
	health_checker_end(c);
	CHECK_INT_EQ(health_checker_count(c), 3000);
	/* Keep the even ones; take svc-1000's backend down by assumption to tell it apart. */
	health_checker_begin(c);
	for (int i = 0; i < 3000; i += 2) {
		snprintf(name, sizeof(name), "svc-%d", i);
		health_checker_service(c, name, &hc_http, backends + i % 8, 1);
	}
	health_checker_end(c);
	CHECK_INT_EQ(health_checker_count(c), 1500);
	CHECK_INT_EQ(health_checker_assume(c, "svc-1000", &backends[0].endpoint, false), 0);
	CHECK_INT_EQ(health_checker_assume(c, "svc-1001", &backends[1].endpoint, false), -ENOENT);
	CHECK(!health_checker_healthy(c, "svc-1000", &backends[0].endpoint));
	CHECK(health_checker_healthy(c, "svc-1002", &backends[2].endpoint));
	health_checker_free(c);
}
