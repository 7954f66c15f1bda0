/* Consul intentions as the authorization policy's AUTHZ_LAYER_INTENTIONS (authz.h): for each
 * service this host serves (an identity with ports), a blocking read of
 * /v1/connect/intentions/match?by=destination&name=<service>, compiled in Consul's precedence
 * order into `source -> service` rules. Each answer is persisted under
 * `<state_dir>/intentions/<service>.json` (the body as Consul sent it); at start the persisted
 * answers stand until Consul answers, and a failed read keeps the last known ones. A service
 * whose intentions were never known gets one rule `* -> service: deny`: never open by default.
 * Main loop. */
#ifndef MESH_MTLS_INTENTIONS_H
#define MESH_MTLS_INTENTIONS_H

#include <stddef.h>

#include "common/evloop.h"
#include "config/config.h"
#include "mtls/authz.h"

struct intentions;

/* Starts watching for `cfg` (authorization.intentions must be true): loads the persisted answers,
 * starts the reads and waits a bounded time for the first ones. `changed(arg)` runs on the main
 * loop after the compiled rules changed. NULL with errno and a logged reason. */
struct intentions *intentions_new(struct evloop *loop, const struct mesh_config *cfg,
				  void (*changed)(void *arg), void *arg);
void intentions_free(struct intentions *in); /* accepts NULL */

/* Replaces the intentions layer of `p` (not shared yet) with the compiled rules. 0 or -ENOMEM. */
int intentions_apply(const struct intentions *in, struct authz_policy *p);

/* The compiled rules of `n` services' intentions in evaluation order, for `services[i]` from
 * `answers[i]` (a match body, NULL = unknown: deny all). Pure; rules and their strings are
 * malloc'd (free with intentions_rules_free). 0, -EINVAL (a body that does not parse; `why`),
 * -ENOMEM. */
int intentions_compile(const char *const *services, const char *const *answers, size_t n,
		       struct authz_rule **rules, size_t *n_rules, char *why, size_t wlen);
void intentions_rules_free(struct authz_rule *rules, size_t n);

#endif
