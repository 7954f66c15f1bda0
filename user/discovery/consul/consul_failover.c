/* Failover across datacenters (discovery.consul.failover), as Consul's service-resolver failover:
 * a service listed there is watched in the local datacenter and in each failover one (?dc=);
 * the set served is the local one while it has a passing instance, else that of the first
 * datacenter in the list that has one. Only answers seen so far count: nothing is chosen past a
 * datacenter that has not answered yet. Pure bookkeeping, loop thread (consul_source.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

struct dc_set {
	struct config_backend *b;
	size_t n;
	uint64_t index;
	bool seen;
};

struct fo_service {
	const struct config_consul_failover *cfg; /* datacenters[i] is set i + 1; set 0 = local */
	struct dc_set *sets;
	size_t active; /* set served, SIZE_MAX = none yet */
};

struct consul_failover {
	struct fo_service *s;
	size_t n;
};

struct consul_failover *consul_failover_new(const struct config_consul *c)
{
	struct consul_failover *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->s = calloc(c->n_failover + 1, sizeof(*f->s));
	if (!f->s) {
		free(f);
		return NULL;
	}
	for (size_t i = 0; i < c->n_failover; i++, f->n++) {
		f->s[i].cfg = &c->failover[i];
		f->s[i].active = SIZE_MAX;
		f->s[i].sets = calloc(c->failover[i].n_datacenters + 1, sizeof(struct dc_set));
		if (!f->s[i].sets) {
			consul_failover_free(f);
			return NULL;
		}
	}
	return f;
}

void consul_failover_free(struct consul_failover *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++) {
		for (size_t j = 0; f->s[i].sets && j <= f->s[i].cfg->n_datacenters; j++)
			free(f->s[i].sets[j].b);
		free(f->s[i].sets);
	}
	free(f->s);
	free(f);
}

static struct fo_service *find(const struct consul_failover *f, const char *service)
{
	for (size_t i = 0; f && i < f->n; i++)
		if (!strcmp(f->s[i].cfg->service, service))
			return &f->s[i];
	return NULL;
}

/* Set index of datacenter `dc` (NULL = local), or SIZE_MAX. */
static size_t set_of(const struct fo_service *s, const char *dc)
{
	if (!dc)
		return 0;
	for (size_t i = 0; i < s->cfg->n_datacenters; i++)
		if (!strcmp(s->cfg->datacenters[i], dc))
			return i + 1;
	return SIZE_MAX;
}

/* The first set with an instance, every earlier one answered; else the local set once seen. */
static size_t choose(const struct fo_service *s)
{
	for (size_t i = 0; i <= s->cfg->n_datacenters; i++) {
		if (!s->sets[i].seen)
			return s->sets[0].seen && i > 0 ? 0 : SIZE_MAX;
		if (s->sets[i].n)
			return i;
	}
	return 0;
}

int consul_failover_take(struct consul_failover *f, struct consul_update *u,
			 struct consul_failover_pick *pick)
{
	struct fo_service *s = find(f, u->service);
	size_t i = s ? set_of(s, u->dc) : SIZE_MAX, c;
	struct dc_set *d;

	if (!s || i == SIZE_MAX)
		return 0;
	d = &s->sets[i];
	free(d->b);
	for (size_t k = 0; k < u->n_backends; k++) { /* no subsets under failover */
		free(u->backends[k].subset);
		u->backends[k].subset = NULL;
	}
	d->b = u->backends; /* host names resolved by the caller already */
	d->n = u->n_backends;
	d->index = u->index;
	d->seen = true;
	u->backends = NULL;
	u->n_backends = 0;
	memset(pick, 0, sizeof(*pick));
	c = choose(s);
	if (c == SIZE_MAX)
		return 2;
	pick->changed = c != s->active;
	pick->from =
	    s->active == SIZE_MAX || s->active == 0 ? NULL : s->cfg->datacenters[s->active - 1];
	s->active = c;
	pick->dc = c ? s->cfg->datacenters[c - 1] : NULL;
	pick->index = s->sets[c].index;
	pick->n = s->sets[c].n;
	pick->backends = malloc((pick->n ? pick->n : 1) * sizeof(*pick->backends));
	if (!pick->backends)
		return -ENOMEM;
	memcpy(pick->backends, s->sets[c].b, pick->n * sizeof(*pick->backends));
	return 1;
}

bool consul_failover_serving(const struct consul_failover *f, const char *service, const char **dc)
{
	const struct fo_service *s = find(f, service);

	if (!s)
		return false;
	*dc = s->active != SIZE_MAX && s->active ? s->cfg->datacenters[s->active - 1] : NULL;
	return true;
}
