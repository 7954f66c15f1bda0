/* Configuration internals shared by the files of the config module only: the key table types,
 * the per-value origin records and the helpers the loader, validator and printers share. Nothing
 * outside user/config/ includes this (tests and the fuzzer excepted). */
#ifndef MESH_CONFIG_INT_H
#define MESH_CONFIG_INT_H

#include <stdint.h>

#include "config/config.h"

struct cJSON;

enum cfg_type {
	CT_BOOL = 0,
	CT_UINT,     /* uint32_t */
	CT_INT,	     /* int (version) */
	CT_RATIO,    /* double, 0..1 */
	CT_DURATION, /* uint64_t nanoseconds, string in JSON */
	CT_STRING,   /* char *, "" = unset */
	CT_PATH,     /* char *, absolute path */
	CT_URL,	     /* char *, http:// or https:// URL */
	CT_ENDPOINT, /* struct config_endpoint, "ip:port" / "[ip6]:port" */
	CT_ADDR,     /* address part of a struct config_endpoint */
	CT_PORT,     /* uint16_t, 1..65535 */
	CT_ENUM,     /* int, index into key->names */
	CT_STRLIST,  /* char ** + size_t count */
	CT_EPLIST,   /* struct config_endpoint * + size_t count */
	CT_PORTLIST, /* uint16_t * + size_t count, each 1..65535 */
	CT_LIST,     /* array of objects described by key->sub, + size_t count */
	CT_PERCENT,  /* uint32_t hundredths of a percent; JSON 0..100 in steps of 0.01 */
};

#define CF_REQUIRED 0x01    /* must be given (in a list element) */
#define CF_SECRET 0x02	    /* names a secret file: checked, contents never read or printed */
#define CF_NOENV 0x04	    /* no MESH_* override */
#define CF_INHERIT 0x08	    /* per-service override of the global key with the same path */
#define CF_DNSNAME 0x10	    /* lowercase DNS label (strings and string lists) */
#define CF_SPECIAL 0x20	    /* handled by the loader itself (version) */
#define CF_RESTART 0x40	    /* applied at start only: a reload that changes it is refused */
#define CF_ANY_BACKEND 0x80 /* in a discovery.<backend> section, used by other backends too */

struct cfg_desc;

/* One configuration key: everything (loading, env, validation, show, env listing, docs) reads it
 * from here. Numbers' min/max are in the stored unit (nanoseconds for durations). */
struct cfg_key {
	const char *path; /* JSON path relative to the object, dots between levels */
	enum cfg_type type;
	size_t off;	  /* offset of the value in the object's struct */
	size_t count_off; /* lists: offset of the size_t element count */
	const char *def;  /* built-in (= development preset) default as text; NULL = unset */
	const char *prod; /* production preset value as text; NULL = same as def */
	double min, max;  /* numbers and durations */
	const char *const *names; /* enums: names by value, NULL-terminated */
	unsigned flags;
	const struct cfg_desc *sub; /* CT_LIST: element description */
	const char *doc;
	/* Not built yet: validation refuses the key with the rule `not supported yet` and this
	 * reason, docs and `config show` say so. Any value but the default is refused, or only
	 * `not_yet_value` (an enum name) when set. Building the feature = deleting the line. */
	const char *not_yet;
	const char *not_yet_value;
	const char *def_from; /* no `def`: the default is the value of this root key */
	/* A root key switching this one on: it does something only while that key is not at its
	 * default (`mtls.enabled` true, `telemetry.tracing.endpoint` set). Set to anything but its
	 * own default while the switch is off, it is refused as unused (config_check.c). */
	const char *gate;
	size_t src_idx, src_off; /* CF_INHERIT: index and offset of the global key */
};

/* An object: the root config, a service, a backend, ... */
struct cfg_desc {
	const char *name;
	const struct cfg_key *keys;
	size_t n_keys;
	size_t size; /* sizeof the element struct (lists) */
};

extern const struct cfg_desc cfg_root_desc;
extern struct cfg_desc cfg_service_desc; /* completed at startup */
extern const char *const cfg_preset_names[];

enum cfg_origin {
	ORIGIN_UNSET = 0,
	ORIGIN_DEFAULT = 1,
	ORIGIN_PRESET = 2,
	ORIGIN_FILE = 3,
	ORIGIN_CONSUL_KV = 4, /* the document of config_source.consul_kv, over the file */
	ORIGIN_ENV = 5,
};
#define ORIGIN_INHERITED 0x80 /* service value copied from the global key */
const char *cfg_origin_name(uint8_t origin);

/* Origins of one object instance's values, and of its lists' elements. */
struct cfg_node {
	uint8_t *origin;	/* [desc->n_keys] */
	struct cfg_node **kids; /* [desc->n_keys]: CT_LIST keys -> array of their elements */
	size_t count;		/* elements in the array this node belongs to */
};

struct config_meta {
	struct cfg_node *root;
};
/* Allocates origin records for `count` elements described by `d` (all ORIGIN_UNSET). */
struct cfg_node *cfg_node_new(const struct cfg_desc *d, size_t count);
/* Size in bytes of a scalar value of type `t` (0 for strings and lists). */
size_t cfg_type_size(enum cfg_type t);

/* Where a value comes from while loading. */
struct cfg_in {
	const struct cJSON *json; /* value from the file, or NULL */
	const char *text;	  /* value from env / default / preset */
	const char *env;	  /* name of the env variable, or NULL */
};

/* Appends one formatted problem line to `errs` (silently drops it on ENOMEM). */
void cfg_errf(struct config_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Parses `in` per `k` into base+k->off. Reports problems under `path`; returns 0 or -EINVAL. */
int cfg_set(const struct cfg_key *k, void *base, const struct cfg_in *in, const char *path,
	    struct config_errors *errs);
/* True when key `k` has the same value in objects `a` and `b` (lists element by element). */
bool cfg_value_equal(const struct cfg_key *k, const void *a, const void *b);
/* Writes the rule a value of `k` must follow ("an integer in 1..100"). */
const char *cfg_rule(const struct cfg_key *k, char *buf, size_t len);
/* Renders the value of `k` in `base` as text (strings as is, lists comma-separated). */
const char *cfg_render(const struct cfg_key *k, const void *base, char *buf, size_t len);
/* Formats a duration in the largest exact unit ("1m30s", "250ms"). */
const char *cfg_duration_str(uint64_t ns, char *buf, size_t len);
/* Frees every owned value of an object described by `d` (not `base` itself). */
void cfg_free_object(const struct cfg_desc *d, void *base);
/* Frees one owned value (string, list) of key `k` in `base` and clears it. */
void cfg_free_value(const struct cfg_key *k, void *base);
void cfg_node_free(const struct cfg_desc *d, struct cfg_node *nodes);
/* MESH_* name of a root key (prefix "" ) or service key (prefix "SERVICES__<NAME>__"). */
const char *cfg_env_name(const char *prefix, const char *path, char *buf, size_t len);
int cfg_is_dns_label(const char *s);
size_t cfg_edit_distance(const char *a, const char *b);
/* The key of `d` at `path` (and its index), or NULL. Hash lookup, tables indexed at startup. */
const struct cfg_key *cfg_find_key(const struct cfg_desc *d, const char *path, size_t *idx);

enum { CFG_IS_UNKNOWN, CFG_IS_KEY, CFG_IS_SECTION };
/* What the `n` bytes at `path` name in `d`: a key (its index in *idx), a section or nothing. One
 * hash lookup; the loader calls it for every member of the file. */
int cfg_classify(const struct cfg_desc *d, const char *path, size_t n, size_t *idx);

/* Origin records of the elements of root list `key` (NULL when the list was never given). */
struct cfg_node *cfg_root_list(const struct mesh_config *cfg, const char *key);

/* Open-addressing set of byte strings, each remembered with an index (config_check.c). */
struct blobset {
	struct slot {
		uint64_t hash;
		const void *key;
		size_t len, idx;
	} * slots;
	size_t cap;
};
/* Sizes the set for `n` keys; free with free(s->slots). Returns 0 or -ENOMEM. */
int blobset_init(struct blobset *s, size_t n);
/* Adds `key` (which must outlive the set) with `idx`; returns the index of an equal key already
 * there, or SIZE_MAX. At most the `n` given to blobset_init keys may be added. */
size_t blobset_add(struct blobset *s, const void *key, size_t len, size_t idx);
/* Index stored with `key`, or SIZE_MAX when absent. */
size_t blobset_find(const struct blobset *s, const void *key, size_t len);
bool blobset_has(const struct blobset *s, const char *key);

/* Applies one `NAME=value` environment entry if NAME is a MESH_* key (config_env.c). */
void cfg_apply_env_var(struct mesh_config *cfg, const char *var, struct config_errors *errs);

/* True when root key `k` is under a switch (cfg_key.gate) that is off (at its default) in `cfg`:
 * the key does nothing there (config_check.c). */
bool cfg_gate_off(const struct cfg_key *k, const struct mesh_config *cfg);

/* Cross-field validation of a loaded, merged config. */
void cfg_validate(const struct mesh_config *cfg, struct config_errors *errs);

/* A parse arena (config_json.c): between begin and end, every cJSON allocation of the calling
 * thread comes from `a`, freeing such memory is a no-op, and end releases all of it at once.
 * Trees parsed in between must not be used after end. Arenas nest (end restores the previous). */
struct cfg_arena {
	struct cfg_arena_block *head;
	struct cfg_arena *prev;
};
void cfg_arena_begin(struct cfg_arena *a);
void cfg_arena_end(struct cfg_arena *a);

/* Version migration: one step upgrades a parsed document from version `from` to `from + 1`. */
typedef int (*cfg_migrate_fn)(struct cJSON *root, struct config_errors *errs);
/* Test hooks: pretend the current version is `v` and register a step. Not thread-safe. */
void config_test_set_current_version(int v);
int config_test_add_migration(int from, cfg_migrate_fn fn);

#endif
