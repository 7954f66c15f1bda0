/* Building the workers' snapshot (snap.c; lookups are in proxy.h) and the retry budgets that
 * outlive snapshots. Main loop. */
#ifndef MESH_MTLS_SNAP_H
#define MESH_MTLS_SNAP_H

#include <pthread.h>

#include "config/config.h"
#include "mtls/proxy.h"

struct budget_table *budget_table_new(pthread_mutex_t *lock);
void budget_table_free(struct budget_table *t);
/* The budget of service `name` (created, or its parameters updated from `r`); NULL on ENOMEM. */
struct retry_budget *budget_get(struct budget_table *t, const char *name,
				const struct config_retry *r);

/* The snapshot for `cfg`; NULL with `why` (an identity hash collision, ENOMEM). */
struct snap *snap_build(const struct mesh_config *cfg, const struct mtls_datapath *dp,
			struct budget_table *bt, pthread_mutex_t *budget_lock, char *why,
			size_t wlen);

#endif
