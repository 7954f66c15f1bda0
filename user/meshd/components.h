/* The table of meshd's components (components.c), handed to the lifecycle engine by daemon.c. */
#ifndef MESHD_COMPONENTS_H
#define MESHD_COMPONENTS_H

#include <stddef.h>

#include "meshd/meshd.h"

/* Returns the static component table and its length in `*n`. */
const struct meshd_component *meshd_components(size_t *n);

#endif
