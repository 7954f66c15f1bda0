/* DNS SRV discovery, part of the discovery module: the pure handling of DNS answers (wire
 * parsing, which outcomes keep the last good set, TTL clamps, backend selection: dns_answer.c,
 * fuzzed), the c-ares resolver driven by meshd's event loop (dns_resolver.c: no blocking call,
 * no thread per query; also used by the Consul source for hostname addresses), and the source
 * itself (dns_source.c). */
#ifndef MESH_DISCOVERY_DNS_H
#define MESH_DISCOVERY_DNS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/evloop.h"
#include "config/config.h"

#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_SRV 33
#define DNS_NAME_MAX 255
#define DNS_MAX_RECORDS 4096 /* kept per answer; more are ignored */

/* How a lookup ended. */
enum dns_status {
	DNS_OK = 0,	   /* records of the type asked */
	DNS_NODATA = 1,	   /* the name exists but has none (an empty answer) */
	DNS_NXDOMAIN = 2,  /* the name does not exist */
	DNS_SERVFAIL = 3,  /* the server could not answer */
	DNS_REFUSED = 4,   /* the server would not answer */
	DNS_TIMEOUT = 5,   /* no answer in time */
	DNS_ERROR = 6,	   /* no usable answer otherwise (connection refused, malformed) */
	DNS_CANCELLED = 7, /* the resolver went away first */
};

/* True for outcomes that say nothing about the records (SERVFAIL, REFUSED, timeouts, errors):
 * the last good set stays (HAProxy's resolvers do the same). NXDOMAIN and empty answers are
 * answers: they empty the set once they persisted for hold_nx. */
bool dns_status_is_failure(enum dns_status s);
const char *dns_status_name(enum dns_status s);

/* ---- answers (dns_answer.c, pure) -------------------------------------------------------- */

struct dns_srv {
	uint16_t priority, weight, port;
	uint32_t ttl;
	char target[DNS_NAME_MAX + 1]; /* "" for the root: "service not available here" */
};

struct dns_addr {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	uint32_t ttl;
};

/* A response: its header and the answer records of the type asked. */
struct dns_answer {
	int rcode;
	bool truncated;
	struct dns_srv *srv; /* type SRV */
	size_t n_srv;
	struct dns_addr *addr; /* types A and AAAA */
	size_t n_addr;
	uint32_t min_ttl; /* smallest TTL of the kept records, UINT32_MAX when none */
};

/* Parses the response in buf[0..len) keeping the answer records of `type` (SRV, A or AAAA;
 * names may be compressed, loops and overlong names are rejected). Returns 0 or -EINVAL
 * (malformed: nothing to free) or -ENOMEM. */
int dns_parse_answer(const uint8_t *buf, size_t len, int type, struct dns_answer *out);
void dns_answer_free(struct dns_answer *a);
/* The outcome a parsed answer stands for (its rcode, and whether it holds records). */
enum dns_status dns_answer_status(const struct dns_answer *a);

/* One SRV record and the addresses its target resolved to. */
struct dns_resolved {
	const struct dns_srv *srv;
	const struct dns_addr *addr;
	size_t n_addr;
};
/* The backends of the lowest SRV priority that has at least one address: one per (address,
 * port), weight = SRV weight (0 counts as 1). Writes at most `max` to `out` (unsorted, may repeat
 * an address:port listed twice). Returns how many. */
size_t dns_backends(const struct dns_resolved *r, size_t n, struct config_backend *out, size_t max);

/* When to ask again after an answer with TTL `ttl` seconds: clamped to [min_ns, max_ns] (a TTL
 * of 0, as Consul's DNS interface gives, means min_ns). */
uint64_t dns_refresh_ns(uint32_t ttl, uint64_t min_ns, uint64_t max_ns);

/* What to do with a service's set after a resolution. */
enum dns_verdict {
	DNS_DELIVER = 0, /* an answer with backends: serve it */
	DNS_KEEP = 1,	 /* keep serving the last good set */
	DNS_EMPTY = 2,	 /* serve an empty set (NXDOMAIN/empty persisted for hold_nx, or failures
			  * for hold_timeout when that is set) */
};

/* Since when a service's resolutions went wrong (0 = not). */
struct dns_hold {
	uint64_t nx_since_ns;	/* NXDOMAIN or empty answers, back to back */
	uint64_t fail_since_ns; /* failures (dns_status_is_failure), back to back */
};

/* Records the outcome `s` (DNS_OK with `has_backends` false counts as empty) at `now_ns` and
 * decides. hold_timeout_ns 0 keeps the last good set through failures forever. */
enum dns_verdict dns_hold_decide(struct dns_hold *h, enum dns_status s, bool has_backends,
				 uint64_t now_ns, uint64_t hold_nx_ns, uint64_t hold_timeout_ns);

/* ---- the resolver (dns_resolver.c, loop thread) ------------------------------------------ */

struct dns_resolver;

struct dns_resolver_opts {
	const struct config_endpoint *servers; /* NULL/0: the system's (resolv.conf, hosts) */
	size_t n_servers;
	unsigned timeout_ms; /* per try; 0 = 1000 */
	unsigned tries;	     /* per server; 0 = 2 */
};

/* The answer to a query: `a` holds the parsed records when status is DNS_OK (else it is empty);
 * both are valid only during the call. */
typedef void (*dns_answer_cb)(void *arg, enum dns_status status, const struct dns_answer *a);

/* A resolver whose sockets and timers live on `loop`; EDNS0 (1232-byte UDP answers), and a
 * truncated answer is asked again over TCP. Returns NULL + errno. */
struct dns_resolver *dns_resolver_new(struct evloop *loop, const struct dns_resolver_opts *o);
/* Ends every query (their callbacks run now with DNS_CANCELLED) and frees. Accepts NULL. */
void dns_resolver_free(struct dns_resolver *r);
/* Asks for the records of `type` at `name`; `cb` runs once, usually on a later loop iteration,
 * but possibly before this returns (an answer c-ares has at once, e.g. from /etc/hosts) and
 * with DNS_CANCELLED from dns_resolver_free. Returns 0 or -errno (then `cb` never runs). */
int dns_resolver_query(struct dns_resolver *r, const char *name, int type, dns_answer_cb cb,
		       void *arg);
/* Resolves a host name to its IPv4 and IPv6 addresses: an A and an AAAA query (or, for the
 * system resolver, /etc/hosts first); `cb` gets DNS_OK with the addresses of either, else the
 * outcome of the A query. Returns 0 or -errno. */
int dns_resolver_addrs(struct dns_resolver *r, const char *host, dns_answer_cb cb, void *arg);

#endif
