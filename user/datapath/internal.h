/* Private to the datapath module: the handle's layout, shared by datapath.c (lifecycle),
 * services.c (writing services) and stats.c (reading counters and events). */
#ifndef MESH_DATAPATH_INTERNAL_H
#define MESH_DATAPATH_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "datapath/datapath.h"
#include "mesh_abi.h"

#define DP_SUBSYS "datapath"

enum dp_map {
	DP_MAP_ABI = 0,
	DP_MAP_SERVICES,
	DP_MAP_SVC_NAMES,
	DP_MAP_SVC_STATE,
	DP_MAP_BACKENDS,
	DP_MAP_BE_STATE,
	DP_MAP_BE_STATS,
	DP_MAP_SVC_STATS,
	DP_MAP_COUNTERS,
	DP_MAP_EVENTS,
	DP_MAP_MAGLEV,
	DP_MAP_SCRATCH,
	DP_MAP_HANDOFF,
	DP_MAP__COUNT,
};

/* Userspace mirror of one service (index = service_id). */
struct dp_service {
	bool used;
	char name[MESH_SVC_NAME_MAX];
	struct mesh_svc_key key;
	struct mesh_svc val;
};

struct mesh_bpf;
struct ring_buffer;

struct datapath {
	char *pin_path;
	bool adopted;
	struct mesh_bpf *skel;
	int fd[DP_MAP__COUNT];
	struct ring_buffer *rb;
	int ncpus;
	struct dp_service *svcs;	/* MESH_MAX_SERVICES entries */
	struct mesh_backend *be;	/* MESH_MAX_BACKENDS entries: mirror of mesh_backends */
	uint8_t *be_used;		/* MESH_MAX_BACKENDS flags */
	uint32_t svc_cursor, be_cursor; /* next id to try: ids are reused as late as possible */
	uint32_t svc_hi, be_hi;		/* highest id ever used + 1 (stats read up to here) */
	void (*ev_cb)(const struct datapath_event *ev, void *arg);
	void *ev_arg;
};

extern const char *const dp_map_names[DP_MAP__COUNT];

/* services.c */
int dp_services_load(struct datapath *dp);
void dp_key_from_endpoint(const struct config_endpoint *ep, struct mesh_svc_key *key);
void dp_endpoint_from_be(const struct mesh_backend *be, struct config_endpoint *ep);
int dp_find_service(const struct datapath *dp, const char *name);

/* stats.c: reads entries [0, n) of an array map with batch lookups into `out` (per-CPU maps:
 * ncpus values of round_up(vsize, 8) bytes per entry). Returns 0 or -errno. */
int dp_read_array(const struct datapath *dp, enum dp_map m, __u32 n, size_t vsize, void *out,
		  __u64 elem_flags);

#endif
