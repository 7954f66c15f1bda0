/* Reading the datapath: per-service and per-backend snapshots from batch lookups of the arrays
 * (per-CPU counters summed here), the global decision counters, and the ring buffer of breaker
 * transitions and rejects decoded with the names of the userspace mirror. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/log.h"
#include "datapath/internal.h"

#define DP_BATCH 4096 /* entries per batch lookup, and per chunk of a stats read */

static size_t round8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

int dp_read_array(const struct datapath *dp, int fd, bool percpu, __u32 first, __u32 n,
		  size_t vsize, void *out, __u64 elem_flags)
{
	size_t stride = percpu ? (size_t)dp->ncpus * round8(vsize) : vsize;
	LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = elem_flags);
	__u32 in = first - 1, next = 0, done = 0; /* in: the key before the batch (generic) */
	__u32 *keys;
	int err = 0;

	keys = malloc(DP_BATCH * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	while (done < n) {
		__u32 cnt = n - done < DP_BATCH ? n - done : DP_BATCH;

		/* A batch starts at the key after `in`, or at key 0 without one. */
		err = bpf_map_lookup_batch(fd, first + done ? &in : NULL, &next, keys,
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

static void report_service(const struct datapath *dp, __u32 sid, const struct mesh_svc_state *ss,
			   void (*cb)(const struct datapath_service_stats *s, void *arg), void *arg)
{
	const struct dp_service *s = &dp->svcs[sid];
	bool mine = ss->epoch == s->val.epoch;
	struct datapath_service_stats out = {
		.service = s->name,
		.bytes_sent = ss->bytes_sent,
		.bytes_received = ss->bytes_received,
		.passthrough = ss->passthrough,
		.service_id = sid,
		.algorithm = s->val.algorithm,
		.n_backends = s->val.n_backends,
		.active = mine ? ss->active : 0,
		.redirected = ss->redirected,
		.panic = ss->panic,
		.protocol = s->key.proto,
		.datagrams_sent = ss->dgrams_sent,
		.datagrams_received = ss->dgrams_received,
		.drained = mine ? ss->drained : 0,
		.panic_percent = s->val.panic_percent,
	};
	struct mesh_backend vip = { .port = s->key.port };

	struct datapath_subset_stats subsets[MESH_SPLIT_MAX];

	memcpy(vip.addr, s->key.addr, 16);
	dp_endpoint_from_be(&vip, &out.vip);
	for (int r = 0; r < MESH_REJECT__COUNT; r++)
		out.rejects[r] = ss->rejects[r];
	if (s->split) {
		out.n_subsets = dp_split_stats(dp, s, subsets);
		out.subsets = subsets;
	}
	cb(&out, arg);
}

static void report_backend(const struct datapath *dp, const struct dp_service *s, __u32 id,
			   const struct mesh_be_state *st, const struct mesh_be_hot *hot,
			   void (*cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	const struct mesh_backend *be = &dp->be[id];
	struct datapath_backend_stats out = {
		.service = s->name,
		.weight = be->weight,
		.healthy = be->flags & MESH_BE_F_HEALTHY,
		.circuit = (enum datapath_circuit)st->br.state,
		.active = hot->active > 0 ? (uint64_t)hot->active : 0,
		.conn_ok = st->ok,
		.conn_failed = st->failed,
		.latency_ewma_ns = st->latency_ewma_ns,
		.consecutive_failures = st->br.consecutive,
		.open_until_ns = st->br.state == MESH_CIRCUIT_OPEN ? st->br.open_until_ns : 0,
		.backend_id = id,
		.trips = st->br.trips,
		.selected = hot->selected,
		.probes = st->probes,
		.bytes_sent = st->bytes_sent,
		.bytes_received = st->bytes_received,
		.drained = st->drained,
	};

	dp_endpoint_from_be(be, &out.backend);
	for (int i = 0; i < 3; i++)
		out.transitions_to[i] = st->transitions[i];
	cb(&out, arg);
}

/* Reports the services of ids [first, first + n) (n <= DP_BATCH) from one batch read into `st`. */
static int svc_range(struct datapath *dp, __u32 first, __u32 n, struct mesh_svc_state *st,
		     void (*cb)(const struct datapath_service_stats *s, void *arg), void *arg)
{
	int err = dp_read_array(dp, dp->fd[DP_MAP_SVC_STATE], false, first, n, sizeof(*st), st, 0);

	for (__u32 i = 0; !err && i < n; i++)
		if (dp->svcs[first + i].used)
			report_service(dp, first + i, &st[i], cb, arg);
	return err;
}

/* Reports the backends services use now among ids [first, first + n) (n <= DP_BATCH). */
static int be_range(struct datapath *dp, __u32 first, __u32 n, struct mesh_be_state *st,
		    void (*cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	struct mesh_be_hot *hot = calloc(n, sizeof(*hot));
	int err = hot ? 0 : -ENOMEM;

	err = err
		  ?: dp_read_array(dp, dp->fd[DP_MAP_BE_STATE], false, first, n, sizeof(*st), st,
				   BPF_F_LOCK);
	err =
	    err ?: dp_read_array(dp, dp->fd[DP_MAP_BE_HOT], false, first, n, sizeof(*hot), hot, 0);
	for (__u32 i = 0; !err && i < n; i++) {
		__u32 id = first + i, sid = dp->be[id].service_id;

		if (id && dp->be_used[id] && sid < dp->max_services && dp->svcs[sid].used)
			report_backend(dp, &dp->svcs[sid], id, &st[i], &hot[i], cb, arg);
	}
	free(hot);
	return err;
}

/* One step of at most `max` ids of the current phase; an empty phase ends at once. */
static int stats_step(struct datapath *dp, struct datapath_stats_cursor *cur, __u32 max,
		      void (*svc_cb)(const struct datapath_service_stats *s, void *arg),
		      void (*be_cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	__u32 hi = cur->phase == 0 ? (svc_cb ? dp->svc_hi : 0) : (be_cb ? dp->be_hi : 0);
	__u32 n = cur->next < hi ? hi - cur->next : 0;
	void *st;
	int err;

	if (max > DP_BATCH)
		max = DP_BATCH;
	if (n > max)
		n = max;
	if (!n) {
		cur->phase++;
		cur->next = 0;
		return 0;
	}
	st = calloc(n,
		    cur->phase == 0 ? sizeof(struct mesh_svc_state) : sizeof(struct mesh_be_state));
	if (!st)
		return -ENOMEM;
	err = cur->phase == 0 ? svc_range(dp, cur->next, n, st, svc_cb, arg)
			      : be_range(dp, cur->next, n, st, be_cb, arg);
	free(st);
	cur->next += n;
	return err;
}

int datapath_stats_step(struct datapath *dp, struct datapath_stats_cursor *cur, uint32_t max,
			void (*svc_cb)(const struct datapath_service_stats *s, void *arg),
			void (*be_cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	int err = 0;

	/* A phase with nothing left ends without costing a step of its own. */
	while (!err && cur->phase < 2) {
		int phase = cur->phase;

		err = stats_step(dp, cur, max ? max : 1, svc_cb, be_cb, arg);
		if (cur->phase == phase)
			break;
	}
	if (err)
		LOG_WARN(DP_SUBSYS, "reading counters failed", "err=%s", strerror(-err));
	return err ? err : cur->phase < 2;
}

int datapath_stats(struct datapath *dp,
		   void (*svc_cb)(const struct datapath_service_stats *s, void *arg),
		   void (*be_cb)(const struct datapath_backend_stats *b, void *arg), void *arg)
{
	struct datapath_stats_cursor cur = { 0 };
	int rc;

	do
		rc = datapath_stats_step(dp, &cur, DP_BATCH, svc_cb, be_cb, arg);
	while (rc == 1);
	return rc;
}

int datapath_counters(struct datapath *dp, uint64_t *out, size_t n)
{
	__u64 *pc = calloc((size_t)MESH_CNT__COUNT * dp->ncpus, sizeof(__u64));
	int err;

	if (!pc)
		return -ENOMEM;
	err = dp_read_array(dp, dp->fd[DP_MAP_COUNTERS], true, 0, MESH_CNT__COUNT, sizeof(__u64),
			    pc, 0);
	for (size_t i = 0; !err && i < n && i < MESH_CNT__COUNT; i++) {
		out[i] = 0;
		for (int c = 0; c < dp->ncpus; c++)
			out[i] += pc[i * dp->ncpus + c];
	}
	free(pc);
	return err ? err : (int)(n < MESH_CNT__COUNT ? n : MESH_CNT__COUNT);
}

/* An ABI address (IPv6, IPv4 v4-mapped) and a host-order port as an endpoint. */
static void endpoint_of(const __u8 addr[16], __u16 port, struct config_endpoint *ep)
{
	struct mesh_backend b = { .port = htons(port) };

	memcpy(b.addr, addr, 16);
	dp_endpoint_from_be(&b, ep);
}

static void decode_conn(const struct mesh_conn_event *c, struct datapath_event *ev)
{
	struct mesh_backend vip = { .port = c->vip.port };

	memcpy(vip.addr, c->vip.addr, 16);
	dp_endpoint_from_be(&vip, &ev->vip);
	endpoint_of(c->local, c->local_port, &ev->conn.local);
	endpoint_of(c->remote, c->remote_port, &ev->conn.remote);
	ev->conn.failed = c->result != 0;
	ev->conn.probe = c->flags & MESH_CONN_F_PROBE;
	ev->conn.breaker_moved = c->flags & MESH_CONN_F_BREAKER;
	ev->conn.sampled = c->flags & MESH_CONN_F_SAMPLED;
	ev->conn.breaker = (enum datapath_circuit)c->breaker;
	ev->conn.start_ns = c->start_ns;
	ev->conn.est_ns = c->est_ns;
	ev->conn.bytes_sent = c->bytes_sent;
	ev->conn.bytes_received = c->bytes_received;
}

static int on_event(void *ctx, void *data, size_t len)
{
	struct datapath *dp = ctx;
	const struct mesh_event *e = data;
	struct datapath_event ev = { 0 };
	const struct dp_service *s;

	if (len < sizeof(*e) || !dp->ev_cb)
		return 0;
	if (e->type == MESH_EV_CONN && len < sizeof(struct mesh_conn_event))
		return 0;
	ev.type = (int)e->type;
	ev.ts_ns = e->ts_ns;
	s = e->service_id < dp->max_services && dp->svcs[e->service_id].used
		? &dp->svcs[e->service_id]
		: NULL;
	ev.service = s ? s->name : "";
	if (s) {
		struct mesh_backend vip = { .port = s->key.port };

		memcpy(vip.addr, s->key.addr, 16);
		dp_endpoint_from_be(&vip, &ev.vip);
	}
	if (e->backend_id && e->backend_id < dp->max_backends)
		dp_endpoint_from_be(&dp->be[e->backend_id], &ev.backend);
	if (e->type == MESH_EV_CONN) {
		decode_conn(data, &ev);
	} else {
		ev.from = (enum datapath_circuit)e->from;
		ev.to = (enum datapath_circuit)e->to;
		ev.reason = e->reason;
	}
	dp->ev_cb(&ev, dp->ev_arg);
	return 0;
}

int datapath_set_tracing(struct datapath *dp, bool enabled, double sample_ratio)
{
	struct mesh_trace_cfg t = { .enabled = enabled };
	__u32 zero = 0;

	if (sample_ratio < 0 || sample_ratio > 1)
		return -EINVAL;
	t.sample_threshold = (__u64)(sample_ratio * 4294967296.0);
	if (bpf_map_update_elem(dp->fd[DP_MAP_TRACE], &zero, &t, BPF_ANY))
		return -errno;
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

_Static_assert(MESH_CNT__COUNT == 37, "name every counter below");

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
		[MESH_CNT_REDRAW] = "redraw",
		[MESH_CNT_UDP_CONNECT] = "udp_connect",
		[MESH_CNT_UDP_SENDMSG] = "udp_sendmsg",
		[MESH_CNT_UDP_STICKY] = "udp_sticky",
		[MESH_CNT_UDP_REVERSE] = "udp_reverse",
		[MESH_CNT_DRAINED] = "drained",
		[MESH_CNT_MTLS] = "mtls",
		[MESH_CNT_MTLS_REFUSED] = "mtls_no_identity_refused",
		[MESH_CNT_MTLS_PLAIN] = "mtls_no_identity_plaintext",
		[MESH_CNT_MTLS_MESHD] = "mtls_meshd_socket",
		[MESH_CNT_MTLS_ORIG] = "mtls_orig_recorded",
		[MESH_CNT_MTLS_ORIG_ERR] = "mtls_orig_error",
		[MESH_CNT_STRICT_DROP] = "strict_inbound_refused",
		[MESH_CNT_OUTCOME] = "mtls_outcome",
		[MESH_CNT_TRACE_EVENT] = "trace_event",
		[MESH_CNT_TRACE_DROP] = "trace_drop",
		[MESH_CNT_SPLIT] = "split",
		[MESH_CNT_SPLIT_FALLBACK] = "split_fallback",
	};

	return counter >= 0 && counter < MESH_CNT__COUNT ? names[counter] : NULL;
}
