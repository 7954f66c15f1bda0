/* The certificate store: the trust bundle and one certificate per local identity, as the TLS
 * contexts the proxy uses. Certificate sources (certsrc.h: files, builtin_ca, later consul) push
 * material in from the main loop; proxy threads take contexts for new connections. A new
 * certificate or bundle replaces the contexts; connections already established keep the
 * context they started with (reference counted), so rotation never drops a live connection.
 * Roots that leave the bundle stay trusted while certificates they signed may still be valid:
 * until the latest expiry of any leaf seen chaining to them (local or peer), and at least
 * `retain_ns` after removal, never past the root's own expiry. Thread-safe (one mutex). */
#ifndef MESH_MTLS_CERTS_H
#define MESH_MTLS_CERTS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "mtls/cert.h"

struct certs;

struct certs_opts {
	const char *trust_domain;
	const char *datacenter; /* node.datacenter: local identities' SPIFFE IDs */
	uint64_t retain_ns;	/* least time a removed root stays trusted */
};

/* NULL with errno. The store starts with no roots and no identities; refcount 1. */
struct certs *certs_new(const struct certs_opts *opts);
struct certs *certs_ref(struct certs *s);
void certs_unref(struct certs *s); /* accepts NULL */

/* Replaces the trust bundle with the CA certificates in `roots` (borrowed) at unix time `now`.
 * Every identity's contexts are rebuilt; an identity the new roots (with the retained ones) no
 * longer verify keeps its contexts and is reported in the log by the caller through the return
 * value. Returns 0, or -EINVAL when `roots` holds no CA certificate (why says so; nothing
 * changes). */
int certs_set_roots(struct certs *s, STACK_OF(X509) * roots, int64_t now, char *why, size_t wlen);
/* Installs `service`'s certificate (`leaf` + `chain`, may be NULL, with `key`; all borrowed) from
 * `source`. Checked first: key matches, SPIFFE ID is this mesh's ID for the service, valid at
 * `now`, chain verifies against the trust bundle. On failure nothing changes: the running
 * certificate stays. Returns 0 or -EINVAL/-EKEYEXPIRED/-ENOMEM with `why`. */
int certs_set_identity(struct certs *s, const char *service, X509 *leaf, STACK_OF(X509) * chain,
		       EVP_PKEY *key, const char *source, int64_t now, char *why, size_t wlen);
/* Records a failed update of `service` (kept for meshctl); NULL clears it. */
void certs_set_error(struct certs *s, const char *service, const char *error);
/* Removes `service`'s certificate (no longer a local identity). */
void certs_drop_identity(struct certs *s, const char *service);
/* Drops retained roots whose time is over at `now`; returns how many (contexts rebuilt). */
int certs_expire_roots(struct certs *s, int64_t now);

/* A new reference to the context presenting `service`'s certificate, or NULL (errno ENOENT)
 * when the service has none. Any thread. */
SSL_CTX *certs_client_ctx(struct certs *s, const char *service);
SSL_CTX *certs_server_ctx(struct certs *s, const char *service);
/* The accepting context (selects the service's context by SNI). A new reference. */
SSL_CTX *certs_dispatch_ctx(struct certs *s);
/* A verified peer's chain ended at `root`: remembers the leaf's expiry for root retention. */
void certs_note_peer(struct certs *s, X509 *root, X509 *leaf);

const char *certs_trust_domain(const struct certs *s);
/* Copies the trust domain into buf (at least SPIFFE_DOMAIN_MAX + 1 bytes). Any thread. */
void certs_get_trust_domain(struct certs *s, char *buf, size_t len);
/* Replaces the trust domain (cert_source consul learns it from Consul's roots): identities
 * installed later and peers verified later must be in it. Main loop. */
void certs_set_trust_domain(struct certs *s, const char *trust_domain);

/* Calls `cb(arg, service)` after a new certificate for `service` was installed, or
 * `cb(arg, NULL)` after the trust roots changed; on the thread that made the change (the main
 * loop: sources run there). One listener; NULL removes it. */
void certs_on_change(struct certs *s, void (*cb)(void *arg, const char *service), void *arg);

/* One identity or root, for listings (valid during the callback). */
struct certs_entry {
	bool root;		/* a trust root (else an identity) */
	const char *service;	/* identities */
	const char *source;	/* identities: "files", "builtin_ca", "consul" */
	const char *error;	/* identities: last failed update, NULL when none */
	bool has_cert;		/* identities: a certificate is installed */
	struct cert_info info;	/* when has_cert / for roots */
	int64_t retained_until; /* roots: 0 = in the bundle, else unix time it is dropped */
	uint64_t generation;	/* identities: bumped on each installed certificate */
};
/* Calls cb for each identity (in the order first seen) then each root. Returns 0 or -errno. */
int certs_list(struct certs *s, void (*cb)(const struct certs_entry *e, void *arg), void *arg);

/* Earliest not-after of the installed identity certificates (unix s), 0 with none. */
int64_t certs_next_expiry(struct certs *s);

#endif
