/* The `consul` certificate source: Consul's Connect CA through the local agent. The trust bundle
 * is every root of /v1/agent/connect/ca/roots (the trust domain is Consul's, `<cluster-id>.consul`)
 * and each local identity's certificate is /v1/agent/connect/ca/leaf/<service>, both read as
 * blocking queries, so a rotation arrives as an answer. A leaf that does not load (another
 * service's, a bad chain, expired) is logged and the running certificate stays; a failed read
 * keeps everything. During a root rotation every listed root is trusted, and a leaf signed by a
 * root first listed less than ROOT_GRACE ago is held back (the running one still valid) until
 * every peer has had time to trust that root. The last roots answer and each installed leaf
 * answer are persisted under <state_dir>/connect (mode 0600, written atomically: the leaf answer
 * holds its private key) and loaded at open, through the same checks as live answers, so a
 * meshd started during a Consul outage serves until the agent answers. Main loop. */
#include <errno.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "discovery/state.h"
#include "mtls/certsrc.h"
#include "mtls/consul_feed.h"

#define SEC_NS 1000000000ull
#define ROOT_GRACE_S 5		   /* a new root is trusted by every peer's next roots answer */
#define FIRST_WAIT_NS (3 * SEC_NS) /* open: time Consul has for the first answers */
#define ROOTS_PATH "/v1/agent/connect/ca/roots"
#define PERSIST_DIR "connect"  /* under state_dir */
#define PERSIST_MAX (1u << 20) /* a persisted answer larger than this is refused */

struct consul_src;

struct leaf_slot {
	struct consul_src *c;
	char *service;
	X509 *leaf; /* pending: received, not installed yet */
	STACK_OF(X509) * chain;
	EVP_PKEY *key;
	char *body; /* the pending leaf's answer, persisted once installed (holds the key) */
	size_t body_len;
	int64_t timer;
	int64_t installed_not_after; /* 0 = none */
	bool unreachable;	     /* the last read failed (its error is shown) */
};

struct fresh_root {
	X509 *x;
	int64_t listed_at; /* unix s it was first listed; 0 = listed from the start */
};

struct consul_src {
	struct certsrc base;
	struct evloop *loop;
	struct certs *store;
	struct consul_feed *feed;
	char **paths; /* [0] roots, [1 + i] leaf of services[i] */
	struct leaf_slot *slots;
	size_t n;
	bool have_roots;
	struct fresh_root *fresh; /* the roots listed now, with when each was first listed */
	size_t n_fresh;
	char *dir; /* <state_dir>/connect, NULL = not persisted */
};

static void slot_clear(struct leaf_slot *s)
{
	X509_free(s->leaf);
	sk_X509_pop_free(s->chain, X509_free);
	EVP_PKEY_free(s->key);
	s->leaf = NULL;
	s->chain = NULL;
	s->key = NULL;
	if (s->body)
		OPENSSL_cleanse(s->body, s->body_len);
	free(s->body);
	s->body = NULL;
	s->body_len = 0;
}

/* --- persistence -------------------------------------------------------------------------------- */

/* The file of answer `i` (0 roots, 1 + k leaf of slot k). */
static void persist_name(const struct consul_src *c, size_t i, char *buf, size_t len)
{
	if (i == 0)
		snprintf(buf, len, "roots.json");
	else
		snprintf(buf, len, "leaf-%s.json", c->slots[i - 1].service);
}

/* Writes an answer that was just put in use. A failure is logged (never the contents). */
static void persist(struct consul_src *c, size_t i, const char *body, size_t len)
{
	char name[128];
	int err;

	if (!c->dir)
		return;
	persist_name(c, i, name, sizeof(name));
	err = state_file_write(c->dir, name, body, len);
	if (err)
		LOG_WARN("mtls", "cannot persist Consul Connect CA material",
			 "dir=%s file=%s err=%s", log_q(c->dir), log_q(name),
			 log_q(strerror(-err)));
}

/* --- roots -------------------------------------------------------------------------------------- */

static struct fresh_root *seen_root(struct consul_src *c, X509 *x)
{
	for (size_t i = 0; i < c->n_fresh; i++)
		if (!X509_cmp(c->fresh[i].x, x))
			return &c->fresh[i];
	return NULL;
}

/* Records when each listed root was first listed (0 for those of the first answer: trusted
 * everywhere already); roots no longer listed are forgotten. */
static void note_fresh(struct consul_src *c, STACK_OF(X509) * roots, bool first)
{
	struct fresh_root *next = calloc((size_t)sk_X509_num(roots) + 1, sizeof(*next)), *old;
	int64_t now = certsrc_now();
	size_t n = 0;

	if (!next)
		return; /* keeps the previous record: at worst a hold is missed */
	for (int i = 0; i < sk_X509_num(roots); i++) {
		X509 *x = sk_X509_value(roots, i);

		old = seen_root(c, x);
		X509_up_ref(x);
		next[n++] = (struct fresh_root){ x, old ? old->listed_at : first ? 0 : now };
	}
	for (size_t i = 0; i < c->n_fresh; i++)
		X509_free(c->fresh[i].x);
	free(c->fresh);
	c->fresh = next;
	c->n_fresh = n;
}

static STACK_OF(X509) * roots_stack(const struct consul_ca_roots *r, char *why, size_t wlen)
{
	STACK_OF(X509) *all = sk_X509_new_null(), *one;
	int err;

	for (size_t i = 0; all && i < r->n; i++) {
		one = cert_parse_chain(r->roots[i].pem, strlen(r->roots[i].pem), &err, why, wlen);
		if (!one) {
			sk_X509_pop_free(all, X509_free);
			return NULL;
		}
		while (sk_X509_num(one))
			sk_X509_push(all, sk_X509_shift(one));
		sk_X509_free(one);
	}
	return all;
}

static void install_pending(struct leaf_slot *s);

/* A roots answer, from the agent or (`persisted`) from the state directory. Returns 0 when the
 * roots are in use. */
static int on_roots(struct consul_src *c, const char *body, size_t len, bool persisted)
{
	struct consul_ca_roots r;
	STACK_OF(X509) *roots = NULL;
	char why[512] = "";
	int err = consul_parse_roots(body, len, &r, why, sizeof(why));

	if (!err && !spiffe_domain_valid(r.trust_domain, strlen(r.trust_domain))) {
		snprintf(why, sizeof(why), "TrustDomain \"%.64s\" is not a SPIFFE trust domain",
			 r.trust_domain);
		err = -EINVAL;
	}
	if (!err && !(roots = roots_stack(&r, why, sizeof(why))))
		err = -EINVAL;
	if (!err) {
		note_fresh(c, roots, !c->have_roots);
		certs_set_trust_domain(c->store, r.trust_domain);
		err = certs_set_roots(c->store, roots, certsrc_now(), why, sizeof(why));
	}
	if (err && persisted) {
		LOG_WARN("mtls", "ignoring the persisted Consul CA roots", "error=%s", log_q(why));
	} else if (err) {
		LOG_WARN("mtls", "cannot use the Consul CA roots; the running ones stay",
			 "error=%s", log_q(why));
	} else {
		LOG_INFO("mtls",
			 persisted ? "persisted Consul CA roots loaded" : "Consul CA roots loaded",
			 "trust_domain=%s roots=%zu active=%s", r.trust_domain, r.n,
			 log_q(r.active_id));
		c->have_roots = true;
		if (!persisted)
			persist(c, 0, body, len);
		for (size_t i = 0; i < c->n; i++)
			install_pending(&c->slots[i]);
	}
	sk_X509_pop_free(roots, X509_free);
	consul_ca_roots_free(&r);
	return err;
}

/* --- leaves ------------------------------------------------------------------------------------- */

static void on_hold_over(struct evloop *loop, void *arg)
{
	struct leaf_slot *s = arg;

	s->timer = 0;
	install_pending(s);
}

/* Seconds to hold the pending leaf back: its chain ends at a root still in its grace, and the
 * running certificate stays valid meanwhile. 0 = install now. */
static int64_t hold_s(struct leaf_slot *s)
{
	struct consul_src *c = s->c;
	X509 *top =
	    sk_X509_num(s->chain) ? sk_X509_value(s->chain, sk_X509_num(s->chain) - 1) : s->leaf;
	int64_t now = certsrc_now();

	for (size_t i = 0; i < c->n_fresh; i++) {
		int64_t until = c->fresh[i].listed_at + ROOT_GRACE_S;

		if (until > now && s->installed_not_after > until &&
		    X509_check_issued(c->fresh[i].x, top) == X509_V_OK)
			return until - now;
	}
	return 0;
}

static void install_pending(struct leaf_slot *s)
{
	struct consul_src *c = s->c;
	struct cert_info ci;
	char why[512];
	int64_t hold;

	if (!s->leaf || !c->have_roots || s->timer)
		return;
	if ((hold = hold_s(s)) > 0) {
		LOG_INFO("mtls", "new leaf signed by a new root; held until peers trust the root",
			 "service=%s hold_s=%lld", log_q(s->service), (long long)hold);
		s->timer = evloop_add_timer(c->loop, (uint64_t)hold * SEC_NS, on_hold_over, s);
		if (s->timer < 0)
			s->timer = 0;
		return;
	}
	if (certs_set_identity(c->store, s->service, s->leaf, s->chain, s->key, "consul",
			       certsrc_now(), why, sizeof(why))) {
		LOG_WARN("mtls", "cannot install the Consul leaf; the running certificate stays",
			 "service=%s error=%s", log_q(s->service), log_q(why));
		certs_set_error(c->store, s->service, why);
		return; /* kept: a roots answer may make it verify */
	}
	cert_get_info(s->leaf, &ci);
	s->installed_not_after = ci.not_after;
	certs_set_error(c->store, s->service, NULL);
	LOG_INFO("mtls", "identity certificate loaded", "service=%s source=consul serial=%s",
		 log_q(s->service), ci.serial);
	if (s->body) /* NULL: loaded from the persisted file */
		persist(c, (size_t)(s - c->slots) + 1, s->body, s->body_len);
	slot_clear(s);
}

/* Parses a leaf answer into the slot's pending leaf; 0 or -EINVAL with why. */
static int take_leaf(struct leaf_slot *s, const char *body, size_t len, char *why, size_t wlen)
{
	struct consul_leaf l;
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *key = NULL;
	int err = consul_parse_leaf(body, len, s->service, &l, why, wlen);

	if (!err && !(chain = cert_parse_chain(l.cert_pem, strlen(l.cert_pem), &err, why, wlen)))
		err = err ? err : -EINVAL;
	if (!err && !(key = cert_parse_key(l.key_pem, strlen(l.key_pem), why, wlen)))
		err = -EINVAL;
	consul_leaf_free(&l);
	if (err) {
		sk_X509_pop_free(chain, X509_free);
		return err;
	}
	slot_clear(s);
	s->leaf = sk_X509_shift(chain);
	s->chain = chain;
	s->key = key;
	return 0;
}

/* Reads persisted file `name`; false when there is none or it cannot be read (logged). */
static bool read_persisted(struct consul_src *c, const char *name, char **body, size_t *len)
{
	char why[256] = "";
	int err = state_file_read(c->dir, name, PERSIST_MAX, body, len, why, sizeof(why));

	if (err && err != -ENOENT)
		LOG_WARN("mtls", "ignoring persisted Consul Connect CA material",
			 "file=%s error=%s", log_q(name), log_q(*why ? why : strerror(-err)));
	return err == 0;
}

/* Loads the persisted roots, then each persisted leaf that still passes every check of a live
 * one (its service's, valid now, chaining to the persisted roots): served until the agent
 * answers. Anything else is logged with why and ignored. */
static void load_persisted(struct consul_src *c)
{
	char name[128], why[512];
	size_t len;
	char *body;

	if (!c->dir || !read_persisted(c, "roots.json", &body, &len))
		return;
	if (on_roots(c, body, len, true)) {
		free(body);
		return;
	}
	free(body);
	for (size_t i = 0; i < c->n; i++) {
		struct leaf_slot *s = &c->slots[i];
		struct cert_info ci;

		persist_name(c, i + 1, name, sizeof(name));
		if (!read_persisted(c, name, &body, &len))
			continue;
		if (!take_leaf(s, body, len, why, sizeof(why))) {
			cert_get_info(s->leaf, &ci);
			if (certs_set_identity(c->store, s->service, s->leaf, s->chain, s->key,
					       "consul", certsrc_now(), why, sizeof(why)) == 0) {
				s->installed_not_after = ci.not_after;
				certs_set_error(c->store, s->service, NULL);
				LOG_INFO("mtls", "persisted Consul leaf loaded",
					 "service=%s serial=%s", log_q(s->service), ci.serial);
				*why = '\0';
			}
		}
		slot_clear(s);
		OPENSSL_cleanse(body, len);
		free(body);
		if (*why)
			LOG_WARN("mtls", "ignoring a persisted Consul leaf", "service=%s error=%s",
				 log_q(s->service), log_q(why));
	}
}

static void on_leaf(struct leaf_slot *s, const char *body, size_t len)
{
	char why[512] = "";

	if (take_leaf(s, body, len, why, sizeof(why))) {
		LOG_WARN("mtls", "refused a Consul leaf; the running certificate stays",
			 "service=%s error=%s", log_q(s->service), log_q(why));
		certs_set_error(s->c->store, s->service, why);
		return;
	}
	s->body = malloc(len + 1);
	if (s->body) {
		memcpy(s->body, body, len + 1);
		s->body_len = len;
	}
	evloop_del_timer(s->c->loop, s->timer); /* a newer leaf: its own hold, if any */
	s->timer = 0;
	install_pending(s);
}

static void on_answer(void *arg, size_t i, const char *body, size_t len, int err, long status)
{
	struct consul_src *c = arg;

	if (err || !body) { /* the watcher logged an error; what is installed stays */
		struct leaf_slot *s = i > 0 ? &c->slots[i - 1] : NULL;

		if (s && (err || s->unreachable)) /* an error, or answers again (same leaf) */
			certs_set_error(c->store, s->service,
					err ? "cannot reach the Consul Connect CA" : NULL);
		if (s)
			s->unreachable = err != 0;
		return;
	}
	if (i > 0)
		c->slots[i - 1].unreachable = false;
	if (i == 0)
		on_roots(c, body, len, false);
	else
		on_leaf(&c->slots[i - 1], body, len);
}

/* --- open and close ----------------------------------------------------------------------------- */

static void consul_close(struct certsrc *src)
{
	struct consul_src *c = (struct consul_src *)src;

	consul_feed_free(c->feed);
	for (size_t i = 0; i < c->n; i++) {
		evloop_del_timer(c->loop, c->slots[i].timer);
		slot_clear(&c->slots[i]);
		free(c->slots[i].service);
	}
	for (size_t i = 0; c->paths && i <= c->n; i++)
		free(c->paths[i]);
	for (size_t i = 0; i < c->n_fresh; i++)
		X509_free(c->fresh[i].x);
	free(c->fresh);
	free(c->paths);
	free(c->slots);
	free(c->dir);
	certs_unref(c->store);
	free(c);
}

static int make_paths(struct consul_src *c, const struct certsrc_cfg *cfg)
{
	c->paths = calloc(cfg->n_services + 2, sizeof(*c->paths));
	c->slots = calloc(cfg->n_services + 1, sizeof(*c->slots));
	if (!c->paths || !c->slots || !(c->paths[0] = strdup(ROOTS_PATH)))
		return -ENOMEM;
	for (; c->n < cfg->n_services; c->n++) {
		const char *svc = cfg->services[c->n]; /* a DNS label: nothing to encode */
		size_t len = strlen(svc) + sizeof("/v1/agent/connect/ca/leaf/");

		c->slots[c->n].c = c;
		c->slots[c->n].service = strdup(svc);
		c->paths[c->n + 1] = malloc(len);
		if (!c->slots[c->n].service || !c->paths[c->n + 1])
			return -ENOMEM;
		snprintf(c->paths[c->n + 1], len, "/v1/agent/connect/ca/leaf/%s", svc);
	}
	return 0;
}

static struct certsrc *consul_open(struct evloop *loop, struct certs *store,
				   const struct certsrc_cfg *cfg, char *why, size_t wlen)
{
	struct consul_src *c = calloc(1, sizeof(*c));
	size_t ok;

	if (!c)
		return NULL;
	c->loop = loop;
	c->store = certs_ref(store);
	if (cfg->config->state_dir && cfg->config->state_dir[0] &&
	    asprintf(&c->dir, "%s/" PERSIST_DIR, cfg->config->state_dir) < 0)
		c->dir = NULL;
	if (make_paths(c, cfg)) {
		snprintf(why, wlen, "out of memory");
		goto err;
	}
	c->feed = consul_feed_new(loop, cfg->config, (const char *const *)c->paths, c->n + 1,
				  on_answer, c, why, wlen);
	if (!c->feed)
		goto err;
	for (size_t i = 0; i < c->n; i++) /* until the leaf is installed */
		certs_set_error(store, c->slots[i].service,
				"waiting for a leaf from the Consul Connect CA");
	load_persisted(c);
	ok = consul_feed_wait_first(c->feed, FIRST_WAIT_NS);
	if (ok < c->n + 1 && cfg->must_load) {
		snprintf(why, wlen, "the Consul Connect CA did not answer for every identity");
		goto err;
	}
	return &c->base;
err:
	consul_close(&c->base);
	return NULL;
}

const struct certsrc_ops certsrc_consul_ops = {
	.name = "consul",
	.open = consul_open,
	.close = consul_close,
};
