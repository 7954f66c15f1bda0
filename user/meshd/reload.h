/* Hot reload internals (reload.c): the optional inotify watch on the config file. meshd_reload()
 * itself is declared in meshd.h. Loop thread only. */
#ifndef MESHD_RELOAD_H
#define MESHD_RELOAD_H

#include "meshd/meshd.h"

/* Watches the directory of m->config_path and calls meshd_reload() once the file has been quiet
 * for a short debounce after a write or a rename onto it. No-op without a config path or when
 * already watching. Returns 0 or -errno (logged). */
int config_watch_start(struct meshd *m);
/* Stops the watch and cancels a pending debounced reload. Safe when not watching. */
void config_watch_stop(struct meshd *m);

#endif
