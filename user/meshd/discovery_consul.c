/* Consul discovery glue: runs the watcher from user/consul, hands each result from the watcher
 * thread to the loop thread with evloop_post(), applies it through discovery_update(), counts
 * syncs and persists the discovered state under state_dir. A failed query never touches the
 * backends: the last known state keeps being served. Loop thread, except on_watch_update(). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "consul/consul.h"
#include "meshd/discovery.h"
#include "meshd/meshd.h"

/* Outlives the discovery object while results are queued on the loop: each queued result holds a
 * reference; `d` becomes NULL once the watcher it belongs to is stopped. */
struct consul_sink {
	atomic_int refs;
	struct discovery *d; /* loop thread only */
	struct evloop *loop;
	struct consul_watch *watch;
	char **reg_ids; /* service IDs this watcher registers (loop thread) */
	size_t n_reg_ids;
};

struct posted {
	struct consul_sink *sink;
	struct consul_update *u;
};

static void sink_put(struct consul_sink *s)
{
	size_t i;

	if (atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	for (i = 0; i < s->n_reg_ids; i++)
		free(s->reg_ids[i]);
	free(s->reg_ids);
	free(s);
}

static void persist(struct discovery *d)
{
	int err;

	if (!d->state_dir)
		return;
	err = state_save(d->state_dir, &d->table);
	if (err)
		LOG_WARN("discovery", "cannot persist discovery state", "dir=%s err=%d",
			 log_q(d->state_dir), err);
}

static void apply_update(struct discovery *d, struct consul_update *u)
{
	struct meshd *m = d->m;
	struct state_entry *e = state_table_find(&d->table, u->service);
	uint64_t old_index = e ? e->index : 0;
	int changed;

	discovery_count_sync(m, u->err == 0);
	if (u->err)
		return;
	changed = discovery_update(d, u->service, u->index, u->backends, u->n_backends);
	u->backends = NULL; /* discovery_update owns them now */
	if (changed == 1 || (changed == 0 && old_index != u->index))
		persist(d);
}

static void on_posted(void *arg)
{
	struct posted *p = arg;

	if (p->sink->d)
		apply_update(p->sink->d, p->u);
	consul_update_free(p->u);
	sink_put(p->sink);
	free(p);
}

/* Watcher thread: queue the result for the loop thread. */
static void on_watch_update(struct consul_update *u, void *arg)
{
	struct consul_sink *s = arg;
	struct posted *p = malloc(sizeof(*p));

	if (!p) {
		consul_update_free(u);
		return;
	}
	p->sink = s;
	p->u = u;
	atomic_fetch_add(&s->refs, 1);
	if (evloop_post(s->loop, on_posted, p) != 0) {
		consul_update_free(u);
		sink_put(s);
		free(p);
	}
}

void discovery_consul_load_state(struct discovery *d, const struct mesh_config *cfg)
{
	const struct state_saved_service *s;
	struct state_saved saved;
	struct config_service svc;
	char why[128] = "";
	size_t i;
	int err;

	if (!cfg->state_dir || !cfg->state_dir[0])
		return;
	err = state_load(cfg->state_dir, &saved, why, sizeof(why));
	if (err == -ENOENT)
		return;
	if (err) {
		LOG_WARN("discovery", "ignoring discovery state file", "dir=%s err=%d why=%s",
			 log_q(cfg->state_dir), err, log_q(why));
		return;
	}
	for (i = 0; i < d->table.n; i++) {
		struct state_entry *e = &d->table.ents[i];

		s = state_saved_find(&saved, e->svc.name);
		if (!s || !discovery_watches(cfg, e->svc.name))
			continue;
		if (state_svc_copy(&svc, &e->svc, s->backends, s->n_backends))
			continue;
		state_svc_release(&e->svc);
		e->svc = svc;
		e->discovered = true;
		e->index = s->index;
		LOG_INFO("discovery", "restored persisted backends", "service=%s backends=%zu",
			 log_q(e->svc.name), s->n_backends);
	}
	state_saved_free(&saved);
}

/* Every watched service needs a config entry: Consul gives only backends, the VIP and the
 * policy come from the config. */
static int check_services(const struct mesh_config *cfg)
{
	const struct config_consul *c = &cfg->consul;
	size_t i, j;

	for (i = 0; i < c->n_services; i++) {
		for (j = 0; j < cfg->n_services; j++)
			if (strcmp(cfg->services[j].name, c->services[i]) == 0)
				break;
		if (j < cfg->n_services)
			continue;
		LOG_ERR("discovery", "consul service has no entry in services (VIP and policy)",
			"service=%s", log_q(c->services[i]));
		return -EINVAL;
	}
	return 0;
}

struct reg_plan {
	struct consul_registration *regs;
	size_t n_regs;
	const char **deregs; /* point into the previous sink's reg_ids */
	size_t n_deregs;
};

static const char *reg_id(const struct config_consul_register *r)
{
	return r->id && r->id[0] ? r->id : r->name;
}

static bool cfg_registers(const struct config_consul *c, const char *id)
{
	size_t i;

	for (i = 0; i < c->n_reg; i++)
		if (strcmp(reg_id(&c->reg[i]), id) == 0)
			return true;
	return false;
}

/* What the new watcher registers, and which IDs the previous one registered that are gone now.
 * Records the new IDs in `s`. Returns 0 or -ENOMEM. */
static int plan_registrations(const struct config_consul *c, const struct consul_sink *prev,
			      struct consul_sink *s, struct reg_plan *p)
{
	size_t i, n_prev = prev ? prev->n_reg_ids : 0;

	memset(p, 0, sizeof(*p));
	p->regs = calloc(c->n_reg + 1, sizeof(*p->regs));
	p->deregs = calloc(n_prev + 1, sizeof(*p->deregs));
	s->reg_ids = calloc(c->n_reg + 1, sizeof(*s->reg_ids));
	if (!p->regs || !p->deregs || !s->reg_ids)
		return -ENOMEM;
	for (i = 0; i < c->n_reg; i++, p->n_regs++) {
		p->regs[i] = (struct consul_registration){
			.id = reg_id(&c->reg[i]),
			.name = c->reg[i].name,
			.endpoint = c->reg[i].endpoint,
			.deregister_critical_after_ns = c->deregister_critical_after_ns,
		};
		s->reg_ids[i] = strdup(p->regs[i].id);
		if (!s->reg_ids[i])
			return -ENOMEM;
		s->n_reg_ids++;
	}
	for (i = 0; i < n_prev; i++)
		if (!cfg_registers(c, prev->reg_ids[i]))
			p->deregs[p->n_deregs++] = prev->reg_ids[i];
	return 0;
}

static void plan_release(struct reg_plan *p)
{
	free(p->regs);
	free(p->deregs);
}

static struct consul_watch *watch_new(const struct mesh_config *cfg, struct consul_sink *s,
				      const struct reg_plan *p)
{
	const struct config_consul *c = &cfg->consul;
	struct consul_watch_opts o = {
		.address = c->address,
		.datacenter = c->datacenter,
		.ca_file = c->ca_file,
		.services = (const char *const *)c->services,
		.n_services = c->n_services,
		.wait_ns = c->wait_ns,
		.regs = p->regs,
		.n_regs = p->n_regs,
		.deregs = p->deregs,
		.n_deregs = p->n_deregs,
	};
	struct consul_watch *w;
	char *token = NULL;

	if (c->token_file && c->token_file[0]) {
		token = consul_read_token(c->token_file);
		if (!token) {
			LOG_ERR("discovery", "cannot read discovery.consul.token_file",
				"path=%s err=%d", log_q(c->token_file), -errno);
			return NULL;
		}
	}
	o.token = token;
	w = consul_watch_new(&o, on_watch_update, s);
	if (!w)
		LOG_ERR("discovery", "cannot start consul watcher", "err=%d", -errno);
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	return w;
}

int discovery_consul_start(struct discovery *d, const struct mesh_config *cfg)
{
	struct consul_sink *s;
	struct reg_plan plan;
	char *dir = NULL;
	int err;

	err = check_services(cfg);
	if (err)
		return err;
	if (cfg->state_dir && cfg->state_dir[0] && !(dir = strdup(cfg->state_dir)))
		return -ENOMEM;
	s = calloc(1, sizeof(*s));
	if (!s) {
		free(dir);
		return -ENOMEM;
	}
	atomic_init(&s->refs, 1);
	s->d = d;
	s->loop = d->m->loop;
	err = plan_registrations(&cfg->consul, d->sink, s, &plan);
	if (!err) {
		s->watch = watch_new(cfg, s, &plan);
		err = s->watch ? 0 : -EIO;
	}
	plan_release(&plan);
	if (err) {
		free(dir);
		sink_put(s);
		return err;
	}
	discovery_consul_stop(d);
	d->sink = s;
	d->state_dir = dir;
	LOG_INFO("discovery", "consul watcher started", "address=%s services=%zu registrations=%zu",
		 log_q(cfg->consul.address), cfg->consul.n_services, cfg->consul.n_reg);
	return 0;
}

void discovery_consul_stop(struct discovery *d)
{
	struct consul_sink *s = d->sink;

	free(d->state_dir);
	d->state_dir = NULL;
	if (!s)
		return;
	d->sink = NULL;
	consul_watch_free(s->watch); /* joins: no more posts after this */
	s->watch = NULL;
	s->d = NULL;
	sink_put(s);
}

static bool str_same(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

bool discovery_consul_same(const struct config_consul *a, const struct config_consul *b)
{
	size_t i;

	if (!str_same(a->address, b->address) || !str_same(a->datacenter, b->datacenter) ||
	    !str_same(a->token_file, b->token_file) || !str_same(a->ca_file, b->ca_file) ||
	    a->wait_ns != b->wait_ns || a->n_services != b->n_services)
		return false;
	for (i = 0; i < a->n_services; i++)
		if (!str_same(a->services[i], b->services[i]))
			return false;
	return true;
}
