/* Writing services into the maps: id allocation for services and backends (reused as late as
 * possible, with epochs so sockets of a previous owner are never counted against a new one),
 * the backend set update that keeps the ids and state of backends that stay, maglev tables,
 * and recovering the userspace mirror from the pinned maps on adoption. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "common/log.h"
#include "datapath/internal.h"
#include "datapath/maglev.h"

#define DP_DEFAULT_WINDOW_NS 10000000000ull

void dp_key_from_endpoint(const struct config_endpoint *ep, struct mesh_svc_key *key)
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
	key->proto = IPPROTO_TCP;
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

int dp_find_service(const struct datapath *dp, const char *name)
{
	for (uint32_t i = 0; i < dp->svc_hi; i++)
		if (dp->svcs[i].used && !strcmp(dp->svcs[i].name, name))
			return (int)i;
	return -ENOENT;
}

static int find_by_key(const struct datapath *dp, const struct mesh_svc_key *key)
{
	for (uint32_t i = 0; i < dp->svc_hi; i++)
		if (dp->svcs[i].used && !memcmp(&dp->svcs[i].key, key, sizeof(*key)))
			return (int)i;
	return -ENOENT;
}

/* Zeroes one entry of a per-CPU array. */
static int zero_percpu(const struct datapath *dp, int fd, __u32 id, size_t vsize)
{
	size_t len = (size_t)dp->ncpus * ((vsize + 7) & ~(size_t)7);
	void *zero = calloc(1, len);
	int err;

	if (!zero)
		return -ENOMEM;
	err = bpf_map_update_elem(fd, &id, zero, BPF_ANY) ? -errno : 0;
	free(zero);
	return err;
}

/* Takes a free service id and resets its runtime state and counters (new epoch). */
static int svc_alloc(struct datapath *dp)
{
	struct mesh_svc_state ss = { 0 };

	for (uint32_t n = 0; n < MESH_MAX_SERVICES; n++) {
		__u32 id = (dp->svc_cursor + n) % MESH_MAX_SERVICES;

		if (dp->svcs[id].used)
			continue;
		bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_STATE], &id, &ss);
		ss = (struct mesh_svc_state){ .epoch = ss.epoch + 1 };
		if (bpf_map_update_elem(dp->fd[DP_MAP_SVC_STATE], &id, &ss, BPF_ANY))
			return -errno;
		zero_percpu(dp, dp->fd[DP_MAP_SVC_STATS], id, sizeof(struct mesh_svc_stats));
		dp->svc_cursor = id + 1;
		if (id + 1 > dp->svc_hi)
			dp->svc_hi = id + 1;
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

	for (uint32_t n = 0; n < MESH_MAX_BACKENDS; n++) {
		__u32 id = (dp->be_cursor + n) % MESH_MAX_BACKENDS;

		if (id == 0 || dp->be_used[id])
			continue;
		if (bpf_map_update_elem(dp->fd[DP_MAP_BE_STATE], &id, &bs, BPF_F_LOCK))
			return -errno;
		zero_percpu(dp, dp->fd[DP_MAP_BE_STATS], id, sizeof(struct mesh_be_stats));
		dp->be_used[id] = 1;
		dp->be[id].epoch++;
		dp->be_cursor = id + 1;
		if (id + 1 > dp->be_hi)
			dp->be_hi = id + 1;
		return (int)id;
	}
	return -ENOSPC;
}

static void be_free(struct datapath *dp, __u32 id)
{
	dp->be_used[id] = 0; /* state stays until reuse: closing sockets still count down */
}

static int be_write(struct datapath *dp, __u32 id)
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
	v->flags =
	    lb->no_healthy_backend == MESH_NO_HEALTHY_PASSTHROUGH ? MESH_SVC_F_PASSTHROUGH : 0;
	v->choice_count = (__u8)(lb->choice_count > 255 ? 255 : lb->choice_count);
	v->max_connections = cb->max_connections;
	v->max_ejection_percent =
	    (__u8)(cb->max_ejection_percent > 100 ? 100 : cb->max_ejection_percent);
	v->panic_percent = (__u8)lround(panic * 100);
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

	dp_key_from_endpoint(&cb->endpoint, &k);
	memcpy(be->addr, k.addr, sizeof(be->addr));
	be->port = k.port;
	be->weight = cb->weight ? cb->weight : 1;
}

/* The id of the backend of service `old` at `be`'s address, or 0. */
static __u32 find_backend(const struct datapath *dp, const struct mesh_svc *old,
			  const struct mesh_backend *be)
{
	for (__u32 i = 0; i < old->n_backends; i++) {
		const struct mesh_backend *o = &dp->be[old->backend_ids[i]];

		if (!memcmp(o->addr, be->addr, 16) && o->port == be->port)
			return old->backend_ids[i];
	}
	return 0;
}

static int check_service(const struct config_service *svc)
{
	if (!svc->name || !svc->name[0] || strlen(svc->name) >= MESH_SVC_NAME_MAX)
		return -EINVAL;
	if (svc->n_backends > MESH_MAX_BACKENDS_PER_SVC)
		return -E2BIG;
	if (svc->vip.family != AF_INET && svc->vip.family != AF_INET6)
		return -EAFNOSUPPORT;
	if ((unsigned)svc->load_balancer.algorithm >= MESH_LB__COUNT)
		return -EINVAL;
	for (size_t i = 0; i < svc->n_backends; i++) {
		struct mesh_svc_key a, b;

		dp_key_from_endpoint(&svc->backends[i].endpoint, &a);
		for (size_t j = 0; j < i; j++) {
			dp_key_from_endpoint(&svc->backends[j].endpoint, &b);
			if (!memcmp(&a, &b, sizeof(a)))
				return -EINVAL; /* duplicate backend */
		}
	}
	return 0;
}

/* Maps every configured backend to an id (the old one for backends that stay) and writes its
 * configuration. Newly allocated ids are released on error. */
static int assign_backends(struct datapath *dp, const struct config_service *svc, __u32 sid,
			   const struct mesh_svc *old, struct mesh_svc *v)
{
	int err = 0;

	for (size_t i = 0; i < svc->n_backends; i++) {
		struct mesh_backend be = { 0 };
		__u32 id;

		be_from_config(&be, &svc->backends[i]);
		id = old ? find_backend(dp, old, &be) : 0;
		if (id) {
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
		v->backend_ids[i] = id;
		v->n_backends = (__u8)(i + 1);
		err = be_write(dp, id);
		if (err)
			break;
	}
	if (err)
		for (__u32 i = 0; i < v->n_backends; i++)
			if (!old || !find_backend(dp, old, &dp->be[v->backend_ids[i]]))
				be_free(dp, v->backend_ids[i]);
	return err;
}

/* What the kernel's no-scan path needs to know of a service's backends: which are healthy (and
 * how many), and MESH_SVC_F_SAME_FAMILY when every backend is reachable by every connect to the
 * VIP (those to an IPv4 VIP are IPv4: v4-mapped backends only). */
static void backend_summary(const struct datapath *dp, struct mesh_svc *v,
			    const struct mesh_svc_key *vip)
{
	bool v4 = addr_is_v4mapped(vip->addr), same = true;

	v->n_healthy = 0;
	v->healthy_mask = 0;
	for (__u32 i = 0; i < v->n_backends; i++) {
		const struct mesh_backend *be = &dp->be[v->backend_ids[i]];

		if (be->flags & MESH_BE_F_HEALTHY) {
			v->healthy_slots[v->n_healthy++] = (__u8)i;
			v->healthy_mask |= 1ULL << i;
		}
		same = same && (!v4 || addr_is_v4mapped(be->addr));
	}
	v->flags =
	    (__u8)((v->flags & ~MESH_SVC_F_SAME_FAMILY) | (same ? MESH_SVC_F_SAME_FAMILY : 0));
}

/* Rewrites a published service whose health summary changed (same generation: the backend set
 * is unchanged). */
static int refresh_summary(struct datapath *dp, struct dp_service *s)
{
	struct mesh_svc v = s->val;

	backend_summary(dp, &v, &s->key);
	if (v.flags == s->val.flags && v.healthy_mask == s->val.healthy_mask)
		return 0;
	if (bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], &s->key, &v, BPF_EXIST))
		return -errno;
	s->val = v;
	return 0;
}

/* Writes the maglev table the next generation of service `v` will read. */
static int write_maglev(struct datapath *dp, const struct mesh_svc *v)
{
	char keys[MESH_MAX_BACKENDS_PER_SVC][64];
	const char *kp[MESH_MAX_BACKENDS_PER_SVC];
	__u32 key = v->service_id * 2 + (v->generation & 1);
	uint8_t *table;
	int err;

	if (v->algorithm != MESH_LB_MAGLEV || v->n_backends == 0)
		return 0;
	for (__u32 i = 0; i < v->n_backends; i++) {
		const struct mesh_backend *be = &dp->be[v->backend_ids[i]];
		char ip[INET6_ADDRSTRLEN];

		inet_ntop(AF_INET6, be->addr, ip, sizeof(ip));
		snprintf(keys[i], sizeof(keys[i]), "[%s]:%u", ip, ntohs(be->port));
		kp[i] = keys[i];
	}
	table = malloc(MESH_MAGLEV_M);
	if (!table)
		return -ENOMEM;
	err = maglev_fill(table, MESH_MAGLEV_M, kp, v->n_backends);
	if (!err && bpf_map_update_elem(dp->fd[DP_MAP_MAGLEV], &key, table, BPF_ANY))
		err = -errno;
	free(table);
	return err;
}

static void release_old(struct datapath *dp, const struct mesh_svc *old, const struct mesh_svc *v)
{
	for (__u32 i = 0; i < old->n_backends; i++) {
		__u32 id = old->backend_ids[i], keep = 0;

		for (__u32 j = 0; j < v->n_backends && !keep; j++)
			keep = v->backend_ids[j] == id;
		if (!keep)
			be_free(dp, id);
	}
}

/* Publishes the service value (one hash update: connects see the old or the new set) and its
 * name record, then retires what the previous version used. */
static int publish(struct datapath *dp, struct dp_service *s, const struct dp_service *old,
		   const struct mesh_svc *v, const struct mesh_svc_key *key)
{
	struct mesh_svc_name rec = { 0 };
	__u32 sid = v->service_id, mkey;

	if (bpf_map_update_elem(dp->fd[DP_MAP_SERVICES], key, v, BPF_ANY))
		return -errno;
	snprintf(rec.name, sizeof(rec.name), "%s", s->name);
	rec.key = *key;
	if (bpf_map_update_elem(dp->fd[DP_MAP_SVC_NAMES], &sid, &rec, BPF_ANY))
		LOG_WARN(DP_SUBSYS, "name record not written", "service=%s", log_q(s->name));
	if (old->used && memcmp(&old->key, key, sizeof(*key)))
		bpf_map_delete_elem(dp->fd[DP_MAP_SERVICES], &old->key);
	if (old->used)
		release_old(dp, &old->val, v);
	if (v->algorithm != MESH_LB_MAGLEV || v->n_backends == 0) {
		/* The previous generation's table stays while maglev is on: a connect may still
		 * hold the old service value. */
		for (__u32 g = 0; g < 2; g++) {
			mkey = sid * 2 + g;
			bpf_map_delete_elem(dp->fd[DP_MAP_MAGLEV], &mkey);
		}
	}
	s->key = *key;
	s->val = *v;
	s->used = true;
	return 0;
}

int datapath_service_set(struct datapath *dp, const struct config_service *svc)
{
	struct dp_service old = { 0 }, *s;
	struct mesh_svc_key key;
	struct mesh_svc v = { 0 };
	int id, other, err;

	err = check_service(svc);
	if (err)
		return err;
	dp_key_from_endpoint(&svc->vip, &key);
	id = dp_find_service(dp, svc->name);
	other = find_by_key(dp, &key);
	if (other >= 0 && other != id)
		return -EEXIST; /* another service owns this address */
	if (id < 0)
		id = svc_alloc(dp);
	if (id < 0)
		return id;
	s = &dp->svcs[id];
	old = *s;
	snprintf(s->name, sizeof(s->name), "%s", svc->name);
	fill_value(&v, svc);
	v.service_id = (__u32)id;
	v.epoch = old.val.epoch;
	v.generation = old.val.generation + 1;
	err = assign_backends(dp, svc, (__u32)id, old.used ? &old.val : NULL, &v);
	if (!err) {
		backend_summary(dp, &v, &key);
		err = write_maglev(dp, &v);
	}
	if (!err)
		err = publish(dp, s, &old, &v, &key);
	if (err) {
		LOG_ERR(DP_SUBSYS, "service update failed", "service=%s err=%s", log_q(svc->name),
			strerror(-err));
		if (!old.used)
			memset(s, 0, sizeof(*s)); /* id returns to the pool */
		return err;
	}
	LOG_DEBUG(DP_SUBSYS, "service written", "service=%s id=%d backends=%zu generation=%u",
		  log_q(svc->name), id, svc->n_backends, v.generation);
	return 0;
}

int datapath_service_del(struct datapath *dp, const char *name)
{
	int id = dp_find_service(dp, name);
	struct dp_service *s;
	__u32 sid, mkey;

	if (id < 0)
		return -ENOENT;
	s = &dp->svcs[id];
	sid = (__u32)id;
	if (bpf_map_delete_elem(dp->fd[DP_MAP_SERVICES], &s->key) && errno != ENOENT)
		return -errno;
	bpf_map_delete_elem(dp->fd[DP_MAP_SVC_NAMES], &sid);
	for (int g = 0; g < 2; g++) {
		mkey = sid * 2 + (__u32)g;
		bpf_map_delete_elem(dp->fd[DP_MAP_MAGLEV], &mkey);
	}
	for (__u32 i = 0; i < s->val.n_backends; i++)
		be_free(dp, s->val.backend_ids[i]);
	LOG_DEBUG(DP_SUBSYS, "service removed", "service=%s", log_q(name));
	memset(s, 0, sizeof(*s));
	return 0;
}

int datapath_service_prune(struct datapath *dp, const char *const *keep, size_t n_keep)
{
	int err = 0;

	for (uint32_t i = 0; i < dp->svc_hi; i++) {
		bool kept = false;

		if (!dp->svcs[i].used)
			continue;
		for (size_t k = 0; k < n_keep && !kept; k++)
			kept = !strcmp(keep[k], dp->svcs[i].name);
		if (!kept) {
			char name[MESH_SVC_NAME_MAX];

			snprintf(name, sizeof(name), "%s", dp->svcs[i].name);
			int r = datapath_service_del(dp, name);

			if (r && !err)
				err = r;
		}
	}
	return err;
}

int datapath_backend_set_health(struct datapath *dp, const char *service,
				const struct config_endpoint *backend, bool healthy)
{
	struct config_backend cb = { .endpoint = *backend };
	struct mesh_backend probe = { 0 };
	int id = dp_find_service(dp, service);
	__u32 be;
	int err;

	if (id < 0)
		return -ENOENT;
	be_from_config(&probe, &cb);
	be = find_backend(dp, &dp->svcs[id].val, &probe);
	if (!be)
		return -ENOENT;
	if (!(dp->be[be].flags & MESH_BE_F_HEALTHY) == !healthy)
		return 0; /* as it is: meshd re-asserts every backend after each service write */
	/* Going down, the service's healthy count drops before the backend is marked; coming up,
	 * the backend is marked first. */
	if (healthy) {
		dp->be[be].flags |= MESH_BE_F_HEALTHY;
		err = be_write(dp, be);
		return err ? err : refresh_summary(dp, &dp->svcs[id]);
	}
	dp->be[be].flags &= (__u8)~MESH_BE_F_HEALTHY;
	err = refresh_summary(dp, &dp->svcs[id]);
	return err ? err : be_write(dp, be);
}

/* Loads one service and its backends from the pinned maps into the mirror. */
static int load_one(struct datapath *dp, __u32 sid, const struct mesh_svc_name *rec)
{
	struct dp_service *s = &dp->svcs[sid];
	struct mesh_svc_state ss = { 0 };

	if (bpf_map_lookup_elem(dp->fd[DP_MAP_SERVICES], &rec->key, &s->val) ||
	    s->val.service_id != sid || s->val.n_backends > MESH_MAX_BACKENDS_PER_SVC)
		return -ENOENT;
	bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_STATE], &sid, &ss);
	s->val.epoch = ss.epoch;
	snprintf(s->name, sizeof(s->name), "%.*s", MESH_SVC_NAME_MAX - 1, rec->name);
	s->key = rec->key;
	s->used = true;
	for (__u32 i = 0; i < s->val.n_backends; i++) {
		__u32 id = s->val.backend_ids[i];

		if (id == 0 || id >= MESH_MAX_BACKENDS)
			continue;
		dp->be_used[id] = 1;
		if (id + 1 > dp->be_hi)
			dp->be_hi = id + 1;
	}
	if (sid + 1 > dp->svc_hi)
		dp->svc_hi = sid + 1;
	return 0;
}

int dp_services_load(struct datapath *dp)
{
	__u32 key, next, *prev = NULL, n = 0;
	struct mesh_svc_name rec;

	/* Backend configuration (with epochs) for every id, services from their name records. */
	int err = dp_read_array(dp, DP_MAP_BACKENDS, MESH_MAX_BACKENDS, sizeof(*dp->be), dp->be, 0);

	if (err)
		return err;
	while (!bpf_map_get_next_key(dp->fd[DP_MAP_SVC_NAMES], prev, &next)) {
		key = next;
		prev = &key;
		if (key >= MESH_MAX_SERVICES ||
		    bpf_map_lookup_elem(dp->fd[DP_MAP_SVC_NAMES], &key, &rec))
			continue;
		if (load_one(dp, key, &rec) == 0)
			n++;
	}
	dp->svc_cursor = dp->svc_hi % MESH_MAX_SERVICES;
	dp->be_cursor = dp->be_hi % MESH_MAX_BACKENDS;
	LOG_INFO(DP_SUBSYS, "recovered services from pinned maps", "services=%u", n);
	return 0;
}
