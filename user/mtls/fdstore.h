/* Listening sockets that outlive a meshd process, so a restart, an upgrade or a crash refuses no
 * connection: the kernel keeps queueing connections on a socket some process still holds, and
 * the next meshd accepts them. Under systemd the store is systemd's own (sd_notify FDSTORE=1,
 * handed back as LISTEN_FDS with LISTEN_FDNAMES); elsewhere a small holder process started from
 * meshd's binary (`meshd fdstore`) keeps copies on a unix socket in the state directory.
 * Sockets are stored under a name and the endpoint they are bound to. Main loop thread. */
#ifndef MESH_MTLS_FDSTORE_H
#define MESH_MTLS_FDSTORE_H

#include <stddef.h>

#include "config/config.h"

#define FDSTORE_MAX 64 /* sockets per name */

/* Where the holder lives (`dir`/fdstore.sock) and the binary that runs it. Before any other
 * call; `dir` NULL disables the holder (systemd's store is still used when present). */
void fdstore_init(const char *dir, const char *self_exe);
/* Copies of the sockets stored under `name` for `ep` into fds[0..max); returns how many. The
 * caller owns them. Sockets stored for another endpoint are closed and forgotten. */
size_t fdstore_take(const char *name, const struct config_endpoint *ep, int *fds, size_t max);
/* Stores copies of fds[0..n) under `name` (replacing what was there). Best effort: logged. */
void fdstore_keep(const char *name, const struct config_endpoint *ep, const int *fds, size_t n);
/* Forgets what is stored under `name` (its sockets close once meshd closes its own copies). */
void fdstore_release(const char *name);
/* Stops the holder (meshd --cleanup). 0, or -ENOENT when none ran. */
int fdstore_shutdown(const char *dir);

/* `meshd fdstore DIR`: the holder's main loop. Returns the exit status. */
int fdstore_holder_main(const char *dir);

#endif
