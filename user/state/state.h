/* Discovery state: the table of services meshd serves (policy from the config, backends from the
 * config or from discovery) and its on-disk form under state_dir, so that a restart while
 * discovery is unreachable still serves the last known backends. Pure data and file I/O: no
 * threads, no event loop; the caller serialises access. */
#ifndef MESH_STATE_H
#define MESH_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define STATE_FILE_NAME "discovery.state"
#define STATE_MAX_BACKENDS 4096 /* per service, in a state file */

struct state_entry {
	struct config_service svc; /* deep copy owned by the table */
	bool discovered;	   /* backends came from discovery, not from the config */
	uint64_t index; /* discovery index of those backends (X-Consul-Index), 0 = none */
};

struct state_table {
	struct state_entry *ents;
	size_t n;
};

/* Deep-copies `src` into `dst` with its backends replaced by `backends[0..n)`. Returns 0 or
 * -ENOMEM (then `dst` holds nothing to release). */
int state_svc_copy(struct config_service *dst, const struct config_service *src,
		   const struct config_backend *backends, size_t n);
/* Frees what state_svc_copy() allocated and zeroes `svc`. */
void state_svc_release(struct config_service *svc);
/* True when both services would program the datapath identically (name, VIP, backends in
 * order, weights, balancer, breaker, mTLS). */
bool state_svc_equal(const struct config_service *a, const struct config_service *b);
bool state_backends_equal(const struct config_backend *a, size_t na, const struct config_backend *b,
			  size_t nb);
/* Sorts backends into a canonical order (family, address, port) so that sets compare equal
 * whatever order discovery listed them in. */
void state_backends_sort(struct config_backend *b, size_t n);

/* The entry named `name`, or NULL. */
struct state_entry *state_table_find(const struct state_table *t, const char *name);
/* Releases every entry and the array; `t` becomes empty. Entries with a NULL name are skipped. */
void state_table_free(struct state_table *t);

/* One service as read back from a state file. */
struct state_saved_service {
	char *name;
	uint64_t index;
	struct config_backend *backends;
	size_t n_backends;
};

struct state_saved {
	struct state_saved_service *svcs;
	size_t n;
};

/* Renders the discovered entries of `t` as the state file text (caller frees); NULL + errno. */
char *state_format(const struct state_table *t, size_t *len);
/* Parses state file text. Returns 0, or -EINVAL with a human reason in `why` (corrupt, foreign
 * or truncated file: nothing is returned then), or -ENOMEM. Pure: no I/O. */
int state_parse(const char *buf, size_t len, struct state_saved *out, char *why, size_t why_len);
void state_saved_free(struct state_saved *s);
const struct state_saved_service *state_saved_find(const struct state_saved *s, const char *name);

/* Writes the discovered entries of `t` to `dir`/discovery.state atomically: temp file (0600),
 * fsync, rename, fsync of the directory. Returns 0 or -errno; a failure leaves the previous file
 * intact. */
int state_save(const char *dir, const struct state_table *t);
/* Reads `dir`/discovery.state. Returns 0, -ENOENT (no file), -EINVAL (corrupt or foreign: `why`
 * says how), or another -errno. */
int state_load(const char *dir, struct state_saved *out, char *why, size_t why_len);

#endif
