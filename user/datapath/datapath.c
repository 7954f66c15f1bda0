/* Datapath lifecycle: load or adopt the pinned BPF object, check its ABI version, attach the
 * programs to one cgroup through pinned bpf_links (so they outlive the daemon and are never
 * attached twice), and clean everything up on request. The only file including the skeleton's
 * open/load/attach calls. Runs on meshd's event-loop thread. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "common/log.h"
#include "datapath/internal.h"
#include "mesh.skel.h"

const char *const dp_map_names[DP_MAP__COUNT] = {
	[DP_MAP_ABI] = "mesh_abi",
	[DP_MAP_SERVICES] = "mesh_services",
	[DP_MAP_SVC_NAMES] = "mesh_svc_names",
	[DP_MAP_SVC_STATE] = "mesh_svc_state",
	[DP_MAP_SLOTS] = "mesh_slots",
	[DP_MAP_BACKENDS] = "mesh_backends",
	[DP_MAP_BE_STATE] = "mesh_be_state",
	[DP_MAP_BE_HOT] = "mesh_be_hot",
	[DP_MAP_COUNTERS] = "mesh_counters",
	[DP_MAP_EVENTS] = "mesh_events",
	[DP_MAP_MAGLEV] = "mesh_maglev",
	[DP_MAP_SCRATCH] = "mesh_scratch",
	[DP_MAP_HANDOFF] = "mesh_handoff",
	[DP_MAP_SOCKETS] = "mesh_sockets",
	[DP_MAP_RNG] = "mesh_rng",
	[DP_MAP_ADJUST] = "mesh_adjust_in",
	[DP_MAP_DRAIN] = "mesh_drain",
	[DP_MAP_MTLS_CFG] = "mesh_mtls_cfg",
	[DP_MAP_IDENTS] = "mesh_idents",
	[DP_MAP_MTLS_ORIG] = "mesh_mtls_orig",
	[DP_MAP_STRICT] = "mesh_strict",
	[DP_MAP_TRACE] = "mesh_trace",
	[DP_MAP_TRACE_RING] = "mesh_trace_ring",
	[DP_MAP_BE_EWMA] = "mesh_be_ewma",
	[DP_MAP_SPLIT] = "mesh_split",
	[DP_MAP_SPLIT_CNT] = "mesh_split_cnt",
	[DP_MAP_SPLIT_FAST] = "mesh_split_fast",
};

/* Programs and the names their links are pinned under. */
struct dp_link {
	const char *prog;
	const char *link;
};
static const struct dp_link dp_links[] = {
	/* In this order on an upgrade: the readers of a socket's decision that know where this
	 * build's sockops keeps it (its hand-off slot, which an older build's did not) before that
	 * sockops; sockops before the connect programs, so that the counting moves to the new
	 * maps (migrate.c) before those start deciding from them. */
	{ "mesh_getpeername4", "link_getpeer4" },     { "mesh_getpeername6", "link_getpeer6" },
	{ "mesh_sock_release", "link_sock_release" }, { "mesh_sockops", "link_sockops" },
	{ "mesh_connect4", "link_connect4" },	      { "mesh_connect6", "link_connect6" },
	{ "mesh_sendmsg4", "link_sendmsg4" },	      { "mesh_sendmsg6", "link_sendmsg6" },
	{ "mesh_recvmsg4", "link_recvmsg4" },	      { "mesh_recvmsg6", "link_recvmsg6" },
};
#define DP_N_LINKS (sizeof(dp_links) / sizeof(dp_links[0]))
/* Attached only while a UDP service exists (dp_udp_sync): they count UDP services' datagrams,
 * and every packet of every socket in the cgroup runs them (~60 ns each, 4-10 packets per TCP
 * connection). */
static const struct dp_link dp_udp_links[] = {
	{ "mesh_skb_out", "link_skb_out" },
	{ "mesh_skb_in", "link_skb_in" },
};

static int pin_file(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Reads the pinned ABI record into `info` (zero when absent). Returns 1 when it matches this
 * build (and, when `dp` asks for capacities, has them; readers take any), 0 when nothing is
 * pinned, -ESTALE when something is pinned but of another layout or capacity (or unreadable). */
static int abi_check(const char *pin_path, struct datapath *dp, bool any_capacity,
		     struct mesh_abi_info *out)
{
	struct mesh_abi_info info = { 0 };
	char path[PATH_MAX];
	__u32 zero = 0;
	int fd, err;

	if (pin_file(path, sizeof(path), pin_path, dp_map_names[DP_MAP_ABI]))
		return -ENAMETOOLONG;
	fd = bpf_obj_get(path);
	if (fd < 0) {
		if (errno != ENOENT)
			return -ESTALE;
		if (pin_file(path, sizeof(path), pin_path, dp_map_names[DP_MAP_SERVICES]))
			return -ENAMETOOLONG;
		return access(path, F_OK) == 0 ? -ESTALE : 0; /* half-built pins: rebuild */
	}
	err = bpf_map_lookup_elem(fd, &zero, &info); /* a v3 record is the first 16 bytes */
	close(fd);
	if (!err)
		*out = info;
	if (!err && info.version == MESH_ABI_VERSION && info.layout == MESH_ABI_LAYOUT &&
	    any_capacity) {
		dp->max_services = info.max_services;
		dp->max_backends = info.max_backends;
		dp->max_slots = info.max_slots;
		return 1;
	}
	if (!err && info.version == MESH_ABI_VERSION && info.layout == MESH_ABI_LAYOUT &&
	    (info.max_services != dp->max_services || info.max_backends != dp->max_backends)) {
		LOG_WARN(DP_SUBSYS, "pinned datapath has other capacities, rebuilding",
			 "path=%s services=%u backends=%u want_services=%u want_backends=%u",
			 log_q(pin_path), info.max_services, info.max_backends, dp->max_services,
			 dp->max_backends);
		return -ESTALE;
	}
	if (err || info.version != MESH_ABI_VERSION || info.layout != MESH_ABI_LAYOUT) {
		LOG_WARN(DP_SUBSYS, "pinned datapath has another ABI, rebuilding",
			 "path=%s version=%u layout=%u want_version=%u want_layout=%u",
			 log_q(pin_path), info.version, info.layout, MESH_ABI_VERSION,
			 (unsigned)MESH_ABI_LAYOUT);
		return -ESTALE;
	}
	return 1;
}

static int abi_write(struct datapath *dp)
{
	struct mesh_abi_info info = {
		.version = MESH_ABI_VERSION,
		.layout = MESH_ABI_LAYOUT,
		.max_services = dp->max_services,
		.max_backends = dp->max_backends,
		.max_slots = dp->max_slots,
	};
	struct timespec ts;
	__u32 zero = 0;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	info.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	if (bpf_map_update_elem(dp->fd[DP_MAP_ABI], &zero, &info, BPF_ANY))
		return -errno;
	return 0;
}

/* Sets the capacities of the sized maps before load. */
static int size_maps(struct datapath *dp)
{
	struct mesh_bpf *o = dp->skel;
	int err = 0;

	err = err ?: bpf_map__set_max_entries(o->maps.mesh_services, 4 * dp->max_services);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_svc_names, dp->max_services);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_svc_state, dp->max_services);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_maglev, 2 * dp->max_services);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_backends, dp->max_backends);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_be_state, dp->max_backends);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_be_hot, dp->max_backends);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_be_ewma, dp->max_backends);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_slots, dp->max_slots);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_split, dp->max_services);
	err = err ?: bpf_map__set_max_entries(o->maps.mesh_split_cnt, dp->max_services);
	err = err
		  ?: bpf_map__set_max_entries(o->maps.mesh_split_fast,
					      2 * dp_split_pairs(dp->max_services));
	return err;
}

/* Programs for features a kernel may lack are not loaded there (so the rest loads): drains need
 * the bpf_sock_destroy kfunc (6.5), the upgrade's count correction syscall programs (5.14). */
static void optional_programs(struct datapath *dp)
{
	struct btf *vmlinux = btf__load_vmlinux_btf();
	bool destroy =
	    vmlinux && btf__find_by_name_kind(vmlinux, "bpf_sock_destroy", BTF_KIND_FUNC) > 0;

	btf__free(vmlinux);
	if (!destroy) {
		LOG_WARN(DP_SUBSYS, "kernel without bpf_sock_destroy: drains are off", "%s", "");
		bpf_program__set_autoload(dp->skel->progs.mesh_drain_iter, false);
	}
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SYSCALL, NULL) != 1)
		bpf_program__set_autoload(dp->skel->progs.mesh_adjust, false);
}

/* Whether a map keeps its pin across an upgrade from an older layout: the per-socket maps,
 * whose layout has not changed, so live sockets keep their decisions (migrate.c). */
static bool kept_on_upgrade(const char *name)
{
	return !strcmp(name, "mesh_sockets") || !strcmp(name, "mesh_handoff");
}

/* Opens the skeleton with every map pinned by name under pin_path (libbpf reuses existing pins
 * and pins new maps at load), then loads it. For an upgrade (`upgrade`), only the maps kept on
 * upgrade are pinned now; migrate.c pins the others once the old ones are handed over. */
static int load_object(struct datapath *dp, bool upgrade)
{
	char path[PATH_MAX];
	struct bpf_map *map;
	int err;

	dp->skel = mesh_bpf__open();
	if (!dp->skel)
		return -errno;
	err = size_maps(dp);
	if (err)
		return err;
	optional_programs(dp);
	bpf_object__for_each_map(map, dp->skel->obj)
	{
		if (upgrade && !kept_on_upgrade(bpf_map__name(map)))
			continue;
		err = pin_file(path, sizeof(path), dp->pin_path, bpf_map__name(map));
		if (!err)
			err = bpf_map__set_pin_path(map, path);
		if (err)
			return err;
	}
	err = mesh_bpf__load(dp->skel);
	if (err)
		return err;
	for (int i = 0; i < DP_MAP__COUNT; i++) {
		map = bpf_object__find_map_by_name(dp->skel->obj, dp_map_names[i]);
		if (!map)
			return -ENOENT;
		dp->fd[i] = bpf_map__fd(map);
	}
	dp->adjust_fd = bpf_program__fd(dp->skel->progs.mesh_adjust);
	if (bpf_program__autoload(dp->skel->progs.mesh_drain_iter))
		dp->drain_prog = dp->skel->progs.mesh_drain_iter;
	return 0;
}

/* Adoption without attaching (readers such as dptool stats): the pinned maps are all that is
 * needed, so the programs are not loaded and verified again. */
static int open_pinned_maps(struct datapath *dp)
{
	char path[PATH_MAX];

	for (int i = 0; i < DP_MAP__COUNT; i++) {
		int err = pin_file(path, sizeof(path), dp->pin_path, dp_map_names[i]);

		if (err)
			return err;
		dp->fd[i] = bpf_obj_get(path);
		if (dp->fd[i] < 0 && (errno != ENOENT || i < DP_MAP_FIRST_OPTIONAL))
			return -errno;
	}
	return 0;
}

/* cgroup id of a pinned link, or 0 when it is not a live cgroup link. */
static uint64_t link_cgroup_id(int fd)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len) || info.type != BPF_LINK_TYPE_CGROUP)
		return 0;
	return info.cgroup.cgroup_id;
}

/* Whether the program a link runs has the same instructions (tag: a hash that ignores map
 * references) as `prog_fd`. */
static bool link_runs(int link_fd, int prog_fd)
{
	struct bpf_link_info link = { 0 };
	struct bpf_prog_info cur = { 0 }, want = { 0 };
	__u32 len = sizeof(link);
	int cur_fd;
	bool same;

	if (bpf_obj_get_info_by_fd(link_fd, &link, &len))
		return false;
	cur_fd = bpf_prog_get_fd_by_id(link.prog_id);
	if (cur_fd < 0)
		return false;
	len = sizeof(cur);
	same = !bpf_obj_get_info_by_fd(cur_fd, &cur, &len);
	close(cur_fd);
	len = sizeof(want);
	same = same && !bpf_obj_get_info_by_fd(prog_fd, &want, &len) &&
	       !memcmp(cur.tag, want.tag, sizeof(cur.tag));
	return same;
}

/* Attaches one program unless its pinned link already attaches it to this cgroup. A link that
 * runs other code (a meshd upgrade with the same map layout) gets this binary's program in place
 * (bpf_link_update: never detached, no connect missed); a link to another cgroup (the
 * configured cgroup changed) is detached first. */
static int attach_one(struct datapath *dp, const struct dp_link *l, int cg_fd, uint64_t cg_id)
{
	struct bpf_program *prog;
	struct bpf_link *link;
	char path[PATH_MAX];
	int fd, err;

	err = pin_file(path, sizeof(path), dp->pin_path, l->link);
	if (err)
		return err;
	prog = bpf_object__find_program_by_name(dp->skel->obj, l->prog);
	if (!prog)
		return -ENOENT;
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		uint64_t id = link_cgroup_id(fd);

		if (id == cg_id) {
			err = 0;
			if (!link_runs(fd, bpf_program__fd(prog))) {
				err = bpf_link_update(fd, bpf_program__fd(prog), NULL) ? -errno : 0;
				LOG_INFO(DP_SUBSYS, "program replaced in place", "link=%s err=%d",
					 l->link, err);
			}
			close(fd);
			return err;
		}
		LOG_WARN(DP_SUBSYS, "pinned link attached elsewhere, replacing",
			 "link=%s cgroup_id=%llu", l->link, (unsigned long long)id);
		bpf_link_detach(fd);
		close(fd);
		unlink(path);
	}
	link = bpf_program__attach_cgroup(prog, cg_fd);
	if (!link)
		return -errno;
	err = bpf_link__pin(link, path);
	bpf_link__destroy(link); /* the pin keeps it attached */
	return err;
}

/* Attaches `n` programs of `links` to `cgroup`. */
static int attach_links(struct datapath *dp, const char *cgroup, const struct dp_link *links,
			size_t n)
{
	struct stat st;
	int cg_fd, err = 0;

	cg_fd = open(cgroup, O_RDONLY | O_DIRECTORY);
	if (cg_fd < 0 || fstat(cg_fd, &st)) {
		err = -errno;
		LOG_ERR(DP_SUBSYS, "cannot open cgroup", "cgroup=%s err=%s", log_q(cgroup),
			strerror(-err));
		if (cg_fd >= 0)
			close(cg_fd);
		return err;
	}
	for (size_t i = 0; i < n && !err; i++) {
		err = attach_one(dp, &links[i], cg_fd, (uint64_t)st.st_ino);
		if (err)
			LOG_ERR(DP_SUBSYS, "attach failed", "prog=%s cgroup=%s err=%s",
				links[i].prog, log_q(cgroup), strerror(-err));
	}
	close(cg_fd);
	return err;
}

static int attach_all(struct datapath *dp, const char *cgroup)
{
	return attach_links(dp, cgroup, dp_links, DP_N_LINKS);
}

int dp_udp_sync(struct datapath *dp)
{
	size_t n = sizeof(dp_udp_links) / sizeof(dp_udp_links[0]);
	char path[PATH_MAX];
	int fd, err = 0;

	if (!dp->cgroup || !dp->skel)
		return 0; /* a reader: attaches nothing */
	if (dp->n_udp)
		return attach_links(dp, dp->cgroup, dp_udp_links, n);
	for (size_t i = 0; i < n && !err; i++) {
		err = pin_file(path, sizeof(path), dp->pin_path, dp_udp_links[i].link);
		fd = err ? -1 : bpf_obj_get(path);
		if (fd < 0)
			continue;
		bpf_link_detach(fd);
		close(fd);
		unlink(path);
	}
	return err;
}

static struct datapath *dp_alloc(const struct datapath_opts *opts)
{
	struct datapath *dp = calloc(1, sizeof(*dp));

	if (!dp)
		return NULL;
	for (int i = 0; i < DP_MAP__COUNT; i++)
		dp->fd[i] = -1;
	dp->barrier_fd = dp->barrier_inner_fd = dp->adjust_fd = -1;
	dp->pin_path = strdup(opts->pin_path);
	dp->max_services = opts->max_services ? opts->max_services : MESH_DEF_SERVICES;
	dp->max_backends = opts->max_backends ? opts->max_backends : MESH_DEF_BACKENDS;
	dp->ncpus = libbpf_num_possible_cpus();
	dp->be_cursor = 1;
	if (!dp->pin_path || dp->ncpus <= 0) {
		datapath_close(dp);
		errno = ENOMEM;
		return NULL;
	}
	return dp;
}

/* The userspace mirror, once the capacities are known. */
static int alloc_mirror(struct datapath *dp)
{
	if (dp->max_services > MESH_MAX_SERVICES_CAP || dp->max_backends > MESH_MAX_BACKENDS_CAP ||
	    dp->max_services < 1 || dp->max_backends < 2)
		return -EINVAL;
	dp->max_slots = MESH_SLOTS_PER_BACKEND * dp->max_backends;
	dp->svcs = calloc(dp->max_services, sizeof(*dp->svcs));
	dp->be = calloc(dp->max_backends, sizeof(*dp->be));
	dp->be_used = calloc(dp->max_backends, 1);
	dp->split_pairs = dp_split_pairs(dp->max_services);
	dp->split_entry = calloc(dp->max_services, sizeof(*dp->split_entry));
	dp->split_pair_used = calloc(dp->split_pairs, 1);
	if (!dp->svcs || !dp->be || !dp->be_used || !dp->split_entry || !dp->split_pair_used)
		return -ENOMEM;
	if (dp_index_init(&dp->by_name, dp->max_services) ||
	    dp_index_init(&dp->by_key, dp->max_services))
		return -ENOMEM;
	return dp_slots_init(dp);
}

/* Whether a pinned ABI record is ABI 4's layout at this datapath's capacities: what this
 * layout upgrades in place by adding mesh_be_hot (migrate.c). */
static bool is_v4(const struct datapath *dp, const struct mesh_abi_info *info)
{
	return info->version == 4 && info->layout == DP_ABI_LAYOUT_V4 &&
	       info->max_services == dp->max_services && info->max_backends == dp->max_backends;
}

/* Makes pin_path usable: adopts a matching pinned datapath, upgrades one of an older layout it
 * knows (migrate.c), rebuilds any other (only when `create`: readers neither rebuild nor
 * create). Returns 1 when adopting, 2 when upgrading from ABI 3, 3 when upgrading from ABI 4,
 * 0 for a fresh load, or -errno. */
static int prepare_pins(struct datapath *dp, bool create)
{
	struct mesh_abi_info info = { 0 };
	int st = abi_check(dp->pin_path, dp, !create, &info);

	if (st == -ESTALE && create && (info.version == 3 || is_v4(dp, &info))) {
		LOG_INFO(DP_SUBSYS, "upgrading the pinned datapath", "path=%s from_version=%u",
			 log_q(dp->pin_path), info.version);
		return info.version == 3 ? 2 : 3;
	}
	if (st == -ESTALE && create) {
		st = datapath_cleanup(dp->pin_path);
		if (st)
			return st;
	}
	if (st <= 0 && !create)
		return st ? st : -ENOENT;
	if (st == 0 && mkdir(dp->pin_path, 0700) && errno != EEXIST)
		return -errno;
	return st;
}

/* The maps of an older layout handed over to the ones just loaded, the programs swapped in
 * place between the copy and the count correction (migrate.c). */
static int upgrade(struct datapath *dp, const char *cgroup)
{
	struct dp_migration *m = NULL;
	int err = dp_migrate_begin(dp, &m);

	err = err ?: attach_all(dp, cgroup);
	err = err ?: dp_migrate_end(dp, m, dp->skel->obj);
	err = err ?: abi_write(dp);
	dp_migrate_free(m);
	return err;
}

/* ABI 4's maps kept (this object reused their pins and added mesh_be_hot): the counts and
 * breaker states moved to mesh_be_hot around the swap of the programs (migrate.c). */
static int upgrade_v4(struct datapath *dp, const char *cgroup)
{
	int err = dp_services_load(dp);

	err = err ?: dp_migrate_v4_pass(dp);
	err = err ?: attach_all(dp, cgroup);
	err = err ?: dp_barrier(dp); /* no ABI 4 program runs past this point */
	err = err ?: dp_migrate_v4_pass(dp);
	return err ?: abi_write(dp);
}

struct datapath *datapath_open(const struct datapath_opts *opts)
{
	struct datapath *dp;
	int st, err;

	log_route_libbpf();
	dp = dp_alloc(opts);
	if (!dp)
		return NULL;
	st = prepare_pins(dp, opts->cgroup != NULL);
	err = st < 0 ? st : alloc_mirror(dp);
	if (err)
		goto err_close;
	dp->adopted = st == 1 || st == 3;
	err = opts->cgroup ? load_object(dp, st == 2) : open_pinned_maps(dp);
	if (err) {
		LOG_ERR(DP_SUBSYS, "loading BPF object failed", "pin=%s err=%s",
			log_q(dp->pin_path), strerror(-err));
		goto err_close;
	}
	if (st == 1)
		err = dp_services_load(dp);
	else if (st == 2)
		err = upgrade(dp, opts->cgroup);
	else if (st == 3)
		err = upgrade_v4(dp, opts->cgroup);
	else
		err = abi_write(dp);
	if (!err && opts->cgroup)
		err = attach_all(dp, opts->cgroup);
	if (!err && opts->cgroup && !(dp->cgroup = strdup(opts->cgroup)))
		err = -ENOMEM;
	err = err ?: dp_udp_sync(dp);
	if (err && st >= 2) {
		/* The upgrade could not carry the old layout over: start afresh, as before there
		 * was an upgrade path (live sockets stay connected but are no longer counted). */
		LOG_WARN(DP_SUBSYS, "rebuilding the pinned datapath instead", "pin=%s",
			 log_q(dp->pin_path));
		datapath_close(dp);
		err = datapath_cleanup(opts->pin_path);
		return err ? (errno = -err, NULL) : datapath_open(opts);
	}
	if (err)
		goto err_close;
	LOG_INFO(DP_SUBSYS,
		 st == 1   ? "adopted pinned datapath"
		 : st >= 2 ? "upgraded pinned datapath"
			   : "loaded datapath",
		 "pin=%s cgroup=%s services=%u backends=%u", log_q(dp->pin_path),
		 log_q(opts->cgroup ? opts->cgroup : "-"), dp->max_services, dp->max_backends);
	return dp;

err_close:
	datapath_close(dp);
	errno = -err;
	return NULL;
}

void datapath_close(struct datapath *dp)
{
	if (dp && dp->txn)
		datapath_txn_abort(dp->txn);
	if (!dp)
		return;
	ring_buffer__free(dp->rb);
	if (dp->skel)
		mesh_bpf__destroy(dp->skel); /* owns the map fds */
	else
		for (int i = 0; i < DP_MAP__COUNT; i++)
			if (dp->fd[i] >= 0)
				close(dp->fd[i]);
	for (uint32_t i = 0; dp->svcs && i < dp->max_services; i++) {
		free(dp->svcs[i].ids);
		free(dp->svcs[i].split);
	}
	free(dp->svcs);
	free(dp->be);
	free(dp->be_used);
	free(dp->split_entry);
	free(dp->split_pair_used);
	dp_index_free(&dp->by_name);
	dp_index_free(&dp->by_key);
	dp_slots_free(dp);
	free(dp->drains);
	free(dp->pin_path);
	free(dp->cgroup);
	free(dp);
}

bool datapath_adopted(const struct datapath *dp)
{
	return dp->adopted;
}

int datapath_cleanup(const char *pin_path)
{
	char path[PATH_MAX];
	struct dirent *de;
	int err = 0;
	DIR *d;

	d = opendir(pin_path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || pin_file(path, sizeof(path), pin_path, de->d_name))
			continue;
		if (!strncmp(de->d_name, "link_", 5)) {
			int fd = bpf_obj_get(path);

			/* Detach even if a running daemon still holds the link open. */
			if (fd >= 0) {
				bpf_link_detach(fd);
				close(fd);
			}
		}
		if (unlink(path) && !err)
			err = -errno;
	}
	closedir(d);
	if (rmdir(pin_path) && !err)
		err = -errno;
	if (err)
		LOG_ERR(DP_SUBSYS, "cleanup incomplete", "pin=%s err=%s", log_q(pin_path),
			strerror(-err));
	else
		LOG_INFO(DP_SUBSYS, "datapath detached and unpinned", "pin=%s", log_q(pin_path));
	return err;
}
