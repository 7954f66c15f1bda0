/* X.509/PEM helpers behind cert.h. Only this module and the rest of user/mtls/ call OpenSSL. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mtls/cert.h"

const char *cert_ssl_error(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	buf[0] = '\0';
	if (e)
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

char *cert_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0, cap = 4096;
	char *buf = NULL, *tmp;
	ssize_t r;

	if (fd < 0)
		return NULL;
	for (;;) {
		if (n + 1 >= cap || !buf) {
			cap = buf ? cap * 2 : cap;
			if (cap > CERT_FILE_MAX + 1 || !(tmp = realloc(buf, cap))) {
				errno = cap > CERT_FILE_MAX + 1 ? EFBIG : ENOMEM;
				goto err;
			}
			buf = tmp;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto err;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
err:
	r = errno;
	close(fd);
	free(buf);
	errno = (int)r;
	return NULL;
}

STACK_OF(X509) * cert_parse_chain(const char *pem, size_t len, int *err, char *why, size_t wlen)
{
	BIO *bio = BIO_new_mem_buf(pem, len > INT_MAX ? INT_MAX : (int)len);
	STACK_OF(X509) *sk = sk_X509_new_null();
	X509 *x;

	*err = -ENOMEM;
	snprintf(why, wlen, "out of memory");
	if (!bio || !sk)
		goto fail;
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			goto fail;
		}
	}
	/* The loop ends at the end of input (PEM_R_NO_START_LINE) or on a bad block. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		*err = -EINVAL;
		snprintf(why, wlen, "unreadable certificate %d", sk_X509_num(sk) + 1);
		goto fail;
	}
	ERR_clear_error();
	if (sk_X509_num(sk) == 0) {
		*err = -EINVAL;
		snprintf(why, wlen, "no certificate");
		goto fail;
	}
	BIO_free(bio);
	*err = 0;
	return sk;
fail:
	ERR_clear_error();
	BIO_free(bio);
	sk_X509_pop_free(sk, X509_free);
	return NULL;
}

EVP_PKEY *cert_parse_key(const char *pem, size_t len, char *why, size_t wlen)
{
	BIO *bio = BIO_new_mem_buf(pem, len > INT_MAX ? INT_MAX : (int)len);
	EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	if (!key)
		snprintf(why, wlen, "no readable private key");
	ERR_clear_error();
	BIO_free(bio);
	return key;
}

STACK_OF(X509) * cert_load_chain(const char *path, int *err, char *why, size_t wlen)
{
	char inner[128];
	size_t len;
	char *pem = cert_read_file(path, &len);
	STACK_OF(X509) * sk;

	if (!pem) {
		*err = -errno;
		snprintf(why, wlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	sk = cert_parse_chain(pem, len, err, inner, sizeof(inner));
	if (!sk)
		snprintf(why, wlen, "%s: %s", path, inner);
	free(pem);
	return sk;
}

EVP_PKEY *cert_load_key(const char *path, char *why, size_t wlen)
{
	char inner[128];
	size_t len;
	char *pem = cert_read_file(path, &len);
	EVP_PKEY *key;

	if (!pem) {
		snprintf(why, wlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	key = cert_parse_key(pem, len, inner, sizeof(inner));
	if (!key)
		snprintf(why, wlen, "%s: %s", path, inner);
	OPENSSL_cleanse(pem, len);
	free(pem);
	return key;
}

int cert_spiffe_uri(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	const unsigned char *uri = NULL;
	int n = 0, ulen = 0, err = 0;

	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);

		if (g->type != GEN_URI)
			continue;
		n++;
		uri = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
		ulen = ASN1_STRING_length(g->d.uniformResourceIdentifier);
	}
	if (n == 0)
		err = -ENOENT;
	else if (n > 1 || ulen < 9 || memcmp(uri, "spiffe://", 9) || memchr(uri, 0, (size_t)ulen))
		err = -EINVAL;
	else if ((size_t)ulen >= len)
		err = -ENOSPC;
	if (!err) {
		memcpy(buf, uri, (size_t)ulen);
		buf[ulen] = '\0';
	}
	GENERAL_NAMES_free(names);
	ERR_clear_error();
	return err;
}

int cert_spiffe_id(X509 *x, struct spiffe_id *id, const char **why)
{
	char uri[SPIFFE_ID_MAX + 64];
	int err = cert_spiffe_uri(x, uri, sizeof(uri));

	if (err) {
		if (why)
			*why = err == -ENOENT	? "no SPIFFE ID (URI SAN)"
			       : err == -ENOSPC ? "SPIFFE ID too long"
						: "not exactly one spiffe:// URI SAN";
		return err;
	}
	return spiffe_parse(uri, strlen(uri), id, why);
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return -1;
	return (int64_t)timegm(&tm);
}

int cert_get_info(X509 *x, struct cert_info *out)
{
	const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
	BIGNUM *bn = serial ? ASN1_INTEGER_to_BN(serial, NULL) : NULL;
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (cert_spiffe_uri(x, out->spiffe_id, sizeof(out->spiffe_id)))
		out->spiffe_id[0] = '\0';
	if (hex) {
		const char *h = hex;

		while (h[0] == '0' && h[1]) /* an integer: no leading zeros */
			h++;
		snprintf(out->serial, sizeof(out->serial), "%s", h);
		for (char *c = out->serial; *c; c++)
			*c = (char)(*c >= 'A' && *c <= 'F' ? *c - 'A' + 'a' : *c);
	} else {
		err = -EINVAL;
	}
	X509_NAME_oneline(X509_get_subject_name(x), out->subject, sizeof(out->subject));
	out->not_before = asn1_unix(X509_get0_notBefore(x));
	out->not_after = asn1_unix(X509_get0_notAfter(x));
	if (out->not_before < 0 || out->not_after < 0)
		err = -EINVAL;
	OPENSSL_free(hex);
	BN_free(bn);
	ERR_clear_error();
	return err;
}

int cert_key_matches(X509 *x, EVP_PKEY *key)
{
	int ok = X509_check_private_key(x, key);

	ERR_clear_error();
	return ok == 1 ? 0 : -EINVAL;
}

int cert_is_ca(X509 *x)
{
	return X509_check_ca(x) >= 1;
}

/* Opens `path`.tmp for writing with `mode`; returns a BIO owning the fd, or NULL. */
static BIO *open_tmp(const char *path, char *tmp, size_t len, mode_t mode)
{
	int fd;
	FILE *f;

	if ((size_t)snprintf(tmp, len, "%s.tmp%d", path, (int)getpid()) >= len) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return NULL;
	if (fchmod(fd, mode) < 0 || !(f = fdopen(fd, "w"))) {
		close(fd);
		unlink(tmp);
		return NULL;
	}
	return BIO_new_fp(f, BIO_CLOSE);
}

static int finish_tmp(BIO *bio, bool ok, const char *tmp, const char *path)
{
	int err = ok && BIO_flush(bio) == 1 ? 0 : -EIO;

	BIO_free(bio);
	if (!err && rename(tmp, path) < 0)
		err = -errno;
	if (err)
		unlink(tmp);
	ERR_clear_error();
	return err;
}

int cert_write_chain(const char *path, X509 *leaf, STACK_OF(X509) * rest, mode_t mode)
{
	char tmp[PATH_MAX];
	BIO *bio = open_tmp(path, tmp, sizeof(tmp), mode);
	bool ok;

	if (!bio)
		return -errno;
	ok = PEM_write_bio_X509(bio, leaf) == 1;
	for (int i = 0; ok && rest && i < sk_X509_num(rest); i++)
		ok = PEM_write_bio_X509(bio, sk_X509_value(rest, i)) == 1;
	return finish_tmp(bio, ok, tmp, path);
}

int cert_write_key(const char *path, EVP_PKEY *key, mode_t mode)
{
	char tmp[PATH_MAX];
	BIO *bio = open_tmp(path, tmp, sizeof(tmp), mode);

	if (!bio)
		return -errno;
	return finish_tmp(bio, PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1,
			  tmp, path);
}
