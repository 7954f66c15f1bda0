/* Blocking reads of the Consul agent for the mTLS module (Connect CA roots and leaves,
 * intentions): one watcher of user/consul/ per feed, with the agent settings of
 * `discovery.consul` (address, token_file, ca_file, wait). Answers are queued by the watcher
 * thread and delivered on the main loop, in order, one callback per answer that differs from
 * the path's last one (a blocking query that timed out brings nothing new); a failed read
 * delivers its error, and the caller keeps what it had. Main loop only. */
#ifndef MESH_MTLS_CONSUL_FEED_H
#define MESH_MTLS_CONSUL_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"

/* Answer `i` (the index of its path): `body` (NUL-terminated) when err == 0, else -EIO
 * (transport), -EPROTO (HTTP status `status`) or -ENOMEM. The body is valid during the call;
 * NULL with err == 0 means the path answers again after errors, with what it said before. */
typedef void (*consul_feed_cb)(void *arg, size_t i, const char *body, size_t len, int err,
			       long status);

struct consul_feed;

/* Starts blocking reads of `paths[0..n)` (encoded, e.g. "/v1/agent/connect/ca/roots") on the
 * agent `cfg->consul` names. NULL with errno (and `why`). */
struct consul_feed *consul_feed_new(struct evloop *loop, const struct mesh_config *cfg,
				    const char *const *paths, size_t n, consul_feed_cb cb,
				    void *arg, char *why, size_t wlen);
/* Waits up to `timeout_ns` until every path had a first answer (or error), then delivers what
 * arrived at once, on this thread. Returns how many paths have had a 200 answer. */
size_t consul_feed_wait_first(struct consul_feed *f, uint64_t timeout_ns);
/* Stops the reads; no callback runs after it returns. Accepts NULL. */
void consul_feed_free(struct consul_feed *f);

#endif
