/* Traffic splits in the maps: a split service's subsets (from services[].split and each
 * backend's subset label), their lists in the service's mesh_slots range after its own (so the
 * connect program balances within a subset with the service's code), the mesh_split value
 * written before the service value that points connects at it, and the per-subset counters,
 * kept while the service's subsets stay the same. Loop thread only. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "common/log.h"
#include "datapath/internal.h"

/* Whether label list `labels` ("v1" from the config, "v1,canary" from a Consul resolver whose
 * subsets overlap) holds `name`. */
static bool in_subset(const char *labels, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = labels; p && *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ','))
		if (!strncmp(p, name, n) && (p[n] == ',' || !p[n]))
			return true;
	return false;
}

struct dp_split *dp_split_new(const struct config_service *svc)
{
	size_t n = svc->n_split < MESH_SPLIT_MAX ? svc->n_split : MESH_SPLIT_MAX;
	struct dp_split *sp;

	if (!n)
		return NULL;
	sp = calloc(1, sizeof(*sp) + svc->n_backends + 1);
	if (!sp)
		return NULL;
	sp->val.n = (__u8)n;
	sp->val.names_hash = 0xcbf29ce484222325ull;
	sp->n_be = (uint32_t)svc->n_backends;
	for (size_t i = 0; i < n; i++) {
		const char *name = svc->split[i].subset ? svc->split[i].subset : "";

		sp->val.weight[i] = (__u16)svc->split[i].weight;
		strncpy(sp->name[i], name, MESH_SVC_NAME_MAX - 1);
		for (const char *c = sp->name[i];; c++) { /* FNV-1a over the names and their NULs */
			sp->val.names_hash =
			    (sp->val.names_hash ^ (unsigned char)*c) * 0x100000001b3ull;
			if (!*c)
				break;
		}
		for (size_t b = 0; b < svc->n_backends; b++)
			if (in_subset(svc->backends[b].subset, name))
				sp->member[b] |= (uint8_t)(1u << i);
	}
	return sp;
}

uint32_t dp_split_slots(const struct dp_service *s)
{
	uint32_t n = 0;

	if (!s->split)
		return 0;
	for (uint32_t b = 0; b < s->split->n_be && b < s->val.n_backends; b++)
		n += (uint32_t)__builtin_popcount(s->split->member[b]);
	return n;
}

/* Subset i's lists at e[0..): its backends in configured order, its healthy ones, and for
 * weighted the alias cells over those. Returns the count of backends, or -errno. */
static int subset_lists(const struct datapath *dp, const struct dp_service *s, uint32_t i,
			struct mesh_slot *e, uint32_t *healthy)
{
	uint32_t n = 0, k = 0;

	for (uint32_t b = 0; b < s->split->n_be && b < s->val.n_backends; b++) {
		__u32 id = s->ids[b];

		if (!(s->split->member[b] >> i & 1))
			continue;
		e[n++].backend_id = id;
		if (dp->be[id].flags & MESH_BE_F_HEALTHY)
			e[k++].healthy_id = id;
	}
	*healthy = k;
	if (s->val.algorithm == MESH_LB_WEIGHTED && k) {
		int err = dp_fill_alias(dp, e, k);

		if (err)
			return err;
	}
	return (int)n;
}

int dp_split_lists(const struct datapath *dp, struct dp_service *s, struct mesh_slot *e,
		   uint32_t base)
{
	struct mesh_split *v;
	uint32_t at = s->val.n_backends, k;

	if (!s->split)
		return 0;
	v = &s->split->val;
	for (uint32_t i = 0; i < v->n; i++) {
		int n = subset_lists(dp, s, i, e + at, &k);

		if (n < 0)
			return n;
		v->sub[i].slot_base = base + at;
		v->sub[i].n_backends = (__u16)n;
		v->sub[i].n_healthy = (__u16)k;
		at += (uint32_t)n;
	}
	return 0;
}

/* Each subset's copy of the service value: the service's, narrowed to the subset's lists. */
static void narrow(struct mesh_split *v, const struct mesh_svc *svc)
{
	for (uint32_t i = 0; i < v->n && i < MESH_SPLIT_MAX; i++) {
		struct mesh_svc *sub = &v->sub[i];
		__u32 base = sub->slot_base;
		__u16 n = sub->n_backends, k = sub->n_healthy;

		*sub = *svc;
		sub->slot_base = base;
		sub->n_backends = n;
		sub->n_healthy = k;
		sub->flags |= MESH_SVC_F_SUBSET;
	}
}

uint32_t dp_split_pairs(uint32_t max_services)
{
	return max_services < MESH_SPLIT_SLOTS / 2 ? max_services : MESH_SPLIT_SLOTS / 2;
}

/* The mesh_split_fast entry for the next write of service `sid`'s split: the other one of its
 * pair, or the first of a free pair; -1 when every pair is taken (logged once). */
static int next_entry(struct datapath *dp, __u32 sid, const char *name)
{
	uint32_t cur = dp->split_entry[sid];

	if (cur)
		return (int)((cur - 1) ^ 1);
	for (uint32_t i = 0; i < dp->split_pairs; i++) {
		uint32_t p = (dp->split_cursor + i) % dp->split_pairs;

		if (dp->split_pair_used[p])
			continue;
		dp->split_pair_used[p] = 1;
		dp->split_cursor = (p + 1) % dp->split_pairs;
		return (int)(2 * p);
	}
	if (!dp->split_full_logged)
		LOG_WARN(DP_SUBSYS,
			 "split services beyond mesh_split_fast's capacity: their connects look up "
			 "mesh_split (slower)",
			 "service=%s capacity=%u", log_q(name), dp->split_pairs);
	dp->split_full_logged = true;
	return -1;
}

/* Writes the split to its mesh_split_fast entry, when it has or gets one, and names the entry
 * in the service value (not yet published). */
static int write_fast(struct datapath *dp, struct dp_service *s)
{
	__u32 sid = s->val.service_id;
	int e = dp->fd[DP_MAP_SPLIT_FAST] >= 0 ? next_entry(dp, sid, s->name) : -1;
	__u32 key = (__u32)e;

	s->val.split_slot = 0;
	if (e < 0)
		return 0;
	if (bpf_map_update_elem(dp->fd[DP_MAP_SPLIT_FAST], &key, &s->split->val, BPF_ANY)) {
		if (!dp->split_entry[sid]) /* a pair just taken */
			dp->split_pair_used[key / 2] = 0;
		return -errno;
	}
	dp->split_entry[sid] = (uint16_t)(e + 1);
	s->val.split_slot = (__u16)(e + 1);
	return 0;
}

int dp_split_write(struct datapath *dp, struct dp_service *s, uint64_t prev_hash)
{
	struct mesh_split_cnt zero = { 0 };
	__u32 sid = s->val.service_id;

	s->val.split_slot = 0;
	if (!s->split)
		return 0;
	if (dp->fd[DP_MAP_SPLIT] < 0 || dp->fd[DP_MAP_SPLIT_CNT] < 0)
		return -EOPNOTSUPP;
	if (s->split->val.names_hash != prev_hash &&
	    bpf_map_update_elem(dp->fd[DP_MAP_SPLIT_CNT], &sid, &zero, BPF_ANY))
		return -errno;
	narrow(&s->split->val, &s->val);
	if (bpf_map_update_elem(dp->fd[DP_MAP_SPLIT], &sid, &s->split->val, BPF_ANY))
		return -errno;
	return write_fast(dp, s);
}

void dp_split_drop(struct datapath *dp, __u32 sid)
{
	uint32_t cur = sid < dp->max_services ? dp->split_entry[sid] : 0;

	if (dp->fd[DP_MAP_SPLIT] >= 0)
		bpf_map_delete_elem(dp->fd[DP_MAP_SPLIT], &sid);
	if (cur && (cur - 1) / 2 < dp->split_pairs)
		dp->split_pair_used[(cur - 1) / 2] = 0;
	if (cur)
		dp->split_entry[sid] = 0;
}

void dp_split_adopt_entry(struct datapath *dp, __u32 sid, const struct mesh_svc *val)
{
	uint32_t e = val->split_slot;

	if (!(val->flags & MESH_SVC_F_SPLIT) || !e || dp->fd[DP_MAP_SPLIT_FAST] < 0 ||
	    (e - 1) / 2 >= dp->split_pairs || dp->split_pair_used[(e - 1) / 2])
		return;
	dp->split_pair_used[(e - 1) / 2] = 1;
	dp->split_entry[sid] = (uint16_t)e;
}

struct dp_split *dp_split_dup(const struct dp_split *sp)
{
	size_t size = sizeof(*sp) + sp->n_be + 1;
	struct dp_split *c = malloc(size);

	if (c)
		memcpy(c, sp, size);
	return c;
}

void dp_split_cnt_get(const struct datapath *dp, __u32 sid, struct mesh_split_cnt *cnt)
{
	memset(cnt, 0, sizeof(*cnt));
	if (dp->fd[DP_MAP_SPLIT_CNT] >= 0)
		bpf_map_lookup_elem(dp->fd[DP_MAP_SPLIT_CNT], &sid, cnt);
}

int dp_split_cnt_put(struct datapath *dp, __u32 sid, const struct mesh_split_cnt *cnt)
{
	if (dp->fd[DP_MAP_SPLIT_CNT] < 0)
		return -EOPNOTSUPP;
	return bpf_map_update_elem(dp->fd[DP_MAP_SPLIT_CNT], &sid, cnt, BPF_ANY) ? -errno : 0;
}

uint32_t dp_split_adopt_slots(struct datapath *dp, __u32 sid, const struct mesh_svc *val,
			      uint64_t *names_hash)
{
	struct mesh_split sp;
	uint32_t n = val->n_backends;

	*names_hash = 0;
	if (!(val->flags & MESH_SVC_F_SPLIT) || dp->fd[DP_MAP_SPLIT] < 0 ||
	    bpf_map_lookup_elem(dp->fd[DP_MAP_SPLIT], &sid, &sp))
		return n;
	*names_hash = sp.names_hash;
	for (uint32_t i = 0; i < sp.n && i < MESH_SPLIT_MAX; i++)
		n += sp.sub[i].n_backends;
	return n;
}

uint32_t dp_split_stats(const struct datapath *dp, const struct dp_service *s,
			struct datapath_subset_stats *out)
{
	struct mesh_split_cnt cnt = { 0 };
	const struct mesh_split *v = &s->split->val;
	__u32 sid = s->val.service_id;

	if (dp->fd[DP_MAP_SPLIT_CNT] >= 0)
		bpf_map_lookup_elem(dp->fd[DP_MAP_SPLIT_CNT], &sid, &cnt);
	for (uint32_t i = 0; i < v->n && i < MESH_SPLIT_MAX; i++)
		out[i] = (struct datapath_subset_stats){
			.name = s->split->name[i],
			.weight = v->weight[i],
			.backends = v->sub[i].n_backends,
			.healthy = v->sub[i].n_healthy,
			.picked = cnt.picked[i],
			.fallback = cnt.fallback[i],
		};
	return v->n < MESH_SPLIT_MAX ? v->n : MESH_SPLIT_MAX;
}
