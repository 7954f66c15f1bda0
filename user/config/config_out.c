/* Output of a loaded config: `config show` (every leaf with its origin, text or JSON),
 * config_to_json() for the admin API, and config_diff() for reloads. All three walk the key
 * table over the config's structs, so a new key shows up everywhere at once. Secret keys are
 * marked in `show` and redacted in the JSON and in diffs. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

#define REDACTED "<redacted>"

typedef int (*leaf_fn)(void *ctx, const struct cfg_key *k, const void *base, const char *path,
		       uint8_t origin);

/* Calls `fn` for every leaf value below `base`; an empty list is one leaf. Lists of `skip`
 * objects (may be NULL) are left out. Stops on error. */
static int walk_skip(const struct cfg_desc *d, const void *base, const struct cfg_node *node,
		     const char *elem, leaf_fn fn, void *ctx, const struct cfg_desc *skip)
{
	char path[512], epath[540];
	size_t i, j;
	int err;

	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];
		const char *arr = NULL;
		size_t n = 0;
		uint8_t origin = node ? node->origin[i] : ORIGIN_UNSET;

		snprintf(path, sizeof(path), "%s%s%s", elem, *elem ? "." : "", k->path);
		if (k->type == CT_LIST && k->sub == skip)
			continue;
		if (k->type == CT_LIST) {
			arr = *(char *const *)((const char *)base + k->off);
			n = *(const size_t *)((const char *)base + k->count_off);
		}
		if (k->type != CT_LIST || n == 0) {
			err = fn(ctx, k, base, path, origin);
			if (err)
				return err;
			continue;
		}
		for (j = 0; j < n; j++) {
			const struct cfg_node *kid =
			    node && node->kids[i] ? &node->kids[i][j] : NULL;

			snprintf(epath, sizeof(epath), "%s[%zu]", path, j);
			err = walk_skip(k->sub, arr + j * k->sub->size, kid, epath, fn, ctx, skip);
			if (err)
				return err;
		}
	}
	return 0;
}

static int walk(const struct cfg_desc *d, const void *base, const struct cfg_node *node,
		const char *elem, leaf_fn fn, void *ctx)
{
	return walk_skip(d, base, node, elem, fn, ctx, NULL);
}

/* Origins of a loaded config; NULL (origins shown as "unset") for one built by hand. */
static const struct cfg_node *root_node(const struct mesh_config *cfg)
{
	return cfg->meta ? cfg->meta->root : NULL;
}

static int show_leaf(void *ctx, const struct cfg_key *k, const void *base, const char *path,
		     uint8_t origin)
{
	bool list = k->type >= CT_STRLIST;
	char val[4096], shown[4100], note[80] = "";

	cfg_render(k, base, val, sizeof(val));
	if (k->type == CT_LIST || (list && !*val))
		snprintf(shown, sizeof(shown), "[]");
	else if (!*val)
		snprintf(shown, sizeof(shown), "(unset)");
	else if (strpbrk(val, " \t\"")) /* keep one column per value */
		snprintf(shown, sizeof(shown), "\"%s\"", val);
	else
		snprintf(shown, sizeof(shown), "%s", val);
	if (k->not_yet)
		snprintf(note, sizeof(note), " (%s%snot supported yet)",
			 k->not_yet_value ? k->not_yet_value : "", k->not_yet_value ? ": " : "");
	if (fprintf((FILE *)ctx, "%-60s %-24s %s%s%s%s%s%s\n", path, shown, cfg_origin_name(origin),
		    !(origin & ORIGIN_INHERITED) ? ""
		    : k->def_from		 ? " (from "
						 : " (global)",
		    origin & ORIGIN_INHERITED && k->def_from ? k->def_from : "",
		    origin & ORIGIN_INHERITED && k->def_from ? ")" : "",
		    k->flags & CF_SECRET ? " secret" : "", note) < 0)
		return -EIO;
	return 0;
}

/* JSON value of one leaf; secrets redacted when asked. */
static cJSON *leaf_json(const struct cfg_key *k, const void *base, bool redact)
{
	const void *v = (const char *)base + k->off;
	char buf[4096];
	size_t i, n;
	cJSON *arr;

	switch (k->type) {
	case CT_BOOL:
		return cJSON_CreateBool(*(const bool *)v);
	case CT_UINT:
	case CT_INT:
	case CT_PORT:
	case CT_RATIO:
	case CT_PERCENT:
		cfg_render(k, base, buf, sizeof(buf));
		return cJSON_CreateNumber(strtod(buf, NULL));
	case CT_PORTLIST:
		n = *(const size_t *)((const char *)base + k->count_off);
		arr = cJSON_CreateArray();
		for (i = 0; arr && i < n; i++)
			cJSON_AddItemToArray(arr, cJSON_CreateNumber((*(uint16_t *const *)v)[i]));
		return arr;
	case CT_STRLIST:
	case CT_EPLIST:
		n = *(const size_t *)((const char *)base + k->count_off);
		arr = cJSON_CreateArray();
		for (i = 0; arr && i < n; i++) {
			const char *s =
			    k->type == CT_STRLIST
				? (*(char *const *const *)v)[i]
				: config_endpoint_str(*(struct config_endpoint *const *)v + i, buf,
						      sizeof(buf));
			cJSON_AddItemToArray(arr, cJSON_CreateString(s));
		}
		return arr;
	default:
		if (redact && (k->flags & CF_SECRET) && *(char *const *)v)
			return cJSON_CreateString(REDACTED);
		return cJSON_CreateString(cfg_render(k, base, buf, sizeof(buf)));
	}
}

/* Returns the object at the dotted `path` below `obj`, creating it; `*leaf` gets the last part. */
static cJSON *json_parent(cJSON *obj, const char *path, const char **leaf)
{
	const char *dot;
	char part[64];

	while (obj && (dot = strchr(path, '.'))) {
		cJSON *next;

		snprintf(part, sizeof(part), "%.*s", (int)(dot - path), path);
		next = cJSON_GetObjectItemCaseSensitive(obj, part);
		obj = next ? next : cJSON_AddObjectToObject(obj, part);
		path = dot + 1;
	}
	*leaf = path;
	return obj;
}

static cJSON *object_json(const struct cfg_desc *d, const void *base, bool redact)
{
	cJSON *obj = cJSON_CreateObject(), *parent, *item;
	const char *leaf;
	size_t i, j;

	for (i = 0; obj && i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];

		if (k->type == CT_LIST) {
			const char *arr = *(char *const *)((const char *)base + k->off);
			size_t n = *(const size_t *)((const char *)base + k->count_off);

			item = cJSON_CreateArray();
			for (j = 0; item && j < n; j++)
				cJSON_AddItemToArray(
				    item, object_json(k->sub, arr + j * k->sub->size, redact));
		} else {
			item = leaf_json(k, base, redact);
		}
		parent = json_parent(obj, k->path, &leaf);
		if (!item || !parent || !cJSON_AddItemToObject(parent, leaf, item)) {
			cJSON_Delete(item);
			cJSON_Delete(obj);
			return NULL;
		}
	}
	return obj;
}

char *config_to_json(const struct mesh_config *cfg)
{
	cJSON *obj = object_json(&cfg_root_desc, cfg, true);
	char *s = obj ? cJSON_Print(obj) : NULL;

	cJSON_Delete(obj);
	if (!s)
		errno = ENOMEM;
	return s;
}

static int origin_leaf(void *ctx, const struct cfg_key *k, const void *base, const char *path,
		       uint8_t origin)
{
	cJSON **o = ctx;

	if (!cJSON_AddStringToObject(o[0], path, cfg_origin_name(origin)))
		return -ENOMEM;
	if ((k->flags & CF_SECRET) && !cJSON_AddItemToArray(o[1], cJSON_CreateString(path)))
		return -ENOMEM;
	if (k->not_yet && !cJSON_AddStringToObject(o[2], path, k->not_yet))
		return -ENOMEM;
	return 0;
}

/* {"values": <loadable config>, "origins": {path: origin}, "secrets": [paths],
 * "not_supported_yet": {path: reason}}. */
static int show_json(const struct mesh_config *cfg, FILE *out)
{
	cJSON *doc = cJSON_CreateObject(),
	      *o[3] = { cJSON_CreateObject(), cJSON_CreateArray(), cJSON_CreateObject() };
	int err = -ENOMEM;
	char *s = NULL;

	if (!doc || !o[0] || !o[1] || !o[2] ||
	    !cJSON_AddItemToObject(doc, "values", object_json(&cfg_root_desc, cfg, false)))
		goto out;
	err = walk(&cfg_root_desc, cfg, root_node(cfg), "", origin_leaf, o);
	if (err)
		goto out;
	cJSON_AddItemToObject(doc, "origins", o[0]);
	cJSON_AddItemToObject(doc, "secrets", o[1]);
	cJSON_AddItemToObject(doc, "not_supported_yet", o[2]);
	o[0] = o[1] = o[2] = NULL;
	s = cJSON_Print(doc);
	err = s && fprintf(out, "%s\n", s) >= 0 ? 0 : -EIO;
out:
	cJSON_Delete(o[0]);
	cJSON_Delete(o[1]);
	cJSON_Delete(o[2]);
	cJSON_Delete(doc);
	cJSON_free(s);
	return err;
}

int config_show(const struct mesh_config *cfg, bool json, FILE *out)
{
	if (json)
		return show_json(cfg, out);
	if (fprintf(out, "%-60s %-24s %s\n", "PATH", "VALUE", "ORIGIN") < 0)
		return -EIO;
	return walk(&cfg_root_desc, cfg, root_node(cfg), "", show_leaf, out);
}

/* Leaves of one config as (path, value) pairs, for diffing. Values are raw so that a changed
 * secret path is seen as a change; `secret` marks those that must be redacted in the output. */
struct leaves {
	char **path, **value;
	bool *secret;
	size_t n, cap;
};

static int collect_leaf(void *ctx, const struct cfg_key *k, const void *base, const char *path,
			uint8_t origin)
{
	struct leaves *l = ctx;
	char val[4096];

	if (k->type == CT_LIST)
		return 0; /* an empty list has no leaves; its elements' leaves show the change */
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		char **p = realloc(l->path, cap * sizeof(*p)), **v;
		bool *sec;

		if (p)
			l->path = p;
		v = p ? realloc(l->value, cap * sizeof(*v)) : NULL;
		if (v)
			l->value = v;
		sec = v ? realloc(l->secret, cap * sizeof(*sec)) : NULL;
		if (!sec)
			return -ENOMEM;
		l->secret = sec;
		l->cap = cap;
	}
	l->secret[l->n] = (k->flags & CF_SECRET) && *(char *const *)((const char *)base + k->off);
	cfg_render(k, base, val, sizeof(val));
	l->path[l->n] = strdup(path);
	l->value[l->n] = strdup(val);
	if (!l->path[l->n] || !l->value[l->n]) {
		free(l->path[l->n]);
		free(l->value[l->n]);
		return -ENOMEM;
	}
	l->n++;
	return 0;
}

static void leaves_free(struct leaves *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		free(l->path[i]);
		free(l->value[i]);
	}
	free(l->path);
	free(l->value);
	free(l->secret);
}

static int add_change(struct config_diff *d, const char *path, const char *o, const char *n,
		      bool secret)
{
	struct config_change *c = realloc(d->changes, (d->n + 1) * sizeof(*c));

	if (!c)
		return -ENOMEM;
	d->changes = c;
	c = &c[d->n];
	c->path = strdup(path);
	c->old_value = strdup(secret && strcmp(o, "(none)") ? REDACTED : o);
	c->new_value = strdup(secret && strcmp(n, "(none)") ? REDACTED : n);
	d->n++;
	return c->path && c->old_value && c->new_value ? 0 : -ENOMEM;
}

/* Changes between two leaf lists: changed or added leaves in `b`'s order, then removed ones. */
static int diff_leaves(const struct leaves *a, const struct leaves *b, struct config_diff *out)
{
	struct blobset set;
	size_t i, j;
	bool *seen;
	int err = -ENOMEM;

	seen = calloc(a->n + 1, sizeof(*seen));
	if (!seen || blobset_init(&set, a->n)) {
		free(seen);
		return -ENOMEM;
	}
	for (i = 0; i < a->n; i++)
		blobset_add(&set, a->path[i], strlen(a->path[i]), i);
	for (j = 0, err = 0; !err && j < b->n; j++) {
		i = blobset_find(&set, b->path[j], strlen(b->path[j]));
		if (i == SIZE_MAX)
			err = add_change(out, b->path[j], "(none)", b->value[j], b->secret[j]);
		else if ((seen[i] = true) && strcmp(a->value[i], b->value[j]))
			err = add_change(out, b->path[j], a->value[i], b->value[j],
					 a->secret[i] || b->secret[j]);
	}
	for (i = 0; !err && i < a->n; i++)
		if (!seen[i])
			err = add_change(out, a->path[i], a->value[i], "(none)", a->secret[i]);
	free(set.slots);
	free(seen);
	return err;
}

static int diff_skip(const struct mesh_config *old, const struct mesh_config *new,
		     struct config_diff *out, const struct cfg_desc *skip)
{
	struct leaves a = { 0 }, b = { 0 };
	int err = 0;

	out->changes = NULL;
	out->n = 0;
	if (old)
		err = walk_skip(&cfg_root_desc, old, NULL, "", collect_leaf, &a, skip);
	if (!err && new)
		err = walk_skip(&cfg_root_desc, new, NULL, "", collect_leaf, &b, skip);
	if (!err)
		err = diff_leaves(&a, &b, out);
	leaves_free(&a);
	leaves_free(&b);
	if (err)
		config_diff_free(out);
	return err;
}

int config_diff(const struct mesh_config *old, const struct mesh_config *new,
		struct config_diff *out)
{
	return diff_skip(old, new, out, NULL);
}

int config_diff_settings(const struct mesh_config *old, const struct mesh_config *new,
			 struct config_diff *out)
{
	return diff_skip(old, new, out, &cfg_service_desc);
}

void config_diff_free(struct config_diff *d)
{
	size_t i;

	if (!d)
		return;
	for (i = 0; i < d->n; i++) {
		free(d->changes[i].path);
		free(d->changes[i].old_value);
		free(d->changes[i].new_value);
	}
	free(d->changes);
	d->changes = NULL;
	d->n = 0;
}
