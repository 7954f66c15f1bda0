/* meshd's `mtls` component: glues the mTLS proxy (user/mtls/) to the datapath. Starts the proxy
 * when mtls.enabled, hands it the datapath's thread-safe handle (original destinations, breaker
 * outcomes, backend sets), keeps the caller identities resolved into the datapath's identity map,
 * writes the redirect settings and strict_inbound's ports. A reload is a step of meshd's
 * all-or-nothing transaction: reload() does everything that can fail (a proxy to start, the
 * running proxy's plan, the new identities and datapath settings), end() commits it or puts all
 * of it back as it was. Loop thread. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/log.h"
#include "discovery/discovery.h"
#include "meshd/meshd.h"
#include "meshd/upgrade.h"
#include "mtls/fdstore.h"
#include "mtls/identity.h"
#include "mtls/mtls.h"

struct mtls_glue {
	struct datapath_mtls *h;
	struct identity_watch *idw;
};

/* --- the proxy's datapath callbacks (proxy threads) -------------------------------------------- */

static int take_orig(void *ctx, const struct config_endpoint *client,
		     const struct config_endpoint *local, struct mtls_orig *out)
{
	struct datapath_mtls_orig o;
	int err = datapath_mtls_take_orig(ctx, client, local, &o);

	if (err)
		return err;
	out->vip = o.vip;
	out->backend = o.backend;
	out->backend_id = o.backend_id;
	out->backend_epoch = o.backend_epoch;
	out->identity = o.identity;
	out->probe = o.probe;
	return 0;
}

static void outcome(void *ctx, const struct config_endpoint *vip, uint32_t backend_id,
		    uint32_t backend_epoch, bool ok, bool probe, uint64_t rtt_ns)
{
	datapath_mtls_outcome(ctx, vip, backend_id, backend_epoch, ok, probe, rtt_ns);
}

static int backends(void *ctx, const struct config_endpoint *vip, struct mtls_backend *out,
		    size_t max)
{
	struct datapath_mtls_backend be[64];
	int n = datapath_mtls_backends(ctx, vip, be, max < 64 ? max : 64);

	for (int i = 0; i < n; i++) {
		out[i].addr = be[i].addr;
		out[i].id = be[i].id;
		out[i].epoch = be[i].epoch;
		out[i].usable = be[i].usable;
	}
	return n;
}

/* --- datapath settings (main loop) --------------------------------------------------------------- */

static int apply_identities(void *ctx, const uint64_t *ids, const uint32_t *idents, size_t n)
{
	struct meshd *m = ctx;

	return m->dp ? datapath_mtls_identities(m->dp, ids, idents, n) : -ENODEV;
}

/* Every port of every identity: strict_inbound's ports. */
static int strict_ports(const struct mesh_config *cfg, uint16_t **out)
{
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_identities; i++)
		n += cfg->identities[i].n_ports;
	*out = calloc(n + 1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < cfg->n_identities; i++)
		for (size_t j = 0; j < cfg->identities[i].n_ports; j++)
			(*out)[n++] = cfg->identities[i].ports[j];
	return (int)n;
}

static int set_datapath(struct meshd *m, const struct mesh_config *cfg)
{
	struct datapath_mtls_cfg dc = {
		.enabled = cfg->mtls.enabled,
		.outbound = cfg->mtls.outbound_listen,
		.no_identity = (int)cfg->mtls.no_identity,
	};
	uint16_t *ports = NULL;
	int n = 0, err;

	if (cfg->mtls.enabled && cfg->mtls.strict_inbound)
		n = strict_ports(cfg, &ports);
	if (n < 0)
		return n;
	err = datapath_mtls_strict(m->dp, ports, (size_t)n);
	free(ports);
	if (!err)
		err = datapath_mtls_set(m->dp, &dc);
	if (err)
		LOG_ERR("mtls", "cannot write the mTLS settings to the datapath", "err=%s",
			log_q(strerror(-err)));
	return err;
}

static void glue_free(struct mtls_glue *g)
{
	if (!g)
		return;
	identity_watch_free(g->idw);
	datapath_mtls_close(g->h);
	free(g);
}

static int start_proxy(struct meshd *m, const struct mesh_config *cfg)
{
	struct mtls_glue *g = calloc(1, sizeof(*g));
	struct mtls_datapath dp = { .take_orig = take_orig,
				    .outcome = outcome,
				    .backends = backends };
	struct mtls_tracing tr;

	if (!g)
		return -ENOMEM;
	mkdir(cfg->state_dir, 0700);
	fdstore_init(cfg->state_dir, upgrade_self_exe());
	g->h = datapath_mtls_open(m->dp);
	if (!g->h)
		goto err;
	dp.ctx = g->h;
	tracing_mtls_hooks(m, &tr);
	m->mtls = mtls_start(m->loop, cfg, &dp, &tr);
	if (!m->mtls)
		goto err;
	g->idw = identity_watch_new(m->loop, cfg, apply_identities, m);
	if (!g->idw) {
		LOG_ERR("mtls", "cannot resolve identity cgroups", "err=%s",
			log_q(strerror(errno)));
		goto err;
	}
	m->mtls_glue = g;
	for (size_t i = 0; m->discovery && i < discovery_count(m->discovery); i++) {
		const struct config_service *svc = discovery_at(m->discovery, i);

		mtls_backends_changed(m->mtls, svc->name, svc);
	}
	return 0;
err:
	mtls_stop(m->mtls, false);
	m->mtls = NULL;
	glue_free(g);
	return -EINVAL;
}

static void stop_proxy(struct meshd *m, bool release)
{
	mtls_stop(m->mtls, release);
	m->mtls = NULL;
	glue_free(m->mtls_glue);
	m->mtls_glue = NULL;
}

/* --- component hooks ------------------------------------------------------------------------------ */

int mtls_comp_start(struct meshd *m)
{
	int err;

	if (!m->dp)
		return -ENODEV;
	if (m->cfg->mtls.enabled && (err = start_proxy(m, m->cfg)))
		return err;
	err = set_datapath(m, m->cfg);
	if (err)
		stop_proxy(m, false);
	return err;
}

/* Graceful stop keeps the redirect and the listening sockets (fd store): mTLS connections wait
 * in the listen queue for the next meshd instead of going plaintext. */
void mtls_comp_stop(struct meshd *m)
{
	stop_proxy(m, false);
}

/* A reload in flight (applied, not yet committed): what end() commits or undoes. */
struct mtls_txn {
	const struct mesh_config *old; /* the running config, to put the datapath back */
	struct mtls_plan *plan;	       /* the running proxy's next state */
	struct identity_watch *idw;    /* the new config's identities (already written) */
	bool started;		       /* this reload started the proxy */
	bool stop;		       /* this reload turns the proxy off (at commit) */
};

static void txn_undo(struct meshd *m, struct mtls_txn *t)
{
	if (t->plan) {
		mtls_abort(t->plan);
		identity_watch_free(t->idw);
		/* the new identities were written: the running watch writes its own again */
		identity_watch_reapply(m->mtls_glue->idw);
	}
	set_datapath(m, t->old);
	if (t->started)
		stop_proxy(m, true); /* its listeners were opened for this reload only */
}

/* Does everything that can fail: a proxy to start, the running proxy's plan and identities, the
 * datapath settings. Turning mTLS off waits for the commit (closing listeners cannot be undone). */
static int txn_apply(struct meshd *m, struct mtls_txn *t, const struct mesh_config *new)
{
	int err = 0;

	if (new->mtls.enabled && !m->mtls) {
		err = start_proxy(m, new);
		t->started = !err;
	} else if (new->mtls.enabled) {
		t->plan = mtls_plan(m->mtls, new);
		if (!t->plan)
			return -EINVAL;
		t->idw = identity_watch_new(m->loop, new, apply_identities, m);
		if (!t->idw) {
			mtls_abort(t->plan);
			t->plan = NULL;
			return -ENOMEM;
		}
	} else {
		t->stop = m->mtls != NULL;
	}
	if (!err)
		err = set_datapath(m, new);
	return err;
}

int mtls_comp_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		     const struct config_plan *plan)
{
	struct mtls_txn *t;
	int err;

	if (!old->mtls.enabled && !new->mtls.enabled)
		return 0; /* off before and after: nothing to change */
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->old = old;
	err = txn_apply(m, t, new);
	if (err) {
		txn_undo(m, t);
		free(t);
		return err;
	}
	m->mtls_txn = t;
	return 0;
}

void mtls_comp_end(struct meshd *m, bool commit)
{
	struct mtls_txn *t = m->mtls_txn;

	if (!t)
		return;
	m->mtls_txn = NULL;
	if (!commit) {
		txn_undo(m, t);
	} else if (t->plan) {
		mtls_commit(m->mtls, t->plan);
		identity_watch_free(m->mtls_glue->idw);
		m->mtls_glue->idw = t->idw;
	} else if (t->stop) {
		stop_proxy(m, true);
	}
	free(t);
}

/* --- admin API (GET /v1/mtls/identities, /v1/mtls/pool) ------------------------------------------ */

static void add_time(cJSON *o, const char *key, int64_t t)
{
	char buf[32];
	struct tm tm;
	time_t tt = (time_t)t;

	if (!t || !gmtime_r(&tt, &tm)) {
		cJSON_AddNullToObject(o, key);
		return;
	}
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_AddStringToObject(o, key, buf);
}

static void identity_json(const struct mtls_identity *id, void *arg)
{
	cJSON *arr = cJSON_GetObjectItem(arg, id->root ? "roots" : "identities");
	cJSON *o = cJSON_CreateObject();

	if (!o || !cJSON_AddItemToArray(arr, o))
		return;
	if (!id->root) {
		cJSON_AddStringToObject(o, "service", id->service);
		cJSON_AddStringToObject(o, "source", id->source);
		cJSON_AddStringToObject(o, "cgroups", id->cgroups);
		cJSON_AddBoolToObject(o, "has_certificate", id->has_cert);
	}
	cJSON_AddStringToObject(o, "spiffe_id", id->spiffe_id);
	cJSON_AddStringToObject(o, "serial", id->serial);
	add_time(o, "not_before", id->has_cert ? id->not_before : 0);
	add_time(o, "not_after", id->has_cert ? id->not_after : 0);
	cJSON_AddNumberToObject(o, "not_after_unix", (double)id->not_after);
	if (id->root)
		add_time(o, "retained_until", id->retained_until);
	if (id->error)
		cJSON_AddStringToObject(o, "error", id->error);
}

static void pool_json(const struct mtls_pool_entry *e, void *arg)
{
	cJSON *o = cJSON_CreateObject();
	char ep[64];

	if (!o || !cJSON_AddItemToArray(arg, o))
		return;
	cJSON_AddStringToObject(o, "identity", e->identity);
	cJSON_AddStringToObject(o, "service", e->service);
	cJSON_AddStringToObject(o, "peer", config_endpoint_str(&e->peer, ep, sizeof(ep)));
	cJSON_AddNumberToObject(o, "streams", e->streams);
	cJSON_AddNumberToObject(o, "max_streams", e->max_streams);
	cJSON_AddStringToObject(o, "state",
				!e->ready     ? "connecting"
				: e->draining ? "draining"
					      : "ready");
	cJSON_AddNumberToObject(o, "worker", e->worker);
	cJSON_AddNumberToObject(o, "age_seconds", (double)e->age_ns / 1e9);
}

static void stats_json(cJSON *o, struct mtls *mt)
{
	struct mtls_stats st;
	cJSON *d;

	mtls_stats(mt, &st);
	for (int dir = 0; dir < 2; dir++) {
		d = cJSON_AddObjectToObject(o, dir == MTLS_INBOUND ? "inbound" : "outbound");
		cJSON_AddNumberToObject(d, "connections_active",
					(double)st.connections_active[dir]);
		cJSON_AddNumberToObject(d, "connections_total", (double)st.connections_total[dir]);
		cJSON_AddNumberToObject(d, "handshakes_ok", (double)st.handshakes[dir][0]);
	}
	cJSON_AddNumberToObject(o, "pool_connections", (double)st.pool_connections);
	cJSON_AddNumberToObject(o, "inbound_tunnels", (double)st.inbound_tunnels);
}

cJSON *meshd_mtls_json(struct meshd *m, const char *what)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddBoolToObject(o, "enabled", m->mtls != NULL);
	cJSON_AddStringToObject(o, "trust_domain", m->cfg->mtls.trust_domain);
	if (!strcmp(what, "identities")) {
		cJSON_AddArrayToObject(o, "identities");
		cJSON_AddArrayToObject(o, "roots");
		if (m->mtls)
			mtls_identities(m->mtls, identity_json, o);
	} else {
		cJSON *arr = cJSON_AddArrayToObject(o, "pool");

		if (m->mtls) {
			mtls_pool(m->mtls, pool_json, arr);
			stats_json(cJSON_AddObjectToObject(o, "stats"), m->mtls);
		}
	}
	return o;
}
