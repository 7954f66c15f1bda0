/* Catalog discovery (discovery.consul.catalog): the decoding of /v1/catalog/services (service
 * name -> tags) and of /v1/catalog/service/<name>?tag=<tag> (the instances, whose ServiceMeta
 * carries `mesh-vip`), and the set of tagged services with what each one's VIP is known to be,
 * from which the source (consul_source.c) builds the services it defines. Shapes follow
 * /work/shared/consul/catalog-services.json and catalog-service-web.json. Pure: no I/O, no
 * logging (the caller logs what a change means); loop thread. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

#define CATALOG_META_VIP "mesh-vip"

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_tag(const cJSON *tags, const char *tag)
{
	const cJSON *t;

	cJSON_ArrayForEach(t, tags) if (cJSON_IsString(t) && t->valuestring &&
					!strcmp(t->valuestring, tag)) return true;
	return false;
}

void consul_names_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

int consul_parse_catalog_services(const char *json, size_t len, const char *tag, char ***names,
				  size_t *n, char *why, size_t wlen)
{
	cJSON *doc = cJSON_ParseWithLength(json, len);
	const cJSON *s;
	char **v = NULL;
	size_t k = 0;
	int err = 0;

	*names = NULL;
	*n = 0;
	if (!cJSON_IsObject(doc)) {
		snprintf(why, wlen, "not a JSON object of service name -> tags");
		cJSON_Delete(doc);
		return -EINVAL;
	}
	v = calloc((size_t)cJSON_GetArraySize(doc) + 1, sizeof(*v));
	if (!v)
		err = -ENOMEM;
	cJSON_ArrayForEach(s, doc)
	{
		if (err)
			break;
		if (!cJSON_IsArray(s) && !cJSON_IsNull(s)) {
			snprintf(why, wlen, "tags of service \"%.64s\" are not an array",
				 s->string);
			err = -EINVAL;
		} else if (config_is_dns_label(s->string) && has_tag(s, tag) &&
			   !(v[k++] = strdup(s->string))) {
			err = -ENOMEM;
		}
	}
	cJSON_Delete(doc);
	if (err) {
		consul_names_free(v, k);
		return err;
	}
	qsort(v, k, sizeof(*v), cmp_str);
	*names = v;
	*n = k;
	return 0;
}

/* The mesh-vip of one instance: 1 with `vip` set, 0 when it carries none, -EINVAL. */
static int instance_vip(const cJSON *inst, struct config_endpoint *vip, char *why, size_t wlen)
{
	const cJSON *meta = cJSON_GetObjectItemCaseSensitive(inst, "ServiceMeta");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, CATALOG_META_VIP);

	if (!cJSON_IsObject(inst)) {
		snprintf(why, wlen, "an instance is not a JSON object");
		return -EINVAL;
	}
	if (!v)
		return 0;
	if (!cJSON_IsString(v) || config_parse_endpoint(v->valuestring, vip) || !vip->port) {
		snprintf(why, wlen, "meta %s \"%.64s\" is not an ip:port", CATALOG_META_VIP,
			 cJSON_IsString(v) ? v->valuestring : "(not a string)");
		return -EINVAL;
	}
	return 1;
}

int consul_parse_catalog_vip(const char *json, size_t len, struct config_endpoint *vip, char *why,
			     size_t wlen)
{
	cJSON *doc = cJSON_ParseWithLength(json, len);
	struct config_endpoint one;
	const cJSON *inst;
	int found = 0, r = 0;

	memset(vip, 0, sizeof(*vip));
	if (!cJSON_IsArray(doc)) {
		snprintf(why, wlen, "not a JSON array of instances");
		cJSON_Delete(doc);
		return -EINVAL;
	}
	cJSON_ArrayForEach(inst, doc)
	{
		memset(&one, 0, sizeof(one));
		r = instance_vip(inst, &one, why, wlen);
		if (r < 0)
			break;
		if (r && found && memcmp(&one, vip, sizeof(one))) {
			snprintf(why, wlen, "instances carry different %s values",
				 CATALOG_META_VIP);
			r = -EINVAL;
			break;
		}
		if (r)
			*vip = one;
		found |= r;
	}
	cJSON_Delete(doc);
	if (r < 0 && inst)
		return r;
	return found ? 0 : -ENOENT;
}

/* --- the tagged set ------------------------------------------------------------------------- */

struct catalog_svc {
	char *name;
	enum consul_catalog_state state;
	struct config_endpoint vip;
	char why[128];
};

struct consul_catalog {
	struct catalog_svc *v;
	size_t n;
	bool known; /* a catalog answer was taken */
};

struct consul_catalog *consul_catalog_new(void)
{
	return calloc(1, sizeof(struct consul_catalog));
}

void consul_catalog_free(struct consul_catalog *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i].name);
	free(c->v);
	free(c);
}

static struct catalog_svc *find(const struct consul_catalog *c, const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i].name && !strcmp(c->v[i].name, name)) /* NULL: taken by set_names */
			return &c->v[i];
	return NULL;
}

int consul_catalog_set_names(struct consul_catalog *c, char **names, size_t n, bool *changed)
{
	struct catalog_svc *v = calloc(n + 1, sizeof(*v)), *old;
	size_t i;

	if (!v)
		return -ENOMEM;
	*changed = !c->known || n != c->n;
	for (i = 0; i < n; i++) {
		old = find(c, names[i]);
		if (old)
			v[i] = *old;
		else
			*changed = true;
		v[i].name = names[i]; /* taken */
		if (old) {
			free(old->name);
			old->name = NULL;
		}
	}
	for (i = 0; i < c->n; i++)
		free(c->v[i].name);
	free(c->v);
	free(names);
	c->v = v;
	c->n = n;
	c->known = true;
	return 0;
}

size_t consul_catalog_count(const struct consul_catalog *c)
{
	return c->n;
}

const char *consul_catalog_name(const struct consul_catalog *c, size_t i)
{
	return i < c->n ? c->v[i].name : NULL;
}

int consul_catalog_set_meta(struct consul_catalog *c, const char *name, const char *json,
			    size_t len, enum consul_catalog_state *state, const char **why)
{
	struct catalog_svc *s = find(c, name);
	struct config_endpoint vip;
	char w[128] = "";
	enum consul_catalog_state st;
	int r;

	if (!s)
		return 0;
	r = consul_parse_catalog_vip(json, len, &vip, w, sizeof(w));
	st = r == 0	    ? CONSUL_CATALOG_VIP
	     : r == -ENOENT ? CONSUL_CATALOG_NO_VIP
			    : CONSUL_CATALOG_BAD;
	if (r == -ENOMEM)
		return r;
	*state = st;
	*why = s->why;
	if (s->state == st && (st != CONSUL_CATALOG_VIP || !memcmp(&s->vip, &vip, sizeof(vip))) &&
	    (st != CONSUL_CATALOG_BAD || !strcmp(s->why, w)))
		return 0;
	s->state = st;
	s->vip = vip;
	snprintf(s->why, sizeof(s->why), "%s", w);
	return 1;
}

int consul_catalog_defs(const struct consul_catalog *c, struct discovery_def **out, size_t *n)
{
	struct discovery_def *d;
	size_t k = 0;

	*out = NULL;
	*n = 0;
	if (!c->known)
		return -EAGAIN;
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i].state == CONSUL_CATALOG_UNKNOWN)
			return -EAGAIN;
	d = calloc(c->n + 1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i].state == CONSUL_CATALOG_VIP)
			d[k++] = (struct discovery_def){ c->v[i].name, c->v[i].vip };
	*out = d;
	*n = k;
	return 0;
}
