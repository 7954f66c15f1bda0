/* Internals of the registry (registry.c, index.c), private to the discovery module: one entry
 * per service and the hash indexes that find entries by name and by VIP:port. */
#ifndef MESH_DISCOVERY_REGISTRY_H
#define MESH_DISCOVERY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "discovery/source.h"

/* One service as the registry serves it. */
struct reg_entry {
	struct config_service svc;		 /* deep copy: config policy, effective backends */
	const struct discovery_source_ops *from; /* source of the backends; NULL = the config */
	uint64_t index;				 /* that source's version of them */
	/* A delivered set not written yet (the flush queue holds the entry while `queued`). */
	struct config_backend *pending;
	size_t n_pending;
	uint64_t pending_index;
	const struct discovery_source_ops *pending_from;
	struct config_split *pending_split; /* with pending_has_split: the split the source gives */
	size_t n_pending_split;
	bool pending_has_split; /* false: the pending set keeps the split served now */
	bool split_from_source; /* the split served came from the source (Consul entries) */
	bool has_pending, queued;
	bool in_txn;  /* the reload in flight planned a change for it */
	bool dynamic; /* defined by the source (sink.define), not listed in the config */
};

struct reg_slot {
	uint64_t hash; /* 0 with e NULL: empty */
	struct reg_entry *e;
};

/* Keyed by svc.name, or by svc.vip (address and port) when `by_vip`. */
struct reg_index {
	struct reg_slot *slots;
	size_t mask, n;
	bool by_vip;
};

#define REG_VIP_KEY 19 /* family, port, 16 address bytes */

/* Writes the VIP key of `ep` into buf[REG_VIP_KEY]; returns its length. */
size_t reg_vip_key(const struct config_endpoint *ep, unsigned char *buf);
/* The entry stored under `key`, or NULL. */
struct reg_entry *reg_index_find(const struct reg_index *ix, const void *key, size_t len);
/* Adds `e` under its current key. Returns 0, -EEXIST (key taken) or -ENOMEM. */
int reg_index_add(struct reg_index *ix, struct reg_entry *e);
/* Removes `e`, found under its current key (call before changing the key). */
void reg_index_del(struct reg_index *ix, const struct reg_entry *e);
void reg_index_free(struct reg_index *ix);

#endif
