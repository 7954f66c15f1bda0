/* The proxy object behind mtls.h, on meshd's main loop: builds the certificate store and its
 * source, the authorization policy, the workers' snapshot and the listeners; starts one worker
 * per CPU; plans and commits reloads; sums statistics; lists identities and the pool. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "mtls/certsrc.h"
#include "mtls/fdstore.h"
#include "mtls/intentions.h"
#include "mtls/meshports.h"
#include "mtls/proxy.h"
#include "mtls/snap.h"
#include "mtls/worker.h"

#define TICK_NS (10ull * 1000000000ull)
#define LISTEN_OUT "mtls-outbound"
#define LISTEN_IN "mtls-inbound"

struct listeners {
	struct config_endpoint out_ep, in_ep;
	int *out, *in;
	size_t n_out, n_in;
};

struct mtls {
	struct evloop *loop;
	struct mtls_datapath dp;
	struct mtls_tracing tr; /* read by the workers, fixed for the proxy's life */
	pthread_mutex_t budget_lock;
	struct budget_table *budgets;
	struct certs *certs;
	struct certsrc *src;
	struct authz_policy *policy;
	struct intentions *ixn; /* NULL unless authorization.intentions */
	char ixn_key[4096];	/* what the intentions watch depends on */
	struct snap *snap;
	struct meshports *ports; /* backends' own mesh ports (Consul meta); read by the workers */
	struct listeners ls;
	struct worker **workers;
	size_t n_workers;
	char **id_cgroups; /* per identity service: "service\0cgroups" for listings */
	size_t n_id_cgroups;
	char cert_key[4096]; /* what the certificate material depends on */
	int64_t tick;
	/* drain */
	int64_t drain_timer;
	uint64_t drain_deadline;
	void (*drain_done)(void *arg);
	void *drain_arg;
};

struct mtls_plan {
	struct snap *snap;
	struct authz_policy *policy;
	struct intentions *ixn; /* a new intentions watch (ixn_new), else keep the running one */
	bool ixn_new;
	char ixn_key[4096];
	struct certs *certs; /* NULL: keep the running store and source */
	struct certsrc *src;
	struct listeners ls; /* n == 0: keep the running listeners */
	char cert_key[4096];
	char **id_cgroups;
	size_t n_id_cgroups;
	bool retire; /* a new store: tunnels of the old take no new streams */
};

/* --- listeners ---------------------------------------------------------------------------------- */

static int listen_socket(const struct config_endpoint *ep)
{
	struct sockaddr_storage ss;
	int fd = socket(ep->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	socklen_t len = sockaddr_from_endpoint(ep, &ss);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4096) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* The `n` sockets of one listener: those the fd store kept (from a previous meshd, so no
 * connection is refused across a restart) and new ones up to n, all in one SO_REUSEPORT group. */
static int open_listener(const char *name, const struct config_endpoint *ep, size_t n, int **out,
			 size_t *n_out)
{
	int *fds = calloc(n + FDSTORE_MAX, sizeof(int));
	size_t have;
	int fd;

	if (!fds)
		return -ENOMEM;
	have = fdstore_take(name, ep, fds, FDSTORE_MAX);
	while (have < n) {
		fd = listen_socket(ep);
		if (fd < 0) {
			for (size_t i = 0; i < have; i++)
				close(fds[i]);
			free(fds);
			return fd;
		}
		fds[have++] = fd;
	}
	fdstore_keep(name, ep, fds, have);
	*out = fds;
	*n_out = have;
	return 0;
}

static void close_listeners(struct listeners *ls, bool release)
{
	if (release) {
		fdstore_release(LISTEN_OUT);
		fdstore_release(LISTEN_IN);
	}
	for (size_t i = 0; i < ls->n_out; i++)
		close(ls->out[i]);
	for (size_t i = 0; i < ls->n_in; i++)
		close(ls->in[i]);
	free(ls->out);
	free(ls->in);
	memset(ls, 0, sizeof(*ls));
}

static int open_listeners(struct listeners *ls, const struct config_mtls *c, size_t n, char *why,
			  size_t wlen)
{
	char ep[64];
	int err;

	ls->out_ep = c->outbound_listen;
	ls->in_ep = c->inbound_listen;
	err = open_listener(LISTEN_OUT, &c->outbound_listen, n, &ls->out, &ls->n_out);
	if (err) {
		snprintf(why, wlen, "mtls.outbound_listen %s: %s",
			 config_endpoint_str(&c->outbound_listen, ep, sizeof(ep)), strerror(-err));
		return err;
	}
	err = open_listener(LISTEN_IN, &c->inbound_listen, n, &ls->in, &ls->n_in);
	if (err) {
		snprintf(why, wlen, "mtls.inbound_listen %s: %s",
			 config_endpoint_str(&c->inbound_listen, ep, sizeof(ep)), strerror(-err));
		close_listeners(ls, false);
	}
	return err;
}

/* Worker i serves sockets i, i + n, ...: every kept socket is served, whatever the count. */
static void hand_listeners(struct mtls *m)
{
	for (size_t w = 0; w < m->n_workers; w++) {
		int out[FDSTORE_MAX + 64], in[FDSTORE_MAX + 64];
		size_t no = 0, ni = 0;

		for (size_t i = w; i < m->ls.n_out; i += m->n_workers)
			out[no++] = m->ls.out[i];
		for (size_t i = w; i < m->ls.n_in; i += m->n_workers)
			in[ni++] = m->ls.in[i];
		worker_listen(m->workers[w], out, no, in, ni);
	}
}

/* --- pieces built from a config ----------------------------------------------------------------- */

/* Each identity service once, in config order. */
static size_t identity_services(const struct mesh_config *cfg, const char **out)
{
	size_t n = 0;

	for (size_t i = 0; i < cfg->n_identities; i++) {
		bool seen = false;

		for (size_t j = 0; j < n && !seen; j++)
			seen = !strcmp(out[j], cfg->identities[i].service);
		if (!seen)
			out[n++] = cfg->identities[i].service;
	}
	return n;
}

/* Everything the store and its source depend on, as text: equal text, same material. */
/* The Consul agent settings a Consul reader depends on, as text. */
static void agent_key(const struct mesh_config *cfg, char *buf, size_t len)
{
	const struct config_consul *c = &cfg->consul;

	snprintf(buf, len, "%s|%s|%s|%s|%llu", c->address ? c->address : "",
		 c->token_file ? c->token_file : "", c->ca_file ? c->ca_file : "",
		 c->datacenter ? c->datacenter : "", (unsigned long long)c->wait_ns);
}

static void cert_key(const struct mesh_config *cfg, char *buf, size_t len)
{
	const struct config_mtls *c = &cfg->mtls;
	const char *svcs[cfg->n_identities + 1];
	size_t n = identity_services(cfg, svcs), pos;
	char agent[1024] = "";

	if (c->cert_source == CONFIG_CERT_CONSUL)
		agent_key(cfg, agent, sizeof(agent));
	pos = (size_t)snprintf(buf, len, "%d|%s|%s|%s|%s|%s|%s|%llu", (int)c->cert_source,
			       c->trust_domain, cfg->node_datacenter ? cfg->node_datacenter : "",
			       c->ca_file ? c->ca_file : "", c->ca_key_file ? c->ca_key_file : "",
			       c->cert_dir ? c->cert_dir : "", agent,
			       (unsigned long long)c->cert_ttl_ns);
	for (size_t i = 0; i < n && pos < len; i++)
		pos += (size_t)snprintf(buf + pos, len - pos, "|%s", svcs[i]);
}

/* The datacenter of local identities' SPIFFE IDs: Consul's with its CA, else node.datacenter. */
static const char *id_datacenter(const struct mesh_config *cfg)
{
	if (cfg->mtls.cert_source == CONFIG_CERT_CONSUL && cfg->consul.datacenter &&
	    cfg->consul.datacenter[0])
		return cfg->consul.datacenter;
	return cfg->node_datacenter ? cfg->node_datacenter : "dc1";
}

static int open_certs(struct evloop *loop, const struct mesh_config *cfg, bool reload,
		      struct certs **store, struct certsrc **src, char *why, size_t wlen)
{
	const char *svcs[cfg->n_identities + 1];
	struct certs_opts o = {
		.trust_domain = cfg->mtls.trust_domain,
		.datacenter = id_datacenter(cfg),
		.retain_ns = cfg->mtls.cert_ttl_ns,
	};
	struct certsrc_cfg sc = {
		.config = cfg,
		.must_load = reload,
		.mtls = &cfg->mtls,
		.trust_domain = o.trust_domain,
		.datacenter = o.datacenter,
		.services = svcs,
		.n_services = identity_services(cfg, svcs),
	};

	*store = certs_new(&o);
	if (!*store) {
		snprintf(why, wlen, "out of memory");
		return -ENOMEM;
	}
	*src = certsrc_open(loop, *store, &sc, why, wlen);
	if (!*src) {
		certs_unref(*store);
		*store = NULL;
		return -EINVAL;
	}
	return 0;
}

static struct authz_policy *build_policy(const struct mesh_config *cfg)
{
	struct authz_rule *r = calloc(cfg->n_authz_rules + 1, sizeof(*r));
	struct authz_policy *p =
	    authz_policy_new(cfg->authz_default == CONFIG_ACTION_ALLOW ? AUTHZ_ALLOW : AUTHZ_DENY);

	for (size_t i = 0; r && p && i < cfg->n_authz_rules; i++) {
		r[i].source = cfg->authz_rules[i].source;
		r[i].destination = cfg->authz_rules[i].destination;
		r[i].action =
		    cfg->authz_rules[i].action == CONFIG_ACTION_ALLOW ? AUTHZ_ALLOW : AUTHZ_DENY;
	}
	if (!r || !p || authz_policy_set_layer(p, AUTHZ_LAYER_CONFIG, r, cfg->n_authz_rules)) {
		authz_policy_unref(p);
		p = NULL;
	}
	free(r);
	return p;
}

/* What an intentions watch depends on, as text ("" = intentions off). */
static void ixn_key(const struct mesh_config *cfg, char *buf, size_t len)
{
	size_t pos;

	buf[0] = '\0';
	if (!cfg->authz_intentions)
		return;
	agent_key(cfg, buf, len);
	pos = strlen(buf);
	pos += (size_t)snprintf(buf + pos, len - pos, "|%s", cfg->state_dir ? cfg->state_dir : "");
	for (size_t i = 0; i < cfg->n_identities && pos < len; i++)
		pos += (size_t)snprintf(buf + pos, len - pos, "|%s:%zu", cfg->identities[i].service,
					cfg->identities[i].n_ports);
}

/* New intentions: a new policy with them goes to every worker, which closes established
 * connections it denies (inbound_recheck). */
static void on_intentions(void *arg)
{
	struct mtls *m = arg;
	struct authz_policy *p = authz_policy_copy(m->policy);

	if (!p || intentions_apply(m->ixn, p)) {
		LOG_ERR("authz", "cannot apply new intentions", "error=%s", "out of memory");
		authz_policy_unref(p);
		return;
	}
	authz_policy_unref(m->policy);
	m->policy = p;
	for (size_t i = 0; i < m->n_workers; i++)
		worker_update(m->workers[i], NULL, NULL, m->policy);
}

/* "service\0cgroup,cgroup" for each identity service, for listings. */
static char **cgroup_lists(const struct mesh_config *cfg, size_t *n)
{
	const char *svcs[cfg->n_identities + 1];
	char **out;

	*n = identity_services(cfg, svcs);
	out = calloc(*n + 1, sizeof(*out));
	for (size_t i = 0; out && i < *n; i++) {
		size_t len = strlen(svcs[i]) + 2;

		for (size_t j = 0; j < cfg->n_identities; j++)
			if (!strcmp(cfg->identities[j].service, svcs[i]))
				len += strlen(cfg->identities[j].cgroup) + 1;
		out[i] = calloc(1, len);
		if (!out[i])
			continue;
		strcpy(out[i], svcs[i]);
		for (size_t j = 0, pos = strlen(svcs[i]) + 1; j < cfg->n_identities; j++) {
			if (strcmp(cfg->identities[j].service, svcs[i]))
				continue;
			pos += (size_t)sprintf(out[i] + pos, "%s%s",
					       pos > strlen(svcs[i]) + 1 ? "," : "",
					       cfg->identities[j].cgroup);
		}
	}
	return out;
}

static void free_lists(char **l, size_t n)
{
	for (size_t i = 0; l && i < n; i++)
		free(l[i]);
	free(l);
}

static size_t worker_count(const struct mesh_config *cfg)
{
	long n = cfg->mtls.workers ? (long)cfg->mtls.workers : sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (size_t)n : 1;
}

/* --- start and stop ------------------------------------------------------------------------------ */

static void on_tick(struct evloop *loop, void *arg)
{
	struct mtls *m = arg;
	int dropped;

	m->tick = evloop_add_timer(loop, TICK_NS, on_tick, m);
	dropped = certs_expire_roots(m->certs, (int64_t)time(NULL));
	if (dropped > 0)
		LOG_INFO("mtls", "retired trust roots dropped", "count=%d", dropped);
	if (m->drain_done && (evloop_now_ns() >= m->drain_deadline)) {
		void (*done)(void *) = m->drain_done;

		m->drain_done = NULL;
		done(m->drain_arg);
	}
}

/* New certificate material: tunnels made with the old take no new streams (live ones go on). */
static void on_certs_changed(void *arg, const char *service)
{
	struct mtls *m = arg;

	LOG_INFO("mtls", "certificate material changed; new connections use it", "identity=%s",
		 service ? service : "(trust roots)");
	for (size_t i = 0; i < m->n_workers; i++)
		worker_retire(m->workers[i], service);
}

static int start_workers(struct mtls *m, size_t n)
{
	m->workers = calloc(n, sizeof(*m->workers));
	if (!m->workers)
		return -ENOMEM;
	for (; m->n_workers < n; m->n_workers++) {
		struct worker *w = worker_new(m, (int)m->n_workers);

		if (!w)
			return -ENOMEM;
		m->workers[m->n_workers] = w;
		w->tr = m->tr;
		worker_update(w, m->snap, m->certs, m->policy);
	}
	hand_listeners(m);
	for (size_t i = 0; i < n; i++) {
		int err = worker_start(m->workers[i]);

		if (err)
			return err;
	}
	return 0;
}

struct mtls *mtls_start(struct evloop *loop, const struct mesh_config *cfg,
			const struct mtls_datapath *dp, const struct mtls_tracing *tr)
{
	struct mtls *m = calloc(1, sizeof(*m));
	char why[512] = "out of memory";
	int err = -ENOMEM;

	if (!m || tls_init())
		goto err;
	m->loop = loop;
	if (dp)
		m->dp = *dp;
	if (tr)
		m->tr = *tr;
	pthread_mutex_init(&m->budget_lock, NULL);
	m->budgets = budget_table_new(&m->budget_lock);
	m->policy = build_policy(cfg);
	m->id_cgroups = cgroup_lists(cfg, &m->n_id_cgroups);
	m->ports = meshports_new();
	if (!m->budgets || !m->policy || !m->ports)
		goto err;
	ixn_key(cfg, m->ixn_key, sizeof(m->ixn_key));
	if (cfg->authz_intentions) {
		m->ixn = intentions_new(loop, cfg, on_intentions, m);
		if (!m->ixn || intentions_apply(m->ixn, m->policy)) {
			snprintf(why, sizeof(why), "cannot watch Consul intentions");
			err = -EINVAL;
			goto err;
		}
	}
	if ((err = open_certs(loop, cfg, false, &m->certs, &m->src, why, sizeof(why))))
		goto err;
	cert_key(cfg, m->cert_key, sizeof(m->cert_key));
	m->snap = snap_build(cfg, &m->dp, m->budgets, &m->budget_lock, why, sizeof(why));
	if (!m->snap) {
		err = -EINVAL;
		goto err;
	}
	if ((err = open_listeners(&m->ls, &cfg->mtls, worker_count(cfg), why, sizeof(why))))
		goto err;
	if ((err = start_workers(m, worker_count(cfg)))) {
		snprintf(why, sizeof(why), "cannot start proxy threads: %s", strerror(-err));
		goto err;
	}
	m->tick = evloop_add_timer(loop, TICK_NS, on_tick, m);
	certs_on_change(m->certs, on_certs_changed, m);
	LOG_INFO("mtls", "mTLS proxy running", "workers=%zu outbound=%d inbound=%d identities=%zu",
		 m->n_workers, (int)m->ls.out_ep.port, (int)m->ls.in_ep.port, m->n_id_cgroups);
	return m;
err:
	LOG_ERR("mtls", "cannot start the mTLS proxy", "error=%s", log_q(why));
	mtls_stop(m, false);
	errno = -err;
	return NULL;
}

void mtls_stop(struct mtls *m, bool release)
{
	if (!m)
		return;
	if (m->certs)
		certs_on_change(m->certs, NULL, NULL);
	intentions_free(m->ixn);
	evloop_del_timer(m->loop, m->tick);
	evloop_del_timer(m->loop, m->drain_timer);
	for (size_t i = 0; i < m->n_workers; i++)
		worker_free(m->workers[i]);
	free(m->workers);
	close_listeners(&m->ls, release);
	certsrc_close(m->src);
	certs_unref(m->certs);
	snap_unref(m->snap);
	authz_policy_unref(m->policy);
	budget_table_free(m->budgets);
	meshports_free(m->ports);
	free_lists(m->id_cgroups, m->n_id_cgroups);
	pthread_mutex_destroy(&m->budget_lock);
	free(m);
}

int mtls_backends_changed(struct mtls *m, const char *name, const struct config_service *svc)
{
	int err = meshports_set(m->ports, name, svc);

	if (err)
		LOG_WARN("mtls",
			 "cannot record the backends' mesh ports; dialling the default port",
			 "service=%s err=%s", log_q(name), log_q(strerror(-err)));
	return err;
}

uint16_t mtls_mesh_port(struct mtls *m, const struct config_endpoint *vip,
			const struct config_endpoint *backend)
{
	return meshports_get(m->ports, vip, backend);
}

/* --- reload ------------------------------------------------------------------------------------- */

void mtls_abort(struct mtls_plan *p)
{
	if (!p)
		return;
	snap_unref(p->snap);
	authz_policy_unref(p->policy);
	if (p->ixn_new)
		intentions_free(p->ixn);
	certsrc_close(p->src);
	certs_unref(p->certs);
	close_listeners(&p->ls, false);
	free_lists(p->id_cgroups, p->n_id_cgroups);
	free(p);
}

static bool same_ep(const struct config_endpoint *a, const struct config_endpoint *b)
{
	return a->family == b->family && a->port == b->port &&
	       !memcmp(&a->addr, &b->addr, a->family == AF_INET6 ? 16 : 4);
}

/* The intentions of the new policy: a new watch when what it depends on changed (it loads
 * the persisted answers and waits for Consul's first ones), else the running one's. */
static int plan_intentions(struct mtls *m, const struct mesh_config *next, struct mtls_plan *p,
			   char *why, size_t wlen)
{
	ixn_key(next, p->ixn_key, sizeof(p->ixn_key));
	p->ixn = m->ixn;
	if (strcmp(p->ixn_key, m->ixn_key)) {
		p->ixn_new = true;
		p->ixn =
		    next->authz_intentions ? intentions_new(m->loop, next, on_intentions, m) : NULL;
		if (next->authz_intentions && !p->ixn)
			return snprintf(why, wlen, "cannot watch Consul intentions"), -EINVAL;
	}
	if (p->ixn && intentions_apply(p->ixn, p->policy))
		return snprintf(why, wlen, "out of memory"), -ENOMEM;
	return 0;
}

struct mtls_plan *mtls_plan(struct mtls *m, const struct mesh_config *next)
{
	struct mtls_plan *p = calloc(1, sizeof(*p));
	char why[512] = "out of memory";

	if (!p)
		goto err;
	p->policy = build_policy(next);
	p->id_cgroups = cgroup_lists(next, &p->n_id_cgroups);
	if (!p->policy)
		goto err;
	if (plan_intentions(m, next, p, why, sizeof(why)))
		goto err;
	cert_key(next, p->cert_key, sizeof(p->cert_key));
	if (strcmp(p->cert_key, m->cert_key) &&
	    open_certs(m->loop, next, true, &p->certs, &p->src, why, sizeof(why)))
		goto err;
	p->snap = snap_build(next, &m->dp, m->budgets, &m->budget_lock, why, sizeof(why));
	if (!p->snap)
		goto err;
	if ((!same_ep(&next->mtls.outbound_listen, &m->ls.out_ep) ||
	     !same_ep(&next->mtls.inbound_listen, &m->ls.in_ep)) &&
	    open_listeners(&p->ls, &next->mtls, m->n_workers, why, sizeof(why)))
		goto err;
	return p;
err:
	LOG_ERR("mtls", "cannot apply the new mTLS configuration; the running one stays",
		"error=%s", log_q(why));
	mtls_abort(p);
	return NULL;
}

void mtls_commit(struct mtls *m, struct mtls_plan *p)
{
	p->retire = p->certs != NULL;
	if (p->certs) {
		certs_on_change(m->certs, NULL, NULL);
		certs_on_change(p->certs, on_certs_changed, m);
		certsrc_close(m->src);
		certs_unref(m->certs);
		m->certs = p->certs;
		m->src = p->src;
		p->certs = NULL;
		p->src = NULL;
		memcpy(m->cert_key, p->cert_key, sizeof(m->cert_key));
	}
	if (p->ixn_new) {
		intentions_free(m->ixn);
		m->ixn = p->ixn;
		p->ixn = NULL;
		p->ixn_new = false;
		memcpy(m->ixn_key, p->ixn_key, sizeof(m->ixn_key));
	}
	snap_unref(m->snap);
	authz_policy_unref(m->policy);
	m->snap = p->snap;
	m->policy = p->policy;
	p->snap = NULL;
	p->policy = NULL;
	/* Intentions that changed since the plan (the policy is not shared yet). */
	if (m->ixn && intentions_apply(m->ixn, m->policy))
		LOG_ERR("authz", "cannot apply the latest intentions; the plan's stay", "error=%s",
			"out of memory");
	free_lists(m->id_cgroups, m->n_id_cgroups);
	m->id_cgroups = p->id_cgroups;
	m->n_id_cgroups = p->n_id_cgroups;
	p->id_cgroups = NULL;
	for (size_t i = 0; i < m->n_workers; i++) {
		worker_update(m->workers[i], m->snap, m->certs, m->policy);
		if (p->retire)
			worker_retire(m->workers[i], NULL);
	}
	if (p->ls.n_out) {
		struct listeners old = m->ls;

		m->ls = p->ls;
		memset(&p->ls, 0, sizeof(p->ls));
		hand_listeners(m);
		close_listeners(&old, true);
		fdstore_keep(LISTEN_OUT, &m->ls.out_ep, m->ls.out, m->ls.n_out);
		fdstore_keep(LISTEN_IN, &m->ls.in_ep, m->ls.in, m->ls.n_in);
	}
	mtls_abort(p);
}

/* --- drain (graceful upgrade) -------------------------------------------------------------------- */

static void check_drained(struct evloop *loop, void *arg)
{
	struct mtls *m = arg;
	unsigned left = 0;

	m->drain_timer = 0;
	for (size_t i = 0; i < m->n_workers; i++)
		left += worker_connections(m->workers[i]);
	if (left && evloop_now_ns() < m->drain_deadline) {
		m->drain_timer = evloop_add_timer(loop, 100000000ull, check_drained, m);
		return;
	}
	if (left)
		LOG_WARN("mtls", "drain timeout; closing the connections left", "connections=%u",
			 left);
	if (m->drain_done) {
		void (*done)(void *) = m->drain_done;

		m->drain_done = NULL;
		done(m->drain_arg);
	}
}

void mtls_drain(struct mtls *m, uint64_t timeout_ns, void (*done)(void *arg), void *arg)
{
	for (size_t i = 0; i < m->n_workers; i++)
		worker_drain(m->workers[i]);
	m->drain_done = done;
	m->drain_arg = arg;
	m->drain_deadline = evloop_now_ns() + timeout_ns;
	m->drain_timer = evloop_add_timer(m->loop, 100000000ull, check_drained, m);
}

/* --- observability -------------------------------------------------------------------------------- */

const char *mtls_refusal_name(int r)
{
	static const char *const names[MTLS_REFUSE__COUNT] = {
		"no_original_destination",
		"not_an_mtls_service",
		"unknown_identity",
		"no_certificate",
		"denied",
	};

	return r >= 0 && r < MTLS_REFUSE__COUNT ? names[r] : NULL;
}

void mtls_stats(struct mtls *m, struct mtls_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (int r = 0; r < RS__COUNT && r < MTLS_REASONS_MAX; r++)
		out->reason_names[r] = reason_name(r);
	for (size_t i = 0; i < m->n_workers; i++) {
		struct wstats *s = &m->workers[i]->st;

		for (int d = 0; d < 2; d++) {
			for (int r = 0; r < RS__COUNT && r < MTLS_REASONS_MAX; r++)
				out->handshakes[d][r] += STAT_GET(s->handshakes[d][r]);
			out->connections_total[d] += STAT_GET(s->conns_total[d]);
			out->connections_active[d] += STAT_GET(s->conns_active[d]);
			out->bytes[d][0] += STAT_GET(s->bytes[d][0]);
			out->bytes[d][1] += STAT_GET(s->bytes[d][1]);
			out->authz[d] += STAT_GET(s->authz[d]);
		}
		out->pool_connections += STAT_GET(s->pool);
		out->inbound_tunnels += STAT_GET(s->inbound_tunnels);
		for (int k = 0; k < MTLS_RETRY_RESULTS; k++)
			out->retries[k] += STAT_GET(s->retries[k]);
		out->authz_closed += STAT_GET(s->authz_closed);
		for (int k = 0; k < MTLS_REFUSE__COUNT; k++)
			out->refused[k] += STAT_GET(s->refused[k]);
		out->failed += STAT_GET(s->failed);
		out->traceparent_invalid += STAT_GET(s->traceparent_invalid);
	}
}

void mtls_authz_pairs(struct mtls *m, void (*cb)(const struct mtls_authz_pair *p, void *arg),
		      void *arg)
{
	/* Sum over workers: the same pair sits at its hash's slot (or a probe away) in each. */
	struct mtls_authz_pair out;

	for (size_t i = 0; i < m->n_workers; i++) {
		struct wstats *s = &m->workers[i]->st;

		for (size_t k = 0; k < PAIRS_MAX; k++) {
			uint64_t h = __atomic_load_n(&s->pairs[k].hash, __ATOMIC_ACQUIRE);
			bool earlier = false;

			if (!h)
				continue;
			for (size_t j = 0; j < i && !earlier; j++)
				for (size_t q = 0; q < PAIRS_MAX && !earlier; q++)
					earlier = __atomic_load_n(&m->workers[j]->st.pairs[q].hash,
								  __ATOMIC_ACQUIRE) == h;
			if (earlier)
				continue;
			out.source = s->pairs[k].source;
			out.destination = s->pairs[k].destination;
			out.allowed = out.denied = 0;
			for (size_t j = i; j < m->n_workers; j++)
				for (size_t q = 0; q < PAIRS_MAX; q++)
					if (__atomic_load_n(&m->workers[j]->st.pairs[q].hash,
							    __ATOMIC_ACQUIRE) == h) {
						out.allowed +=
						    STAT_GET(m->workers[j]->st.pairs[q].n[1]);
						out.denied +=
						    STAT_GET(m->workers[j]->st.pairs[q].n[0]);
					}
			cb(&out, arg);
		}
	}
}

struct id_walk {
	struct mtls *m;
	void (*cb)(const struct mtls_identity *id, void *arg);
	void *arg;
};

static const char *cgroups_of(struct mtls *m, const char *service)
{
	for (size_t i = 0; i < m->n_id_cgroups; i++)
		if (m->id_cgroups[i] && !strcmp(m->id_cgroups[i], service))
			return m->id_cgroups[i] + strlen(service) + 1;
	return "";
}

static void id_entry(const struct certs_entry *e, void *arg)
{
	struct id_walk *w = arg;
	struct mtls_identity id = {
		.root = e->root,
		.service = e->service,
		.spiffe_id = e->info.spiffe_id,
		.serial = e->info.serial,
		.source = e->source,
		.error = e->error,
		.cgroups = e->root ? "" : cgroups_of(w->m, e->service),
		.has_cert = e->has_cert,
		.not_before = e->info.not_before,
		.not_after = e->info.not_after,
		.retained_until = e->retained_until,
	};

	if (!e->root && !cgroups_of(w->m, e->service)[0])
		return; /* no longer a local identity (a reload dropped it) */
	w->cb(&id, w->arg);
}

void mtls_identities(struct mtls *m, void (*cb)(const struct mtls_identity *id, void *arg),
		     void *arg)
{
	struct id_walk w = { m, cb, arg };

	certs_list(m->certs, id_entry, &w);
}

void mtls_pool(struct mtls *m, void (*cb)(const struct mtls_pool_entry *e, void *arg), void *arg)
{
	for (size_t i = 0; i < m->n_workers; i++)
		worker_pool(m->workers[i], cb, arg);
}
