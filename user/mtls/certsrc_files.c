/* The `files` certificate source: the trust bundle `mtls.ca_file` and, per local identity,
 * `<cert_dir>/<service>.crt` (leaf first, then intermediates) and `<cert_dir>/<service>.key`,
 * from any CA. Watched and reloaded when their contents change; a bad new file is logged and
 * the running certificate stays. Main loop. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "mtls/certsrc.h"

struct pair_state {
	unsigned char crt[32], key[32]; /* digests of what is installed */
	bool installed;
};

struct files_src {
	struct certsrc base;
	struct certs *store;
	char *ca_file, *cert_dir;
	char **services;
	size_t n;
	struct pair_state *pairs;
	unsigned char ca_digest[32];
	bool ca_loaded;
	struct filewatch *watch;
};

static int load_bundle(struct files_src *f, char *why, size_t wlen)
{
	unsigned char d[32];
	STACK_OF(X509) * roots;
	int err = certsrc_file_digest(f->ca_file, d);
	char inner[256];

	if (err) {
		snprintf(why, wlen, "mtls.ca_file %s: %s", f->ca_file, strerror(-err));
		return err;
	}
	if (f->ca_loaded && !memcmp(d, f->ca_digest, 32))
		return 0;
	roots = cert_load_chain(f->ca_file, &err, inner, sizeof(inner));
	if (roots)
		err = certs_set_roots(f->store, roots, certsrc_now(), inner, sizeof(inner));
	if (!err) {
		LOG_INFO("mtls", "trust bundle loaded", "file=%s certificates=%d",
			 log_q(f->ca_file), sk_X509_num(roots));
		memcpy(f->ca_digest, d, 32);
		f->ca_loaded = true;
	} else {
		snprintf(why, wlen, "mtls.ca_file %s: %s", f->ca_file, inner);
	}
	sk_X509_pop_free(roots, X509_free);
	return err;
}

static void pair_paths(const struct files_src *f, const char *svc, char *crt, char *key, size_t len)
{
	snprintf(crt, len, "%s/%s.crt", f->cert_dir, svc);
	snprintf(key, len, "%s/%s.key", f->cert_dir, svc);
}

/* Loads and installs one pair; returns 0 or -errno with why. */
static int install_pair(struct files_src *f, const char *svc, const char *crt, const char *key,
			char *why, size_t wlen)
{
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *pk = NULL;
	X509 *leaf;
	int err = -EINVAL;

	chain = cert_load_chain(crt, &err, why, wlen);
	if (chain)
		pk = cert_load_key(key, why, wlen);
	if (pk) {
		leaf = sk_X509_shift(chain);
		err = certs_set_identity(f->store, svc, leaf, chain, pk, "files", certsrc_now(),
					 why, wlen);
		X509_free(leaf);
	}
	EVP_PKEY_free(pk);
	sk_X509_pop_free(chain, X509_free);
	return err ? err : 0;
}

static void load_pair(struct files_src *f, size_t i)
{
	char crt[PATH_MAX], key[PATH_MAX], why[512];
	struct pair_state *p = &f->pairs[i], now = { .installed = true };
	int err;
	const char *bad = crt;

	pair_paths(f, f->services[i], crt, key, sizeof(crt));
	err = certsrc_file_digest(crt, now.crt);
	if (!err && (err = certsrc_file_digest(key, now.key)))
		bad = key;
	if (!err && p->installed && !memcmp(&now, p, sizeof(now)))
		return; /* unchanged */
	if (err)
		snprintf(why, sizeof(why), "%.400s: %s", bad, strerror(-err));
	else
		err = install_pair(f, f->services[i], crt, key, why, sizeof(why));
	if (err) {
		LOG_WARN("mtls", "cannot load identity certificate; the running one stays",
			 "service=%s error=%s", log_q(f->services[i]), log_q(why));
		certs_set_error(f->store, f->services[i], why);
		return;
	}
	*p = now;
	LOG_INFO("mtls", "identity certificate loaded", "service=%s file=%s", log_q(f->services[i]),
		 log_q(crt));
}

static void reload(void *arg)
{
	struct files_src *f = arg;
	char why[512];

	if (load_bundle(f, why, sizeof(why)))
		LOG_WARN("mtls", "cannot reload the trust bundle; the running one stays",
			 "error=%s", log_q(why));
	for (size_t i = 0; i < f->n; i++)
		load_pair(f, i);
}

static void files_close(struct certsrc *src)
{
	struct files_src *f = (struct files_src *)src;

	filewatch_free(f->watch);
	for (size_t i = 0; i < f->n; i++)
		free(f->services[i]);
	free(f->services);
	free(f->pairs);
	free(f->ca_file);
	free(f->cert_dir);
	certs_unref(f->store);
	free(f);
}

static int copy_cfg(struct files_src *f, const struct certsrc_cfg *cfg)
{
	f->ca_file = strdup(cfg->mtls->ca_file);
	f->cert_dir = strdup(cfg->mtls->cert_dir);
	f->services = calloc(cfg->n_services + 1, sizeof(*f->services));
	f->pairs = calloc(cfg->n_services + 1, sizeof(*f->pairs));
	if (!f->ca_file || !f->cert_dir || !f->services || !f->pairs)
		return -ENOMEM;
	for (; f->n < cfg->n_services; f->n++)
		if (!(f->services[f->n] = strdup(cfg->services[f->n])))
			return -ENOMEM;
	return 0;
}

static struct certsrc *files_open(struct evloop *loop, struct certs *store,
				  const struct certsrc_cfg *cfg, char *why, size_t wlen)
{
	struct files_src *f = calloc(1, sizeof(*f));
	const char *paths[2];

	if (!f)
		return NULL;
	f->store = certs_ref(store);
	if (copy_cfg(f, cfg)) {
		snprintf(why, wlen, "out of memory");
		goto err;
	}
	if (load_bundle(f, why, wlen))
		goto err;
	for (size_t i = 0; i < f->n; i++)
		load_pair(f, i);
	paths[0] = f->ca_file;
	paths[1] = f->cert_dir; /* its own entries: watch the directory itself */
	f->watch = filewatch_new(loop, paths, 1, reload, f);
	if (f->watch && filewatch_add_dir(f->watch, f->cert_dir))
		LOG_WARN("mtls", "cannot watch mtls.cert_dir; polling it", "dir=%s",
			 log_q(f->cert_dir));
	if (!f->watch) {
		snprintf(why, wlen, "cannot watch the certificate files: %s", strerror(errno));
		goto err;
	}
	return &f->base;
err:
	files_close(&f->base);
	return NULL;
}

const struct certsrc_ops certsrc_files_ops = {
	.name = "files",
	.open = files_open,
	.close = files_close,
};
