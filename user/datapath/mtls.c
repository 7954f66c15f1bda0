/* The datapath's mTLS maps and programs (bpf/mesh_mtls.h) from userspace: the redirect settings,
 * the cgroup -> identity map, strict_inbound's ports and its sk_lookup program (attached to
 * meshd's network namespace through a pinned link), and a thread-safe handle the proxy threads
 * use to take original destinations, feed breaker outcomes (the mesh_outcome program run with
 * BPF_PROG_TEST_RUN, so the breaker's spin lock is only ever taken in BPF) and list a service's
 * backends for retries. Configuration calls run on the main loop; the handle on any thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "common/log.h"
#include "datapath/internal.h"
#include "mesh.skel.h"

#define STRICT_LINK "link_strict"

int datapath_mtls_set(struct datapath *dp, const struct datapath_mtls_cfg *c)
{
	struct mesh_mtls_cfg v = {
		.outbound_ip4 = c->outbound.addr.v4.s_addr,
		.outbound_port = htons(c->outbound.port),
		.enabled = c->enabled && c->outbound.family == AF_INET,
		.no_identity = (__u8)c->no_identity,
	};
	__u32 zero = 0;

	return bpf_map_update_elem(dp->fd[DP_MAP_MTLS_CFG], &zero, &v, BPF_ANY) ? -errno : 0;
}

/* Deletes every key of a hash map not in keys[0..n) (compared as `ksize` bytes). */
static void prune_hash(int fd, const void *keys, size_t n, size_t ksize)
{
	uint8_t cur[16], next[16];
	void *prev = NULL;

	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		bool keep = false;

		for (size_t i = 0; i < n && !keep; i++)
			keep = !memcmp((const uint8_t *)keys + i * ksize, next, ksize);
		if (!keep && bpf_map_delete_elem(fd, next) == 0)
			continue; /* the next key after a deleted one: start over from prev */
		memcpy(cur, next, ksize);
		prev = cur;
	}
}

int datapath_mtls_identities(struct datapath *dp, const uint64_t *cgroup_ids,
			     const uint32_t *identities, size_t n)
{
	int fd = dp->fd[DP_MAP_IDENTS];

	for (size_t i = 0; i < n; i++)
		if (bpf_map_update_elem(fd, &cgroup_ids[i], &identities[i], BPF_ANY))
			return -errno;
	prune_hash(fd, cgroup_ids, n, sizeof(*cgroup_ids));
	return 0;
}

static int strict_link_path(const struct datapath *dp, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s", dp->pin_path, STRICT_LINK);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Attaches (on) or detaches (off) the sk_lookup program; idempotent through its pin. */
int dp_strict_attach(struct datapath *dp, bool on)
{
	struct bpf_link *link;
	char path[PATH_MAX];
	int fd, ns, err = strict_link_path(dp, path, sizeof(path));

	if (err)
		return err;
	fd = bpf_obj_get(path);
	if (fd >= 0 && on) {
		err =
		    bpf_link_update(fd, bpf_program__fd(dp->skel->progs.mesh_strict_inbound), NULL);
		close(fd);
		return err ? -errno : 0;
	}
	if (fd >= 0) {
		bpf_link_detach(fd);
		close(fd);
		unlink(path);
		return 0;
	}
	if (!on || !dp->skel)
		return 0;
	ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (ns < 0)
		return -errno;
	link = bpf_program__attach_netns(dp->skel->progs.mesh_strict_inbound, ns);
	err = link ? bpf_link__pin(link, path) : -errno;
	bpf_link__destroy(link);
	close(ns);
	return err;
}

int datapath_mtls_strict(struct datapath *dp, const uint16_t *ports, size_t n)
{
	int fd = dp->fd[DP_MAP_STRICT];
	__u8 one = 1;
	int err;

	for (size_t i = 0; i < n; i++)
		if (bpf_map_update_elem(fd, &ports[i], &one, BPF_ANY))
			return -errno;
	prune_hash(fd, ports, n, sizeof(*ports));
	err = dp_strict_attach(dp, n > 0);
	if (err)
		LOG_ERR(DP_SUBSYS, "cannot attach the strict_inbound program", "err=%s",
			log_q(strerror(-err)));
	return err;
}

/* --- the proxy threads' handle ---------------------------------------------------------------- */

struct datapath_mtls {
	int orig, services, slots, backends, be_state, outcome;
};

struct datapath_mtls *datapath_mtls_open(struct datapath *dp)
{
	struct datapath_mtls *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->orig = dup(dp->fd[DP_MAP_MTLS_ORIG]);
	h->services = dup(dp->fd[DP_MAP_SERVICES]);
	h->slots = dup(dp->fd[DP_MAP_SLOTS]);
	h->backends = dup(dp->fd[DP_MAP_BACKENDS]);
	h->be_state = dup(dp->fd[DP_MAP_BE_STATE]);
	h->outcome = dp->skel ? dup(bpf_program__fd(dp->skel->progs.mesh_outcome)) : -1;
	if (h->orig < 0 || h->services < 0 || h->slots < 0 || h->backends < 0 || h->be_state < 0 ||
	    h->outcome < 0) {
		datapath_mtls_close(h);
		errno = EBADF;
		return NULL;
	}
	return h;
}

void datapath_mtls_close(struct datapath_mtls *h)
{
	if (!h)
		return;
	int fds[] = { h->orig, h->services, h->slots, h->backends, h->be_state, h->outcome };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(h);
}

static void mapped(const struct config_endpoint *ep, __u8 out[16])
{
	struct mesh_svc_key k;

	dp_key_from_endpoint(ep, IPPROTO_TCP, &k);
	memcpy(out, k.addr, 16);
}

static void from_key(const struct mesh_svc_key *k, struct config_endpoint *ep)
{
	struct mesh_backend be = { .port = k->port };

	memcpy(be.addr, k->addr, 16);
	dp_endpoint_from_be(&be, ep);
}

int datapath_mtls_take_orig(struct datapath_mtls *h, const struct config_endpoint *client,
			    const struct config_endpoint *local, struct datapath_mtls_orig *out)
{
	struct mesh_mtls_key k = { .client_port = htons(client->port),
				   .local_port = htons(local->port) };
	struct mesh_mtls_orig o;
	struct mesh_backend be = { 0 };

	mapped(client, k.client);
	mapped(local, k.local);
	if (bpf_map_lookup_and_delete_elem(h->orig, &k, &o))
		return -errno;
	from_key(&o.vip, &out->vip);
	memcpy(be.addr, o.backend, 16);
	be.port = o.backend_port;
	dp_endpoint_from_be(&be, &out->backend);
	out->backend_id = o.backend_id;
	out->backend_epoch = o.be_epoch;
	out->identity = o.identity;
	out->probe = o.flags & MESH_ORIG_F_PROBE;
	return 0;
}

int datapath_mtls_outcome(struct datapath_mtls *h, const struct config_endpoint *vip,
			  uint32_t backend_id, uint32_t backend_epoch, bool ok, bool probe,
			  uint64_t rtt_ns)
{
	struct mesh_outcome o = { .backend_id = backend_id,
				  .be_epoch = backend_epoch,
				  .ok = ok,
				  .probe = probe,
				  .rtt_ns = rtt_ns };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = &o, .data_size_in = sizeof(o), .repeat = 1);

	dp_key_from_endpoint(vip, IPPROTO_TCP, &o.vip);
	if (bpf_prog_test_run_opts(h->outcome, &opts))
		return -errno;
	return opts.retval ? -ENOENT : 0;
}

int datapath_mtls_backends(struct datapath_mtls *h, const struct config_endpoint *vip,
			   struct datapath_mtls_backend *out, size_t max)
{
	struct mesh_svc_key key;
	struct mesh_svc svc;
	size_t n = 0;

	dp_key_from_endpoint(vip, IPPROTO_TCP, &key);
	if (bpf_map_lookup_elem(h->services, &key, &svc))
		return -errno;
	for (__u32 i = 0; i < svc.n_backends && i < MESH_MAX_BACKENDS_PER_SVC && n < max; i++) {
		__u32 k = svc.slot_base + i, id;
		struct mesh_backend be;
		struct mesh_be_state st;
		struct mesh_slot slot;

		if (bpf_map_lookup_elem(h->slots, &k, &slot))
			continue;
		id = slot.backend_id;
		if (bpf_map_lookup_elem(h->backends, &id, &be) ||
		    bpf_map_lookup_elem(h->be_state, &id, &st))
			continue;
		dp_endpoint_from_be(&be, &out[n].addr);
		out[n].id = id;
		out[n].epoch = be.epoch;
		out[n].usable = (be.flags & MESH_BE_F_HEALTHY) && st.br.state != MESH_CIRCUIT_OPEN;
		n++;
	}
	return (int)n;
}
