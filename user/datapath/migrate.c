/* Upgrading a pinned datapath of an earlier layout to this one (ABI 5) while connections run.
 * From ABI 4, whose maps this layout keeps, dp_migrate_v4_pass() moves the backends' active
 * counts and breaker states into mesh_be_hot (docs/datapath.md). From ABI 3 (backend ids inline
 * in the service value, per-CPU counters), the rest of this file: The socket maps keep their layout
 * and their pins, so every live socket keeps its decision; ids and epochs are carried over, so
 * those decisions name the same services and backends in the new maps. Counting moves with the
 * sockops program: once it is swapped and the old programs have finished (an RCU grace period),
 * the old active counts no longer move, and what they moved since the copy is added to the new
 * ones by mesh_adjust with the kernel's own atomics. Breaker changes and counter increments in
 * the few milliseconds between the copy and the swap are not carried over. Loop thread. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/log.h"
#include "datapath/internal.h"

/* ABI 3, as it was pinned. */
#define V3_SERVICES 16384
#define V3_BACKENDS 131072
#define V3_PER_SVC 64

struct v3_svc {
	__u32 service_id, generation, epoch;
	__u8 algorithm, flags, choice_count, n_backends;
	__u32 max_connections;
	__u8 max_ejection_percent, panic_percent, n_healthy, pad;
	struct mesh_breaker_cfg breaker;
	__u64 healthy_mask;
	__u8 healthy_slots[V3_PER_SVC];
	__u32 backend_ids[V3_PER_SVC];
};
_Static_assert(sizeof(struct v3_svc) == 392, "v3 mesh_svc");

struct v3_svc_state {
	__u64 rr;
	__s64 active;
	__u32 epoch;
	__s32 not_closed;
};

struct v3_be_state { /* the first 72 bytes of mesh_be_state */
	struct bpf_spin_lock lock;
	__u32 pad;
	struct mesh_breaker br;
	__s64 active;
	__u64 latency_ewma_ns;
};

struct v3_be_stats {
	__u64 selected, ok, failed, probes, bytes_sent, bytes_received, transitions[3], pad;
};

struct v3_svc_stats {
	__u64 redirected, passthrough, panic, rejects[8], bytes_sent, bytes_received, pad;
};

enum v3_map {
	V3_SERVICES_MAP,
	V3_NAMES,
	V3_SVC_STATE,
	V3_BACKENDS_MAP,
	V3_BE_STATE,
	V3_BE_STATS,
	V3_SVC_STATS,
	V3__COUNT
};
static const struct {
	const char *name;
	__u32 value_size;
} v3_maps[V3__COUNT] = {
	[V3_SERVICES_MAP] = { "mesh_services", sizeof(struct v3_svc) },
	[V3_NAMES] = { "mesh_svc_names", sizeof(struct mesh_svc_name) },
	[V3_SVC_STATE] = { "mesh_svc_state", sizeof(struct v3_svc_state) },
	[V3_BACKENDS_MAP] = { "mesh_backends", sizeof(struct mesh_backend) },
	[V3_BE_STATE] = { "mesh_be_state", sizeof(struct v3_be_state) },
	[V3_BE_STATS] = { "mesh_be_stats", sizeof(struct v3_be_stats) },
	[V3_SVC_STATS] = { "mesh_svc_stats", sizeof(struct v3_svc_stats) },
};

struct dp_migration {
	int fd[V3__COUNT];
	__s64 *be_active;  /* V3_BACKENDS: active counts as copied */
	__s64 *svc_active; /* V3_SERVICES */
};

void dp_migrate_free(struct dp_migration *m)
{
	if (!m)
		return;
	for (int i = 0; i < V3__COUNT; i++)
		if (m->fd[i] >= 0)
			close(m->fd[i]);
	free(m->be_active);
	free(m->svc_active);
	free(m);
}

static int open_v3(struct datapath *dp, struct dp_migration *m)
{
	char path[PATH_MAX];

	for (int i = 0; i < V3__COUNT; i++) {
		struct bpf_map_info info = { 0 };
		__u32 len = sizeof(info);

		snprintf(path, sizeof(path), "%s/%s", dp->pin_path, v3_maps[i].name);
		m->fd[i] = bpf_obj_get(path);
		if (m->fd[i] < 0 || bpf_obj_get_info_by_fd(m->fd[i], &info, &len))
			return -errno;
		if (info.value_size != v3_maps[i].value_size)
			return -ESTALE;
	}
	return 0;
}

/* Backends: configuration and state of every id, counters summed over CPUs. */
static int copy_backends(struct datapath *dp, struct dp_migration *m)
{
	size_t pc = (size_t)dp->ncpus;
	struct v3_be_state *old = calloc(V3_BACKENDS, sizeof(*old));
	struct v3_be_stats *stats = calloc(V3_BACKENDS * pc, sizeof(*stats));
	struct mesh_be_state *bs = calloc(V3_BACKENDS, sizeof(*bs));
	struct mesh_be_hot *hot = calloc(V3_BACKENDS, sizeof(*hot));
	__u32 n = V3_BACKENDS, *keys = calloc(V3_BACKENDS, sizeof(*keys));
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = BPF_F_LOCK);
	int err = !old || !stats || !bs || !hot || !keys ? -ENOMEM : 0;

	err = err
		  ?: dp_read_array(dp, m->fd[V3_BACKENDS_MAP], false, 0, n, sizeof(*dp->be), dp->be,
				   0);
	err = err
		  ?: dp_read_array(dp, m->fd[V3_BE_STATE], false, 0, n, sizeof(*old), old,
				   BPF_F_LOCK);
	err = err ?: dp_read_array(dp, m->fd[V3_BE_STATS], true, 0, n, sizeof(*stats), stats, 0);
	for (__u32 id = 0; !err && id < n; id++) {
		struct mesh_be_state *b = &bs[id];

		keys[id] = id;
		b->br = old[id].br;
		hot[id].active = m->be_active[id] = old[id].active;
		hot[id].state = old[id].br.state;
		b->latency_ewma_ns = old[id].latency_ewma_ns;
		for (size_t c = 0; c < pc; c++) {
			const struct v3_be_stats *s = &stats[id * pc + c];

			hot[id].selected += s->selected;
			b->ok += s->ok;
			b->failed += s->failed;
			b->probes += s->probes;
			b->bytes_sent += s->bytes_sent;
			b->bytes_received += s->bytes_received;
			for (int t = 0; t < MESH_CIRCUIT__COUNT; t++)
				b->transitions[t] += s->transitions[t];
		}
		if (dp->be[id].epoch && id + 1 > dp->be_hi)
			dp->be_hi = id + 1;
	}
	if (!err && bpf_map_update_batch(dp->fd[DP_MAP_BACKENDS], keys, dp->be, &n, NULL))
		err = -errno;
	n = V3_BACKENDS;
	if (!err && bpf_map_update_batch(dp->fd[DP_MAP_BE_STATE], keys, bs, &n, &opts))
		err = -errno;
	n = V3_BACKENDS;
	if (!err && bpf_map_update_batch(dp->fd[DP_MAP_BE_HOT], keys, hot, &n, NULL))
		err = -errno;
	free(old);
	free(stats);
	free(bs);
	free(hot);
	free(keys);
	return err;
}

/* Service states: cursor, active count, epoch, breaker hint and counters of every id. */
static int copy_service_states(struct datapath *dp, struct dp_migration *m)
{
	size_t pc = (size_t)dp->ncpus;
	struct v3_svc_state *old = calloc(V3_SERVICES, sizeof(*old));
	struct v3_svc_stats *stats = calloc(V3_SERVICES * pc, sizeof(*stats));
	struct mesh_svc_state *ss = calloc(V3_SERVICES, sizeof(*ss));
	__u32 n = V3_SERVICES, *keys = calloc(V3_SERVICES, sizeof(*keys));
	int err = !old || !stats || !ss || !keys ? -ENOMEM : 0;

	err = err ?: dp_read_array(dp, m->fd[V3_SVC_STATE], false, 0, n, sizeof(*old), old, 0);
	err = err ?: dp_read_array(dp, m->fd[V3_SVC_STATS], true, 0, n, sizeof(*stats), stats, 0);
	for (__u32 id = 0; !err && id < n; id++) {
		struct mesh_svc_state *s = &ss[id];

		keys[id] = id;
		s->rr = old[id].rr;
		s->active = m->svc_active[id] = old[id].active;
		s->epoch = old[id].epoch;
		s->not_closed = old[id].not_closed;
		for (size_t c = 0; c < pc; c++) {
			const struct v3_svc_stats *t = &stats[id * pc + c];

			s->redirected += t->redirected;
			s->passthrough += t->passthrough;
			s->panic += t->panic;
			for (int r = 0; r < MESH_REJECT__COUNT; r++)
				s->rejects[r] += t->rejects[r];
			s->bytes_sent += t->bytes_sent;
			s->bytes_received += t->bytes_received;
		}
	}
	if (!err && bpf_map_update_batch(dp->fd[DP_MAP_SVC_STATE], keys, ss, &n, NULL))
		err = -errno;
	free(old);
	free(stats);
	free(ss);
	free(keys);
	return err;
}

/* One service: the v3 value becomes a v4 value with its backend lists in mesh_slots. */
static int copy_service(struct datapath *dp, struct dp_migration *m, __u32 sid,
			const struct mesh_svc_name *rec)
{
	struct mesh_svc_state ss = { 0 };
	struct mesh_svc v = { 0 };
	struct dp_service *s;
	struct v3_svc o;
	int err;

	if (bpf_map_lookup_elem(m->fd[V3_SERVICES_MAP], &rec->key, &o) || o.service_id != sid ||
	    o.n_backends > V3_PER_SVC)
		return 0; /* a name without its service: nothing to carry over */
	bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_STATE], &sid, &ss);
	v = (struct mesh_svc){
		.service_id = sid,
		.generation = o.generation,
		.epoch = ss.epoch,
		.n_backends = o.n_backends,
		.max_connections = o.max_connections,
		.maglev_m = o.algorithm == MESH_LB_MAGLEV && o.n_backends ? MESH_MAGLEV_M_MIN : 0,
		.algorithm = o.algorithm,
		.flags = o.flags,
		.choice_count = o.choice_count,
		.max_ejection_percent = o.max_ejection_percent,
		.panic_percent = o.panic_percent,
		.breaker = o.breaker,
	};
	err = dp_adopt_service(dp, sid, rec->name, &rec->key, &v, o.backend_ids);
	s = &dp->svcs[sid];
	err = err ?: dp_write_tables(dp, s);
	err = err ?: dp_write_maglev(dp, s); /* same size and keys as v3's: callers stay put */
	if (!err && bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], &s->key, &s->val, BPF_ANY))
		err = -errno;
	if (!err && bpf_map_update_elem(dp->fd[DP_MAP_SVC_NAMES], &sid, rec, BPF_ANY))
		err = -errno;
	return err;
}

static int copy_services(struct datapath *dp, struct dp_migration *m)
{
	__u32 key, next, *prev = NULL, n = 0;
	struct mesh_svc_name rec;
	int err = 0;

	while (!err && !bpf_map_get_next_key(m->fd[V3_NAMES], prev, &next)) {
		key = next;
		prev = &key;
		if (key >= V3_SERVICES || bpf_map_lookup_elem(m->fd[V3_NAMES], &key, &rec))
			continue;
		err = copy_service(dp, m, key, &rec);
		n += !err;
	}
	dp->svc_cursor = dp->svc_hi % dp->max_services;
	dp->be_cursor = dp->be_hi % dp->max_backends;
	LOG_INFO(DP_SUBSYS, "carried services over from the previous layout", "services=%u", n);
	return err;
}

int dp_migrate_begin(struct datapath *dp, struct dp_migration **out)
{
	struct dp_migration *m = calloc(1, sizeof(*m));
	int err;

	*out = m;
	if (!m)
		return -ENOMEM;
	for (int i = 0; i < V3__COUNT; i++)
		m->fd[i] = -1;
	if (dp->max_services < V3_SERVICES || dp->max_backends < V3_BACKENDS)
		return -ENOSPC; /* the old ids must fit */
	if (dp->adjust_fd < 0)
		return -EOPNOTSUPP; /* no syscall programs: the caller rebuilds instead */
	m->be_active = calloc(V3_BACKENDS, sizeof(*m->be_active));
	m->svc_active = calloc(V3_SERVICES, sizeof(*m->svc_active));
	if (!m->be_active || !m->svc_active)
		return -ENOMEM;
	err = open_v3(dp, m);
	err = err ?: copy_backends(dp, m);
	err = err ?: copy_service_states(dp, m);
	return err ?: copy_services(dp, m);
}

/* Runs mesh_adjust over `a` (emptied). */
static int adjust_run(struct datapath *dp, struct mesh_adjust *a)
{
	LIBBPF_OPTS(bpf_test_run_opts, run);
	__u32 zero = 0;
	int err = bpf_map_update_elem(dp->fd[DP_MAP_ADJUST], &zero, a, BPF_ANY) ||
			  bpf_prog_test_run_opts(dp->adjust_fd, &run)
		      ? -errno
		      : 0;

	a->n = 0;
	return err;
}

/* Runs mesh_adjust over the entries of `e` that have a delta. */
static int adjust(struct datapath *dp, __u32 kind, const __s64 *was, const __s64 *now, __u32 n)
{
	struct mesh_adjust a = { .kind = kind };
	int err = 0;

	for (__u32 id = 0; id <= n && !err; id++) {
		if (id < n && now[id] != was[id] && a.n < MESH_ADJUST_MAX) {
			a.e[a.n].id = id;
			a.e[a.n++].delta = (__s32)(now[id] - was[id]);
		}
		if (a.n == MESH_ADJUST_MAX || (id == n && a.n))
			err = adjust_run(dp, &a);
	}
	return err;
}

int dp_migrate_v4_pass(struct datapath *dp)
{
	struct mesh_adjust a = { .kind = MESH_ADJUST_FROM_V4 };
	__u32 n = dp->max_backends;
	int err = dp->adjust_fd < 0 ? -EOPNOTSUPP : 0;

	for (__u32 id = 1; id <= n && !err; id++) {
		if (id < n && dp->be[id].epoch)
			a.e[a.n++].id = id;
		if (a.n == MESH_ADJUST_MAX || (id == n && a.n))
			err = adjust_run(dp, &a);
	}
	return err;
}

/* The old active counts, now that no old program runs any more. */
static int final_counts(struct datapath *dp, struct dp_migration *m, __s64 *be, __s64 *svc)
{
	struct v3_be_state *bs = calloc(V3_BACKENDS, sizeof(*bs));
	struct v3_svc_state *ss = calloc(V3_SERVICES, sizeof(*ss));
	int err = !bs || !ss ? -ENOMEM : 0;

	err = err
		  ?: dp_read_array(dp, m->fd[V3_BE_STATE], false, 0, V3_BACKENDS, sizeof(*bs), bs,
				   BPF_F_LOCK);
	err = err
		  ?: dp_read_array(dp, m->fd[V3_SVC_STATE], false, 0, V3_SERVICES, sizeof(*ss), ss,
				   0);
	for (__u32 i = 0; !err && i < V3_BACKENDS; i++)
		be[i] = bs[i].active;
	for (__u32 i = 0; !err && i < V3_SERVICES; i++)
		svc[i] = ss[i].active;
	free(bs);
	free(ss);
	return err;
}

/* Moves every pin under the pin path to this object's maps; old maps this layout does not
 * have lose their pin. */
static int repin(struct datapath *dp, struct bpf_object *obj)
{
	char path[PATH_MAX];
	struct bpf_map *map;
	int err = 0;

	for (int i = 0; i < V3__COUNT; i++) {
		snprintf(path, sizeof(path), "%s/%s", dp->pin_path, v3_maps[i].name);
		unlink(path);
	}
	bpf_object__for_each_map(map, obj)
	{
		if (bpf_map__is_pinned(map) || bpf_map__is_internal(map))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dp->pin_path, bpf_map__name(map));
		unlink(path);
		if (bpf_map__pin(map, path) && !err)
			err = -errno;
	}
	return err;
}

int dp_migrate_end(struct datapath *dp, struct dp_migration *m, struct bpf_object *obj)
{
	__s64 *be = calloc(V3_BACKENDS, sizeof(*be)), *svc = calloc(V3_SERVICES, sizeof(*svc));
	int err = !be || !svc ? -ENOMEM : 0;

	err = err ?: dp_barrier(dp); /* no old program runs past this point */
	err = err ?: final_counts(dp, m, be, svc);
	err = err ?: adjust(dp, 0, m->be_active, be, V3_BACKENDS);
	err = err ?: adjust(dp, 1, m->svc_active, svc, V3_SERVICES);
	err = err ?: repin(dp, obj);
	if (err)
		LOG_ERR(DP_SUBSYS, "upgrade of the pinned datapath failed", "err=%s",
			strerror(-err));
	free(be);
	free(svc);
	return err;
}
