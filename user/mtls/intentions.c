/* Consul intentions behind intentions.h: the last good answer per served service (from Consul or
 * from disk), compiled into authorization rules whenever one changes. Main loop. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "mtls/cert.h"
#include "mtls/consul_feed.h"
#include "mtls/intentions.h"

#define FIRST_WAIT_NS 2000000000ull /* start: time Consul has for the first answers */
#define MATCH_PATH "/v1/connect/intentions/match?by=destination&name="

struct intentions {
	struct evloop *loop;
	struct consul_feed *feed;
	char *dir; /* <state_dir>/intentions, NULL = not persisted */
	char **services, **paths, **answers;
	size_t n;
	struct authz_rule *rules;
	size_t n_rules;
	void (*changed)(void *arg);
	void *arg;
};

/* --- compiling ---------------------------------------------------------------------------------- */

void intentions_rules_free(struct authz_rule *rules, size_t n)
{
	for (size_t i = 0; rules && i < n; i++) {
		free((char *)rules[i].source);
		free((char *)rules[i].destination);
	}
	free(rules);
}

static int add_rule(struct authz_rule **rules, size_t *n, const char *src, const char *dst,
		    bool allow)
{
	struct authz_rule *r = realloc(*rules, (*n + 1) * sizeof(*r));

	if (!r)
		return -ENOMEM;
	*rules = r;
	r[*n].source = strdup(src);
	r[*n].destination = strdup(dst);
	r[*n].action = allow ? AUTHZ_ALLOW : AUTHZ_DENY;
	(*n)++;
	return r[*n - 1].source && r[*n - 1].destination ? 0 : -ENOMEM;
}

/* One service's rules: its intentions in precedence order, each naming the service itself as
 * the destination (a `*` destination intention applies to it as to every service). */
static int compile_one(const char *svc, const char *answer, struct authz_rule **rules, size_t *n,
		       char *why, size_t wlen)
{
	struct consul_intention *v;
	size_t nv;
	int err;

	if (!answer)
		return add_rule(rules, n, "*", svc, false);
	err = consul_parse_intentions(answer, strlen(answer), svc, &v, &nv, why, wlen);
	for (size_t i = 0; !err && i < nv; i++)
		err = add_rule(rules, n, v[i].source, svc, v[i].allow);
	if (!err || err == -ENOMEM)
		consul_intentions_free(v, nv);
	return err;
}

int intentions_compile(const char *const *services, const char *const *answers, size_t n,
		       struct authz_rule **rules, size_t *n_rules, char *why, size_t wlen)
{
	int err = 0;

	*rules = NULL;
	*n_rules = 0;
	for (size_t i = 0; !err && i < n; i++)
		err = compile_one(services[i], answers[i], rules, n_rules, why, wlen);
	if (err) {
		intentions_rules_free(*rules, *n_rules);
		*rules = NULL;
		*n_rules = 0;
	}
	return err;
}

static int recompile(struct intentions *in)
{
	struct authz_rule *r;
	size_t n;
	char why[256];
	int err =
	    intentions_compile((const char *const *)in->services, (const char *const *)in->answers,
			       in->n, &r, &n, why, sizeof(why));

	if (err)
		return err;
	intentions_rules_free(in->rules, in->n_rules);
	in->rules = r;
	in->n_rules = n;
	return 0;
}

int intentions_apply(const struct intentions *in, struct authz_policy *p)
{
	return authz_policy_set_layer(p, AUTHZ_LAYER_INTENTIONS, in->rules, in->n_rules);
}

/* --- persistence -------------------------------------------------------------------------------- */

static void answer_path(const struct intentions *in, size_t i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.json", in->dir, in->services[i]);
}

/* Writes answer i atomically (temp file, fsync, rename). Logged on failure. */
static void persist(struct intentions *in, size_t i)
{
	char path[4096], tmp[4200];
	size_t len = strlen(in->answers[i]);
	int fd, ok;

	if (!in->dir)
		return;
	answer_path(in, i, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (mkdir(in->dir, 0700) && errno != EEXIST)
		goto err;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		goto err;
	ok = write(fd, in->answers[i], len) == (ssize_t)len && !fsync(fd);
	if (close(fd) || !ok || rename(tmp, path)) {
		unlink(tmp);
		goto err;
	}
	return;
err:
	LOG_WARN("authz", "cannot persist intentions", "service=%s path=%s err=%s",
		 log_q(in->services[i]), log_q(path), log_q(strerror(errno)));
}

/* The persisted answer of each service that has one and still parses. */
static void load_persisted(struct intentions *in)
{
	char path[4096], why[256];
	struct consul_intention *v;
	size_t len, nv;

	for (size_t i = 0; in->dir && i < in->n; i++) {
		char *body;

		answer_path(in, i, path, sizeof(path));
		body = cert_read_file(path, &len);
		if (!body)
			continue;
		if (consul_parse_intentions(body, len, in->services[i], &v, &nv, why,
					    sizeof(why))) {
			LOG_WARN("authz", "ignoring a persisted intentions file",
				 "path=%s error=%s", log_q(path), log_q(why));
			free(body);
			continue;
		}
		consul_intentions_free(v, nv);
		in->answers[i] = body;
		LOG_INFO("authz", "persisted intentions restored", "service=%s intentions=%zu",
			 log_q(in->services[i]), nv);
	}
}

/* --- answers ------------------------------------------------------------------------------------ */

static void on_answer(void *arg, size_t i, const char *body, size_t len, int err, long status)
{
	struct intentions *in = arg;
	struct consul_intention *v;
	char why[256], *copy, *old;
	size_t nv;

	if (err || !body)
		return; /* logged by the watcher; the last known intentions stay */
	if (in->answers[i] && !strcmp(in->answers[i], body))
		return;
	if (consul_parse_intentions(body, len, in->services[i], &v, &nv, why, sizeof(why))) {
		LOG_WARN("authz", "unusable intentions answer; the last known ones stay",
			 "service=%s error=%s", log_q(in->services[i]), log_q(why));
		return;
	}
	consul_intentions_free(v, nv);
	if (!(copy = strdup(body)))
		return;
	old = in->answers[i];
	in->answers[i] = copy;
	if (recompile(in)) {
		in->answers[i] = old;
		free(copy);
		return;
	}
	free(old);
	LOG_INFO("authz", "intentions updated", "service=%s intentions=%zu", log_q(in->services[i]),
		 nv);
	if (in->changed)
		in->changed(in->arg);
	persist(in, i); /* after: enforcement does not wait for the disk */
}

/* --- lifecycle ---------------------------------------------------------------------------------- */

void intentions_free(struct intentions *in)
{
	if (!in)
		return;
	consul_feed_free(in->feed);
	for (size_t i = 0; i < in->n; i++) {
		free(in->services[i]);
		free(in->paths[i]);
		free(in->answers[i]);
	}
	free(in->services);
	free(in->paths);
	free(in->answers);
	free(in->dir);
	intentions_rules_free(in->rules, in->n_rules);
	free(in);
}

/* Each identity service with ports (served here) once. */
static int served_services(struct intentions *in, const struct mesh_config *cfg)
{
	size_t cap = cfg->n_identities + 1;

	in->services = calloc(cap, sizeof(char *));
	in->paths = calloc(cap, sizeof(char *));
	in->answers = calloc(cap, sizeof(char *));
	if (!in->services || !in->paths || !in->answers)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_identities; i++) {
		const char *svc = cfg->identities[i].service;
		size_t j, len = strlen(MATCH_PATH) + strlen(svc) + 1;

		for (j = 0; j < in->n && strcmp(in->services[j], svc); j++)
			;
		if (j < in->n || !cfg->identities[i].n_ports)
			continue;
		in->services[in->n] = strdup(svc);
		in->paths[in->n] = malloc(len);
		if (!in->services[in->n] || !in->paths[in->n]) {
			free(in->services[in->n]);
			free(in->paths[in->n]);
			return -ENOMEM;
		}
		snprintf(in->paths[in->n++], len, "%s%s", MATCH_PATH, svc); /* DNS labels */
	}
	return 0;
}

struct intentions *intentions_new(struct evloop *loop, const struct mesh_config *cfg,
				  void (*changed)(void *arg), void *arg)
{
	struct intentions *in = calloc(1, sizeof(*in));
	char why[512] = "out of memory";

	if (!in || served_services(in, cfg))
		goto err;
	in->loop = loop;
	if (cfg->state_dir && cfg->state_dir[0] &&
	    asprintf(&in->dir, "%s/intentions", cfg->state_dir) < 0) {
		in->dir = NULL;
		goto err;
	}
	load_persisted(in);
	if (recompile(in))
		goto err;
	in->feed = consul_feed_new(loop, cfg, (const char *const *)in->paths, in->n, on_answer, in,
				   why, sizeof(why));
	if (!in->feed)
		goto err;
	consul_feed_wait_first(in->feed, FIRST_WAIT_NS);
	in->changed = changed; /* from now on: the first answers are in the initial rules */
	in->arg = arg;
	LOG_INFO("authz", "watching Consul intentions", "services=%zu", in->n);
	return in;
err:
	LOG_ERR("authz", "cannot watch Consul intentions", "error=%s", log_q(why));
	intentions_free(in);
	errno = EINVAL;
	return NULL;
}
