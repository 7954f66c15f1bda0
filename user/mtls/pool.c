/* The outbound pool of one worker: TLS connections keyed by (caller identity, destination
 * service, destination host and mesh port), each carrying up to min(mtls.pool_max_streams,
 * the peer's SETTINGS_MAX_CONCURRENT_STREAMS) streams; a full or going-away one gets a sibling.
 * The key holds the destination service because the server presents that service's certificate
 * (chosen by SNI) and the client verifies that exact SPIFFE ID; one host serving two services
 * is two connections. Worker thread only. */
#include <errno.h>
#include <string.h>

#include "mtls/proxy.h"

static bool same_key(const struct pool_key *a, const struct pool_key *b)
{
	return a->identity == b->identity && a->peer.family == b->peer.family &&
	       a->peer.port == b->peer.port && !strcmp(a->service, b->service) &&
	       !strcmp(a->identity_name, b->identity_name) &&
	       !memcmp(&a->addr_bytes, &b->addr_bytes, sizeof(a->addr_bytes));
}

static unsigned capacity(const struct tunnel *t)
{
	unsigned limit = t->w->snap->max_streams;

	if (t->state == T_READY) {
		uint32_t remote = nghttp2_session_get_remote_settings(
		    t->h2, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);

		if (remote < limit)
			limit = remote;
	}
	return limit;
}

struct tunnel *pool_get(struct worker *w, const struct pool_key *key, const char **why)
{
	struct tunnel *t;
	SSL_CTX *ctx;

	for (struct link *n = w->pool.next; n != &w->pool; n = n->next) {
		t = link_entry(n, struct tunnel, pnode);
		if (tunnel_usable(t) && same_key(&t->key, key) &&
		    t->streams + t->n_waiting < capacity(t))
			return t;
	}
	ctx = certs_client_ctx(w->certs, key->identity_name);
	if (!ctx) {
		*why = TLS_R_NO_IDENTITY;
		return NULL;
	}
	t = tunnel_connect(w, key, ctx);
	SSL_CTX_free(ctx);
	if (!t)
		*why = TLS_R_CONNECT;
	return t;
}

void pool_remove(struct tunnel *t)
{
	link_del(&t->pnode);
}
