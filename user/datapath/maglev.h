/* Maglev lookup table (Eisenbud et al., NSDI 2016) for the `maglev` algorithm: userspace fills
 * one table per service from its backend set; the connect program indexes it by a hash of the
 * caller (cgroup or process). Removing one of N backends moves only about 1/N of the entries. */
#ifndef MESH_MAGLEV_H
#define MESH_MAGLEV_H

#include <stdint.h>

/* Fills `table` (`m` entries, `m` prime and > n) with slot numbers 0..n-1, slot i standing for
 * the backend named keys[i]. A backend's preference list depends only on its key, so the same
 * backend keeps most of its entries whatever slot it has. Returns 0, or -EINVAL when n is 0 or
 * above 65534 or m is too small, or -ENOMEM. */
int maglev_fill(uint16_t *table, uint32_t m, const char *const *keys, uint32_t n);

/* Table size for n backends given the service's current size (0 for none): the current one
 * while it has at least 32 entries per backend (so removals, and most additions, move only the
 * callers of the backends that change), else the smallest of 4093, 8191, 16381, 32771, 65537
 * with at least 63 per backend (4093 up to 64 backends, 65537 for 1,024). Never smaller than the
 * current size. */
uint32_t maglev_size(uint32_t n, uint32_t current);

#endif
