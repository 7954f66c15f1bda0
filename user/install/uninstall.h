/* Removing what meshd installs on a host: the one implementation behind `meshd --cleanup` and
 * `meshctl uninstall` (which used to be two drifting copies). Runs in the CLI process. */
#ifndef MESH_UNINSTALL_H
#define MESH_UNINSTALL_H

#include <stdio.h>

struct mesh_config;

/* Detaches and unpins the datapath under cfg->bpf_pin_path and removes cfg->admin_socket.
 * Says what it did, one line each on `out` ("removed datapath P (detached from C)", "no datapath
 * at P", "removed admin socket S"), and each failure on `err` prefixed with `prog` ("meshd: ").
 * Returns 0 when nothing of meshd's is left, else the first failure's -errno. It does not check
 * whether meshd still runs: a running daemon would re-create its socket, not its datapath. */
int uninstall_host(const struct mesh_config *cfg, const char *prog, FILE *out, FILE *err);

#endif
