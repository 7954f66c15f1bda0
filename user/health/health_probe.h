/* One active health probe against one backend, run on the event loop (no threads, no blocking
 * calls): a nonblocking TCP connect, and for the http type a `GET <path> HTTP/1.1` whose status
 * line decides (2xx healthy); for UDP services a datagram (udp: the configured payload, any
 * reply healthy; dns: a query, any DNS answer with its id healthy), on a connected UDP socket so
 * an ICMP port unreachable fails it at once. A timer bounds the whole probe. It reports exactly one result
 * through its callback, from the loop, unless cancelled first. */
#ifndef MESH_HEALTH_PROBE_H
#define MESH_HEALTH_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"

/* Socket mark on every probe socket, so a datapath that sees it (connect4 reading sk->mark) can
 * leave it alone. Probes only ever target backend addresses, never VIPs, so they are not
 * redirected even without it. ASCII "MHCK". */
#define HEALTH_PROBE_MARK 0x4d48434bu

struct health_probe_opts {
	enum config_health_type type; /* CONFIG_HEALTH_TCP, _HTTP, _UDP or _DNS */
	struct config_endpoint target;
	uint64_t timeout_ns;   /* whole probe: connect + request + status line */
	const char *http_path; /* http only; "/" when NULL or empty; copied */
	const char *payload;   /* udp: the datagram; dns: the name queried; copied */
};

/* `ok` is the verdict; `reason` a short human text ("connected", "http status 200", "connect:
 * Connection refused", "timeout after 1000ms", ...) valid during the call only. */
typedef void (*health_probe_cb)(bool ok, const char *reason, void *arg);

struct health_probe;

/* Starts a probe. `cb(ok, reason, arg)` is called once, later, from the loop; the probe frees
 * itself after the callback returns. Returns NULL and sets errno when nothing could be started
 * (no memory, no socket, no timer); then the callback is never called. */
struct health_probe *health_probe_start(struct evloop *loop, const struct health_probe_opts *opts,
					health_probe_cb cb, void *arg);

/* Stops a probe in flight without calling its callback and frees it. Accepts NULL. */
void health_probe_cancel(struct health_probe *p);

#endif
