/* The configuration key table: every key meshd understands, its JSON path, type, storage, default,
 * production preset value, range, flags and one-line doc. Loading, MESH_* overrides, validation,
 * `meshd config show|env|docs` and docs/configuration.md are all driven from these arrays. The
 * per-service table is the service's own keys plus a copy of the global load_balancer and
 * circuit_breaker keys (built once at startup) so that a service overrides them key by key. */
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "config/config_int.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MS 1e6
#define SEC 1e9
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

const char *const cfg_preset_names[] = { "development", "production", NULL };
static const char *const log_levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const log_formats[] = { "logfmt", "json", NULL };
static const char *const lb_algorithms[] = { "random",	 "round_robin", "least_request",
					     "weighted", "maglev",	"peak_ewma",
					     NULL };
static const char *const no_healthy[] = { "reject", "passthrough", NULL };
static const char *const hash_keys[] = { "cgroup", "process", NULL };
static const char *const health_types[] = { "none", "tcp", "http", "udp", "dns", NULL };
static const char *const protocols[] = { "tcp", "udp", NULL };
static const char *const discoveries[] = { "static", "consul", "dns", NULL };
static const char *const cert_sources[] = { "files", "consul", "builtin_ca", NULL };
static const char *const actions[] = { "deny", "allow", NULL };
static const char *const consul_checks[] = { "tcp", "http", "ttl", NULL };
static const char *const no_identity[] = { "refuse", "passthrough", NULL };
static const char *const tracing_protocols[] = { "http/protobuf", "http/json", NULL };

/* Reasons of keys that are not built yet (struct cfg_key.not_yet): none today. */

/* Switches of keys that do something only while the switch is on (struct cfg_key.gate). */
#define MTLS_ON "mtls.enabled"
#define TRACING_ON "telemetry.tracing.endpoint"
#define CATALOG_ON "discovery.consul.catalog.enabled"

#define R(field) .off = offsetof(struct mesh_config, field)
#define RL(field, count) R(field), .count_off = offsetof(struct mesh_config, count)

static const struct cfg_key backend_keys[] = {
	{ "address", CT_ADDR, offsetof(struct config_backend, endpoint), .flags = CF_REQUIRED,
	  .doc = "Backend IP address (IPv4 or IPv6)." },
	{ "port", CT_PORT, offsetof(struct config_backend, endpoint.port), .flags = CF_REQUIRED,
	  .min = 1, .max = 65535, .doc = "Backend TCP port." },
	{ "weight", CT_UINT, offsetof(struct config_backend, weight), .def = "1", .min = 1,
	  .max = 10000, .doc = "Relative weight for the `weighted` algorithm." },
	{ "subset", CT_STRING, offsetof(struct config_backend, subset), .flags = CF_DNSNAME,
	  .doc = "Subset this backend belongs to, for the service's `split` (e.g. `v1`)." },
};

static const struct cfg_desc backend_desc = { "backend", backend_keys, ARRAY_SIZE(backend_keys),
					      sizeof(struct config_backend) };

static const struct cfg_key split_keys[] = {
	{ "subset", CT_STRING, offsetof(struct config_split, subset),
	  .flags = CF_REQUIRED | CF_DNSNAME,
	  .doc = "Subset: the backends whose `subset` is this name." },
	{ "weight", CT_PERCENT, offsetof(struct config_split, weight), .flags = CF_REQUIRED,
	  .min = 0, .max = 10000,
	  .doc = "Share of new connections, in percent with at most two decimals; the weights of a "
		 "split sum to 100." },
};

static const struct cfg_desc split_desc = { "split", split_keys, ARRAY_SIZE(split_keys),
					    sizeof(struct config_split) };

static const struct cfg_key register_keys[] = {
	{ "name", CT_STRING, offsetof(struct config_consul_register, name),
	  .flags = CF_REQUIRED | CF_DNSNAME, .doc = "Service name to register in Consul." },
	{ "id", CT_STRING, offsetof(struct config_consul_register, id),
	  .doc = "Service instance ID (default: the name)." },
	{ "address", CT_ENDPOINT, offsetof(struct config_consul_register, endpoint),
	  .flags = CF_REQUIRED, .doc = "Address and port Consul advertises for this instance." },
	{ "tags", CT_STRLIST, offsetof(struct config_consul_register, tags),
	  .count_off = offsetof(struct config_consul_register, n_tags),
	  .doc = "Consul tags of the instance." },
	{ "meta", CT_STRLIST, offsetof(struct config_consul_register, meta),
	  .count_off = offsetof(struct config_consul_register, n_meta),
	  .doc = "Service meta as `key=value` strings (Consul's key rules; `consul-` is reserved, "
		 "`mesh-port` and `managed-by` are meshd's own)." },
	{ "check.type", CT_ENUM, offsetof(struct config_consul_register, check_type), .def = "tcp",
	  .names = consul_checks,
	  .doc = "Consul check: `tcp` or `http` (run by the agent), or `ttl` (meshd passes it "
		 "while its own health check of this address in service `name` passes)." },
	{ "check.interval", CT_DURATION, offsetof(struct config_consul_register, check_interval_ns),
	  .def = "10s", .min = 1 * SEC, .max = HOUR,
	  .doc = "Check interval (tcp, http), or the TTL (ttl: meshd reports every third of it)." },
	{ "check.timeout", CT_DURATION, offsetof(struct config_consul_register, check_timeout_ns),
	  .def = "2s", .min = 100 * MS, .max = MIN,
	  .doc = "Time the agent allows one tcp or http check." },
	{ "check.http_path", CT_STRING, offsetof(struct config_consul_register, check_http_path),
	  .def = "/health", .doc = "Path the agent requests for an `http` check." },
};

static const struct cfg_desc register_desc = { "register", register_keys, ARRAY_SIZE(register_keys),
					       sizeof(struct config_consul_register) };

static const struct cfg_key failover_keys[] = {
	{ "service", CT_STRING, offsetof(struct config_consul_failover, service),
	  .flags = CF_REQUIRED | CF_DNSNAME,
	  .doc = "Service (an entry of `discovery.consul.services`) that may fail over." },
	{ "datacenters", CT_STRLIST, offsetof(struct config_consul_failover, datacenters),
	  .count_off = offsetof(struct config_consul_failover, n_datacenters), .flags = CF_REQUIRED,
	  .doc = "Datacenters tried in order (`?dc=`) when no instance passes in the local one." },
};

static const struct cfg_desc failover_desc = { "failover", failover_keys, ARRAY_SIZE(failover_keys),
					       sizeof(struct config_consul_failover) };

static const struct cfg_key dns_service_keys[] = {
	{ "name", CT_STRING, offsetof(struct config_dns_service, name),
	  .flags = CF_REQUIRED | CF_DNSNAME, .doc = "Mesh service (an entry of `services`)." },
	{ "srv", CT_STRING, offsetof(struct config_dns_service, srv), .flags = CF_REQUIRED,
	  .doc = "SRV record name to resolve, e.g. `_api._tcp.example.test`." },
};

static const struct cfg_desc dns_service_desc = { "dns service", dns_service_keys,
						  ARRAY_SIZE(dns_service_keys),
						  sizeof(struct config_dns_service) };

static const struct cfg_key identity_keys[] = {
	{ "cgroup", CT_PATH, offsetof(struct config_identity, cgroup), .flags = CF_REQUIRED,
	  .doc = "cgroup v2 path (relative to the cgroup2 mount, starting with /)." },
	{ "service", CT_STRING, offsetof(struct config_identity, service),
	  .flags = CF_REQUIRED | CF_DNSNAME,
	  .doc = "Service identity (SPIFFE ID path) of processes in that cgroup." },
	{ "ports", CT_PORTLIST, offsetof(struct config_identity, ports),
	  .count_off = offsetof(struct config_identity, n_ports), .min = 1, .max = 65535,
	  .doc = "Local ports on which this host serves `service`: the only targets the mTLS "
		 "inbound listener forwards to." },
};

static const struct cfg_desc identity_desc = { "identity", identity_keys, ARRAY_SIZE(identity_keys),
					       sizeof(struct config_identity) };

static const struct cfg_key rule_keys[] = {
	{ "source", CT_STRING, offsetof(struct config_authz_rule, source), .flags = CF_REQUIRED,
	  .doc = "Calling service (any service name: remote identities are not known locally), "
		 "or `*`." },
	{ "destination", CT_STRING, offsetof(struct config_authz_rule, destination),
	  .flags = CF_REQUIRED, .doc = "Called service, or `*`." },
	{ "action", CT_ENUM, offsetof(struct config_authz_rule, action), .def = "allow",
	  .names = actions, .doc = "What to do with a matching connection." },
};

static const struct cfg_desc rule_desc = { "rule", rule_keys, ARRAY_SIZE(rule_keys),
					   sizeof(struct config_authz_rule) };

static const struct cfg_key root_keys[] = {
	{ "version", CT_INT, R(version), .flags = CF_SPECIAL | CF_NOENV | CF_REQUIRED, .min = 1,
	  .max = CONFIG_VERSION_CURRENT, .doc = "Configuration format version; must be 1." },
	{ "preset", CT_ENUM, R(preset), .def = "development", .names = cfg_preset_names,
	  .doc = "Set of defaults: `development` or `production`." },
	{ "node.name", CT_STRING, R(node_name),
	  .doc = "Node name shown by `meshctl status` (default: the host name)." },
	{ "node.datacenter", CT_STRING, R(node_datacenter), .def = "dc1",
	  .doc = "Datacenter of this node: the default of `discovery.consul.datacenter`." },
	{ "cgroup", CT_PATH, R(cgroup), .def = "/sys/fs/cgroup", .flags = CF_RESTART,
	  .doc = "cgroup v2 directory the datapath attaches to." },
	{ "bpf_pin_path", CT_PATH, R(bpf_pin_path), .def = "/sys/fs/bpf/meshd", .flags = CF_RESTART,
	  .doc = "bpffs directory for pinned programs and maps." },
	{ "datapath.max_services", CT_UINT, R(datapath_max_services), .def = "16384", .min = 1,
	  .max = MESH_MAX_SERVICES_CAP, .flags = CF_RESTART,
	  .doc = "Services the datapath maps hold (memory: docs/datapath.md); a change rebuilds "
		 "them at the next start." },
	{ "datapath.max_backends", CT_UINT, R(datapath_max_backends), .def = "131072", .min = 2,
	  .max = MESH_MAX_BACKENDS_CAP, .flags = CF_RESTART,
	  .doc = "Backends, over all services, the datapath maps hold; a change rebuilds them at "
		 "the next start." },
	{ "state_dir", CT_PATH, R(state_dir), .def = "/var/lib/meshd",
	  .doc = "Directory for persistent state (last known discovery state)." },
	{ "config_watch", CT_BOOL, R(config_watch), .def = "false",
	  .doc = "Reload when the config file changes (as on SIGHUP)." },
	{ "config_source.consul_kv", CT_STRING, R(config_kv_key), .flags = CF_RESTART,
	  .doc = "Consul KV key (e.g. `meshd/node-1`) whose value, a JSON document in this "
		 "file's format, is layered over the file and watched: each change is applied "
		 "as a reload. Read from the agent of `discovery.consul`; the last applied value "
		 "is kept under state_dir (docs/consul.md)." },
	{ "log.level", CT_ENUM, R(log_level), .def = "info", .names = log_levels,
	  .doc = "Lowest level logged." },
	{ "log.format", CT_ENUM, R(log_format), .def = "logfmt", .prod = "json",
	  .names = log_formats, .doc = "Log line format." },
	{ "admin.socket", CT_PATH, R(admin_socket), .def = "/run/meshd/admin.sock",
	  .doc = "Unix socket of the admin API (meshctl)." },
	{ "telemetry.metrics_listen", CT_ENDPOINT, R(metrics_listen), .def = "127.0.0.1:9464",
	  .doc = "Address of the Prometheus /metrics listener." },
	{ "telemetry.tracing.endpoint", CT_URL, R(tracing.endpoint),
	  .doc = "OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`; empty: connection "
		 "tracing off." },
	{ "telemetry.tracing.protocol", CT_ENUM, .gate = TRACING_ON, R(tracing.protocol),
	  .def = "http/protobuf", .names = tracing_protocols,
	  .doc = "OTLP encoding: `http/protobuf` or `http/json`." },
	{ "telemetry.tracing.sample_ratio", CT_RATIO, .gate = TRACING_ON, R(tracing.sample_ratio),
	  .def = "0.01", .min = 0, .max = 1,
	  .doc = "Share of successful connections traced (drawn in the datapath); failed, rejected "
		 "and breaker-affected ones always are." },

	{ "load_balancer.algorithm", CT_ENUM, R(load_balancer.algorithm), .def = "least_request",
	  .names = lb_algorithms, .doc = "Backend selection algorithm." },
	{ "load_balancer.hash_key", CT_ENUM, R(load_balancer.hash_key), .def = "cgroup",
	  .names = hash_keys,
	  .doc = "What `maglev` hashes: `cgroup` (every process of a calling cgroup sticks to one "
		 "backend) or `process` (each process does)." },
	{ "load_balancer.choice_count", CT_UINT, R(load_balancer.choice_count), .def = "2",
	  .min = 1, .max = 16, .doc = "Backends sampled per pick by `least_request`." },
	{ "load_balancer.no_healthy_backend", CT_ENUM, R(load_balancer.no_healthy_backend),
	  .def = "reject", .names = no_healthy,
	  .doc = "With no usable backend: fail connect() (`reject`) or leave it untouched." },
	{ "load_balancer.panic_threshold", CT_RATIO, R(load_balancer.panic_threshold), .def = "0.5",
	  .min = 0, .max = 1, .doc = "Below this healthy fraction, balance over all backends." },
	{ "load_balancer.peak_ewma_decay", CT_DURATION, R(load_balancer.peak_ewma_decay_ns),
	  .def = "10s", .min = 100 * MS, .max = 1 * HOUR,
	  .doc =
	      "`peak_ewma`: time constant of each backend's connect-RTT average (a peak is taken "
	      "at once, then decays over about this long)." },
	{ "load_balancer.health_check.type", CT_ENUM, R(load_balancer.health_check.type),
	  .def = "tcp", .names = health_types, .doc = "Active health check kind." },
	{ "load_balancer.health_check.interval", CT_DURATION,
	  R(load_balancer.health_check.interval_ns), .def = "5s", .prod = "2s", .min = 100 * MS,
	  .max = HOUR, .doc = "Time between checks of one backend." },
	{ "load_balancer.health_check.timeout", CT_DURATION,
	  R(load_balancer.health_check.timeout_ns), .def = "1s", .prod = "500ms", .min = 1 * MS,
	  .max = MIN, .doc = "Time allowed for one check; must be below the interval." },
	{ "load_balancer.health_check.unhealthy_threshold", CT_UINT,
	  R(load_balancer.health_check.unhealthy_threshold), .def = "3", .prod = "2", .min = 1,
	  .max = 100, .doc = "Consecutive failed checks that mark a backend unhealthy." },
	{ "load_balancer.health_check.healthy_threshold", CT_UINT,
	  R(load_balancer.health_check.healthy_threshold), .def = "2", .min = 1, .max = 100,
	  .doc = "Consecutive passed checks that mark a backend healthy again." },
	{ "load_balancer.health_check.http_path", CT_STRING,
	  R(load_balancer.health_check.http_path), .def = "/health",
	  .doc = "Request path for `http` checks (2xx/3xx = healthy)." },
	{ "load_balancer.health_check.udp_payload", CT_STRING,
	  R(load_balancer.health_check.udp_payload), .def = "ping",
	  .doc = "Datagram `udp` checks send; any reply is healthy (the backend must answer)." },
	{ "load_balancer.health_check.dns_name", CT_STRING, R(load_balancer.health_check.dns_name),
	  .def = "health.mesh.local",
	  .doc = "Name `dns` checks query (type A); any DNS answer, NXDOMAIN included, is "
		 "healthy." },
	{ "load_balancer.close_removed_after", CT_DURATION, R(load_balancer.close_removed_after_ns),
	  .def = "0s", .min = 0, .max = 24 * HOUR,
	  .doc = "Established connections to a backend removed from the service (discovery, "
		 "reload) are closed this long after it left; 0 leaves them open." },
	{ "load_balancer.retry.connect_attempts", CT_UINT, R(load_balancer.retry.connect_attempts),
	  .def = "3", .prod = "2", .min = 1, .max = 10,
	  .doc = "Backends an mTLS connection tries before the application sees a failure, "
		 "first included." },
	{ "load_balancer.retry.backoff_base", CT_DURATION, R(load_balancer.retry.backoff_base_ns),
	  .def = "25ms", .min = 1 * MS, .max = 10 * SEC,
	  .doc = "First retry delay; doubles per attempt." },
	{ "load_balancer.retry.backoff_max", CT_DURATION, R(load_balancer.retry.backoff_max_ns),
	  .def = "250ms", .prod = "100ms", .min = 1 * MS, .max = MIN,
	  .doc = "Upper bound of the retry delay." },
	{ "load_balancer.retry.budget_percent", CT_UINT, R(load_balancer.retry.budget_percent),
	  .def = "20", .prod = "10", .min = 0, .max = 100,
	  .doc = "mTLS connect retries allowed as a percentage of the service's connections in "
		 "the last 10 s (Linkerd's retry budget)." },
	{ "load_balancer.retry.min_retries_per_second", CT_UINT,
	  R(load_balancer.retry.min_retries_per_second), .def = "10", .min = 0, .max = 10000,
	  .doc = "Retries always allowed per second on top of budget_percent, so a quiet "
		 "service can still retry." },

	{ "circuit_breaker.consecutive_failures", CT_UINT, R(circuit_breaker.consecutive_failures),
	  .def = "5", .min = 1, .max = 1000,
	  .doc = "Consecutive failed connects that open a backend's circuit." },
	{ "circuit_breaker.error_rate_threshold", CT_RATIO, R(circuit_breaker.error_rate_threshold),
	  .def = "0.5", .min = 0, .max = 1,
	  .doc = "Failure ratio within the window that opens the circuit." },
	{ "circuit_breaker.request_volume_threshold", CT_UINT,
	  R(circuit_breaker.request_volume_threshold), .def = "20", .min = 1, .max = 1000000,
	  .doc = "Minimum connects in the window before the error rate counts." },
	{ "circuit_breaker.window", CT_DURATION, R(circuit_breaker.window_ns), .def = "10s",
	  .min = 1 * SEC, .max = HOUR, .doc = "Sliding window of the error rate." },
	{ "circuit_breaker.open_duration", CT_DURATION, R(circuit_breaker.open_duration_ns),
	  .def = "30s", .prod = "15s", .min = 100 * MS, .max = HOUR,
	  .doc = "First time a circuit stays open; doubles on each reopen." },
	{ "circuit_breaker.max_open_duration", CT_DURATION, R(circuit_breaker.max_open_duration_ns),
	  .def = "300s", .prod = "120s", .min = 100 * MS, .max = 24 * HOUR,
	  .doc = "Upper bound of the open time." },
	{ "circuit_breaker.half_open_probes", CT_UINT, R(circuit_breaker.half_open_probes),
	  .def = "1", .min = 1, .max = 100, .doc = "Trial connects let through while half-open." },
	{ "circuit_breaker.max_connections", CT_UINT, R(circuit_breaker.max_connections),
	  .def = "1024", .min = 0, .max = 1000000,
	  .doc = "Active connections to the service (all its backends, from this host) before "
		 "connects are refused with ECONNREFUSED; 0 = unlimited." },
	{ "circuit_breaker.close_on_open", CT_BOOL, R(circuit_breaker.close_on_open),
	  .def = "false",
	  .doc = "Close a backend's established connections when its breaker opens." },
	{ "circuit_breaker.max_ejection_percent", CT_UINT, R(circuit_breaker.max_ejection_percent),
	  .def = "50", .min = 0, .max = 100,
	  .doc = "Most backends of a service that may be ejected at once (percent)." },

	{ "discovery.backend", CT_ENUM, R(discovery), .def = "static", .names = discoveries,
	  .doc = "Where backends come from: `services[].backends`, Consul or DNS SRV." },
	{ "discovery.consul.address", CT_URL, R(consul.address),
	  .doc = "Consul HTTP API URL (required with the consul backend)." },
	{ "discovery.consul.datacenter", CT_STRING, R(consul.datacenter),
	  .def_from = "node.datacenter", .doc = "Consul datacenter to query." },
	{ "discovery.consul.token_file", CT_PATH, R(consul.token_file), .flags = CF_SECRET,
	  .doc = "File holding the Consul ACL token (mode 0600 or stricter)." },
	{ "discovery.consul.ca_file", CT_PATH, R(consul.ca_file),
	  .doc = "CA bundle for an https Consul address." },
	{ "discovery.consul.services", CT_STRLIST, RL(consul.services, consul.n_services),
	  .flags = CF_DNSNAME, .doc = "Consul services to watch (each an entry of `services`)." },
	{ "discovery.consul.wait", CT_DURATION, R(consul.wait_ns), .def = "5m", .min = 1 * SEC,
	  .max = 10 * MIN, .doc = "Blocking query wait time." },
	{ "discovery.consul.register", CT_LIST, RL(consul.reg, consul.n_reg), .flags = CF_NOENV,
	  .sub = &register_desc, .doc = "Local services to register in Consul." },
	{ "discovery.consul.deregister_critical_after", CT_DURATION,
	  R(consul.deregister_critical_after_ns), .def = "1m", .min = 1 * MIN, .max = 72 * HOUR,
	  .doc = "Consul removes a registration critical for this long." },
	{ "discovery.consul.resync", CT_DURATION, R(consul.resync_ns), .def = "30s", .min = 1 * SEC,
	  .max = HOUR,
	  .doc = "How often meshd checks the agent still holds its registrations "
		 "(`GET /v1/agent/services`; a 404 on a TTL update also tells) and registers again "
		 "what it lost (agent restart, anti-entropy)." },
	{ "discovery.consul.failover", CT_LIST, RL(consul.failover, consul.n_failover),
	  .flags = CF_NOENV, .sub = &failover_desc,
	  .doc = "Per-service failover across datacenters, as Consul's service-resolver failover: "
		 "the instances of the first datacenter listed with a passing one are served while "
		 "none passes in the local datacenter." },
	{ "discovery.consul.deregister_on_stop", CT_BOOL, R(consul.deregister_on_stop),
	  .def = "false",
	  .doc =
	      "Deregister `register` entries when meshd stops (for hosts that leave for good; a "
	      "restart or upgrade then deregisters and registers them again); by default they stay "
	      "and, once critical, Consul reaps them after deregister_critical_after." },
	{ "discovery.consul.catalog.enabled", CT_BOOL, R(consul.catalog_enabled), .def = "false",
	  .doc = "Also serve every service of the Consul catalog (`/v1/catalog/services`, "
		 "blocking) whose instances carry `catalog.tag` and the meta `mesh-vip` "
		 "(`ip:port`), with the global load_balancer and circuit_breaker policy; a VIP "
		 "or name already served is refused (docs/consul.md)." },
	{ "discovery.consul.catalog.tag", CT_STRING, .gate = CATALOG_ON, R(consul.catalog_tag),
	  .def = "mesh", .flags = CF_DNSNAME,
	  .doc = "Tag that marks a catalog service for `catalog.enabled` (a lowercase DNS "
		 "label)." },
	{ "discovery.dns.servers", CT_EPLIST, RL(dns.servers, dns.n_servers),
	  .flags = CF_ANY_BACKEND,
	  .doc = "DNS servers (ip:port) for SRV lookups (required with the dns backend); also used "
		 "for hostname addresses in Consul answers (else the system resolver)." },
	{ "discovery.dns.services", CT_LIST, RL(dns.services, dns.n_services), .flags = CF_NOENV,
	  .sub = &dns_service_desc, .doc = "SRV records resolved into backends." },
	{ "discovery.dns.min_ttl", CT_DURATION, R(dns.min_ttl_ns), .def = "1s", .min = 100 * MS,
	  .max = HOUR,
	  .doc = "Shortest time between two resolutions of a service (a TTL of 0 means this)." },
	{ "discovery.dns.max_ttl", CT_DURATION, R(dns.max_ttl_ns), .def = "5m", .min = 100 * MS,
	  .max = 24 * HOUR, .doc = "Longest time between two resolutions, whatever the TTL." },
	{ "discovery.dns.hold_nx", CT_DURATION, R(dns.hold_nx_ns), .def = "30s", .min = 0,
	  .max = 24 * HOUR,
	  .doc = "NXDOMAIN or empty answers empty a service's backends once they persisted this "
		 "long." },
	{ "discovery.dns.hold_timeout", CT_DURATION, R(dns.hold_timeout_ns), .def = "0s", .min = 0,
	  .max = 7 * 24 * HOUR,
	  .doc = "Timeouts, SERVFAIL and REFUSED keep the last backends this long, then empty "
		 "them; 0 keeps them for good." },

	{ "services", CT_LIST, RL(services, n_services), .flags = CF_NOENV,
	  .sub = &cfg_service_desc, .doc = "Services reachable through a virtual IP." },

	{ "mtls.enabled", CT_BOOL, R(mtls.enabled), .def = "false", .prod = "true",
	  .doc = "Run the mTLS proxy; every service then uses it unless it sets `mtls: false`." },
	{ "mtls.trust_domain", CT_STRING, .gate = MTLS_ON, R(mtls.trust_domain),
	  .def = "mesh.local",
	  .doc = "SPIFFE trust domain: identities are "
		 "spiffe://<domain>/ns/default/dc/<node.datacenter>/svc/<service> (with "
		 "cert_source consul, Consul's `<cluster-id>.consul`: not set then)." },
	{ "mtls.outbound_listen", CT_ENDPOINT, .gate = MTLS_ON, R(mtls.outbound_listen),
	  .def = "127.0.0.1:15001",
	  .doc = "Local IPv4 listener receiving redirected app connections." },
	{ "mtls.inbound_listen", CT_ENDPOINT, .gate = MTLS_ON, R(mtls.inbound_listen),
	  .def = "0.0.0.0:15008",
	  .doc = "Listener for mTLS connections from other nodes; its port is the one callers "
		 "dial on every backend host." },
	{ "mtls.cert_source", CT_ENUM, .gate = MTLS_ON, R(mtls.cert_source), .def = "files",
	  .names = cert_sources,
	  .doc = "Where certificates come from: `files`, `builtin_ca` or `consul` (the Connect "
		 "CA of the agent at `discovery.consul.address`)." },
	{ "mtls.ca_file", CT_PATH, .gate = MTLS_ON, R(mtls.ca_file),
	  .doc = "Trusted CA bundle (PEM); with builtin_ca it also holds the signing CA's "
		 "certificate." },
	{ "mtls.ca_key_file", CT_PATH, .gate = MTLS_ON, R(mtls.ca_key_file), .flags = CF_SECRET,
	  .doc = "Signing key of the CA in ca_file (required with cert_source builtin_ca)." },
	{ "mtls.cert_dir", CT_PATH, .gate = MTLS_ON, R(mtls.cert_dir),
	  .doc = "Directory of <service>.crt/<service>.key (required with cert_source files)." },
	{ "mtls.cert_ttl", CT_DURATION, .gate = MTLS_ON, R(mtls.cert_ttl_ns), .def = "24h",
	  .min = 10 * SEC, .max = 365 * 24 * HOUR,
	  .doc = "Lifetime of leaf certificates builtin_ca issues; renewed at about half." },
	{ "mtls.strict_inbound", CT_BOOL, .gate = MTLS_ON, R(mtls.strict_inbound), .def = "false",
	  .prod = "true",
	  .doc = "Refuse plaintext connections from other hosts to the ports of `identities`." },
	{ "mtls.no_identity", CT_ENUM, .gate = MTLS_ON, R(mtls.no_identity), .def = "refuse",
	  .names = no_identity,
	  .doc = "A caller whose cgroup has no identity: connect() fails (`refuse`) or goes "
		 "plaintext to the backend (`passthrough`)." },
	{ "mtls.workers", CT_UINT, .gate = MTLS_ON, R(mtls.workers), .def = "0", .min = 0,
	  .max = 256, .flags = CF_RESTART,
	  .doc = "Proxy threads (each with its own listeners); 0 = one per CPU. A reload that "
		 "turns mTLS on or off may change it." },
	{ "mtls.pool_max_streams", CT_UINT, .gate = MTLS_ON, R(mtls.pool_max_streams), .def = "100",
	  .min = 1, .max = 10000,
	  .doc = "Proxied connections carried at once by one pooled TLS connection." },
	{ "mtls.pool_idle_timeout", CT_DURATION, .gate = MTLS_ON, R(mtls.pool_idle_timeout_ns),
	  .def = "60s", .min = 100 * MS, .max = HOUR,
	  .doc = "A pooled TLS connection with no stream is closed after this long." },
	{ "mtls.connect_timeout", CT_DURATION, .gate = MTLS_ON, R(mtls.connect_timeout_ns),
	  .def = "2s", .min = 10 * MS, .max = MIN,
	  .doc = "Time allowed for the TCP connect plus TLS handshake to a remote meshd, and "
		 "for the connect to a local backend." },
	{ "mtls.busy_poll", CT_DURATION, .gate = MTLS_ON, R(mtls.busy_poll_ns), .def = "0",
	  .min = 0, .max = 10 * MS,
	  .doc = "After each event a proxy thread polls without sleeping (yielding the CPU to any "
		 "runnable thread) for this long before it blocks, so the next message of a "
		 "busy connection finds it awake: lower latency on a VM whose idle vCPUs halt, "
		 "for CPU time while connections are active. 0 = off (sleep at once), as "
		 "haproxy's `busy-polling` is off by default. See docs/mtls.md, Performance." },
	{ "mtls.drain_timeout", CT_DURATION, .gate = MTLS_ON, R(mtls.drain_timeout_ns), .def = "5m",
	  .min = 1 * SEC, .max = 24 * HOUR,
	  .doc = "How long a meshd replaced by an upgrade keeps serving its live proxied "
		 "connections." },

	{ "identities", CT_LIST, .gate = MTLS_ON, RL(identities, n_identities), .flags = CF_NOENV,
	  .sub = &identity_desc, .doc = "Service identity of local cgroups." },
	{ "authorization.default_action", CT_ENUM, .gate = MTLS_ON, R(authz_default), .def = "deny",
	  .names = actions, .doc = "Action when no rule matches an mTLS connection." },
	{ "authorization.rules", CT_LIST, .gate = MTLS_ON, RL(authz_rules, n_authz_rules),
	  .flags = CF_NOENV, .sub = &rule_desc, .doc = "Allow/deny rules, first match wins." },
	{ "authorization.intentions", CT_BOOL, .gate = MTLS_ON, R(authz_intentions), .def = "false",
	  .doc = "Also obey Consul intentions (after `rules`, before `default_action`), read "
		 "from the agent at `discovery.consul.address` and persisted under state_dir." },
};

const struct cfg_desc cfg_root_desc = { "config", root_keys, ARRAY_SIZE(root_keys),
					sizeof(struct mesh_config) };

#define S(field) .off = offsetof(struct config_service, field)
#define N_SERVICE_OWN 7
#define N_POLICY_MAX 40

static struct cfg_key service_keys[N_SERVICE_OWN + N_POLICY_MAX] = {
	{ "name", CT_STRING, S(name), .flags = CF_REQUIRED | CF_DNSNAME | CF_NOENV,
	  .doc = "Service name, a lowercase DNS label." },
	{ "vip", CT_ADDR, S(vip), .flags = CF_REQUIRED | CF_NOENV,
	  .doc = "Virtual IP the applications connect to." },
	{ "port", CT_PORT, S(vip.port), .flags = CF_REQUIRED | CF_NOENV, .min = 1, .max = 65535,
	  .doc = "Virtual port the applications connect to." },
	{ "protocol", CT_ENUM, S(protocol), .def = "tcp", .names = protocols, .flags = CF_NOENV,
	  .doc = "`tcp`, or `udp` (balanced per connect and per datagram; health checks `udp`, "
		 "`dns` or `none`)." },
	{ "backends", CT_LIST, S(backends),
	  .count_off = offsetof(struct config_service, n_backends), .flags = CF_NOENV,
	  .sub = &backend_desc, .doc = "Static backends (discovery.backend static)." },
	{ "split", CT_LIST, S(split), .count_off = offsetof(struct config_service, n_split),
	  .flags = CF_NOENV, .sub = &split_desc,
	  .doc = "Traffic split (canary): each new connection draws a subset by weight, then the "
		 "service's algorithm runs among that subset's backends (docs/split.md)." },
	{ "mtls", CT_BOOL, S(mtls),
	  .doc = "Carry this service's connections over mTLS (needs mtls.enabled); `false` "
		 "opts the service out when mtls.enabled is true." },
};

struct cfg_desc cfg_service_desc = { "service", service_keys, N_SERVICE_OWN,
				     sizeof(struct config_service) };

/* Makes a service's own key default to the global key `path` (the service `mtls` follows
 * mtls.enabled, so `false` is how a service opts out). */
static void inherit_from(struct cfg_key *k, const char *path)
{
	for (size_t i = 0; i < ARRAY_SIZE(root_keys); i++) {
		if (strcmp(root_keys[i].path, path))
			continue;
		k->flags |= CF_INHERIT;
		k->src_idx = i;
		k->src_off = root_keys[i].off;
	}
}

/* Copies the global load_balancer.* and circuit_breaker.* keys into the service table with
 * offsets moved into struct config_service, so a service can override each of them. */
static void build_service_keys(void)
{
	struct cfg_desc *d = &cfg_service_desc;
	size_t i, n = N_SERVICE_OWN;

	for (i = 0; i < ARRAY_SIZE(root_keys); i++) {
		struct cfg_key k = root_keys[i];

		if (!strncmp(k.path, "load_balancer.", 14))
			k.off += offsetof(struct config_service, load_balancer) -
				 offsetof(struct mesh_config, load_balancer);
		else if (!strncmp(k.path, "circuit_breaker.", 16))
			k.off += offsetof(struct config_service, circuit_breaker) -
				 offsetof(struct mesh_config, circuit_breaker);
		else
			continue;
		k.flags |= CF_INHERIT;
		k.src_idx = i;
		k.src_off = root_keys[i].off;
		service_keys[n++] = k;
	}
	inherit_from(&service_keys[N_SERVICE_OWN - 1], "mtls.enabled");
	_Static_assert(N_SERVICE_OWN + N_POLICY_MAX <= 64, "origin bytes per service");
	d->n_keys = n;
}

/* Hash index of every description's key paths and section prefixes ("load_balancer",
 * "load_balancer.retry"), built once at startup: the loader looks up every JSON member, and
 * linear string compares over the table dominated loading 10,000 services. */
#define INDEX_SLOTS 256 /* power of two, > 2 x (keys + sections) of any description */
#define SECTION ((int16_t)-2)
#define MAX_DESCS 12

static struct key_index {
	const struct cfg_desc *desc;
	struct key_slot {
		uint64_t hash;	 /* 0 = empty */
		const char *str; /* the key path (a section is a prefix of one) */
		size_t len;
		int16_t idx; /* key index or SECTION */
	} slots[INDEX_SLOTS];
} indexes[MAX_DESCS];

static uint64_t hash_str(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (n--)
		h = (h ^ (unsigned char)*s++) * 0x100000001b3ull;
	return h | 1;
}

/* Slot of `path` (n bytes) in `ix`: where it is, or the empty slot where it would go. */
static size_t probe(const struct key_index *ix, const char *path, size_t n, uint64_t h)
{
	size_t i = h & (INDEX_SLOTS - 1);

	for (; ix->slots[i].hash; i = (i + 1) & (INDEX_SLOTS - 1))
		if (ix->slots[i].hash == h && ix->slots[i].len == n &&
		    !memcmp(ix->slots[i].str, path, n))
			return i;
	return i;
}

static void index_desc(const struct cfg_desc *d)
{
	struct key_index *ix = NULL;
	size_t i, j, slot;

	for (i = 0; i < MAX_DESCS && !ix; i++)
		if (!indexes[i].desc || indexes[i].desc == d)
			ix = &indexes[i];
	if (!ix || ix->desc == d)
		return;
	ix->desc = d;
	for (i = 0; i < d->n_keys; i++) {
		const char *p = d->keys[i].path;
		size_t n = strlen(p);

		slot = probe(ix, p, n, hash_str(p, n));
		ix->slots[slot] = (struct key_slot){ hash_str(p, n), p, n, (int16_t)i };
		for (j = 0; j < n; j++) {
			uint64_t h = hash_str(p, j);

			if (p[j] != '.')
				continue;
			slot = probe(ix, p, j, h);
			if (!ix->slots[slot].hash)
				ix->slots[slot] = (struct key_slot){ h, p, j, SECTION };
		}
		if (d->keys[i].type == CT_LIST)
			index_desc(d->keys[i].sub);
	}
}

__attribute__((constructor)) static void build_tables(void)
{
	build_service_keys();
	index_desc(&cfg_root_desc);
}

/* The index of `d` (a scan of at most MAX_DESCS pointers). */
static const struct key_index *index_of(const struct cfg_desc *d)
{
	for (size_t i = 0; i < MAX_DESCS; i++)
		if (indexes[i].desc == d)
			return &indexes[i];
	return NULL;
}

static int16_t lookup(const struct cfg_desc *d, const char *path, size_t n)
{
	const struct key_index *ix = index_of(d);
	size_t slot;

	if (!ix)
		return -1;
	slot = probe(ix, path, n, hash_str(path, n));
	if (!ix->slots[slot].hash)
		return -1;
	return ix->slots[slot].idx;
}

const struct cfg_key *cfg_find_key(const struct cfg_desc *d, const char *path, size_t *idx)
{
	int16_t k = lookup(d, path, strlen(path));

	if (k < 0)
		return NULL;
	if (idx)
		*idx = (size_t)k;
	return &d->keys[k];
}

int cfg_classify(const struct cfg_desc *d, const char *path, size_t n, size_t *idx)
{
	int16_t k = lookup(d, path, n);

	if (k >= 0)
		*idx = (size_t)k;
	return k >= 0 ? CFG_IS_KEY : k == SECTION ? CFG_IS_SECTION : CFG_IS_UNKNOWN;
}
