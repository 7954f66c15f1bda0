/* Certificate sources: what keeps the store (certs.h) filled for the local identities. One
 * table entry per `mtls.cert_source`; a source loads its material synchronously when opened (so
 * a start or reload with an unreadable bundle fails as a whole), then watches or renews on the
 * main loop and pushes changes into the store. An identity whose certificate cannot be had is
 * logged and shown by `meshctl identities`; its connections fail until it appears. The
 * `consul` source (Connect CA) fetches from the agent: it waits a bounded time for the first
 * answers at open. The proxy only sees the store. Main loop thread only. Also the shared pieces: file change watching and the root expiry timer. */
#ifndef MESH_MTLS_CERTSRC_H
#define MESH_MTLS_CERTSRC_H

#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"
#include "mtls/certs.h"

struct certsrc_ops;

/* The head of every source's state. */
struct certsrc {
	const struct certsrc_ops *ops;
};

struct certsrc_cfg {
	const struct mesh_config *config; /* the rest (consul: discovery.consul's agent keys) */
	const struct config_mtls *mtls;
	const char *trust_domain;
	const char *datacenter;
	const char *const *services; /* local identities, each once */
	size_t n_services;
	bool must_load; /* a reload: fail unless the material could be had now */
};

struct certsrc_ops {
	const char *name;
	struct certsrc *(*open)(struct evloop *loop, struct certs *store,
				const struct certsrc_cfg *cfg, char *why, size_t wlen);
	void (*close)(struct certsrc *src);
};

/* The source for `kind`, or NULL when this build has none. */
const struct certsrc_ops *certsrc_find(enum config_cert_source kind);

/* Opens the source `cfg->mtls->cert_source` on `store`. NULL with `why` on failure. */
struct certsrc *certsrc_open(struct evloop *loop, struct certs *store,
			     const struct certsrc_cfg *cfg, char *why, size_t wlen);
void certsrc_close(struct certsrc *src); /* accepts NULL */

/* --- shared by the sources --------------------------------------------------------------------- */

/* Calls `cb(arg)` (debounced) when any of `paths` may have changed: inotify on their
 * directories, plus a slow poll for changes inotify cannot see (a bind mount, a symlink swap
 * in a parent). */
struct filewatch;
struct filewatch *filewatch_new(struct evloop *loop, const char *const *paths, size_t n,
				void (*cb)(void *arg), void *arg);
/* Also watches the entries of directory `dir` itself. 0 or -errno (then only the poll sees it). */
int filewatch_add_dir(struct filewatch *w, const char *dir);
void filewatch_free(struct filewatch *w);

/* SHA-256 of a file's contents, to tell a real change from a touch. 0 or -errno. */
int certsrc_file_digest(const char *path, unsigned char out[32]);

/* Unix time now. */
int64_t certsrc_now(void);

#endif
