/* Conversions between an endpoint (struct config_endpoint: family, address, host-order port) and
 * a socket address, for every module that binds, connects or accepts. Pure; any thread. */
#ifndef MESH_SOCKADDR_H
#define MESH_SOCKADDR_H

#include <sys/socket.h>

#include "config/config.h"

/* Fills `ss` from `ep` (port `ep->port`); returns the address length. */
socklen_t sockaddr_from_endpoint(const struct config_endpoint *ep, struct sockaddr_storage *ss);
/* Fills `ep` from an AF_INET or AF_INET6 address (anything else: family 0). */
void sockaddr_to_endpoint(const struct sockaddr_storage *ss, struct config_endpoint *ep);

#endif
