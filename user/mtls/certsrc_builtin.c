/* The `builtin_ca` certificate source: the CA of `mtls.ca_file` whose key is `mtls.ca_key_file`
 * (made by `meshctl ca init`) signs a leaf for every local identity, valid `mtls.cert_ttl`,
 * renewed at half its life minus up to a tenth of it (jitter, so hosts and identities spread
 * out). A failed renewal backs off (1 s doubling to 5 min) and keeps the still-valid
 * certificate. Every CA certificate of ca_file is trusted; a change of either file reloads them
 * and, when the signing CA changed, reissues every leaf at once. Leaves live in memory only.
 * Main loop. */
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "mtls/ca.h"
#include "mtls/certsrc.h"

#define SEC_NS 1000000000ull
#define RETRY_MIN_NS (1 * SEC_NS)
#define RETRY_MAX_NS (300 * SEC_NS)

struct builtin_src;

struct leaf_state {
	struct builtin_src *b;
	char *service;
	int64_t timer;	    /* next renewal */
	uint64_t retry_ns;  /* current backoff, 0 = none */
	int64_t not_after;  /* of the installed leaf, 0 = none */
	uint64_t ca_serial; /* generation of the CA that signed it */
};

struct builtin_src {
	struct certsrc base;
	struct evloop *loop;
	struct certs *store;
	char *ca_file, *key_file, *trust_domain, *dc;
	uint64_t ttl_s;
	struct ca *ca;
	uint64_t ca_gen; /* bumped when the signing CA changes */
	unsigned char ca_digest[32], key_digest[32];
	struct leaf_state *leaves;
	size_t n;
	struct filewatch *watch;
};

static uint32_t rand32(void)
{
	uint32_t r = 0;

	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)certsrc_now();
	return r;
}

static void renew(struct evloop *loop, void *arg);

static void schedule(struct leaf_state *l, uint64_t delay_ns)
{
	evloop_del_timer(l->b->loop, l->timer);
	l->timer = evloop_add_timer(l->b->loop, delay_ns, renew, l);
}

/* Half the lifetime, minus a jitter of up to a tenth of it. */
static uint64_t renew_delay_ns(uint64_t ttl_s)
{
	uint64_t life = ttl_s * SEC_NS, jitter = life / 10;

	return life / 2 - (jitter ? ((uint64_t)rand32() * jitter) >> 32 : 0);
}

static int issue(struct leaf_state *l, char *why, size_t wlen)
{
	struct builtin_src *b = l->b;
	char id[SPIFFE_ID_MAX];
	EVP_PKEY *key = NULL;
	X509 *leaf = NULL;
	int err;

	if (spiffe_service_id(b->trust_domain, b->dc, l->service, id, sizeof(id)) < 0)
		return snprintf(why, wlen, "no SPIFFE ID for %s", l->service), -EINVAL;
	err = ca_issue(b->ca, id, l->service, b->ttl_s, &leaf, &key, why, wlen);
	if (!err)
		err = certs_set_identity(b->store, l->service, leaf, NULL, key, "builtin_ca",
					 certsrc_now(), why, wlen);
	if (!err) {
		struct cert_info ci;

		cert_get_info(leaf, &ci);
		l->not_after = ci.not_after;
		l->ca_serial = b->ca_gen;
		LOG_INFO("mtls", "identity certificate issued",
			 "service=%s serial=%s not_after=%lld", log_q(l->service), ci.serial,
			 (long long)ci.not_after);
	}
	X509_free(leaf);
	EVP_PKEY_free(key);
	return err;
}

/* Issues now; on failure backs off, keeping what is installed. */
static void issue_or_backoff(struct leaf_state *l)
{
	char why[512];

	if (issue(l, why, sizeof(why)) == 0) {
		l->retry_ns = 0;
		certs_set_error(l->b->store, l->service, NULL);
		schedule(l, renew_delay_ns(l->b->ttl_s));
		return;
	}
	l->retry_ns = l->retry_ns ? l->retry_ns * 2 : RETRY_MIN_NS;
	if (l->retry_ns > RETRY_MAX_NS)
		l->retry_ns = RETRY_MAX_NS;
	LOG_WARN("mtls", "cannot issue identity certificate; the running one stays",
		 "service=%s error=%s retry_in_ms=%llu", log_q(l->service), log_q(why),
		 (unsigned long long)(l->retry_ns / 1000000));
	certs_set_error(l->b->store, l->service, why);
	schedule(l, l->retry_ns);
}

static void renew(struct evloop *loop, void *arg)
{
	struct leaf_state *l = arg;

	l->timer = 0;
	issue_or_backoff(l);
}

/* (Re)loads the CA and the trust bundle when either file changed. Returns 0 or -errno. */
static int load_ca(struct builtin_src *b, char *why, size_t wlen)
{
	unsigned char cd[32], kd[32];
	STACK_OF(X509) *roots = NULL;
	struct ca *ca;
	int err;

	if (certsrc_file_digest(b->ca_file, cd) || certsrc_file_digest(b->key_file, kd))
		return snprintf(why, wlen, "cannot read mtls.ca_file or mtls.ca_key_file"), -ENOENT;
	if (b->ca && !memcmp(cd, b->ca_digest, 32) && !memcmp(kd, b->key_digest, 32))
		return 0;
	ca = ca_load(b->ca_file, b->key_file, why, wlen);
	if (!ca)
		return -EINVAL;
	roots = cert_load_chain(b->ca_file, &err, why, wlen);
	if (roots)
		err = certs_set_roots(b->store, roots, certsrc_now(), why, wlen);
	sk_X509_pop_free(roots, X509_free);
	if (err) {
		ca_free(ca);
		return err;
	}
	if (!b->ca || X509_cmp(ca_cert(b->ca), ca_cert(ca)))
		b->ca_gen++;
	ca_free(b->ca);
	b->ca = ca;
	memcpy(b->ca_digest, cd, 32);
	memcpy(b->key_digest, kd, 32);
	LOG_INFO("mtls", "built-in CA loaded", "ca_file=%s", log_q(b->ca_file));
	return 0;
}

static void on_files(void *arg)
{
	struct builtin_src *b = arg;
	char why[512];

	if (load_ca(b, why, sizeof(why))) {
		LOG_WARN("mtls", "cannot reload the built-in CA; the running one stays", "error=%s",
			 log_q(why));
		return;
	}
	for (size_t i = 0; i < b->n; i++)
		if (b->leaves[i].ca_serial != b->ca_gen)
			issue_or_backoff(&b->leaves[i]);
}

static void builtin_close(struct certsrc *src)
{
	struct builtin_src *b = (struct builtin_src *)src;

	filewatch_free(b->watch);
	for (size_t i = 0; i < b->n; i++) {
		evloop_del_timer(b->loop, b->leaves[i].timer);
		free(b->leaves[i].service);
	}
	free(b->leaves);
	ca_free(b->ca);
	free(b->ca_file);
	free(b->key_file);
	free(b->trust_domain);
	free(b->dc);
	certs_unref(b->store);
	free(b);
}

static int copy_cfg(struct builtin_src *b, const struct certsrc_cfg *cfg)
{
	b->ca_file = strdup(cfg->mtls->ca_file);
	b->key_file = strdup(cfg->mtls->ca_key_file);
	b->trust_domain = strdup(cfg->trust_domain);
	b->dc = strdup(cfg->datacenter);
	b->ttl_s = cfg->mtls->cert_ttl_ns / SEC_NS;
	b->leaves = calloc(cfg->n_services + 1, sizeof(*b->leaves));
	if (!b->ca_file || !b->key_file || !b->trust_domain || !b->dc || !b->leaves)
		return -ENOMEM;
	for (; b->n < cfg->n_services; b->n++) {
		b->leaves[b->n].b = b;
		if (!(b->leaves[b->n].service = strdup(cfg->services[b->n])))
			return -ENOMEM;
	}
	return 0;
}

static struct certsrc *builtin_open(struct evloop *loop, struct certs *store,
				    const struct certsrc_cfg *cfg, char *why, size_t wlen)
{
	struct builtin_src *b = calloc(1, sizeof(*b));
	const char *paths[2];

	if (!b)
		return NULL;
	b->loop = loop;
	b->store = certs_ref(store);
	if (copy_cfg(b, cfg)) {
		snprintf(why, wlen, "out of memory");
		goto err;
	}
	if (load_ca(b, why, wlen))
		goto err;
	for (size_t i = 0; i < b->n; i++)
		issue_or_backoff(&b->leaves[i]);
	paths[0] = b->ca_file;
	paths[1] = b->key_file;
	b->watch = filewatch_new(loop, paths, 2, on_files, b);
	if (!b->watch) {
		snprintf(why, wlen, "cannot watch the CA files");
		goto err;
	}
	return &b->base;
err:
	builtin_close(&b->base);
	return NULL;
}

const struct certsrc_ops certsrc_builtin_ops = {
	.name = "builtin_ca",
	.open = builtin_open,
	.close = builtin_close,
};
