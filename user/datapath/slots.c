/* Ranges of mesh_slots: every service's backend lists live in one array map, a range per
 * service. A bitmap marks entries in use; allocation is next-fit from a rotating cursor. A range
 * a service stops using may still be read by a connect that holds the previous service value,
 * so it is retired, not freed: retired ranges become free after an RCU grace period, which
 * userspace waits for with an update of an ARRAY_OF_MAPS (the kernel then waits for every
 * running BPF program, `maybe_wait_bpf_programs`). Loop thread only. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "common/log.h"
#include "datapath/internal.h"

static bool bit(const struct datapath *dp, uint32_t i)
{
	return dp->slot_map[i / 64] >> (i % 64) & 1;
}

static void set_bits(struct datapath *dp, uint32_t base, uint32_t n, bool on)
{
	for (uint32_t i = base; i < base + n; i++) {
		if (on)
			dp->slot_map[i / 64] |= 1ull << (i % 64);
		else
			dp->slot_map[i / 64] &= ~(1ull << (i % 64));
	}
}

int dp_slots_init(struct datapath *dp)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts);
	__u32 zero = 0;

	dp->slot_map = calloc((dp->max_slots + 63) / 64, sizeof(uint64_t));
	if (!dp->slot_map)
		return -ENOMEM;
	dp->barrier_inner_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "mesh_rcu_inner", 4, 4, 1, NULL);
	if (dp->barrier_inner_fd < 0)
		return -errno;
	opts.inner_map_fd = dp->barrier_inner_fd;
	dp->barrier_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "mesh_rcu", 4, 4, 1, &opts);
	if (dp->barrier_fd < 0)
		return -errno;
	return bpf_map_update_elem(dp->barrier_fd, &zero, &dp->barrier_inner_fd, BPF_ANY) ? -errno
											  : 0;
}

void dp_slots_free(struct datapath *dp)
{
	free(dp->slot_map);
	free(dp->quarantine);
	if (dp->barrier_fd >= 0)
		close(dp->barrier_fd);
	if (dp->barrier_inner_fd >= 0)
		close(dp->barrier_inner_fd);
}

int dp_barrier(struct datapath *dp)
{
	__u32 zero = 0;

	return bpf_map_update_elem(dp->barrier_fd, &zero, &dp->barrier_inner_fd, BPF_ANY) ? -errno
											  : 0;
}

/* First run of n free entries at or after `from` (below `end`), or -1. */
static int64_t find_run(const struct datapath *dp, uint32_t from, uint32_t end, uint32_t n)
{
	uint32_t run = 0;

	for (uint32_t i = from; i < end; i++) {
		if (run == 0 && i % 64 == 0 && dp->slot_map[i / 64] == ~0ull) {
			i += 63; /* a full word: skip it */
			continue;
		}
		run = bit(dp, i) ? 0 : run + 1;
		if (run == n)
			return (int64_t)(i + 1 - n);
	}
	return -1;
}

/* Makes retired ranges free once every program that could read them has finished. */
static int reclaim(struct datapath *dp)
{
	int err;

	if (!dp->n_quarantine)
		return 0;
	err = dp_barrier(dp);
	if (err)
		return err;
	for (uint32_t i = 0; i < dp->n_quarantine; i++)
		set_bits(dp, dp->quarantine[i].base, dp->quarantine[i].n, false);
	dp->n_quarantine = 0;
	return 1;
}

int64_t dp_slots_alloc(struct datapath *dp, uint32_t n)
{
	int64_t base;

	if (n == 0)
		n = 1; /* a service without backends still points somewhere valid */
	for (int pass = 0; pass < 2; pass++) {
		base = find_run(dp, dp->slot_cursor, dp->max_slots, n);
		if (base < 0)
			base = find_run(dp, 0,
					dp->slot_cursor + n < dp->max_slots ? dp->slot_cursor + n
									    : dp->max_slots,
					n);
		if (base >= 0) {
			set_bits(dp, (uint32_t)base, n, true);
			dp->slot_cursor = (uint32_t)(base + n) % dp->max_slots;
			return base;
		}
		if (reclaim(dp) <= 0)
			break;
	}
	LOG_ERR(DP_SUBSYS, "no room in mesh_slots", "wanted=%u capacity=%u", n, dp->max_slots);
	return -ENOSPC;
}

void dp_slots_retire(struct datapath *dp, uint32_t base, uint32_t n)
{
	if (dp->txn) { /* an undo may point a service at it again: decided at the end */
		dp_txn_defer_range(dp, base, n);
		return;
	}
	if (n == 0)
		n = 1;
	if (dp->n_quarantine == dp->cap_quarantine) {
		uint32_t cap = dp->cap_quarantine ? 2 * dp->cap_quarantine : 64;
		struct dp_range *q = realloc(dp->quarantine, cap * sizeof(*q));

		if (!q) {
			/* Out of memory: wait for the grace period now rather than lose the range. */
			if (dp_barrier(dp) == 0)
				set_bits(dp, base, n, false);
			return;
		}
		dp->quarantine = q;
		dp->cap_quarantine = cap;
	}
	dp->quarantine[dp->n_quarantine++] = (struct dp_range){ base, n };
}

void dp_slots_mark(struct datapath *dp, uint32_t base, uint32_t n)
{
	if (n == 0)
		n = 1;
	if (base < dp->max_slots && n <= dp->max_slots - base)
		set_bits(dp, base, n, true);
}
