/* The mTLS port each backend's host listens on when it is not this host's mtls.inbound_listen
 * port (Consul's `mesh-port` meta, carried by discovery in config_backend.mesh_port). Written by
 * the main loop at every discovery change, read by the proxy threads when they dial a backend. */
#ifndef MESH_MTLS_MESHPORTS_H
#define MESH_MTLS_MESHPORTS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct meshports;

/* An empty table, or NULL + errno. */
struct meshports *meshports_new(void);
/* Accepts NULL. */
void meshports_free(struct meshports *t);

/* Replaces the entries of service `name` with those of `svc` (its VIP, each backend with a
 * non-zero mesh_port); `svc` NULL removes them. 0 or -ENOMEM (then the service's entries are
 * gone: its backends are dialled at the default port). Main loop. */
int meshports_set(struct meshports *t, const char *name, const struct config_service *svc);

/* The mesh port of `backend` in the service at `vip`, 0 when it has none. Any thread. */
uint16_t meshports_get(struct meshports *t, const struct config_endpoint *vip,
		       const struct config_endpoint *backend);

#endif
