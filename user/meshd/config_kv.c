/* The Consul KV config source: one blocking query on `/v1/kv/<config_source.consul_kv>?raw`,
 * run by the discovery module's Consul watcher (its GET kind: index/wait, rate limit, backoff,
 * a 404 with an index followed like any answer). Each answer that differs from the last one
 * goes to meshd_reload_kv() (reload.c), which loads the file with the document over it and
 * applies it all or nothing; a committed document is persisted under state_dir (first line the
 * key, then the document) and read back at start, so a restart while Consul is down keeps it.
 * The watcher thread only posts answers; everything else runs on the loop thread. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "discovery/state.h"
#include "meshd/config_kv.h"

#define KV_PATH_MAX 2048
#define KV_STATE_MAX (64u << 20) /* as large as a config file may be */

struct config_kv {
	char *key;	 /* config_source.consul_kv at start (a restart-only key) */
	char *state_dir; /* state_dir at start, before any KV document: where the copy lives */
	struct consul_watch *w;
	struct consul_post *post; /* the watcher's answers, to the loop */
	char *seen; /* the last answer (applied or refused), NULL for none or a missing key */
	size_t seen_len;
	bool has_seen;
};

static bool same_doc(const char *a, size_t alen, const char *b, size_t blen)
{
	if (!a || !b)
		return !a && !b;
	return alen == blen && memcmp(a, b, alen) == 0;
}

static char *memdup_nul(const char *p, size_t len)
{
	char *d = malloc(len + 1);

	if (d) {
		memcpy(d, p, len);
		d[len] = '\0';
	}
	return d;
}

/* Remembers the answer; true when it differs from the one before. */
static bool note_seen(struct config_kv *kv, const char *doc, size_t len)
{
	char *copy = NULL;

	if (kv->has_seen && same_doc(kv->seen, kv->seen_len, doc, len))
		return false;
	if (doc && !(copy = memdup_nul(doc, len)))
		return false; /* the next answer tries again */
	free(kv->seen);
	kv->seen = copy;
	kv->seen_len = len;
	kv->has_seen = true;
	return true;
}

/* An answer on the loop: a missing key or an empty value means the file alone. */
static void on_answer(struct meshd *m, const struct consul_update *u)
{
	struct config_kv *kv = m->config_kv;
	const char *doc = u->status == 200 && u->body_len ? u->body : NULL;
	size_t len = doc ? u->body_len : 0;
	char *copy = NULL;

	if (u->err || !kv || !note_seen(kv, doc, len))
		return; /* the watcher logged an error; the running config stays */
	if (same_doc(m->kv_doc, m->kv_len, doc, len)) {
		/* What runs already (e.g. the persisted copy at start). No key and no document:
		 * a copy left unused at start (refused then) goes too. */
		if (!doc)
			config_kv_applied(m);
		return;
	}
	LOG_INFO("config", doc ? "Consul KV config changed" : "Consul KV config absent",
		 "key=%s index=%llu bytes=%zu", log_q(kv->key), (unsigned long long)u->index, len);
	if (doc && !(copy = memdup_nul(doc, len))) {
		LOG_ERR("config", "cannot take the Consul KV config", "err=%s",
			log_q(strerror(ENOMEM)));
		return;
	}
	meshd_reload_kv(m, copy, len);
}

/* An answer on the loop (consul_post). */
static void on_update(struct consul_update *u, void *arg)
{
	on_answer(arg, u);
	consul_update_free(u);
}

static void watch_stop(struct config_kv *kv)
{
	consul_watch_free(kv->w); /* joins: no update callback after this */
	kv->w = NULL;
	consul_post_close(kv->post);
	kv->post = NULL;
}

static int watch_start(struct meshd *m, struct config_kv *kv, const struct config_consul *c)
{
	char path[KV_PATH_MAX], *token = NULL;
	const char *paths[1] = { path };
	struct consul_watch_opts o = {
		.address = c->address,
		.ca_file = c->ca_file,
		.wait_ns = c->wait_ns,
		.gets = paths,
		.n_gets = 1,
	};
	int err = 0;

	if (consul_kv_path(path, sizeof(path), kv->key, c->datacenter) < 0)
		err = -ENAMETOOLONG;
	if (!err && c->token_file && !(token = consul_read_token(c->token_file)))
		err = -errno;
	if (!err && !(kv->post = consul_post_new(m->loop, on_update, m)))
		err = -ENOMEM;
	if (!err) {
		o.token = token;
		kv->w = consul_watch_new(&o, consul_post_update, kv->post);
		err = kv->w ? 0 : -errno;
	}
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	if (err) {
		LOG_ERR("config", "cannot watch the Consul KV config", "key=%s err=%s",
			log_q(kv->key), log_q(strerror(-err)));
		watch_stop(kv);
		return err;
	}
	LOG_INFO("config", "watching the Consul KV config", "key=%s address=%s", log_q(kv->key),
		 log_q(c->address));
	return 0;
}

/* Reads the persisted document for kv->key: 0 with *doc inside *text (both NULL when there is
 * none for this key), or -errno (logged). */
static int read_persisted(const struct config_kv *kv, char **text, const char **doc,
			  size_t *doc_len)
{
	char why[128] = "";
	size_t len, klen = strlen(kv->key);
	const char *nl;
	int err;

	*doc = NULL;
	err = state_file_read(kv->state_dir, CONFIG_KV_STATE_FILE, KV_STATE_MAX, text, &len, why,
			      sizeof(why));
	if (err == -ENOENT)
		return 0;
	if (err) {
		LOG_WARN("config", "cannot read the persisted Consul KV config", "dir=%s err=%s",
			 log_q(kv->state_dir), log_q(why[0] ? why : strerror(-err)));
		return err;
	}
	nl = memchr(*text, '\n', len);
	if (!nl || (size_t)(nl - *text) != klen || memcmp(*text, kv->key, klen)) {
		LOG_INFO("config", "the persisted Consul KV config is another key's; not used",
			 "key=%s", log_q(kv->key));
		return 0;
	}
	*doc = nl + 1;
	*doc_len = len - klen - 1;
	return 0;
}

/* The file with the persisted document over it, when both load together. */
static void boot_with(struct meshd *m, const char *doc, size_t len)
{
	struct config_errors errs = { 0 };
	struct mesh_config *cfg = config_load_kv(m->config_path, doc, len, NULL, &errs);
	char *copy = cfg ? memdup_nul(doc, len) : NULL;

	for (size_t i = 0; !cfg && i < errs.n; i++)
		LOG_ERR("config", "invalid configuration", "error=%s", log_q(errs.msgs[i]));
	config_errors_free(&errs);
	if (!cfg || !copy) {
		LOG_WARN("config", "persisted Consul KV config not used; starting from the file",
			 "key=%s", log_q(m->config_kv->key));
		config_free(cfg);
		free(copy);
		return;
	}
	LOG_INFO("config", "starting with the persisted Consul KV config", "key=%s bytes=%zu",
		 log_q(m->config_kv->key), len);
	config_free(m->cfg);
	m->cfg = cfg;
	m->kv_doc = copy;
	m->kv_len = len;
}

int config_kv_boot(struct meshd *m)
{
	struct config_kv *kv;
	const char *doc;
	size_t len = 0;
	char *text = NULL;

	if (!m->cfg->config_kv_key)
		return 0;
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->key = strdup(m->cfg->config_kv_key);
	kv->state_dir = strdup(m->cfg->state_dir);
	m->config_kv = kv;
	if (!kv->key || !kv->state_dir)
		return -ENOMEM;
	if (read_persisted(kv, &text, &doc, &len) == 0 && doc)
		boot_with(m, doc, len);
	free(text);
	return 0;
}

int config_kv_start(struct meshd *m)
{
	if (!m->config_kv || m->config_kv->w)
		return 0;
	return watch_start(m, m->config_kv, &m->cfg->consul);
}

static bool str_eq(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

static bool agent_differs(const struct config_consul *a, const struct config_consul *b)
{
	return !str_eq(a->address, b->address) || !str_eq(a->datacenter, b->datacenter) ||
	       !str_eq(a->token_file, b->token_file) || !str_eq(a->ca_file, b->ca_file) ||
	       a->wait_ns != b->wait_ns;
}

int config_kv_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new)
{
	struct config_kv *kv = m->config_kv;

	if (!kv || !agent_differs(&old->consul, &new->consul))
		return 0;
	watch_stop(kv);
	return watch_start(m, kv, &new->consul);
}

void config_kv_stop(struct meshd *m)
{
	struct config_kv *kv = m->config_kv;

	free(m->kv_doc);
	m->kv_doc = NULL;
	m->kv_len = 0;
	if (!kv)
		return;
	watch_stop(kv);
	free(kv->seen);
	free(kv->key);
	free(kv->state_dir);
	free(kv);
	m->config_kv = NULL;
}

void config_kv_applied(struct meshd *m)
{
	struct config_kv *kv = m->config_kv;
	size_t klen, len;
	char path[PATH_MAX], *text;
	int err;

	if (!kv)
		return;
	if (!m->kv_doc) {
		snprintf(path, sizeof(path), "%s/%s", kv->state_dir, CONFIG_KV_STATE_FILE);
		if (unlink(path) && errno != ENOENT)
			LOG_WARN("config", "cannot remove the persisted Consul KV config",
				 "path=%s err=%s", log_q(path), log_q(strerror(errno)));
		return;
	}
	klen = strlen(kv->key);
	len = klen + 1 + m->kv_len;
	text = malloc(len);
	err = text ? 0 : -ENOMEM;
	if (text) {
		memcpy(text, kv->key, klen);
		text[klen] = '\n';
		memcpy(text + klen + 1, m->kv_doc, m->kv_len);
		err = state_file_write(kv->state_dir, CONFIG_KV_STATE_FILE, text, len);
		free(text);
	}
	if (err)
		LOG_WARN("config",
			 "cannot persist the Consul KV config; a restart during an "
			 "outage would start from the file",
			 "dir=%s err=%s", log_q(kv->state_dir), log_q(strerror(-err)));
}
