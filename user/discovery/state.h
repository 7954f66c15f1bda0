/* Discovery state persisted under state_dir, so that a restart while a discovery source is
 * unreachable still serves the last known backends, and the small backend-set helpers the
 * registry and every source share (deep copy of a service, canonical order, equality). Pure
 * data and file I/O: no threads, no event loop; the caller serialises access. Part of the
 * discovery module (user/discovery/). */
#ifndef MESH_DISCOVERY_STATE_H
#define MESH_DISCOVERY_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define STATE_FILE_NAME "discovery.state"
#define STATE_MAX_BACKENDS 4096 /* per service, in a state file (the registry caps further) */
#define STATE_SOURCE_MAX 16	/* source names: "consul", "dns" */

/* ---- backend sets (backends.c) ------------------------------------------------------------ */

/* True when both sets list the same backends in the same order: endpoint, weight and subset. */
bool state_backends_equal(const struct config_backend *a, size_t na, const struct config_backend *b,
			  size_t nb);
/* Sorts backends into a canonical order (family, address, port) so that sets compare equal
 * whatever order discovery listed them in. */
void state_backends_sort(struct config_backend *b, size_t n);
/* Sorts `b` and keeps one entry per address:port (Consul may list an instance twice; the subset
 * string of a dropped one is freed). Returns the new count. */
size_t state_backends_normalize(struct config_backend *b, size_t n);
/* Frees a delivered set: each backend's `subset` string, then the array (NULL ok). */
void state_backends_free(struct config_backend *b, size_t n);
/* A traffic split's deep copy (0 or -ENOMEM; NULL for none), free, and equality. */
int state_split_copy(const struct config_split *s, size_t n, struct config_split **out);
void state_split_free(struct config_split *s, size_t n);
bool state_split_equal(const struct config_split *a, size_t na, const struct config_split *b,
		       size_t nb);

/* ---- the state file (state_file.c) -------------------------------------------------------- */

/* One service's discovered backends, as written to or read back from a state file. */
struct state_saved_service {
	char *name;
	char source[STATE_SOURCE_MAX]; /* discovery source that found them: "consul", "dns" */
	uint64_t index;		       /* source's version of the set (X-Consul-Index), 0 = none */
	struct config_backend *backends; /* each `subset` malloc'd or NULL */
	size_t n_backends;
	bool has_vip; /* a service the source defined (catalog): served at `vip` */
	struct config_endpoint vip;
	struct config_split *split; /* the source's split (Consul entries); NULL when none */
	size_t n_split;
};

struct state_saved {
	struct state_saved_service *svcs;
	size_t n;
};

/* Renders `s` as the state file text (caller frees); NULL + errno. */
char *state_format(const struct state_saved *s, size_t *len);
/* Parses state file text (version 4 with subsets and splits, 3 with mesh ports, 2, or version 1
 * whose sets all came from consul). Returns 0, or -EINVAL with a human reason in `why`
 * (corrupt, foreign or truncated file: nothing is returned then), or -ENOMEM. Pure: no I/O. */
int state_parse(const char *buf, size_t len, struct state_saved *out, char *why, size_t why_len);
/* Frees what state_parse() or state_saved_copy() allocated. */
void state_saved_free(struct state_saved *s);
const struct state_saved_service *state_saved_find(const struct state_saved *s, const char *name);

/* Writes `s` to `dir`/discovery.state atomically: temp file (0600), fsync, rename, fsync of the
 * directory. Returns 0 or -errno; a failure leaves the previous file intact. */
int state_save(const char *dir, const struct state_saved *s);
/* Reads `dir`/discovery.state without ever blocking (a FIFO or device there is refused, not
 * opened for reading). Returns 0, -ENOENT (no file), -EINVAL (corrupt, foreign or not a regular
 * file: `why` says how), or another -errno. */
int state_load(const char *dir, struct state_saved *out, char *why, size_t why_len);

/* The file primitives under both, for other state kept in state_dir (the Consul KV config):
 * write `text` to `dir`/`name` atomically (`dir` made 0700 when missing), and read it back
 * NUL-terminated (malloc'd into `*text`) without ever blocking, refusing anything but a regular
 * file of at most `max` bytes (-EINVAL, `why` says how). 0 or -errno (-ENOENT: no file). */
int state_file_write(const char *dir, const char *name, const char *text, size_t len);
int state_file_read(const char *dir, const char *name, size_t max, char **text, size_t *len,
		    char *why, size_t why_len);

#endif
