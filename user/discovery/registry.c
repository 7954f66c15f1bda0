/* The registry of service -> backends behind discovery.h. It owns one entry per configured
 * service (policy from the config, backends from the config or from the running source), the
 * running source, the queue of delivered sets not yet written, the reload transaction and the
 * persisted state. Every write to the datapath goes through the hooks in batches: deliveries are
 * flushed a budget's worth per loop iteration; a reload plans its changes once and writes them
 * in steps inside one transaction that commits or undoes as a whole. Loop thread only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "discovery/discovery.h"
#include "discovery/persist.h"
#include "discovery/registry.h"
#include "discovery/state.h"

#define SUBSYS "discovery"
#define DEFAULT_BUDGET_NS 5000000ull
#define DEFAULT_PERSIST_DELAY_NS 1000000000ull
#define CHUNK 32	   /* changes per hooks.apply call, at most */
#define REAP_PER_STEP 4096 /* released definitions freed per loop iteration */
#define CHUNK_BACKENDS 128 /* ... and about this many backends (each is a map write or more) */

/* A running source and the sink it calls (the sink's arg). */
struct src {
	struct discovery *d;
	const struct discovery_source_ops *ops;
	struct discovery_source *s;
	bool up; /* last reported by the source */
};

/* A set delivered while a reload was in flight, replayed when it ends. */
struct held {
	struct src *from;
	char *name;
	uint64_t index;
	struct config_backend *backends;
	size_t n;
	struct config_split *split; /* with has_split: the source's split (owned) */
	size_t n_split;
	bool has_split;
};

/* One planned change of a reload. */
struct planned {
	struct reg_entry *e;	   /* existing entry; NULL when the service is added */
	struct config_service svc; /* new definition (deep copy); empty when removing */
	const struct discovery_source_ops *from;
	uint64_t index;
	bool split_from_source; /* svc.split is the source's, kept from the entry */
	bool remove;
};

struct reload_txn {
	const struct mesh_config *old, *new;
	const struct config_plan *plan;
	size_t plan_at; /* next entry of plan->services to plan */
	size_t scan_at; /* next service of `new` to check when discovery settings changed */
	bool scan;	/* ... which they did (or the source switches) */
	struct planned *p;
	size_t n, cap, next; /* next: first change not written yet */
	void *dp;	     /* the hooks' transaction */
	struct src *new_src; /* started for `new` (the source changes), or NULL */
	bool src_reloaded;   /* the running source took `new` (reload back on abort) */
};

struct discovery {
	struct evloop *loop;
	const struct discovery_source_ops *const *sources; /* tests; NULL = sources.c */
	struct discovery_hooks h;
	uint64_t budget_ns, persist_delay_ns;
	const struct mesh_config *cfg; /* the running config */
	struct reg_entry **ents;
	size_t n, cap;
	struct reg_index by_name, by_vip;
	struct src *src;
	struct reg_entry **queue; /* flush queue (FIFO from q_head) */
	size_t q_head, q_len, q_cap;
	int64_t flush_timer;
	struct reload_txn *txn;
	struct held *held;
	size_t n_held, cap_held;
	struct config_service
	    *grave; /* definitions a commit replaced, freed a slice per loop turn */
	size_t n_grave, cap_grave;
	int64_t reap_timer;
	struct persister *persister;
	char *state_dir;
	int64_t persist_timer;
	uint64_t sync_ok, sync_err;
	uint64_t entry_errors; /* config entries the source refused */
	double last_sync_ts;
	struct refusal *refused; /* defined services refused (each logged once) */
	size_t n_refused;
	struct src *defs_from; /* the last define (names malloc'd): applied again after a reload */
	struct discovery_def *defs;
	size_t n_defs;
};

/* A service the source defines that clashes with one served: logged when it starts. */
struct refusal {
	char *name, *other;
	bool seen; /* refused again by the define in progress */
};

static const char *source_name(const struct discovery_source_ops *ops)
{
	return ops ? ops->name : "config";
}

/* --- entries and the table -------------------------------------------------------------------- */

static struct reg_entry *find(const struct discovery *d, const char *name)
{
	return name ? reg_index_find(&d->by_name, name, strlen(name)) : NULL;
}

static void entry_clear_pending(struct reg_entry *e)
{
	state_backends_free(e->pending, e->n_pending);
	e->pending = NULL;
	e->n_pending = 0;
	state_split_free(e->pending_split, e->n_pending_split);
	e->pending_split = NULL;
	e->n_pending_split = 0;
	e->pending_has_split = false;
	e->has_pending = false;
}

static void entry_free(struct reg_entry *e)
{
	if (!e)
		return;
	entry_clear_pending(e);
	config_service_release(&e->svc);
	free(e);
}

/* Appends `e` to the table and both indexes. */
static int table_add(struct discovery *d, struct reg_entry *e)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct reg_entry **n = realloc(d->ents, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		d->ents = n;
		d->cap = cap;
	}
	if (reg_index_add(&d->by_name, e))
		return -ENOMEM;
	reg_index_add(&d->by_vip, e); /* -EEXIST only mid-swap; commit re-adds */
	d->ents[d->n++] = e;
	return 0;
}

static void queue_drop(struct discovery *d, const struct reg_entry *e);

/* Takes `e` out of the table and the indexes and frees it. */
static void table_remove(struct discovery *d, struct reg_entry *e)
{
	size_t i;

	for (i = 0; i < d->n && d->ents[i] != e; i++)
		;
	if (i == d->n)
		return;
	d->ents[i] = d->ents[--d->n];
	reg_index_del(&d->by_name, e);
	reg_index_del(&d->by_vip, e);
	if (e->queued)
		queue_drop(d, e);
	entry_free(e);
}

static void table_free(struct discovery *d)
{
	for (size_t i = 0; i < d->n; i++)
		entry_free(d->ents[i]);
	free(d->ents);
	d->ents = NULL;
	d->n = d->cap = 0;
	reg_index_free(&d->by_name);
	reg_index_free(&d->by_vip);
}

/* --- the graveyard: a reload of 16,384 services replaces 16,384 definitions (three blocks
 * each); they are freed a slice per loop iteration, not all in the commit's. ------------------- */

static void on_reap_timer(struct evloop *loop, void *arg)
{
	struct discovery *d = arg;
	size_t n = d->n_grave < REAP_PER_STEP ? d->n_grave : REAP_PER_STEP;

	d->reap_timer = 0;
	while (n--)
		config_service_release(&d->grave[--d->n_grave]);
	if (d->n_grave) {
		d->reap_timer = evloop_add_timer(loop, 0, on_reap_timer, d);
		if (d->reap_timer > 0)
			return;
		d->reap_timer = 0;
		while (d->n_grave)
			config_service_release(&d->grave[--d->n_grave]);
	}
	free(d->grave);
	d->grave = NULL;
	d->cap_grave = 0;
}

/* Takes `svc` (moved out, zeroed) to be freed later; frees it now when that cannot be. */
static void bury(struct discovery *d, struct config_service *svc)
{
	if (d->n_grave == d->cap_grave) {
		size_t cap = d->cap_grave ? d->cap_grave * 2 : 256;
		struct config_service *g = realloc(d->grave, cap * sizeof(*g));

		if (!g) {
			config_service_release(svc);
			return;
		}
		d->grave = g;
		d->cap_grave = cap;
	}
	d->grave[d->n_grave++] = *svc;
	memset(svc, 0, sizeof(*svc));
	if (!d->reap_timer && (d->reap_timer = evloop_add_timer(d->loop, 0, on_reap_timer, d)) < 0)
		d->reap_timer = 0;
}

/* --- persistence ------------------------------------------------------------------------------ */

/* Deep copy of every discovered set, for the writer thread. */
static struct state_saved *snapshot(const struct discovery *d)
{
	struct state_saved *s = calloc(1, sizeof(*s));
	size_t i;

	if (!s || !(s->svcs = calloc(d->n + 1, sizeof(*s->svcs))))
		goto err;
	for (i = 0; i < d->n; i++) {
		const struct reg_entry *e = d->ents[i];
		struct state_saved_service *o = &s->svcs[s->n];

		if (!e->from || e->from->kind == CONFIG_DISCOVERY_STATIC)
			continue;
		o->name = strdup(e->svc.name);
		o->backends = calloc(e->svc.n_backends + 1, sizeof(*o->backends));
		s->n++;
		if (!o->name || !o->backends)
			goto err;
		for (size_t k = 0; k < e->svc.n_backends; k++, o->n_backends++) {
			o->backends[k] = e->svc.backends[k];
			o->backends[k].subset = NULL;
			if (e->svc.backends[k].subset &&
			    !(o->backends[k].subset = strdup(e->svc.backends[k].subset)))
				goto err;
		}
		if (e->split_from_source &&
		    state_split_copy(e->svc.split, e->svc.n_split, &o->split))
			goto err;
		o->n_split = e->split_from_source ? e->svc.n_split : 0;
		o->index = e->index;
		o->has_vip = e->dynamic;
		o->vip = e->svc.vip;
		snprintf(o->source, sizeof(o->source), "%s", e->from->name);
	}
	return s;
err:
	if (s)
		state_saved_free(s);
	free(s);
	return NULL;
}

static void persist_now(struct discovery *d)
{
	struct state_saved *s;

	if (!d->state_dir || !d->persister)
		return;
	s = snapshot(d);
	if (!s) {
		LOG_WARN(SUBSYS, "cannot snapshot discovery state", "err=%s",
			 log_q(strerror(ENOMEM)));
		return;
	}
	persister_submit(d->persister, d->state_dir, s);
}

static void on_persist_timer(struct evloop *loop, void *arg)
{
	struct discovery *d = arg;

	d->persist_timer = 0;
	persist_now(d);
}

/* Rewrites the state file after the coalescing delay (one write for a burst of changes). */
static void persist_soon(struct discovery *d)
{
	if (!d->state_dir || d->persist_timer)
		return;
	d->persist_timer = evloop_add_timer(d->loop, d->persist_delay_ns, on_persist_timer, d);
	if (d->persist_timer < 0) {
		d->persist_timer = 0;
		persist_now(d);
	}
}

static int set_state_dir(struct discovery *d, const char *dir)
{
	char *copy = dir && dir[0] ? strdup(dir) : NULL;

	if (dir && dir[0] && !copy)
		return -ENOMEM;
	free(d->state_dir);
	d->state_dir = copy;
	return 0;
}

/* --- writing through the hooks ---------------------------------------------------------------- */

/* One transaction writing `ch[0..n)`, committed when every change went in. */
static int write_batch(struct discovery *d, const struct discovery_change *ch, size_t n)
{
	void *txn = d->h.begin(d->h.arg);
	int err;

	if (!txn)
		return errno ? -errno : -ENOMEM;
	err = d->h.apply(d->h.arg, txn, ch, n);
	d->h.end(d->h.arg, txn, err == 0);
	return err;
}

static void notify(struct discovery *d, const char *name, const struct config_service *svc,
		   bool undone)
{
	if (d->h.changed)
		d->h.changed(d->h.arg, name, svc, undone);
}

/* --- the flush queue -------------------------------------------------------------------------- */

static void queue_drop(struct discovery *d, const struct reg_entry *e)
{
	for (size_t i = 0; i < d->q_len; i++) {
		size_t at = (d->q_head + i) % d->q_cap;

		if (d->queue[at] == e)
			d->queue[at] = NULL; /* skipped when reached */
	}
}

static int queue_push(struct discovery *d, struct reg_entry *e)
{
	if (e->queued)
		return 0;
	if (d->q_len == d->q_cap) {
		size_t cap = d->q_cap ? d->q_cap * 2 : 64, i;
		struct reg_entry **q = malloc(cap * sizeof(*q));

		if (!q)
			return -ENOMEM;
		for (i = 0; i < d->q_len; i++)
			q[i] = d->queue[(d->q_head + i) % d->q_cap];
		free(d->queue);
		d->queue = q;
		d->q_cap = cap;
		d->q_head = 0;
	}
	d->queue[(d->q_head + d->q_len++) % d->q_cap] = e;
	e->queued = true;
	return 0;
}

static struct reg_entry *queue_pop(struct discovery *d)
{
	while (d->q_len) {
		struct reg_entry *e = d->queue[d->q_head];

		d->q_head = (d->q_head + 1) % d->q_cap;
		d->q_len--;
		if (e) {
			e->queued = false;
			return e;
		}
	}
	return NULL;
}

static void flush_soon(struct discovery *d);

/* The entry's pending set as a new definition in `out`. Returns 1 when it differs from what
 * is served, 0 when only the index moved (updated here), or -ENOMEM. */
static int pending_change(struct discovery *d, struct reg_entry *e, struct config_service *out)
{
	struct config_service want = e->svc;

	if (e->pending_has_split) {
		want.split = e->pending_split;
		want.n_split = e->n_pending_split;
	}
	if (e->from == e->pending_from &&
	    state_backends_equal(e->svc.backends, e->svc.n_backends, e->pending, e->n_pending) &&
	    state_split_equal(e->svc.split, e->svc.n_split, want.split, want.n_split)) {
		if (e->index != e->pending_index)
			persist_soon(d);
		e->index = e->pending_index;
		e->split_from_source |= e->pending_has_split;
		entry_clear_pending(e);
		return 0;
	}
	return config_service_copy(out, &want, e->pending, e->n_pending) ? -ENOMEM : 1;
}

/* Makes a written pending set the served one. */
static void pending_commit(struct discovery *d, struct reg_entry *e, struct config_service *svc)
{
	LOG_INFO(SUBSYS, "backends changed",
		 "service=%s source=%s backends=%zu->%zu split=%zu->%zu index=%llu",
		 log_q(e->svc.name), source_name(e->pending_from), e->svc.n_backends,
		 svc->n_backends, e->svc.n_split, svc->n_split,
		 (unsigned long long)e->pending_index);
	e->split_from_source |= e->pending_has_split;
	config_service_release(&e->svc);
	e->svc = *svc;
	memset(svc, 0, sizeof(*svc));
	e->from = e->pending_from;
	e->index = e->pending_index;
	entry_clear_pending(e);
	persist_soon(d);
	notify(d, e->svc.name, &e->svc, false);
}

static void flush(struct discovery *d);

static void on_flush_timer(struct evloop *loop, void *arg)
{
	struct discovery *d = arg;

	d->flush_timer = 0;
	flush(d);
}

static void flush_soon(struct discovery *d)
{
	if (d->flush_timer || d->txn)
		return;
	d->flush_timer = evloop_add_timer(d->loop, 0, on_flush_timer, d);
	if (d->flush_timer < 0)
		d->flush_timer = 0; /* the next delivery tries again */
}

/* Writes pending sets for at most the budget, then yields to the loop. */
static void flush(struct discovery *d)
{
	uint64_t t0 = evloop_now_ns();
	struct config_service svcs[CHUNK];
	struct reg_entry *es[CHUNK];

	while (d->q_len && !d->txn && evloop_now_ns() - t0 < d->budget_ns) {
		struct discovery_change ch[CHUNK];
		size_t k = 0, i;
		int err;

		size_t backends = 0;

		while (k < CHUNK && backends < CHUNK_BACKENDS) {
			struct reg_entry *e = queue_pop(d);
			int r;

			if (!e)
				break;
			if (!e->has_pending)
				continue;
			r = pending_change(d, e, &svcs[k]);
			if (r < 0) {
				LOG_WARN(SUBSYS, "cannot stage backends", "service=%s err=%s",
					 log_q(e->svc.name), log_q(strerror(-r)));
				entry_clear_pending(e);
			} else if (r == 1) {
				backends += svcs[k].n_backends + 1;
				es[k++] = e;
			}
		}
		if (!k)
			continue;
		for (i = 0; i < k; i++)
			ch[i] = (struct discovery_change){ es[i]->svc.name, &svcs[i] };
		err = write_batch(d, ch, k);
		for (i = 0; i < k; i++) {
			int one = err;

			if (err && k > 1) /* isolate the set that does not go in */
				one = write_batch(d, &ch[i], 1);
			if (one) {
				LOG_ERR(SUBSYS,
					"cannot write discovered backends; serving the last set",
					"service=%s backends=%zu err=%s", log_q(es[i]->svc.name),
					svcs[i].n_backends, log_q(strerror(-one)));
				entry_clear_pending(es[i]);
				config_service_release(&svcs[i]);
				continue;
			}
			pending_commit(d, es[i], &svcs[i]);
		}
	}
	if (d->q_len)
		flush_soon(d);
}

/* --- the sink ---------------------------------------------------------------------------------- */

/* Sorts, deduplicates and caps a delivered set the way every set is treated (live discovery and
 * persisted state alike). Returns the count to keep. */
static size_t normalize(const char *name, const char *from, struct config_backend *b, size_t n)
{
	n = state_backends_normalize(b, n);
	for (size_t i = MESH_MAX_BACKENDS_PER_SVC; i < n; i++) {
		free(b[i].subset);
		b[i].subset = NULL;
	}
	if (n > MESH_MAX_BACKENDS_PER_SVC) {
		/* Serve the first ones (canonical order) rather than never updating the service. */
		LOG_WARN(SUBSYS, "more backends than the datapath holds, using the first ones",
			 "service=%s source=%s backends=%zu max=%d", log_q(name), log_q(from), n,
			 MESH_MAX_BACKENDS_PER_SVC);
		n = MESH_MAX_BACKENDS_PER_SVC;
	}
	return n;
}

static void hold(struct discovery *d, struct src *s, const char *name, uint64_t index,
		 struct config_backend *b, size_t n, const struct config_split *split,
		 size_t n_split, bool has_split)
{
	struct held *h;
	struct config_split *sp = NULL;

	if (d->n_held == d->cap_held) {
		size_t cap = d->cap_held ? d->cap_held * 2 : 16;

		h = realloc(d->held, cap * sizeof(*h));
		if (!h)
			goto drop;
		d->held = h;
		d->cap_held = cap;
	}
	h = &d->held[d->n_held];
	if (has_split && state_split_copy(split, n_split, &sp))
		goto drop;
	h->name = strdup(name);
	if (!h->name)
		goto drop;
	*h = (struct held){ s, h->name, index, b, n, sp, n_split, has_split };
	d->n_held++;
	return;
drop:
	LOG_WARN(SUBSYS, "dropping a delivered set (out of memory)", "service=%s", log_q(name));
	state_split_free(sp, n_split);
	state_backends_free(b, n);
}

/* A delivered set, with the source's split when `has_split` (copied), else the one served. */
static void deliver(struct discovery *d, struct src *s, const char *name, uint64_t index,
		    struct config_backend *b, size_t n, const struct config_split *split,
		    size_t n_split, bool has_split)
{
	struct reg_entry *e = find(d, name);

	if (s != d->src || !e || !(e->dynamic || s->ops->provides(d->cfg, name))) {
		state_backends_free(b, n);
		return;
	}
	n = normalize(name, s->ops->name, b, n);
	entry_clear_pending(e);
	if (has_split && state_split_copy(split, n_split, &e->pending_split)) {
		state_backends_free(b, n);
		return;
	}
	e->n_pending_split = has_split ? n_split : 0;
	e->pending_has_split = has_split;
	e->pending = b;
	e->n_pending = n;
	e->pending_index = index;
	e->pending_from = s->ops;
	e->has_pending = true;
	if (queue_push(d, e)) {
		entry_clear_pending(e);
		return;
	}
	flush_soon(d);
}

static void sink_deliver(void *arg, const char *name, uint64_t index, struct config_backend *b,
			 size_t n)
{
	struct src *s = arg;

	if (s->d->txn)
		hold(s->d, s, name, index, b, n, NULL, 0, false);
	else
		deliver(s->d, s, name, index, b, n, NULL, 0, false);
}

static void sink_deliver_split(void *arg, const char *name, uint64_t index,
			       struct config_backend *b, size_t n, const struct config_split *split,
			       size_t n_split)
{
	struct src *s = arg;

	if (s->d->txn)
		hold(s->d, s, name, index, b, n, split, n_split, true);
	else
		deliver(s->d, s, name, index, b, n, split, n_split, true);
}

static void sink_entry_error(void *arg)
{
	((struct src *)arg)->d->entry_errors++;
}

static void sink_synced(void *arg, bool ok)
{
	struct src *s = arg;
	struct discovery *d = s->d;
	struct timespec ts;

	if (ok) {
		d->sync_ok++;
		clock_gettime(CLOCK_REALTIME, &ts);
		d->last_sync_ts = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	} else {
		d->sync_err++;
	}
}

static void sink_up(void *arg, bool up)
{
	((struct src *)arg)->up = up;
}

static const struct config_service *sink_current(void *arg, const char *name)
{
	struct reg_entry *e = find(((struct src *)arg)->d, name);

	return e ? &e->svc : NULL;
}

static void define(struct discovery *d, struct src *s, const struct discovery_def *defs, size_t n);

static void defs_free(struct discovery_def *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((char *)v[i].name);
	free(v);
}

/* Keeps a copy of the last define: held during a reload, applied again after one (a service the
 * reload stopped listing may free the name or VIP a defined service wants). */
static void hold_defs(struct discovery *d, struct src *s, const struct discovery_def *defs,
		      size_t n)
{
	struct discovery_def *v = calloc(n + 1, sizeof(*v));
	size_t i;

	for (i = 0; v && i < n; i++) {
		v[i] = defs[i];
		if (!(v[i].name = strdup(defs[i].name)))
			break;
	}
	if (!v || i < n) {
		LOG_WARN(SUBSYS, "dropping defined services (out of memory)", NULL);
		defs_free(v, i);
		return;
	}
	defs_free(d->defs, d->n_defs);
	d->defs = v;
	d->n_defs = n;
	d->defs_from = s;
}

static void sink_define(void *arg, const struct discovery_def *defs, size_t n)
{
	struct src *s = arg;

	hold_defs(s->d, s, defs, n);
	if (!s->d->txn && s->d->defs_from == s)
		define(s->d, s, s->d->defs, s->d->n_defs);
}

/* Replays the sets held during a reload: those of the source now running go in. */
static void replay_held(struct discovery *d)
{
	size_t i, n = d->n_held;
	struct held *h = d->held;

	d->held = NULL;
	d->n_held = d->cap_held = 0;
	if (d->defs_from && d->defs_from == d->src)
		define(d, d->src, d->defs, d->n_defs);
	for (i = 0; i < n; i++) {
		deliver(d, h[i].from, h[i].name, h[i].index, h[i].backends, h[i].n, h[i].split,
			h[i].n_split, h[i].has_split);
		state_split_free(h[i].split, h[i].n_split);
		free(h[i].name);
	}
	free(h);
}

/* --- sources ---------------------------------------------------------------------------------- */

static int src_start(struct discovery *d, const struct mesh_config *cfg, struct src **out)
{
	const struct discovery_source_ops *ops =
	    d->sources ? d->sources[cfg->discovery] : discovery_source_ops(cfg->discovery);
	struct src *s;
	int err;

	if (!ops) {
		LOG_ERR(SUBSYS, "unknown discovery backend", "backend=%d", (int)cfg->discovery);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->d = d;
	s->ops = ops;
	struct discovery_sink sink = {
		.deliver = sink_deliver,
		.deliver_split = sink_deliver_split,
		.entry_error = sink_entry_error,
		.synced = sink_synced,
		.up = sink_up,
		.current = sink_current,
		.define = sink_define,
		.arg = s,
	};
	err = ops->start(cfg, d->loop, &sink, &s->s);
	if (err) {
		free(s);
		return err;
	}
	*out = s;
	return 0;
}

static void src_stop(struct src *s, bool switched)
{
	if (!s)
		return;
	s->ops->stop(s->s, switched);
	free(s);
}

/* --- services the source defines (catalog discovery) ------------------------------------------ */

/* The definition of a defined service: the config's global policy (mTLS as mtls.enabled, which a
 * configured service inherits too), `b` as its backends. */
static int def_service(const struct mesh_config *cfg, const char *name,
		       const struct config_endpoint *vip, const struct config_backend *b, size_t n,
		       struct config_service *out)
{
	struct config_service tmp = {
		.name = (char *)name,
		.vip = *vip,
		.protocol = CONFIG_PROTO_TCP,
		.load_balancer = cfg->load_balancer,
		.circuit_breaker = cfg->circuit_breaker,
		.mtls = cfg->mtls.enabled,
	};

	return config_service_copy(out, &tmp, b, n);
}

/* Records that `name` is refused because `other` is served; logs it when that is news. */
static void refuse(struct discovery *d, const struct discovery_def *def, const char *other,
		   const char *what)
{
	struct refusal *r = NULL, *v;
	char vip[64];

	for (size_t i = 0; i < d->n_refused && !r; i++)
		if (!strcmp(d->refused[i].name, def->name))
			r = &d->refused[i];
	if (r && r->other && !strcmp(r->other, other)) {
		r->seen = true;
		return;
	}
	if (!r) {
		v = realloc(d->refused, (d->n_refused + 1) * sizeof(*v));
		if (!v)
			return;
		d->refused = v;
		r = &v[d->n_refused];
		*r = (struct refusal){ strdup(def->name), NULL, true };
		if (!r->name)
			return;
		d->n_refused++;
	}
	free(r->other);
	r->other = strdup(other);
	r->seen = true;
	LOG_WARN(SUBSYS, "service from the catalog refused: already served",
		 "service=%s vip=%s "
		 "clashes_with=%s on=%s",
		 log_q(def->name), config_endpoint_str(&def->vip, vip, sizeof(vip)), log_q(other),
		 what);
}

/* Forgets refusals the last define did not repeat (a later clash is news again). */
static void refusals_prune(struct discovery *d)
{
	for (size_t i = 0; i < d->n_refused;) {
		if (d->refused[i].seen) {
			d->refused[i++].seen = false;
			continue;
		}
		free(d->refused[i].name);
		free(d->refused[i].other);
		d->refused[i] = d->refused[--d->n_refused];
	}
}

static const struct discovery_def *def_find(const struct discovery_def *defs, size_t n,
					    const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(defs[i].name, name))
			return &defs[i];
	return NULL;
}

static bool ep_equal(const struct config_endpoint *a, const struct config_endpoint *b)
{
	unsigned char ka[REG_VIP_KEY], kb[REG_VIP_KEY];
	size_t la = reg_vip_key(a, ka);

	return la == reg_vip_key(b, kb) && !memcmp(ka, kb, la);
}

/* Takes out the defined services `defs` no longer lists (or lists at another VIP). */
static int define_remove(struct discovery *d, const struct discovery_def *defs, size_t n)
{
	struct reg_entry **gone = calloc(d->n + 1, sizeof(*gone));
	struct discovery_change *ch = calloc(d->n + 1, sizeof(*ch));
	size_t k = 0;
	int err = 0;

	if (!gone || !ch) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < d->n; i++) {
		const struct reg_entry *e = d->ents[i];
		const struct discovery_def *def =
		    e->dynamic ? def_find(defs, n, e->svc.name) : NULL;

		if (e->dynamic && (!def || !ep_equal(&def->vip, &e->svc.vip))) {
			ch[k] = (struct discovery_change){ e->svc.name, NULL };
			gone[k++] = d->ents[i];
		}
	}
	err = k ? write_batch(d, ch, k) : 0;
	for (size_t i = 0; !err && i < k; i++) {
		char *name = strdup(gone[i]->svc.name);

		LOG_INFO(SUBSYS, "service from the catalog removed", "service=%s", log_q(name));
		table_remove(d, gone[i]);
		notify(d, name, NULL, false);
		free(name);
	}
	if (k && !err)
		persist_soon(d);
out:
	free(gone);
	free(ch);
	return err;
}

/* Why `def` cannot be served (the name of what it clashes with in *other), or NULL. */
static const char *clash(const struct discovery *d, const struct discovery_def *def,
			 const struct config_service *added, size_t n_added, const char **other)
{
	unsigned char key[REG_VIP_KEY];
	const struct reg_entry *e = find(d, def->name);

	if (e) {
		*other = e->svc.name;
		return "name";
	}
	e = reg_index_find(&d->by_vip, key, reg_vip_key(&def->vip, key));
	if (e) {
		*other = e->svc.name;
		return "vip";
	}
	for (size_t i = 0; i < n_added; i++)
		if (ep_equal(&added[i].vip, &def->vip)) {
			*other = added[i].name;
			return "vip";
		}
	return NULL;
}

static void define_commit(struct discovery *d, struct src *s, struct config_service *svc)
{
	struct reg_entry *e = calloc(1, sizeof(*e));
	char vip[64];

	if (!e) {
		config_service_release(svc);
		return;
	}
	e->svc = *svc;
	memset(svc, 0, sizeof(*svc));
	e->from = s->ops;
	e->dynamic = true;
	if (table_add(d, e)) {
		entry_free(e);
		return;
	}
	LOG_INFO(SUBSYS, "service from the catalog added", "service=%s vip=%s", log_q(e->svc.name),
		 config_endpoint_str(&e->svc.vip, vip, sizeof(vip)));
	notify(d, e->svc.name, &e->svc, false);
}

/* Writes the new defined services in one transaction (with no backends: they follow). */
static int define_add(struct discovery *d, struct src *s, const struct discovery_def *defs,
		      size_t n)
{
	struct config_service *svcs = calloc(n + 1, sizeof(*svcs));
	struct discovery_change *ch = calloc(n + 1, sizeof(*ch));
	size_t k = 0, i;
	int err = 0;

	for (i = 0; svcs && ch && !err && i < n; i++) {
		const struct reg_entry *e = find(d, defs[i].name);
		const char *other, *what;

		if (e && e->dynamic)
			continue; /* served already, at this VIP */
		what = clash(d, &defs[i], svcs, k, &other);
		if (what) {
			refuse(d, &defs[i], other, what);
			continue;
		}
		err = def_service(d->cfg, defs[i].name, &defs[i].vip, NULL, 0, &svcs[k]);
		if (!err) {
			ch[k] = (struct discovery_change){ svcs[k].name, &svcs[k] };
			k++;
		}
	}
	if (!svcs || !ch)
		err = -ENOMEM;
	if (!err && k)
		err = write_batch(d, ch, k);
	for (i = 0; i < k; i++) {
		if (!err)
			define_commit(d, s, &svcs[i]);
		config_service_release(&svcs[i]);
	}
	if (!err && k)
		persist_soon(d);
	free(svcs);
	free(ch);
	return err;
}

/* The source's defined services are now `defs`: those gone leave the datapath, new ones go in
 * (unless their name or VIP is served already). On a write error nothing changes (logged); the
 * next define tries again. */
static void define(struct discovery *d, struct src *s, const struct discovery_def *defs, size_t n)
{
	int err;

	if (s != d->src || !s->ops->defines || !s->ops->defines(d->cfg))
		return;
	err = define_remove(d, defs, n);
	if (!err)
		err = define_add(d, s, defs, n);
	if (err)
		LOG_ERR(SUBSYS, "cannot write the services from the catalog; serving the last set",
			"err=%s", log_q(strerror(-err)));
	else
		refusals_prune(d);
}

/* At start: the defined services an earlier run persisted, when the source still defines
 * services (served until its first define says otherwise). */
static int restore_defined(struct discovery *d, const struct mesh_config *cfg,
			   const struct discovery_source_ops *ops, struct state_saved *saved)
{
	unsigned char key[REG_VIP_KEY];

	if (!ops->defines || !ops->defines(cfg))
		return 0;
	for (size_t i = 0; i < saved->n; i++) {
		struct state_saved_service *o = &saved->svcs[i];
		struct reg_entry *e;
		size_t n;

		if (!o->has_vip || strcmp(o->source, ops->name) || find(d, o->name) ||
		    reg_index_find(&d->by_vip, key, reg_vip_key(&o->vip, key)))
			continue;
		e = calloc(1, sizeof(*e));
		n = normalize(o->name, "state file", o->backends, o->n_backends);
		if (!e || def_service(cfg, o->name, &o->vip, o->backends, n, &e->svc)) {
			free(e);
			return -ENOMEM;
		}
		e->from = ops;
		e->index = o->index;
		e->dynamic = true;
		if (table_add(d, e)) {
			entry_free(e);
			return -ENOMEM;
		}
		LOG_INFO(SUBSYS, "restored persisted service from the catalog",
			 "service=%s backends=%zu", log_q(o->name), n);
	}
	return 0;
}

static void refusals_free(struct discovery *d)
{
	for (size_t i = 0; i < d->n_refused; i++) {
		free(d->refused[i].name);
		free(d->refused[i].other);
	}
	free(d->refused);
	defs_free(d->defs, d->n_defs);
}

/* --- start ------------------------------------------------------------------------------------ */

/* Persisted sets of the source `ops`, read without blocking; empty when there are none. */
static void load_saved(const struct mesh_config *cfg, struct state_saved *saved)
{
	char why[128] = "";
	int err;

	memset(saved, 0, sizeof(*saved));
	if (!cfg->state_dir || !cfg->state_dir[0])
		return;
	err = state_load(cfg->state_dir, saved, why, sizeof(why));
	if (err && err != -ENOENT)
		LOG_WARN(SUBSYS, "ignoring discovery state file", "dir=%s err=%s why=%s",
			 log_q(cfg->state_dir), log_q(strerror(-err)), log_q(why));
}

/* A new entry for `svc` with its config backends, or the persisted set of the source when
 * `saved` has one for it. */
static struct reg_entry *entry_for(const struct config_service *svc,
				   const struct discovery_source_ops *ops,
				   const struct state_saved *saved)
{
	const struct state_saved_service *s = saved ? state_saved_find(saved, svc->name) : NULL;
	struct reg_entry *e = calloc(1, sizeof(*e));
	const struct config_backend *b = svc->backends;
	struct config_service want = *svc;
	size_t n = svc->n_backends;

	if (!e)
		return NULL;
	if (s && !strcmp(s->source, ops->name)) {
		b = s->backends;
		n = normalize(svc->name, "state file", s->backends, s->n_backends);
		e->from = ops;
		e->index = s->index;
		e->split_from_source = s->n_split > 0;
		if (s->n_split) {
			want.split = s->split;
			want.n_split = s->n_split;
		}
	}
	if (config_service_copy(&e->svc, &want, b, n)) {
		free(e);
		return NULL;
	}
	if (e->from)
		LOG_INFO(SUBSYS, "restored persisted backends", "service=%s source=%s backends=%zu",
			 log_q(svc->name), ops->name, n);
	return e;
}

static int build_table(struct discovery *d, const struct mesh_config *cfg,
		       const struct discovery_source_ops *ops, struct state_saved *saved)
{
	for (size_t i = 0; i < cfg->n_services; i++) {
		const struct config_service *svc = &cfg->services[i];
		bool provided = ops->provides(cfg, svc->name);
		struct reg_entry *e = entry_for(svc, ops, provided ? saved : NULL);

		if (!e || table_add(d, e)) {
			entry_free(e);
			return -ENOMEM;
		}
	}
	return 0;
}

/* Writes the whole table in one transaction. */
static int write_table(struct discovery *d)
{
	struct discovery_change *ch = calloc(d->n + 1, sizeof(*ch));
	int err;

	if (!ch)
		return -ENOMEM;
	for (size_t i = 0; i < d->n; i++)
		ch[i] = (struct discovery_change){ d->ents[i]->svc.name, &d->ents[i]->svc };
	err = write_batch(d, ch, d->n);
	free(ch);
	return err;
}

/* The table with persisted sets when they go in, else (never blocking a start on what an earlier
 * run left behind) with the config's backends only. */
static int start_table(struct discovery *d, const struct mesh_config *cfg,
		       const struct discovery_source_ops *ops)
{
	struct state_saved saved;
	int err;

	load_saved(cfg, &saved);
	err = build_table(d, cfg, ops, &saved);
	if (!err)
		err = restore_defined(d, cfg, ops, &saved);
	state_saved_free(&saved);
	if (!err)
		err = write_table(d);
	if (!err || err == -ENOMEM)
		return err;
	LOG_WARN(SUBSYS, "cannot write persisted backends; starting from the config's", "err=%s",
		 log_q(strerror(-err)));
	table_free(d);
	err = build_table(d, cfg, ops, NULL);
	return err ? err : write_table(d);
}

struct discovery *discovery_new(const struct discovery_opts *o)
{
	struct discovery *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->loop = o->loop;
	d->sources = o->sources;
	d->h = o->hooks;
	d->budget_ns = o->budget_ns ? o->budget_ns : DEFAULT_BUDGET_NS;
	d->persist_delay_ns = o->persist_delay_ns ? o->persist_delay_ns : DEFAULT_PERSIST_DELAY_NS;
	d->by_vip.by_vip = true;
	d->persister = persister_new();
	if (!d->persister) {
		free(d);
		return NULL;
	}
	return d;
}

int discovery_start(struct discovery *d, const struct mesh_config *cfg)
{
	struct src *s;
	int err;

	err = set_state_dir(d, cfg->state_dir);
	if (!err)
		err = src_start(d, cfg, &s);
	if (err)
		return err;
	d->cfg = cfg;
	err = start_table(d, cfg, s->ops);
	if (err) {
		LOG_ERR(SUBSYS, "cannot write the services", "err=%s", log_q(strerror(-err)));
		src_stop(s, false);
		table_free(d);
		return err;
	}
	d->src = s;
	LOG_INFO(SUBSYS, "discovery started", "backend=%s services=%zu", s->ops->name, d->n);
	return 0;
}

static void txn_free(struct reload_txn *t);

void discovery_free(struct discovery *d)
{
	if (!d)
		return;
	if (d->txn)
		discovery_reload_end(d, false);
	src_stop(d->src, false);
	d->src = NULL;
	if (d->flush_timer)
		evloop_del_timer(d->loop, d->flush_timer);
	if (d->persist_timer) {
		evloop_del_timer(d->loop, d->persist_timer);
		persist_now(d);
	}
	if (d->reap_timer)
		evloop_del_timer(d->loop, d->reap_timer);
	while (d->n_grave)
		config_service_release(&d->grave[--d->n_grave]);
	free(d->grave);
	persister_free(d->persister);
	replay_held(d); /* frees them: no source any more */
	refusals_free(d);
	table_free(d);
	free(d->queue);
	free(d->state_dir);
	free(d);
}

/* --- reload ----------------------------------------------------------------------------------- */

static struct planned *plan_add(struct reload_txn *t)
{
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct planned *p = realloc(t->p, cap * sizeof(*p));

		if (!p)
			return NULL;
		t->p = p;
		t->cap = cap;
	}
	memset(&t->p[t->n], 0, sizeof(t->p[0]));
	return &t->p[t->n++];
}

/* Plans service `svc` of the new config (existing entry `e`, or NULL): discovered backends (and
 * a split the source gives) stay when the same source still provides it, else the config's.
 * Nothing is planned when what would be served does not change. */
static int plan_service(struct reload_txn *t, const struct discovery_source_ops *ops,
			const struct config_service *svc, struct reg_entry *e)
{
	const struct discovery_source_ops *from = NULL;
	const struct config_backend *b = svc->backends;
	struct config_service want = *svc;
	size_t n = svc->n_backends;
	uint64_t index = 0;
	struct planned *p;
	bool keep_split = false;

	if (e && e->from && e->from == ops && ops->provides(t->new, svc->name)) {
		from = e->from;
		b = e->svc.backends;
		n = e->svc.n_backends;
		index = e->index;
		keep_split = e->split_from_source;
	}
	if (keep_split) {
		want.split = e->svc.split;
		want.n_split = e->svc.n_split;
	}
	if (e && e->from == from && e->split_from_source == keep_split &&
	    state_backends_equal(e->svc.backends, e->svc.n_backends, b, n) &&
	    !config_service_changes(&e->svc, &want, false, NULL, 0))
		return 0;
	p = plan_add(t);
	if (!p)
		return -ENOMEM;
	p->e = e;
	p->from = from;
	p->index = index;
	p->split_from_source = keep_split;
	if (config_service_copy(&p->svc, &want, b, n)) {
		t->n--;
		return -ENOMEM;
	}
	if (e)
		e->in_txn = true;
	return 0;
}

/* The entry of a service the config lists (not one the source defines), or NULL. */
static struct reg_entry *find_listed(const struct discovery *d, const char *name)
{
	struct reg_entry *e = find(d, name);

	return e && !e->dynamic ? e : NULL;
}

static int plan_remove(struct reload_txn *t, struct reg_entry *e)
{
	struct planned *p = e ? plan_add(t) : NULL;

	if (!e)
		return 0;
	if (!p)
		return -ENOMEM;
	p->e = e;
	p->remove = true;
	e->in_txn = true;
	return 0;
}

static bool vip_listed(const struct mesh_config *cfg, const struct config_endpoint *vip)
{
	for (size_t i = 0; i < cfg->n_services; i++)
		if (ep_equal(&cfg->services[i].vip, vip))
			return true;
	return false;
}

/* Plans the defined services first: each leaves when the new config no longer lets the source
 * define services or lists its name or VIP itself; the others take the new global policy. */
static int plan_defined(struct discovery *d, struct reload_txn *t)
{
	const struct discovery_source_ops *ops = t->new_src ? t->new_src->ops : d->src->ops;
	bool keep = !t->new_src && ops->defines && ops->defines(t->new);
	int err = 0;

	for (size_t i = 0; !err && i < d->n; i++) {
		struct reg_entry *e = d->ents[i];
		struct config_service svc;
		struct planned *p;

		if (!e->dynamic)
			continue;
		if (!keep || config_service_find(t->new, e->svc.name) ||
		    vip_listed(t->new, &e->svc.vip)) {
			LOG_INFO(SUBSYS, "service from the catalog leaves with the reload",
				 "service=%s", log_q(e->svc.name));
			err = plan_remove(t, e);
			continue;
		}
		if (def_service(t->new, e->svc.name, &e->svc.vip, e->svc.backends,
				e->svc.n_backends, &svc))
			return -ENOMEM;
		if (!config_service_changes(&e->svc, &svc, false, NULL, 0) || !(p = plan_add(t))) {
			err = config_service_changes(&e->svc, &svc, false, NULL, 0) ? -ENOMEM : 0;
			config_service_release(&svc);
			continue;
		}
		*p = (struct planned){ .e = e, .svc = svc, .from = e->from, .index = e->index };
		e->in_txn = true;
	}
	return err;
}

/* True when a change of discovery settings may move services between the config and a source. */
static bool discovery_settings_changed(const struct config_plan *plan)
{
	for (size_t i = 0; i < plan->settings.n; i++)
		if (!strncmp(plan->settings.changes[i].path, "discovery.", 10))
			return true;
	return false;
}

/* Plans the next changes of the reload: the services the plan names, then, when discovery
 * settings changed, every other service whose source of backends moves. At most `max` services
 * per call, so planning 16,384 of them yields to the loop like writing them. Returns 1 when
 * everything is planned, 0 when more remains, or -errno. */
static int plan_some(struct discovery *d, struct reload_txn *t, size_t max)
{
	const struct discovery_source_ops *ops = t->new_src ? t->new_src->ops : d->src->ops;
	const struct config_plan *plan = t->plan;
	int err = 0;

	for (; !err && max && t->plan_at < plan->n_services; max--, t->plan_at++) {
		const struct config_service_change *c = &plan->services[t->plan_at];

		if (c->new)
			err = plan_service(t, ops, c->new, find_listed(d, c->name));
		else
			err = plan_remove(t, find_listed(d, c->name));
	}
	for (; !err && t->scan && max && t->scan_at < t->new->n_services; max--, t->scan_at++) {
		const struct config_service *svc = &t->new->services[t->scan_at];
		struct reg_entry *e = find_listed(d, svc->name);

		if (e && !e->in_txn)
			err = plan_service(t, ops, svc, e);
	}
	if (err)
		return err;
	return t->plan_at == plan->n_services && (!t->scan || t->scan_at == t->new->n_services);
}

/* Switches or reloads the source for `new`: a new source starts beside the running one (which
 * stops at commit); the same source takes the new settings (and the old ones back on abort). */
static int prepare_source(struct discovery *d, struct reload_txn *t)
{
	int err;

	if (t->new->discovery != t->old->discovery)
		return src_start(d, t->new, &t->new_src);
	err = d->src->ops->reload(d->src->s, t->old, t->new);
	t->src_reloaded = !err;
	return err;
}

static void txn_free(struct reload_txn *t)
{
	for (size_t i = 0; i < t->n; i++) {
		if (t->p[i].e)
			t->p[i].e->in_txn = false;
		config_service_release(&t->p[i].svc);
	}
	free(t->p);
	free(t);
}

/* Drops a define held from `s`, which stops. */
static void defs_drop(struct discovery *d, const struct src *s)
{
	if (d->defs_from != s)
		return;
	defs_free(d->defs, d->n_defs);
	d->defs = NULL;
	d->n_defs = 0;
	d->defs_from = NULL;
}

/* Puts the source back as it ran before the reload. */
static void undo_source(struct discovery *d, struct reload_txn *t)
{
	defs_drop(d, t->new_src);
	if (t->new_src)
		src_stop(t->new_src, true);
	t->new_src = NULL;
	if (t->src_reloaded && d->src->ops->reload(d->src->s, t->new, t->old))
		LOG_ERR(SUBSYS, "cannot put the discovery source back to the running config",
			"backend=%s", d->src->ops->name);
	t->src_reloaded = false;
}

static int txn_begin(struct discovery *d, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_plan *plan)
{
	struct reload_txn *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return -ENOMEM;
	t->old = old;
	t->new = new;
	t->plan = plan;
	d->txn = t; /* deliveries are held from here on */
	err = prepare_source(d, t);
	if (!err)
		err = plan_defined(d, t);
	t->scan = t->new_src || discovery_settings_changed(plan);
	if (!err) {
		t->dp = d->h.begin(d->h.arg);
		err = t->dp ? 0 : (errno ? -errno : -ENOMEM);
	}
	if (err) {
		LOG_ERR(SUBSYS, "cannot prepare the reload", "err=%s", log_q(strerror(-err)));
		undo_source(d, t);
		d->txn = NULL;
		txn_free(t);
		replay_held(d);
	}
	return err;
}

/* Plans and writes the next changes for at most the budget. Returns 0 when everything is
 * written, -EINPROGRESS when more remains, or -errno. */
static int txn_step(struct discovery *d, struct reload_txn *t)
{
	uint64_t t0 = evloop_now_ns();
	int planned = 0;

	for (;;) {
		struct discovery_change ch[CHUNK];
		size_t k = 0;
		int err;

		if (t->next == t->n && planned != 1 && (planned = plan_some(d, t, CHUNK)) < 0)
			return planned;
		if (t->next == t->n && planned == 1)
			return 0;
		for (size_t backends = 0;
		     k < CHUNK && backends < CHUNK_BACKENDS && t->next + k < t->n;) {
			struct planned *p = &t->p[t->next + k];

			backends += p->remove ? 1 : p->svc.n_backends + 1;
			ch[k++] =
			    (struct discovery_change){ p->remove ? p->e->svc.name : p->svc.name,
						       p->remove ? NULL : &p->svc };
		}
		err = k ? d->h.apply(d->h.arg, t->dp, ch, k) : 0;
		if (err)
			return err;
		t->next += k;
		if (evloop_now_ns() - t0 >= d->budget_ns)
			return -EINPROGRESS;
	}
}

int discovery_reload(struct discovery *d, const struct mesh_config *old,
		     const struct mesh_config *new, const struct config_plan *plan)
{
	int err;

	if (!d->txn) {
		err = txn_begin(d, old, new, plan);
		if (err)
			return err;
	}
	err = txn_step(d, d->txn);
	if (err && err != -EINPROGRESS) {
		LOG_ERR(SUBSYS, "cannot write the reloaded services; undoing",
			"written=%zu of=%zu err=%s", d->txn->next, d->txn->n,
			log_q(strerror(-err)));
		discovery_reload_end(d, false);
	}
	return err;
}

/* Applies the planned changes to the table once the datapath has them. */
static void commit_table(struct discovery *d, struct reload_txn *t)
{
	size_t i;

	for (i = 0; i < t->n; i++) /* VIPs may swap between services: take all out first */
		if (t->p[i].e)
			reg_index_del(&d->by_vip, t->p[i].e);
	for (i = 0; i < t->n; i++) {
		struct planned *p = &t->p[i];
		struct reg_entry *e = p->e;

		if (p->remove) {
			char *name = strdup(e->svc.name);

			table_remove(d, e);
			notify(d, name, NULL, false);
			free(name);
			p->e = NULL;
			continue;
		}
		if (!e && !(e = calloc(1, sizeof(*e)))) {
			LOG_ERR(SUBSYS, "out of memory committing a reload", "service=%s",
				log_q(p->svc.name));
			continue;
		}
		if (p->e)
			bury(d, &e->svc);
		e->svc = p->svc;
		memset(&p->svc, 0, sizeof(p->svc));
		e->from = p->from;
		e->index = p->index;
		e->split_from_source = p->split_from_source;
		if (e->has_pending && e->pending_from != e->from)
			entry_clear_pending(e);
		if (!p->e && table_add(d, e)) {
			entry_free(e);
			continue;
		}
		p->e = e;
	}
	for (i = 0; i < t->n; i++)
		if (t->p[i].e && !t->p[i].remove)
			reg_index_add(&d->by_vip, t->p[i].e);
}

void discovery_reload_end(struct discovery *d, bool commit)
{
	struct reload_txn *t = d->txn;
	size_t i;

	if (!t)
		return;
	if (t->dp)
		d->h.end(d->h.arg, t->dp, commit);
	if (commit) {
		commit_table(d, t);
		d->cfg = t->new;
		set_state_dir(d, t->new->state_dir);
		if (t->new_src) {
			defs_drop(d, d->src);
			src_stop(d->src, true);
			d->src = t->new_src;
			LOG_INFO(SUBSYS, "discovery backend switched", "backend=%s",
				 d->src->ops->name);
		}
	} else {
		undo_source(d, t);
	}
	d->txn = NULL;
	for (i = 0; i < t->n; i++) /* health follows what is served now (abort: as before) */
		if (t->p[i].e && (!commit || !t->p[i].remove))
			notify(d, t->p[i].e->svc.name, &t->p[i].e->svc, !commit);
	txn_free(t);
	replay_held(d);
	persist_soon(d);
	if (d->q_len)
		flush_soon(d);
}

bool discovery_files_changed(const struct discovery *d, const struct mesh_config *cfg)
{
	return d->src && d->src->ops->files_changed && d->src->ops->files_changed(d->src->s, cfg);
}

/* --- readers ---------------------------------------------------------------------------------- */

const struct config_service *discovery_find(const struct discovery *d, const char *name)
{
	const struct reg_entry *e = d ? find(d, name) : NULL;

	return e ? &e->svc : NULL;
}

bool discovery_defined(const struct discovery *d, const char *name)
{
	const struct reg_entry *e = d ? find(d, name) : NULL;

	return e && e->dynamic;
}

size_t discovery_count(const struct discovery *d)
{
	return d ? d->n : 0;
}

const struct config_service *discovery_at(const struct discovery *d, size_t i)
{
	return d && i < d->n ? &d->ents[i]->svc : NULL;
}

const struct config_service *discovery_find_vip(const struct discovery *d,
						const struct config_endpoint *ep)
{
	unsigned char key[REG_VIP_KEY];
	const struct reg_entry *e;

	if (!d)
		return NULL;
	e = reg_index_find(&d->by_vip, key, reg_vip_key(ep, key));
	return e ? &e->svc : NULL;
}

void discovery_get_stats(const struct discovery *d, struct discovery_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!d)
		return;
	st->source = d->src ? d->src->ops->name : "static";
	st->sync_ok = d->sync_ok;
	st->sync_error = d->sync_err;
	st->entry_errors = d->entry_errors;
	st->last_sync_ts = d->last_sync_ts;
	st->up = d->src && d->src->up;
	st->pending = d->q_len;
}

int discovery_registration(const struct discovery *d, size_t i, struct discovery_registration *out)
{
	if (!d || !d->src || !d->src->ops->registration)
		return -ENOENT;
	return d->src->ops->registration(d->src->s, i, out);
}

void discovery_backend_health(struct discovery *d, const char *service,
			      const struct config_endpoint *backend, bool healthy)
{
	if (d && d->src && d->src->ops->backend_health)
		d->src->ops->backend_health(d->src->s, service, backend, healthy);
}

bool discovery_failover(const struct discovery *d, const char *service, const char **dc)
{
	*dc = NULL;
	return d && d->src && d->src->ops->failover &&
	       d->src->ops->failover(d->src->s, service, dc);
}
