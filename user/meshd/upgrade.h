/* Graceful restart and upgrade (upgrade.c). */
#ifndef MESHD_UPGRADE_H
#define MESHD_UPGRADE_H

#include "meshd/meshd.h"

/* Remembers argv and this binary's path (before anything can replace it). main() calls it. */
void upgrade_init(char **argv);
const char *upgrade_self_exe(void);
/* SIGUSR2: starts the new meshd and hands over when it is ready. 0 or -errno. */
int meshd_upgrade(struct meshd *m);
/* In a meshd started by an upgrade: tells the previous one it is ready. */
void upgrade_notify_ready(void);
/* After the loop ends: closes what a hand-over kept running (the drained proxy). */
void upgrade_finish(struct meshd *m);

#endif
