/* Background writer of the discovery state file (persist.c), private to the discovery module:
 * the registry hands it snapshots from the loop thread; one thread writes the newest. */
#ifndef MESH_DISCOVERY_PERSIST_H
#define MESH_DISCOVERY_PERSIST_H

#include <stdint.h>

#include "discovery/state.h"

struct persister;

/* Returns NULL + errno. */
struct persister *persister_new(void);
/* Queues `s` (malloc'd, taken, freed with state_saved_free + free) for `dir`, replacing any
 * snapshot still waiting. Returns 0 or -ENOMEM (then `s` is freed). */
int persister_submit(struct persister *p, const char *dir, struct state_saved *s);
/* Waits until every submitted snapshot is written (or failed, logged). */
void persister_flush(struct persister *p);
/* Snapshots written so far. */
uint64_t persister_written(struct persister *p);
/* Writes what waits, stops the thread, frees. Accepts NULL. */
void persister_free(struct persister *p);

#endif
