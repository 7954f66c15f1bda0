/* Configuration: the loaded, validated, immutable view of meshd's settings.
 *
 * Built from built-in defaults < preset < JSON file < MESH_* environment, all driven by one key
 * table (config_table.c). Only this module walks cJSON trees; everyone else reads these plain
 * structs. A loaded config is never modified: reload builds a new one and config_diff() says what
 * changed. Durations are nanoseconds; ports are host byte order. */
#ifndef MESH_CONFIG_H
#define MESH_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh_abi.h"

#define CONFIG_VERSION_CURRENT 1
#define CONFIG_NAME_MAX 64

enum config_preset {
	CONFIG_PRESET_DEVELOPMENT = 0,
	CONFIG_PRESET_PRODUCTION = 1,
};

enum config_log_level {
	CONFIG_LOG_ERROR = 0,
	CONFIG_LOG_WARN = 1,
	CONFIG_LOG_INFO = 2,
	CONFIG_LOG_DEBUG = 3,
};

enum config_log_format {
	CONFIG_LOG_LOGFMT = 0,
	CONFIG_LOG_JSON = 1,
};

enum config_health_type {
	CONFIG_HEALTH_NONE = 0,
	CONFIG_HEALTH_TCP = 1,
	CONFIG_HEALTH_HTTP = 2,
	CONFIG_HEALTH_UDP = 3, /* a datagram with udp_payload; any reply = healthy */
	CONFIG_HEALTH_DNS = 4, /* a DNS query for dns_name; any DNS answer = healthy */
};

enum config_protocol {
	CONFIG_PROTO_TCP = 0,
	CONFIG_PROTO_UDP = 1,
};

enum config_discovery {
	CONFIG_DISCOVERY_STATIC = 0,
	CONFIG_DISCOVERY_CONSUL = 1,
	CONFIG_DISCOVERY_DNS = 2,
};

enum config_cert_source {
	CONFIG_CERT_FILES = 0,
	CONFIG_CERT_CONSUL = 1,
	CONFIG_CERT_BUILTIN_CA = 2,
};

enum config_action {
	CONFIG_ACTION_DENY = 0,
	CONFIG_ACTION_ALLOW = 1,
};

/* What connect() to an mTLS service does for a caller whose cgroup has no identity. */
enum config_no_identity {
	CONFIG_NO_IDENTITY_REFUSE = 0,	    /* fails with EACCES, counted */
	CONFIG_NO_IDENTITY_PASSTHROUGH = 1, /* plaintext straight to the backend, counted */
};

/* An IPv4 or IPv6 address with a port. `family` is AF_INET or AF_INET6. */
struct config_endpoint {
	int family;
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} addr;
	uint16_t port; /* host byte order */
};

struct config_health_check {
	enum config_health_type type;
	uint64_t interval_ns;
	uint64_t timeout_ns;
	uint32_t unhealthy_threshold;
	uint32_t healthy_threshold;
	char *http_path;
	char *udp_payload; /* udp checks */
	char *dns_name;	   /* dns checks */
};

struct config_retry {
	uint32_t connect_attempts;
	uint64_t backoff_base_ns;
	uint64_t backoff_max_ns;
	uint32_t budget_percent;
	uint32_t min_retries_per_second; /* budget floor (Linkerd's minRetriesPerSecond) */
};

struct config_load_balancer {
	enum mesh_lb_algorithm algorithm; /* include/mesh_abi.h */
	enum mesh_hash_key hash_key;	  /* maglev: who sticks to one backend */
	uint32_t choice_count;
	enum mesh_no_healthy_policy no_healthy_backend;
	double panic_threshold;	     /* 0..1 */
	uint64_t peak_ewma_decay_ns; /* peak_ewma: time constant of the latency average */
	struct config_health_check health_check;
	struct config_retry retry;
	uint64_t close_removed_after_ns; /* 0: connections to removed backends stay open */
};

struct config_circuit_breaker {
	uint32_t consecutive_failures;
	double error_rate_threshold; /* 0..1 */
	uint32_t request_volume_threshold;
	uint64_t window_ns;
	uint64_t open_duration_ns;
	uint64_t max_open_duration_ns;
	uint32_t half_open_probes;
	uint32_t max_connections;
	uint32_t max_ejection_percent; /* 0..100 */
	bool close_on_open;	       /* close a backend's connections when its breaker opens */
};

struct config_backend {
	struct config_endpoint endpoint;
	uint32_t weight;
	/* Port of the mTLS inbound listener on the backend's host; 0 = the port of
	 * mtls.inbound_listen. Not a config key: discovery sets it (Consul meta `mesh-port`). */
	uint16_t mesh_port;
	char *subset; /* subset label for traffic splits (services[].split); NULL: none */
};

/* One entry of a service's traffic split: the share of new connections its subset takes. */
struct config_split {
	char *subset;
	uint32_t weight; /* hundredths of a percent: 10000 = 100% */
};

/* One service. `load_balancer` and `circuit_breaker` are the effective values: the global blocks
 * with this service's overrides applied key by key. */
struct config_service {
	char *name;
	struct config_endpoint vip; /* address and port the apps connect to */
	enum config_protocol protocol;
	struct config_backend *backends;
	size_t n_backends;
	struct config_load_balancer load_balancer;
	struct config_circuit_breaker circuit_breaker;
	bool mtls;
	struct config_split *split; /* empty: every connect balanced over every backend */
	size_t n_split;
};

/* The check Consul keeps on a registration. */
enum config_consul_check {
	CONFIG_CONSUL_CHECK_TCP = 0,  /* the agent connects to the address */
	CONFIG_CONSUL_CHECK_HTTP = 1, /* the agent GETs http://address/http_path */
	CONFIG_CONSUL_CHECK_TTL = 2,  /* meshd passes/fails it from its own health checks */
};

struct config_consul_register {
	char *name;
	char *id;
	struct config_endpoint endpoint;
	char **tags;
	size_t n_tags;
	char **meta; /* "key=value" */
	size_t n_meta;
	enum config_consul_check check_type;
	uint64_t check_interval_ns; /* tcp, http: probe interval; ttl: the TTL */
	uint64_t check_timeout_ns;  /* tcp, http */
	char *check_http_path;
};

/* Datacenters to fail over to, in order, when no instance of `service` passes in the local one. */
struct config_consul_failover {
	char *service;
	char **datacenters;
	size_t n_datacenters;
};

struct config_consul {
	char *address; /* URL, e.g. http://127.0.0.1:8500 */
	char *datacenter;
	char *token_file; /* secret: path only, contents never printed */
	char *ca_file;
	char **services;
	size_t n_services;
	uint64_t wait_ns;
	struct config_consul_register *reg;
	size_t n_reg;
	uint64_t deregister_critical_after_ns;
	bool deregister_on_stop; /* deregister when meshd stops (default: leave them) */
	uint64_t resync_ns;	 /* how often registrations are verified in the agent */
	struct config_consul_failover *failover;
	size_t n_failover;
	bool catalog_enabled; /* serve tagged catalog services carrying meta mesh-vip */
	char *catalog_tag;    /* the tag that marks them */
};

struct config_dns_service {
	char *name;
	char *srv;
};

struct config_dns {
	struct config_endpoint *servers;
	size_t n_servers;
	struct config_dns_service *services;
	size_t n_services;
	uint64_t min_ttl_ns; /* refresh clamps around the record TTL */
	uint64_t max_ttl_ns;
	uint64_t hold_nx_ns;	  /* NXDOMAIN/empty answers empty a set after this long */
	uint64_t hold_timeout_ns; /* failures empty a set after this long; 0 = never */
};

struct config_mtls {
	bool enabled;
	char *trust_domain;
	struct config_endpoint outbound_listen;
	struct config_endpoint inbound_listen;
	enum config_cert_source cert_source;
	char *ca_file;
	char *ca_key_file; /* secret: builtin_ca's signing key */
	char *cert_dir;
	uint64_t cert_ttl_ns; /* builtin_ca leaf lifetime */
	bool strict_inbound;
	enum config_no_identity no_identity;
	uint32_t workers; /* proxy threads; 0 = one per CPU */
	uint32_t pool_max_streams;
	uint64_t pool_idle_timeout_ns;
	uint64_t connect_timeout_ns;
	uint64_t busy_poll_ns; /* mtls.busy_poll; 0 = off */
	uint64_t drain_timeout_ns;
};

struct config_identity {
	char *cgroup;
	char *service;
	uint16_t *ports; /* local ports serving `service` (host byte order) */
	size_t n_ports;
};

struct config_authz_rule {
	char *source;
	char *destination;
	enum config_action action;
};

enum config_tracing_protocol {
	CONFIG_TRACING_PROTOBUF = 0, /* http/protobuf */
	CONFIG_TRACING_JSON = 1,     /* http/json */
};

/* telemetry.tracing: connection spans over OTLP/HTTP. */
struct config_tracing {
	char *endpoint; /* OTLP/HTTP traces URL; NULL = tracing off */
	enum config_tracing_protocol protocol;
	double sample_ratio; /* share of successful connections traced, 0..1 */
};

struct config_meta;

struct mesh_config {
	uint64_t generation; /* set by the loader: 1, 2, ... per successful load in this process */
	int version;
	enum config_preset preset;
	char *source_path; /* file it was loaded from, or NULL */

	char *node_name;
	char *node_datacenter;
	char *cgroup;			/* cgroup v2 path the datapath attaches to */
	char *bpf_pin_path;		/* bpffs directory for pinned programs and maps */
	uint32_t datapath_max_services; /* capacities of the datapath maps */
	uint32_t datapath_max_backends;
	char *state_dir;
	bool config_watch;   /* reload when the config file changes */
	char *config_kv_key; /* config_source.consul_kv: Consul KV key layered over the file */

	enum config_log_level log_level;
	enum config_log_format log_format;
	char *admin_socket;
	struct config_endpoint metrics_listen;
	struct config_tracing tracing;

	struct config_load_balancer load_balancer;     /* global defaults */
	struct config_circuit_breaker circuit_breaker; /* global defaults */

	enum config_discovery discovery;
	struct config_consul consul;
	struct config_dns dns;

	struct config_service *services;
	size_t n_services;

	struct config_mtls mtls;
	struct config_identity *identities;
	size_t n_identities;
	enum config_action authz_default;
	bool authz_intentions; /* Consul intentions feed the authorization rules */
	struct config_authz_rule *authz_rules;
	size_t n_authz_rules;

	struct config_meta *meta; /* private to the config module: origin of every value */
};

/* Problems found while loading: one human line each, `<json.path>: <what> (got <v>, expected <r>)`. */
struct config_errors {
	char **msgs;
	size_t n;
};
void config_errors_free(struct config_errors *errs);

/* Loads `path` (NULL: defaults + preset + env only), applies the environment `envp` (NULL:
 * environ), validates, and returns a new immutable config, or NULL with every problem appended to
 * `errs` (caller frees with config_errors_free). Never partially applies anything. */
struct mesh_config *config_load(const char *path, char *const *envp, struct config_errors *errs);
/* Same, from an in-memory JSON document (tests, fuzzing). */
struct mesh_config *config_load_buf(const char *json, size_t len, char *const *envp,
				    struct config_errors *errs);
/* config_load() with a second document layered between the file and the environment: the
 * value of the Consul KV key `config_source.consul_kv` names (`kv`, `kv_len` bytes; NULL = none).
 * It is a JSON object in the file's format whose members replace the file's (objects merged
 * key by key, lists and values replaced whole; `version` optional, as the file's rules when
 * given). A restart-only key in it (config_source included) is refused, whatever its value.
 * Its problems are reported like the file's; its JSON syntax errors under `(consul_kv)`. The
 * origin of its values is `consul_kv`. */
struct mesh_config *config_load_kv(const char *path, const char *kv, size_t kv_len,
				   char *const *envp, struct config_errors *errs);
void config_free(struct mesh_config *cfg);

/* Looks up a service by name; NULL if absent. */
const struct config_service *config_service_find(const struct mesh_config *cfg, const char *name);
/* A deep copy of `src` that outlives its config (every text key of the per-service table is
 * duplicated, derived from the table), with its backends replaced by `backends[0..n)`. Returns 0
 * or -ENOMEM (`dst` then holds nothing to release). config_service_release() frees it. */
int config_service_copy(struct config_service *dst, const struct config_service *src,
			const struct config_backend *backends, size_t n);
/* Frees what config_service_copy() allocated and zeroes `svc`. */
void config_service_release(struct config_service *svc);

/* One changed path between two configs, values rendered as text (secrets redacted). */
struct config_change {
	char *path;
	char *old_value;
	char *new_value;
};
struct config_diff {
	struct config_change *changes;
	size_t n;
};
/* Lists every leaf path whose effective value differs between `old` and `new` (either may be
 * NULL = empty), in the path form of the problem lines (`services[1].circuit_breaker.window`;
 * list elements are compared by position, a leaf on one side only shows "(none)" on the other).
 * Secret keys show "<redacted>". Caller frees with config_diff_free. Returns 0 or -ENOMEM. */
int config_diff(const struct mesh_config *old, const struct mesh_config *new,
		struct config_diff *out);
/* Same as config_diff() without the leaves of `services` (a reload audits services one line per
 * service, config_plan()). */
int config_diff_settings(const struct mesh_config *old, const struct mesh_config *new,
			 struct config_diff *out);
void config_diff_free(struct config_diff *d);

/* Number of keys of service `a` whose value differs in `b` (derived from the service key table,
 * so a new per-service key is compared without anyone listing it), the `backends` list included
 * only with `with_backends`. Writes their paths comma-separated into `keys` (may be NULL with
 * len 0; "..." ends a list that does not fit). Pure, no allocation. */
size_t config_service_changes(const struct config_service *a, const struct config_service *b,
			      bool with_backends, char *keys, size_t len);
/* Keys flagged as needing a restart (cgroup, bpf_pin_path, ...) whose value differs between `old`
 * and `new`: stores up to `max` of their paths (static strings) and returns how many differ. */
size_t config_restart_changes(const struct mesh_config *old, const struct mesh_config *new,
			      const char **paths, size_t max);

/* One service added (old NULL), removed (new NULL) or changed between two configs, matched by
 * name. Pointers into the two configs. `keys` lists the changed keys of a changed service. */
struct config_service_change {
	const char *name;
	const struct config_service *old, *new;
	char keys[256];
};

/* What a reload would change: every changed leaf outside `services` (one audit line each), one
 * entry per added, removed or changed service, and the changed keys that need a restart. */
struct config_plan {
	struct config_diff settings;
	struct config_service_change *services;
	size_t n_services, cap_services;
	const char *restart[8];
	size_t n_restart; /* may exceed the 8 stored */
};
/* Builds the plan from `old` to `new` (both must outlive it). Returns 0 or -ENOMEM. Pure: safe on
 * any thread while neither config is freed. */
int config_plan(const struct mesh_config *old, const struct mesh_config *new,
		struct config_plan *out);
/* The plan from `new` back to `old` (for rolling back a reload). Returns 0 or -ENOMEM. */
int config_plan_reverse(const struct config_plan *p, struct config_plan *out);
/* Settings changes plus service changes: 0 when the two configs are equivalent. */
size_t config_plan_changes(const struct config_plan *p);
void config_plan_free(struct config_plan *p);

/* Output helpers behind `meshd config show|env|docs`; write to `out`, return 0 or -errno.
 * config_show prints one `PATH VALUE ORIGIN` line per leaf (origin default|preset|file|env,
 * "(global)" when a service inherits it, "secret" for secret-file keys: the path, never the
 * contents); with `json` it prints {"values": <a loadable config>, "origins": {path: origin},
 * "secrets": [path]}. */
#include <stdio.h>
int config_show(const struct mesh_config *cfg, bool json, FILE *out);
int config_print_env(FILE *out);
int config_print_docs(FILE *out);
/* JSON text of the effective config (the `values` form above) with secret keys' values
 * replaced by "<redacted>", for the admin API. Caller frees; NULL with errno ENOMEM. */
char *config_to_json(const struct mesh_config *cfg);

/* The config file `make install` writes, which meshctl reads when given none. */
#define CONFIG_INSTALLED_PATH "/etc/meshd/meshd.json"

/* Host checks (config_host.c): what `cfg` asks of this machine. Appends one problem line per
 * failure (`cgroup`: an existing cgroup v2 directory; `bpf_pin_path`: on bpffs, or missing below
 * a bpffs mount; `admin.socket`: in a directory only root or we can change, common/pathperm.h)
 * and returns how many. Not part of config_load(): meshd runs them before it
 * starts anything, `meshd validate` unless --offline. */
size_t config_check_host(const struct mesh_config *cfg, struct config_errors *errs);
/* The pieces, for `meshctl check`: 0 when fine, else -errno with the reason in `why`
 * ("on tmpfs, not cgroup2; the cgroup2 mount is /sys/fs/cgroup/unified"). For the pin path,
 * `why` also says which existing directory was looked at when it is fine. */
int config_host_cgroup(const char *path, char *why, size_t len);
int config_host_pin_path(const char *path, char *why, size_t len);
/* The first cgroup2 mount point (from /proc/mounts) into `out`; -ENOENT when there is none. */
int config_host_cgroup2_mount(char *out, size_t len);

/* Parsers shared with other modules. Return 0 or -EINVAL. */
int config_parse_duration(const char *s, uint64_t *ns);
int config_parse_endpoint(const char *s, struct config_endpoint *ep);
/* 1 when `s` is a lowercase DNS label of at most 63 bytes (what a service name must be), else 0
 * (NULL included). */
int config_is_dns_label(const char *s);
/* A bare IPv4 or IPv6 address (no port); sets family and addr, leaves port alone. */
int config_parse_address(const char *s, struct config_endpoint *ep);
/* An http:// or https:// URL with a host, optional port (1..65535) and path. */
int config_parse_url(const char *s);
/* Formats `ep` as `ip:port` or `[ip6]:port`. */
const char *config_endpoint_str(const struct config_endpoint *ep, char *buf, size_t len);
/* Formats only the address of `ep` (no port, no brackets). */
const char *config_address_str(const struct config_endpoint *ep, char *buf, size_t len);

#endif
