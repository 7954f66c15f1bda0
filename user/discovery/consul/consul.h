/* Consul client (part of the discovery module): blocking queries on /v1/health/service/<name> run by one worker thread over
 * libcurl's multi interface (the only libcurl user in the tree), and the pure pieces they are
 * built from (health JSON parsing, X-Consul-Index rules, rate limiting, backoff), kept apart so
 * they can be unit-tested and fuzzed. Wire rules follow /work/shared/consul/README.md. */
#ifndef MESH_CONSUL_H
#define MESH_CONSUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "discovery/discovery.h"
#include "discovery/source.h"

#define CONSUL_MAX_BODY (1024u << 20)	   /* larger responses are treated as errors */
#define CONSUL_MAX_WAIT_NS 600000000000ull /* Consul caps wait at 10 min */
#define CONSUL_ID_MAX 128		   /* a service ID */

/* ---- pure helpers (consul_parse.c) ---------------------------------------------------------- */

/* An instance whose address is a host name: resolved by the caller (consul_source.c). */
struct consul_named {
	char *host;
	uint16_t port;
	uint16_t mesh_port; /* Service.Meta["mesh-port"], 0 = absent or malformed */
	uint32_t weight;
	char *sel; /* the instance's selector document (see consul_health) */
};

/* An instance whose Service.Meta["mesh-port"] is not a port: the caller warns once per
 * instance and dials the default port (mtls.inbound_listen's). */
#define CONSUL_BAD_MESH_PORT_MAX 16 /* kept per answer; more are counted only */
struct consul_bad_mesh_port {
	char instance[CONSUL_ID_MAX + 1]; /* Service.ID, or address:port when it has none */
	char value[32];			  /* the meta value, cut */
};

/* Backends of one /v1/health/service response. When asked for (only services with a
 * service-resolver entry need them), each backend's `subset` (and each named instance's `sel`)
 * holds the instance's selector document, malloc'd: compact JSON of the parts of the entry a
 * resolver subset's Filter reads ({"Service":{ID,Service,Tags,Meta,...}, "Node":{...}}), which
 * consul_rollout.c turns into subset labels before delivering (free with state_backends_free);
 * else they are NULL. */
struct consul_health {
	struct config_backend *backends; /* instances with an IP address; malloc'd */
	size_t n;
	struct consul_named *named; /* instances with a host name */
	size_t n_named;
	size_t skipped; /* unusable entries left out: no IP address, bad port or weight (entries
			 * not passing and duplicates are left out without counting) */
	char skip_reason[128]; /* why the first one was left out, "" when none was */
	struct consul_bad_mesh_port bad_mesh_port[CONSUL_BAD_MESH_PORT_MAX];
	size_t n_bad_mesh_port; /* entries of bad_mesh_port used */
};

/* Parses the JSON array a health query returns into backends: address from Service.Address,
 * falling back to Node.Address when empty (an IPv4/IPv6 literal, or a host name kept in `named`
 * for the caller to resolve), port from Service.Port, weight from Service.Weights.Passing (1
 * when absent), mesh_port from Service.Meta["mesh-port"] (a decimal string 1..65535; absent: 0;
 * anything else: 0 and the instance noted in bad_mesh_port, the instance itself kept). An entry with any check not "passing" (the same rule as ?passing, node checks
 * included) is left out; an unusable one is counted in `skipped`. Repeated instances are not
 * merged here. Returns 0, -EINVAL when the document is not a JSON array (a reason in `why`),
 * -EMSGSIZE for an entry over 4 MiB, or -ENOMEM. Selector documents are built. Pure: no I/O.
 * Free with consul_health_free. */
int consul_parse_health(const char *json, size_t len, struct consul_health *out, char *why,
			size_t why_len);
void consul_health_free(struct consul_health *h);

/* The same, fed in pieces as the answer arrives (consul_stream.c): memory is bounded by the
 * largest entry and the instances kept, not by the answer. feed returns 0 or the error (then
 * further feeds do nothing); finish checks the array is complete and moves the result out. */
struct consul_stream;
/* `selectors`: build each instance's selector document (else `subset` and `sel` stay NULL). */
struct consul_stream *consul_stream_new(bool selectors);
int consul_stream_feed(struct consul_stream *s, const char *buf, size_t len);
int consul_stream_finish(struct consul_stream *s, struct consul_health *out, char *why,
			 size_t why_len);
void consul_stream_free(struct consul_stream *s);

/* The index for the next blocking query after a response carried X-Consul-Index `hdr` (NULL
 * when absent) while the query used `prev`: the header value, 0 when it went backwards (so the
 * next query is a fresh non-blocking read), 1 when it is missing, unparsable or <= 0. */
uint64_t consul_next_index(uint64_t prev, const char *hdr);

/* If `line` is an `X-Consul-Index: N` header line (name matched case-insensitively), copies the
 * trimmed value into `val` and returns true. */
bool consul_header_index(const char *line, size_t len, char *val, size_t val_len);

/* Token bucket that rate-limits the query loop of one service. */
struct consul_bucket {
	double tokens;
	uint64_t last_ns;
	bool primed;
};
/* Takes one token at `now_ns` when available (returns 0), else returns how long to wait.
 * `burst` tokens at most; one token comes back every `period_ns`. */
uint64_t consul_bucket_take(struct consul_bucket *b, uint64_t now_ns, uint32_t burst,
			    uint64_t period_ns);

/* Delay before retry number `failures` (1, 2, ...): base * 2^(failures-1) capped at `max_ns`,
 * then reduced by up to a quarter with `rnd` (uniform 32-bit) so clients do not retry in step. */
uint64_t consul_backoff_ns(unsigned failures, uint64_t base_ns, uint64_t max_ns, uint32_t rnd);

/* Formats a duration as a Go duration string Consul accepts ("300s", "1500ms"). */
void consul_format_wait(uint64_t ns, char *buf, size_t len);

/* Builds `<address>/v1/health/service/<service>?passing=1[&dc=<dc>][&index=<i>&wait=<w>]` with
 * service and dc percent-encoded; index 0 means a non-blocking read (no index, no wait). Returns
 * the length, or -ENAMETOOLONG when it does not fit in `len`. */
int consul_health_url(char *buf, size_t len, const char *address, const char *service,
		      const char *dc, uint64_t index, uint64_t wait_ns);

/* Builds `<address><path>` plus `index` and `wait` for a blocking query (`?` or `&` as `path`
 * needs; index 0 = non-blocking). `path` must be encoded already. Returns the length or
 * -ENAMETOOLONG. */
int consul_get_url(char *buf, size_t len, const char *address, const char *path, uint64_t index,
		   uint64_t wait_ns);

#define CONSUL_KV_KEY_MAX 512

/* The path of a raw read of KV key `key` (`a/b/c`: each segment percent-encoded, the slashes
 * kept): `/v1/kv/<key>?raw[&dc=<dc>]`. Returns the length or -ENAMETOOLONG (also for a key
 * over CONSUL_KV_KEY_MAX bytes). */
int consul_kv_path(char *buf, size_t len, const char *key, const char *dc);

/* The path of config entry `kind`/`name` (`/v1/config/<kind>/<name>[?dc=<dc>]`, name
 * percent-encoded), for a `gets` query. Returns the length or -ENAMETOOLONG. */
int consul_entry_path(char *buf, size_t len, const char *kind, const char *name, const char *dc);

/* Reads a token file: the contents with surrounding whitespace removed, malloc'd (may be empty),
 * or NULL + errno. The token is a secret: never log it. */
char *consul_read_token(const char *path);

/* ---- Connect: CA roots, leaf certificates, intentions (consul_connect.c) ------------------- */

/* One root of /v1/agent/connect/ca/roots. */
struct consul_ca_root {
	char *id;  /* colon-hex, as Consul names it */
	char *pem; /* RootCert followed by its IntermediateCerts */
	bool active;
};

struct consul_ca_roots {
	char *trust_domain; /* "<cluster-id>.consul" */
	char *active_id;
	struct consul_ca_root *roots;
	size_t n;
};

/* Parses a roots answer: TrustDomain (not empty), ActiveRootID, Roots[] with ID and
 * RootCert (PEM text; IntermediateCerts appended). At least one root, exactly the active one
 * marked Active. 0, -EINVAL with a reason in `why`, or -ENOMEM. Free with
 * consul_ca_roots_free. Pure. */
int consul_parse_roots(const char *json, size_t len, struct consul_ca_roots *out, char *why,
		       size_t wlen);
void consul_ca_roots_free(struct consul_ca_roots *r);

/* One answer of /v1/agent/connect/ca/leaf/<service>. */
struct consul_leaf {
	char *service;	   /* Service */
	char *service_uri; /* ServiceURI (a SPIFFE ID) */
	char *cert_pem;	   /* CertPEM: the leaf, then any intermediates */
	char *key_pem;	   /* PrivateKeyPEM: a secret, never logged */
	uint64_t modify_index;
};

/* Parses a leaf answer and checks it is `service`'s: Service equal to it and ServiceURI ending
 * in `/svc/<service>`. 0, -EINVAL (why says what was wrong, never quoting the key), -ENOMEM.
 * Free with consul_leaf_free (which wipes the key). Pure. */
int consul_parse_leaf(const char *json, size_t len, const char *service, struct consul_leaf *out,
		      char *why, size_t wlen);
void consul_leaf_free(struct consul_leaf *l);

/* One intention that applies to connections from `source` to `destination` ("*" = any). */
struct consul_intention {
	char *source, *destination;
	bool allow; /* L7 intentions (Permissions) deny plain connections, as Consul does */
	unsigned precedence; /* Consul's (destination, source): 9 exact, exact; 8 exact, any;
			      * 6 any, exact; 5 any, any */
};

/* Parses /v1/connect/intentions/match?by=destination&name=<name>: an object whose member
 * `name` lists the intentions for it. Intentions of another namespace, partition or peer are
 * left out. The result is in evaluation order: precedence descending, then source, then
 * destination (exact names before "*" at equal precedence cannot happen: they differ in it).
 * 0, -EINVAL with why, -ENOMEM. Free with consul_intentions_free. Pure. */
int consul_parse_intentions(const char *json, size_t len, const char *name,
			    struct consul_intention **out, size_t *n, char *why, size_t wlen);
void consul_intentions_free(struct consul_intention *v, size_t n);
/* Consul's precedence of an intention from `source` to `destination` (default namespace). */
unsigned consul_intention_precedence(const char *source, const char *destination);
/* Sorts `v` into evaluation order (see consul_parse_intentions). */
void consul_intentions_sort(struct consul_intention *v, size_t n);

/* ---- traffic-split config entries (consul_entry.c) ------------------------------------------- */

struct cJSON;
struct consul_filter; /* a compiled go-bexpr Filter (the subset of it resolvers use) */

/* Compiles a resolver subset's Filter: `Service.Meta.version == v1`, `"canary" in Service.Tags`,
 * `Service.Tags contains canary and not (Service.ID matches "^old-")`, `Service.Meta is empty`;
 * selectors are paths into a /v1/health/service entry (Service.*, Node.*). Returns NULL with a
 * reason in `why` for anything else. Free with consul_filter_free (NULL ok). */
struct consul_filter *consul_filter_parse(const char *expr, char *why, size_t why_len);
void consul_filter_free(struct consul_filter *f);
/* Whether a health entry (one element of the /v1/health/service array) matches. */
bool consul_filter_match(const struct consul_filter *f, const struct cJSON *entry);

/* A service-resolver's subsets (GET /v1/config/service-resolver/<name>). */
struct consul_subset {
	char *name;
	struct consul_filter *filter; /* NULL: every instance */
};
struct consul_resolver {
	char *default_subset; /* "" when none */
	struct consul_subset *subsets;
	size_t n;
};
/* Parses a resolver entry. Returns 0, -EINVAL (reason in `why`) or -ENOMEM; on error `r` is
 * empty. Free with consul_resolver_free. */
int consul_parse_resolver(const char *json, size_t len, struct consul_resolver *r, char *why,
			  size_t why_len);
void consul_resolver_free(struct consul_resolver *r);
/* The subsets a health entry belongs to, comma-separated ("" for none), malloc'd; NULL on ENOMEM.
 * The form config_backend.subset takes from discovery. */
char *consul_subsets_of(const struct consul_resolver *r, const struct cJSON *entry);

/* Parses a service-splitter entry of `service` into config_split entries (weights rounded to
 * 0.01%, summing to 100; ServiceSubset "" is the resolver's default subset, or every instance).
 * Splits to other services are refused. Returns 0, -EINVAL (reason in `why`) or -ENOMEM. Free
 * with consul_splits_free. */
int consul_parse_splitter(const char *json, size_t len, const char *service,
			  struct config_split **out, size_t *n, char *why, size_t why_len);
void consul_splits_free(struct config_split *s, size_t n);

/* ---- catalog discovery (consul_catalog.c) --------------------------------------------------- */

/* Parses /v1/catalog/services (an object: service name -> array of tags, null allowed) into the
 * sorted names whose tags include `tag` (malloc'd; free with consul_names_free). 0, -EINVAL
 * with a reason in `why`, or -ENOMEM. Pure. */
int consul_parse_catalog_services(const char *json, size_t len, const char *tag, char ***names,
				  size_t *n, char *why, size_t wlen);
void consul_names_free(char **v, size_t n);
/* Parses /v1/catalog/service/<name> (an array of instances) for the ServiceMeta `mesh-vip`
 * (`ip:port`, `[v6]:port`, port not 0) the instances carry: 0 with `vip`, -ENOENT when none
 * carries it, -EINVAL (why) for a malformed value, instances that disagree or a document that
 * is not an array of objects. Pure. */
int consul_parse_catalog_vip(const char *json, size_t len, struct config_endpoint *vip, char *why,
			     size_t wlen);

enum consul_catalog_state {
	CONSUL_CATALOG_UNKNOWN = 0, /* its instances were not read yet */
	CONSUL_CATALOG_VIP = 1,	    /* served at the VIP its meta names */
	CONSUL_CATALOG_NO_VIP = 2,  /* tagged, but no instance carries mesh-vip */
	CONSUL_CATALOG_BAD = 3,	    /* mesh-vip malformed: skipped */
};

/* The tagged services of the catalog and what each one's mesh-vip is. */
struct consul_catalog;
struct consul_catalog *consul_catalog_new(void);
void consul_catalog_free(struct consul_catalog *c);
/* Takes a new tagged set (`names` as consul_parse_catalog_services returns it, taken); services
 * still listed keep what is known of them. *changed: the set of names differs (or it is the
 * first). 0 or -ENOMEM (`names` freed either way). */
int consul_catalog_set_names(struct consul_catalog *c, char **names, size_t n, bool *changed);
size_t consul_catalog_count(const struct consul_catalog *c);
const char *consul_catalog_name(const struct consul_catalog *c, size_t i);
/* Takes the /v1/catalog/service answer of `name`: 1 when its state or VIP changed (*state and
 * *why, valid until the next call, say what it is now), 0 when not (or `name` is not tagged),
 * -ENOMEM. */
int consul_catalog_set_meta(struct consul_catalog *c, const char *name, const char *json,
			    size_t len, enum consul_catalog_state *state, const char **why);
/* The services to define (those with a VIP, names valid until the next call), malloc'd array;
 * -EAGAIN while the set or some service's instances are not known yet, -ENOMEM. */
int consul_catalog_defs(const struct consul_catalog *c, struct discovery_def **out, size_t *n);

/* ---- traffic splits from config entries (consul_rollout.c), loop thread --------------------- */

struct discovery_sink;
struct consul_update;
struct consul_rollout;
/* Asks the watcher for the selector documents of `service`'s instances (`on`), or no more. */
typedef void (*consul_selectors_cb)(void *arg, const char *service, bool on);
/* Per service state for splits driven by service-resolver and service-splitter entries,
 * delivering through `sink` (copied; its deliver, deliver_split, current and entry_error).
 * `want(arg, ...)` turns a service's selector documents on when its resolver entry appears and
 * off when it goes: only services with a resolver need them. NULL on ENOMEM. */
struct consul_rollout *consul_rollout_new(const struct discovery_sink *sink,
					  consul_selectors_cb want, void *arg);
void consul_rollout_free(struct consul_rollout *r);
/* Whether the instances of `service` should come with selector documents (its resolver entry
 * is known): what a new watcher starts with (consul_watch_opts.selectors). */
bool consul_rollout_selectors(const struct consul_rollout *r, const char *service);
/* The config entries to watch under `c` (docs/split.md, With Consul): the service-resolver and
 * service-splitter paths of each service the rollout governs (configured, not failing over).
 * Returns the count (array and strings malloc'd) or -ENOMEM. */
ssize_t consul_rollout_paths(const struct config_consul *c, char ***out);
/* A health answer's instances (takes u->backends; each `subset` its selector document when
 * u->selectors), from a watcher running with `c`: for a service the rollout governs, delivered
 * labelled with the resolver's subsets, with the split, as the entries say (once both entries
 * were read, and, for a split, once instances with selector documents came); any other
 * service's set is delivered at once as it is (sink.deliver). */
void consul_rollout_instances(struct consul_rollout *r, const struct config_consul *c,
			      struct consul_update *u);
/* An answer of a `gets` query: when its path is a splitter or resolver entry, applies it
 * (200: parsed, refused with a logged reason and entry_error when meshd cannot use it; 404:
 * deleted; an error: nothing changes) and returns true; false for any other path. */
bool consul_rollout_entry(struct consul_rollout *r, const struct consul_update *u);

/* ---- registration (consul_register.c) ------------------------------------------------------ */

/* A local service meshd registers in the Consul agent: Connect-native, with one check. */
struct consul_registration {
	const char *id;	  /* service ID (unique on the agent) */
	const char *name; /* service name */
	struct config_endpoint endpoint;
	const char *const *tags;
	size_t n_tags;
	const char *const *meta; /* "key=value" */
	size_t n_meta;
	enum config_consul_check check;
	uint64_t interval_ns; /* tcp, http: probe interval; ttl: the TTL (0 = 10 s) */
	uint64_t timeout_ns;  /* 0 = 2 s */
	const char *http_path;
	uint16_t mesh_port;		       /* meta mesh-port (mTLS inbound port); 0 = none */
	uint64_t deregister_critical_after_ns; /* 0 = never reaped */
};

/* The ID of the one check of registration `id` ("service:<id>", Consul's default). */
void consul_check_id(const char *id, char *buf, size_t len);

/* The body of PUT /v1/agent/service/register for `r` (caller frees), or NULL + errno. */
char *consul_registration_json(const struct consul_registration *r);
/* Builds `<address><path><id percent-encoded>`. Returns the length or -ENAMETOOLONG. */
int consul_agent_url(char *buf, size_t len, const char *address, const char *path, const char *id);

/* ---- failover across datacenters (consul_failover.c) ---------------------------------------- */

struct consul_failover;
struct consul_update;
/* What a service under failover serves after an answer. */
struct consul_failover_pick {
	struct config_backend *backends; /* malloc'd copy for the registry */
	size_t n;
	uint64_t index;
	const char *dc;	  /* datacenter served, NULL = the local one */
	const char *from; /* the one served before, NULL = the local one or none */
	bool changed;	  /* another datacenter than before (or the first choice) */
};
/* Failover state for `c` (which must outlive it): NULL + errno on ENOMEM. */
struct consul_failover *consul_failover_new(const struct config_consul *c);
void consul_failover_free(struct consul_failover *f);
/* Records answer `u` (its set is taken) when its service fails over: returns 1 with `pick` to
 * deliver, 2 when nothing is to be delivered yet (an earlier datacenter has not answered), 0 when
 * the service does not fail over (`u` untouched), or -ENOMEM. */
int consul_failover_take(struct consul_failover *f, struct consul_update *u,
			 struct consul_failover_pick *pick);
/* True when `service` fails over; *dc = the datacenter served (NULL = local). */
bool consul_failover_serving(const struct consul_failover *f, const char *service, const char **dc);

/* ---- watcher (consul_watch.c) --------------------------------------------------------------- */

struct consul_watch_opts {
	const char *address;	/* base URL, e.g. http://127.0.0.1:8500 */
	const char *datacenter; /* NULL or "" = the agent's */
	const char *token;	/* NULL or "" = none; sent as X-Consul-Token */
	const char *ca_file;	/* NULL or "" = system CAs (https) */
	const char *const *services;
	const char *const *service_dcs; /* per entry of `services`: its ?dc=, NULL = `datacenter`
					 * (the same service may be watched in several DCs) */
	const bool *selectors; /* per entry of `services`: its answers carry selector documents
				* (consul_watch_selectors); NULL = none does */
	size_t n_services;
	uint64_t wait_ns;	     /* blocking query wait; 0 = Consul's default (5 min) */
	uint32_t rate_burst;	     /* 0 = 2 */
	uint64_t rate_period_ns;     /* 0 = 15 s (blocking.mdx) */
	uint64_t backoff_base_ns;    /* 0 = 500 ms */
	uint64_t backoff_max_ns;     /* 0 = 10 s */
	uint64_t connect_timeout_ns; /* 0 = 3 s */
	/* Agent writes done first, each retried with backoff until it succeeds: */
	const struct consul_registration *regs; /* services to register */
	size_t n_regs;
	const char *const *deregs; /* service IDs to deregister (unknown IDs count as done) */
	size_t n_deregs;
	/* Other blocking reads, each a path with its query (encoded), e.g.
	 * "/v1/agent/connect/ca/roots": the update carries the raw body. */
	const char *const *gets;
	size_t n_gets;
	uint32_t get_rate_burst;     /* the `gets` loops' token bucket: 0 = rate_burst */
	uint64_t get_rate_period_ns; /* 0 = the health loops' bucket (rate_period_ns) */
	uint64_t resync_ns;	     /* how often GET /v1/agent/services verifies regs; 0 = 30 s */
};

/* One query result, handed to the callback, which owns it (consul_update_free). */
struct consul_update {
	char *service;
	char *dc;    /* the query's service_dcs entry, NULL for the local datacenter */
	int err;     /* 0, or -errno: -EIO transport, -EPROTO bad HTTP status, -EINVAL bad body */
	long status; /* HTTP status, 0 when none was received */
	uint64_t index;			 /* index the next query will use (see consul_next_index) */
	struct config_backend *backends; /* when err == 0: sorted by nobody, caller decides */
	size_t n_backends;
	bool selectors; /* the instances carry selector documents (backends' subset, named's sel) */
	struct consul_named *named; /* instances with a host name, to resolve */
	size_t n_named;
	size_t skipped;	       /* listed instances left out (consul_health.skipped) */
	char skip_reason[128]; /* why the first one was */
	struct consul_bad_mesh_port bad_mesh_port[CONSUL_BAD_MESH_PORT_MAX]; /* consul_health's */
	size_t n_bad_mesh_port;
	/* A `gets` query (service = its path): the 200 answer, NUL-terminated; NULL with err 0
	 * and status 404 for a 404 carrying X-Consul-Index (a KV key that does not exist). */
	char *body;
	size_t body_len;
};
void consul_update_free(struct consul_update *u);

/* Called on the watcher thread after every query: hand `u` to another thread (consul_post), do
 * not block. The callee owns `u`. */
typedef void (*consul_update_cb)(struct consul_update *u, void *arg);

struct consul_watch;

/* Starts the watcher thread: one blocking-query loop per service, multiplexed. Copies `o`.
 * Returns the watcher, or NULL + errno. */
struct consul_watch *consul_watch_new(const struct consul_watch_opts *o, consul_update_cb cb,
				      void *arg);
/* True once every agent write (registration, deregistration) has succeeded. Any thread. */
bool consul_watch_writes_done(struct consul_watch *w);
/* State of registration `i` (0 <= i < n_regs of the options) into `out`: 0 or -ENOENT. Any
 * thread. */
int consul_watch_reg_state(struct consul_watch *w, size_t i, struct discovery_registration *out);
/* Whether the health answers of `service` (its local-datacenter loop) carry selector
 * documents from now on. Turned on, a fresh non-blocking read of it starts at once (a blocking
 * query in flight is abandoned), so an answer with them follows promptly; answers already on
 * their way have none (consul_update.selectors says). Any thread. */
void consul_watch_selectors(struct consul_watch *w, const char *service, bool on);
/* Sets what the TTL check of registration `i` reports (passing or critical); reported at once
 * when it changed, then every third of the TTL. Any thread. */
void consul_watch_set_passing(struct consul_watch *w, size_t i, bool passing);
/* Stops the thread (wakes it, joins), frees everything. No callback runs after it returns.
 * Accepts NULL. */
void consul_watch_free(struct consul_watch *w);

/* consul_post.c: a watcher's answers handed to the loop thread. */
struct consul_post;

/* A hand-off that runs `cb(u, arg)` on `loop`'s thread for each answer; `cb` owns `u`. Returns
 * it, or NULL (ENOMEM). Loop thread. */
struct consul_post *consul_post_new(struct evloop *loop, consul_update_cb cb, void *arg);
/* The consul_update_cb to give consul_watch_new() with `post` as its argument: queues `u` on the
 * loop (dropped, and freed, when the loop refuses it). Watcher thread. */
void consul_post_update(struct consul_update *u, void *post);
/* After consul_watch_free() of the watcher that posts here: no callback runs any more (answers
 * still queued are freed unseen) and the hand-off goes once the last one ran. Loop thread;
 * accepts NULL. */
void consul_post_close(struct consul_post *p);

#endif
