/* Maglev lookup table (Eisenbud et al., NSDI 2016) for the `maglev` algorithm: userspace fills
 * one table per service from its backend set; the connect program indexes it by a hash of the
 * caller's cgroup id. Removing one of N backends moves only about 1/N of the entries. */
#ifndef MESH_MAGLEV_H
#define MESH_MAGLEV_H

#include <stdint.h>

/* Fills `table` (`m` entries, `m` prime and > n) with slot numbers 0..n-1, slot i standing for
 * the backend named keys[i]. A backend's preference list depends only on its key, so the same
 * backend keeps most of its entries whatever slot it has. Returns 0, or -EINVAL when n is 0 or
 * above 255 or m is too small, or -ENOMEM. */
int maglev_fill(uint8_t *table, uint32_t m, const char *const *keys, uint32_t n);

#endif
