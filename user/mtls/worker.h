/* Proxy workers (worker.c): creation, start, the messages the main loop posts to them, stop. */
#ifndef MESH_MTLS_WORKER_H
#define MESH_MTLS_WORKER_H

#include "mtls/proxy.h"

struct worker *worker_new(struct mtls *px, int index);
int worker_start(struct worker *w);
/* Hands the worker new settings / store / policy (any may be NULL: unchanged); references are
 * taken. A new policy re-checks its established inbound connections. 0 or -errno. */
int worker_update(struct worker *w, struct snap *snap, struct certs *certs,
		  struct authz_policy *policy);
/* Replaces the listeners the worker accepts on (fds stay owned by the caller). 0 or -errno. */
int worker_listen(struct worker *w, const int *out, size_t n_out, const int *in, size_t n_in);
/* Stops accepting and sends GOAWAY on inbound tunnels; live connections go on. */
int worker_drain(struct worker *w);
/* Tunnels using `service`'s certificate (NULL: every tunnel) take no new streams. 0 or -errno. */
int worker_retire(struct worker *w, const char *service);
/* Proxied connections the worker holds (relaxed). */
unsigned worker_connections(struct worker *w);
/* Calls cb for each pooled tunnel of the worker, on its thread (the caller waits). */
void worker_pool(struct worker *w, void (*cb)(const struct mtls_pool_entry *e, void *arg),
		 void *arg);
/* Closes every connection, stops and joins the thread, frees. Accepts NULL. */
void worker_free(struct worker *w);

#endif
