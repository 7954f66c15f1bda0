/* TLS contexts and peer verification behind tls.h. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "mtls/cert.h"
#include "mtls/certs.h"
#include "mtls/tls.h"

static int peer_idx = -1;
static const unsigned char alpn_h2[] = { 2, 'h', '2' };

int tls_init(void)
{
	if (peer_idx < 0)
		peer_idx = SSL_get_ex_new_index(0, "mesh tls peer", NULL, NULL, NULL);
	return peer_idx < 0 ? -ENOMEM : 0;
}

static struct tls_peer *peer_of(SSL *ssl)
{
	return ssl ? SSL_get_ex_data(ssl, peer_idx) : NULL;
}

static void set_reason(struct tls_peer *p, const char *reason, const char *detail)
{
	if (p->reason)
		return;
	p->reason = reason;
	snprintf(p->detail, sizeof(p->detail), "%.*s", (int)sizeof(p->detail) - 1, detail);
}

static const char *x509_reason(int err)
{
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return TLS_R_EXPIRED;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return TLS_R_NOT_YET_VALID;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_CERT_UNTRUSTED:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		return TLS_R_UNKNOWN_CA;
	default:
		return TLS_R_BAD_CERT;
	}
}

/* The leaf passed the chain check: now its SPIFFE ID. Returns 1 to accept. */
static int check_leaf(X509_STORE_CTX *x, struct tls_peer *p)
{
	X509 *leaf = X509_STORE_CTX_get_current_cert(x);
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(x);
	char detail[2 * SPIFFE_ID_MAX + 64];
	struct cert_info ci;
	struct spiffe_id id;
	const char *why = NULL;

	if (cert_spiffe_id(leaf, &id, &why)) {
		set_reason(p, TLS_R_SPIFFE_ID, why);
		return 0;
	}
	spiffe_format(&id, p->id_str, sizeof(p->id_str));
	if (strcmp(id.trust_domain, p->trust_domain)) {
		snprintf(detail, sizeof(detail), "%s is not in trust domain %s", p->id_str,
			 p->trust_domain);
		set_reason(p, TLS_R_TRUST_DOMAIN, detail);
		return 0;
	}
	if (strcmp(id.ns, "default") || (!p->server && strcmp(id.service, p->service))) {
		snprintf(detail, sizeof(detail), "%s is not service %s", p->id_str,
			 p->server ? "in namespace default" : p->service);
		set_reason(p, TLS_R_SPIFFE_ID, detail);
		return 0;
	}
	p->id = id;
	if (cert_get_info(leaf, &ci) == 0)
		snprintf(p->serial, sizeof(p->serial), "%s", ci.serial);
	if (p->store && chain && sk_X509_num(chain) > 1)
		certs_note_peer(p->store, sk_X509_value(chain, sk_X509_num(chain) - 1), leaf);
	return 1;
}

static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_peer *p = peer_of(ssl);
	int err = X509_STORE_CTX_get_error(x), depth = X509_STORE_CTX_get_error_depth(x);
	char detail[160];

	if (!p)
		return 0;
	if (!ok) {
		snprintf(detail, sizeof(detail), "certificate at depth %d: %s", depth,
			 X509_verify_cert_error_string(err));
		set_reason(p, x509_reason(err), detail);
		return 0;
	}
	if (depth != 0)
		return 1;
	if (check_leaf(x, p))
		return 1;
	X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	struct tls_peer *p = peer_of(ssl);
	unsigned char *sel;

	if (SSL_select_next_proto(&sel, outlen, alpn_h2, sizeof(alpn_h2), in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED) {
		*out = sel;
		return SSL_TLSEXT_ERR_OK;
	}
	if (p)
		set_reason(p, TLS_R_NO_ALPN, "client did not offer ALPN h2");
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Settings every context shares. */
static int ctx_common(SSL_CTX *ctx, bool server)
{
	long opts = SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
		    SSL_OP_IGNORE_UNEXPECTED_EOF; /* HTTP/2 frames its own ends */

	SSL_CTX_set_options(ctx, opts);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* Buffers stay allocated while a connection lives: releasing them costs an allocation on
	 * every message, and tunnels are pooled, few. Read-ahead takes what the socket holds in one
	 * read(2) instead of a header read and a body read per record. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
					   "TLS_CHACHA20_POLY1305_SHA256") ||
	    !SSL_CTX_set1_groups_list(ctx, "X25519:P-256"))
		return -EINVAL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
			   verify_cb);
	SSL_CTX_set_verify_depth(ctx, 8);
	if (server)
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	return 0;
}

SSL_CTX *tls_ctx_new(bool server, X509 *leaf, STACK_OF(X509) * chain, EVP_PKEY *key,
		     X509_STORE *roots)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

	if (!ctx)
		goto err;
	if (ctx_common(ctx, server) || !SSL_CTX_use_cert_and_key(ctx, leaf, key, chain, 1))
		goto err;
	SSL_CTX_set1_cert_store(ctx, roots);
	ERR_clear_error();
	return ctx;
err:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	errno = EINVAL;
	return NULL;
}

struct dispatch {
	SSL_CTX *(*select)(void *arg, const char *service);
	void *arg;
};

static int dispatch_idx = -1;

static int servername_cb(SSL *ssl, int *al, void *arg)
{
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct dispatch *d = arg;
	struct tls_peer *p = peer_of(ssl);
	SSL_CTX *ctx = name ? d->select(d->arg, name) : NULL;
	char detail[128];

	if (!p)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	if (!ctx) {
		snprintf(detail, sizeof(detail), "no local service \"%.64s\"", name ? name : "");
		set_reason(p, TLS_R_UNKNOWN_SERVICE, detail);
		*al = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	snprintf(p->service, sizeof(p->service), "%s", name);
	SSL_set_SSL_CTX(ssl, ctx);
	/* The client chain is verified against the selected service's roots. */
	SSL_set1_verify_cert_store(ssl, SSL_CTX_get_cert_store(ctx));
	SSL_CTX_free(ctx);
	return SSL_TLSEXT_ERR_OK;
}

static void dispatch_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			  void *argp)
{
	free(ptr);
}

SSL_CTX *tls_ctx_dispatch(SSL_CTX *(*select)(void *arg, const char *service), void *arg)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	struct dispatch *d = calloc(1, sizeof(*d));

	if (dispatch_idx < 0)
		dispatch_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, dispatch_free);
	if (!ctx || !d || dispatch_idx < 0 || ctx_common(ctx, true) ||
	    !SSL_CTX_set_ex_data(ctx, dispatch_idx, d)) {
		free(d);
		SSL_CTX_free(ctx);
		ERR_clear_error();
		errno = ENOMEM;
		return NULL;
	}
	d->select = select;
	d->arg = arg;
	SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, d);
	return ctx;
}

int tls_peer_attach(SSL *ssl, struct tls_peer *peer)
{
	if (!SSL_set_ex_data(ssl, peer_idx, peer))
		return -ENOMEM;
	if (peer->server)
		return 0;
	if (!SSL_set_tlsext_host_name(ssl, peer->service) ||
	    SSL_set_alpn_protos(ssl, alpn_h2, sizeof(alpn_h2)))
		return -ENOMEM;
	return 0;
}

/* Reason of a failure OpenSSL reported (an alert from the peer, a protocol error). */
static const char *lib_reason(int r, bool server)
{
	switch (r) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		return TLS_R_NO_CERT;
	case SSL_R_NO_APPLICATION_PROTOCOL:
	case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
		return TLS_R_NO_ALPN;
	case SSL_R_TLSV1_UNRECOGNIZED_NAME:
		return TLS_R_UNKNOWN_SERVICE;
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
	case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
	case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
	case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
		return TLS_R_PEER_REJECTED;
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_UNKNOWN_PROTOCOL:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
		return server ? TLS_R_NOT_TLS : TLS_R_PROTOCOL;
	default:
		return TLS_R_PROTOCOL;
	}
}

const char *tls_handshake_failed(SSL *ssl, struct tls_peer *peer, int ret)
{
	unsigned long e = ERR_peek_error();
	int err = SSL_get_error(ssl, ret);
	char buf[160];

	if (!peer->reason) {
		if (e) {
			ERR_error_string_n(e, buf, sizeof(buf));
			set_reason(peer, lib_reason(ERR_GET_REASON(e), peer->server), buf);
		} else if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && !ret)) {
			set_reason(peer, TLS_R_CLOSED, "connection closed during the handshake");
		} else {
			snprintf(buf, sizeof(buf), "handshake failed: %s",
				 err == SSL_ERROR_SYSCALL ? strerror(errno) : "TLS error");
			set_reason(peer, TLS_R_PROTOCOL, buf);
		}
	}
	ERR_clear_error();
	return peer->reason;
}

const char *tls_handshake_done(SSL *ssl, struct tls_peer *peer)
{
	const unsigned char *p;
	unsigned int len;

	SSL_get0_alpn_selected(ssl, &p, &len);
	if (len != 2 || memcmp(p, "h2", 2))
		set_reason(peer, TLS_R_NO_ALPN, "peer did not select ALPN h2");
	else if (!peer->id_str[0] || SSL_get_verify_result(ssl) != X509_V_OK)
		set_reason(peer, TLS_R_NO_CERT, "peer presented no verified certificate");
	return peer->reason;
}
