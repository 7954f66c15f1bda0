/* Authorization policy and deny-log limiter behind authz.h. Rules are copied into the policy so a
 * policy never points at a config that a reload frees. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mtls/authz.h"

struct layer {
	struct authz_rule *rules; /* strings owned */
	size_t n;
};

struct authz_policy {
	int refs; /* atomic */
	enum authz_action def;
	struct layer layers[AUTHZ_LAYER__COUNT];
};

struct authz_policy *authz_policy_new(enum authz_action def)
{
	struct authz_policy *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->refs = 1;
	p->def = def;
	return p;
}

static void layer_free(struct layer *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free((char *)l->rules[i].source);
		free((char *)l->rules[i].destination);
	}
	free(l->rules);
	l->rules = NULL;
	l->n = 0;
}

static int layer_copy(struct layer *dst, const struct authz_rule *rules, size_t n)
{
	struct layer l = { calloc(n ? n : 1, sizeof(*l.rules)), 0 };

	if (!l.rules)
		return -ENOMEM;
	for (; l.n < n; l.n++) {
		struct authz_rule *r = &l.rules[l.n];

		r->source = strdup(rules[l.n].source);
		r->destination = strdup(rules[l.n].destination);
		r->action = rules[l.n].action;
		if (!r->source || !r->destination) {
			l.n++;
			layer_free(&l);
			return -ENOMEM;
		}
	}
	layer_free(dst);
	*dst = l;
	return 0;
}

int authz_policy_set_layer(struct authz_policy *p, enum authz_layer layer,
			   const struct authz_rule *rules, size_t n)
{
	if ((unsigned)layer >= AUTHZ_LAYER__COUNT)
		return -EINVAL;
	return layer_copy(&p->layers[layer], rules, n);
}

void authz_policy_set_default(struct authz_policy *p, enum authz_action def)
{
	p->def = def;
}

struct authz_policy *authz_policy_copy(const struct authz_policy *p)
{
	struct authz_policy *c = authz_policy_new(p->def);

	for (int i = 0; c && i < AUTHZ_LAYER__COUNT; i++) {
		if (layer_copy(&c->layers[i], p->layers[i].rules, p->layers[i].n)) {
			authz_policy_unref(c);
			return NULL;
		}
	}
	return c;
}

struct authz_policy *authz_policy_ref(struct authz_policy *p)
{
	__atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
	return p;
}

void authz_policy_unref(struct authz_policy *p)
{
	if (!p || __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (int i = 0; i < AUTHZ_LAYER__COUNT; i++)
		layer_free(&p->layers[i]);
	free(p);
}

static int matches(const char *pattern, const char *name)
{
	return !strcmp(pattern, "*") || !strcmp(pattern, name);
}

struct authz_decision authz_decide(const struct authz_policy *p, const char *source,
				   const char *destination)
{
	struct authz_decision d = { p->def, AUTHZ_LAYER_CONFIG, -1 };

	for (int i = 0; i < AUTHZ_LAYER__COUNT; i++) {
		const struct layer *l = &p->layers[i];

		for (size_t j = 0; j < l->n; j++) {
			if (matches(l->rules[j].source, source) &&
			    matches(l->rules[j].destination, destination)) {
				d.action = l->rules[j].action;
				d.layer = (enum authz_layer)i;
				d.rule = (int)j;
				return d;
			}
		}
	}
	return d;
}

/* --- deny-log limiter ------------------------------------------------------------------------ */

#define SEC_NS 1000000000ull

void authz_limiter_init(struct authz_limiter *l, uint64_t interval_ns, uint32_t burst)
{
	memset(l, 0, sizeof(*l));
	l->interval_ns = interval_ns;
	l->burst = burst;
	l->tokens = burst;
}

static uint64_t pair_hash(const char *a, const char *b)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *a; a++)
		h = (h ^ (unsigned char)*a) * 0x100000001b3ull;
	h = (h ^ 0xff) * 0x100000001b3ull; /* separator: ("ab","c") != ("a","bc") */
	for (; *b; b++)
		h = (h ^ (unsigned char)*b) * 0x100000001b3ull;
	return h | 1;
}

/* The pair's slot, or the slot to evict for it (empty or least recently logged of a probe of 4). */
static size_t limiter_slot(struct authz_limiter *l, uint64_t h)
{
	size_t best = h % AUTHZ_LIMITER_SLOTS;

	for (size_t k = 0; k < 4; k++) {
		size_t i = (h + k) % AUTHZ_LIMITER_SLOTS;

		if (l->slots[i].hash == h || !l->slots[i].hash)
			return i;
		if (l->slots[i].last_ns < l->slots[best].last_ns)
			best = i;
	}
	return best;
}

int authz_limiter_allow(struct authz_limiter *l, const char *source, const char *destination,
			uint64_t now_ns)
{
	uint64_t h = pair_hash(source, destination);
	size_t i = limiter_slot(l, h);

	if (l->slots[i].hash == h && now_ns - l->slots[i].last_ns < l->interval_ns) {
		l->suppressed++;
		return 0;
	}
	if (now_ns - l->second_start >= SEC_NS) {
		l->second_start = now_ns;
		l->tokens = l->burst;
	}
	if (!l->tokens) {
		l->suppressed++;
		return 0;
	}
	l->tokens--;
	l->slots[i].hash = h;
	l->slots[i].last_ns = now_ns;
	return 1;
}
