/* The built-in CA behind ca.h: key generation, the self-signed root, and leaf issuance. */
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mtls/ca.h"
#include "mtls/cert.h"

struct ca {
	X509 *cert;
	EVP_PKEY *key;
};

EVP_PKEY *ca_new_key(void)
{
	return EVP_EC_gen("P-256");
}

static int fail(char *why, size_t wlen, int err, const char *what)
{
	char e[160];

	cert_ssl_error(e, sizeof(e));
	snprintf(why, wlen, "%s%s%s", what, *e ? ": " : "", e);
	return err;
}

/* A random positive 127-bit serial (RFC 5280: at most 20 octets, positive). */
static int set_serial(X509 *x)
{
	unsigned char r[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(r, sizeof(r)) != 1)
		return -EIO;
	r[0] &= 0x7f;
	r[0] |= 0x01;
	bn = BN_bin2bn(r, sizeof(r), NULL);
	ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	return ok ? 0 : -ENOMEM;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* A certificate skeleton: version 3, serial, subject CN, validity [now - 60 s, not_after]. */
static X509 *new_cert(EVP_PKEY *pub, const char *cn, int64_t not_after)
{
	X509 *x = X509_new();
	X509_NAME *name;

	if (!x || !X509_set_version(x, 2) || set_serial(x) || !X509_set_pubkey(x, pub))
		goto err;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
					-1, 0))
		goto err;
	if (!X509_gmtime_adj(X509_getm_notBefore(x), -60) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after))
		goto err;
	return x;
err:
	X509_free(x);
	return NULL;
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* Builds the self-signed root for `trust_domain`. */
static X509 *root_cert(EVP_PKEY *key, const char *trust_domain, uint64_t ttl_s)
{
	char cn[300], uri[300];
	X509 *x;

	snprintf(cn, sizeof(cn), "Datapunk Mesh CA %s", trust_domain);
	snprintf(uri, sizeof(uri), "URI:spiffe://%s", trust_domain);
	x = new_cert(key, cn, now_s() + (int64_t)ttl_s);
	if (!x || !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
	    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    add_ext(x, x, NID_subject_key_identifier, "hash") ||
	    add_ext(x, x, NID_subject_alt_name, uri) || !X509_sign(x, key, EVP_sha256())) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int ca_create(const char *cert_path, const char *key_path, const char *trust_domain, uint64_t ttl_s,
	      int force, char *why, size_t wlen)
{
	EVP_PKEY *key;
	X509 *x;
	int err;

	if (!force && (access(key_path, F_OK) == 0 || access(cert_path, F_OK) == 0)) {
		snprintf(why, wlen, "%s or %s exists (use --force to replace it)", key_path,
			 cert_path);
		return -EEXIST;
	}
	key = ca_new_key();
	if (!key)
		return fail(why, wlen, -ENOMEM, "cannot generate the CA key");
	x = root_cert(key, trust_domain, ttl_s);
	if (!x) {
		EVP_PKEY_free(key);
		return fail(why, wlen, -EINVAL, "cannot build the CA certificate");
	}
	err = cert_write_key(key_path, key, 0600);
	if (err)
		snprintf(why, wlen, "%s: %s", key_path, strerror(-err));
	else if ((err = cert_write_chain(cert_path, x, NULL, 0644)))
		snprintf(why, wlen, "%s: %s", cert_path, strerror(-err));
	X509_free(x);
	EVP_PKEY_free(key);
	return err;
}

struct ca *ca_load(const char *bundle_path, const char *key_path, char *why, size_t wlen)
{
	struct ca *ca = calloc(1, sizeof(*ca));
	STACK_OF(X509) *sk = NULL;
	int err;

	if (!ca)
		return NULL;
	ca->key = cert_load_key(key_path, why, wlen);
	if (!ca->key)
		goto err;
	sk = cert_load_chain(bundle_path, &err, why, wlen);
	for (int i = 0; sk && i < sk_X509_num(sk) && !ca->cert; i++) {
		X509 *x = sk_X509_value(sk, i);

		if (cert_is_ca(x) && cert_key_matches(x, ca->key) == 0 && X509_up_ref(x))
			ca->cert = x;
	}
	if (sk && !ca->cert)
		snprintf(why, wlen, "%s: no CA certificate matches the key in %s", bundle_path,
			 key_path);
	sk_X509_pop_free(sk, X509_free);
	if (ca->cert)
		return ca;
err:
	ca_free(ca);
	return NULL;
}

void ca_free(struct ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	free(ca);
}

X509 *ca_cert(const struct ca *ca)
{
	return ca->cert;
}

/* The leaf's extensions: a SPIFFE SVID (RFC-less but the SPIFFE X.509-SVID spec). */
static int leaf_exts(X509 *x, X509 *issuer, const char *spiffe_id)
{
	char uri[SPIFFE_ID_MAX + 8];

	snprintf(uri, sizeof(uri), "URI:%s", spiffe_id);
	if (add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, issuer, NID_key_usage, "critical,digitalSignature,keyAgreement") ||
	    add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth") ||
	    add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") ||
	    add_ext(x, issuer, NID_subject_alt_name, uri))
		return -EINVAL;
	return 0;
}

int ca_issue(const struct ca *ca, const char *spiffe_id, const char *service, uint64_t ttl_s,
	     X509 **leaf, EVP_PKEY **key, char *why, size_t wlen)
{
	struct cert_info ci;
	int64_t until = now_s() + (int64_t)ttl_s;
	EVP_PKEY *k = ca_new_key();
	X509 *x = NULL;

	if (!k)
		return fail(why, wlen, -ENOMEM, "cannot generate a key");
	if (cert_get_info(ca->cert, &ci) == 0 && ci.not_after < until)
		until = ci.not_after;
	if (until <= now_s()) {
		EVP_PKEY_free(k);
		snprintf(why, wlen, "the CA certificate has expired");
		return -EKEYEXPIRED;
	}
	x = new_cert(k, service, until);
	if (!x || !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    leaf_exts(x, ca->cert, spiffe_id) || !X509_sign(x, ca->key, EVP_sha256())) {
		X509_free(x);
		EVP_PKEY_free(k);
		return fail(why, wlen, -EINVAL, "cannot sign the certificate");
	}
	*leaf = x;
	*key = k;
	return 0;
}
