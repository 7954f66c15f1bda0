/* Traffic splits driven from Consul (docs/split.md, With Consul): this file decides which
 * services it governs (configured ones that do not fail over; any other set passes through as
 * it is) and which entries are watched for them: /v1/config/service-resolver/<name> and
 * /v1/config/service-splitter/<name> (blocking queries). Per service it keeps the last good
 * entries and the last health answer's instances with their selector documents (asked of the
 * watcher only while the service has a resolver entry), and delivers the service's backends
 * labelled with the resolver's subsets together with the splitter's split whenever any of the
 * three changes. An entry deleted (404) ends the split; an entry meshd cannot use (unparsable, a
 * split to another service, a subset the resolver lacks) is logged with the reason and counted,
 * and the last good split stays; a failed query changes nothing. Loop thread. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "discovery/source.h"
#include "discovery/state.h"

#define SUBSYS "discovery"

static const char SPLITTER[] = "service-splitter";
static const char RESOLVER[] = "service-resolver";

/* One service's entries and instances. */
struct rollout_svc {
	char *name;
	struct config_backend *inst; /* last health answer; `subset` = selector document or NULL */
	size_t n_inst;
	uint64_t index;
	bool have_inst;
	bool inst_sel; /* `inst` carry their selector documents (asked for while has_res) */
	struct consul_resolver res; /* last good resolver */
	bool has_res;
	struct config_split *split; /* last good splitter, as written in Consul */
	size_t n_split;
	bool has_split;
	struct config_split *live; /* the split delivered last (subsets resolved) */
	size_t n_live;
	bool seen_res, seen_split; /* each entry query answered (or failed) once */
	bool delivered;		   /* publish delivered once */
};

struct consul_rollout {
	struct discovery_sink sink;
	consul_selectors_cb want; /* the watcher's selector documents for a service, on or off */
	void *want_arg;
	struct rollout_svc *svcs;
	size_t n, cap;
};

static bool fails_over(const struct config_consul *c, const char *service)
{
	for (size_t i = 0; i < c->n_failover; i++)
		if (!strcmp(c->failover[i].service, service))
			return true;
	return false;
}

/* Whether the rollout governs `service` under `c`: a configured service that does not fail over
 * across datacenters, whose entries are watched (consul_rollout_paths). Catalog-defined and
 * failover services, and any other kind, have no entries: their sets go through as they are. */
static bool governs(const struct config_consul *c, const char *service)
{
	for (size_t i = 0; c && i < c->n_services; i++)
		if (!strcmp(c->services[i], service))
			return !fails_over(c, service);
	return false;
}

ssize_t consul_rollout_paths(const struct config_consul *c, char ***out)
{
	static const char *const kinds[] = { RESOLVER, SPLITTER };
	char **p = calloc(2 * c->n_services + 1, sizeof(*p)), buf[1024];
	size_t n = 0;

	*out = p;
	for (size_t i = 0; p && i < c->n_services; i++) {
		if (!governs(c, c->services[i]))
			continue;
		for (size_t k = 0; k < 2; k++) {
			if (consul_entry_path(buf, sizeof(buf), kinds[k], c->services[i],
					      c->datacenter) < 0)
				continue; /* a name this long is refused by validate */
			if (!(p[n] = strdup(buf))) {
				while (n)
					free(p[--n]);
				free(p);
				*out = NULL;
				return -ENOMEM;
			}
			n++;
		}
	}
	return p ? (ssize_t)n : -ENOMEM;
}

struct consul_rollout *consul_rollout_new(const struct discovery_sink *sink,
					  consul_selectors_cb want, void *arg)
{
	struct consul_rollout *r = calloc(1, sizeof(*r));

	if (r) {
		r->sink = *sink;
		r->want = want;
		r->want_arg = arg;
	}
	return r;
}

static void svc_release(struct rollout_svc *s)
{
	free(s->name);
	state_backends_free(s->inst, s->n_inst);
	consul_resolver_free(&s->res);
	state_split_free(s->split, s->n_split);
	state_split_free(s->live, s->n_live);
}

void consul_rollout_free(struct consul_rollout *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		svc_release(&r->svcs[i]);
	free(r->svcs);
	free(r);
}

static struct rollout_svc *svc_find(const struct consul_rollout *r, const char *name)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->svcs[i].name, name))
			return &r->svcs[i];
	return NULL;
}

bool consul_rollout_selectors(const struct consul_rollout *r, const char *service)
{
	const struct rollout_svc *s = svc_find(r, service);

	return s && s->has_res;
}

/* The instances' selector documents, kept only while a resolver may need them. */
static void drop_selectors(struct rollout_svc *s)
{
	for (size_t i = 0; i < s->n_inst; i++) {
		free(s->inst[i].subset);
		s->inst[i].subset = NULL;
	}
	s->inst_sel = false;
}

/* The state of `name`, made on first use; NULL on ENOMEM. */
static struct rollout_svc *svc_of(struct consul_rollout *r, const char *name)
{
	const struct config_service *cur;
	struct rollout_svc *s = svc_find(r, name);

	if (s)
		return s;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 8;

		s = realloc(r->svcs, cap * sizeof(*s));
		if (!s)
			return NULL;
		r->svcs = s;
		r->cap = cap;
	}
	s = &r->svcs[r->n];
	memset(s, 0, sizeof(*s));
	s->name = strdup(name);
	if (!s->name)
		return NULL;
	r->n++;
	cur = r->sink.current(r->sink.arg, name);
	/* A split served already (persisted) is the one kept should the entries not fit. */
	if (cur && !state_split_copy(cur->split, cur->n_split, &s->live))
		s->n_live = cur->n_split;
	return s;
}

/* Whether the resolver defines subset `name`. */
static bool res_has(const struct consul_resolver *res, const char *name)
{
	for (size_t i = 0; i < res->n; i++)
		if (!strcmp(res->subsets[i].name, name))
			return true;
	return false;
}

/* The split to serve from the entries into *out (NULL, 0 when there is none): ServiceSubset ""
 * is the resolver's DefaultSubset. Returns 0, -EINVAL with the reason, -EAGAIN for a splitter
 * whose resolver has not been read (yet: Consul refuses to delete a resolver a splitter needs,
 * so this is the moment between their answers), or -ENOMEM. */
static int resolve_split(const struct rollout_svc *s, struct config_split **out, size_t *n,
			 char *why, size_t wlen)
{
	int err;

	*out = NULL;
	*n = 0;
	if (!s->has_split)
		return 0;
	if (!s->has_res)
		return -EAGAIN;
	err = state_split_copy(s->split, s->n_split, out);
	for (size_t i = 0; !err && i < s->n_split; i++) {
		struct config_split *sp = &(*out)[i];

		if (!sp->subset[0] && s->res.default_subset[0]) {
			free(sp->subset);
			if (!(sp->subset = strdup(s->res.default_subset)))
				err = -ENOMEM;
		} else if (!sp->subset[0]) {
			snprintf(why, wlen,
				 "Splits[%zu] has no ServiceSubset and the resolver no "
				 "DefaultSubset (a split over every instance is not supported)",
				 i);
			err = -EINVAL;
		} else if (!res_has(&s->res, sp->subset)) {
			snprintf(why, wlen,
				 "Splits[%zu] names subset \"%s\", which the "
				 "service-resolver does not define",
				 i, sp->subset);
			err = -EINVAL;
		}
		for (size_t j = 0; !err && j < i; j++)
			if (!strcmp((*out)[j].subset, sp->subset)) {
				snprintf(why, wlen, "subset \"%s\" is split to twice", sp->subset);
				err = -EINVAL;
			}
	}
	if (err) {
		state_split_free(*out, s->n_split);
		*out = NULL;
		return err;
	}
	*n = s->n_split;
	return 0;
}

/* Copies the instances, each labelled with the resolver subsets it belongs to (NULL without a
 * split). NULL on ENOMEM. */
static struct config_backend *labelled(const struct rollout_svc *s, bool split)
{
	struct config_backend *b = calloc(s->n_inst + 1, sizeof(*b));

	for (size_t i = 0; b && i < s->n_inst; i++) {
		cJSON *doc;

		b[i] = s->inst[i];
		b[i].subset = NULL;
		if (!split || !s->inst[i].subset)
			continue;
		doc = cJSON_Parse(s->inst[i].subset);
		b[i].subset = doc ? consul_subsets_of(&s->res, doc) : NULL;
		cJSON_Delete(doc);
		if (!b[i].subset) {
			state_backends_free(b, i);
			return NULL;
		}
		if (!b[i].subset[0]) {
			free(b[i].subset);
			b[i].subset = NULL;
		}
	}
	return b;
}

static void refused(struct consul_rollout *r, const char *service, const char *what,
		    const char *why)
{
	LOG_WARN(SUBSYS, "consul config entry not usable; keeping the last good split",
		 "service=%s entry=%s why=%s", log_q(service), log_q(what), log_q(why));
	if (r->sink.entry_error)
		r->sink.entry_error(r->sink.arg);
}

/* Delivers the service's instances and split as the entries now say (once instances are known).
 * Entries that do not fit together keep the split delivered last. */
static void publish(struct consul_rollout *r, struct rollout_svc *s, const char *what)
{
	struct config_split *split;
	struct config_backend *b;
	size_t n_split;
	char why[200];
	int err = resolve_split(s, &split, &n_split, why, sizeof(why));

	if (err == -EINVAL && strcmp(what, "instances")) /* once per entry answer */
		refused(r, s->name, what, why);
	if (err == -EINVAL || err == -EAGAIN) { /* the split served stays */
		err = state_split_copy(s->live, s->n_live, &split);
		n_split = s->n_live;
	}
	/* Until both entries were read once the registry keeps serving what it has (the persisted
	 * set and split after a restart): instances alone would drop the split for a moment. */
	if (err || !s->have_inst || !s->seen_res || !s->seen_split)
		goto out;
	/* A split needs labelled instances: until an answer with selector documents came (asked
	 * for when the resolver appeared), the registry keeps serving what it has. */
	if (n_split && s->n_inst && !s->inst_sel)
		goto out;
	b = labelled(s, n_split > 0);
	if (!b)
		goto out;
	if (!s->delivered || !state_split_equal(split, n_split, s->live, s->n_live))
		LOG_INFO(SUBSYS, "traffic split from consul config entries",
			 "service=%s subsets=%zu", log_q(s->name), n_split);
	s->delivered = true;
	r->sink.deliver_split(r->sink.arg, s->name, s->index, b, s->n_inst, split, n_split);
	state_split_free(s->live, s->n_live);
	s->live = split;
	s->n_live = n_split;
	return;
out:
	state_split_free(split, n_split);
}

/* A set with no entries to label it: delivered as it is, without selector documents. */
static void pass_through(struct consul_rollout *r, const char *service, uint64_t index,
			 struct config_backend *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(b[i].subset);
		b[i].subset = NULL;
	}
	r->sink.deliver(r->sink.arg, service, index, b, n);
}

void consul_rollout_instances(struct consul_rollout *r, const struct config_consul *c,
			      struct consul_update *u)
{
	struct config_backend *b = u->backends;
	size_t n = u->n_backends;
	struct rollout_svc *s;

	u->backends = NULL; /* taken */
	u->n_backends = 0;
	if (!governs(c, u->service)) {
		pass_through(r, u->service, u->index, b, n);
		return;
	}
	s = svc_of(r, u->service);
	if (!s) {
		state_backends_free(b, n);
		return;
	}
	state_backends_free(s->inst, s->n_inst);
	s->inst = b;
	s->n_inst = n;
	s->index = u->index;
	s->have_inst = true;
	s->inst_sel = u->selectors;
	if (!s->has_res) /* asked for before the resolver went: not needed */
		drop_selectors(s);
	publish(r, s, "instances");
}

/* Percent-decodes `in` (up to '?' or the end) into out[len]. */
static bool decode(const char *in, char *out, size_t len)
{
	size_t k = 0;

	for (; *in && *in != '?'; in++) {
		unsigned v;

		if (k + 1 >= len)
			return false;
		if (*in == '%' && sscanf(in + 1, "%2x", &v) == 1) {
			out[k++] = (char)v;
			in += 2;
		} else {
			out[k++] = *in;
		}
	}
	out[k] = '\0';
	return k > 0;
}

/* Which entry a `gets` path reads: its kind (SPLITTER, RESOLVER) and service, or NULL. */
static const char *entry_of(const char *path, char *name, size_t len)
{
	static const char pre[] = "/v1/config/";
	const char *kinds[] = { SPLITTER, RESOLVER };

	if (strncmp(path, pre, sizeof(pre) - 1))
		return NULL;
	path += sizeof(pre) - 1;
	for (size_t i = 0; i < 2; i++) {
		size_t k = strlen(kinds[i]);

		if (!strncmp(path, kinds[i], k) && path[k] == '/' &&
		    decode(path + k + 1, name, len))
			return kinds[i];
	}
	return NULL;
}

/* A 200 answer: parsed into the service's state, or refused (the last good one stays). */
static int take_entry(struct rollout_svc *s, const char *kind, const struct consul_update *u,
		      char *why, size_t wlen)
{
	struct consul_resolver res;
	struct config_split *split;
	size_t n;
	int err;

	if (kind == RESOLVER) {
		err = consul_parse_resolver(u->body, u->body_len, &res, why, wlen);
		if (err)
			return err;
		consul_resolver_free(&s->res);
		s->res = res;
		s->has_res = true;
		return 0;
	}
	err = consul_parse_splitter(u->body, u->body_len, s->name, &split, &n, why, wlen);
	if (err)
		return err;
	state_split_free(s->split, s->n_split);
	s->split = split;
	s->n_split = n;
	s->has_split = true;
	return 0;
}

/* A 404: the entry does not exist (any more). */
static void drop_entry(struct rollout_svc *s, const char *kind)
{
	bool had = kind == RESOLVER ? s->has_res : s->has_split;

	if (kind == RESOLVER) {
		consul_resolver_free(&s->res);
		s->has_res = false;
	} else {
		state_split_free(s->split, s->n_split);
		s->split = NULL;
		s->n_split = 0;
		s->has_split = false;
	}
	if (had)
		LOG_INFO(SUBSYS, "consul config entry deleted", "service=%s entry=%s",
			 log_q(s->name), kind);
}

/* The resolver appeared or went: the watcher's selector documents for the service follow (an
 * answer with them is read at once when they turn on); those kept go with the resolver. */
static void selectors_follow(struct consul_rollout *r, struct rollout_svc *s)
{
	if (!s->has_res)
		drop_selectors(s);
	if (r->want)
		r->want(r->want_arg, s->name, s->has_res);
}

bool consul_rollout_entry(struct consul_rollout *r, const struct consul_update *u)
{
	char name[256], why[256] = "";
	const char *kind = entry_of(u->service, name, sizeof(name));
	struct rollout_svc *s;
	bool had_res;
	int err;

	if (!kind)
		return false;
	if (!(s = svc_of(r, name)))
		return true;
	if (u->err) { /* the watcher logged it; Consul down: the last entries stay */
		const struct config_service *cur = r->sink.current(r->sink.arg, name);
		bool first = !s->seen_res || !s->seen_split;

		/* Entries unreadable before any answer: instances go on without a split, unless a
		 * split is served (persisted, from before a restart): that one waits for them. */
		if (!first || (cur && cur->n_split))
			return true;
		*(kind == RESOLVER ? &s->seen_res : &s->seen_split) = true;
		publish(r, s, kind);
		return true;
	}
	*(kind == RESOLVER ? &s->seen_res : &s->seen_split) = true;
	had_res = s->has_res;
	if (!u->body) {
		drop_entry(s, kind);
	} else if ((err = take_entry(s, kind, u, why, sizeof(why)))) {
		if (err == -EINVAL)
			refused(r, name, kind, why);
		return true;
	}
	if (s->has_res != had_res)
		selectors_follow(r, s);
	publish(r, s, kind);
	return true;
}
