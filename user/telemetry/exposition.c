/* Builds meshd's exposition (exposition.h). Per-service and per-backend samples arrive one
 * object at a time from datapath_stats() but Prometheus wants each family's samples together, so
 * each collected family has its own buffer, concatenated after its HELP/TYPE at render time.
 * Runs on the event-loop thread during a scrape. */
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/prom.h"
#include "health/service_state.h"
#include "telemetry/expo_mtls.h"
#include "telemetry/exposition.h"

enum family {
	FAM_CONNECTIONS = 0,
	FAM_REJECTS,
	FAM_BYTES,
	FAM_PASSTHROUGH,
	FAM_PANIC,
	FAM_DATAGRAMS,
	FAM_DRAINED,
	FAM_ACTIVE,
	FAM_HEALTHY,
	FAM_CIRCUIT_STATE,
	FAM_CIRCUIT_TRANSITIONS,
	FAM_CONSECUTIVE_FAILURES,
	FAM_LATENCY,
	FAM_SERVICE_STATE,
	FAM_SERVICE_BACKENDS,
	FAM_SERVICE_USABLE,
	FAM_SPLIT_WEIGHT,
	FAM_SPLIT_CONNECTIONS,
	FAM_SPLIT_FALLBACKS,
	FAM_SPLIT_HEALTHY,
	FAM__COUNT,
};

static const struct {
	const char *name, *type, *help;
} families[FAM__COUNT] = {
	[FAM_CONNECTIONS] = { "meshd_connections_total", "counter",
			      "Connections to a service address by backend and outcome (ok, "
			      "failed; "
			      "rejected by the datapath is counted per service with "
			      "backend=\"\")." },
	[FAM_REJECTS] = { "meshd_rejects_total", "counter",
			  "Connections the datapath refused, by service and reason." },
	[FAM_BYTES] = { "meshd_bytes_total", "counter",
			"Bytes on connections through a service address, by direction (sent by "
			"the client, received by the client)." },
	[FAM_PASSTHROUGH] = { "meshd_passthrough_connections_total", "counter",
			      "Connections to a service address let through untouched (fail "
			      "open)." },
	[FAM_PANIC] = { "meshd_panic_connections_total", "counter",
			"Connections balanced across all backends, healthy or not, because too few "
			"were healthy (panic threshold)." },
	[FAM_DATAGRAMS] = { "meshd_udp_datagrams_total", "counter",
			    "Datagrams of a UDP service, by direction (sent by the client, "
			    "received "
			    "by the client); their payload bytes are in meshd_bytes_total." },
	[FAM_DRAINED] = { "meshd_drained_connections_total", "counter",
			  "Established connections closed by the datapath because their backend "
			  "left "
			  "the service (close_removed_after) or its breaker opened "
			  "(close_on_open)." },
	[FAM_ACTIVE] = { "meshd_backend_active_connections", "gauge",
			 "Open connections to a backend." },
	[FAM_HEALTHY] = { "meshd_backend_healthy", "gauge",
			  "1 when the backend passes its health checks, else 0." },
	[FAM_CIRCUIT_STATE] = { "meshd_backend_circuit_state", "gauge",
				"Circuit breaker state: 0 closed, 1 open, 2 half-open." },
	[FAM_CIRCUIT_TRANSITIONS] = { "meshd_circuit_transitions_total", "counter",
				      "Circuit breaker transitions of a backend, by target "
				      "state." },
	[FAM_CONSECUTIVE_FAILURES] = { "meshd_backend_consecutive_failures", "gauge",
				       "Consecutive failed connects to a backend (breaker "
				       "input)." },
	[FAM_LATENCY] = { "meshd_backend_connect_latency_seconds", "gauge",
			  "Moving average of the connect (handshake) time to a backend." },
	[FAM_SERVICE_STATE] = { "meshd_service_state", "gauge",
				"1 for the service's state (healthy, degraded, panic, down: "
				"docs/health-checks.md), 0 for the others." },
	[FAM_SERVICE_BACKENDS] = { "meshd_service_backends", "gauge",
				   "Backends of a service in the datapath." },
	[FAM_SERVICE_USABLE] = { "meshd_service_backends_usable", "gauge",
				 "Backends of a service passing health checks with a closed "
				 "breaker." },
	[FAM_SPLIT_WEIGHT] = { "meshd_split_weight_ratio", "gauge",
			       "Configured share of a subset of a split service's new connections "
			       "(0..1)." },
	[FAM_SPLIT_CONNECTIONS] = { "meshd_split_connections_total", "counter",
				    "Connections of a split service sent to each subset." },
	[FAM_SPLIT_FALLBACKS] = { "meshd_split_fallbacks_total", "counter",
				  "Connections that drew a subset with no usable backend and went "
				  "to another subset (or the whole service) instead." },
	[FAM_SPLIT_HEALTHY] = { "meshd_split_backends_healthy", "gauge",
				"Backends of a subset passing health checks (0: its share falls "
				"back to the other subsets)." },
};

/* Rendered label lists are at most a 63-byte service name and a 47-byte [ip6]:port plus syntax. */
#define LABELS_MAX 160

struct subset_entry {
	char label[96]; /* subset="..." */
	struct datapath_subset_stats st;
};

struct svc_entry {
	char labels[LABELS_MAX]; /* service="..." */
	char name[64];		 /* to match its backends, which arrive after every service */
	struct datapath_service_stats st;
	struct service_health health;
	struct subset_entry *subsets; /* [st.n_subsets], split services only */
};

struct be_entry {
	char labels[LABELS_MAX]; /* service="...",backend="..." */
	struct datapath_backend_stats st;
};

/* Label sets already collected: open addressing over entry indexes (+1; 0 = empty slot). */
struct label_set {
	uint32_t *slot;
	size_t cap; /* a power of two, at least twice the entries */
};

/* One scrape's snapshot: compact copies of the stats (a few hundred bytes per backend), rendered
 * family by family straight into the output, so no per-family text is buffered. The snapshot may
 * be collected in steps while the datapath changes (datapath_stats_step): an object that moved to
 * another id between two steps is seen twice, and only its first copy is kept, so each label set
 * appears once. */
struct exposition {
	const char *(*reason_name)(int reason);
	struct svc_entry *svcs;
	size_t n_svcs, cap_svcs;
	struct be_entry *bes;
	size_t n_bes, cap_bes;
	size_t svc_cursor; /* backends arrive grouped by service, in the services' order */
	struct label_set svc_seen, be_seen;
	int err; /* sticky -ENOMEM while collecting */
};

struct exposition *expo_new(const char *(*reason_name)(int reason))
{
	struct exposition *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->reason_name = reason_name;
	return e;
}

/* Drops the snapshot (and its memory: a large scrape must not pin megabytes while idle). */
static void expo_clear(struct exposition *e)
{
	for (size_t i = 0; i < e->n_svcs; i++)
		free(e->svcs[i].subsets);
	free(e->svcs);
	free(e->bes);
	free(e->svc_seen.slot);
	free(e->be_seen.slot);
	memset(&e->svc_seen, 0, sizeof(e->svc_seen));
	memset(&e->be_seen, 0, sizeof(e->be_seen));
	e->svcs = NULL;
	e->bes = NULL;
	e->n_svcs = e->cap_svcs = e->n_bes = e->cap_bes = e->svc_cursor = 0;
	e->err = 0;
}

void expo_free(struct exposition *e)
{
	if (!e)
		return;
	expo_clear(e);
	free(e);
}

/* Makes room for one more element of `size` bytes in *arr. Returns 0 or -ENOMEM. */
static int grow(void **arr, size_t *cap, size_t n, size_t size)
{
	size_t c = *cap ? *cap * 2 : 64;
	void *p;

	if (n < *cap)
		return 0;
	p = realloc(*arr, c * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = c;
	return 0;
}

static size_t hash_labels(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return (size_t)(h ^ (h >> 29));
}

/* The slot of `labels` in `set`: the one holding an equal label set, or the empty one where it
 * goes. Entry i's labels are at base + i * stride. */
static uint32_t *seen_slot(const struct label_set *set, const char *base, size_t stride,
			   const char *labels)
{
	size_t i = hash_labels(labels) & (set->cap - 1);

	while (set->slot[i] && strcmp(base + (set->slot[i] - 1) * stride, labels))
		i = (i + 1) & (set->cap - 1);
	return &set->slot[i];
}

/* Doubles `set` to hold more than `n` entries (the first n of base, re-inserted). */
static int seen_grow(struct label_set *set, const char *base, size_t stride, size_t n)
{
	struct label_set bigger = { .cap = set->cap ? set->cap * 2 : 256 };

	bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
	if (!bigger.slot)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		*seen_slot(&bigger, base, stride, base + i * stride) = (uint32_t)(i + 1);
	free(set->slot);
	*set = bigger;
	return 0;
}

/* Records entry `n` (its labels rendered at base + n * stride) unless an equal label set was
 * collected before. Returns 0 when recorded, 1 for a duplicate, or -ENOMEM. */
static int seen_add(struct label_set *set, const char *base, size_t stride, size_t n)
{
	uint32_t *slot;

	if (n >= UINT32_MAX - 1)
		return -ENOMEM;
	if ((n + 1) * 2 > set->cap && seen_grow(set, base, stride, n))
		return -ENOMEM;
	slot = seen_slot(set, base, stride, base + n * stride);
	if (*slot)
		return 1;
	*slot = (uint32_t)(n + 1);
	return 0;
}

/* Renders the label list into `dst` (LABELS_MAX bytes, NUL-terminated): once per object per
 * scrape, without allocating. Returns 0, or -ENAMETOOLONG. */
static int render_labels(char *dst, const char *service, const char *backend)
{
	int err;

	dst[0] = '\0';
	err = prom_label_buf(dst, LABELS_MAX, "service", service);
	if (!err && backend)
		err = prom_label_buf(dst, LABELS_MAX, "backend", backend);
	return err;
}

/* Keeps a split service's subsets (their names are only valid during the callback). */
static int copy_subsets(struct svc_entry *x, const struct datapath_service_stats *s)
{
	x->subsets = calloc(s->n_subsets, sizeof(*x->subsets));
	if (!x->subsets)
		return -ENOMEM;
	for (uint32_t i = 0; i < s->n_subsets; i++) {
		struct subset_entry *se = &x->subsets[i];

		se->label[0] = '\0';
		if (prom_label_buf(se->label, sizeof(se->label), "subset", s->subsets[i].name))
			continue; /* unrenderable: no series */
		se->st = s->subsets[i];
		se->st.name = NULL;
	}
	x->st.n_subsets = s->n_subsets;
	return 0;
}

void expo_service(const struct datapath_service_stats *s, void *arg)
{
	struct exposition *e = arg;
	struct svc_entry *x;
	int rc;

	if (e->err || (e->err = grow((void **)&e->svcs, &e->cap_svcs, e->n_svcs, sizeof(*x))))
		return;
	x = &e->svcs[e->n_svcs];
	if (render_labels(x->labels, s->service, NULL))
		return; /* unrenderable name: no series rather than a broken exposition */
	rc = seen_add(&e->svc_seen, e->svcs[0].labels, sizeof(*x), e->n_svcs);
	if (rc) {
		e->err = rc < 0 ? rc : 0;
		return;
	}
	snprintf(x->name, sizeof(x->name), "%s", s->service);
	x->st = *s;
	x->st.service = NULL; /* only valid during the callback */
	x->health = (struct service_health){ .panic_percent = s->panic_percent };
	x->subsets = NULL;
	x->st.subsets = NULL;
	x->st.n_subsets = 0;
	if (s->n_subsets && copy_subsets(x, s)) {
		e->err = -ENOMEM;
		return;
	}
	e->n_svcs++;
}

/* Counts a backend into its service's health: the services came first, in the order their
 * backends now arrive, so a cursor only moves forward. */
static void tally_backend(struct exposition *e, const struct datapath_backend_stats *b)
{
	while (e->svc_cursor < e->n_svcs && strcmp(e->svcs[e->svc_cursor].name, b->service))
		e->svc_cursor++;
	if (e->svc_cursor < e->n_svcs)
		service_health_add(&e->svcs[e->svc_cursor].health, b->healthy,
				   b->circuit == DATAPATH_CIRCUIT_CLOSED);
}

void expo_backend(const struct datapath_backend_stats *b, void *arg)
{
	struct exposition *e = arg;
	struct be_entry *x;
	char ep[64];
	int rc;

	if (e->err || (e->err = grow((void **)&e->bes, &e->cap_bes, e->n_bes, sizeof(*x))))
		return;
	x = &e->bes[e->n_bes];
	if (render_labels(x->labels, b->service,
			  config_endpoint_str(&b->backend, ep, sizeof(ep)))) {
		tally_backend(e, b);
		return;
	}
	rc = seen_add(&e->be_seen, e->bes[0].labels, sizeof(*x), e->n_bes);
	if (rc) { /* a second copy is not counted into its service's health either */
		e->err = rc < 0 ? rc : 0;
		return;
	}
	tally_backend(e, b);
	x->st = *b;
	x->st.service = NULL;
	e->n_bes++;
}

static void sample(struct strbuf *out, enum family f, const char *labels, const char *extra,
		   uint64_t v)
{
	prom_sample_u64(out, families[f].name, labels, extra, v);
}

static uint64_t rejected(const struct datapath_service_stats *s)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < 8; i++)
		sum += s->rejects[i];
	return sum;
}

static void render_rejects(struct exposition *e, struct strbuf *out, const struct svc_entry *x)
{
	char extra[96];
	int i;

	for (i = 0; i < 8; i++) {
		const char *reason = e->reason_name ? e->reason_name(i) : NULL;

		/* Unused slots of the 8-entry array have no name (or "unknown"): no series. */
		if (!reason || !strcmp(reason, "unknown") || strlen(reason) > 64)
			continue;
		snprintf(extra, sizeof(extra), "reason=\"%s\"", reason);
		sample(out, FAM_REJECTS, x->labels, extra, x->st.rejects[i]);
	}
}

/* One series per state, 1 for the service's own (a state set: alerts select state="down"). */
static void render_state(struct strbuf *out, const struct svc_entry *x)
{
	int cur = service_health_state(&x->health);
	char extra[32];

	for (int st = 0; st < SERVICE__COUNT; st++) {
		snprintf(extra, sizeof(extra), "state=\"%s\"", service_state_name(st));
		sample(out, FAM_SERVICE_STATE, x->labels, extra, st == cur);
	}
}

/* The samples of a split family for each subset of service `x`. */
static void render_subsets(struct strbuf *out, enum family f, const struct svc_entry *x)
{
	for (uint32_t i = 0; i < x->st.n_subsets; i++) {
		const struct subset_entry *se = &x->subsets[i];

		if (!se->label[0])
			continue;
		if (f == FAM_SPLIT_WEIGHT)
			prom_sample_double(out, families[f].name, x->labels, se->label,
					   se->st.weight / 10000.0);
		else if (f == FAM_SPLIT_CONNECTIONS)
			sample(out, f, x->labels, se->label, se->st.picked);
		else if (f == FAM_SPLIT_FALLBACKS)
			sample(out, f, x->labels, se->label, se->st.fallback);
		else if (f == FAM_SPLIT_HEALTHY)
			sample(out, f, x->labels, se->label, se->st.healthy);
	}
}

/* The samples of service family `f` for service entry `i`. */
static void render_svc_sample(struct exposition *e, struct strbuf *out, enum family f, size_t i)
{
	const struct svc_entry *x = &e->svcs[i];

	if (f == FAM_CONNECTIONS)
		sample(out, f, x->labels, "backend=\"\",result=\"rejected\"", rejected(&x->st));
	else if (f == FAM_REJECTS)
		render_rejects(e, out, x);
	else if (f == FAM_BYTES) {
		sample(out, f, x->labels, "direction=\"sent\"", x->st.bytes_sent);
		sample(out, f, x->labels, "direction=\"received\"", x->st.bytes_received);
	} else if (f == FAM_PASSTHROUGH) {
		sample(out, f, x->labels, NULL, x->st.passthrough);
	} else if (f == FAM_PANIC) {
		sample(out, f, x->labels, NULL, x->st.panic);
	} else if (f == FAM_DRAINED) {
		sample(out, f, x->labels, NULL, x->st.drained);
	} else if (f == FAM_DATAGRAMS && x->st.protocol == IPPROTO_UDP) {
		sample(out, f, x->labels, "direction=\"sent\"", x->st.datagrams_sent);
		sample(out, f, x->labels, "direction=\"received\"", x->st.datagrams_received);
	} else if (f == FAM_SERVICE_STATE) {
		render_state(out, x);
	} else if (f == FAM_SERVICE_BACKENDS) {
		sample(out, f, x->labels, NULL, x->health.backends);
	} else if (f == FAM_SERVICE_USABLE) {
		sample(out, f, x->labels, NULL, x->health.usable);
	} else if (f >= FAM_SPLIT_WEIGHT) {
		render_subsets(out, f, x);
	}
}

static void render_be_sample(struct strbuf *out, enum family f, const struct be_entry *x)
{
	const struct datapath_backend_stats *b = &x->st;

	switch (f) {
	case FAM_CONNECTIONS:
		sample(out, f, x->labels, "result=\"ok\"", b->conn_ok);
		sample(out, f, x->labels, "result=\"failed\"", b->conn_failed);
		break;
	case FAM_ACTIVE:
		sample(out, f, x->labels, NULL, b->active);
		break;
	case FAM_HEALTHY:
		sample(out, f, x->labels, NULL, b->healthy);
		break;
	case FAM_CIRCUIT_STATE:
		sample(out, f, x->labels, NULL, (uint64_t)b->circuit);
		break;
	case FAM_CIRCUIT_TRANSITIONS:
		sample(out, f, x->labels, "to=\"closed\"",
		       b->transitions_to[DATAPATH_CIRCUIT_CLOSED]);
		sample(out, f, x->labels, "to=\"open\"", b->transitions_to[DATAPATH_CIRCUIT_OPEN]);
		sample(out, f, x->labels, "to=\"half_open\"",
		       b->transitions_to[DATAPATH_CIRCUIT_HALF_OPEN]);
		break;
	case FAM_CONSECUTIVE_FAILURES:
		sample(out, f, x->labels, NULL, b->consecutive_failures);
		break;
	case FAM_LATENCY:
		prom_sample_nanos(out, families[f].name, x->labels, NULL, b->latency_ewma_ns);
		break;
	default:
		break;
	}
}

static void render_config(struct strbuf *out, const struct expo_daemon *d)
{
	struct strbuf l = STRBUF_INIT;

	prom_label(&l, "version", d->version ? d->version : "unknown");
	prom_family(out, "meshd_build_info", "gauge",
		    "Always 1; the version label says which meshd.");
	prom_sample_u64(out, "meshd_build_info", l.data, NULL, 1);
	strbuf_free(&l);
	prom_family(out, "meshd_up", "gauge", "Always 1 while meshd serves this endpoint.");
	prom_sample_u64(out, "meshd_up", NULL, NULL, 1);
	prom_family(out, "meshd_ready", "gauge",
		    "1 when the datapath is attached and the config loaded (as /readyz).");
	prom_sample_u64(out, "meshd_ready", NULL, NULL, d->ready);
	prom_family(out, "meshd_config_generation", "gauge",
		    "Generation of the running config: 1 at start, +1 per applied reload.");
	prom_sample_u64(out, "meshd_config_generation", NULL, NULL, d->config_generation);
	prom_family(out, "meshd_config_reloads_total", "counter",
		    "Config reloads by result (error: the old config stayed).");
	prom_sample_u64(out, "meshd_config_reloads_total", NULL, "result=\"ok\"", d->reloads[0]);
	prom_sample_u64(out, "meshd_config_reloads_total", NULL, "result=\"error\"", d->reloads[1]);
}

static void render_discovery(struct strbuf *out, const struct expo_daemon *d)
{
	struct strbuf l = STRBUF_INIT;

	prom_label(&l, "backend", d->discovery ? d->discovery : "static");
	prom_family(out, "meshd_discovery_sync_total", "counter",
		    "Discovery synchronisations by discovery backend and result.");
	prom_sample_u64(out, "meshd_discovery_sync_total", l.data, "result=\"ok\"",
			d->discovery_sync[0]);
	prom_sample_u64(out, "meshd_discovery_sync_total", l.data, "result=\"error\"",
			d->discovery_sync[1]);
	prom_family(out, "meshd_discovery_config_entry_errors_total", "counter",
		    "Consul service-splitter/-resolver entries meshd could not use (the last good "
		    "split kept).");
	prom_sample_u64(out, "meshd_discovery_config_entry_errors_total", l.data, NULL,
			d->discovery_entry_errors);
	prom_family(out, "meshd_discovery_last_sync_timestamp_seconds", "gauge",
		    "Unix time of the last successful discovery sync (0 = never).");
	prom_sample_double(out, "meshd_discovery_last_sync_timestamp_seconds", l.data, NULL,
			   d->discovery_last_sync_ts);
	prom_family(out, "meshd_discovery_up", "gauge",
		    "1 when the discovery source reaches what it discovers from (last query ok).");
	prom_sample_u64(out, "meshd_discovery_up", l.data, NULL, d->discovery_up ? 1 : 0);
	prom_family(out, "meshd_events_read_total", "counter",
		    "Records read from the datapath's event ring buffer, by type.");
	prom_sample_u64(out, "meshd_events_read_total", NULL, "type=\"circuit\"",
			d->datapath_events[0]);
	prom_sample_u64(out, "meshd_events_read_total", NULL, "type=\"reject\"",
			d->datapath_events[1]);
	strbuf_free(&l);
}

static int64_t reg_up(const struct discovery_registration *r)
{
	return r->registered;
}
static int64_t reg_writes(const struct discovery_registration *r)
{
	return (int64_t)r->registrations;
}
static int64_t reg_lost(const struct discovery_registration *r)
{
	return (int64_t)r->lost;
}
static int64_t reg_failures(const struct discovery_registration *r)
{
	return r->failures;
}
static int64_t reg_ttl(const struct discovery_registration *r)
{
	return r->ttl; /* -1 (no ttl check, or not reported yet): no sample */
}

/* The families of the Consul registrations, one sample per registration each. */
static const struct reg_family {
	const char *name, *type, *help;
	int64_t (*get)(const struct discovery_registration *r);
} reg_families[] = {
	{ "meshd_consul_registration_up", "gauge",
	  "1 while the Consul agent holds this registration, as far as meshd knows.", reg_up },
	{ "meshd_consul_registrations_total", "counter",
	  "Successful registration writes (re-registrations included).", reg_writes },
	{ "meshd_consul_registration_lost_total", "counter",
	  "Times the agent was found without this registration (then written again).", reg_lost },
	{ "meshd_consul_registration_failures", "gauge",
	  "Consecutive failed registration writes (0 once one succeeds).", reg_failures },
	{ "meshd_consul_ttl_check_passing", "gauge",
	  "TTL check status last reported to Consul: 1 passing, 0 critical.", reg_ttl },
};

/* The Consul registrations (discovery.consul.register): families only when there are some. */
static void render_registrations(struct strbuf *out, const struct expo_daemon *d)
{
	for (size_t f = 0; d->n_regs && f < sizeof(reg_families) / sizeof(reg_families[0]); f++) {
		const struct reg_family *rf = &reg_families[f];

		prom_family(out, rf->name, rf->type, rf->help);
		for (size_t i = 0; i < d->n_regs; i++) {
			struct strbuf l = STRBUF_INIT;
			int64_t v = rf->get(&d->regs[i]);

			if (v < 0)
				continue;
			prom_label(&l, "id", d->regs[i].id);
			prom_label(&l, "service", d->regs[i].service);
			prom_sample_u64(out, rf->name, l.data, NULL, (uint64_t)v);
			strbuf_free(&l);
		}
	}
}

/* Services that fail over across datacenters: which datacenter serves each. */
static void render_failover(struct strbuf *out, const struct expo_daemon *d)
{
	if (!d->n_failover)
		return;
	prom_family(
	    out, "meshd_consul_failover_active", "gauge",
	    "1 while a service with discovery.consul.failover serves instances of another "
	    "datacenter (label datacenter), 0 while the local one serves (datacenter=\"\").");
	for (size_t i = 0; i < d->n_failover; i++) {
		struct strbuf l = STRBUF_INIT;

		prom_label(&l, "service", d->failover[i].service);
		prom_label(&l, "datacenter", d->failover[i].datacenter);
		prom_sample_u64(out, "meshd_consul_failover_active", l.data, NULL,
				d->failover[i].datacenter[0] != '\0');
		strbuf_free(&l);
	}
}

/* How long the event loop's iterations take: a histogram and the longest one. */
static void render_loop(struct strbuf *out, const struct expo_daemon *d)
{
	static const char *const name = "meshd_event_loop_iteration_seconds";
	uint64_t cum = 0;
	char le[48], bucket[80];

	prom_family(out, name, "histogram",
		    "Time the event loop spends per iteration (callbacks, not waiting).");
	snprintf(bucket, sizeof(bucket), "%s_bucket", name);
	for (int i = 0; i < EVLOOP_HIST_BUCKETS; i++) {
		cum += d->loop.hist[i];
		if (evloop_hist_le_ns[i] == UINT64_MAX)
			snprintf(le, sizeof(le), "le=\"+Inf\"");
		else
			snprintf(le, sizeof(le), "le=\"%g\"", (double)evloop_hist_le_ns[i] / 1e9);
		prom_sample_u64(out, bucket, NULL, le, cum);
	}
	snprintf(bucket, sizeof(bucket), "%s_sum", name);
	prom_sample_nanos(out, bucket, NULL, NULL, d->loop.sum_ns);
	snprintf(bucket, sizeof(bucket), "%s_count", name);
	prom_sample_u64(out, bucket, NULL, NULL, d->loop.iterations);
	prom_family(out, "meshd_event_loop_iteration_max_seconds", "gauge",
		    "Longest event-loop iteration since meshd started.");
	prom_sample_nanos(out, "meshd_event_loop_iteration_max_seconds", NULL, NULL,
			  d->loop.max_ns);
}

static void render_daemon_misc(struct strbuf *out, const struct expo_daemon *d)
{
	expo_mtls_render(out, d->mtls);
	prom_family(out, "meshd_health_transitions_total", "counter",
		    "Backend health-check state changes by new state.");
	prom_sample_u64(out, "meshd_health_transitions_total", NULL, "to=\"unhealthy\"",
			d->health_transitions[0]);
	prom_sample_u64(out, "meshd_health_transitions_total", NULL, "to=\"healthy\"",
			d->health_transitions[1]);
	render_loop(out, d);
	if (d->rss_bytes) {
		prom_family(out, "process_resident_memory_bytes", "gauge",
			    "Resident memory of meshd.");
		prom_sample_u64(out, "process_resident_memory_bytes", NULL, NULL, d->rss_bytes);
	}
	prom_family(out, "process_start_time_seconds", "gauge", "Unix time meshd started.");
	prom_sample_double(out, "process_start_time_seconds", NULL, NULL, d->start_time_seconds);
}

static void render_tracing(struct strbuf *out, const struct expo_daemon *d)
{
	prom_family(out, "meshd_trace_spans_exported_total", "counter",
		    "Connection spans the OTLP collector accepted.");
	prom_sample_u64(out, "meshd_trace_spans_exported_total", NULL, NULL, d->trace_exported);
	prom_family(out, "meshd_trace_spans_dropped_total", "counter",
		    "Connection spans lost: exporter queue full, export failed after retries, "
		    "datapath ring buffer full.");
	prom_sample_u64(out, "meshd_trace_spans_dropped_total", NULL, "reason=\"queue_full\"",
			d->trace_dropped_full);
	prom_sample_u64(out, "meshd_trace_spans_dropped_total", NULL, "reason=\"export_failed\"",
			d->trace_dropped_error);
	prom_sample_u64(out, "meshd_trace_spans_dropped_total", NULL, "reason=\"ringbuf_full\"",
			d->trace_dropped_ringbuf);
	prom_family(out, "meshd_trace_exports_total", "counter",
		    "OTLP export requests by result (a retried batch counts each attempt).");
	prom_sample_u64(out, "meshd_trace_exports_total", NULL, "result=\"ok\"",
			d->trace_exports[0]);
	prom_sample_u64(out, "meshd_trace_exports_total", NULL, "result=\"error\"",
			d->trace_exports[1]);
}

static void render_datapath_counters(struct strbuf *out, const struct expo_daemon *d)
{
	char extra[96];
	size_t i;

	prom_family(out, "meshd_datapath_events_total", "counter",
		    "Decisions and outcomes counted by the BPF programs for the whole host, summed "
		    "over CPUs (connect, redirected, rejected, passthrough, established, ...).");
	for (i = 0; i < d->n_datapath_counters && i < EXPO_COUNTERS_MAX; i++) {
		const char *name = d->counter_name ? d->counter_name((int)i) : NULL;

		if (!name || strlen(name) > 64)
			continue;
		snprintf(extra, sizeof(extra), "event=\"%s\"", name);
		prom_sample_u64(out, "meshd_datapath_events_total", NULL, extra,
				d->datapath_counters[i]);
	}
}

/* Renders up to `max` entries (services, then backends) of family `f` from pos->next on. */
static void render_family_step(struct exposition *e, enum family f, struct expo_pos *pos,
			       size_t max, struct strbuf *out)
{
	size_t end = e->n_svcs + e->n_bes;

	if (pos->next == 0)
		prom_family(out, families[f].name, families[f].type, families[f].help);
	if (end - pos->next > max)
		end = pos->next + max;
	for (; pos->next < end; pos->next++) {
		if (pos->next < e->n_svcs)
			render_svc_sample(e, out, f, pos->next);
		else
			render_be_sample(out, f, &e->bes[pos->next - e->n_svcs]);
	}
	if (pos->next == e->n_svcs + e->n_bes) {
		pos->part++;
		pos->next = 0;
	}
}

int expo_render_step(struct exposition *e, const struct expo_daemon *d, struct expo_pos *pos,
		     size_t max, struct strbuf *out)
{
	if (e->err)
		return e->err;
	if (pos->part == 0) {
		render_config(out, d);
		render_discovery(out, d);
		render_registrations(out, d);
		render_failover(out, d);
		render_daemon_misc(out, d);
		render_tracing(out, d);
		render_datapath_counters(out, d);
		pos->part++;
		pos->next = 0;
	} else if (pos->part <= FAM__COUNT) {
		render_family_step(e, (enum family)(pos->part - 1), pos, max ? max : 1, out);
	}
	if (strbuf_error(out))
		return strbuf_error(out);
	return pos->part <= FAM__COUNT ? 1 : 0;
}

int expo_render(struct exposition *e, const struct expo_daemon *d, struct strbuf *out)
{
	struct expo_pos pos = { 0 };
	int rc;

	/* One allocation for the whole text: ~900 bytes per backend, ~500 per service. */
	strbuf_reserve(out, 16384 + e->n_bes * 1024 + e->n_svcs * 512);
	do
		rc = expo_render_step(e, d, &pos, SIZE_MAX, out);
	while (rc == 1);
	expo_clear(e);
	return rc;
}
