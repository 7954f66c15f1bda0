/* The admin component: JSON over HTTP/1.1 on the unix socket admin.socket (mode 0600, in a 0700
 * directory) for meshctl. Read endpoints render the running config and a fresh datapath snapshot;
 * POST /v1/reload runs meshd_reload() and reports the result with every config problem. Runs on
 * the event-loop thread; responses are built with cJSON (building only, never config walking). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/http.h"
#include "common/log.h"
#include "discovery/discovery.h"
#include "health/service_state.h"
#include "meshd/meshd.h"

/* A listener left behind by a socket move: it accepts nothing more and serves the connections
 * it has (a POST /v1/reload that moved the socket gets its answer) until its timer frees it. */
struct retired {
	struct admin *a;
	struct http_server *srv;
	int64_t timer;
	struct retired *next;
};

struct admin {
	struct meshd *m;
	struct http_server *srv;
	char *path;
	struct retired *retired; /* every earlier listener not freed yet */
};

/* One datapath snapshot: per-service aggregates and (optionally filtered) backend objects. */
struct snap {
	const struct meshd *m;
	const char *only; /* collect backends of this service only, NULL = all */
	cJSON *services;  /* object: name -> aggregate counters */
	cJSON *backends;  /* array of backend objects */
	bool circuits;	  /* backend objects in /v1/circuits shape */
	cJSON *last;	  /* last aggregate looked up: backends arrive grouped by service */
};

static const char *algorithm_name(enum mesh_lb_algorithm a)
{
	static const char *const names[] = { "random",	 "round_robin", "least_request",
					     "weighted", "maglev",	"peak_ewma" };

	return (unsigned)a < sizeof(names) / sizeof(names[0]) ? names[a] : "unknown";
}

static double num_field(const cJSON *o, const char *key)
{
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(n) ? n->valuedouble : 0;
}

static cJSON *svc_agg(struct snap *s, const char *name)
{
	cJSON *o;

	if (s->last && !strcmp(s->last->string, name))
		return s->last;
	o = cJSON_GetObjectItemCaseSensitive(s->services, name);
	if (o)
		return s->last = o;
	o = cJSON_AddObjectToObject(s->services, name);
	if (!o)
		return NULL;
	s->last = o;
	cJSON_AddNumberToObject(o, "backends", 0);
	cJSON_AddNumberToObject(o, "healthy_backends", 0);
	cJSON_AddNumberToObject(o, "usable_backends", 0);
	cJSON_AddNumberToObject(o, "open_circuits", 0);
	cJSON_AddNumberToObject(o, "active_connections", 0);
	return o;
}

static void add_to(cJSON *o, const char *key, double v)
{
	cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);

	if (n)
		cJSON_SetNumberValue(n, n->valuedouble + v);
	else
		cJSON_AddNumberToObject(o, key, v);
}

/* "split": the service's subsets with their configured weight and observed share (of the
 * connects sent to any subset), counts and backends. */
static void snap_split(cJSON *o, const struct datapath_service_stats *st)
{
	cJSON *arr = cJSON_AddArrayToObject(o, "split");
	uint64_t total = 0;
	uint32_t i;

	for (i = 0; i < st->n_subsets; i++)
		total += st->subsets[i].picked;
	for (i = 0; arr && i < st->n_subsets; i++) {
		const struct datapath_subset_stats *ss = &st->subsets[i];
		cJSON *e = cJSON_CreateObject();

		if (!e || !cJSON_AddItemToArray(arr, e))
			return;
		cJSON_AddStringToObject(e, "subset", ss->name);
		cJSON_AddNumberToObject(e, "weight_percent", ss->weight / 100.0);
		cJSON_AddNumberToObject(e, "share_percent",
					total ? 100.0 * (double)ss->picked / (double)total : 0);
		cJSON_AddNumberToObject(e, "connections_total", (double)ss->picked);
		cJSON_AddNumberToObject(e, "fallbacks_total", (double)ss->fallback);
		cJSON_AddNumberToObject(e, "backends", ss->backends);
		cJSON_AddNumberToObject(e, "healthy_backends", ss->healthy);
	}
}

static void snap_service(const struct datapath_service_stats *st, void *arg)
{
	struct snap *s = arg;
	cJSON *o = svc_agg(s, st->service);
	uint64_t rejected = 0;
	int i;

	if (!o)
		return;
	for (i = 0; i < 8; i++)
		rejected += st->rejects[i];
	add_to(o, "rejected_total", (double)rejected);
	/* The service's own count: it keeps connections to backends removed since (the sum over
	 * the backends listed now would drop them). */
	add_to(o, "active_connections", (double)(st->active > 0 ? st->active : 0));
	add_to(o, "bytes_sent_total", (double)st->bytes_sent);
	add_to(o, "bytes_received_total", (double)st->bytes_received);
	add_to(o, "panic_threshold_percent", st->panic_percent);
	if (st->n_subsets && !cJSON_GetObjectItemCaseSensitive(o, "split"))
		snap_split(o, st);
}

static void circuit_fields(cJSON *o, const struct datapath_backend_stats *b)
{
	uint64_t now = evloop_now_ns();
	double remaining = 0;

	if (b->circuit != DATAPATH_CIRCUIT_CLOSED && b->open_until_ns > now)
		remaining = (double)(b->open_until_ns - now) / 1e9;
	cJSON_AddStringToObject(o, "circuit", datapath_circuit_name((int)b->circuit));
	cJSON_AddNumberToObject(o, "consecutive_failures", b->consecutive_failures);
	cJSON_AddNumberToObject(o, "open_remaining_seconds", remaining);
	cJSON_AddNumberToObject(o, "transitions_to_open", (double)b->transitions_to[1]);
	cJSON_AddNumberToObject(o, "transitions_to_half_open", (double)b->transitions_to[2]);
	cJSON_AddNumberToObject(o, "transitions_to_closed", (double)b->transitions_to[0]);
}

static void snap_backend(const struct datapath_backend_stats *b, void *arg)
{
	struct snap *s = arg;
	cJSON *agg = svc_agg(s, b->service), *o;
	char ep[64];

	if (agg) {
		add_to(agg, "backends", 1);
		add_to(agg, "healthy_backends", b->healthy);
		add_to(agg, "usable_backends", b->healthy && b->circuit == DATAPATH_CIRCUIT_CLOSED);
		add_to(agg, "open_circuits", b->circuit == DATAPATH_CIRCUIT_OPEN);
	}
	if (!s->backends || (s->only && strcmp(s->only, b->service)))
		return;
	o = cJSON_CreateObject();
	if (!o || !cJSON_AddItemToArray(s->backends, o))
		return;
	cJSON_AddStringToObject(o, "service", b->service);
	cJSON_AddStringToObject(o, "address", config_endpoint_str(&b->backend, ep, sizeof(ep)));
	if (!s->circuits) {
		cJSON_AddNumberToObject(o, "weight", b->weight);
		cJSON_AddBoolToObject(o, "healthy", b->healthy);
		cJSON_AddNumberToObject(o, "active_connections", (double)b->active);
		cJSON_AddNumberToObject(o, "connections_ok_total", (double)b->conn_ok);
		cJSON_AddNumberToObject(o, "connections_failed_total", (double)b->conn_failed);
		cJSON_AddNumberToObject(o, "latency_ewma_seconds",
					(double)b->latency_ewma_ns / 1e9);
	}
	circuit_fields(o, b);
}

enum snap_mode {
	SNAP_AGGREGATES = 0, /* per-service sums only */
	SNAP_BACKENDS = 1,   /* plus full backend objects */
	SNAP_CIRCUITS = 2,   /* plus backend objects in circuit shape */
};

/* Adds "state" to each service aggregate, from the counts the snapshot summed. */
static void snap_states(struct snap *s)
{
	cJSON *agg;

	cJSON_ArrayForEach(agg, s->services)
	{
		struct service_health h = {
			.backends = (uint32_t)num_field(agg, "backends"),
			.healthy = (uint32_t)num_field(agg, "healthy_backends"),
			.usable = (uint32_t)num_field(agg, "usable_backends"),
			.panic_percent = (uint32_t)num_field(agg, "panic_threshold_percent"),
		};

		cJSON_AddStringToObject(agg, "state", service_state_name(service_health_state(&h)));
	}
}

/* Fills `s` from the datapath (no-op without one). Returns 0 or -errno. */
static int snap_take(struct snap *s, const struct meshd *m, const char *only, enum snap_mode mode)
{
	int err;

	memset(s, 0, sizeof(*s));
	s->m = m;
	s->only = only;
	s->circuits = mode == SNAP_CIRCUITS;
	s->services = cJSON_CreateObject();
	s->backends = mode != SNAP_AGGREGATES ? cJSON_CreateArray() : NULL;
	if (!s->services || (mode != SNAP_AGGREGATES && !s->backends))
		return -ENOMEM;
	err = m->dp ? datapath_stats(m->dp, snap_service, snap_backend, s) : 0;
	snap_states(s);
	return err;
}

static void snap_free(struct snap *s)
{
	cJSON_Delete(s->services);
	cJSON_Delete(s->backends);
}

static void reply_json(struct http_response *resp, int status, cJSON *root)
{
	char *text = root ? cJSON_PrintUnformatted(root) : NULL;

	cJSON_Delete(root);
	resp->content_type = "application/json";
	if (!text) {
		resp->status = 500;
		strbuf_puts(&resp->body, "{\"error\":\"out of memory\"}\n");
		return;
	}
	resp->status = status;
	strbuf_puts(&resp->body, text);
	strbuf_putc(&resp->body, '\n');
	free(text);
}

static void reply_error(struct http_response *resp, int status, const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "error", msg);
	reply_json(resp, status, o);
}

static double sum_field(const cJSON *services, const char *key)
{
	const cJSON *svc;
	double total = 0;

	cJSON_ArrayForEach(svc, services)
	{
		const cJSON *n = cJSON_GetObjectItemCaseSensitive(svc, key);

		total += cJSON_IsNumber(n) ? n->valuedouble : 0;
	}
	return total;
}

static void add_string_or_null(cJSON *o, const char *key, const char *v)
{
	if (v)
		cJSON_AddStringToObject(o, key, v);
	else
		cJSON_AddNullToObject(o, key);
}

/* "unhealthy_services": every service not in state healthy, with its counts. */
static void add_unhealthy(cJSON *o, const cJSON *services)
{
	cJSON *arr = cJSON_AddArrayToObject(o, "unhealthy_services");
	const cJSON *agg;

	cJSON_ArrayForEach(agg, services)
	{
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(agg, "state");
		cJSON *u;

		if (!cJSON_IsString(st) || !strcmp(st->valuestring, "healthy"))
			continue;
		u = cJSON_CreateObject();
		cJSON_AddStringToObject(u, "name", agg->string);
		cJSON_AddStringToObject(u, "state", st->valuestring);
		cJSON_AddNumberToObject(u, "backends", num_field(agg, "backends"));
		cJSON_AddNumberToObject(u, "usable_backends", num_field(agg, "usable_backends"));
		cJSON_AddNumberToObject(u, "healthy_backends", num_field(agg, "healthy_backends"));
		cJSON_AddItemToArray(arr, u);
	}
}

/* The running source's registrations (discovery.consul.register) and the state of each. */
static void add_registrations(struct meshd *m, cJSON *o)
{
	cJSON *arr = cJSON_AddArrayToObject(o, "registrations"), *r;
	struct discovery_registration reg;

	for (size_t i = 0; arr && discovery_registration(m->discovery, i, &reg) == 0; i++) {
		r = cJSON_CreateObject();
		if (!r || !cJSON_AddItemToArray(arr, r))
			break;
		cJSON_AddStringToObject(r, "id", reg.id);
		cJSON_AddStringToObject(r, "service", reg.service);
		cJSON_AddBoolToObject(r, "registered", reg.registered);
		cJSON_AddNumberToObject(r, "failures", reg.failures);
		cJSON_AddNumberToObject(r, "registrations", (double)reg.registrations);
		cJSON_AddNumberToObject(r, "lost", (double)reg.lost);
		if (reg.error[0]) {
			cJSON_AddNumberToObject(r, "status", (double)reg.status);
			cJSON_AddStringToObject(r, "error", reg.error);
		}
		if (reg.ttl >= 0)
			cJSON_AddStringToObject(r, "ttl", reg.ttl ? "passing" : "critical");
	}
}

static void get_status(struct meshd *m, struct http_response *resp)
{
	static const char *const keys[] = { "backends", "healthy_backends", "open_circuits",
					    "active_connections" };
	cJSON *o = cJSON_CreateObject(), *r;
	struct discovery_stats ds;
	struct snap s;
	int err = snap_take(&s, m, NULL, SNAP_AGGREGATES);
	size_t i;

	discovery_get_stats(m->discovery, &ds);
	cJSON_AddStringToObject(o, "version", MESH_VERSION);
	cJSON_AddNumberToObject(o, "pid", getpid());
	cJSON_AddNumberToObject(o, "uptime_seconds",
				(double)(evloop_now_ns() - m->started_at_ns) / 1e9);
	cJSON_AddNumberToObject(o, "config_generation", (double)m->cfg->generation);
	add_string_or_null(o, "config_path", m->config_path);
	add_string_or_null(o, "node", m->cfg->node_name);
	cJSON_AddStringToObject(o, "discovery", ds.source);
	cJSON_AddBoolToObject(o, "ready", m->ready);
	cJSON_AddBoolToObject(o, "datapath_attached", m->dp != NULL);
	cJSON_AddBoolToObject(o, "datapath_adopted", m->dp && datapath_adopted(m->dp));
	cJSON_AddNumberToObject(o, "services", (double)m->cfg->n_services);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		cJSON_AddNumberToObject(o, keys[i], sum_field(s.services, keys[i]));
	r = cJSON_AddObjectToObject(o, "reloads");
	cJSON_AddNumberToObject(r, "ok", (double)m->reloads[MESHD_RELOAD_OK]);
	cJSON_AddNumberToObject(r, "error", (double)m->reloads[MESHD_RELOAD_ERROR]);
	add_unhealthy(o, s.services);
	add_registrations(m, o);
	if (err)
		cJSON_AddStringToObject(o, "datapath_error", strerror(-err));
	snap_free(&s);
	reply_json(resp, 200, o);
}

static cJSON *service_object(const char *name, const struct config_service *svc, const cJSON *agg)
{
	cJSON *o = cJSON_CreateObject(), *n;
	char ep[64];

	cJSON_AddStringToObject(o, "name", name);
	if (svc) {
		cJSON_AddStringToObject(o, "vip", config_endpoint_str(&svc->vip, ep, sizeof(ep)));
		cJSON_AddStringToObject(o, "algorithm",
					algorithm_name(svc->load_balancer.algorithm));
		cJSON_AddBoolToObject(o, "mtls", svc->mtls);
		cJSON_AddNumberToObject(o, "configured_backends", (double)svc->n_backends);
	}
	cJSON_ArrayForEach(n, agg)
	{
		if (cJSON_IsString(n))
			cJSON_AddStringToObject(o, n->string, n->valuestring);
		else if (cJSON_IsArray(n))
			cJSON_AddItemToObject(o, n->string, cJSON_Duplicate(n, 1));
		else
			cJSON_AddNumberToObject(o, n->string, n->valuedouble);
	}
	return o;
}

static void get_services(struct meshd *m, struct http_response *resp)
{
	cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "services"), *agg;
	struct snap s;
	int err = snap_take(&s, m, NULL, SNAP_AGGREGATES);
	size_t i;

	for (i = 0; i < m->cfg->n_services; i++) {
		const struct config_service *svc = &m->cfg->services[i];

		agg = cJSON_GetObjectItemCaseSensitive(s.services, svc->name);
		cJSON_AddItemToArray(arr, service_object(svc->name, svc, agg));
	}
	/* Services the datapath knows from discovery but the config file does not list (those
	 * the Consul catalog defines among them). */
	cJSON_ArrayForEach(agg, s.services)
	{
		if (!config_service_find(m->cfg, agg->string))
			cJSON_AddItemToArray(
			    arr, service_object(agg->string,
						discovery_find(m->discovery, agg->string), agg));
	}
	cJSON_ArrayForEach(agg, arr)
	{
		const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(agg, "name"));

		cJSON_AddStringToObject(
		    agg, "origin", discovery_defined(m->discovery, name) ? "catalog" : "config");
	}
	if (err)
		cJSON_AddStringToObject(root, "datapath_error", strerror(-err));
	snap_free(&s);
	reply_json(resp, 200, root);
}

/* Without a datapath (not attached yet) the configured backends are all there is to show. */
static void config_backends(const struct config_service *svc, cJSON *arr)
{
	char ep[64];
	size_t i;

	for (i = 0; svc && i < svc->n_backends; i++) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "service", svc->name);
		cJSON_AddStringToObject(
		    o, "address", config_endpoint_str(&svc->backends[i].endpoint, ep, sizeof(ep)));
		cJSON_AddNumberToObject(o, "weight", svc->backends[i].weight);
		cJSON_AddItemToArray(arr, o);
	}
}

/* For a service that fails over across datacenters: which one its backends come from. */
static void add_failover(struct meshd *m, const char *name, cJSON *o)
{
	const char *dc;

	if (!discovery_failover(m->discovery, name, &dc))
		return;
	cJSON_AddStringToObject(o, "datacenter", dc ? dc : "local");
	cJSON_AddBoolToObject(o, "failover", dc != NULL);
}

static void get_backends(struct meshd *m, const char *name, struct http_response *resp)
{
	const struct config_service *svc = config_service_find(m->cfg, name);
	cJSON *root;
	struct snap s;
	int err = snap_take(&s, m, name, SNAP_BACKENDS);

	if (!svc)
		svc = discovery_find(m->discovery, name);

	if (!svc && !cJSON_GetObjectItemCaseSensitive(s.services, name)) {
		snap_free(&s);
		reply_error(resp, 404, "no such service");
		return;
	}
	root = cJSON_CreateObject();
	cJSON_AddStringToObject(root, "service", name);
	cJSON_AddStringToObject(root, "origin",
				discovery_defined(m->discovery, name) ? "catalog" : "config");
	add_failover(m, name, root);
	if (!m->dp)
		config_backends(svc, s.backends);
	cJSON_AddItemToObject(root, "backends", s.backends);
	s.backends = NULL;
	if (err)
		cJSON_AddStringToObject(root, "datapath_error", strerror(-err));
	snap_free(&s);
	reply_json(resp, 200, root);
}

static void get_circuits(struct meshd *m, struct http_response *resp)
{
	cJSON *root = cJSON_CreateObject();
	struct snap s;
	int err = snap_take(&s, m, NULL, SNAP_CIRCUITS);
	cJSON_AddItemToObject(root, "circuits", s.backends);
	s.backends = NULL;
	if (err)
		cJSON_AddStringToObject(root, "datapath_error", strerror(-err));
	snap_free(&s);
	reply_json(resp, 200, root);
}

static void get_config(struct meshd *m, struct http_response *resp)
{
	char *json = config_to_json(m->cfg);

	if (!json) {
		reply_error(resp, 500, "cannot render config");
		return;
	}
	resp->content_type = "application/json";
	strbuf_puts(&resp->body, json);
	strbuf_putc(&resp->body, '\n');
	free(json);
}

/* After a failed reload, loads the file again only to collect every problem for the caller. */
static void add_reload_errors(struct meshd *m, cJSON *root, int err)
{
	struct config_errors errs = { 0 };
	struct mesh_config *cfg = config_load(m->config_path, NULL, &errs);
	cJSON *arr = cJSON_AddArrayToObject(root, "errors");
	size_t i;

	for (i = 0; i < errs.n; i++)
		cJSON_AddItemToArray(arr, cJSON_CreateString(errs.msgs[i]));
	if (cfg) /* valid file: applying it failed */
		cJSON_AddItemToArray(arr, cJSON_CreateString(strerror(-err)));
	config_free(cfg);
	config_errors_free(&errs);
}

static void post_reload(struct meshd *m, struct http_response *resp)
{
	cJSON *root = cJSON_CreateObject();
	int err;

	LOG_INFO("admin", "reload requested", "path=%s",
		 log_q(m->config_path ? m->config_path : ""));
	err = meshd_reload(m);
	cJSON_AddStringToObject(root, "result", err ? "error" : "ok");
	cJSON_AddNumberToObject(root, "config_generation", (double)m->cfg->generation);
	if (err)
		add_reload_errors(m, root, err);
	reply_json(resp, err ? 422 : 200, root);
}

/* GET /v1/services/NAME/backends: copies NAME into `name`; true when the path has that shape. */
static bool service_backends_path(const char *path, char *name, size_t len)
{
	const char *p = path + strlen("/v1/services/"), *slash;

	if (strncmp(path, "/v1/services/", strlen("/v1/services/")))
		return false;
	slash = strchr(p, '/');
	if (!slash || strcmp(slash, "/backends") || slash == p || (size_t)(slash - p) >= len)
		return false;
	memcpy(name, p, (size_t)(slash - p));
	name[slash - p] = '\0';
	return true;
}

static void route_get(struct meshd *m, const struct http_request *req, struct http_response *resp)
{
	char name[CONFIG_NAME_MAX + 1];

	if (!strcmp(req->path, "/v1/status"))
		get_status(m, resp);
	else if (!strcmp(req->path, "/v1/services"))
		get_services(m, resp);
	else if (!strcmp(req->path, "/v1/circuits"))
		get_circuits(m, resp);
	else if (!strcmp(req->path, "/v1/config"))
		get_config(m, resp);
	else if (!strcmp(req->path, "/v1/mtls/identities"))
		reply_json(resp, 200, meshd_mtls_json(m, "identities"));
	else if (!strcmp(req->path, "/v1/mtls/pool"))
		reply_json(resp, 200, meshd_mtls_json(m, "pool"));
	else if (service_backends_path(req->path, name, sizeof(name)))
		get_backends(m, name, resp);
	else if (strcmp(req->path, "/v1/backends"))
		reply_error(resp, 404, "no such endpoint");
	else if (http_query_get(req->query, "service", name, sizeof(name)) || !name[0])
		reply_error(resp, 400, "missing ?service=NAME");
	else
		get_backends(m, name, resp);
}

static void admin_handle(const struct http_request *req, struct http_response *resp, void *arg)
{
	struct admin *a = arg;
	bool reload = !strcmp(req->path, "/v1/reload");

	if (req->method == HTTP_METHOD_POST && reload)
		post_reload(a->m, resp);
	else if (req->method == HTTP_METHOD_POST || reload)
		reply_error(resp, 405, reload ? "use POST" : "use GET");
	else
		route_get(a->m, req, resp);
}

static struct http_server *listen_at(struct admin *a, const char *path)
{
	static const struct http_server_opts opts = { .name = "admin", .timeout_ms = 30000 };
	struct http_server *srv = http_server_listen_unix(a->m->loop, path, &opts, admin_handle, a);

	if (!srv) {
		int err = errno;

		LOG_ERR("admin", "cannot listen", "socket=%s err=%s", log_q(path),
			log_q(strerror(err)));
		errno = err;
		return NULL;
	}
	LOG_INFO("admin", "listening", "socket=%s", log_q(path));
	return srv;
}

/* Starts the admin API on m->cfg->admin_socket. Returns 0 or -errno (EADDRINUSE when another
 * meshd answers on that socket, EEXIST when the path is not a socket). */
int admin_start(struct meshd *m)
{
	struct admin *a = calloc(1, sizeof(*a));
	int err;

	if (!a)
		return -ENOMEM;
	a->m = m;
	a->path = strdup(m->cfg->admin_socket);
	if (!a->path) {
		err = -ENOMEM;
		goto err_free;
	}
	a->srv = listen_at(a, a->path);
	if (!a->srv) {
		err = -errno;
		goto err_free;
	}
	m->admin = a;
	return 0;

err_free:
	free(a->path);
	free(a);
	return err;
}

/* Frees retired listener `r` (unlinked from its admin's list first). */
static void retired_free(struct retired *r)
{
	struct retired **p = &r->a->retired;

	while (*p != r)
		p = &(*p)->next;
	*p = r->next;
	http_server_free(r->srv);
	free(r);
}

static void retired_expire(struct evloop *loop, void *arg)
{
	retired_free(arg);
}

/* Closes the socket (and removes its path) and every client connection. Safe when not started. */
void admin_stop(struct meshd *m)
{
	struct admin *a = m->admin;

	if (!a)
		return;
	while (a->retired) {
		evloop_del_timer(m->loop, a->retired->timer);
		retired_free(a->retired);
	}
	http_server_free(a->srv);
	free(a->path);
	free(a);
	m->admin = NULL;
}

/* Moves the socket when admin.socket changed; the new one is created first, so on failure
 * (-errno) the old one keeps serving. The old listener stops at once (its path goes, so a later
 * move may take it back) but keeps its connections for 2 s: this may run inside a POST
 * /v1/reload on it, or on an older retired one, and freeing a server inside its own handler was
 * a use-after-free (two moves within 2 s, the second requested over the first socket). */
int admin_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		 const struct config_plan *plan)
{
	struct admin *a = m->admin;
	struct http_server *srv;
	struct retired *r;
	char *path;

	if (!a || !strcmp(a->path, new->admin_socket))
		return 0;
	path = strdup(new->admin_socket);
	r = calloc(1, sizeof(*r));
	srv = path && r ? listen_at(a, path) : NULL;
	if (!srv) {
		int err = path && r ? -errno : -ENOMEM;

		free(path);
		free(r);
		return err;
	}
	http_server_stop_listening(a->srv);
	*r = (struct retired){ .a = a, .srv = a->srv, .next = a->retired };
	r->timer = evloop_add_timer(m->loop, 2000000000ull, retired_expire, r);
	a->retired = r;
	free(a->path);
	a->srv = srv;
	a->path = path;
	return 0;
}
