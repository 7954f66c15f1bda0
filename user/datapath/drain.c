/* Drains: closing the established connections of backends that left their service (after the
 * service's close_removed_after), or whose breaker opened (close_on_open). A pass writes the
 * backends (id and epoch, so a reused id is never drained) into mesh_drain and reads a TCP
 * socket iterator running mesh_drain_iter, which aborts the sockets whose decision names one
 * (bpf_sock_destroy). The iterator walks the sockets of meshd's network namespace. Loop thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/log.h"
#include "datapath/internal.h"

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void dp_drain_schedule(struct datapath *dp, __u32 id, __u32 sid, uint64_t after_ns)
{
	if (!after_ns || !dp->drain_prog)
		return;
	if (dp->n_drains == dp->cap_drains) {
		uint32_t cap = dp->cap_drains ? 2 * dp->cap_drains : 64;
		struct dp_drain *d = realloc(dp->drains, cap * sizeof(*d));

		if (!d) {
			LOG_WARN(DP_SUBSYS, "drain not scheduled: out of memory", "backend_id=%u",
				 id);
			return;
		}
		dp->drains = d;
		dp->cap_drains = cap;
	}
	dp->drains[dp->n_drains++] =
	    (struct dp_drain){ id, dp->be[id].epoch, sid, mono_ns() + after_ns };
}

/* Runs the iterator once over every TCP socket. */
static int run_iterator(struct datapath *dp)
{
	struct bpf_link *link = bpf_program__attach_iter(dp->drain_prog, NULL);
	char buf[256];
	int fd, err = 0;

	if (!link)
		return -errno;
	fd = bpf_iter_create(bpf_link__fd(link));
	if (fd < 0)
		err = -errno;
	while (fd >= 0 && (err = (int)read(fd, buf, sizeof(buf))) > 0)
		;
	if (err < 0)
		err = -errno;
	if (fd >= 0)
		close(fd);
	bpf_link__destroy(link);
	return err;
}

/* One pass over the backends `keys` (at most MESH_DRAIN_MAX). Returns connections closed or
 * -errno. */
static int64_t drain_pass(struct datapath *dp, const struct mesh_drain_key *keys, uint32_t n)
{
	int64_t closed = 0;
	__u64 zero = 0, c;
	int err = 0;

	for (uint32_t i = 0; i < n && !err; i++)
		if (bpf_map_update_elem(dp->fd[DP_MAP_DRAIN], &keys[i], &zero, BPF_ANY))
			err = -errno;
	if (!err)
		err = run_iterator(dp);
	for (uint32_t i = 0; i < n; i++) {
		if (!bpf_map_lookup_elem(dp->fd[DP_MAP_DRAIN], &keys[i], &c))
			closed += (int64_t)c;
		bpf_map_delete_elem(dp->fd[DP_MAP_DRAIN], &keys[i]);
	}
	return err ? err : closed;
}

int datapath_drain_due(struct datapath *dp, uint64_t *next_ns, uint64_t *closed)
{
	struct mesh_drain_key keys[64];
	uint64_t now = mono_ns();
	uint32_t n = 0, i = 0;
	int64_t r = 0;

	*next_ns = 0;
	*closed = 0;
	while (i < dp->n_drains) {
		struct dp_drain *d = &dp->drains[i];

		if (d->due_ns > now || n == sizeof(keys) / sizeof(keys[0])) {
			if (!*next_ns || d->due_ns < *next_ns)
				*next_ns = d->due_ns;
			i++;
			continue;
		}
		keys[n++] = (struct mesh_drain_key){ d->id, d->epoch };
		*d = dp->drains[--dp->n_drains]; /* swap-remove; look at the new i next */
	}
	if (n)
		r = drain_pass(dp, keys, n);
	if (r < 0) {
		LOG_WARN(DP_SUBSYS, "drain failed", "backends=%u err=%s", n, strerror((int)-r));
		return (int)r;
	}
	*closed = (uint64_t)r;
	if (n)
		LOG_INFO(DP_SUBSYS, "drained removed backends", "backends=%u closed=%llu", n,
			 (unsigned long long)r);
	return 0;
}

int datapath_drain_backend(struct datapath *dp, const char *service,
			   const struct config_endpoint *backend, uint64_t *closed)
{
	int sid = dp_find_service(dp, service);
	struct mesh_backend want = { 0 };
	struct mesh_svc_key k;
	int64_t r;

	*closed = 0;
	if (sid < 0)
		return -ENOENT;
	if (!dp->drain_prog)
		return -EOPNOTSUPP;
	dp_key_from_endpoint(backend, IPPROTO_TCP, &k);
	memcpy(want.addr, k.addr, 16);
	want.port = k.port;
	for (__u32 i = 0; i < dp->svcs[sid].val.n_backends; i++) {
		__u32 id = dp->svcs[sid].ids[i];
		struct mesh_drain_key key = { id, dp->be[id].epoch };

		if (memcmp(dp->be[id].addr, want.addr, 16) || dp->be[id].port != want.port)
			continue;
		r = drain_pass(dp, &key, 1);
		if (r < 0)
			return (int)r;
		*closed = (uint64_t)r;
		return 0;
	}
	return -ENOENT;
}

bool datapath_service_closes_on_open(const struct datapath *dp, const char *service)
{
	int sid = dp_find_service(dp, service);

	return sid >= 0 && dp->svcs[sid].close_on_open;
}
