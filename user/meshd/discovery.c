/* The discovery component: runs the registry (user/discovery/) and connects it to the rest of
 * meshd. Its writes reach the datapath through one datapath transaction per batch, each service
 * written with the health flags the checks know; its changes reach the health checks. A reload
 * is a registry transaction that lasts until every component took the new config (committed)
 * or one refused it (undone). Loop thread only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "discovery/discovery.h"
#include "meshd/meshd.h"
#include "mtls/mtls.h"

static void *dp_begin(void *arg)
{
	struct meshd *m = arg;

	if (!m->dp) {
		errno = ENODEV;
		return NULL;
	}
	meshd_fault_arm_datapath(m->dp);
	return datapath_txn_begin(m->dp);
}

/* Backends that stay keep their health flag in the map; new ones start healthy. This writes what
 * the checks know, when they run. */
static void assert_health(struct meshd *m, const struct config_service *svc)
{
	for (size_t i = 0; m->health && i < svc->n_backends; i++) {
		const struct config_endpoint *be = &svc->backends[i].endpoint;
		int err = datapath_backend_set_health(m->dp, svc->name, be,
						      health_backend_healthy(m, svc->name, be));

		if (err)
			LOG_WARN("datapath", "cannot set backend health", "service=%s err=%s",
				 log_q(svc->name), log_q(strerror(-err)));
	}
}

static int dp_apply(void *arg, void *txn, const struct discovery_change *ch, size_t n)
{
	struct meshd *m = arg;
	struct datapath_change buf[128], *dc = n <= 128 ? buf : calloc(n, sizeof(*dc));
	int err;

	if (!dc)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		dc[i] = (struct datapath_change){ ch[i].name, ch[i].svc };
	err = meshd_fault("datapath.apply");
	if (!err)
		err = datapath_txn_apply(txn, dc, n);
	if (dc != buf)
		free(dc);
	for (size_t i = 0; !err && i < n; i++)
		if (ch[i].svc)
			assert_health(m, ch[i].svc);
	return err;
}

static void dp_end(void *arg, void *txn, bool commit)
{
	struct meshd *m = arg;
	int err = 0;

	if (!commit)
		datapath_txn_abort(txn);
	else
		err = datapath_txn_commit(txn);
	if (err)
		LOG_ERR("datapath", "cannot commit service changes; undone", "err=%s",
			log_q(strerror(-err)));
	else if (commit)
		meshd_drain_reschedule(m); /* removed backends' drains may be due earlier */
}

static void on_changed(void *arg, const char *name, const struct config_service *svc, bool undone)
{
	struct meshd *m = arg;

	if (undone && svc && m->dp)
		assert_health(m, svc); /* the undo restored flags the checks changed meanwhile */
	health_service_changed(m, name);
	if (m->mtls)
		mtls_backends_changed(m->mtls, name, svc);
}

int discovery_comp_start(struct meshd *m)
{
	struct discovery_opts o = {
		.loop = m->loop,
		.hooks = { .begin = dp_begin,
			   .apply = dp_apply,
			   .end = dp_end,
			   .changed = on_changed,
			   .arg = m },
	};
	struct discovery *d = discovery_new(&o);
	int err;

	if (!d)
		return -errno;
	err = discovery_start(d, m->cfg);
	if (err) {
		discovery_free(d);
		return err;
	}
	m->discovery = d;
	return 0;
}

void discovery_comp_stop(struct meshd *m)
{
	struct discovery *d = m->discovery;

	m->discovery = NULL;
	discovery_free(d);
}

int discovery_comp_reload(struct meshd *m, const struct mesh_config *old,
			  const struct mesh_config *new, const struct config_plan *plan)
{
	return m->discovery ? discovery_reload(m->discovery, old, new, plan) : -ENODEV;
}

void discovery_comp_end(struct meshd *m, bool commit)
{
	if (m->discovery)
		discovery_reload_end(m->discovery, commit);
}
