/* Health checker behind health_checker.h: services in a list, each with its effective check
 * settings and a list of targets (one per backend) holding a rise/fall state, the next-check
 * timer and the probe in flight. A check runs every `interval` after the previous one finished;
 * the first one is jittered. Sync passes mark what they see and sweep the rest. Event-loop thread
 * only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "health/health_checker.h"
#include "health/health_state.h"

#define SUBSYS "health"
#define MIN_INTERVAL_NS 10000000ull /* 10 ms: a zero interval must not spin the loop */
#define DEFAULT_TIMEOUT_NS 1000000000ull
#define SERVICE_BUCKETS                                                                            \
	1024 /* power of two; lookups by name stay O(1) with thousands of services */

struct checked_service;

struct target {
	struct checked_service *svc;
	struct config_endpoint ep;
	struct health_state st;
	int64_t timer;		    /* next check; 0 while a probe runs or when unscheduled */
	struct health_probe *probe; /* in flight, or NULL */
	bool never_probe;	    /* one of our VIPs: redirected by our datapath, so not probed */
	bool seen;		    /* named by the current sync pass */
	struct target *next;
};

struct checked_service {
	struct health_checker *c;
	char *name;
	struct config_health_check hc; /* strings owned */
	struct target *targets;
	bool seen;
	struct checked_service *next;	/* all services, for sync passes */
	struct checked_service **pprev; /* where this one is linked from (O(1) unlink) */
	struct checked_service *hnext;	/* same name bucket */
};

struct health_checker {
	struct evloop *loop;
	struct health_checker_hooks hooks;
	struct checked_service *services;
	struct checked_service *buckets[SERVICE_BUCKETS];
	uint64_t rng; /* xorshift64 state */
};

static uint32_t next_random(struct health_checker *c)
{
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return (uint32_t)(c->rng >> 32);
}

static bool endpoint_eq(const struct config_endpoint *a, const struct config_endpoint *b)
{
	if (a->family != b->family || a->port != b->port)
		return false;
	if (a->family == AF_INET6)
		return memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6)) == 0;
	return a->addr.v4.s_addr == b->addr.v4.s_addr;
}

static uint64_t check_interval(const struct checked_service *s)
{
	return s->hc.interval_ns > MIN_INTERVAL_NS ? s->hc.interval_ns : MIN_INTERVAL_NS;
}

/* FNV-1a. */
static size_t name_bucket(const char *name)
{
	uint32_t h = 2166136261u;

	while (*name)
		h = (h ^ (uint8_t)*name++) * 16777619u;
	return h & (SERVICE_BUCKETS - 1);
}

static struct checked_service *find_service(const struct health_checker *c, const char *name)
{
	struct checked_service *s;

	for (s = c->buckets[name_bucket(name)]; s; s = s->hnext)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

static void bucket_unlink(struct health_checker *c, struct checked_service *s)
{
	struct checked_service **pp = &c->buckets[name_bucket(s->name)];

	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
}

static struct target *find_target(const struct checked_service *s, const struct config_endpoint *ep)
{
	struct target *t;

	for (t = s->targets; t; t = t->next)
		if (endpoint_eq(&t->ep, ep))
			return t;
	return NULL;
}

static void target_schedule(struct target *t, uint64_t delay_ns);

static void on_probe_result(bool ok, const char *reason, void *arg)
{
	struct target *t = arg;
	struct checked_service *s = t->svc;
	const struct health_checker_hooks *hk = &s->c->hooks;
	const struct health_thresholds th = { .unhealthy = s->hc.unhealthy_threshold,
					      .healthy = s->hc.healthy_threshold };
	char ep[64];

	t->probe = NULL;
	config_endpoint_str(&t->ep, ep, sizeof(ep));
	LOG_DEBUG(SUBSYS, "health check", "service=%s backend=%s ok=%s reason=%s", s->name, ep,
		  ok ? "true" : "false", log_q(reason));
	if (health_state_record(&t->st, &th, ok, hk->now_ns())) {
		LOG_INFO(SUBSYS, "backend health changed",
			 "service=%s backend=%s healthy=%s reason=%s", s->name, ep,
			 t->st.healthy ? "true" : "false", log_q(reason));
		if (hk->changed)
			hk->changed(s->name, &t->ep, t->st.healthy, reason, hk->arg);
	}
	target_schedule(t, check_interval(s));
}

static void on_check_timer(struct evloop *loop, void *arg)
{
	struct target *t = arg;
	const struct checked_service *s = t->svc;
	struct health_checker *c = s->c;
	struct health_probe_opts opts = {
		.type = s->hc.type,
		.target = t->ep,
		.timeout_ns = s->hc.timeout_ns ? s->hc.timeout_ns : DEFAULT_TIMEOUT_NS,
		.http_path = s->hc.http_path,
		.payload = s->hc.type == CONFIG_HEALTH_DNS ? s->hc.dns_name : s->hc.udp_payload,
	};
	char ep[64];

	t->timer = 0;
	t->probe = c->hooks.probe_start(c->loop, &opts, on_probe_result, t);
	if (t->probe)
		return;
	/* Our own fault (no fd, no memory): not the backend's, so not recorded against it. */
	LOG_WARN(SUBSYS, "cannot start health check", "service=%s backend=%s err=%s", s->name,
		 config_endpoint_str(&t->ep, ep, sizeof(ep)), log_q(strerror(errno)));
	target_schedule(t, check_interval(s));
}

static void target_schedule(struct target *t, uint64_t delay_ns)
{
	struct health_checker *c = t->svc->c;

	if (t->timer > 0)
		c->hooks.del_timer(c->loop, t->timer);
	t->timer = c->hooks.add_timer(c->loop, delay_ns, on_check_timer, t);
	if (t->timer < 0) {
		/* The next sync pass reschedules targets left without a timer. */
		LOG_WARN(SUBSYS, "cannot arm health check timer", "service=%s err=%s", t->svc->name,
			 log_q(strerror((int)-t->timer)));
		t->timer = 0;
	}
}

static void target_schedule_jittered(struct target *t)
{
	target_schedule(t, health_first_delay_ns(check_interval(t->svc), next_random(t->svc->c)));
}

/* `dropped`: the check is going away while the backend may stay; report an unhealthy flag. */
static void target_free(struct target *t, bool dropped)
{
	const struct health_checker_hooks *hk = &t->svc->c->hooks;

	if (t->timer > 0)
		hk->del_timer(t->svc->c->loop, t->timer);
	if (t->probe)
		hk->probe_cancel(t->probe);
	if (dropped && !t->st.healthy && hk->dropped_unhealthy)
		hk->dropped_unhealthy(t->svc->name, &t->ep, hk->arg);
	free(t);
}

static struct target *target_new(struct checked_service *s, const struct config_endpoint *ep)
{
	const struct health_checker_hooks *hk = &s->c->hooks;
	struct target *t = calloc(1, sizeof(*t));
	char buf[64];

	if (!t)
		return NULL;
	t->svc = s;
	t->ep = *ep;
	health_state_init(&t->st, hk->now_ns());
	t->never_probe = hk->never_probe && hk->never_probe(ep, hk->arg);
	if (t->never_probe)
		LOG_WARN(SUBSYS, "backend address is a service VIP; not health checked",
			 "service=%s backend=%s", s->name,
			 config_endpoint_str(ep, buf, sizeof(buf)));
	t->next = s->targets;
	s->targets = t;
	return t;
}

static int target_sync(struct checked_service *s, const struct config_endpoint *ep)
{
	struct target *t = find_target(s, ep);

	if (!t && !(t = target_new(s, ep)))
		return -ENOMEM;
	t->seen = true;
	if (!t->never_probe && !t->timer && !t->probe)
		target_schedule_jittered(t);
	return 0;
}

static void check_strings_free(struct config_health_check *hc)
{
	free(hc->http_path);
	free(hc->udp_payload);
	free(hc->dns_name);
}

/* Applies new settings. Counters and health stay; pending checks are re-spread over a changed
 * interval; a probe in flight finishes with the settings it started with. */
static int service_retune(struct checked_service *s, const struct config_health_check *hc)
{
	bool interval_changed = s->hc.interval_ns != hc->interval_ns;
	struct config_health_check copy = *hc;
	struct target *t;

	copy.http_path = hc->http_path ? strdup(hc->http_path) : NULL;
	copy.udp_payload = hc->udp_payload ? strdup(hc->udp_payload) : NULL;
	copy.dns_name = hc->dns_name ? strdup(hc->dns_name) : NULL;
	if ((hc->http_path && !copy.http_path) || (hc->udp_payload && !copy.udp_payload) ||
	    (hc->dns_name && !copy.dns_name)) {
		check_strings_free(&copy);
		return -ENOMEM;
	}
	check_strings_free(&s->hc);
	s->hc = copy;
	if (!interval_changed)
		return 0;
	for (t = s->targets; t; t = t->next)
		if (t->timer > 0)
			target_schedule_jittered(t);
	return 0;
}

static void service_free(struct checked_service *s, bool dropped)
{
	struct target *t, *next;

	for (t = s->targets; t; t = next) {
		next = t->next;
		target_free(t, dropped);
	}
	check_strings_free(&s->hc);
	free(s->name);
	free(s);
}

static struct checked_service *service_get(struct health_checker *c, const char *name)
{
	struct checked_service *s = find_service(c, name);

	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s || !(s->name = strdup(name))) {
		free(s);
		return NULL;
	}
	s->c = c;
	s->next = c->services;
	if (s->next)
		s->next->pprev = &s->next;
	s->pprev = &c->services;
	c->services = s;
	s->hnext = c->buckets[name_bucket(name)];
	c->buckets[name_bucket(name)] = s;
	return s;
}

static uint64_t default_seed(const struct health_checker_hooks *hk)
{
	return hk->now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
}

struct health_checker *health_checker_new(struct evloop *loop,
					  const struct health_checker_hooks *hooks)
{
	struct health_checker *c = calloc(1, sizeof(*c));
	struct health_checker_hooks *hk;

	if (!c)
		return NULL;
	c->loop = loop;
	c->hooks = *hooks;
	hk = &c->hooks;
	hk->now_ns = hk->now_ns ? hk->now_ns : evloop_now_ns;
	hk->add_timer = hk->add_timer ? hk->add_timer : evloop_add_timer;
	hk->del_timer = hk->del_timer ? hk->del_timer : evloop_del_timer;
	hk->probe_start = hk->probe_start ? hk->probe_start : health_probe_start;
	hk->probe_cancel = hk->probe_cancel ? hk->probe_cancel : health_probe_cancel;
	c->rng = hk->seed ? hk->seed : default_seed(hk);
	return c;
}

void health_checker_free(struct health_checker *c)
{
	struct checked_service *s, *next;

	if (!c)
		return;
	for (s = c->services; s; s = next) {
		next = s->next;
		service_free(s, false);
	}
	free(c);
}

void health_checker_begin(struct health_checker *c)
{
	struct checked_service *s;
	struct target *t;

	for (s = c->services; s; s = s->next) {
		s->seen = false;
		for (t = s->targets; t; t = t->next)
			t->seen = false;
	}
}

int health_checker_service(struct health_checker *c, const char *name,
			   const struct config_health_check *hc,
			   const struct config_backend *backends, size_t n_backends)
{
	struct checked_service *s = service_get(c, name);
	int err;

	if (!s)
		return -ENOMEM;
	err = service_retune(s, hc);
	if (err)
		return err;
	s->seen = true;
	for (size_t i = 0; i < n_backends; i++) {
		err = target_sync(s, &backends[i].endpoint);
		if (err)
			return err;
	}
	return 0;
}

/* Removes the targets of `s` no pass named (calling dropped_unhealthy for unhealthy ones). */
static void sweep_targets(struct checked_service *s)
{
	struct target **tp, *t;

	for (tp = &s->targets; (t = *tp);) {
		if (t->seen) {
			tp = &t->next;
			continue;
		}
		*tp = t->next;
		target_free(t, true);
	}
}

static void service_unlink(struct health_checker *c, struct checked_service *s)
{
	*s->pprev = s->next;
	if (s->next)
		s->next->pprev = s->pprev;
	bucket_unlink(c, s);
}

void health_checker_end(struct health_checker *c)
{
	struct checked_service **sp = &c->services, *s;

	while ((s = *sp)) {
		if (!s->seen) {
			service_unlink(c, s);
			service_free(s, true);
			continue;
		}
		sweep_targets(s);
		sp = &s->next;
	}
}

int health_checker_set_service(struct health_checker *c, const char *name,
			       const struct config_health_check *hc,
			       const struct config_backend *backends, size_t n_backends)
{
	struct checked_service *s = find_service(c, name);
	struct target *t;
	int err;

	for (t = s ? s->targets : NULL; t; t = t->next)
		t->seen = false;
	err = health_checker_service(c, name, hc, backends, n_backends);
	if (!err)
		sweep_targets(find_service(c, name));
	return err;
}

void health_checker_remove_service(struct health_checker *c, const char *name)
{
	struct checked_service *s = find_service(c, name);

	if (!s)
		return;
	service_unlink(c, s);
	service_free(s, true);
}

bool health_checker_healthy(const struct health_checker *c, const char *service,
			    const struct config_endpoint *backend)
{
	const struct checked_service *s = c ? find_service(c, service) : NULL;
	const struct target *t = s ? find_target(s, backend) : NULL;

	return t ? t->st.healthy : true;
}

int health_checker_assume(struct health_checker *c, const char *service,
			  const struct config_endpoint *backend, bool healthy)
{
	struct checked_service *s = find_service(c, service);
	struct target *t = s ? find_target(s, backend) : NULL;

	if (!t || t->st.checks)
		return -ENOENT;
	t->st.healthy = healthy;
	return 0;
}

size_t health_checker_count(const struct health_checker *c)
{
	const struct checked_service *s;
	const struct target *t;
	size_t n = 0;

	for (s = c->services; s; s = s->next)
		for (t = s->targets; t; t = t->next)
			n++;
	return n;
}
