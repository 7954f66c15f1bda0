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

struct loader {
	struct mesh_config *cfg;
	struct config_errors *errs;
	enum config_preset preset;
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
		if (migrations[n](root, errs))
			return -1;
	}
	cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "version"), current_version);
	return 0;
}

struct cfg_node *cfg_node_new(const struct cfg_desc *d, size_t count)
{
	size_t n = count ? count : 1, i;
	struct cfg_node *nodes = calloc(n, sizeof(*nodes));
	uint8_t *origins = calloc(n, d->n_keys);
	struct cfg_node **kids = calloc(n * d->n_keys, sizeof(*kids));

	if (!nodes || !origins || !kids) {
		free(nodes);
		free(origins);
		free(kids);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		nodes[i].origin = origins + i * d->n_keys;
		nodes[i].kids = kids + i * d->n_keys;
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
	free(nodes[0].origin);
	free(nodes[0].kids);
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

static void join_path(char *buf, size_t len, const char *elem, const char *rel)
{
	snprintf(buf, len, "%s%s%s", elem, *elem && *rel ? "." : "", rel);
}

/* True when some key of `d` lives below `rel` (so `rel` names a nested object). */
static bool is_section(const struct cfg_desc *d, const char *rel)
{
	size_t i, n = strlen(rel);

	for (i = 0; i < d->n_keys; i++)
		if (!strncmp(d->keys[i].path, rel, n) && d->keys[i].path[n] == '.')
			return true;
	return false;
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

static void apply_object(struct loader *ld, const struct cfg_desc *d, void *base,
			 struct cfg_node *node, const cJSON *obj, const char *elem,
			 const char *rel);

static void apply_list(struct loader *ld, const struct cfg_key *k, void *base,
		       struct cfg_node *node, size_t idx, const cJSON *arr, const char *full)
{
	const struct cfg_desc *sub = k->sub;
	size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
	struct cfg_node *nodes;
	char epath[600];
	char *elems;

	if (!cJSON_IsArray(arr)) {
		cfg_errf(ld->errs, "%s: wrong type (got %s, expected a list of %s objects)", full,
			 cJSON_IsObject(arr) ? "an object" : "a scalar", sub->name);
		return;
	}
	elems = calloc(n ? n : 1, sub->size);
	nodes = cfg_node_new(sub, n);
	if (!elems || !nodes) {
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

		snprintf(epath, sizeof(epath), "%.560s[%zu]", full, i);
		apply_defaults(ld, sub, e, &nodes[i]);
		if (!cJSON_IsObject(it)) {
			cfg_errf(ld->errs, "%s: wrong type (got %s, expected a %s object)", epath,
				 cJSON_IsArray(it) ? "a list" : "a scalar", sub->name);
			continue;
		}
		apply_object(ld, sub, e, &nodes[i], it, epath, "");
		for (size_t j = 0; j < sub->n_keys; j++) {
			char rule[160];

			if ((sub->keys[j].flags & CF_REQUIRED) && !nodes[i].origin[j])
				cfg_errf(ld->errs,
					 "%s.%s: missing required key (got nothing, expected %s)",
					 epath, sub->keys[j].path,
					 cfg_rule(&sub->keys[j], rule, sizeof(rule)));
		}
	}
}

static void apply_member(struct loader *ld, const struct cfg_desc *d, size_t idx, void *base,
			 struct cfg_node *node, const cJSON *m, const char *full)
{
	const struct cfg_key *k = &d->keys[idx];
	struct cfg_in in = { .json = m };

	if (node->origin[idx] == ORIGIN_FILE) {
		cfg_errf(ld->errs, "%s: duplicate key (got a second value, expected one)", full);
		return;
	}
	node->origin[idx] = ORIGIN_FILE;
	if (k->flags & CF_SPECIAL)
		return;
	if (k->type == CT_LIST)
		apply_list(ld, k, base, node, idx, m, full);
	else
		cfg_set(k, base, &in, full, ld->errs);
}

/* Applies the members of JSON object `obj`, found at `rel` (relative to the element `elem`). */
static void apply_object(struct loader *ld, const struct cfg_desc *d, void *base,
			 struct cfg_node *node, const cJSON *obj, const char *elem, const char *rel)
{
	char relpath[256], full[600];
	const cJSON *m;
	size_t idx;

	for (m = obj->child; m; m = m->next) {
		const char *name = m->string ? m->string : "";

		snprintf(relpath, sizeof(relpath), "%s%s%s", rel, *rel ? "." : "", name);
		join_path(full, sizeof(full), elem, relpath);
		if (strchr(name, '.') || !*name) {
			unknown_key(ld, d, rel, name, full);
		} else if (cfg_find_key(d, relpath, &idx)) {
			apply_member(ld, d, idx, base, node, m, full);
		} else if (is_section(d, relpath)) {
			if (cJSON_IsObject(m))
				apply_object(ld, d, base, node, m, elem, relpath);
			else
				cfg_errf(ld->errs, "%s: wrong type (got %s, expected an object)",
					 full, cJSON_IsArray(m) ? "a list" : "a scalar");
		} else {
			unknown_key(ld, d, rel, name, full);
		}
	}
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

/* Upper-cases a service name the way MESH_SERVICES__<NAME>__ spells it ('-' becomes '_'). */
static bool env_name_matches(const char *svc, const char *env, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char c = svc[i] == '-'
			     ? '_'
			     : (char)(svc[i] >= 'a' && svc[i] <= 'z' ? svc[i] - 32 : svc[i]);

		if (!svc[i] || c != env[i])
			return false;
	}
	return svc[len] == '\0';
}

/* Finds the key of `d` whose MESH_ name (after `prefix`) is `name`. */
static const struct cfg_key *find_env_key(const struct cfg_desc *d, const char *prefix,
					  const char *name, size_t *idx, char *hint, size_t hlen)
{
	size_t i, best = 3, dist;
	char buf[256];

	for (i = 0; i < d->n_keys; i++) {
		cfg_env_name(prefix, d->keys[i].path, buf, sizeof(buf));
		if (!strcmp(buf, name)) {
			*idx = i;
			return &d->keys[i];
		}
		dist = cfg_edit_distance(buf, name);
		if (dist < best) {
			best = dist;
			snprintf(hint, hlen, ", did you mean %s?", buf);
		}
	}
	return NULL;
}

/* An unknown MESH_* name is an error when it looks like a config key (same first section, or a
 * near miss); other MESH_* variables (MESH_CONFIG, test harness ones) are not ours. */
static bool looks_like_key(const char *name, const char *hint)
{
	const char *sec = name + 5;
	size_t n = strstr(sec, "__") ? (size_t)(strstr(sec, "__") - sec) : strlen(sec), i;
	char buf[256];

	if (*hint)
		return true;
	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		cfg_env_name("", cfg_root_desc.keys[i].path, buf, sizeof(buf));
		if (!strncmp(buf + 5, sec, n) && (buf[5 + n] == '\0' || buf[5 + n] == '_'))
			return true;
	}
	return false;
}

static void env_set(struct loader *ld, const struct cfg_key *k, void *base, uint8_t *origin,
		    const char *path, const char *name, const char *value)
{
	struct cfg_in in = { .text = value, .env = name };

	if (k->flags & CF_NOENV || k->type == CT_LIST) {
		cfg_errf(ld->errs,
			 "%s: cannot be set from the environment in %s (got \"%.64s\", expected it "
			 "in the config file)",
			 path, name, value);
		return;
	}
	*origin = ORIGIN_ENV;
	cfg_set(k, base, &in, path, ld->errs);
}

/* MESH_SERVICES__<NAME>__<KEY>: a per-service override, by service name. */
static void apply_service_env(struct loader *ld, const char *name, const char *value)
{
	const char *rest = name + strlen("MESH_SERVICES__"), *sep = strstr(rest, "__");
	struct mesh_config *cfg = ld->cfg;
	char key[256], hint[300] = "", path[400];
	const struct cfg_key *k;
	size_t i, idx;

	for (i = 0; sep && i < cfg->n_services; i++)
		if (env_name_matches(cfg->services[i].name ? cfg->services[i].name : "", rest,
				     (size_t)(sep - rest)))
			break;
	if (!sep || i == cfg->n_services) {
		cfg_errf(ld->errs,
			 "services: no such service in %s (got \"%.64s\", expected "
			 "MESH_SERVICES__<NAME>__<KEY> naming an entry of services)",
			 name, sep ? rest : "");
		return;
	}
	snprintf(key, sizeof(key), "MESH_%s", sep + 2);
	k = find_env_key(&cfg_service_desc, "", key, &idx, hint, sizeof(hint));
	if (!k) {
		cfg_errf(ld->errs,
			 "services[%zu]: unknown variable %s%s (got \"%.64s\", expected a variable "
			 "listed by meshd config env)",
			 i, name, hint, value);
		return;
	}
	snprintf(path, sizeof(path), "services[%zu].%s", i, k->path);
	env_set(ld, k, &cfg->services[i], &service_nodes(cfg)[i].origin[idx], path, name, value);
}

static void apply_env_var(struct loader *ld, const char *var)
{
	const char *eq = strchr(var, '=');
	char name[256], hint[300] = "";
	const struct cfg_key *k;
	size_t idx;

	if (strncmp(var, "MESH_", 5) || !eq || (size_t)(eq - var) >= sizeof(name))
		return;
	snprintf(name, sizeof(name), "%.*s", (int)(eq - var), var);
	if (!strcmp(name, "MESH_CONFIG"))
		return;
	if (!strncmp(name, "MESH_SERVICES__", 15)) {
		apply_service_env(ld, name, eq + 1);
		return;
	}
	k = find_env_key(&cfg_root_desc, "", name, &idx, hint, sizeof(hint));
	if (k) {
		env_set(ld, k, ld->cfg, &ld->cfg->meta->root->origin[idx], k->path, name, eq + 1);
	} else if (looks_like_key(name, hint)) {
		cfg_errf(
		    ld->errs,
		    "%s: unknown variable%s (got \"%.64s\", expected a variable listed by meshd "
		    "config env)",
		    name, hint, eq + 1);
	}
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

/* The preset decides the defaults, so it is read before anything else (env wins over file).
 * Bad values are reported later by the normal pass; here they just mean development. */
static enum config_preset pick_preset(const cJSON *root, char *const *envp)
{
	const char *s = NULL;
	size_t i;

	for (i = 0; envp && envp[i]; i++)
		if (!strncmp(envp[i], "MESH_PRESET=", 12))
			s = envp[i] + 12;
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

static void finalize(struct mesh_config *cfg)
{
	char host[256];

	cfg->version = current_version;
	if (!cfg->node_name && gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		cfg->node_name = strdup(host);
	}
}

extern char **environ;

/* The whole pipeline on a parsed document (`root` NULL: no file). Consumes nothing. */
static struct mesh_config *load_tree(cJSON *root, const char *source, char *const *envp,
				     struct config_errors *errs)
{
	struct loader ld = { .errs = errs };
	size_t n0 = errs->n, i;

	if (root && check_version(root, errs))
		return NULL;
	ld.cfg = config_new();
	if (!ld.cfg) {
		cfg_errf(errs, "(config): out of memory (got ENOMEM, expected memory)");
		return NULL;
	}
	if (!envp)
		envp = environ;
	ld.preset = pick_preset(root, envp);
	apply_defaults(&ld, &cfg_root_desc, ld.cfg, ld.cfg->meta->root);
	if (root)
		apply_object(&ld, &cfg_root_desc, ld.cfg, ld.cfg->meta->root, root, "", "");
	for (i = 0; envp[i]; i++)
		apply_env_var(&ld, envp[i]);
	if (merge_services(&ld))
		cfg_errf(errs, "(config): out of memory (got ENOMEM, expected memory)");
	finalize(ld.cfg);
	cfg_validate(ld.cfg, errs);
	if (errs->n != n0 || (source && !(ld.cfg->source_path = strdup(source)))) {
		config_free(ld.cfg);
		return NULL;
	}
	ld.cfg->generation = atomic_fetch_add(&generation, 1) + 1;
	return ld.cfg;
}

/* Reports where cJSON stopped, as line and column. */
static void json_error(const char *json, size_t len, const char *at, struct config_errors *errs)
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
	cfg_errf(errs,
		 "(root): invalid JSON at line %zu column %zu (got \"%.20s\", expected a JSON "
		 "object)",
		 line, col, off < len ? json + off : "end of input");
}

static struct mesh_config *load_buf(const char *json, size_t len, const char *source,
				    char *const *envp, struct config_errors *errs)
{
	struct mesh_config *cfg = NULL;
	const char *end = NULL;
	cJSON *root;

	if (!json)
		return load_tree(NULL, source, envp, errs);
	root = cJSON_ParseWithLengthOpts(json, len, &end, false);
	if (!root) {
		json_error(json, len, end, errs);
		return NULL;
	}
	while (end < json + len && (*end == ' ' || *end == '\n' || *end == '\t' || *end == '\r'))
		end++;
	if (end < json + len && *end)
		json_error(json, len, end, errs);
	else if (!cJSON_IsObject(root))
		cfg_errf(errs, "(root): wrong type (got a JSON %s, expected a JSON object)",
			 cJSON_IsArray(root) ? "array" : "scalar");
	else
		cfg = load_tree(root, source, envp, errs);
	cJSON_Delete(root);
	return cfg;
}

struct mesh_config *config_load_buf(const char *json, size_t len, char *const *envp,
				    struct config_errors *errs)
{
	struct config_errors local = { 0 };
	struct mesh_config *cfg = load_buf(json, len, NULL, envp, errs ? errs : &local);

	config_errors_free(&local);
	return cfg;
}

/* Reads a whole regular file into a NUL-terminated buffer. */
static char *read_file(const char *path, size_t *len, int *err)
{
	struct stat st;
	char *buf = NULL;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		*err = errno;
		goto out;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > MAX_FILE_SIZE) {
		*err = S_ISREG(st.st_mode) ? EFBIG : EISDIR;
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		*err = ENOMEM;
		goto out;
	}
	*len = 0;
	while ((n = read(fd, buf + *len, (size_t)st.st_size - *len)) > 0)
		*len += (size_t)n;
	if (n < 0) {
		*err = errno;
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
	struct config_errors local = { 0 };
	struct mesh_config *cfg;
	size_t len = 0;
	char *buf = NULL;
	int err = 0;

	if (!errs)
		errs = &local;
	if (path && !(buf = read_file(path, &len, &err))) {
		cfg_errf(errs,
			 "%s: cannot read the config file (got %s, expected a readable JSON "
			 "file)",
			 path, strerror(err));
		config_errors_free(&local);
		return NULL;
	}
	cfg = load_buf(buf, len, path, envp, errs);
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
