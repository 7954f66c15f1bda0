/* Service-to-service authorization: an immutable, reference-counted policy of rule layers
 * (`source -> destination: allow|deny`, first match wins, layers in order: config rules, then
 * Consul intentions (intentions.h), then the default action), and a
 * limiter so a denied pair is logged once per interval. Pure: no I/O, the clock is an argument.
 * A policy is built on one thread and then only read, from any thread. */
#ifndef MESH_MTLS_AUTHZ_H
#define MESH_MTLS_AUTHZ_H

#include <stddef.h>
#include <stdint.h>

enum authz_action {
	AUTHZ_DENY = 0,
	AUTHZ_ALLOW = 1,
};

/* Rule sources, evaluated in this order. */
enum authz_layer {
	AUTHZ_LAYER_CONFIG = 0,	    /* authorization.rules */
	AUTHZ_LAYER_INTENTIONS = 1, /* Consul intentions, already in precedence order */
	AUTHZ_LAYER__COUNT,
};

/* `source` and `destination` are service names or "*". */
struct authz_rule {
	const char *source;
	const char *destination;
	enum authz_action action;
};

struct authz_policy;

/* A policy with no rules and default `def`; refcount 1. NULL with errno ENOMEM. */
struct authz_policy *authz_policy_new(enum authz_action def);
/* A copy of `p` (refcount 1) to change one layer of. NULL with errno ENOMEM. */
struct authz_policy *authz_policy_copy(const struct authz_policy *p);
/* Replaces layer `layer` of a policy not yet shared with copies of rules[0..n). 0 or -ENOMEM. */
int authz_policy_set_layer(struct authz_policy *p, enum authz_layer layer,
			   const struct authz_rule *rules, size_t n);
void authz_policy_set_default(struct authz_policy *p, enum authz_action def);
struct authz_policy *authz_policy_ref(struct authz_policy *p);
/* Drops one reference (atomic); frees on the last. Accepts NULL. */
void authz_policy_unref(struct authz_policy *p);

struct authz_decision {
	enum authz_action action;
	enum authz_layer layer; /* of the matching rule; meaningless when rule < 0 */
	int rule;		/* index in its layer, -1 = the default action */
};

/* The decision for a connection from service `source` to service `destination`. */
struct authz_decision authz_decide(const struct authz_policy *p, const char *source,
				   const char *destination);

/* Remembers recently logged (source, destination) pairs so a deny storm logs each pair at most
 * once per `interval_ns`, and at most `burst` new lines per second overall. Not thread-safe. */
#define AUTHZ_LIMITER_SLOTS 256
struct authz_limiter {
	uint64_t interval_ns;
	uint32_t burst;
	uint32_t tokens;       /* lines left in the current second */
	uint64_t second_start; /* start of the current second */
	uint64_t suppressed;   /* lines not logged since the last one that was */
	struct {
		uint64_t hash; /* of the pair; 0 = empty */
		uint64_t last_ns;
	} slots[AUTHZ_LIMITER_SLOTS];
};

void authz_limiter_init(struct authz_limiter *l, uint64_t interval_ns, uint32_t burst);
/* True when a line about the pair should be logged at `now_ns`. */
int authz_limiter_allow(struct authz_limiter *l, const char *source, const char *destination,
			uint64_t now_ns);

#endif
