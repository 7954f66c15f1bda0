/* Loading: JSON text -> version check and migrations -> defaults and preset -> file values ->
 * MESH_* environment -> per-service merge of the global policy keys -> validation. The result is
 * a new immutable struct mesh_config with the origin of every value, or NULL and every problem
 * found. Only this module parses JSON. Loads may run on any thread; the generation counter is
 * atomic, the migration table is fixed after startup. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_int.h"

#define MAX_FILE_SIZE (64u << 20)
#define MAX_VERSIONS 8

static atomic_uint_fast64_t generation;
static int current_version = CONFIG_VERSION_CURRENT;
/* migrations[n] upgrades a version n document to version n + 1. Version 1 is the first format,
 * so the built-in table is still empty. */
static cfg_migrate_fn migrations[MAX_VERSIONS + 1];

/* A list element's defaults, parsed once per load and copied into each element. */
struct defaults {
	const struct cfg_desc *desc;
	void *base;
	struct cfg_node *node;
};

#define MAX_LIST_KINDS 8

struct loader {
	struct mesh_config *cfg;
	struct config_errors *errs;
	enum config_preset preset;
	uint8_t origin; /* of the document being applied: ORIGIN_FILE or ORIGIN_CONSUL_KV */
	struct defaults defs[MAX_LIST_KINDS]; /* one per element description seen */
};

void config_test_set_current_version(int v)
{
	current_version = v > 0 && v <= MAX_VERSIONS ? v : CONFIG_VERSION_CURRENT;
}

int config_test_add_migration(int from, cfg_migrate_fn fn)
{
	if (from < 1 || from >= MAX_VERSIONS)
		return -EINVAL;
	migrations[from] = fn;
	return 0;
}

/* Checks "version" and upgrades older documents in place. Returns -1 when the rest of the
 * document cannot be interpreted. */
static int check_version(cJSON *root, struct config_errors *errs)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "version");
	size_t before;
	char *got;
	int n;

	if (!v) {
		cfg_errf(errs, "version: missing required key (got nothing, expected %d)",
			 current_version);
		return 0;
	}
	if (!cJSON_IsNumber(v) || v->valuedouble != (double)v->valueint || v->valueint < 1 ||
	    v->valueint > current_version) {
		got = cJSON_PrintUnformatted(v);
		cfg_errf(errs,
			 "version: unsupported configuration version (got %.40s, expected an "
			 "integer in 1..%d)",
			 got ? got : "?", current_version);
		cJSON_free(got);
		return -1;
	}
	for (n = v->valueint; n < current_version; n++) {
		if (!migrations[n]) {
			cfg_errf(errs,
				 "version: no migration from version %d (got %d, expected %d)", n,
				 v->valueint, current_version);
			return -1;
		}
		before = errs->n;
		if (migrations[n](root, errs)) {
			if (errs->n == before)
				cfg_errf(
				    errs,
				    "version: migration to version %d failed (got %d, expected "
				    "a file it can upgrade)",
				    n + 1, v->valueint);
			return -1;
		}
	}
	cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "version"), current_version);
	return 0;
}

/* One block per list: the nodes, then their kids pointers, then their origin bytes. */
struct cfg_node *cfg_node_new(const struct cfg_desc *d, size_t count)
{
	size_t n = count ? count : 1, i;
	size_t kids_off = n * sizeof(struct cfg_node);
	size_t origin_off = kids_off + n * d->n_keys * sizeof(struct cfg_node *);
	char *block = calloc(1, origin_off + n * d->n_keys);
	struct cfg_node *nodes = (struct cfg_node *)block;

	if (!block)
		return NULL;
	for (i = 0; i < n; i++) {
		nodes[i].kids = (struct cfg_node **)(block + kids_off) + i * d->n_keys;
		nodes[i].origin = (uint8_t *)(block + origin_off) + i * d->n_keys;
		nodes[i].count = count;
	}
	return nodes;
}

void cfg_node_free(const struct cfg_desc *d, struct cfg_node *nodes)
{
	size_t i, j;

	if (!nodes)
		return;
	for (i = 0; i < nodes[0].count; i++) {
		for (j = 0; j < d->n_keys; j++) {
			const struct cfg_key *k = &d->keys[j];

			if (k->type == CT_LIST && nodes[i].kids[j])
				cfg_node_free(k->sub, nodes[i].kids[j]);
		}
	}
	free(nodes);
}

/* Sets every key of a fresh object to its default, or its production value under that preset.
 * Inherited service keys stay unset until the merge. */
static void apply_defaults(struct loader *ld, const struct cfg_desc *d, void *base,
			   struct cfg_node *node)
{
	size_t i;

	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];
		bool prod = ld->preset == CONFIG_PRESET_PRODUCTION && k->prod;
		struct cfg_in in = { .text = prod ? k->prod : k->def };

		if (k->flags & (CF_INHERIT | CF_REQUIRED))
			continue;
		node->origin[i] = prod ? ORIGIN_PRESET : ORIGIN_DEFAULT;
		if (in.text && k->type != CT_LIST)
			cfg_set(k, base, &in, k->path, ld->errs);
	}
}

/* Writes a, then `sep` when both parts are non-empty, then b, truncating to `len`. A hand-made
 * join: paths are built for every member of every service, and snprintf dominated the load. */
/* The defaults of elements described by `d`, built on first use. */
static const struct defaults *defaults_get(struct loader *ld, const struct cfg_desc *d)
{
	struct defaults *t;
	size_t i;

	for (i = 0; i < MAX_LIST_KINDS && ld->defs[i].desc; i++)
		if (ld->defs[i].desc == d)
			return &ld->defs[i];
	if (i == MAX_LIST_KINDS)
		return NULL;
	t = &ld->defs[i];
	t->base = calloc(1, d->size);
	t->node = cfg_node_new(d, 1);
	if (!t->base || !t->node) {
		free(t->base);
		cfg_node_free(d, t->node);
		return NULL;
	}
	t->desc = d;
	apply_defaults(ld, d, t->base, t->node);
	return t;
}

static void defaults_free_all(struct loader *ld)
{
	size_t i;

	for (i = 0; i < MAX_LIST_KINDS && ld->defs[i].desc; i++) {
		cfg_free_object(ld->defs[i].desc, ld->defs[i].base);
		free(ld->defs[i].base);
		cfg_node_free(ld->defs[i].desc, ld->defs[i].node);
	}
}

/* Copies the defaults into a fresh element; owned strings are duplicated (lists start empty). */
static int defaults_copy(const struct cfg_desc *d, const struct defaults *t, void *base,
			 struct cfg_node *node)
{
	int err = 0;
	size_t i;

	memcpy(base, t->base, d->size);
	memcpy(node->origin, t->node->origin, d->n_keys);
	for (i = 0; i < d->n_keys; i++) {
		char **s = (char **)((char *)base + d->keys[i].off);

		if (cfg_type_size(d->keys[i].type) || d->keys[i].type >= CT_STRLIST || !*s)
			continue;
		*s = strdup(*s); /* on failure the rest still gets copied or NULL: no aliasing */
		if (!*s)
			err = -ENOMEM;
	}
	return err;
}

static void join3(char *buf, size_t len, const char *a, const char *sep, const char *b)
{
	size_t la = strlen(a), ls = *a && *b ? strlen(sep) : 0, lb = strlen(b);

	if (la >= len)
		la = len - 1;
	memcpy(buf, a, la);
	if (ls > len - 1 - la)
		ls = len - 1 - la;
	memcpy(buf + la, sep, ls);
	if (lb > len - 1 - la - ls)
		lb = len - 1 - la - ls;
	memcpy(buf + la + ls, b, lb);
	buf[la + ls + lb] = '\0';
}

/* "<full>[<i>]" */
static void index_path(char *buf, size_t len, const char *full, size_t i)
{
	char num[24], *p = num + sizeof(num);

	*--p = '\0';
	*--p = ']';
	do
		*--p = (char)('0' + i % 10);
	while (i /= 10);
	*--p = '[';
	join3(buf, len, full, "", p);
}

/* Reports an unknown member, suggesting the nearest sibling key and listing the valid ones. */
static void unknown_key(struct loader *ld, const struct cfg_desc *d, const char *rel,
			const char *name, const char *full)
{
	size_t i, n = strlen(rel), best_d = 3, pos, seg, dist;
	char best[64] = "", list[320] = "", cand[64], last[64] = "";

	for (i = 0; i < d->n_keys; i++) {
		const char *p = d->keys[i].path;

		if (n && (strncmp(p, rel, n) || p[n] != '.'))
			continue;
		p += n ? n + 1 : 0;
		seg = strcspn(p, ".");
		snprintf(cand, sizeof(cand), "%.*s", (int)seg, p);
		if (!strcmp(cand, last))
			continue; /* keys of one section are adjacent in the table */
		snprintf(last, sizeof(last), "%s", cand);
		pos = strlen(list);
		snprintf(list + pos, sizeof(list) - pos, "%s%s", pos ? ", " : "", cand);
		dist = cfg_edit_distance(name, cand);
		if (dist < best_d && dist < strlen(name)) {
			best_d = dist;
			snprintf(best, sizeof(best), "%s", cand);
		}
	}
	cfg_errf(ld->errs, "%s: unknown key%s%s%s (got \"%.64s\", expected one of: %s)", full,
		 *best ? ", did you mean \"" : "", best, *best ? "\"?" : "", name, list);
}

/* The JSON path being applied, built in place: the element part ("services[3]") once, then
 * each member appended at its level, so no per-member copying. The relative path (the table
 * lookup key) starts at `rel`. */
struct jpath {
	char buf[640];
	size_t rel;
};

static void apply_object(struct loader *ld, const struct cfg_desc *d, void *base,
			 struct cfg_node *node, const cJSON *obj, struct jpath *p, size_t len);

static void check_required(struct loader *ld, const struct cfg_desc *d, const struct cfg_node *node,
			   const char *epath)
{
	char rule[160];
	size_t j;

	for (j = 0; j < d->n_keys; j++)
		if ((d->keys[j].flags & CF_REQUIRED) && !node->origin[j])
			cfg_errf(ld->errs, "%s.%s: missing required key (got nothing, expected %s)",
				 epath, d->keys[j].path, cfg_rule(&d->keys[j], rule, sizeof(rule)));
}

static void apply_list(struct loader *ld, const struct cfg_key *k, void *base,
		       struct cfg_node *node, size_t idx, const cJSON *arr, const char *full)
{
	const struct cfg_desc *sub = k->sub;
	size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
	const struct defaults *defs = NULL;
	struct cfg_node *nodes;
	struct jpath ep;
	char *elems, *epath = ep.buf;

	if (!cJSON_IsArray(arr)) {
		cfg_errf(ld->errs, "%s: wrong type (got %s, expected a list of %s objects)", full,
			 cJSON_IsObject(arr) ? "an object" : "a scalar", sub->name);
		return;
	}
	elems = calloc(n ? n : 1, sub->size);
	nodes = cfg_node_new(sub, n);
	if (!elems || !nodes || !(defs = defaults_get(ld, sub))) {
		free(elems);
		cfg_node_free(sub, nodes);
		cfg_errf(ld->errs, "%s: out of memory (got %zu items, expected fewer)", full, n);
		return;
	}
	cfg_free_value(k, base);
	cfg_node_free(sub, node->kids[idx]);
	*(void **)((char *)base + k->off) = elems;
	*(size_t *)((char *)base + k->count_off) = n;
	node->kids[idx] = nodes;
	for (const cJSON *it = arr->child; it; it = it->next, i++) {
		void *e = elems + i * sub->size;

		index_path(ep.buf, sizeof(ep.buf), full, i);
		ep.rel = strlen(ep.buf) + 1;
		if (defaults_copy(sub, defs, e, &nodes[i])) {
			cfg_errf(ld->errs, "%s: out of memory (got ENOMEM, expected memory)",
				 epath);
			break;
		}
		if (!cJSON_IsObject(it)) {
			cfg_errf(ld->errs, "%s: wrong type (got %s, expected a %s object)", epath,
				 cJSON_IsArray(it) ? "a list" : "a scalar", sub->name);
			continue;
		}
		apply_object(ld, sub, e, &nodes[i], it, &ep, ep.rel - 1);
		check_required(ld, sub, &nodes[i], epath);
	}
}

static void apply_member(struct loader *ld, const struct cfg_desc *d, size_t idx, void *base,
			 struct cfg_node *node, const cJSON *m, const char *full)
{
	const struct cfg_key *k = &d->keys[idx];
	struct cfg_in in = { .json = m };

	if (node->origin[idx] == ld->origin) {
		cfg_errf(ld->errs, "%s: duplicate key (got a second value, expected one)", full);
		return;
	}
	if (ld->origin == ORIGIN_CONSUL_KV && (k->flags & CF_RESTART)) {
		cfg_errf(ld->errs,
			 "%s: cannot come from the Consul KV config (got a value, expected it in "
			 "the local file only: it needs a restart)",
			 full);
		return;
	}
	node->origin[idx] = ld->origin;
	if (k->flags & CF_SPECIAL)
		return;
	if (k->type == CT_LIST)
		apply_list(ld, k, base, node, idx, m, full);
	else
		cfg_set(k, base, &in, full, ld->errs);
}

/* Applies the members of JSON object `obj`, found at `rel` (relative to the element `elem`). */
#define MAX_SECTIONS 16 /* more than any object of the table has */

/* Remembers the sections met in one JSON object; true when `name` was already there. */
static bool seen_before(const char **seen, size_t *n, const char *name)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if (!strcmp(seen[i], name))
			return true;
	if (*n < MAX_SECTIONS)
		seen[(*n)++] = name;
	return false;
}

/* Reports member `name` of the object whose path is p->buf[0..len). */
static void unknown_member(struct loader *ld, const struct cfg_desc *d, const struct jpath *p,
			   size_t len, const char *name)
{
	char parent[sizeof(p->buf)], full[sizeof(p->buf) + 80];
	size_t plen = len > p->rel ? len - p->rel : 0;

	snprintf(parent, sizeof(parent), "%.*s", (int)plen, p->buf + p->rel);
	snprintf(full, sizeof(full), "%.*s%s%.64s", (int)len, p->buf, len ? "." : "", name);
	unknown_key(ld, d, parent, name, full);
}

static void apply_object(struct loader *ld, const struct cfg_desc *d, void *base,
			 struct cfg_node *node, const cJSON *obj, struct jpath *p, size_t len)
{
	const char *rel = p->buf + p->rel, *seen[MAX_SECTIONS];
	size_t idx, n, n_seen = 0;
	const cJSON *m;
	int kind;

	for (m = obj->child; m; m = m->next) {
		const char *name = m->string ? m->string : "";
		size_t at = len ? len + 1 : 0;

		n = strlen(name);
		if (at + n >= sizeof(p->buf) || strchr(name, '.') || !n) {
			unknown_member(ld, d, p, len, name);
			continue;
		}
		if (len)
			p->buf[len] = '.';
		memcpy(p->buf + at, name, n + 1);
		kind = cfg_classify(d, rel, at + n - p->rel, &idx);
		if (kind == CFG_IS_KEY) {
			apply_member(ld, d, idx, base, node, m, p->buf);
		} else if (kind == CFG_IS_SECTION) {
			if (seen_before(seen, &n_seen, name))
				cfg_errf(ld->errs,
					 "%s: duplicate key (got a second object, expected one)",
					 p->buf);
			else if (cJSON_IsObject(m))
				apply_object(ld, d, base, node, m, p, at + n);
			else
				cfg_errf(ld->errs, "%s: wrong type (got %s, expected an object)",
					 p->buf, cJSON_IsArray(m) ? "a list" : "a scalar");
		} else {
			unknown_member(ld, d, p, len, name);
		}
	}
	p->buf[len] = '\0';
}

struct cfg_node *cfg_root_list(const struct mesh_config *cfg, const char *key)
{
	size_t idx;

	if (!cfg_find_key(&cfg_root_desc, key, &idx))
		return NULL;
	return cfg->meta->root->kids[idx];
}

static struct cfg_node *service_nodes(const struct mesh_config *cfg)
{
	return cfg_root_list(cfg, "services");
}

/* Copies the effective global policy into every service key the service did not set. */
static int merge_services(struct loader *ld)
{
	struct mesh_config *cfg = ld->cfg;
	struct cfg_node *nodes = service_nodes(cfg);
	const struct cfg_desc *d = &cfg_service_desc;
	size_t i, j;

	for (i = 0; i < cfg->n_services; i++) {
		for (j = 0; j < d->n_keys; j++) {
			const struct cfg_key *k = &d->keys[j];
			char *dst = (char *)&cfg->services[i] + k->off;
			const char *src = (const char *)cfg + k->src_off;

			if (!(k->flags & CF_INHERIT) || nodes[i].origin[j])
				continue;
			nodes[i].origin[j] = cfg->meta->root->origin[k->src_idx] | ORIGIN_INHERITED;
			if (cfg_type_size(k->type)) {
				memcpy(dst, src, cfg_type_size(k->type));
			} else if (*(char *const *)src) {
				*(char **)dst = strdup(*(char *const *)src);
				if (!*(char **)dst)
					return -ENOMEM;
			}
		}
	}
	return 0;
}

size_t cfg_type_size(enum cfg_type t)
{
	switch (t) {
	case CT_BOOL:
		return sizeof(bool);
	case CT_UINT:
		return sizeof(uint32_t);
	case CT_INT:
	case CT_ENUM:
		return sizeof(int);
	case CT_PERCENT:
		return sizeof(uint32_t);
	case CT_RATIO:
		return sizeof(double);
	case CT_DURATION:
		return sizeof(uint64_t);
	case CT_PORT:
		return sizeof(uint16_t);
	case CT_ENDPOINT:
	case CT_ADDR:
		return sizeof(struct config_endpoint);
	default:
		return 0;
	}
}

/* The preset decides the defaults, so it is read before anything else (env wins over the KV
 * document, which wins over the file). Bad values are reported later by the normal pass; here
 * they just mean development. */
static enum config_preset pick_preset(const cJSON *root, const cJSON *kv, char *const *envp)
{
	const char *s = NULL;
	size_t i;

	for (i = 0; envp && envp[i]; i++)
		if (!strncmp(envp[i], "MESH_PRESET=", 12))
			s = envp[i] + 12;
	if (!s)
		s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(kv, "preset"));
	if (!s)
		s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "preset"));
	return s && !strcmp(s, "production") ? CONFIG_PRESET_PRODUCTION : CONFIG_PRESET_DEVELOPMENT;
}

static struct mesh_config *config_new(void)
{
	struct mesh_config *cfg = calloc(1, sizeof(*cfg));

	if (!cfg)
		return NULL;
	cfg->meta = calloc(1, sizeof(*cfg->meta));
	if (!cfg->meta || !(cfg->meta->root = cfg_node_new(&cfg_root_desc, 1))) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* Root keys whose default is another key's value (`def_from`, e.g. discovery.consul.datacenter
 * from node.datacenter) take it when nothing set them; their origin is the source's, marked
 * ORIGIN_INHERITED so `config show` names the source. */
static void derive_defaults(struct mesh_config *cfg, struct config_errors *errs)
{
	uint8_t *origin = cfg->meta->root->origin;
	const struct cfg_key *src;
	size_t i, si;
	char val[4096];

	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];
		struct cfg_in in = { .text = val };

		if (!k->def_from || origin[i] > ORIGIN_PRESET)
			continue;
		src = cfg_find_key(&cfg_root_desc, k->def_from, &si);
		if (!src)
			continue;
		cfg_render(src, cfg, val, sizeof(val));
		if (!cfg_set(k, cfg, &in, k->path, errs))
			origin[i] = origin[si] | ORIGIN_INHERITED;
	}
}

/* Defaults that depend on other values: the node name (host name) and registration IDs (the
 * registered name). */
static void finalize(struct mesh_config *cfg)
{
	char host[256];
	size_t i;

	cfg->version = current_version;
	if (!cfg->node_name && gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		cfg->node_name = strdup(host);
	}
	for (i = 0; i < cfg->consul.n_reg; i++)
		if (!cfg->consul.reg[i].id && cfg->consul.reg[i].name)
			cfg->consul.reg[i].id = strdup(cfg->consul.reg[i].name);
}

extern char **environ;

/* Length of the name part of a `NAME=value` entry. */
static size_t env_name_len(const char *var)
{
	return strcspn(var, "=");
}

/* A MESH_* variable given twice (possible in an execve() environment) is refused like a key
 * given twice in the file, instead of the last one silently winning. */
static bool env_duplicate(char *const *envp, size_t i, struct config_errors *errs)
{
	size_t n = env_name_len(envp[i]), j;

	if (strncmp(envp[i], "MESH_", 5))
		return false;
	for (j = 0; j < i; j++)
		if (env_name_len(envp[j]) == n && !strncmp(envp[j], envp[i], n)) {
			cfg_errf(errs,
				 "%.*s: duplicate variable (got a second value \"%.64s\", expected "
				 "one)",
				 (int)(n > 200 ? 200 : n), envp[i],
				 envp[i][n] ? envp[i] + n + 1 : "");
			return true;
		}
	return false;
}

/* The whole pipeline on a parsed document (`root` NULL: no file) and the KV document layered
 * over it (`kv` NULL: none). Consumes nothing. */
static struct mesh_config *load_tree(cJSON *root, cJSON *kv, const char *source, char *const *envp,
				     struct config_errors *errs)
{
	struct jpath rootpath = { .buf = "", .rel = 0 };
	struct loader ld = { .errs = errs, .origin = ORIGIN_FILE };
	size_t n0 = errs->n, i;

	if (root && check_version(root, errs))
		return NULL;
	if (kv && cJSON_GetObjectItemCaseSensitive(kv, "version") && check_version(kv, errs))
		return NULL;
	ld.cfg = config_new();
	if (!ld.cfg) {
		cfg_errf(errs, "(config): out of memory (got ENOMEM, expected memory)");
		return NULL;
	}
	if (!envp)
		envp = environ;
	ld.preset = pick_preset(root, kv, envp);
	apply_defaults(&ld, &cfg_root_desc, ld.cfg, ld.cfg->meta->root);
	if (root)
		apply_object(&ld, &cfg_root_desc, ld.cfg, ld.cfg->meta->root, root, &rootpath, 0);
	ld.origin = ORIGIN_CONSUL_KV;
	if (kv)
		apply_object(&ld, &cfg_root_desc, ld.cfg, ld.cfg->meta->root, kv, &rootpath, 0);
	defaults_free_all(&ld);
	for (i = 0; envp[i]; i++)
		if (!env_duplicate(envp, i, errs))
			cfg_apply_env_var(ld.cfg, envp[i], errs);
	if (merge_services(&ld))
		cfg_errf(errs, "(config): out of memory (got ENOMEM, expected memory)");
	derive_defaults(ld.cfg, errs);
	finalize(ld.cfg);
	cfg_validate(ld.cfg, errs);
	if (errs->n != n0 || (source && !(ld.cfg->source_path = strdup(source)))) {
		config_free(ld.cfg);
		return NULL;
	}
	ld.cfg->generation = atomic_fetch_add(&generation, 1) + 1;
	return ld.cfg;
}

/* Reports a problem of the document at `at` (where cJSON stopped, ...), as line and column. */
static void json_error(const char *label, const char *json, size_t len, const char *at,
		       const char *what, const char *expected, struct config_errors *errs)
{
	size_t line = 1, col = 1,
	       off = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
	size_t i;

	for (i = 0; i < off; i++, col++) {
		if (json[i] == '\n') {
			line++;
			col = 0;
		}
	}
	cfg_errf(errs, "%s: %s at line %zu column %zu (got \"%.20s\", expected %s)", label, what,
		 line, col, off < len ? json + off : "end of input", expected);
}

/* Offset of the first `\u0000` escape inside a JSON string, or `len`. cJSON decodes it into a
 * NUL that cuts the C string ("api\u0000x" would load as "api"), so such a document is refused
 * before parsing. A scan with string and escape state: `\\u0000` is not a NUL. */
static size_t nul_escape(const char *json, size_t len)
{
	bool in_str = false;
	size_t i;

	for (i = 0; i < len; i++) {
		if (json[i] == '"') {
			in_str = !in_str;
		} else if (in_str && json[i] == '\\') {
			if (i + 5 < len && json[i + 1] == 'u' && !memcmp(json + i + 2, "0000", 4))
				return i;
			i++; /* the escaped character */
		}
	}
	return len;
}

/* Parses one document that must be a JSON object (inside the caller's arena); NULL with the
 * problem reported under `label`. */
static cJSON *parse_object(const char *label, const char *json, size_t len,
			   struct config_errors *errs)
{
	const char *end = NULL;
	cJSON *root;

	if (nul_escape(json, len) < len) {
		json_error(label, json, len, json + nul_escape(json, len),
			   "NUL character in a string", "text without \\u0000", errs);
		return NULL;
	}
	root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	if (!root) {
		json_error(label, json, len, end, "invalid JSON", "a JSON object", errs);
		return NULL;
	}
	while (end < json + len && (*end == ' ' || *end == '\n' || *end == '\t' || *end == '\r'))
		end++;
	if (end < json + len && *end) {
		json_error(label, json, len, end, "invalid JSON", "a JSON object", errs);
		return NULL;
	}
	if (!cJSON_IsObject(root)) {
		cfg_errf(errs, "%s: wrong type (got a JSON %s, expected a JSON object)", label,
			 cJSON_IsArray(root) ? "array" : "scalar");
		return NULL;
	}
	return root;
}

/* The file's document `json` (NULL: none) with the KV document `kv` (NULL: none) over it. */
static struct mesh_config *load_buf(const char *json, size_t len, const char *kv, size_t kv_len,
				    const char *source, char *const *envp,
				    struct config_errors *errs)
{
	struct mesh_config *cfg = NULL;
	cJSON *root = NULL, *over = NULL;
	struct cfg_arena arena;
	bool ok = true;

	cfg_arena_begin(&arena);
	if (json)
		ok = (root = parse_object("(root)", json, len, errs)) != NULL;
	if (ok && kv)
		ok = (over = parse_object("(consul_kv)", kv, kv_len, errs)) != NULL;
	if (ok)
		cfg = load_tree(root, over, source, envp, errs);
	cfg_arena_end(&arena); /* the whole trees at once */
	return cfg;
}

struct mesh_config *config_load_buf(const char *json, size_t len, char *const *envp,
				    struct config_errors *errs)
{
	struct config_errors local = { 0 };
	struct mesh_config *cfg = load_buf(json, len, NULL, 0, NULL, envp, errs ? errs : &local);

	config_errors_free(&local);
	return cfg;
}

/* Reads a whole regular file into a NUL-terminated buffer; NULL with `*why` set. O_NONBLOCK so
 * that naming a FIFO fails instead of hanging. */
static char *read_file(const char *path, size_t *len, const char **why)
{
	struct stat st;
	char *buf = NULL;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st)) {
		*why = strerror(errno);
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > MAX_FILE_SIZE) {
		*why = S_ISDIR(st.st_mode)   ? "a directory"
		       : S_ISREG(st.st_mode) ? "a file over 64 MiB"
					     : "not a regular file";
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		*why = strerror(ENOMEM);
		goto out;
	}
	*len = 0;
	while ((n = read(fd, buf + *len, (size_t)st.st_size - *len)) > 0)
		*len += (size_t)n;
	if (n < 0) {
		*why = strerror(errno);
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[*len] = '\0';
out:
	if (fd >= 0)
		close(fd);
	return buf;
}

struct mesh_config *config_load(const char *path, char *const *envp, struct config_errors *errs)
{
	return config_load_kv(path, NULL, 0, envp, errs);
}

struct mesh_config *config_load_kv(const char *path, const char *kv, size_t kv_len,
				   char *const *envp, struct config_errors *errs)
{
	struct config_errors local = { 0 };
	const char *why = "?";
	struct mesh_config *cfg;
	size_t len = 0;
	char *buf = NULL;

	if (!errs)
		errs = &local;
	if (path && !(buf = read_file(path, &len, &why))) {
		cfg_errf(errs,
			 "%s: cannot read the config file (got %s, expected a readable JSON "
			 "file)",
			 path, why);
		config_errors_free(&local);
		return NULL;
	}
	cfg = load_buf(buf, len, kv, kv_len, path, envp, errs);
	free(buf);
	config_errors_free(&local);
	return cfg;
}

void config_free(struct mesh_config *cfg)
{
	if (!cfg)
		return;
	cfg_free_object(&cfg_root_desc, cfg);
	if (cfg->meta)
		cfg_node_free(&cfg_root_desc, cfg->meta->root);
	free(cfg->meta);
	free(cfg->source_path);
	free(cfg);
}

const struct config_service *config_service_find(const struct mesh_config *cfg, const char *name)
{
	size_t i;

	for (i = 0; cfg && name && i < cfg->n_services; i++)
		if (cfg->services[i].name && !strcmp(cfg->services[i].name, name))
			return &cfg->services[i];
	return NULL;
}
