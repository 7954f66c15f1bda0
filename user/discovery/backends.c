/* Backend sets shared by the registry and the sources: canonical order, normalisation and
 * equality. Pure. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "discovery/state.h"

static bool endpoint_equal(const struct config_endpoint *a, const struct config_endpoint *b)
{
	if (a->family != b->family || a->port != b->port)
		return false;
	if (a->family == AF_INET6)
		return memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6)) == 0;
	return a->addr.v4.s_addr == b->addr.v4.s_addr;
}

static bool str_equal(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

bool state_backends_equal(const struct config_backend *a, size_t na, const struct config_backend *b,
			  size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (!endpoint_equal(&a[i].endpoint, &b[i].endpoint) || a[i].weight != b[i].weight ||
		    a[i].mesh_port != b[i].mesh_port || !str_equal(a[i].subset, b[i].subset))
			return false;
	return true;
}

static int backend_cmp(const void *pa, const void *pb)
{
	const struct config_endpoint *a = &((const struct config_backend *)pa)->endpoint;
	const struct config_endpoint *b = &((const struct config_backend *)pb)->endpoint;
	int r;

	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	if (a->family == AF_INET6)
		r = memcmp(&a->addr.v6, &b->addr.v6, sizeof(a->addr.v6));
	else
		r = memcmp(&a->addr.v4, &b->addr.v4, sizeof(a->addr.v4));
	if (r)
		return r;
	return (int)a->port - (int)b->port;
}

void state_backends_sort(struct config_backend *b, size_t n)
{
	if (n > 1)
		qsort(b, n, sizeof(*b), backend_cmp);
}

size_t state_backends_normalize(struct config_backend *b, size_t n)
{
	size_t i, out = 0;

	state_backends_sort(b, n);
	for (i = 0; i < n; i++)
		if (!out || backend_cmp(&b[out - 1], &b[i]) != 0)
			b[out++] = b[i];
		else
			free(b[i].subset);
	for (i = out; i < n; i++) /* moved or freed: owned by no entry of the tail */
		b[i].subset = NULL;
	return out;
}

void state_backends_free(struct config_backend *b, size_t n)
{
	for (size_t i = 0; b && i < n; i++)
		free(b[i].subset);
	free(b);
}

void state_split_free(struct config_split *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++)
		free(s[i].subset);
	free(s);
}

int state_split_copy(const struct config_split *s, size_t n, struct config_split **out)
{
	*out = n ? calloc(n, sizeof(**out)) : NULL;
	if (n && !*out)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		(*out)[i].weight = s[i].weight;
		if (s[i].subset && !((*out)[i].subset = strdup(s[i].subset))) {
			state_split_free(*out, n);
			*out = NULL;
			return -ENOMEM;
		}
	}
	return 0;
}

bool state_split_equal(const struct config_split *a, size_t na, const struct config_split *b,
		       size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].weight != b[i].weight || !str_equal(a[i].subset, b[i].subset))
			return false;
	return true;
}
