/* The built-in CA (mtls.cert_source builtin_ca, `meshctl ca init`, `meshctl cert issue`):
 * creates a self-signed ECDSA P-256 root, loads a signing CA (the certificate in a bundle that
 * matches a key) and issues ECDSA P-256 leaf certificates whose one URI SAN is the service's
 * SPIFFE ID (serverAuth + clientAuth). Any thread; a loaded CA is read-only. */
#ifndef MESH_MTLS_CA_H
#define MESH_MTLS_CA_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdint.h>

struct ca;

/* Creates a CA for `trust_domain` valid `ttl_s` seconds: the key goes to `key_path` (mode
 * 0600, refused if it exists unless `force`), the certificate to `cert_path` (0644). Returns 0
 * or -errno with a phrase in `why`. */
int ca_create(const char *cert_path, const char *key_path, const char *trust_domain, uint64_t ttl_s,
	      int force, char *why, size_t wlen);

/* Loads the signing CA: the key in `key_path` and the CA certificate of `bundle_path` whose
 * public key it is. NULL with a phrase in `why`. */
struct ca *ca_load(const char *bundle_path, const char *key_path, char *why, size_t wlen);
void ca_free(struct ca *ca);
X509 *ca_cert(const struct ca *ca); /* borrowed */

/* Issues a leaf for `spiffe_id` (CN = `service`) valid from now - 1 min for `ttl_s` seconds
 * (never past the CA's own expiry). On success *leaf and *key belong to the caller. Returns 0
 * or -errno with `why`. */
int ca_issue(const struct ca *ca, const char *spiffe_id, const char *service, uint64_t ttl_s,
	     X509 **leaf, EVP_PKEY **key, char *why, size_t wlen);

/* A fresh ECDSA P-256 key, or NULL. */
EVP_PKEY *ca_new_key(void);

#endif
