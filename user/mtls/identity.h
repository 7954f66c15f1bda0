/* Caller identities from cgroups (`identities[]`): resolves each configured cgroup path to the
 * cgroup id the datapath sees (bpf_get_current_ancestor_cgroup_id), and resolves again when a
 * unit's cgroup is removed and recreated (inotify on the parent directories, plus a poll), so a
 * restarted unit keeps its identity. The datapath matches the outermost configured ancestor of
 * the caller's cgroup, so processes in descendant cgroups share the identity and a delegated
 * subtree cannot name another. Main loop thread. */
#ifndef MESH_MTLS_IDENTITY_H
#define MESH_MTLS_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"

/* Called with the current (cgroup id, identity hash) pairs whenever they change. */
typedef int (*identity_apply_fn)(void *ctx, const uint64_t *cgroup_ids, const uint32_t *identities,
				 size_t n);

struct identity_watch;

/* Resolves `cfg->identities` now (calling `apply` once) and keeps them resolved. Cgroups that do
 * not exist yet are watched for. NULL with errno. */
struct identity_watch *identity_watch_new(struct evloop *loop, const struct mesh_config *cfg,
					  identity_apply_fn apply, void *ctx);
/* Writes the pairs again although nothing changed (another watch wrote its own meanwhile, e.g.
 * the new config's during a reload that was then undone). Accepts NULL. */
void identity_watch_reapply(struct identity_watch *w);
void identity_watch_free(struct identity_watch *w);

/* The cgroup2 mount point (first in /proc/self/mounts) into buf. 0 or -ENOENT. */
int identity_cgroup2_mount(char *buf, size_t len);

#endif
