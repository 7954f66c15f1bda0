/* Whether a path can be changed by someone other than root and us: the check behind a private
 * unix socket (meshd's admin socket). A socket in a directory another user may write to can be
 * removed and replaced by theirs, which would then answer root's meshctl. Pure checks with
 * stat(2), no side effects; any thread. */
#ifndef MESH_PATHPERM_H
#define MESH_PATHPERM_H

#include <stddef.h>
#include <sys/types.h>

/* Checks directory `dir` and every directory above it. `dir` itself must be owned by root or
 * `uid` and writable by no one else (no group or other write bit). Each directory above must be
 * owned by root or `uid` and either writable by no one else or sticky (like /tmp, where others
 * cannot remove or rename what is not theirs). A missing `dir` is judged by the directories above
 * it (the caller creates it, its own and private, and checks again). Returns 0, or -EPERM (or -errno of stat) with the
 * directory at fault and why in `why` ("/tmp/x: writable by others (mode 0777)"). */
int pathperm_private_dir(const char *dir, uid_t uid, char *why, size_t len);

/* Same for the directory holding `path` (its dirname). */
int pathperm_private_parent(const char *path, uid_t uid, char *why, size_t len);

#endif
