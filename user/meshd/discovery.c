/* Discovery component: owns the table of services as meshd currently serves them (policy from
 * the config, backends from the config or from Consul) and pushes every change into the datapath
 * through meshd_apply_service()/meshd_remove_service(). Static discovery lives here; the Consul
 * watcher glue is in discovery_consul.c. Everything runs on the event-loop thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "meshd/discovery.h"
#include "meshd/meshd.h"
#include "state/state.h"

static const char *const backend_names[] = {
	[CONFIG_DISCOVERY_STATIC] = "static",
	[CONFIG_DISCOVERY_CONSUL] = "consul",
	[CONFIG_DISCOVERY_DNS] = "dns",
};

const char *discovery_backend_name(enum config_discovery b)
{
	if ((unsigned)b < sizeof(backend_names) / sizeof(backend_names[0]) && backend_names[b])
		return backend_names[b];
	return "unknown";
}

static int check_backend(enum config_discovery b)
{
	if (b == CONFIG_DISCOVERY_STATIC || b == CONFIG_DISCOVERY_CONSUL)
		return 0;
	LOG_ERR("discovery", "discovery.backend \"dns\" is not supported yet", "backend=%s",
		discovery_backend_name(b));
	return -ENOTSUP;
}

void discovery_count_sync(struct meshd *m, bool ok)
{
	struct timespec ts;

	m->discovery_sync[ok ? 0 : 1]++;
	if (!ok)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	m->discovery_last_sync_ts = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool discovery_watches(const struct mesh_config *cfg, const char *name)
{
	size_t i;

	if (cfg->discovery != CONFIG_DISCOVERY_CONSUL)
		return false;
	for (i = 0; i < cfg->consul.n_services; i++)
		if (strcmp(cfg->consul.services[i], name) == 0)
			return true;
	return false;
}

/* Builds the table `cfg` asks for. A service Consul watches keeps the backends `prev` discovered
 * for it (if it was watched there too); every other service takes its backends from `cfg`. */
static int table_build(struct state_table *t, const struct mesh_config *cfg,
		       const struct state_table *prev)
{
	const struct state_entry *old;
	size_t i;
	int err;

	t->ents = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*t->ents));
	if (!t->ents)
		return -ENOMEM;
	t->n = 0;
	for (i = 0; i < cfg->n_services; i++) {
		const struct config_service *svc = &cfg->services[i];
		struct state_entry *e = &t->ents[t->n];

		old = prev ? state_table_find(prev, svc->name) : NULL;
		if (old && old->discovered && discovery_watches(cfg, svc->name)) {
			err = state_svc_copy(&e->svc, svc, old->svc.backends, old->svc.n_backends);
			e->discovered = true;
			e->index = old->index;
		} else {
			err = state_svc_copy(&e->svc, svc, svc->backends, svc->n_backends);
		}
		if (err) {
			state_table_free(t);
			return err;
		}
		t->n++;
	}
	return 0;
}

/* Puts `prev` (what the datapath still has) back in slot `i` of `t`, or drops the slot when the
 * service is new. `prev` belongs to a table about to be freed, so its contents are moved (its
 * name becomes NULL, which table_apply's removal pass skips). Returns the next slot to visit. */
static size_t keep_previous(struct state_table *t, size_t i, struct state_entry *prev)
{
	state_svc_release(&t->ents[i].svc);
	if (prev) {
		t->ents[i] = *prev;
		memset(prev, 0, sizeof(*prev));
		return i + 1;
	}
	memmove(&t->ents[i], &t->ents[i + 1], (t->n - i - 1) * sizeof(t->ents[0]));
	t->n--;
	return i;
}

/* Applies the difference between `old` (what the datapath has) and `new`. A service whose apply
 * fails keeps its previous entry in `new` so the table always says what the datapath holds.
 * Returns 0 or the first error. */
static int table_apply(struct meshd *m, struct state_table *old, struct state_table *new)
{
	struct state_entry *prev, *e;
	size_t i = 0;
	int err, first = 0;

	while (i < new->n) {
		e = &new->ents[i];
		prev = state_table_find(old, e->svc.name);
		if (prev && state_svc_equal(&prev->svc, &e->svc)) {
			i++;
			continue;
		}
		err = meshd_apply_service(m, &e->svc);
		if (!err) {
			LOG_DEBUG("discovery", "service applied", "service=%s backends=%zu",
				  log_q(e->svc.name), e->svc.n_backends);
			i++;
			continue;
		}
		LOG_ERR("discovery", "cannot apply service", "service=%s err=%d",
			log_q(e->svc.name), err);
		first = first ? first : err;
		i = keep_previous(new, i, prev);
	}
	for (i = 0; i < old->n; i++) {
		e = &old->ents[i];
		if (!e->svc.name || state_table_find(new, e->svc.name))
			continue;
		err = meshd_remove_service(m, e->svc.name);
		if (err) {
			LOG_ERR("discovery", "cannot remove service", "service=%s err=%d",
				log_q(e->svc.name), err);
			first = first ? first : err;
		} else {
			LOG_INFO("discovery", "service removed", "service=%s", log_q(e->svc.name));
		}
	}
	return first;
}

int discovery_update(struct discovery *d, const char *name, uint64_t index,
		     struct config_backend *backends, size_t n)
{
	struct state_entry *e = state_table_find(&d->table, name);
	struct config_service svc;
	int err;

	if (!e) {
		free(backends);
		return -ENOENT;
	}
	state_backends_sort(backends, n);
	if (n > MESH_MAX_BACKENDS_PER_SVC) {
		/* Serve the first ones (canonical order) rather than never updating the service. */
		LOG_WARN("discovery", "more backends than the datapath holds, using the first ones",
			 "service=%s backends=%zu max=%d", log_q(name), n,
			 MESH_MAX_BACKENDS_PER_SVC);
		n = MESH_MAX_BACKENDS_PER_SVC;
	}
	if (state_backends_equal(e->svc.backends, e->svc.n_backends, backends, n)) {
		free(backends);
		e->discovered = true;
		e->index = index;
		return 0;
	}
	err = state_svc_copy(&svc, &e->svc, backends, n);
	free(backends);
	if (err)
		return err;
	err = meshd_apply_service(d->m, &svc);
	if (err) {
		LOG_ERR("discovery", "cannot apply discovered backends", "service=%s err=%d",
			log_q(name), err);
		state_svc_release(&svc);
		return err;
	}
	LOG_INFO("discovery", "backends changed", "service=%s backends=%zu->%zu index=%llu",
		 log_q(name), e->svc.n_backends, n, (unsigned long long)index);
	state_svc_release(&e->svc);
	e->svc = svc;
	e->discovered = true;
	e->index = index;
	return 1;
}

int discovery_start(struct meshd *m)
{
	struct discovery *d;
	struct state_table empty = { 0 };
	int err;

	err = check_backend(m->cfg->discovery);
	if (err)
		return err;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->m = m;
	err = table_build(&d->table, m->cfg, NULL);
	if (err)
		goto err_free;
	if (m->cfg->discovery == CONFIG_DISCOVERY_CONSUL)
		discovery_consul_load_state(d, m->cfg);
	err = table_apply(m, &empty, &d->table);
	if (err)
		goto err_table;
	m->discovery = d;
	if (m->cfg->discovery == CONFIG_DISCOVERY_STATIC)
		discovery_count_sync(m, true); /* the config is the source: in sync by definition */
	if (m->cfg->discovery == CONFIG_DISCOVERY_CONSUL) {
		err = discovery_consul_start(d, m->cfg);
		if (err)
			goto err_unset;
	}
	LOG_INFO("discovery", "discovery started", "backend=%s services=%zu",
		 discovery_backend_name(m->cfg->discovery), d->table.n);
	return 0;

err_unset:
	m->discovery = NULL;
err_table:
	state_table_free(&d->table);
err_free:
	free(d);
	return err;
}

void discovery_stop(struct meshd *m)
{
	struct discovery *d = m->discovery;

	if (!d)
		return;
	m->discovery = NULL;
	discovery_consul_stop(d);
	state_table_free(&d->table);
	free(d);
}

static bool consul_changed(const struct discovery *d, const struct mesh_config *old,
			   const struct mesh_config *new)
{
	if (old->discovery != new->discovery)
		return true;
	if (new->discovery != CONFIG_DISCOVERY_CONSUL)
		return false;
	return !discovery_consul_same(d, &old->consul, &new->consul);
}

int discovery_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		     const struct config_diff *diff)
{
	struct discovery *d = m->discovery;
	struct state_table t;
	int err;

	if (!d)
		return -ENODEV;
	err = check_backend(new->discovery);
	if (err)
		return err;
	if (consul_changed(d, old, new)) {
		/* The new watcher replaces the old one only once it could start. */
		if (new->discovery == CONFIG_DISCOVERY_CONSUL)
			err = discovery_consul_start(d, new);
		else
			discovery_consul_stop(d);
		if (err)
			return err;
	}
	err = table_build(&t, new, &d->table);
	if (err)
		return err;
	err = table_apply(m, &d->table, &t);
	state_table_free(&d->table);
	d->table = t;
	if (new->discovery == CONFIG_DISCOVERY_STATIC)
		discovery_count_sync(m, !err);
	return err;
}

bool discovery_files_changed(const struct meshd *m)
{
	const struct mesh_config *cfg = m->cfg;

	/* Same settings on both sides: what is left to differ is the token file's content. */
	return m->discovery && cfg && cfg->discovery == CONFIG_DISCOVERY_CONSUL &&
	       !discovery_consul_same(m->discovery, &cfg->consul, &cfg->consul);
}

const struct config_service *discovery_service(const struct meshd *m, const char *name)
{
	const struct state_entry *e;

	if (!m->discovery || !name)
		return NULL;
	e = state_table_find(&m->discovery->table, name);
	return e ? &e->svc : NULL;
}
