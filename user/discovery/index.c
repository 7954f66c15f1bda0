/* Open-addressing hash index from a key (a service name, or a VIP:port) to a registry entry,
 * with linear probing and backward-shift deletion, so the registry finds one of 16,384 services
 * in O(1) and a reload touching one service costs the time of one service. Loop thread only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/registry.h"

static uint64_t hash_bytes(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	while (n--)
		h = (h ^ *b++) * 0x100000001b3ull;
	return h ? h : 1;
}

size_t reg_vip_key(const struct config_endpoint *ep, unsigned char *buf)
{
	memset(buf, 0, REG_VIP_KEY);
	buf[0] = (unsigned char)ep->family;
	buf[1] = (unsigned char)(ep->port >> 8);
	buf[2] = (unsigned char)ep->port;
	memcpy(buf + 3, &ep->addr, ep->family == AF_INET6 ? 16 : 4);
	return REG_VIP_KEY;
}

/* The key of `e` in `ix`. */
static const void *entry_key(const struct reg_index *ix, const struct reg_entry *e,
			     unsigned char *buf, size_t *len)
{
	if (ix->by_vip) {
		*len = reg_vip_key(&e->svc.vip, buf);
		return buf;
	}
	*len = strlen(e->svc.name);
	return e->svc.name;
}

static bool key_eq(const struct reg_index *ix, const struct reg_entry *e, const void *key,
		   size_t len)
{
	unsigned char buf[REG_VIP_KEY];
	size_t n;
	const void *k = entry_key(ix, e, buf, &n);

	return n == len && !memcmp(k, key, len);
}

static size_t probe(const struct reg_index *ix, const void *key, size_t len, uint64_t h)
{
	size_t i = h & ix->mask;

	while (ix->slots[i].e && (ix->slots[i].hash != h || !key_eq(ix, ix->slots[i].e, key, len)))
		i = (i + 1) & ix->mask;
	return i;
}

struct reg_entry *reg_index_find(const struct reg_index *ix, const void *key, size_t len)
{
	if (!ix->slots)
		return NULL;
	return ix->slots[probe(ix, key, len, hash_bytes(key, len))].e;
}

static int grow(struct reg_index *ix)
{
	size_t cap = ix->slots ? (ix->mask + 1) * 2 : 64, i;
	struct reg_slot *old = ix->slots, *s;
	size_t old_cap = old ? ix->mask + 1 : 0;

	s = calloc(cap, sizeof(*s));
	if (!s)
		return -ENOMEM;
	ix->slots = s;
	ix->mask = cap - 1;
	for (i = 0; i < old_cap; i++) {
		size_t j = old[i].hash & ix->mask;

		if (!old[i].e)
			continue;
		while (s[j].e)
			j = (j + 1) & ix->mask;
		s[j] = old[i];
	}
	free(old);
	return 0;
}

int reg_index_add(struct reg_index *ix, struct reg_entry *e)
{
	unsigned char buf[REG_VIP_KEY];
	const void *key;
	size_t len, i;
	uint64_t h;

	if ((!ix->slots || (ix->n + 1) * 2 > ix->mask + 1) && grow(ix))
		return -ENOMEM;
	key = entry_key(ix, e, buf, &len);
	h = hash_bytes(key, len);
	i = probe(ix, key, len, h);
	if (ix->slots[i].e)
		return -EEXIST;
	ix->slots[i].e = e;
	ix->slots[i].hash = h;
	ix->n++;
	return 0;
}

void reg_index_del(struct reg_index *ix, const struct reg_entry *e)
{
	unsigned char buf[REG_VIP_KEY];
	size_t hole, i, home, len;
	const void *key;

	if (!ix->slots)
		return;
	key = entry_key(ix, e, buf, &len);
	hole = probe(ix, key, len, hash_bytes(key, len));
	if (ix->slots[hole].e != e)
		return;
	for (i = hole;;) {
		i = (i + 1) & ix->mask;
		if (!ix->slots[i].e)
			break;
		home = ix->slots[i].hash & ix->mask;
		if (((i - home) & ix->mask) >= ((i - hole) & ix->mask)) {
			ix->slots[hole] = ix->slots[i];
			hole = i;
		}
	}
	ix->slots[hole].e = NULL;
	ix->slots[hole].hash = 0;
	ix->n--;
}

void reg_index_free(struct reg_index *ix)
{
	free(ix->slots);
	ix->slots = NULL;
	ix->mask = 0;
	ix->n = 0;
}
