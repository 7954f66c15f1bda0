/* Private to the datapath module: the handle's layout, shared by datapath.c (lifecycle),
 * services.c (writing services), slots.c (ranges of mesh_slots), migrate.c (upgrades of the
 * pinned layout) and stats.c (reading counters and events). */
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
	DP_MAP_SLOTS,
	DP_MAP_BACKENDS,
	DP_MAP_BE_STATE,
	DP_MAP_BE_HOT,
	DP_MAP_COUNTERS,
	DP_MAP_EVENTS,
	DP_MAP_MAGLEV,
	DP_MAP_SCRATCH,
	DP_MAP_HANDOFF,
	DP_MAP_SOCKETS,
	DP_MAP_RNG,
	DP_MAP_ADJUST,
	DP_MAP_DRAIN,
	DP_MAP_MTLS_CFG, /* the mTLS maps: additions, absent from pins made before them */
	DP_MAP_IDENTS,
	DP_MAP_MTLS_ORIG,
	DP_MAP_STRICT,
	DP_MAP_TRACE,
	DP_MAP_TRACE_RING,
	DP_MAP_BE_EWMA,
	DP_MAP_SPLIT,
	DP_MAP_SPLIT_CNT,
	DP_MAP_SPLIT_FAST,
	DP_MAP__COUNT,
};
#define DP_MAP_FIRST_OPTIONAL DP_MAP_MTLS_CFG

/* The traffic split of a service (split.c): its subsets' names, weights and members, and the
 * mesh_split value last written (bases and counts filled by dp_write_tables). */
struct dp_split {
	struct mesh_split val;
	char name[MESH_SPLIT_MAX][MESH_SVC_NAME_MAX];
	uint32_t n_be;	  /* backends of the service when built */
	uint8_t member[]; /* [n_be], configured order: bit i set when in subset i */
};

/* Userspace mirror of one service (index = service_id). */
struct dp_service {
	bool used;
	char name[MESH_SVC_NAME_MAX];
	struct mesh_svc_key key;
	struct mesh_svc val;
	__u32 *ids;		 /* val.n_backends backend ids, in slot order */
	uint32_t n_slots;	 /* mesh_slots entries of its range (more than n_backends: split) */
	struct dp_split *split;	 /* NULL: no split */
	uint64_t split_hash;	 /* names_hash of the split in the maps (0: none) */
	uint64_t close_after_ns; /* close connections to removed backends after this; 0 never */
	bool close_on_open;	 /* ... and to a backend whose breaker opened */
	bool removed; /* removed inside an open transaction: id, range, ids held to its end */
};

/* A removed backend whose connections are to be closed at `due_ns` (CLOCK_MONOTONIC). */
struct dp_drain {
	uint32_t id, epoch, sid;
	uint64_t due_ns;
};

/* Open-addressing index of services by name or by address (values: service id + 1). */
struct dp_index {
	int32_t *slot; /* 0 empty, -1 deleted, else id + 1 */
	uint32_t mask;
};

struct mesh_bpf;
struct bpf_object;
struct bpf_program;
struct ring_buffer;

struct datapath {
	char *pin_path;
	char *cgroup;	/* attached to (NULL for readers) */
	uint32_t n_udp; /* UDP services: the cgroup_skb programs are attached while > 0 */
	bool adopted;
	struct mesh_bpf *skel;
	int fd[DP_MAP__COUNT];
	struct ring_buffer *rb;
	int ncpus;
	uint32_t max_services, max_backends, max_slots; /* capacities of the maps */
	struct dp_service *svcs;			/* max_services entries */
	struct mesh_backend *be; /* max_backends entries: mirror of mesh_backends */
	uint8_t *be_used;	 /* max_backends flags */
	/* mesh_split_fast (split.c): per service the entry its value names + 1 (0: none), pairs
	 * of entries in use, and a next-fit cursor (a freed pair is reused as late as possible). */
	uint16_t *split_entry;
	uint8_t *split_pair_used;
	uint32_t split_pairs, split_cursor;
	bool split_full_logged;
	uint32_t svc_cursor, be_cursor; /* next id to try: ids are reused as late as possible */
	uint32_t svc_hi, be_hi;		/* highest id ever used + 1 (stats read up to here) */
	struct dp_index by_name, by_key;
	/* mesh_slots ranges (slots.c): a bitmap of entries in use, a next-fit cursor, and ranges
	 * freed but possibly still read by a connect (reused after an RCU grace period). */
	uint64_t *slot_map;
	uint32_t slot_cursor;
	struct dp_range {
		uint32_t base, n;
	} * quarantine;
	uint32_t n_quarantine, cap_quarantine;
	int barrier_fd, barrier_inner_fd; /* ARRAY_OF_MAPS: an update waits for running programs */
	int adjust_fd; /* mesh_adjust (BPF_PROG_TYPE_SYSCALL), -1 when not loaded */
	struct bpf_program *drain_prog; /* mesh_drain_iter, NULL when not loaded */
	struct dp_drain *drains;	/* pending, in no order */
	uint32_t n_drains, cap_drains;
	void (*ev_cb)(const struct datapath_event *ev, void *arg);
	void *ev_arg;
	struct datapath_txn *txn; /* open transaction (services_txn.c), or NULL */
	size_t fail_at;		  /* test hook: fail the n-th change of a transaction (0 = off) */
};

extern const char *const dp_map_names[DP_MAP__COUNT];

/* services.c */
int dp_services_load(struct datapath *dp);
void dp_key_from_endpoint(const struct config_endpoint *ep, int proto, struct mesh_svc_key *key);
void dp_endpoint_from_be(const struct mesh_backend *be, struct config_endpoint *ep);
int dp_find_service(const struct datapath *dp, const char *name);
int dp_index_init(struct dp_index *ix, uint32_t capacity);
void dp_index_free(struct dp_index *ix);
/* Writes the lists of service `s` (mirror filled: val, ids) into a new mesh_slots range and
 * points s->val.slot_base at it; the caller publishes the value, then retires the old range. */
int dp_write_tables(struct datapath *dp, struct dp_service *s);
/* Publishes a service whose mirror (ids, backends, val) is complete, with its name record
 * and index entries. Used by migrate.c for ids carried over from a previous layout. */
int dp_adopt_service(struct datapath *dp, __u32 sid, const char *name,
		     const struct mesh_svc_key *key, const struct mesh_svc *val, const __u32 *ids);

/* services.c, for services_txn.c: index lookups and updates (`by_name` or by VIP key; id -1
 * removes), the name record, backend writes and maglev table removal. */
int dp_index_find(const struct datapath *dp, bool by_name, const void *what);
void dp_index_set(struct datapath *dp, bool by_name, const void *what, int32_t id);
int dp_write_name(struct datapath *dp, const struct dp_service *s);
int dp_be_write(struct datapath *dp, __u32 id);
void dp_maglev_drop(struct datapath *dp, __u32 table, __u32 from);
/* Keeps the count of UDP services (a service that was `was` UDP is now `is`), and the UDP
 * programs attached while there is one. */
void dp_udp_count(struct datapath *dp, bool was, bool is);

/* services_txn.c, called while dp->txn is open: service `id` owns a VIP another service takes
 * over, so it must move or go before the end (0 or -ENOMEM); a range retired meanwhile waits
 * for the end (an undo may need it back). */
int dp_txn_displace(struct datapath *dp, __u32 id);
void dp_txn_defer_range(struct datapath *dp, uint32_t base, uint32_t n);

/* split.c: the mirror of a service's split built from its config (NULL for no split, or out of
 * memory); the mesh_slots entries its lists take after the service's
 * own; writing those lists into `e` (after the service's own, at entry n_backends) with the
 * bases from `base`; publishing and dropping the split and its counters around the service
 * value; adoption of a pinned split's range. */
struct dp_split *dp_split_new(const struct config_service *svc);
uint32_t dp_split_slots(const struct dp_service *s);
int dp_split_lists(const struct datapath *dp, struct dp_service *s, struct mesh_slot *e,
		   uint32_t base);
int dp_split_write(struct datapath *dp, struct dp_service *s, uint64_t prev_hash);
void dp_split_drop(struct datapath *dp, __u32 sid);
/* The mesh_split_fast capacity (pairs of entries) of a datapath sized for `max_services`. */
uint32_t dp_split_pairs(uint32_t max_services);
/* Takes back the entry an adopted service value names (its pair becomes used). */
void dp_split_adopt_entry(struct datapath *dp, __u32 sid, const struct mesh_svc *val);
/* A copy of `sp` (malloc'd; NULL out of memory) for a transaction's record. */
struct dp_split *dp_split_dup(const struct dp_split *sp);
/* Reads service `sid`'s per-subset counters into `cnt` (zeros when none), or writes `cnt` back
 * (0 or -errno): an undone split change puts back the counters it reset. */
void dp_split_cnt_get(const struct datapath *dp, __u32 sid, struct mesh_split_cnt *cnt);
int dp_split_cnt_put(struct datapath *dp, __u32 sid, const struct mesh_split_cnt *cnt);
uint32_t dp_split_adopt_slots(struct datapath *dp, __u32 sid, const struct mesh_svc *val,
			      uint64_t *names_hash);
/* Fills out[0..n) for a split service (names point into the mirror); returns n. */
uint32_t dp_split_stats(const struct datapath *dp, const struct dp_service *s,
			struct datapath_subset_stats *out);
/* services.c: the alias table over the healthy entries of e[0..k) (weighted only). */
int dp_fill_alias(const struct datapath *dp, struct mesh_slot *e, uint32_t k);

/* datapath.c: attaches the UDP counting programs while a UDP service exists, detaches them
 * when none is left (a no-op for readers). 0 or -errno. */
int dp_udp_sync(struct datapath *dp);

/* slots.c */
int dp_slots_init(struct datapath *dp);
void dp_slots_free(struct datapath *dp);
/* Takes n consecutive free entries (waiting for a grace period to reuse retired ones if it
 * must). Returns the first entry or -ENOSPC. */
int64_t dp_slots_alloc(struct datapath *dp, uint32_t n);
/* Retires a range: reusable after the next grace period. */
void dp_slots_retire(struct datapath *dp, uint32_t base, uint32_t n);
/* Marks a range in use (adoption). */
void dp_slots_mark(struct datapath *dp, uint32_t base, uint32_t n);
/* Waits until every BPF program running now has finished (synchronize_rcu in the kernel). */
int dp_barrier(struct datapath *dp);

/* migrate.c: hands a pinned datapath of an older layout (ABI 3) over to the maps just loaded
 * (unpinned but for mesh_sockets and mesh_handoff, which keep their layout): begin copies
 * services, backends, breakers, counters and active counts with their ids and epochs; the
 * caller then swaps the programs into the pinned links (sockops first); end waits for the old
 * programs to finish, adds what the old counts moved meanwhile (exact), and moves the pins to
 * the new maps. Both return 0 or -errno. */
struct dp_migration;
int dp_migrate_begin(struct datapath *dp, struct dp_migration **out);
int dp_migrate_end(struct datapath *dp, struct dp_migration *m, struct bpf_object *obj);
void dp_migrate_free(struct dp_migration *m);
/* The upgrade from ABI 4, whose maps this layout keeps (adding mesh_be_hot): moves the ABI 4
 * active count of every backend id ever allocated to mesh_be_hot and copies its breaker state
 * there (mesh_adjust, MESH_ADJUST_FROM_V4). Run once before the programs are swapped, so the
 * new ones start from nearly the right counts, and once after the old ones have finished, which
 * makes the counts exact. -EOPNOTSUPP without syscall programs. */
#define DP_ABI_LAYOUT_V4 ((__u32)(MESH_ABI_LAYOUT - sizeof(struct mesh_be_hot) * 47))
int dp_migrate_v4_pass(struct datapath *dp);
/* services.c, for migrate.c: writes the maglev table of a mirrored service. */
int dp_write_maglev(struct datapath *dp, const struct dp_service *s);

/* drain.c: schedules closing the connections of backend `id` (its current epoch, service `sid`)
 * `after_ns` from now; 0 does nothing. */
void dp_drain_schedule(struct datapath *dp, __u32 id, __u32 sid, uint64_t after_ns);
/* mtls.c: attaches (on) or detaches the strict_inbound program. 0 or -errno. */
int dp_strict_attach(struct datapath *dp, bool on);

/* stats.c: reads entries [first, first + n) of an array map with batch lookups into `out`
 * (per-CPU maps: ncpus values of round_up(vsize, 8) bytes per entry). Returns 0 or -errno. */
int dp_read_array(const struct datapath *dp, int fd, bool percpu, __u32 first, __u32 n,
		  size_t vsize, void *out, __u64 elem_flags);

#endif
