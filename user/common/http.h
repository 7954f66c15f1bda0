/* Minimal HTTP/1.1 for meshd's own endpoints (/metrics on TCP, the admin API on a unix socket)
 * and meshctl's client. Three parts: a pure request/response parser (http_parse.c, fuzzed), a
 * nonblocking server on the event loop with size limits and timeouts (http.c), and a blocking
 * client over a unix socket (http.c). Only GET/HEAD/POST with Content-Length bodies; no chunked
 * request bodies, no TLS. The server runs on the event-loop thread. */
#ifndef MESH_HTTP_H
#define MESH_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "common/strbuf.h"
#include "config/config.h"

#define HTTP_HEADER_MAX 8192 /* request line + headers, bytes */
#define HTTP_BODY_MAX 65536  /* request body, bytes */
#define HTTP_TARGET_MAX 1024 /* request target (path + query), bytes */
#define HTTP_HEADERS_COUNT_MAX 64

enum http_method {
	HTTP_METHOD_OTHER = 0, /* a valid token we do not serve: answered 405 */
	HTTP_METHOD_GET = 1,
	HTTP_METHOD_HEAD = 2,
	HTTP_METHOD_POST = 3,
};

/* A parsed request. `path`/`query` are NUL-terminated copies; `body` points into the caller's
 * buffer (valid as long as it is). */
struct http_request {
	enum http_method method;
	char method_name[16];
	char path[HTTP_TARGET_MAX + 1];	 /* up to '?', not percent-decoded */
	char query[HTTP_TARGET_MAX + 1]; /* after '?', "" when none */
	int version_minor;		 /* HTTP/1.<minor> */
	bool keep_alive;		 /* HTTP/1.1 unless "Connection: close" */
	size_t content_length;
	const char *body;
	size_t body_len;
};

/* Parses one request from the start of `buf`. Returns the bytes it spans (headers + body) when
 * complete, 0 when more bytes are needed, or -EINVAL (malformed: 400), -EMSGSIZE (headers or body
 * over the limits: 431/413), -ENOTSUP (Transfer-Encoding or not HTTP/1.x: 501/505). Pure. */
long http_parse_request(const char *buf, size_t len, struct http_request *req);
/* Status code to send for a negative http_parse_request() result. */
int http_parse_error_status(long err);

/* Parses a complete response (as read until EOF): status code and body (by Content-Length when
 * present, else everything after the headers). Returns 0, or -EINVAL when malformed, -EAGAIN when
 * truncated. Pure. */
int http_parse_response(const char *buf, size_t len, int *status, const char **body,
			size_t *body_len);

/* Finds `key` in an application/x-www-form-urlencoded `query` and writes its percent-decoded
 * value to `out`. Returns 0, -ENOENT when absent, -EINVAL for bad escapes or an overlong value. */
int http_query_get(const char *query, const char *key, char *out, size_t out_len);

/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_status_text(int status);

/* What a handler fills in. `body` starts empty; status defaults to 200, content type to
 * text/plain. Setting `close` ends the connection after the response.
 *
 * Streaming (large bodies, e.g. /metrics at 10,000 backends): set `produce` and the body goes out
 * with chunked transfer encoding, piece by piece as the socket drains, so the whole body never
 * sits in memory. After `body` is sent, `produce(state, body)` is called with `body` emptied to
 * append the next piece; it returns 1 while more follows, 0 when that was the last (possibly
 * empty) piece, or -errno to abort the connection. Pieces are produced for at most ~2 ms per
 * loop iteration; the stream goes on at the next one, so a producer may also do a bounded step of
 * work per call and return an empty piece. `release(state)` runs exactly once when the
 * response is done or the connection closes, including for HEAD (where produce never runs). */
struct http_response {
	int status;
	const char *content_type; /* static string */
	struct strbuf body;
	bool close;
	int (*produce)(void *state, struct strbuf *body);
	void (*release)(void *state);
	void *state;
};

/* Serialises the status line and headers for `resp` (Content-Length from its body, or chunked
 * Transfer-Encoding when it streams) to `out`. */
void http_format_head(const struct http_response *resp, bool keep_alive, struct strbuf *out);

/* Called on the loop thread once per complete request. Must not block. */
typedef void (*http_handler_fn)(const struct http_request *req, struct http_response *resp,
				void *arg);

struct http_server;

/* Every connection is one of: idle (nothing of a request yet), receiving a request, sending a
 * response. Each lasts at most `timeout_ms` from its start, however the bytes trickle in or out:
 * a request must arrive whole, a response be taken whole, within it. When `max_conns` are open,
 * a new connection evicts the one idle or receiving a request longest, else the response whose
 * peer stopped reading longest ago (over 500 ms), never one younger than 100 ms; when there is
 * none, new connections wait in the listen backlog (accepting pauses) until one closes or ages.
 * Evictions and waits are logged rate-limited. */
struct http_server_opts {
	const char *name;    /* for logs: "metrics", "admin" */
	unsigned timeout_ms; /* deadline of each phase of a connection; 0 = 10000 */
	unsigned max_conns;  /* concurrent connections; 0 = 64 */
};

/* Listens on TCP `ep` (SO_REUSEADDR) and serves requests with `handler`. Returns NULL and sets
 * errno (EADDRINUSE, EACCES, ...) on failure. */
struct http_server *http_server_listen_tcp(struct evloop *loop, const struct config_endpoint *ep,
					   const struct http_server_opts *opts,
					   http_handler_fn handler, void *arg);
/* Listens on a unix socket at `path`: missing parent directories are created mode 0700, a stale
 * socket left by a dead process is replaced (a live one gives EADDRINUSE, a non-socket file
 * EEXIST), and the socket is made mode 0600 owned by the caller (root for meshd). A directory
 * someone else could write to (common/pathperm.h) is refused with EPERM, logged with why. */
struct http_server *http_server_listen_unix(struct evloop *loop, const char *path,
					    const struct http_server_opts *opts,
					    http_handler_fn handler, void *arg);
/* Closes the listener and every connection; unlinks a unix socket it created. Accepts NULL.
 * Must not run inside a handler of `srv` (it frees the connection being answered): retire a
 * server with http_server_stop_listening and free it later, from a timer. */
void http_server_free(struct http_server *srv);
/* Stops accepting: closes the listening socket and removes a unix socket's path (so another
 * server may bind it at once), while open connections are still served until
 * http_server_free. Safe inside a handler of `srv`. Idempotent; accepts NULL. */
void http_server_stop_listening(struct http_server *srv);
/* Number of open client connections (tests, status). */
unsigned http_server_conns(const struct http_server *srv);
/* Closes the connection whose streamed response has waited longest, at least `min_blocked_ms`,
 * for a peer that takes no bytes (its `release` runs). For a handler short of a per-response
 * resource (metrics snapshots) before it refuses a request. Returns true when one was closed;
 * never the connection being answered (it is not sending yet). */
bool http_server_shed_stalled(struct http_server *srv, unsigned min_blocked_ms);

/* Blocking client: sends one request over the unix socket `path` and reads the whole response
 * within `timeout_ms`. On success returns 0 with `*status` and a malloc'd NUL-terminated `*body`
 * (caller frees). Returns -errno (ENOENT/ECONNREFUSED: no daemon, ETIMEDOUT, EPROTO for a bad
 * response, EPERM when the listening process runs neither as root nor as the caller: someone
 * else's socket, whose answers are not read). Chunked bodies are not decoded: the admin API
 * always sends Content-Length. */
int http_unix_request(const char *path, const char *method, const char *target, const char *body,
		      size_t body_len, unsigned timeout_ms, int *status, char **resp_body,
		      size_t *resp_len);

#endif
