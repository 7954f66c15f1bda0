/* Reading the datapath: per-service and per-backend snapshots from batch lookups of the arrays
 * (per-CPU counters summed here), the global decision counters, and the ring buffer of breaker
 * transitions and rejects decoded with the names of the userspace mirror. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/log.h"
#include "datapath/internal.h"

#define DP_BATCH 4096

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static bool map_percpu(enum dp_map m)
{
	return m == DP_MAP_BE_STATS || m == DP_MAP_SVC_STATS || m == DP_MAP_COUNTERS;
}

int dp_read_array(const struct datapath *dp, enum dp_map m, __u32 n, size_t vsize, void *out,
		  __u64 elem_flags)
{
	size_t stride = map_percpu(m) ? (size_t)dp->ncpus * round8(vsize) : vsize;
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = elem_flags);
	__u32 in = 0, next = 0, done = 0;
	__u32 *keys;
	int err = 0;

	keys = malloc(DP_BATCH * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	while (done < n) {
		__u32 cnt = n - done < DP_BATCH ? n - done : DP_BATCH;

		err = bpf_map_lookup_batch(dp->fd[m], done ? &in : NULL, &next, keys,
					   (char *)out + (size_t)done * stride, &cnt, &opts);
		if (err && errno != ENOENT) {
			err = -errno;
			break;
		}
		done += cnt;
		if (err || cnt == 0) {
			err = 0; /* ENOENT: end of the array */
			break;
		}
		in = next;
	}
	free(keys);
	return err;
}

/* Sums entry `i` of a per-CPU table of u64 counters read by read_tables() into `sum` (`size`
 * bytes, a whole number of u64). */
static void sum_cpus(const void *percpu, size_t i, int ncpus, void *sum, size_t size)
{
	const __u64 *src = (const __u64 *)((const char *)percpu + i * (size_t)ncpus * size);
	size_t words = size / sizeof(__u64);
	__u64 *dst = sum;

	memset(sum, 0, size);
	for (int c = 0; c < ncpus; c++)
		for (size_t w = 0; w < words; w++)
			dst[w] += src[c * words + w];
}

/* Reads the first `n` entries of a per-CPU stats map and of the matching state array into new
 * buffers (freed by the caller, also on error). */
static int read_tables(struct datapath *dp, __u32 n, enum dp_map stats_map, size_t stats_size,
		       void **stats, enum dp_map state_map, size_t state_size, __u64 state_flags,
		       void **state)
{
	int err;

	*stats = calloc(n + 1, (size_t)dp->ncpus * stats_size);
	*state = calloc(n + 1, state_size);
	if (!*stats || !*state)
		return -ENOMEM;
	err = dp_read_array(dp, stats_map, n, stats_size, *stats, 0);
	return err ? err : dp_read_array(dp, state_map, n, state_size, *state, state_flags);
}

static void report_service(const struct datapath *dp, __u32 sid, const struct mesh_svc_stats *sum,
			   const struct mesh_svc_state *ss,
			   void (*cb)(const struct datapath_service_stats *s, void *arg), void *arg)
{
	const struct dp_service *s = &dp->svcs[sid];
	struct datapath_service_stats out = {
		.service = s->name,
		.bytes_sent = sum->bytes_sent,
		.bytes_received = sum->bytes_received,
		.passthrough = sum->passthrough,
		.service_id = sid,
		.algorithm = s->val.algorithm,
		.n_backends = s->val.n_backends,
		.active = ss->epoch == s->val.epoch ? ss->active : 0,
		.redirected = sum->redirected,
		.panic = sum->panic,
	};
	struct mesh_backend vip = { .port = s->key.port };

	memcpy(vip.addr, s->key.addr, 16);
	dp_endpoint_from_be(&vip, &out.vip);
	for (int r = 0; r < 8; r++)
		out.rejects[r] = sum->rejects[r];
	cb(&out, arg);
}

static void report_backend(const struct datapath *dp, const struct dp_service *s, __u32 id,
			   const struct mesh_be_stats *sum, const struct mesh_be_state *st,
			   void (*cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	const struct mesh_backend *be = &dp->be[id];
	struct datapath_backend_stats out = {
		.service = s->name,
		.weight = be->weight,
		.healthy = be->flags & MESH_BE_F_HEALTHY,
		.circuit = (enum datapath_circuit)st->br.state,
		.active = st->active > 0 ? (uint64_t)st->active : 0,
		.conn_ok = sum->ok,
		.conn_failed = sum->failed,
		.latency_ewma_ns = st->latency_ewma_ns,
		.consecutive_failures = st->br.consecutive,
		.open_until_ns = st->br.state == MESH_CIRCUIT_OPEN ? st->br.open_until_ns : 0,
		.backend_id = id,
		.trips = st->br.trips,
		.selected = sum->selected,
		.probes = sum->probes,
		.bytes_sent = sum->bytes_sent,
		.bytes_received = sum->bytes_received,
	};

	dp_endpoint_from_be(be, &out.backend);
	for (int i = 0; i < 3; i++)
		out.transitions_to[i] = sum->transitions[i];
	cb(&out, arg);
}

static int stats_services(struct datapath *dp,
			  void (*cb)(const struct datapath_service_stats *s, void *arg), void *arg)
{
	struct mesh_svc_stats sum;
	void *stats, *states;
	int err = read_tables(dp, dp->svc_hi, DP_MAP_SVC_STATS, sizeof(sum), &stats,
			      DP_MAP_SVC_STATE, sizeof(struct mesh_svc_state), 0, &states);
	const struct mesh_svc_state *state = states;

	for (__u32 i = 0; !err && i < dp->svc_hi; i++) {
		if (!dp->svcs[i].used)
			continue;
		sum_cpus(stats, i, dp->ncpus, &sum, sizeof(sum));
		report_service(dp, i, &sum, &state[i], cb, arg);
	}
	free(states);
	free(stats);
	return err;
}

static int stats_backends(struct datapath *dp,
			  void (*cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	struct mesh_be_stats sum;
	void *stats, *states;
	int err = read_tables(dp, dp->be_hi, DP_MAP_BE_STATS, sizeof(sum), &stats, DP_MAP_BE_STATE,
			      sizeof(struct mesh_be_state), BPF_F_LOCK, &states);
	const struct mesh_be_state *state = states;

	for (__u32 i = 0; !err && i < dp->svc_hi; i++) {
		const struct dp_service *s = &dp->svcs[i];

		for (__u32 b = 0; s->used && b < s->val.n_backends; b++) {
			__u32 id = s->val.backend_ids[b];

			if (id >= dp->be_hi)
				continue;
			sum_cpus(stats, id, dp->ncpus, &sum, sizeof(sum));
			report_backend(dp, s, id, &sum, &state[id], cb, arg);
		}
	}
	free(states);
	free(stats);
	return err;
}

int datapath_stats(struct datapath *dp,
		   void (*svc_cb)(const struct datapath_service_stats *s, void *arg),
		   void (*be_cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	int err = 0;

	if (svc_cb && dp->svc_hi)
		err = stats_services(dp, svc_cb, arg);
	if (!err && be_cb && dp->be_hi)
		err = stats_backends(dp, be_cb, arg);
	if (err)
		LOG_WARN(DP_SUBSYS, "reading counters failed", "err=%s", strerror(-err));
	return err;
}

int datapath_counters(struct datapath *dp, uint64_t *out, size_t n)
{
	__u64 *pc = calloc((size_t)MESH_CNT__COUNT * dp->ncpus, sizeof(__u64));
	int err;

	if (!pc)
		return -ENOMEM;
	err = dp_read_array(dp, DP_MAP_COUNTERS, MESH_CNT__COUNT, sizeof(__u64), pc, 0);
	for (size_t i = 0; !err && i < n && i < MESH_CNT__COUNT; i++) {
		out[i] = 0;
		for (int c = 0; c < dp->ncpus; c++)
			out[i] += pc[i * dp->ncpus + c];
	}
	free(pc);
	return err ? err : (int)(n < MESH_CNT__COUNT ? n : MESH_CNT__COUNT);
}

static int on_event(void *ctx, void *data, size_t len)
{
	struct datapath *dp = ctx;
	const struct mesh_event *e = data;
	struct datapath_event ev = { 0 };

	if (len < sizeof(*e) || !dp->ev_cb)
		return 0;
	ev.type = (int)e->type;
	ev.service = e->service_id < MESH_MAX_SERVICES && dp->svcs[e->service_id].used
			 ? dp->svcs[e->service_id].name
			 : "";
	if (e->backend_id && e->backend_id < MESH_MAX_BACKENDS)
		dp_endpoint_from_be(&dp->be[e->backend_id], &ev.backend);
	ev.from = (enum datapath_circuit)e->from;
	ev.to = (enum datapath_circuit)e->to;
	ev.reason = e->reason;
	dp->ev_cb(&ev, dp->ev_arg);
	return 0;
}

static int ensure_ringbuf(struct datapath *dp)
{
	if (dp->rb)
		return 0;
	dp->rb = ring_buffer__new(dp->fd[DP_MAP_EVENTS], on_event, dp, NULL);
	return dp->rb ? 0 : -errno;
}

int datapath_event_fd(struct datapath *dp)
{
	int err = ensure_ringbuf(dp);

	return err ? err : ring_buffer__epoll_fd(dp->rb);
}

int datapath_drain_events(struct datapath *dp,
			  void (*cb)(const struct datapath_event *ev, void *arg), void *arg)
{
	int err = ensure_ringbuf(dp);

	if (err)
		return err;
	dp->ev_cb = cb;
	dp->ev_arg = arg;
	err = ring_buffer__consume(dp->rb);
	dp->ev_cb = NULL;
	return err < 0 ? err : 0;
}

const char *datapath_reject_reason_name(int reason)
{
	static const char *const names[MESH_REJECT__COUNT] = {
		[MESH_REJECT_NO_BACKEND] = "no_backend",
		[MESH_REJECT_NO_HEALTHY] = "no_healthy",
		[MESH_REJECT_CIRCUIT_OPEN] = "circuit_open",
		[MESH_REJECT_MAX_CONN] = "max_connections",
	};

	return reason >= 0 && reason < MESH_REJECT__COUNT ? names[reason] : "unknown";
}

const char *datapath_circuit_name(int circuit)
{
	static const char *const names[] = {
		[DATAPATH_CIRCUIT_CLOSED] = "closed",
		[DATAPATH_CIRCUIT_OPEN] = "open",
		[DATAPATH_CIRCUIT_HALF_OPEN] = "half_open",
	};

	return circuit >= 0 && circuit < (int)(sizeof(names) / sizeof(names[0])) ? names[circuit]
										 : "unknown";
}

const char *datapath_counter_name(int counter)
{
	static const char *const names[MESH_CNT__COUNT] = {
		[MESH_CNT_CONNECT] = "connect",
		[MESH_CNT_NOT_SERVICE] = "not_service",
		[MESH_CNT_REDIRECTED] = "redirected",
		[MESH_CNT_PASSTHROUGH] = "passthrough",
		[MESH_CNT_REJECTED] = "rejected",
		[MESH_CNT_PANIC] = "panic",
		[MESH_CNT_OVER_CAP] = "over_ejection_cap",
		[MESH_CNT_PROBE] = "probe",
		[MESH_CNT_ERR_STORAGE] = "err_storage",
		[MESH_CNT_ERR_INTERNAL] = "err_internal",
		[MESH_CNT_ESTABLISHED] = "established",
		[MESH_CNT_FAILED] = "failed",
		[MESH_CNT_CLOSED] = "closed",
		[MESH_CNT_STALE] = "stale",
		[MESH_CNT_FAMILY] = "family_mismatch",
		[MESH_CNT_EVENT_DROP] = "event_drop",
		[MESH_CNT_REENTRY] = "reentry",
		[MESH_CNT_SCAN] = "scan",
		[MESH_CNT_HANDOFF_BUSY] = "handoff_busy",
	};

	return counter >= 0 && counter < MESH_CNT__COUNT ? names[counter] : NULL;
}
