/* Comparing configs through the key table: value equality for every key type, whether a service
 * changed (and which of its keys), which changed keys need a restart (CF_RESTART), and the reload
 * plan built from those (config_plan). Nothing here renders values as text except the settings
 * diff of the root keys, so comparing 16,384 services costs microseconds per service. Pure: any
 * thread (a reload plans on a worker thread). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

static bool str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool addr_eq(const struct config_endpoint *a, const struct config_endpoint *b)
{
	if (a->family != b->family)
		return false;
	if (a->family == AF_INET6)
		return !memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6));
	return a->addr.v4.s_addr == b->addr.v4.s_addr;
}

static bool ep_eq(const struct config_endpoint *a, const struct config_endpoint *b)
{
	return addr_eq(a, b) && a->port == b->port;
}

static bool object_eq(const struct cfg_desc *d, const void *a, const void *b);

/* Lists of `k` in `a` and `b` (element arrays and counts at k->off / k->count_off). */
static bool list_eq(const struct cfg_key *k, const void *a, const void *b)
{
	size_t na = *(const size_t *)((const char *)a + k->count_off);
	size_t nb = *(const size_t *)((const char *)b + k->count_off);
	const char *ea = *(char *const *)((const char *)a + k->off);
	const char *eb = *(char *const *)((const char *)b + k->off);
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++) {
		if (k->type == CT_STRLIST &&
		    !str_eq(((char *const *)ea)[i], ((char *const *)eb)[i]))
			return false;
		if (k->type == CT_EPLIST && !ep_eq((const struct config_endpoint *)ea + i,
						   (const struct config_endpoint *)eb + i))
			return false;
		if (k->type == CT_LIST &&
		    !object_eq(k->sub, ea + i * k->sub->size, eb + i * k->sub->size))
			return false;
	}
	return true;
}

bool cfg_value_equal(const struct cfg_key *k, const void *a, const void *b)
{
	const void *va = (const char *)a + k->off, *vb = (const char *)b + k->off;

	switch (k->type) {
	case CT_BOOL:
		return *(const bool *)va == *(const bool *)vb;
	case CT_UINT:
	case CT_PERCENT:
		return *(const uint32_t *)va == *(const uint32_t *)vb;
	case CT_INT:
	case CT_ENUM:
		return *(const int *)va == *(const int *)vb;
	case CT_RATIO:
		return *(const double *)va == *(const double *)vb;
	case CT_DURATION:
		return *(const uint64_t *)va == *(const uint64_t *)vb;
	case CT_PORT:
		return *(const uint16_t *)va == *(const uint16_t *)vb;
	case CT_ENDPOINT:
		return ep_eq(va, vb);
	case CT_ADDR:
		return addr_eq(va, vb);
	case CT_STRLIST:
	case CT_EPLIST:
	case CT_LIST:
		return list_eq(k, a, b);
	default:
		return str_eq(*(char *const *)va, *(char *const *)vb);
	}
}

static bool object_eq(const struct cfg_desc *d, const void *a, const void *b)
{
	for (size_t i = 0; i < d->n_keys; i++)
		if (!cfg_value_equal(&d->keys[i], a, b))
			return false;
	return true;
}

/* Appends `s` to the comma-separated list in buf (ending in "..." once it is full). */
static void add_path(char *buf, size_t len, const char *s)
{
	size_t n;

	if (!len)
		return;
	n = strlen(buf);
	if (n >= 3 && !strcmp(buf + n - 3, "..."))
		return;
	if (n + strlen(s) + 5 >= len) {
		snprintf(buf + n, len - n, "%s...", n ? "," : "");
		return;
	}
	snprintf(buf + n, len - n, "%s%s", n ? "," : "", s);
}

size_t config_service_changes(const struct config_service *a, const struct config_service *b,
			      bool with_backends, char *keys, size_t len)
{
	const struct cfg_desc *d = &cfg_service_desc;
	size_t n = 0;

	if (len)
		keys[0] = '\0';
	for (size_t i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];

		bool backends = k->off == offsetof(struct config_service, backends);

		if ((backends && !with_backends) || cfg_value_equal(k, a, b))
			continue;
		add_path(keys, len, k->path);
		n++;
	}
	return n;
}

size_t config_restart_changes(const struct mesh_config *old, const struct mesh_config *new,
			      const char **paths, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];

		/* under a switch off before or after, its component starts or stops whole */
		if (!(k->flags & CF_RESTART) || cfg_value_equal(k, old, new) ||
		    cfg_gate_off(k, old) || cfg_gate_off(k, new))
			continue;
		if (n < max)
			paths[n] = k->path;
		n++;
	}
	return n;
}

/* --- the reload plan -------------------------------------------------------------------------- */

static int add_svc_change(struct config_plan *p, const struct config_service *o,
			  const struct config_service *n)
{
	struct config_service_change *c;

	if (p->n_services == p->cap_services) {
		size_t cap = p->cap_services ? 2 * p->cap_services : 16;

		c = realloc(p->services, cap * sizeof(*c));
		if (!c)
			return -ENOMEM;
		p->services = c;
		p->cap_services = cap;
	}
	c = &p->services[p->n_services++];
	memset(c, 0, sizeof(*c));
	c->name = n ? n->name : o->name;
	c->old = o;
	c->new = n;
	if (o && n)
		config_service_changes(o, n, true, c->keys, sizeof(c->keys));
	return 0;
}

/* Services matched by name: changed and added in `new`'s order, then removed ones. */
static int plan_services(const struct mesh_config *old, const struct mesh_config *new,
			 struct config_plan *p)
{
	struct blobset names = { 0 };
	bool *seen = calloc(old->n_services + 1, sizeof(*seen));
	size_t i, j;
	int err = -ENOMEM;

	if (!seen || blobset_init(&names, old->n_services))
		goto out;
	for (i = 0; i < old->n_services; i++)
		blobset_add(&names, old->services[i].name, strlen(old->services[i].name), i);
	for (j = 0, err = 0; !err && j < new->n_services; j++) {
		const struct config_service *n = &new->services[j];

		i = blobset_find(&names, n->name, strlen(n->name));
		if (i == SIZE_MAX) {
			err = add_svc_change(p, NULL, n);
			continue;
		}
		seen[i] = true;
		if (config_service_changes(&old->services[i], n, true, NULL, 0))
			err = add_svc_change(p, &old->services[i], n);
	}
	for (i = 0; !err && i < old->n_services; i++)
		if (!seen[i])
			err = add_svc_change(p, &old->services[i], NULL);
out:
	free(names.slots);
	free(seen);
	return err;
}

int config_plan(const struct mesh_config *old, const struct mesh_config *new,
		struct config_plan *out)
{
	int err;

	memset(out, 0, sizeof(*out));
	err = config_diff_settings(old, new, &out->settings);
	if (!err)
		err = plan_services(old, new, out);
	if (!err)
		out->n_restart = config_restart_changes(
		    old, new, out->restart, sizeof(out->restart) / sizeof(out->restart[0]));
	if (err)
		config_plan_free(out);
	return err;
}

int config_plan_reverse(const struct config_plan *p, struct config_plan *out)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	out->settings.changes = calloc(p->settings.n + 1, sizeof(*out->settings.changes));
	out->services = calloc(p->n_services + 1, sizeof(*out->services));
	if (!out->settings.changes || !out->services)
		goto err;
	for (i = 0; i < p->settings.n; i++) {
		const struct config_change *c = &p->settings.changes[i];
		struct config_change *r = &out->settings.changes[i];

		r->path = strdup(c->path);
		r->old_value = strdup(c->new_value);
		r->new_value = strdup(c->old_value);
		out->settings.n++;
		if (!r->path || !r->old_value || !r->new_value)
			goto err;
	}
	for (i = 0; i < p->n_services; i++) {
		out->services[i] = p->services[i];
		out->services[i].old = p->services[i].new;
		out->services[i].new = p->services[i].old;
	}
	out->n_services = out->cap_services = p->n_services;
	return 0;
err:
	config_plan_free(out);
	return -ENOMEM;
}

size_t config_plan_changes(const struct config_plan *p)
{
	return p->settings.n + p->n_services;
}

void config_plan_free(struct config_plan *p)
{
	if (!p)
		return;
	config_diff_free(&p->settings);
	free(p->services);
	memset(p, 0, sizeof(*p));
}
