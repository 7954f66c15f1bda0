/* Offline PKI for meshctl (mtls.h): `ca init` and `cert issue`, on top of ca.c and cert.c. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "mtls/ca.h"
#include "mtls/cert.h"
#include "mtls/mtls.h"
#include "mtls/spiffe.h"

int mtls_ca_init(const char *cert_path, const char *key_path, const char *trust_domain,
		 uint64_t ttl_s, bool force, char *why, size_t wlen)
{
	if (!spiffe_domain_valid(trust_domain, strlen(trust_domain))) {
		snprintf(why, wlen, "invalid trust domain \"%s\"", trust_domain);
		return -EINVAL;
	}
	return ca_create(cert_path, key_path, trust_domain, ttl_s, force, why, wlen);
}

int mtls_cert_issue(const char *ca_cert, const char *ca_key, const char *service,
		    const char *trust_domain, const char *dc, uint64_t ttl_s, const char *dir,
		    char *serial, size_t slen, char *spiffe_id, size_t ilen, char *why, size_t wlen)
{
	char crt[PATH_MAX], key[PATH_MAX];
	struct ca *ca = ca_load(ca_cert, ca_key, why, wlen);
	struct cert_info ci;
	EVP_PKEY *k = NULL;
	X509 *leaf = NULL;
	int err;

	if (!ca)
		return -EINVAL;
	err = spiffe_service_id(trust_domain, dc, service, spiffe_id, ilen) < 0 ? -EINVAL : 0;
	if (err)
		snprintf(why, wlen, "no SPIFFE ID for service \"%s\"", service);
	if (!err)
		err = ca_issue(ca, spiffe_id, service, ttl_s, &leaf, &k, why, wlen);
	snprintf(crt, sizeof(crt), "%s/%s.crt", dir, service);
	snprintf(key, sizeof(key), "%s/%s.key", dir, service);
	/* The key first: a reader watching the directory then never pairs a new certificate with
	 * the old key for long. */
	if (!err && (err = cert_write_key(key, k, 0600)))
		snprintf(why, wlen, "%s: %s", key, strerror(-err));
	if (!err && (err = cert_write_chain(crt, leaf, NULL, 0644)))
		snprintf(why, wlen, "%s: %s", crt, strerror(-err));
	if (!err && cert_get_info(leaf, &ci) == 0)
		snprintf(serial, slen, "%s", ci.serial);
	X509_free(leaf);
	EVP_PKEY_free(k);
	ca_free(ca);
	return err;
}
