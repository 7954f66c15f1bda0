/* `meshctl check`'s certificate checks (mtls.h: mtls_check_material): everything the running
 * proxy would need from the configured source, read the same way, one line per check: the trust
 * bundle; with cert_source files each identity's pair (readable, key matches, this mesh's SPIFFE
 * ID, valid now, chained to the bundle, key not readable by others); with builtin_ca the signing
 * CA and its key. Any thread; reads files only. */
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mtls/ca.h"
#include "mtls/cert.h"
#include "mtls/mtls.h"
#include "mtls/spiffe.h"

#define DAY_S 86400

struct checker {
	void (*line)(bool ok, const char *what, const char *detail, void *arg);
	void *arg;
	int failures;
};

static void say(struct checker *c, bool ok, const char *what, const char *detail)
{
	c->line(ok, what, detail, c->arg);
	c->failures += !ok;
}

static X509_STORE *bundle(struct checker *c, const char *path)
{
	char why[512], detail[640];
	STACK_OF(X509) * sk;
	X509_STORE *st;
	int err, cas = 0;

	sk = cert_load_chain(path, &err, why, sizeof(why));
	if (!sk) {
		say(c, false, "mTLS trust bundle", why);
		return NULL;
	}
	st = X509_STORE_new();
	for (int i = 0; st && i < sk_X509_num(sk); i++) {
		X509 *x = sk_X509_value(sk, i);

		if (cert_is_ca(x) && X509_STORE_add_cert(st, x))
			cas++;
	}
	snprintf(detail, sizeof(detail), "%s: %d CA certificate(s)", path, cas);
	say(c, cas > 0, "mTLS trust bundle", cas ? detail : "no CA certificate in the bundle");
	sk_X509_pop_free(sk, X509_free);
	ERR_clear_error();
	if (!cas) {
		X509_STORE_free(st);
		return NULL;
	}
	return st;
}

static const char *verify(X509_STORE *st, X509 *leaf, STACK_OF(X509) * chain)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	const char *why = NULL;

	if (!ctx || !X509_STORE_CTX_init(ctx, st, leaf, chain) || X509_verify_cert(ctx) != 1)
		why = ctx ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx))
			  : "out of memory";
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return why;
}

/* What is wrong with a pair, or NULL; `detail` gets the summary. */
static const char *pair_problem(const struct mesh_config *cfg, const char *svc, X509_STORE *st,
				const char *crt, const char *key, char *detail, size_t len)
{
	static char why[512];
	char want[SPIFFE_ID_MAX];
	STACK_OF(X509) * chain;
	struct cert_info ci;
	struct stat sb;
	EVP_PKEY *pk;
	X509 *leaf;
	const char *bad = NULL;
	int err;

	if (!(chain = cert_load_chain(crt, &err, why, sizeof(why))))
		return why;
	if (!(pk = cert_load_key(key, why, sizeof(why)))) {
		sk_X509_pop_free(chain, X509_free);
		return why;
	}
	leaf = sk_X509_shift(chain);
	spiffe_service_id(cfg->mtls.trust_domain,
			  cfg->node_datacenter ? cfg->node_datacenter : "dc1", svc, want,
			  sizeof(want));
	cert_get_info(leaf, &ci);
	snprintf(detail, len, "%s serial %s, expires in %.1f days", ci.spiffe_id, ci.serial,
		 (double)(ci.not_after - (int64_t)time(NULL)) / DAY_S);
	if (cert_key_matches(leaf, pk))
		bad = "the key does not match the certificate";
	else if (strcmp(ci.spiffe_id, want))
		bad = "the SPIFFE ID is not this mesh's ID for the service";
	else if (ci.not_after <= (int64_t)time(NULL))
		bad = "the certificate has expired";
	else if (st && (bad = verify(st, leaf, chain)))
		snprintf(why, sizeof(why), "not signed by the trust bundle: %s", bad), bad = why;
	else if (!stat(key, &sb) && (sb.st_mode & 07))
		bad = "the key file is readable by others (chmod 600)";
	X509_free(leaf);
	EVP_PKEY_free(pk);
	sk_X509_pop_free(chain, X509_free);
	return bad;
}

static void check_pairs(struct checker *c, const struct mesh_config *cfg, X509_STORE *st)
{
	char crt[PATH_MAX], key[PATH_MAX], what[128], detail[1024];

	for (size_t i = 0; i < cfg->n_identities; i++) {
		const char *svc = cfg->identities[i].service, *bad;
		bool seen = false;

		for (size_t j = 0; j < i && !seen; j++)
			seen = !strcmp(cfg->identities[j].service, svc);
		if (seen)
			continue;
		snprintf(crt, sizeof(crt), "%s/%s.crt", cfg->mtls.cert_dir, svc);
		snprintf(key, sizeof(key), "%s/%s.key", cfg->mtls.cert_dir, svc);
		snprintf(what, sizeof(what), "mTLS certificate of %s", svc);
		detail[0] = '\0';
		bad = pair_problem(cfg, svc, st, crt, key, detail, sizeof(detail));
		say(c, !bad, what, bad ? bad : detail);
	}
}

static void check_builtin(struct checker *c, const struct mesh_config *cfg)
{
	char why[512], detail[640];
	struct cert_info ci;
	struct stat sb;
	struct ca *ca = ca_load(cfg->mtls.ca_file, cfg->mtls.ca_key_file, why, sizeof(why));

	if (!ca) {
		say(c, false, "mTLS built-in CA", why);
		return;
	}
	cert_get_info(ca_cert(ca), &ci);
	snprintf(detail, sizeof(detail), "%s serial %s, expires in %.0f days", cfg->mtls.ca_file,
		 ci.serial, (double)(ci.not_after - (int64_t)time(NULL)) / DAY_S);
	say(c, ci.not_after > (int64_t)time(NULL), "mTLS built-in CA",
	    ci.not_after > (int64_t)time(NULL) ? detail : "the CA certificate has expired");
	if (!stat(cfg->mtls.ca_key_file, &sb) && (sb.st_mode & 077))
		say(c, false, "mTLS built-in CA key", "readable by group or others (chmod 600)");
	ca_free(ca);
}

int mtls_check_material(const struct mesh_config *cfg,
			void (*line)(bool ok, const char *what, const char *detail, void *arg),
			void *arg)
{
	struct checker c = { line, arg, 0 };
	X509_STORE *st;

	if (!cfg->mtls.enabled || !cfg->mtls.ca_file)
		return 0;
	st = bundle(&c, cfg->mtls.ca_file);
	if (cfg->mtls.cert_source == CONFIG_CERT_FILES && cfg->mtls.cert_dir)
		check_pairs(&c, cfg, st);
	else if (cfg->mtls.cert_source == CONFIG_CERT_BUILTIN_CA && cfg->mtls.ca_key_file)
		check_builtin(&c, cfg);
	X509_STORE_free(st);
	return c.failures;
}
