/* The Consul KV config source (config_kv.c): the document at `config_source.consul_kv`, layered
 * over the config file, watched with blocking queries and applied as reloads, and kept under
 * state_dir so a restart while Consul is down starts with it. Loop thread only. */
#ifndef MESHD_CONFIG_KV_H
#define MESHD_CONFIG_KV_H

#include "meshd/meshd.h"

/* The name of the file under state_dir holding the last applied KV document: its first line is
 * the key, the rest the document as Consul returned it. */
#define CONFIG_KV_STATE_FILE "config_kv.state"

/* At start, after m->cfg was loaded from the file alone: with config_source.consul_kv set and a
 * document persisted for that key, replaces m->cfg by the file with that document over it and
 * sets m->kv_doc (an unusable document is logged and the file alone stays). Returns 0, or
 * -ENOMEM. */
int config_kv_boot(struct meshd *m);
/* Starts watching the key (a no-op without config_source.consul_kv). 0 or -errno (logged). */
int config_kv_start(struct meshd *m);
/* Restarts the watch when the agent settings it reads with differ between `old` and `new`
 * (a reload hook: the reverse reload puts the old watch back). 0 or -errno. */
int config_kv_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new);
/* Stops the watch and frees what config_kv_boot() kept (m->kv_doc included). Safe when idle. */
void config_kv_stop(struct meshd *m);
/* m->kv_doc became the running document (reload.c, after a commit): persists it, or removes
 * the persisted one when it is NULL. Failures are logged; the running config is not affected. */
void config_kv_applied(struct meshd *m);

#endif
