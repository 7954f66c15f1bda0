/* Writing services into the maps: id allocation for services and backends (reused as late as
 * possible, with epochs so sockets of a previous owner are never counted against a new one),
 * the backend set update that keeps the ids and state of backends that stay, each service's
 * backend lists in a mesh_slots range (all backends, the healthy ones, the weighted alias
 * table), maglev tables, indexes by name and address, and recovering the userspace mirror from
 * the pinned maps on adoption. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "common/log.h"
#include "datapath/alias.h"
#include "lib/split.h"
#include "datapath/internal.h"
#include "datapath/maglev.h"

#define DP_DEFAULT_WINDOW_NS 10000000000ull

void dp_key_from_endpoint(const struct config_endpoint *ep, int proto, struct mesh_svc_key *key)
{
	memset(key, 0, sizeof(*key));
	if (ep->family == AF_INET) {
		key->addr[10] = 0xff;
		key->addr[11] = 0xff;
		memcpy(&key->addr[12], &ep->addr.v4, 4);
	} else {
		memcpy(key->addr, &ep->addr.v6, 16);
	}
	key->port = htons(ep->port);
	key->proto = (__u8)(proto ? proto : IPPROTO_TCP);
}

static bool addr_is_v4mapped(const __u8 *a)
{
	static const __u8 prefix[12] = { [10] = 0xff, [11] = 0xff };

	return memcmp(a, prefix, sizeof(prefix)) == 0;
}

void dp_endpoint_from_be(const struct mesh_backend *be, struct config_endpoint *ep)
{
	memset(ep, 0, sizeof(*ep));
	if (addr_is_v4mapped(be->addr)) {
		ep->family = AF_INET;
		memcpy(&ep->addr.v4, &be->addr[12], 4);
	} else {
		ep->family = AF_INET6;
		memcpy(&ep->addr.v6, be->addr, 16);
	}
	ep->port = ntohs(be->port);
}

/* --- indexes by name and by address ------------------------------------------------------- */

static uint64_t fnv(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0xcbf29ce484222325ull;

	while (n--)
		h = (h ^ *s++) * 0x100000001b3ull;
	return h ^ h >> 29;
}

int dp_index_init(struct dp_index *ix, uint32_t capacity)
{
	uint32_t size = 16;

	while (size < 2 * capacity)
		size *= 2;
	ix->slot = calloc(size, sizeof(*ix->slot));
	ix->mask = size - 1;
	return ix->slot ? 0 : -ENOMEM;
}

void dp_index_free(struct dp_index *ix)
{
	free(ix->slot);
	ix->slot = NULL;
}

static bool same(const struct datapath *dp, bool by_name, uint32_t id, const void *what)
{
	const struct dp_service *s = &dp->svcs[id];

	return s->used && (by_name ? !strcmp(s->name, what)
				   : !memcmp(&s->key, what, sizeof(struct mesh_svc_key)));
}

/* Index slot holding `what`, or -1 with *free_slot set to where it would go. */
static int64_t ix_probe(const struct datapath *dp, const struct dp_index *ix, bool by_name,
			const void *what, uint32_t *free_slot)
{
	uint64_t h = by_name ? fnv(what, strlen(what)) : fnv(what, sizeof(struct mesh_svc_key));
	bool have_free = false;

	for (uint32_t i = (uint32_t)h & ix->mask, n = 0; n <= ix->mask;
	     i = (i + 1) & ix->mask, n++) {
		int32_t v = ix->slot[i];

		if (v == 0) {
			if (!have_free)
				*free_slot = i;
			return -1;
		}
		if (v < 0 && !have_free) {
			*free_slot = i;
			have_free = true;
		} else if (v > 0 && same(dp, by_name, (uint32_t)(v - 1), what)) {
			return i;
		}
	}
	return -1;
}

int dp_index_find(const struct datapath *dp, bool by_name, const void *what)
{
	const struct dp_index *ix = by_name ? &dp->by_name : &dp->by_key;
	uint32_t free_slot = 0;
	int64_t i = ix_probe(dp, ix, by_name, what, &free_slot);

	return i < 0 ? -ENOENT : ix->slot[i] - 1;
}

void dp_index_set(struct datapath *dp, bool by_name, const void *what, int32_t id)
{
	struct dp_index *ix = by_name ? &dp->by_name : &dp->by_key;
	uint32_t free_slot = 0;
	int64_t i = ix_probe(dp, ix, by_name, what, &free_slot);

	if (id < 0) { /* remove */
		if (i >= 0)
			ix->slot[i] = -1;
		return;
	}
	ix->slot[i >= 0 ? (uint32_t)i : free_slot] = id + 1;
}

int dp_find_service(const struct datapath *dp, const char *name)
{
	return dp_index_find(dp, true, name);
}

/* --- ids ------------------------------------------------------------------------------------ */

/* Takes a free service id and resets its runtime state and counters (new epoch). */
static int svc_alloc(struct datapath *dp)
{
	struct mesh_svc_state ss = { 0 };

	for (uint32_t n = 0; n < dp->max_services; n++) {
		__u32 id = (dp->svc_cursor + n) % dp->max_services;

		if (dp->svcs[id].used)
			continue;
		bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_STATE], &id, &ss);
		ss = (struct mesh_svc_state){ .epoch = ss.epoch + 1 };
		if (bpf_map_update_elem(dp->fd[DP_MAP_SVC_STATE], &id, &ss, BPF_ANY))
			return -errno;
		dp->svc_cursor = id + 1;
		if (id + 1 > dp->svc_hi)
			dp->svc_hi = id + 1;
		free(dp->svcs[id].ids);
		free(dp->svcs[id].split);
		memset(&dp->svcs[id], 0, sizeof(dp->svcs[id]));
		dp->svcs[id].val.epoch = ss.epoch;
		return (int)id;
	}
	return -ENOSPC;
}

/* Takes a free backend id: fresh breaker state, zero active count and counters, new epoch. */
static int be_alloc(struct datapath *dp)
{
	struct mesh_be_state bs = { 0 };
	struct mesh_be_hot hot = { 0 };
	struct mesh_be_ewma ew = { 0 };

	for (uint32_t n = 0; n < dp->max_backends; n++) {
		__u32 id = (dp->be_cursor + n) % dp->max_backends;

		if (id == 0 || dp->be_used[id])
			continue;
		if (bpf_map_update_elem(dp->fd[DP_MAP_BE_STATE], &id, &bs, BPF_F_LOCK) ||
		    bpf_map_update_elem(dp->fd[DP_MAP_BE_HOT], &id, &hot, BPF_ANY) ||
		    bpf_map_update_elem(dp->fd[DP_MAP_BE_EWMA], &id, &ew, BPF_ANY))
			return -errno;
		dp->be_used[id] = 1;
		dp->be[id].epoch++;
		dp->be_cursor = id + 1;
		if (id + 1 > dp->be_hi)
			dp->be_hi = id + 1;
		return (int)id;
	}
	return -ENOSPC;
}

/* State stays until reuse: closing sockets still count down. Inside a transaction the id stays
 * taken until it ends (an undo may need it back). */
static void be_free(struct datapath *dp, __u32 id)
{
	if (!dp->txn)
		dp->be_used[id] = 0;
}

int dp_be_write(struct datapath *dp, __u32 id)
{
	return bpf_map_update_elem(dp->fd[DP_MAP_BACKENDS], &id, &dp->be[id], BPF_ANY) ? -errno : 0;
}

static void fill_value(struct mesh_svc *v, const struct config_service *svc)
{
	const struct config_circuit_breaker *cb = &svc->circuit_breaker;
	const struct config_load_balancer *lb = &svc->load_balancer;
	double panic = lb->panic_threshold < 0	 ? 0
		       : lb->panic_threshold > 1 ? 1
						 : lb->panic_threshold;
	double rate = cb->error_rate_threshold < 0   ? 0
		      : cb->error_rate_threshold > 1 ? 1
						     : cb->error_rate_threshold;

	v->algorithm = (__u8)lb->algorithm;
	v->hash_key = (__u8)lb->hash_key;
	v->flags =
	    (__u8)((lb->no_healthy_backend == MESH_NO_HEALTHY_PASSTHROUGH ? MESH_SVC_F_PASSTHROUGH
									  : 0) |
		   (svc->mtls ? MESH_SVC_F_MTLS : 0));
	v->choice_count = (__u8)(lb->choice_count > 255 ? 255 : lb->choice_count);
	v->max_connections = cb->max_connections;
	v->max_ejection_percent =
	    (__u8)(cb->max_ejection_percent > 100 ? 100 : cb->max_ejection_percent);
	v->panic_percent = (__u8)lround(panic * 100);
	v->ewma_decay_ms = (__u32)(lb->peak_ewma_decay_ns / 1000000);
	v->breaker = (struct mesh_breaker_cfg){
		.consecutive_failures = cb->consecutive_failures,
		.error_rate_permille = (__u32)lround(rate * 1000),
		.request_volume = cb->request_volume_threshold,
		.half_open_probes = cb->half_open_probes ? cb->half_open_probes : 1,
		.window_ns = cb->window_ns ? cb->window_ns : DP_DEFAULT_WINDOW_NS,
		.open_ns = cb->open_duration_ns,
		.max_open_ns = cb->max_open_duration_ns,
	};
}

static void be_from_config(struct mesh_backend *be, const struct config_backend *cb)
{
	struct mesh_svc_key k;

	dp_key_from_endpoint(&cb->endpoint, IPPROTO_TCP, &k);
	memcpy(be->addr, k.addr, sizeof(be->addr));
	be->port = k.port;
	be->weight = cb->weight ? cb->weight : 1;
}

/* --- a set of backends by address (duplicates, backends that stay) -------------------------- */

struct be_set {
	uint32_t mask;
	int32_t slot[2 * MESH_MAX_BACKENDS_PER_SVC + 2]; /* index + 1 into `bes` */
	const struct mesh_backend *bes;
};

static uint32_t be_hash(const struct mesh_backend *be)
{
	return (uint32_t)fnv(be->addr, 18); /* addr and port */
}

static bool be_same(const struct mesh_backend *a, const struct mesh_backend *b)
{
	return !memcmp(a->addr, b->addr, 16) && a->port == b->port;
}

/* Adds bes[i]; returns the index of an equal backend already in the set, or -1. */
static int be_set_add(struct be_set *s, uint32_t i)
{
	uint32_t h = be_hash(&s->bes[i]) & s->mask;

	for (;; h = (h + 1) & s->mask) {
		if (!s->slot[h]) {
			s->slot[h] = (int32_t)i + 1;
			return -1;
		}
		if (be_same(&s->bes[s->slot[h] - 1], &s->bes[i]))
			return s->slot[h] - 1;
	}
}

static int be_set_find(const struct be_set *s, const struct mesh_backend *be)
{
	for (uint32_t h = be_hash(be) & s->mask; s->slot[h]; h = (h + 1) & s->mask)
		if (be_same(&s->bes[s->slot[h] - 1], be))
			return s->slot[h] - 1;
	return -1;
}

static struct be_set *be_set_new(const struct mesh_backend *bes, uint32_t n)
{
	struct be_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->bes = bes;
	for (s->mask = 1; s->mask + 1 < 2 * n; s->mask = s->mask * 2 + 1)
		; /* a power of two >= 2n slots, within slot[] */
	return s;
}

static int check_service(const struct config_service *svc, struct mesh_backend *bes)
{
	struct be_set *set;
	int err = 0;

	if (!svc->name || !svc->name[0] || strlen(svc->name) >= MESH_SVC_NAME_MAX)
		return -EINVAL;
	if (svc->n_backends > MESH_MAX_BACKENDS_PER_SVC)
		return -E2BIG;
	if (svc->vip.family != AF_INET && svc->vip.family != AF_INET6)
		return -EAFNOSUPPORT;
	if ((unsigned)svc->load_balancer.algorithm >= MESH_LB__COUNT)
		return -EINVAL;
	set = be_set_new(bes, (uint32_t)svc->n_backends);
	if (!set)
		return -ENOMEM;
	for (size_t i = 0; i < svc->n_backends && !err; i++) {
		memset(&bes[i], 0, sizeof(bes[i]));
		be_from_config(&bes[i], &svc->backends[i]);
		if (be_set_add(set, (uint32_t)i) >= 0)
			err = -EINVAL; /* duplicate backend */
	}
	free(set);
	return err;
}

/* Maps every configured backend to an id (the old one for backends that stay) and writes its
 * configuration. Newly allocated ids are released on error. */
static int assign_backends(struct datapath *dp, const struct mesh_backend *bes, uint32_t n,
			   __u32 sid, const struct dp_service *old, __u32 *ids)
{
	struct mesh_backend *olds = NULL;
	struct be_set *set = NULL;
	uint32_t done = 0;
	int err = 0;

	if (old->used && old->val.n_backends) {
		olds = calloc(old->val.n_backends, sizeof(*olds));
		set = olds ? be_set_new(olds, old->val.n_backends) : NULL;
		if (!set) {
			free(olds);
			return -ENOMEM;
		}
		for (uint32_t i = 0; i < old->val.n_backends; i++) {
			olds[i] = dp->be[old->ids[i]];
			be_set_add(set, i);
		}
	}
	for (; done < n && !err; done++) {
		struct mesh_backend be = bes[done];
		int o = set ? be_set_find(set, &be) : -1;
		__u32 id;

		if (o >= 0) {
			id = old->ids[o];
			be.flags = dp->be[id].flags; /* health stays as checked */
		} else {
			int r = be_alloc(dp);

			if (r < 0) {
				err = r;
				break;
			}
			id = (__u32)r;
			be.flags = MESH_BE_F_HEALTHY;
		}
		be.service_id = sid;
		be.epoch = dp->be[id].epoch;
		dp->be[id] = be;
		ids[done] = id;
		err = dp_be_write(dp, id);
	}
	if (err)
		for (uint32_t i = 0; i < done; i++)
			if (!set || be_set_find(set, &dp->be[ids[i]]) < 0)
				be_free(dp, ids[i]);
	free(set);
	free(olds);
	return err;
}

/* --- the lists in mesh_slots ---------------------------------------------------------------- */

int dp_fill_alias(const struct datapath *dp, struct mesh_slot *e, uint32_t k)
{
	uint32_t *w = calloc(3 * (size_t)k, sizeof(uint32_t));
	int err;

	if (!w)
		return -ENOMEM;
	for (uint32_t j = 0; j < k; j++)
		w[j] = dp->be[e[j].healthy_id].weight;
	err = alias_build(w, k, w + k, w + 2 * k);
	for (uint32_t j = 0; !err && j < k; j++) {
		e[j].alias_prob = w[k + j];
		e[j].alias_id = e[w[2 * k + j]].healthy_id;
	}
	free(w);
	return err;
}

int dp_write_tables(struct datapath *dp, struct dp_service *s)
{
	uint32_t n = s->val.n_backends, cnt = n + dp_split_slots(s) ?: 1, k = 0;
	bool v4 = addr_is_v4mapped(s->key.addr), same_family = true;
	struct mesh_slot *e = calloc(cnt, sizeof(*e));
	__u32 *keys = calloc(cnt, sizeof(*keys));
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	int64_t base;
	int err = 0;

	if (!e || !keys) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct mesh_backend *be = &dp->be[s->ids[i]];

		e[i].backend_id = s->ids[i];
		if (be->flags & MESH_BE_F_HEALTHY)
			e[k++].healthy_id = s->ids[i];
		same_family = same_family && (!v4 || addr_is_v4mapped(be->addr));
	}
	if (s->val.algorithm == MESH_LB_WEIGHTED && k)
		err = dp_fill_alias(dp, e, k);
	base = err ? err : dp_slots_alloc(dp, cnt);
	if (base < 0) {
		err = (int)base;
		goto out;
	}
	err = dp_split_lists(dp, s, e, (uint32_t)base);
	if (err) {
		dp_slots_retire(dp, (uint32_t)base, cnt);
		goto out;
	}
	for (uint32_t i = 0; i < cnt; i++)
		keys[i] = (__u32)base + i;
	if (bpf_map_update_batch(dp->fd[DP_MAP_SLOTS], keys, e, &cnt, &opts)) {
		err = -errno;
		dp_slots_retire(dp, (uint32_t)base, cnt);
		goto out;
	}
	s->val.slot_base = (__u32)base;
	s->n_slots = cnt;
	s->val.n_healthy = (__u16)k;
	s->val.flags =
	    (__u8)((s->val.flags & ~(MESH_SVC_F_SAME_FAMILY | MESH_SVC_F_SPLIT)) |
		   (same_family ? MESH_SVC_F_SAME_FAMILY : 0) | (s->split ? MESH_SVC_F_SPLIT : 0));
out:
	free(e);
	free(keys);
	return err;
}

/* Deletes the chunks of maglev table `table` from chunk `from` on. */
void dp_maglev_drop(struct datapath *dp, __u32 table, __u32 from)
{
	for (__u32 c = from; c * MESH_MAGLEV_CHUNK < MESH_MAGLEV_M_MAX; c++) {
		struct mesh_maglev_key k = { .table = table, .chunk = c };

		bpf_map_delete_elem(dp->fd[DP_MAP_MAGLEV], &k);
	}
}

/* Writes the maglev table the generation of service `s` will read. */
int dp_write_maglev(struct datapath *dp, const struct dp_service *s)
{
	const struct mesh_svc *v = &s->val;
	__u32 table = v->service_id * 2 + (v->generation & 1), m = v->maglev_m;
	struct mesh_maglev_chunk *chunk;
	char(*keys)[64] = NULL;
	const char **kp = NULL;
	uint16_t *t = NULL;
	int err = -ENOMEM;

	if (v->algorithm != MESH_LB_MAGLEV || v->n_backends == 0)
		return 0;
	keys = calloc(v->n_backends, sizeof(*keys));
	kp = calloc(v->n_backends, sizeof(*kp));
	t = calloc((m + MESH_MAGLEV_CHUNK - 1) / MESH_MAGLEV_CHUNK, sizeof(*chunk));
	if (!keys || !kp || !t)
		goto out;
	for (__u32 i = 0; i < v->n_backends; i++) {
		const struct mesh_backend *be = &dp->be[s->ids[i]];
		char ip[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, be->addr, ip, sizeof(ip));
		snprintf(keys[i], sizeof(keys[i]), "[%s]:%u", ip, ntohs(be->port));
		kp[i] = keys[i];
	}
	err = maglev_fill(t, m, kp, v->n_backends);
	for (__u32 c = 0; !err && c * MESH_MAGLEV_CHUNK < m; c++) {
		struct mesh_maglev_key k = { .table = table, .chunk = c };

		chunk = (struct mesh_maglev_chunk *)(t + (size_t)c * MESH_MAGLEV_CHUNK);
		if (bpf_map_update_elem(dp->fd[DP_MAP_MAGLEV], &k, chunk, BPF_ANY))
			err = -errno;
	}
out:
	free(t);
	free(kp);
	free(keys);
	return err;
}

/* --- publishing ----------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
	__u32 x = *(const __u32 *)a, y = *(const __u32 *)b;

	return x < y ? -1 : x > y;
}

/* Frees the ids of `from` that are not in `keep`, scheduling a drain of their connections
 * `drain_ns` from now (0: none). */
static void free_removed(struct datapath *dp, const __u32 *from, __u32 n_from, const __u32 *keep,
			 __u32 n_keep, uint64_t drain_ns)
{
	__u32 *sorted = calloc(n_keep + 1, sizeof(*sorted));

	if (!sorted)
		return; /* ids leak until adoption rebuilds the pool: better than freeing live ones */
	memcpy(sorted, keep, n_keep * sizeof(*keep));
	qsort(sorted, n_keep, sizeof(*sorted), cmp_u32);
	for (__u32 i = 0; i < n_from; i++) {
		if (bsearch(&from[i], sorted, n_keep, sizeof(*sorted), cmp_u32))
			continue;
		if (!dp->txn) /* a transaction drains at its end what it really removed */
			dp_drain_schedule(dp, from[i], dp->be[from[i]].service_id, drain_ns);
		be_free(dp, from[i]);
	}
	free(sorted);
}

int dp_write_name(struct datapath *dp, const struct dp_service *s)
{
	struct mesh_svc_name rec = { 0 };
	__u32 sid = s->val.service_id;

	snprintf(rec.name, sizeof(rec.name), "%s", s->name);
	rec.key = s->key;
	return bpf_map_update_elem(dp->fd[DP_MAP_SVC_NAMES], &sid, &rec, BPF_ANY) ? -errno : 0;
}

void dp_udp_count(struct datapath *dp, bool was, bool is)
{
	int err;

	if (was == is)
		return;
	dp->n_udp = is ? dp->n_udp + 1 : dp->n_udp - 1;
	if (dp->n_udp > 1 || (dp->n_udp == 1 && !is))
		return; /* neither the first nor the last */
	err = dp_udp_sync(dp);
	if (err)
		LOG_ERR(DP_SUBSYS, "cannot attach or detach the UDP counting programs",
			"udp_services=%u err=%s", dp->n_udp, strerror(-err));
}

/* Publishes the service value (one hash update: connects see the old or the new set) and its
 * name record, then retires what the previous version used. */
static int publish(struct datapath *dp, struct dp_service *s, const struct dp_service *old)
{
	__u32 sid = s->val.service_id;
	int err = dp_split_write(dp, s, old->used ? old->split_hash : 0);
	struct dp_service prev = *old;

	if (!err && bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], &s->key, &s->val, BPF_ANY))
		err = -errno;
	if (err) { /* connects still read the old value: its split, if any, must be the old one */
		if (old->used && old->split)
			dp_split_write(dp, &prev, prev.split_hash);
		else
			dp_split_drop(dp, sid);
		return err;
	}
	if (!s->split)
		dp_split_drop(dp, sid);
	s->split_hash = s->split ? s->split->val.names_hash : 0;
	dp_udp_count(dp, old->used && old->key.proto == IPPROTO_UDP, s->key.proto == IPPROTO_UDP);
	if (dp_write_name(dp, s))
		LOG_WARN(DP_SUBSYS, "name record not written", "service=%s", log_q(s->name));
	if (old->used && memcmp(&old->key, &s->key, sizeof(s->key))) {
		/* Inside a transaction the key goes at the end, unless another service took it. */
		if (!dp->txn)
			bpf_map_delete_elem(dp->fd[DP_MAP_SERVICES], &old->key);
		if (dp_index_find(dp, false, &old->key) == (int)sid)
			dp_index_set(dp, false, &old->key, -1);
	}
	if (old->used) {
		dp_slots_retire(dp, old->val.slot_base, old->n_slots);
		free_removed(dp, old->ids, old->val.n_backends, s->ids, s->val.n_backends,
			     s->close_after_ns);
	}
	/* The previous generation's maglev table stays while maglev is on: a connect may still
	 * hold the old service value. */
	if (s->val.algorithm != MESH_LB_MAGLEV || s->val.n_backends == 0) {
		dp_maglev_drop(dp, sid * 2, 0);
		dp_maglev_drop(dp, sid * 2 + 1, 0);
	}
	s->used = true;
	dp_index_set(dp, true, s->name, (int32_t)sid);
	dp_index_set(dp, false, &s->key, (int32_t)sid);
	return 0;
}

/* Releases what a failed update took: the new range and ids not in the previous version. */
static void undo_set(struct datapath *dp, struct dp_service *s, const struct dp_service *old,
		     bool tables_written)
{
	if (tables_written)
		dp_slots_retire(dp, s->val.slot_base, s->n_slots);
	if (s->ids)
		free_removed(dp, s->ids, s->val.n_backends, old->ids,
			     old->used ? old->val.n_backends : 0, 0);
	free(s->ids);
	if (s->split != old->split)
		free(s->split);
	*s = *old;
}

static int set_service(struct datapath *dp, const struct config_service *svc, int id,
		       const struct mesh_svc_key *key, const struct mesh_backend *bes)
{
	struct dp_service old, *s = &dp->svcs[id];
	bool tables;
	int err;

	old = *s;
	snprintf(s->name, sizeof(s->name), "%s", svc->name);
	s->key = *key;
	memset(&s->val, 0, sizeof(s->val));
	fill_value(&s->val, svc);
	s->val.service_id = (__u32)id;
	s->val.epoch = old.val.epoch;
	s->val.generation = old.val.generation + 1;
	s->val.n_backends = (__u16)svc->n_backends;
	s->val.slot_base = old.val.slot_base;
	s->close_after_ns = svc->load_balancer.close_removed_after_ns;
	s->close_on_open = svc->circuit_breaker.close_on_open;
	if (s->val.algorithm == MESH_LB_MAGLEV && svc->n_backends)
		s->val.maglev_m =
		    maglev_size((uint32_t)svc->n_backends,
				old.val.algorithm == MESH_LB_MAGLEV ? old.val.maglev_m : 0);
	s->split = dp_split_new(svc);
	s->ids = calloc(svc->n_backends ? svc->n_backends : 1, sizeof(*s->ids));
	err = s->ids && (s->split || !svc->n_split)
		  ? assign_backends(dp, bes, (uint32_t)svc->n_backends, (__u32)id, &old, s->ids)
		  : -ENOMEM;
	if (!err)
		err = dp_write_tables(dp, s);
	tables = !err;
	if (!err)
		err = dp_write_maglev(dp, s);
	if (!err)
		err = publish(dp, s, &old);
	if (err) {
		undo_set(dp, s, &old, tables);
		return err;
	}
	free(old.ids);
	free(old.split);
	return 0;
}

int datapath_service_set(struct datapath *dp, const struct config_service *svc)
{
	struct mesh_backend *bes = calloc(svc->n_backends ? svc->n_backends : 1, sizeof(*bes));
	struct mesh_svc_key key;
	int id, other, err, fresh = 0;

	err = bes ? check_service(svc, bes) : -ENOMEM;
	if (err)
		goto out;
	dp_key_from_endpoint(&svc->vip,
			     svc->protocol == CONFIG_PROTO_UDP ? IPPROTO_UDP : IPPROTO_TCP, &key);
	id = dp_find_service(dp, svc->name);
	other = dp_index_find(dp, false, &key);
	err = -EEXIST; /* another service owns this address */
	if (other >= 0 && other != id && !dp->txn)
		goto out;
	if (other >= 0 && other != id && (err = dp_txn_displace(dp, (__u32)other)))
		goto out; /* inside a transaction it may move (a swap): it must before the end */
	if (id < 0) {
		id = svc_alloc(dp);
		fresh = 1;
	}
	err = id < 0 ? id : set_service(dp, svc, id, &key, bes);
	if (err && fresh && id >= 0)
		memset(&dp->svcs[id], 0, sizeof(dp->svcs[id])); /* id returns to the pool */
out:
	free(bes);
	if (err)
		LOG_ERR(DP_SUBSYS, "service update failed", "service=%s err=%s",
			log_q(svc->name ? svc->name : ""), strerror(-err));
	else
		LOG_DEBUG(DP_SUBSYS, "service written", "service=%s id=%d backends=%zu",
			  log_q(svc->name), id, svc->n_backends);
	return err;
}

int datapath_service_del(struct datapath *dp, const char *name)
{
	int id = dp_find_service(dp, name);
	struct dp_service *s;
	__u32 sid;

	if (id < 0)
		return -ENOENT;
	s = &dp->svcs[id];
	sid = (__u32)id;
	if (dp->txn) { /* the end deletes what is left; an undo puts it back */
		dp_index_set(dp, true, s->name, -1);
		if (dp_index_find(dp, false, &s->key) == id)
			dp_index_set(dp, false, &s->key, -1);
		s->removed = true;
		return 0;
	}
	if (bpf_map_delete_elem(dp->fd[DP_MAP_SERVICES], &s->key) && errno != ENOENT)
		return -errno;
	bpf_map_delete_elem(dp->fd[DP_MAP_SVC_NAMES], &sid);
	dp_split_drop(dp, sid);
	dp_maglev_drop(dp, sid * 2, 0);
	dp_maglev_drop(dp, sid * 2 + 1, 0);
	dp_slots_retire(dp, s->val.slot_base, s->n_slots);
	for (__u32 i = 0; i < s->val.n_backends; i++) {
		dp_drain_schedule(dp, s->ids[i], sid, s->close_after_ns);
		be_free(dp, s->ids[i]);
	}
	dp_index_set(dp, true, s->name, -1);
	dp_index_set(dp, false, &s->key, -1);
	LOG_DEBUG(DP_SUBSYS, "service removed", "service=%s", log_q(name));
	dp_udp_count(dp, s->key.proto == IPPROTO_UDP, false);
	free(s->ids);
	free(s->split);
	memset(s, 0, sizeof(*s));
	return 0;
}

int datapath_service_prune(struct datapath *dp, const char *const *keep, size_t n_keep)
{
	uint8_t *kept = calloc(dp->max_services, 1);
	int err = 0;

	if (!kept)
		return -ENOMEM;
	for (size_t k = 0; k < n_keep; k++) {
		int id = dp_find_service(dp, keep[k]);

		if (id >= 0)
			kept[id] = 1;
	}
	for (uint32_t i = 0; i < dp->svc_hi; i++) {
		char name[MESH_SVC_NAME_MAX];
		int r;

		if (!dp->svcs[i].used || kept[i])
			continue;
		snprintf(name, sizeof(name), "%s", dp->svcs[i].name);
		r = datapath_service_del(dp, name);
		if (r && !err)
			err = r;
	}
	free(kept);
	return err;
}

int datapath_backend_set_health(struct datapath *dp, const char *service,
				const struct config_endpoint *backend, bool healthy)
{
	struct config_backend cb = { .endpoint = *backend };
	struct mesh_backend probe = { 0 };
	int id = dp_find_service(dp, service);
	struct mesh_split old_split = { 0 };
	struct dp_service *s, old;
	bool tables;
	__u32 be = 0;
	int err;

	if (id < 0)
		return -ENOENT;
	s = &dp->svcs[id];
	be_from_config(&probe, &cb);
	for (__u32 i = 0; i < s->val.n_backends && !be; i++)
		if (be_same(&dp->be[s->ids[i]], &probe))
			be = s->ids[i];
	if (!be)
		return -ENOENT;
	if (!(dp->be[be].flags & MESH_BE_F_HEALTHY) == !healthy)
		return 0; /* as it is: meshd re-asserts every backend after each service write */
	/* Going down, the service's healthy list drops it before the backend is marked; coming
	 * up, the backend is marked first. */
	old = *s;
	if (s->split)
		old_split = s->split->val;
	dp->be[be].flags ^= MESH_BE_F_HEALTHY;
	err = healthy ? dp_be_write(dp, be) : 0;
	if (!err)
		err = dp_write_tables(dp, s);
	tables = !err;
	if (!err)
		err = dp_split_write(dp, s, s->split_hash);
	/* A service whose VIP another one took over in an open transaction writes its key again
	 * when it moves; the entry there is the other one's now. */
	if (!err && dp_index_find(dp, false, &s->key) == id &&
	    bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], &s->key, &s->val, BPF_EXIST))
		err = -errno;
	if (!err) {
		if (!s->split)
			dp_split_drop(dp, s->val.service_id);
		dp_slots_retire(dp, old.val.slot_base, old.n_slots);
		return healthy ? 0 : dp_be_write(dp, be);
	}
	if (tables)
		dp_slots_retire(dp, s->val.slot_base, s->n_slots);
	s->val = old.val;
	s->n_slots = old.n_slots;
	if (s->split) {
		s->split->val = old_split;
		dp_split_write(dp, s, s->split_hash);
	}
	dp->be[be].flags ^= MESH_BE_F_HEALTHY;
	if (healthy)
		dp_be_write(dp, be);
	return err;
}

/* --- adoption ------------------------------------------------------------------------------- */

int dp_adopt_service(struct datapath *dp, __u32 sid, const char *name,
		     const struct mesh_svc_key *key, const struct mesh_svc *val, const __u32 *ids)
{
	struct dp_service *s = &dp->svcs[sid];

	free(s->ids);
	memset(s, 0, sizeof(*s));
	s->ids = calloc(val->n_backends ? val->n_backends : 1, sizeof(*s->ids));
	if (!s->ids)
		return -ENOMEM;
	memcpy(s->ids, ids, val->n_backends * sizeof(*ids));
	snprintf(s->name, sizeof(s->name), "%.*s", MESH_SVC_NAME_MAX - 1, name);
	s->key = *key;
	s->val = *val;
	s->n_slots = val->n_backends;
	s->used = true;
	dp->n_udp += key->proto == IPPROTO_UDP; /* attached or detached once the datapath is open */
	for (__u32 i = 0; i < val->n_backends; i++) {
		__u32 id = ids[i];

		if (id == 0 || id >= dp->max_backends)
			continue;
		dp->be_used[id] = 1;
		if (id + 1 > dp->be_hi)
			dp->be_hi = id + 1;
	}
	if (sid + 1 > dp->svc_hi)
		dp->svc_hi = sid + 1;
	dp_index_set(dp, true, s->name, (int32_t)sid);
	dp_index_set(dp, false, &s->key, (int32_t)sid);
	return 0;
}

/* Loads one service and its backend list from the pinned maps into the mirror. */
static int load_one(struct datapath *dp, __u32 sid, const struct mesh_svc_name *rec)
{
	struct mesh_slot *e = NULL;
	struct mesh_svc_state ss = { 0 };
	struct mesh_svc val;
	__u32 *ids = NULL, n_slots;
	uint64_t names_hash;
	int err = -ENOENT;

	if (bpf_map_lookup_elem(dp->fd[DP_MAP_SERVICES], &rec->key, &val) ||
	    val.service_id != sid || val.n_backends > MESH_MAX_BACKENDS_PER_SVC ||
	    val.slot_base >= dp->max_slots || val.n_backends > dp->max_slots - val.slot_base)
		return -ENOENT;
	e = calloc(val.n_backends + 1, sizeof(*e));
	ids = calloc(val.n_backends + 1, sizeof(*ids));
	if (e && ids)
		err = dp_read_array(dp, dp->fd[DP_MAP_SLOTS], false, val.slot_base, val.n_backends,
				    sizeof(*e), e, 0);
	for (__u32 i = 0; !err && i < val.n_backends; i++)
		ids[i] = e[i].backend_id;
	bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_STATE], &sid, &ss);
	val.epoch = ss.epoch;
	if (!err)
		err = dp_adopt_service(dp, sid, rec->name, &rec->key, &val, ids);
	/* A split's subset lists follow the service's own; the split itself (no names in the
	 * maps) comes back with the next write of the service. */
	n_slots = err ? 0 : dp_split_adopt_slots(dp, sid, &val, &names_hash);
	if (n_slots > dp->max_slots - val.slot_base)
		n_slots = val.n_backends;
	if (!err) {
		dp->svcs[sid].n_slots = n_slots;
		dp->svcs[sid].split_hash = names_hash;
		dp_split_adopt_entry(dp, sid, &val);
		dp_slots_mark(dp, val.slot_base, n_slots);
	}
	free(e);
	free(ids);
	return err;
}

/* Reads the backends map into the mirror a chunk at a time, copying only entries that were ever
 * written (an id never allocated is all zero): the mirror's untouched pages stay unmapped, so an
 * adopting meshd is not ~4 MB (the default 131,072 ids) larger than a fresh one. */
static int load_backends(struct datapath *dp)
{
	enum { CHUNK = 4096 };
	static const struct mesh_backend zero;
	struct mesh_backend *buf = malloc(CHUNK * sizeof(*buf));
	int err = buf ? 0 : -ENOMEM;

	for (__u32 first = 0; !err && first < dp->max_backends; first += CHUNK) {
		__u32 cnt = dp->max_backends - first < CHUNK ? dp->max_backends - first : CHUNK;

		memset(buf, 0, cnt * sizeof(*buf));
		err = dp_read_array(dp, dp->fd[DP_MAP_BACKENDS], false, first, cnt, sizeof(*buf),
				    buf, 0);
		for (__u32 i = 0; !err && i < cnt; i++)
			if (memcmp(&buf[i], &zero, sizeof(zero)))
				dp->be[first + i] = buf[i];
	}
	free(buf);
	return err;
}

int dp_services_load(struct datapath *dp)
{
	__u32 key, next, *prev = NULL, n = 0;
	struct mesh_svc_name rec;
	/* Backend configuration (with epochs) for every id, services from their name records. */
	int err = load_backends(dp);

	if (err)
		return err;
	while (!bpf_map_get_next_key(dp->fd[DP_MAP_SVC_NAMES], prev, &next)) {
		key = next;
		prev = &key;
		if (key >= dp->max_services ||
		    bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_NAMES], &key, &rec))
			continue;
		if (load_one(dp, key, &rec) == 0)
			n++;
	}
	dp->svc_cursor = dp->svc_hi % dp->max_services;
	dp->be_cursor = dp->be_hi % dp->max_backends;
	LOG_INFO(DP_SUBSYS, "recovered services from pinned maps", "services=%u", n);
	return 0;
}

/* --- peak_ewma upkeep --------------------------------------------------------------------- */

int datapath_peak_ewma_decay(struct datapath *dp, uint64_t now_ns)
{
	int err = 0;

	for (uint32_t sid = 0; sid < dp->svc_hi; sid++) {
		const struct dp_service *s = &dp->svcs[sid];
		__u64 tau = (__u64)s->val.ewma_decay_ms * 1000000;

		if (!s->used || s->val.algorithm != MESH_LB_PEAK_EWMA)
			continue;
		for (uint32_t i = 0; i < s->val.n_backends; i++) {
			struct mesh_be_ewma e;
			__u32 id = s->ids[i];

			if (bpf_map_lookup_elem(dp->fd[DP_MAP_BE_EWMA], &id, &e) || !e.ewma_ns ||
			    now_ns <= e.updated_ns)
				continue;
			/* a zero sample: the average decays; never to 0, which means "unknown" */
			e.ewma_ns = ewma_peak_update(e.ewma_ns, 0, now_ns - e.updated_ns, tau) ?: 1;
			e.updated_ns = now_ns;
			if (bpf_map_update_elem(dp->fd[DP_MAP_BE_EWMA], &id, &e, BPF_EXIST))
				err = -errno;
		}
	}
	return err;
}
