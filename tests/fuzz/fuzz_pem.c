/* libFuzzer target for the certificate handling of the mTLS module: arbitrary bytes as PEM text
 * (certificate chains and keys, as mtls.ca_file and <cert_dir>/<service>.crt/.key are read), each
 * certificate's SPIFFE ID and summary, and the bytes as a SPIFFE URI. Checks the promises: a
 * parsed chain is non-empty, a SPIFFE ID that parses formats back to the same text, a summary's
 * strings are terminated. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/cert.h"
#include "mtls/spiffe.h"

static void check_spiffe(const char *s, size_t len)
{
	struct spiffe_id id;
	char out[SPIFFE_ID_MAX];
	int n;

	if (spiffe_parse(s, len, &id, NULL))
		return;
	n = spiffe_format(&id, out, sizeof(out));
	if (n < 0 || (size_t)n != len || memcmp(out, s, len))
		abort(); /* parse and format disagree */
}

static void check_cert(X509 *x)
{
	struct cert_info ci;
	struct spiffe_id id;
	char uri[SPIFFE_ID_MAX + 64];

	if (cert_get_info(x, &ci) == 0 && (memchr(ci.serial, 0, sizeof(ci.serial)) == NULL ||
					   memchr(ci.spiffe_id, 0, sizeof(ci.spiffe_id)) == NULL))
		abort();
	if (cert_spiffe_uri(x, uri, sizeof(uri)) == 0)
		check_spiffe(uri, strlen(uri));
	cert_spiffe_id(x, &id, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char why[128];
	STACK_OF(X509) * sk;
	EVP_PKEY *key;
	int err;

	check_spiffe((const char *)data, size);
	sk = cert_parse_chain((const char *)data, size, &err, why, sizeof(why));
	if (sk && sk_X509_num(sk) == 0)
		abort();
	for (int i = 0; sk && i < sk_X509_num(sk); i++)
		check_cert(sk_X509_value(sk, i));
	if (sk && (key = cert_parse_key((const char *)data, size, why, sizeof(why)))) {
		cert_key_matches(sk_X509_value(sk, 0), key);
		EVP_PKEY_free(key);
	}
	sk_X509_pop_free(sk, X509_free);
	return 0;
}
