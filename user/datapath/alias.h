/* Alias tables (Vose's method) for the `weighted` algorithm: userspace turns the weights of a
 * service's healthy backends into one cell per backend, and the connect program draws a cell
 * uniformly and flips that cell's biased coin: a weighted choice in constant time, whatever the
 * number of backends. Pure; tests/unit/test_alias.c covers it. */
#ifndef MESH_ALIAS_H
#define MESH_ALIAS_H

#include <stdint.h>

/* Fills prob[0..n) and alias[0..n) for weights w[0..n) (0 counts as 1): drawing i uniformly,
 * then keeping i with probability prob[i] / 2^32 (prob 0xffffffff: always), else alias[i],
 * picks i with probability w[i] / sum(w). Returns 0, -EINVAL for n == 0, or -ENOMEM. */
int alias_build(const uint32_t *w, uint32_t n, uint32_t *prob, uint32_t *alias);

#endif
