/* X.509 and PEM helpers of the mTLS module (OpenSSL stays inside user/mtls/): reading
 * certificate chains and private keys from PEM text or files, a certificate's SPIFFE ID (its one
 * URI SAN), serial and validity, key/certificate matching, and writing PEM files with a mode.
 * Errors come back as -errno with a human phrase in a caller buffer. Any thread. */
#ifndef MESH_MTLS_CERT_H
#define MESH_MTLS_CERT_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mtls/spiffe.h"

#define CERT_FILE_MAX (1024 * 1024) /* largest PEM file read */
#define CERT_SERIAL_MAX 80	    /* hex digits of a serial, NUL included */

/* Summary of one certificate, for logs, meshctl and metrics. */
struct cert_info {
	char spiffe_id[SPIFFE_ID_MAX]; /* "" when it has none */
	char serial[CERT_SERIAL_MAX];  /* lowercase hex */
	char subject[256];
	int64_t not_before, not_after; /* unix seconds */
};

/* Reads a whole file (at most CERT_FILE_MAX bytes) into a NUL-terminated buffer the caller
 * frees. NULL with errno set. */
char *cert_read_file(const char *path, size_t *len);

/* Every CERTIFICATE block of `pem` (other blocks are skipped). Returns the stack (caller frees
 * with sk_X509_pop_free(s, X509_free)), or NULL with -EINVAL / -ENOMEM in *err and a phrase in
 * why ("no certificate", "bad certificate 2"). */
STACK_OF(X509) * cert_parse_chain(const char *pem, size_t len, int *err, char *why, size_t wlen);
/* The first private key of `pem`, or NULL (why says so). */
EVP_PKEY *cert_parse_key(const char *pem, size_t len, char *why, size_t wlen);
/* The same from files; `why` names the file. */
STACK_OF(X509) * cert_load_chain(const char *path, int *err, char *why, size_t wlen);
EVP_PKEY *cert_load_key(const char *path, char *why, size_t wlen);

/* The SPIFFE ID of `x`: its single URI SAN, which must start with spiffe://. Returns 0 and
 * copies it into buf, -ENOENT when it has no URI SAN, -EINVAL for several URIs or a non-SPIFFE
 * one, -ENOSPC when buf is too small. */
int cert_spiffe_uri(X509 *x, char *buf, size_t len);
/* Parses that URI too. Returns 0 or the errors above; `why` (may be NULL) gets a phrase. */
int cert_spiffe_id(X509 *x, struct spiffe_id *id, const char **why);

/* Fills `out` from `x` (0, or -EINVAL when a field cannot be read). */
int cert_get_info(X509 *x, struct cert_info *out);
/* 0 when `key` is the private key of `x`'s public key, else -EINVAL. */
int cert_key_matches(X509 *x, EVP_PKEY *key);
/* True when `x` is a CA certificate (basicConstraints CA:TRUE). */
int cert_is_ca(X509 *x);

/* Writes PEM text of the certificates / the key to `path` atomically (temp file + rename) with
 * `mode`; an existing file is replaced. Returns 0 or -errno. */
int cert_write_chain(const char *path, X509 *leaf, STACK_OF(X509) * rest, mode_t mode);
int cert_write_key(const char *path, EVP_PKEY *key, mode_t mode);

/* Last OpenSSL error as text ("" when none), and clears the queue. */
const char *cert_ssl_error(char *buf, size_t len);

#endif
