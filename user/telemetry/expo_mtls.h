/* The mTLS proxy's metric families (handshakes, proxied connections, bytes, pool, retries,
 * authorization decisions, certificate expiry), rendered from a snapshot the metrics component
 * copies from the proxy when a scrape starts. Pure. */
#ifndef MESH_EXPO_MTLS_H
#define MESH_EXPO_MTLS_H

#include <stddef.h>

#include "common/strbuf.h"
#include "mtls/mtls.h"

struct expo_mtls {
	struct mtls_stats st;
	struct expo_mtls_cert {
		char *identity;
		double not_after; /* unix seconds */
	} * certs;
	size_t n_certs;
	struct expo_mtls_pair {
		char *source, *destination;
		uint64_t allowed, denied;
	} * pairs;
	size_t n_pairs;
};

/* A snapshot of `m` (NULL: mTLS off, every counter 0). NULL with errno ENOMEM. */
struct expo_mtls *expo_mtls_collect(struct mtls *m);
void expo_mtls_free(struct expo_mtls *x);
/* Appends every mTLS family; `x` NULL renders them at 0. */
void expo_mtls_render(struct strbuf *out, const struct expo_mtls *x);

#endif
