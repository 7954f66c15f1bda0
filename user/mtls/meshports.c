/* The backends' mesh ports (meshports.h): one sorted array keyed by (VIP, backend), guarded by a
 * mutex (written at discovery changes, read once per outbound dial). Only backends with a port
 * of their own have an entry, so the table is empty unless Consul instances carry `mesh-port`. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "mtls/meshports.h"

#define KEY_LEN 19 /* family, port (2), 16 address bytes */

struct entry {
	unsigned char key[2 * KEY_LEN]; /* VIP then backend */
	char service[64];
	uint16_t port;
};

struct meshports {
	pthread_mutex_t lock;
	struct entry *v; /* sorted by key */
	size_t n;
};

static void put_key(unsigned char *k, const struct config_endpoint *ep)
{
	memset(k, 0, KEY_LEN);
	k[0] = (unsigned char)ep->family;
	k[1] = (unsigned char)(ep->port >> 8);
	k[2] = (unsigned char)ep->port;
	memcpy(k + 3, &ep->addr, ep->family == AF_INET6 ? 16 : 4);
}

static int entry_cmp(const void *a, const void *b)
{
	return memcmp(((const struct entry *)a)->key, ((const struct entry *)b)->key, 2 * KEY_LEN);
}

struct meshports *meshports_new(void)
{
	struct meshports *t = calloc(1, sizeof(*t));

	if (t)
		pthread_mutex_init(&t->lock, NULL);
	return t;
}

void meshports_free(struct meshports *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->v);
	free(t);
}

/* Drops `name`'s entries from t->v (lock held). */
static void drop_service(struct meshports *t, const char *name)
{
	size_t out = 0;

	for (size_t i = 0; i < t->n; i++)
		if (strncmp(t->v[i].service, name, sizeof(t->v[i].service)))
			t->v[out++] = t->v[i];
	t->n = out;
}

static size_t count_ports(const struct config_service *svc)
{
	size_t n = 0;

	for (size_t i = 0; svc && i < svc->n_backends; i++)
		n += svc->backends[i].mesh_port != 0;
	return n;
}

int meshports_set(struct meshports *t, const char *name, const struct config_service *svc)
{
	size_t add = count_ports(svc);
	struct entry *v = NULL;
	int err = 0;

	pthread_mutex_lock(&t->lock);
	drop_service(t, name);
	if (add) {
		v = realloc(t->v, (t->n + add) * sizeof(*v));
		if (!v)
			err = -ENOMEM;
		else
			t->v = v;
	}
	for (size_t i = 0; v && i < svc->n_backends; i++) {
		const struct config_backend *b = &svc->backends[i];
		struct entry *e = &t->v[t->n];

		if (!b->mesh_port)
			continue;
		put_key(e->key, &svc->vip);
		put_key(e->key + KEY_LEN, &b->endpoint);
		strncpy(e->service, name, sizeof(e->service) - 1);
		e->service[sizeof(e->service) - 1] = '\0';
		e->port = b->mesh_port;
		t->n++;
	}
	if (add)
		qsort(t->v, t->n, sizeof(*t->v), entry_cmp);
	pthread_mutex_unlock(&t->lock);
	return err;
}

uint16_t meshports_get(struct meshports *t, const struct config_endpoint *vip,
		       const struct config_endpoint *backend)
{
	struct entry k;
	const struct entry *e;
	uint16_t port = 0;

	put_key(k.key, vip);
	put_key(k.key + KEY_LEN, backend);
	pthread_mutex_lock(&t->lock);
	e = t->n ? bsearch(&k, t->v, t->n, sizeof(*t->v), entry_cmp) : NULL;
	if (e)
		port = e->port;
	pthread_mutex_unlock(&t->lock);
	return port;
}
