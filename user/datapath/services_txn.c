/* Transactions over the per-service primitives (services.c): a batch of service sets and removes
 * that goes in all or nothing. Before each change the service's mirror entry (value, backend
 * ids) and its backends' mirrors are saved; an undo puts them back (same ids, same breaker state
 * and active counts) and writes them to the maps again. While the transaction is open, backend
 * ids, mesh_slots ranges, VIP keys and the ids of removed services that a change releases stay
 * reserved (dp->txn tells services.c and slots.c), and a service may take over a VIP another one
 * is leaving, so VIP swaps, renames and moves between services write each VIP with one update
 * (never a moment without an owner). A split service's record keeps its own copy of the split
 * and the split's counters, written back before the value on an undo. The end releases what
 * nobody uses any more. Loop thread. */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "common/log.h"
#include "datapath/internal.h"

/* One service as it was before one change. */
struct txn_rec {
	char name[MESH_SVC_NAME_MAX];
	int id;			   /* its id then, -1 when it did not exist */
	struct dp_service before;  /* before.ids is not valid: the ids are in t->ids[ids_at..];
				   * before.split is the record's own copy until an undo takes it */
	struct mesh_split_cnt cnt; /* the split's counters then */
	size_t ids_at, be_at;	   /* its backend ids and their mirrors, in the pools below */
};

struct txn_disp {
	__u32 id;
	struct mesh_svc_key key;
};

struct datapath_txn {
	struct datapath *dp;
	struct txn_rec *r;
	size_t n, cap;
	__u32 *ids; /* pool: saved backend ids of every record */
	size_t n_ids, cap_ids;
	struct mesh_backend *be; /* pool: saved backend mirrors, parallel to ids */
	struct dp_range *ranges; /* mesh_slots ranges retired meanwhile */
	size_t n_ranges, cap_ranges;
	struct txn_disp *disp; /* services whose VIP another one took over */
	size_t n_disp, cap_disp;
	size_t changes; /* changes applied (the test hook counts them) */
};

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap ? *cap : 64;
	void *n;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	n = realloc(*p, c * size);
	if (!n)
		return -ENOMEM;
	*p = n;
	*cap = c;
	return 0;
}

struct datapath_txn *datapath_txn_begin(struct datapath *dp)
{
	struct datapath_txn *t;

	if (dp->txn) {
		errno = EBUSY;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->dp = dp;
	dp->txn = t;
	return t;
}

void dp_txn_defer_range(struct datapath *dp, uint32_t base, uint32_t n)
{
	struct datapath_txn *t = dp->txn;
	size_t cap = t->cap_ranges;

	if (grow((void **)&t->ranges, &cap, t->n_ranges + 1, sizeof(*t->ranges))) {
		LOG_WARN(DP_SUBSYS, "a retired slot range is kept for good (out of memory)", NULL);
		return; /* never reused: better than reused while a service points at it */
	}
	t->cap_ranges = cap;
	t->ranges[t->n_ranges++] = (struct dp_range){ base, n };
}

int dp_txn_displace(struct datapath *dp, __u32 id)
{
	struct datapath_txn *t = dp->txn;

	if (grow((void **)&t->disp, &t->cap_disp, t->n_disp + 1, sizeof(*t->disp)))
		return -ENOMEM;
	t->disp[t->n_disp++] = (struct txn_disp){ id, dp->svcs[id].key };
	return 0;
}

/* Saves service `name` as it is now. */
static int record(struct datapath_txn *t, const char *name)
{
	struct datapath *dp = t->dp;
	int id = dp_find_service(dp, name);
	size_t nb = id >= 0 ? dp->svcs[id].val.n_backends : 0, cap_be = t->cap_ids;
	struct txn_rec *r;

	if (grow((void **)&t->r, &t->cap, t->n + 1, sizeof(*t->r)) ||
	    grow((void **)&t->be, &cap_be, t->n_ids + nb, sizeof(*t->be)) ||
	    grow((void **)&t->ids, &t->cap_ids, t->n_ids + nb, sizeof(*t->ids)))
		return -ENOMEM;
	r = &t->r[t->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->id = id < 0 ? -1 : id;
	r->ids_at = r->be_at = t->n_ids;
	if (id < 0)
		return 0;
	r->before = dp->svcs[id];
	r->before.ids = NULL;
	if (r->before.split) {
		r->before.split = dp_split_dup(r->before.split);
		if (!r->before.split) {
			t->n--;
			return -ENOMEM;
		}
		dp_split_cnt_get(dp, (__u32)id, &r->cnt);
	}
	for (size_t i = 0; i < nb; i++) {
		t->ids[t->n_ids] = dp->svcs[id].ids[i];
		t->be[t->n_ids++] = dp->be[dp->svcs[id].ids[i]];
	}
	return 0;
}

static bool has_id(const __u32 *ids, size_t n, __u32 id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* Makes the map entry of `key` its owner's value, or deletes it when nobody owns it (an owner
 * the index lost to a taker that is gone now is found by a scan: rare). */
static void settle_key(struct datapath *dp, const struct mesh_svc_key *key)
{
	int owner = dp_index_find(dp, false, key);

	for (__u32 i = 0; owner < 0 && i < dp->svc_hi; i++)
		if (dp->svcs[i].used && !dp->svcs[i].removed &&
		    !memcmp(&dp->svcs[i].key, key, sizeof(*key)))
			owner = (int)i;
	if (owner < 0) {
		bpf_map_delete_elem(dp->fd[DP_MAP_SERVICES], key);
		return;
	}
	dp_index_set(dp, false, key, owner);
	bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], key, &dp->svcs[owner].val, BPF_ANY);
}

/* Frees service `id`'s name record, split, maglev tables, range and mirror entry (its key and
 * index entries are the caller's business). */
static void release(struct datapath *dp, __u32 id)
{
	struct dp_service *s = &dp->svcs[id];

	bpf_map_delete_elem(dp->fd[DP_MAP_SVC_NAMES], &id);
	dp_split_drop(dp, id);
	dp_maglev_drop(dp, id * 2, 0);
	dp_maglev_drop(dp, id * 2 + 1, 0);
	dp_slots_retire(dp, s->val.slot_base, s->n_slots);
	dp_udp_count(dp, s->key.proto == IPPROTO_UDP, false);
	free(s->ids);
	free(s->split);
	memset(s, 0, sizeof(*s));
}

/* Takes service `id` (created by the transaction) out of the mirror, the index and the maps. */
static void drop(struct datapath *dp, __u32 id)
{
	struct dp_service *s = &dp->svcs[id];

	dp_index_set(dp, true, s->name, -1);
	if (dp_index_find(dp, false, &s->key) == (int)id)
		dp_index_set(dp, false, &s->key, -1);
	release(dp, id);
}

/* Writes the split `s` had before back (before the value that points connects at it), with its
 * counters when the change had reset them; `now_hash` is the split the maps hold now. */
static void restore_split(struct datapath *dp, struct dp_service *s, uint64_t now_hash,
			  const struct mesh_split_cnt *cnt)
{
	int err = dp_split_write(dp, s, now_hash);

	if (!err && s->split && s->split_hash != now_hash)
		err = dp_split_cnt_put(dp, s->val.service_id, cnt);
	if (err)
		LOG_ERR(DP_SUBSYS, "undo could not write a split back", "service=%s err=%s",
			log_q(s->name), log_q(strerror(-err)));
}

/* Writes back what `r` saved: backends (same ids), the split, the value and its range, name,
 * tables. The mirror takes the record's copy of the split. */
static void restore(struct datapath_txn *t, struct txn_rec *r)
{
	struct datapath *dp = t->dp;
	struct dp_service *s = &dp->svcs[r->id];
	size_t nb = r->before.val.n_backends;
	__u32 *ids = calloc(nb ? nb : 1, sizeof(*ids));
	uint64_t now_hash = s->used ? s->split_hash : 0;
	bool was_udp = s->used && s->key.proto == IPPROTO_UDP;

	if (!ids) {
		LOG_ERR(DP_SUBSYS, "undo out of memory", "service=%s", log_q(r->name));
		return;
	}
	if (nb)
		memcpy(ids, t->ids + r->ids_at, nb * sizeof(*ids));
	if (s->used && dp_index_find(dp, false, &s->key) == r->id)
		dp_index_set(dp, false, &s->key, -1);
	free(s->ids);
	free(s->split);
	*s = r->before;
	r->before.split = NULL;
	s->ids = ids;
	s->removed = false;
	for (size_t i = 0; i < nb; i++) {
		dp->be[ids[i]] = t->be[r->be_at + i];
		dp->be_used[ids[i]] = 1;
		dp_be_write(dp, ids[i]);
	}
	dp_index_set(dp, true, s->name, r->id);
	dp_index_set(dp, false, &s->key, r->id);
	dp_write_maglev(dp, s); /* its tables may have been dropped meanwhile */
	restore_split(dp, s, now_hash, &r->cnt);
	if (bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], &s->key, &s->val, BPF_ANY))
		LOG_ERR(DP_SUBSYS, "undo could not write a service back", "service=%s err=%s",
			log_q(r->name), log_q(strerror(errno)));
	if (!s->split)
		dp_split_drop(dp, (__u32)r->id);
	dp_udp_count(dp, was_udp, s->key.proto == IPPROTO_UDP);
	dp_write_name(dp, s);
}

/* Puts the service of `r` back as it was before its change. */
static void undo_one(struct datapath_txn *t, struct txn_rec *r)
{
	struct datapath *dp = t->dp;
	int cur = dp_find_service(dp, r->name);
	struct mesh_svc_key cur_key;

	if (cur < 0 && r->id >= 0 && dp->svcs[r->id].removed)
		cur = r->id; /* removed by the change: still held */
	if (cur >= 0) {
		const struct dp_service *c = &dp->svcs[cur];
		const __u32 *saved = t->ids + r->ids_at;

		cur_key = c->key;
		for (__u32 i = 0; i < c->val.n_backends; i++) /* ids the change took */
			if (r->id != cur || !has_id(saved, r->before.val.n_backends, c->ids[i]))
				dp->be_used[c->ids[i]] = 0;
		if (r->id != cur)
			drop(dp, (__u32)cur);
		else if (c->val.slot_base != r->before.val.slot_base)
			dp_slots_retire(dp, c->val.slot_base, c->n_slots);
	}
	if (r->id >= 0)
		restore(t, r);
	if (cur >= 0 && (r->id != cur || memcmp(&cur_key, &r->before.key, sizeof(cur_key))))
		settle_key(dp, &cur_key);
}

/* Undoes the changes recorded from `mark` on, newest first. */
static void undo_to(struct datapath_txn *t, size_t mark)
{
	while (t->n > mark) {
		struct txn_rec *r = &t->r[--t->n];

		undo_one(t, r);
		free(r->before.split); /* NULL once the mirror took it back */
		r->before.split = NULL;
		t->n_ids = r->ids_at;
	}
}

static int apply_one(struct datapath_txn *t, const struct datapath_change *c)
{
	struct datapath *dp = t->dp;
	const char *name = c->svc ? c->svc->name : c->name;
	int err;

	if (!name)
		return -EINVAL;
	err = record(t, name);
	if (err)
		return err;
	err = c->svc ? datapath_service_set(dp, c->svc) : datapath_service_del(dp, name);
	if (err == -ENOENT && !c->svc)
		err = 0; /* removing what is not there */
	if (!err && dp->fail_at && ++t->changes == dp->fail_at) {
		dp->fail_at = 0;
		LOG_WARN(DP_SUBSYS, "test hook: failing a written change", "service=%s",
			 log_q(name));
		err = -EIO;
	}
	return err;
}

int datapath_txn_apply(struct datapath_txn *t, const struct datapath_change *ch, size_t n)
{
	size_t mark = t->n;

	for (size_t i = 0; i < n; i++) {
		int err = apply_one(t, &ch[i]);

		if (err) {
			undo_to(t, mark);
			return err;
		}
	}
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Retires the ranges put aside that no service points at any more. Only a service the
 * transaction touched can point at one (an undo put it back; a range is set aside only once a
 * newer one was published), so only their ranges are looked at. Called with dp->txn cleared. */
static void release_ranges(struct datapath_txn *t)
{
	struct datapath *dp = t->dp;
	uint32_t *live = calloc(2 * t->n + 1, sizeof(*live));
	size_t n = 0;

	for (size_t i = 0; live && i < t->n; i++) {
		int ids[2] = { t->r[i].id, dp_find_service(dp, t->r[i].name) };

		for (int k = 0; k < 2; k++)
			if (ids[k] >= 0 && dp->svcs[ids[k]].used && !dp->svcs[ids[k]].removed)
				live[n++] = dp->svcs[ids[k]].val.slot_base;
	}
	if (!live) { /* never reused: better than reused while a service points at one */
		LOG_WARN(DP_SUBSYS, "slot ranges kept for good (out of memory)", NULL);
		return;
	}
	qsort(live, n, sizeof(*live), cmp_u32);
	for (size_t i = 0; i < t->n_ranges; i++)
		if (!bsearch(&t->ranges[i].base, live, n, sizeof(*live), cmp_u32))
			dp_slots_retire(dp, t->ranges[i].base, t->ranges[i].n);
	free(live);
}

static void txn_end(struct datapath_txn *t)
{
	t->dp->txn = NULL;
	release_ranges(t);
	for (size_t i = 0; i < t->n; i++)
		free(t->r[i].before.split);
	free(t->r);
	free(t->ids);
	free(t->be);
	free(t->ranges);
	free(t->disp);
	free(t);
}

void datapath_txn_abort(struct datapath_txn *t)
{
	if (!t)
		return;
	undo_to(t, 0);
	txn_end(t);
}

/* A service whose VIP another one took over and that neither moved nor went: two services
 * would share one VIP. */
static int check_displaced(const struct datapath_txn *t)
{
	const struct datapath *dp = t->dp;

	for (size_t i = 0; i < t->n_disp; i++) {
		const struct dp_service *s = &dp->svcs[t->disp[i].id];

		if (s->used && !s->removed && !memcmp(&s->key, &t->disp[i].key, sizeof(s->key))) {
			LOG_ERR(DP_SUBSYS, "two services would share one VIP", "service=%s",
				log_q(s->name));
			return -EEXIST;
		}
	}
	return 0;
}

/* Releases what `r`'s change left behind: backend ids no longer in the service, its old key when
 * nobody owns it, and a removed service's id, name record and tables. dp->txn is cleared. */
static void finish_one(struct datapath_txn *t, const struct txn_rec *r)
{
	struct datapath *dp = t->dp;
	struct dp_service *s = &dp->svcs[r->id];
	bool gone = !s->used || s->removed || dp_find_service(dp, r->name) != r->id;
	const __u32 *saved = t->ids + r->ids_at;

	for (__u32 i = 0; i < r->before.val.n_backends; i++) {
		if (!gone && has_id(s->ids, s->val.n_backends, saved[i]))
			continue;
		/* The connections of a backend that left its service close after the service's
		 * close_removed_after (the remove's, when the service went). */
		dp_drain_schedule(dp, saved[i], (__u32)r->id,
				  gone ? r->before.close_after_ns : s->close_after_ns);
		dp->be_used[saved[i]] = 0;
	}
	if (dp_index_find(dp, false, &r->before.key) < 0)
		bpf_map_delete_elem(dp->fd[DP_MAP_SERVICES], &r->before.key);
	if (s->used && s->removed) /* its index entries went with the remove */
		release(dp, (__u32)r->id);
}

int datapath_txn_commit(struct datapath_txn *t)
{
	int err = check_displaced(t);

	if (err) {
		datapath_txn_abort(t);
		return err;
	}
	t->dp->txn = NULL;
	for (size_t i = 0; i < t->n; i++)
		if (t->r[i].id >= 0)
			finish_one(t, &t->r[i]);
	txn_end(t);
	return 0;
}

int datapath_services_apply(struct datapath *dp, const struct datapath_change *ch, size_t n)
{
	struct datapath_txn *t = datapath_txn_begin(dp);
	int err;

	if (!t)
		return -errno;
	err = datapath_txn_apply(t, ch, n);
	if (err) {
		datapath_txn_abort(t);
		return err;
	}
	return datapath_txn_commit(t);
}

void datapath_test_fail_at(struct datapath *dp, size_t nth)
{
	dp->fail_at = nth;
}
