/* The certificate store behind certs.h. Everything sits behind one mutex: contexts are built on
 * the main loop when material changes (rare) and taken by proxy threads per new TLS connection
 * (pooled, so rare too). */
#include <errno.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/certs.h"
#include "mtls/tls.h"

#define SKEW_S 300 /* a certificate may start this far in the future (clock skew) */

struct root {
	X509 *x;
	unsigned char fp[32]; /* SHA-256 of the DER */
	int64_t not_after;
	int64_t retained_until; /* 0 = in the bundle */
	int64_t seen_until;	/* latest expiry of a leaf seen chaining to it */
};

struct ident {
	char *service, *source, *error;
	X509 *leaf;
	STACK_OF(X509) * chain;
	EVP_PKEY *key;
	struct cert_info info;
	SSL_CTX *client, *server;
	uint64_t generation;
};

struct certs {
	int refs;
	pthread_mutex_t lock;
	char trust_domain[SPIFFE_DOMAIN_MAX + 1];
	char dc[SPIFFE_SEGMENT_MAX + 1];
	uint64_t retain_ns;
	struct root *roots;
	size_t n_roots;
	X509_STORE *store; /* every root, current and retained */
	struct ident *ids;
	size_t n_ids;
	SSL_CTX *dispatch;
	void (*on_change)(void *arg, const char *service);
	void *on_change_arg;
};

void certs_on_change(struct certs *s, void (*cb)(void *arg, const char *service), void *arg)
{
	pthread_mutex_lock(&s->lock);
	s->on_change = cb;
	s->on_change_arg = arg;
	pthread_mutex_unlock(&s->lock);
}

static void changed(struct certs *s, const char *service)
{
	void (*cb)(void *, const char *);
	void *arg;

	pthread_mutex_lock(&s->lock);
	cb = s->on_change;
	arg = s->on_change_arg;
	pthread_mutex_unlock(&s->lock);
	if (cb)
		cb(arg, service);
}

static SSL_CTX *select_server(void *arg, const char *service)
{
	return certs_server_ctx(arg, service);
}

struct certs *certs_new(const struct certs_opts *o)
{
	struct certs *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->refs = 1;
	pthread_mutex_init(&s->lock, NULL);
	snprintf(s->trust_domain, sizeof(s->trust_domain), "%s", o->trust_domain);
	snprintf(s->dc, sizeof(s->dc), "%s", o->datacenter);
	s->retain_ns = o->retain_ns;
	s->store = X509_STORE_new();
	s->dispatch = tls_ctx_dispatch(select_server, s);
	if (!s->store || !s->dispatch) {
		certs_unref(s);
		errno = ENOMEM;
		return NULL;
	}
	return s;
}

struct certs *certs_ref(struct certs *s)
{
	__atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
	return s;
}

static void ident_clear(struct ident *id)
{
	X509_free(id->leaf);
	sk_X509_pop_free(id->chain, X509_free);
	EVP_PKEY_free(id->key);
	SSL_CTX_free(id->client);
	SSL_CTX_free(id->server);
	id->leaf = NULL;
	id->chain = NULL;
	id->key = NULL;
	id->client = id->server = NULL;
}

void certs_unref(struct certs *s)
{
	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (size_t i = 0; i < s->n_ids; i++) {
		ident_clear(&s->ids[i]);
		free(s->ids[i].service);
		free(s->ids[i].source);
		free(s->ids[i].error);
	}
	for (size_t i = 0; i < s->n_roots; i++)
		X509_free(s->roots[i].x);
	free(s->ids);
	free(s->roots);
	X509_STORE_free(s->store);
	SSL_CTX_free(s->dispatch);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

const char *certs_trust_domain(const struct certs *s)
{
	return s->trust_domain;
}

void certs_get_trust_domain(struct certs *s, char *buf, size_t len)
{
	pthread_mutex_lock(&s->lock);
	snprintf(buf, len, "%s", s->trust_domain);
	pthread_mutex_unlock(&s->lock);
}

void certs_set_trust_domain(struct certs *s, const char *trust_domain)
{
	pthread_mutex_lock(&s->lock);
	snprintf(s->trust_domain, sizeof(s->trust_domain), "%s", trust_domain);
	pthread_mutex_unlock(&s->lock);
}

/* --- roots ------------------------------------------------------------------------------------ */

static struct root *find_root(struct certs *s, const unsigned char fp[32])
{
	for (size_t i = 0; i < s->n_roots; i++)
		if (!memcmp(s->roots[i].fp, fp, 32))
			return &s->roots[i];
	return NULL;
}

static int fingerprint(X509 *x, unsigned char fp[32])
{
	unsigned int n = 32;

	return X509_digest(x, EVP_sha256(), fp, &n) == 1 ? 0 : -EINVAL;
}

/* Builds a store holding every root; NULL on ENOMEM. */
static X509_STORE *build_store(const struct root *roots, size_t n)
{
	X509_STORE *st = X509_STORE_new();

	for (size_t i = 0; st && i < n; i++) {
		if (!X509_STORE_add_cert(st, roots[i].x)) {
			X509_STORE_free(st);
			return NULL;
		}
	}
	return st;
}

static int build_ctxs(struct certs *s, struct ident *id, SSL_CTX **client, SSL_CTX **server)
{
	*client = tls_ctx_new(false, id->leaf, id->chain, id->key, s->store);
	*server = tls_ctx_new(true, id->leaf, id->chain, id->key, s->store);
	if (*client && *server)
		return 0;
	SSL_CTX_free(*client);
	SSL_CTX_free(*server);
	return -ENOMEM;
}

/* New contexts for every identity, on the current store; one that cannot be built keeps its old
 * ones (out of memory only). */
static void rebuild_all(struct certs *s)
{
	for (size_t i = 0; i < s->n_ids; i++) {
		struct ident *id = &s->ids[i];
		SSL_CTX *c, *v;

		if (!id->leaf || build_ctxs(s, id, &c, &v))
			continue;
		SSL_CTX_free(id->client);
		SSL_CTX_free(id->server);
		id->client = c;
		id->server = v;
	}
}

/* Until when a root removed at `now` stays trusted. */
static int64_t retain_until(const struct certs *s, const struct root *r, int64_t now)
{
	int64_t until = now + (int64_t)(s->retain_ns / 1000000000ull);

	if (r->seen_until > until)
		until = r->seen_until;
	return until < r->not_after ? until : r->not_after;
}

/* The new root list: the bundle's CA certificates, then the old roots it dropped (retained). */
static int merge_roots(struct certs *s, STACK_OF(X509) * in, int64_t now, struct root **out,
		       size_t *n)
{
	struct root *r = calloc((size_t)sk_X509_num(in) + s->n_roots + 1, sizeof(*r));
	struct cert_info ci;

	*n = 0;
	if (!r)
		return -ENOMEM;
	for (int i = 0; i < sk_X509_num(in); i++) {
		X509 *x = sk_X509_value(in, i);
		struct root *old;

		if (!cert_is_ca(x) || fingerprint(x, r[*n].fp) || cert_get_info(x, &ci))
			continue;
		old = find_root(s, r[*n].fp);
		X509_up_ref(x);
		r[*n].x = x;
		r[*n].not_after = ci.not_after;
		r[*n].seen_until = old ? old->seen_until : 0;
		(*n)++;
	}
	for (size_t i = 0; *n && i < s->n_roots; i++) {
		struct root *o = &s->roots[i];
		bool kept = false;

		for (size_t j = 0; j < *n && !kept; j++)
			kept = !memcmp(r[j].fp, o->fp, 32);
		if (kept || (o->retained_until && o->retained_until <= now))
			continue;
		r[*n] = *o;
		X509_up_ref(o->x);
		if (!r[*n].retained_until)
			r[*n].retained_until = retain_until(s, o, now);
		if (r[*n].retained_until > now)
			(*n)++;
		else
			X509_free(o->x);
	}
	*out = r;
	return 0;
}

static void free_roots(struct root *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		X509_free(r[i].x);
	free(r);
}

/* Installs a root list and a store built from it (takes both). */
static void swap_roots(struct certs *s, struct root *r, size_t n, X509_STORE *st)
{
	free_roots(s->roots, s->n_roots);
	X509_STORE_free(s->store);
	s->roots = r;
	s->n_roots = n;
	s->store = st;
	rebuild_all(s);
}

int certs_set_roots(struct certs *s, STACK_OF(X509) * roots, int64_t now, char *why, size_t wlen)
{
	struct root *r = NULL;
	X509_STORE *st;
	size_t n;
	int err;

	pthread_mutex_lock(&s->lock);
	err = merge_roots(s, roots, now, &r, &n);
	if (!err && !n) {
		snprintf(why, wlen, "no CA certificate in the bundle");
		err = -EINVAL;
	}
	st = err ? NULL : build_store(r, n);
	if (!err && !st)
		err = -ENOMEM;
	if (err) {
		free_roots(r, n);
	} else {
		swap_roots(s, r, n, st);
	}
	pthread_mutex_unlock(&s->lock);
	if (!err)
		changed(s, NULL);
	return err;
}

int certs_expire_roots(struct certs *s, int64_t now)
{
	size_t kept = 0, dropped;
	X509_STORE *st;
	struct root *r;

	pthread_mutex_lock(&s->lock);
	r = calloc(s->n_roots + 1, sizeof(*r));
	for (size_t i = 0; r && i < s->n_roots; i++) {
		if (s->roots[i].retained_until && s->roots[i].retained_until <= now)
			continue;
		r[kept] = s->roots[i];
		X509_up_ref(r[kept++].x);
	}
	dropped = r ? s->n_roots - kept : 0;
	st = dropped ? build_store(r, kept) : NULL;
	if (st)
		swap_roots(s, r, kept, st);
	else
		free_roots(r, kept);
	pthread_mutex_unlock(&s->lock);
	if (st)
		changed(s, NULL);
	return st ? (int)dropped : 0;
}

static void note_root_locked(struct certs *s, X509 *root, int64_t leaf_not_after)
{
	unsigned char fp[32];
	struct root *r;

	if (fingerprint(root, fp))
		return;
	r = find_root(s, fp);
	if (r && leaf_not_after > r->seen_until)
		r->seen_until = leaf_not_after;
}

void certs_note_peer(struct certs *s, X509 *root, X509 *leaf)
{
	struct cert_info ci;

	if (cert_get_info(leaf, &ci))
		return;
	pthread_mutex_lock(&s->lock);
	note_root_locked(s, root, ci.not_after);
	pthread_mutex_unlock(&s->lock);
}

/* --- identities -------------------------------------------------------------------------------- */

static struct ident *find_ident(struct certs *s, const char *service, bool create)
{
	struct ident *ids;

	for (size_t i = 0; i < s->n_ids; i++)
		if (!strcmp(s->ids[i].service, service))
			return &s->ids[i];
	if (!create)
		return NULL;
	ids = realloc(s->ids, (s->n_ids + 1) * sizeof(*ids));
	if (!ids)
		return NULL;
	s->ids = ids;
	memset(&ids[s->n_ids], 0, sizeof(*ids));
	ids[s->n_ids].service = strdup(service);
	if (!ids[s->n_ids].service)
		return NULL;
	return &ids[s->n_ids++];
}

/* The certificate is this mesh's identity for `service`, valid now. */
static int check_leaf(struct certs *s, const char *service, X509 *leaf, EVP_PKEY *key,
		      struct cert_info *ci, int64_t now, char *why, size_t wlen)
{
	char want[SPIFFE_ID_MAX];

	if (cert_key_matches(leaf, key))
		return snprintf(why, wlen, "the key does not match the certificate"), -EINVAL;
	if (cert_get_info(leaf, ci))
		return snprintf(why, wlen, "unreadable certificate fields"), -EINVAL;
	if (spiffe_service_id(s->trust_domain, s->dc, service, want, sizeof(want)) < 0)
		return snprintf(why, wlen, "no SPIFFE ID for service %s", service), -EINVAL;
	if (strcmp(ci->spiffe_id, want))
		return snprintf(why, wlen, "SPIFFE ID is \"%s\", expected \"%s\"",
				ci->spiffe_id[0] ? ci->spiffe_id : "(none)", want),
		       -EINVAL;
	if (ci->not_after <= now)
		return snprintf(why, wlen, "certificate expired"), -EKEYEXPIRED;
	if (ci->not_before > now + SKEW_S)
		return snprintf(why, wlen, "certificate not valid yet"), -EINVAL;
	return 0;
}

/* Verifies `leaf` + `chain` against the store; notes the root it reached. */
static int verify_chain(struct certs *s, X509 *leaf, STACK_OF(X509) * chain, int64_t not_after,
			char *why, size_t wlen)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) * built;
	int ok =
	    ctx && X509_STORE_CTX_init(ctx, s->store, leaf, chain) && X509_verify_cert(ctx) == 1;

	if (ok) {
		built = X509_STORE_CTX_get0_chain(ctx);
		if (built && sk_X509_num(built) > 1)
			note_root_locked(s, sk_X509_value(built, sk_X509_num(built) - 1),
					 not_after);
	} else {
		snprintf(why, wlen, "not signed by a trusted CA: %s",
			 ctx ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx))
			     : "out of memory");
	}
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return ok ? 0 : -EINVAL;
}

static STACK_OF(X509) * dup_chain(STACK_OF(X509) * chain)
{
	return chain ? X509_chain_up_ref(chain) : sk_X509_new_null();
}

static int install(struct certs *s, struct ident *id, X509 *leaf, STACK_OF(X509) * chain,
		   EVP_PKEY *key, const char *source, const struct cert_info *ci)
{
	struct ident next = *id;
	char *src = strdup(source);

	next.chain = dup_chain(chain);
	if (!src || !next.chain) {
		free(src);
		sk_X509_pop_free(next.chain, X509_free);
		return -ENOMEM;
	}
	X509_up_ref(leaf);
	EVP_PKEY_up_ref(key);
	next.leaf = leaf;
	next.key = key;
	if (build_ctxs(s, &next, &next.client, &next.server)) {
		X509_free(leaf);
		EVP_PKEY_free(key);
		sk_X509_pop_free(next.chain, X509_free);
		free(src);
		return -ENOMEM;
	}
	ident_clear(id);
	free(id->source);
	free(id->error);
	next.source = src;
	next.error = NULL;
	next.info = *ci;
	next.generation = id->generation + 1;
	*id = next;
	return 0;
}

int certs_set_identity(struct certs *s, const char *service, X509 *leaf, STACK_OF(X509) * chain,
		       EVP_PKEY *key, const char *source, int64_t now, char *why, size_t wlen)
{
	struct cert_info ci;
	struct ident *id;
	int err;

	pthread_mutex_lock(&s->lock);
	err = check_leaf(s, service, leaf, key, &ci, now, why, wlen);
	if (!err)
		err = verify_chain(s, leaf, chain, ci.not_after, why, wlen);
	if (!err) {
		id = find_ident(s, service, true);
		err = id ? install(s, id, leaf, chain, key, source, &ci) : -ENOMEM;
		if (err)
			snprintf(why, wlen, "out of memory");
	}
	pthread_mutex_unlock(&s->lock);
	if (!err)
		changed(s, service);
	return err;
}

void certs_set_error(struct certs *s, const char *service, const char *error)
{
	struct ident *id;

	pthread_mutex_lock(&s->lock);
	id = find_ident(s, service, true);
	if (id) {
		free(id->error);
		id->error = error ? strdup(error) : NULL;
	}
	pthread_mutex_unlock(&s->lock);
}

void certs_drop_identity(struct certs *s, const char *service)
{
	struct ident *id;

	pthread_mutex_lock(&s->lock);
	id = find_ident(s, service, false);
	if (id) {
		ident_clear(id);
		free(id->service);
		free(id->source);
		free(id->error);
		*id = s->ids[--s->n_ids];
	}
	pthread_mutex_unlock(&s->lock);
}

static SSL_CTX *take_ctx(struct certs *s, const char *service, bool server)
{
	SSL_CTX *ctx = NULL;
	struct ident *id;

	pthread_mutex_lock(&s->lock);
	id = find_ident(s, service, false);
	if (id)
		ctx = server ? id->server : id->client;
	if (ctx)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&s->lock);
	if (!ctx)
		errno = ENOENT;
	return ctx;
}

SSL_CTX *certs_client_ctx(struct certs *s, const char *service)
{
	return take_ctx(s, service, false);
}

SSL_CTX *certs_server_ctx(struct certs *s, const char *service)
{
	return take_ctx(s, service, true);
}

SSL_CTX *certs_dispatch_ctx(struct certs *s)
{
	SSL_CTX_up_ref(s->dispatch);
	return s->dispatch;
}

int certs_list(struct certs *s, void (*cb)(const struct certs_entry *e, void *arg), void *arg)
{
	struct certs_entry e;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n_ids; i++) {
		const struct ident *id = &s->ids[i];

		memset(&e, 0, sizeof(e));
		e.service = id->service;
		e.source = id->source ? id->source : "";
		e.error = id->error;
		e.has_cert = id->leaf != NULL;
		e.info = id->info;
		e.generation = id->generation;
		cb(&e, arg);
	}
	for (size_t i = 0; i < s->n_roots; i++) {
		memset(&e, 0, sizeof(e));
		e.root = true;
		e.has_cert = true;
		cert_get_info(s->roots[i].x, &e.info);
		e.retained_until = s->roots[i].retained_until;
		cb(&e, arg);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

int64_t certs_next_expiry(struct certs *s)
{
	int64_t t = 0;

	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->n_ids; i++)
		if (s->ids[i].leaf && (!t || s->ids[i].info.not_after < t))
			t = s->ids[i].info.not_after;
	pthread_mutex_unlock(&s->lock);
	return t;
}
