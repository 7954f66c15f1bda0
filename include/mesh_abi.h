/* Datapunk Mesh datapath ABI: every map key and value, event record, reason enum and limit shared
 * by the BPF programs (bpf/) and userspace (user/datapath/). No includes: the includer provides
 * __u8..__u64 (vmlinux.h in BPF, <linux/types.h> in userspace). Each struct has explicit padding
 * and a size assertion. Any layout change bumps MESH_ABI_VERSION; the daemon rebuilds pinned maps
 * whose version differs. */
#ifndef MESH_ABI_H
#define MESH_ABI_H

#define MESH_ABI_VERSION 1

enum mesh_lb_algorithm {
	MESH_LB_RANDOM = 0,
	MESH_LB_ROUND_ROBIN = 1,
	MESH_LB_LEAST_REQUEST = 2,
	MESH_LB_WEIGHTED = 3,
	MESH_LB_MAGLEV = 4,
	MESH_LB__COUNT,
};

enum mesh_no_healthy_policy {
	MESH_NO_HEALTHY_REJECT = 0,
	MESH_NO_HEALTHY_PASSTHROUGH = 1,
};

#endif
