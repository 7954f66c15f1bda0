/* TLS settings of the tunnel, in one place: TLS 1.3 only, ALPN "h2", ECDSA certificates, no
 * session resumption (every connection verifies the peer afresh), partial writes, read-ahead. Builds the SSL_CTXs the certificate store hands out, verifies peers
 * (chain against the trust bundle, then the SPIFFE ID: trust domain, namespace, and on the client
 * the destination service), and turns a failed handshake into a short reason token for metrics
 * and logs. Contexts are immutable once built; any thread. */
#ifndef MESH_MTLS_TLS_H
#define MESH_MTLS_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "mtls/spiffe.h"

struct certs;

/* What one side of a TLS connection expects and learns about its peer; attached to the SSL
 * with tls_peer_attach() and owned by the connection. */
struct tls_peer {
	struct certs *store; /* peer roots are reported to it (root retention); may be NULL */
	char trust_domain[SPIFFE_DOMAIN_MAX + 1];
	char service[SPIFFE_SEGMENT_MAX + 1]; /* client: destination; server: SNI-selected */
	bool server;
	/* Results. */
	struct spiffe_id id;		  /* the peer's, once verified */
	char id_str[SPIFFE_ID_MAX];	  /* "" until then */
	char serial[80];		  /* of its certificate, "" until verified */
	const char *reason;		  /* first failure token, NULL when none */
	char detail[SPIFFE_ID_MAX + 160]; /* human detail of that failure */
};

/* Handshake failure reasons (the `reason` label of meshd_mtls_handshakes_total). */
#define TLS_R_UNKNOWN_CA "unknown_ca"
#define TLS_R_EXPIRED "expired"
#define TLS_R_NOT_YET_VALID "not_yet_valid"
#define TLS_R_BAD_CERT "bad_certificate"
#define TLS_R_SPIFFE_ID "spiffe_id"
#define TLS_R_TRUST_DOMAIN "trust_domain"
#define TLS_R_NO_CERT "no_certificate"
#define TLS_R_NOT_TLS "not_tls"
#define TLS_R_NO_ALPN "no_alpn"
#define TLS_R_UNKNOWN_SERVICE "unknown_service"
#define TLS_R_PEER_REJECTED "peer_rejected"
#define TLS_R_TIMEOUT "timeout"
#define TLS_R_CONNECT "connect_failed"
#define TLS_R_CLOSED "closed"
#define TLS_R_PROTOCOL "protocol_error"
#define TLS_R_NO_IDENTITY "no_certificate_for_identity"

/* One-time library setup (ex_data index); call before any other function. 0 or -ENOMEM. */
int tls_init(void);

/* A context presenting `leaf` (+ `chain`, may be NULL) with `key`, verifying peers against
 * `roots` (up-referenced). `server` selects the accepting role. NULL with errno. */
SSL_CTX *tls_ctx_new(bool server, X509 *leaf, STACK_OF(X509) * chain, EVP_PKEY *key,
		     X509_STORE *roots);
/* The accepting context before SNI is known: its servername callback asks `select(arg, name)`
 * for the service's server context (a new reference, or NULL for an unknown name). */
SSL_CTX *tls_ctx_dispatch(SSL_CTX *(*select)(void *arg, const char *service), void *arg);

/* Attaches `peer` to `ssl` (client: also sets SNI to peer->service and ALPN h2). 0 or -ENOMEM. */
int tls_peer_attach(SSL *ssl, struct tls_peer *peer);

/* After SSL_do_handshake() returned `ret` <= 0 with SSL_ERROR_SSL / SYSCALL / ZERO_RETURN:
 * sets peer->reason and peer->detail (keeping a reason the verify callback set) and returns
 * the reason. Clears the OpenSSL error queue. */
const char *tls_handshake_failed(SSL *ssl, struct tls_peer *peer, int ret);
/* After a completed handshake: checks ALPN and that the peer was verified. Returns NULL when
 * fine, else the reason (also stored). */
const char *tls_handshake_done(SSL *ssl, struct tls_peer *peer);

#endif
