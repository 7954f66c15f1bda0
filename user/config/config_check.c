/* Validation across keys, run on a loaded and merged config: duplicate service names and VIPs
 * (hash sets, so 10,000 services stay linear), ordered pairs (backoff_base <= backoff_max, ...),
 * settings a chosen discovery backend or mTLS needs, names that must refer to known services,
 * and the permissions of secret files. Each problem is one line naming its JSON path. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/config_int.h"

int blobset_init(struct blobset *s, size_t n)
{
	s->cap = 16;
	while (s->cap < 2 * n)
		s->cap <<= 1;
	s->slots = calloc(s->cap, sizeof(*s->slots));
	return s->slots ? 0 : -ENOMEM;
}

static uint64_t fnv1a(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 0xcbf29ce484222325ull;

	while (len--)
		h = (h ^ *p++) * 0x100000001b3ull;
	return h | 1; /* 0 marks an empty slot */
}

/* Adds `key` (which must outlive the set) with `idx`; returns the index of an equal key already
 * there, or SIZE_MAX. The set never fills: it is sized for every key added. */
size_t blobset_add(struct blobset *s, const void *key, size_t len, size_t idx)
{
	uint64_t h = fnv1a(key, len);
	size_t i = h & (s->cap - 1);

	for (; s->slots[i].hash; i = (i + 1) & (s->cap - 1))
		if (s->slots[i].hash == h && s->slots[i].len == len &&
		    !memcmp(s->slots[i].key, key, len))
			return s->slots[i].idx;
	s->slots[i] = (struct slot){ h, key, len, idx };
	return SIZE_MAX;
}

size_t blobset_find(const struct blobset *s, const void *key, size_t len)
{
	uint64_t h = fnv1a(key, len);
	size_t i = h & (s->cap - 1);

	for (; s->slots[i].hash; i = (i + 1) & (s->cap - 1))
		if (s->slots[i].hash == h && s->slots[i].len == len &&
		    !memcmp(s->slots[i].key, key, len))
			return s->slots[i].idx;
	return SIZE_MAX;
}

bool blobset_has(const struct blobset *s, const char *key)
{
	return blobset_find(s, key, strlen(key)) != SIZE_MAX;
}

/* A comparable form of an endpoint (no padding bytes). */
struct ep_key {
	uint8_t addr[16];
	uint16_t port;
	uint8_t family;
	uint8_t proto; /* services: enum config_protocol (TCP and UDP may share a VIP:port) */
};

static struct ep_key ep_key(const struct config_endpoint *ep)
{
	struct ep_key k;

	memset(&k, 0, sizeof(k));
	memcpy(k.addr, &ep->addr, ep->family == AF_INET6 ? 16 : 4);
	k.port = ep->port;
	k.family = (uint8_t)ep->family;
	return k;
}

/* Ordered pairs of durations inside one load_balancer/circuit_breaker policy. */
static const struct pair_rule {
	const char *lo, *hi;
	bool strict;
} pair_rules[] = {
	{ "load_balancer.retry.backoff_base", "load_balancer.retry.backoff_max", false },
	{ "circuit_breaker.open_duration", "circuit_breaker.max_open_duration", false },
	{ "load_balancer.health_check.timeout", "load_balancer.health_check.interval", true },
};

#define N_PAIRS (sizeof(pair_rules) / sizeof(pair_rules[0]))

/* Indices of the keys the policy rules read, looked up once per validation and description. */
struct policy_keys {
	const struct cfg_desc *d;
	size_t lo[N_PAIRS], hi[N_PAIRS], type, http_path;
};

static void policy_keys(const struct cfg_desc *d, struct policy_keys *pk)
{
	size_t i;

	pk->d = d;
	for (i = 0; i < N_PAIRS; i++) {
		cfg_find_key(d, pair_rules[i].lo, &pk->lo[i]);
		cfg_find_key(d, pair_rules[i].hi, &pk->hi[i]);
	}
	cfg_find_key(d, "load_balancer.health_check.type", &pk->type);
	cfg_find_key(d, "load_balancer.health_check.http_path", &pk->http_path);
}

static uint64_t dur(const struct policy_keys *pk, const void *base, size_t idx)
{
	return *(const uint64_t *)((const char *)base + pk->d->keys[idx].off);
}

/* "services[<si>]." or "" for the root; only formatted when a problem is reported. */
static const char *policy_prefix(size_t si, char *buf, size_t len)
{
	if (si == SIZE_MAX)
		return "";
	snprintf(buf, len, "services[%zu].", si);
	return buf;
}

/* Checks a policy of the root (`si` SIZE_MAX) or of service `si`; a service only when it
 * overrides one side of a rule, so a bad global value is reported once. */
static void check_policy(const struct policy_keys *pk, const void *base, const uint8_t *origin,
			 size_t si, const struct config_load_balancer *lb,
			 struct config_errors *errs)
{
	char a[32], b[32], prefix[40];
	size_t i;

	for (i = 0; i < N_PAIRS; i++) {
		const struct pair_rule *r = &pair_rules[i];
		uint64_t lo = dur(pk, base, pk->lo[i]), hi = dur(pk, base, pk->hi[i]);

		if (origin && (origin[pk->lo[i]] & origin[pk->hi[i]] & ORIGIN_INHERITED))
			continue;
		if (r->strict && lb->health_check.type == CONFIG_HEALTH_NONE)
			continue;
		if (lo < hi || (!r->strict && lo == hi))
			continue;
		cfg_errf(errs, "%s%s: must be %s %s (got %s, expected %s %s)",
			 policy_prefix(si, prefix, sizeof(prefix)), r->lo,
			 r->strict ? "below" : "at most", r->hi, cfg_duration_str(lo, a, sizeof(a)),
			 r->strict ? "less than" : "at most", cfg_duration_str(hi, b, sizeof(b)));
	}
	if (origin && (origin[pk->type] & origin[pk->http_path] & ORIGIN_INHERITED))
		return;
	if (lb->health_check.type == CONFIG_HEALTH_HTTP &&
	    (!lb->health_check.http_path || lb->health_check.http_path[0] != '/'))
		cfg_errf(errs,
			 "%sload_balancer.health_check.http_path: required for http checks (got "
			 "\"%.64s\", expected a path starting with /)",
			 policy_prefix(si, prefix, sizeof(prefix)),
			 lb->health_check.http_path ? lb->health_check.http_path : "");
}

static void dup_backend(const struct config_service *svc, size_t si, size_t i, size_t prev,
			struct config_errors *errs)
{
	char ep[64];

	cfg_errf(errs,
		 "services[%zu].backends[%zu]: duplicate backend (got %s, expected each "
		 "address:port once per service; first at backends[%zu])",
		 si, i, config_endpoint_str(&svc->backends[i].endpoint, ep, sizeof(ep)), prev);
}

/* Duplicate backends: pairwise for the usual handful, a hash set for long lists. */
static void check_backends(const struct config_service *svc, size_t si, struct config_errors *errs)
{
	struct ep_key small[16], *keys = small;
	struct blobset set = { 0 };
	size_t i, j, prev, n = svc->n_backends;

	if (n > 16 && (!(keys = calloc(n, sizeof(*keys))) || blobset_init(&set, n)))
		goto out;
	for (i = 0; i < n; i++) {
		keys[i] = ep_key(&svc->backends[i].endpoint);
		if (!keys[i].family || !keys[i].port)
			continue;
		prev = SIZE_MAX;
		if (n > 16)
			prev = blobset_add(&set, &keys[i], sizeof(keys[i]), i);
		for (j = 0; n <= 16 && j < i && prev == SIZE_MAX; j++)
			if (!memcmp(&keys[i], &keys[j], sizeof(keys[i])))
				prev = j;
		if (prev != SIZE_MAX)
			dup_backend(svc, si, i, prev, errs);
	}
out:
	free(set.slots);
	if (keys != small)
		free(keys);
}

/* A UDP service has no connections: its backends are checked with datagrams (udp, dns) or not
 * at all; a TCP service's checks connect. */
static void check_protocol(const struct config_service *svc, size_t i, struct config_errors *errs)
{
	static const char *const names[] = { "none", "tcp", "http", "udp", "dns" };
	enum config_health_type t = svc->load_balancer.health_check.type;
	bool udp_check = t == CONFIG_HEALTH_UDP || t == CONFIG_HEALTH_DNS;

	if (svc->protocol == CONFIG_PROTO_UDP &&
	    (t == CONFIG_HEALTH_TCP || t == CONFIG_HEALTH_HTTP))
		cfg_errf(errs,
			 "services[%zu].load_balancer.health_check.type: a udp service cannot be "
			 "checked with %s (got %s, expected udp, dns or none)",
			 i, names[t], names[t]);
	if (svc->protocol == CONFIG_PROTO_TCP && udp_check)
		cfg_errf(errs,
			 "services[%zu].load_balancer.health_check.type: a tcp service cannot be "
			 "checked with %s (got %s, expected tcp, http or none)",
			 i, names[t], names[t]);
	if (svc->protocol == CONFIG_PROTO_UDP && svc->mtls)
		cfg_errf(errs,
			 "services[%zu].mtls: mTLS carries TCP only (got true with protocol udp, "
			 "expected false)",
			 i);
}

/* Whether a backend of `svc` carries subset label `name`. */
static bool subset_used(const struct config_service *svc, const char *name)
{
	for (size_t b = 0; b < svc->n_backends; b++)
		if (svc->backends[b].subset && !strcmp(svc->backends[b].subset, name))
			return true;
	return false;
}

/* A split: at most MESH_SPLIT_MAX subsets, each once, weights summing to 100%, subsets that
 * the (static) backends carry, and an algorithm that balances within a subset (maglev's table
 * is the service's). */
static void check_split(const struct config_service *svc, size_t si, struct config_errors *errs)
{
	uint32_t sum = 0;

	if (!svc->n_split) {
		for (size_t b = 0; b < svc->n_backends; b++)
			if (svc->backends[b].subset)
				cfg_errf(errs,
					 "services[%zu].backends[%zu].subset: a subset label on a "
					 "service without a split (got \"%s\", expected "
					 "services[%zu].split naming it, or no subset)",
					 si, b, svc->backends[b].subset, si);
		return;
	}
	if (svc->n_split > MESH_SPLIT_MAX)
		cfg_errf(errs,
			 "services[%zu].split: too many subsets (got %zu, expected at most %d)", si,
			 svc->n_split, MESH_SPLIT_MAX);
	if (svc->load_balancer.algorithm == MESH_LB_MAGLEV)
		cfg_errf(errs,
			 "services[%zu].split: maglev cannot balance within a subset (got "
			 "load_balancer.algorithm maglev, expected another algorithm or no split)",
			 si);
	for (size_t i = 0; i < svc->n_split; i++) {
		const char *name = svc->split[i].subset;

		sum += svc->split[i].weight;
		if (!name)
			continue;
		for (size_t j = 0; j < i; j++)
			if (svc->split[j].subset && !strcmp(svc->split[j].subset, name))
				cfg_errf(errs,
					 "services[%zu].split[%zu].subset: duplicate subset (got "
					 "\"%s\", "
					 "expected each subset once; first at split[%zu])",
					 si, i, name, j);
		if (!subset_used(svc, name))
			cfg_errf(
			    errs,
			    "services[%zu].split[%zu].subset: no backend is in this subset (got "
			    "\"%s\", expected the subset of one of services[%zu].backends)",
			    si, i, name, si);
	}
	if (sum != MESH_SPLIT_SCALE)
		cfg_errf(
		    errs,
		    "services[%zu].split: the weights do not sum to 100 (got %u.%02u, expected "
		    "100)",
		    si, sum / 100, sum % 100);
}

/* Whether a discovery backend (not the config) provides the backends of service `name`. */
static bool discovered(const struct mesh_config *cfg, const char *name)
{
	if (!name)
		return false;
	if (cfg->discovery == CONFIG_DISCOVERY_CONSUL)
		for (size_t i = 0; i < cfg->consul.n_services; i++)
			if (cfg->consul.services[i] && !strcmp(cfg->consul.services[i], name))
				return true;
	if (cfg->discovery == CONFIG_DISCOVERY_DNS)
		for (size_t i = 0; i < cfg->dns.n_services; i++)
			if (cfg->dns.services[i].name && !strcmp(cfg->dns.services[i].name, name))
				return true;
	return false;
}

static void check_service(const struct mesh_config *cfg, size_t i, const uint8_t *origin,
			  const struct policy_keys *pk, struct config_errors *errs)
{
	const struct config_service *svc = &cfg->services[i];

	if (origin)
		check_policy(pk, svc, origin, i, &svc->load_balancer, errs);
	if (cfg->discovery == CONFIG_DISCOVERY_STATIC && !svc->n_backends)
		cfg_errf(
		    errs,
		    "services[%zu].backends: no backends (got 0, expected at least one backend "
		    "with discovery.backend static)",
		    i);
	check_protocol(svc, i, errs);
	if (svc->mtls && !cfg->mtls.enabled)
		cfg_errf(errs,
			 "services[%zu].mtls: mTLS requested but mtls.enabled is false (got true, "
			 "expected false or mtls.enabled true)",
			 i);
	check_backends(svc, i, errs);
	if (svc->n_split && cfg->discovery == CONFIG_DISCOVERY_CONSUL && discovered(cfg, svc->name))
		cfg_errf(errs,
			 "services[%zu].split: a Consul-discovered service takes its split from "
			 "Consul's service-splitter and service-resolver entries (got a split in "
			 "the config, expected none: put the entries in Consul, docs/split.md)",
			 i);
	else if (svc->n_split && discovered(cfg, svc->name))
		cfg_errf(
		    errs,
		    "services[%zu].split: DNS-discovered backends carry no subset (got a split "
		    "for a service discovered through dns, expected static backends or Consul "
		    "discovery: docs/split.md)",
		    i);
	else
		check_split(svc, i, errs);
}

/* Duplicate names and VIP:ports; fills `names` with every service name for later lookups. */
static void check_services(const struct mesh_config *cfg, struct blobset *names,
			   struct config_errors *errs)
{
	struct cfg_node *nodes = cfg_root_list(cfg, "services");
	struct ep_key *vips = calloc(cfg->n_services ? cfg->n_services : 1, sizeof(*vips));
	struct policy_keys pk;
	struct blobset vipset;
	char ep[64];
	size_t i, prev;

	policy_keys(&cfg_service_desc, &pk);
	if (!vips || blobset_init(&vipset, cfg->n_services)) {
		free(vips);
		return;
	}
	for (i = 0; i < cfg->n_services; i++) {
		const struct config_service *svc = &cfg->services[i];

		check_service(cfg, i, nodes ? nodes[i].origin : NULL, &pk, errs);
		if (svc->name && names->slots &&
		    (prev = blobset_add(names, svc->name, strlen(svc->name), i)) != SIZE_MAX)
			cfg_errf(
			    errs,
			    "services[%zu].name: duplicate service name (got \"%s\", expected a "
			    "name not used by services[%zu])",
			    i, svc->name, prev);
		vips[i] = ep_key(&svc->vip);
		vips[i].proto = (uint8_t)svc->protocol;
		if (!vips[i].family || !vips[i].port)
			continue;
		prev = blobset_add(&vipset, &vips[i], sizeof(vips[i]), i);
		if (prev != SIZE_MAX)
			cfg_errf(errs,
				 "services[%zu].vip: VIP, port and protocol already used (got %s, "
				 "expected a VIP:port not used by services[%zu])",
				 i, config_endpoint_str(&svc->vip, ep, sizeof(ep)), prev);
	}
	free(vipset.slots);
	free(vips);
}

static void need(struct config_errors *errs, bool ok, const char *path, const char *why,
		 const char *rule)
{
	if (!ok)
		cfg_errf(errs, "%s: required %s (got nothing, expected %s)", path, why, rule);
}

#define KV_KEY_MAX 512 /* bytes; Consul itself takes longer keys, a config key needs no more */

/* config_source.consul_kv: a key read from the agent of discovery.consul. */
static void check_config_source(const struct mesh_config *cfg, struct config_errors *errs)
{
	const char *key = cfg->config_kv_key;
	bool ok = true;

	if (!key)
		return;
	need(errs, cfg->consul.address, "discovery.consul.address",
	     "when config_source.consul_kv is set", "the Consul agent's http:// or https:// URL");
	for (const char *c = key; *c; c++)
		ok &= (unsigned char)*c >= 0x20 && *c != 0x7f;
	if (!ok || key[0] == '/' || strlen(key) > KV_KEY_MAX)
		cfg_errf(
		    errs,
		    "config_source.consul_kv: invalid key (got \"%.64s\", expected a Consul KV "
		    "key such as meshd/node-1: no leading /, no control characters, at most "
		    "%d bytes)",
		    key, KV_KEY_MAX);
}

static void check_known(struct config_errors *errs, const struct blobset *set, const char *name,
			const char *path, size_t i, const char *what)
{
	if (name && strcmp(name, "*") && !blobset_has(set, name))
		cfg_errf(errs, "%s[%zu]: unknown service (got \"%.64s\", expected %s)", path, i,
			 name, what);
}

/* A `key=value` meta pair by Consul's rules (structs.validateMetaPair), minus meshd's own keys. */
static const char *meta_pair_error(const char *pair)
{
	const char *eq = strchr(pair, '=');
	size_t klen = eq ? (size_t)(eq - pair) : 0;

	if (!eq || !klen)
		return "a key=value string";
	if (klen > 128 || strlen(eq + 1) > 512)
		return "a key of at most 128 characters and a value of at most 512";
	for (size_t i = 0; i < klen; i++)
		if (!isalnum((unsigned char)pair[i]) && pair[i] != '_' && pair[i] != '-')
			return "a key of letters, digits, '_' and '-'";
	if (!strncmp(pair, "consul-", 7))
		return "a key without the prefix 'consul-' (reserved by Consul)";
	if ((klen == 9 && !strncmp(pair, "mesh-port", 9)) ||
	    (klen == 10 && !strncmp(pair, "managed-by", 10)))
		return "a key other than mesh-port and managed-by (meshd sets them)";
	return NULL;
}

static void check_registrations(const struct config_consul *c, struct config_errors *errs)
{
	char a[32], b[32];

	for (size_t i = 0; i < c->n_reg; i++) {
		const struct config_consul_register *r = &c->reg[i];

		if (r->n_meta > 62)
			cfg_errf(errs,
				 "discovery.consul.register[%zu].meta: too many pairs (got %zu, "
				 "expected at most 62: Consul allows 64, meshd adds 2)",
				 i, r->n_meta);
		for (size_t j = 0; j < r->n_meta; j++) {
			const char *why = meta_pair_error(r->meta[j]);

			if (why)
				cfg_errf(
				    errs,
				    "discovery.consul.register[%zu].meta[%zu]: invalid pair (got "
				    "\"%.64s\", expected %s)",
				    i, j, r->meta[j], why);
		}
		if (r->check_type != CONFIG_CONSUL_CHECK_TTL &&
		    r->check_timeout_ns >= r->check_interval_ns)
			cfg_errf(errs,
				 "discovery.consul.register[%zu].check.timeout: must be below "
				 "check.interval (got %s, expected less than %s)",
				 i, cfg_duration_str(r->check_timeout_ns, a, sizeof(a)),
				 cfg_duration_str(r->check_interval_ns, b, sizeof(b)));
	}
}

/* Each failover names a watched service, once, and datacenters other than the local one. */
static void check_failover(const struct config_consul *c, struct config_errors *errs)
{
	for (size_t i = 0; i < c->n_failover; i++) {
		const struct config_consul_failover *f = &c->failover[i];
		bool watched = false;

		for (size_t j = 0; j < c->n_services; j++)
			watched |= !strcmp(c->services[j], f->service);
		if (!watched)
			cfg_errf(
			    errs,
			    "discovery.consul.failover[%zu].service: not watched (got \"%.64s\", "
			    "expected an entry of discovery.consul.services)",
			    i, f->service);
		for (size_t j = 0; j < i; j++)
			if (!strcmp(c->failover[j].service, f->service))
				cfg_errf(
				    errs,
				    "discovery.consul.failover[%zu].service: listed twice (got "
				    "\"%.64s\", expected one entry per service, as "
				    "failover[%zu])",
				    i, f->service, j);
		for (size_t j = 0; j < f->n_datacenters; j++)
			if (!f->datacenters[j][0] ||
			    (c->datacenter && !strcmp(c->datacenter, f->datacenters[j])))
				cfg_errf(
				    errs,
				    "discovery.consul.failover[%zu].datacenters[%zu]: not another "
				    "datacenter (got \"%.64s\", expected a datacenter other than "
				    "the local one)",
				    i, j, f->datacenters[j]);
	}
}

static void check_discovery(const struct mesh_config *cfg, const struct blobset *names,
			    struct config_errors *errs)
{
	size_t i;

	if (cfg->discovery == CONFIG_DISCOVERY_CONSUL)
		need(errs, cfg->consul.address, "discovery.consul.address",
		     "when discovery.backend is consul", "an http:// or https:// URL");
	if (cfg->discovery == CONFIG_DISCOVERY_DNS) {
		need(errs, cfg->dns.n_servers, "discovery.dns.servers",
		     "when discovery.backend is dns", "at least one ip:port");
		need(errs, cfg->dns.n_services, "discovery.dns.services",
		     "when discovery.backend is dns", "at least one {name, srv} object");
	}
	if (cfg->dns.min_ttl_ns > cfg->dns.max_ttl_ns) {
		char a[32], b[32];

		cfg_errf(errs,
			 "discovery.dns.min_ttl: must be at most discovery.dns.max_ttl (got %s, "
			 "expected at most %s)",
			 cfg_duration_str(cfg->dns.min_ttl_ns, a, sizeof(a)),
			 cfg_duration_str(cfg->dns.max_ttl_ns, b, sizeof(b)));
	}
	check_registrations(&cfg->consul, errs);
	check_failover(&cfg->consul, errs);
	for (i = 0; i < cfg->consul.n_services; i++)
		check_known(errs, names, cfg->consul.services[i], "discovery.consul.services", i,
			    "the name of an entry of services");
	for (i = 0; i < cfg->dns.n_services; i++)
		if (cfg->dns.services[i].name && !blobset_has(names, cfg->dns.services[i].name))
			cfg_errf(errs,
				 "discovery.dns.services[%zu].name: unknown service (got \"%s\", "
				 "expected the name of an entry of services)",
				 i, cfg->dns.services[i].name);
}

static bool valid_domain(const char *s)
{
	size_t i;

	for (i = 0; s[i]; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
		      s[i] == '.'))
			return false;
	return i > 0 && i < 256 && s[0] != '.' && s[i - 1] != '.';
}

/* Where the certificates come from decides which files are needed. */
static void check_cert_source(const struct config_mtls *m, struct config_errors *errs)
{
	const char *files = "when mtls.enabled is true and mtls.cert_source is files";
	const char *builtin = "when mtls.enabled is true and mtls.cert_source is builtin_ca";

	switch (m->cert_source) {
	case CONFIG_CERT_FILES:
		need(errs, m->ca_file, "mtls.ca_file", files, "an absolute path");
		need(errs, m->cert_dir, "mtls.cert_dir", files, "an absolute path");
		break;
	case CONFIG_CERT_BUILTIN_CA:
		need(errs, m->ca_file, "mtls.ca_file", builtin, "an absolute path");
		need(errs, m->ca_key_file, "mtls.ca_key_file", builtin, "an absolute path");
		break;
	case CONFIG_CERT_CONSUL:
		break; /* the agent's address: check_consul_agent() */
	}
}

/* Whether the mTLS side reads the Consul agent (Connect CA, intentions). */
static bool mtls_uses_consul(const struct mesh_config *cfg)
{
	return cfg->mtls.enabled &&
	       (cfg->mtls.cert_source == CONFIG_CERT_CONSUL || cfg->authz_intentions);
}

/* The keys of `discovery.consul` that say how to reach the agent. */
static bool agent_key(const char *path)
{
	static const char *const keys[] = {
		"discovery.consul.address",    "discovery.consul.datacenter",
		"discovery.consul.token_file", "discovery.consul.ca_file",
		"discovery.consul.wait",       NULL
	};

	for (size_t i = 0; keys[i]; i++)
		if (!strcmp(path, keys[i]))
			return true;
	return false;
}

/* The origin of root key `path` (ORIGIN_DEFAULT when unknown). */
static int origin_of(const struct mesh_config *cfg, const char *path)
{
	for (size_t i = 0; cfg->meta && i < cfg_root_desc.n_keys; i++)
		if (!strcmp(cfg_root_desc.keys[i].path, path))
			return cfg->meta->root->origin[i] & ~ORIGIN_INHERITED;
	return ORIGIN_DEFAULT;
}

/* Connect CA and intentions need the agent; Consul's CA names the trust domain itself. */
static const char *not_yet_got(const struct cfg_key *k, const void *base, char *buf, size_t len);

/* With Consul's CA the trust domain and every certificate come from Consul: the keys naming
 * them would do nothing. */
static void check_consul_unused(const struct mesh_config *cfg, struct config_errors *errs)
{
	static const struct {
		const char *path, *what;
	} keys[] = {
		{ "mtls.trust_domain", "the trust domain is Consul's <cluster-id>.consul" },
		{ "mtls.ca_file", "the trust bundle is Consul's roots" },
		{ "mtls.ca_key_file", "Consul signs the leaves" },
		{ "mtls.cert_dir", "the leaves come from Consul" },
	};
	const struct cfg_key *k;
	char got[160];

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (origin_of(cfg, keys[i].path) < ORIGIN_FILE ||
		    !(k = cfg_find_key(&cfg_root_desc, keys[i].path, NULL)))
			continue;
		cfg_errf(errs,
			 "%s: unused with mtls.cert_source consul (got %s, expected it unset: %s)",
			 keys[i].path, not_yet_got(k, cfg, got, sizeof(got)), keys[i].what);
	}
}

static void check_consul_agent(const struct mesh_config *cfg, struct config_errors *errs)
{
	const char *why = cfg->mtls.cert_source == CONFIG_CERT_CONSUL
			      ? "when mtls.cert_source is consul"
			      : "when authorization.intentions is true";

	if (!mtls_uses_consul(cfg))
		return;
	need(errs, cfg->consul.address != NULL, "discovery.consul.address", why,
	     "the Consul agent's URL, e.g. http://127.0.0.1:8500");
	if (cfg->mtls.cert_source == CONFIG_CERT_CONSUL)
		check_consul_unused(cfg, errs);
}

static void check_mtls(const struct mesh_config *cfg, struct config_errors *errs)
{
	const struct config_mtls *m = &cfg->mtls;
	char ep[64];

	if (!m->enabled)
		return;
	check_cert_source(m, errs);
	check_consul_agent(cfg, errs);
	if (!m->trust_domain || !valid_domain(m->trust_domain))
		cfg_errf(
		    errs,
		    "mtls.trust_domain: invalid trust domain (got \"%s\", expected a lowercase "
		    "domain like mesh.local)",
		    m->trust_domain ? m->trust_domain : "");
	/* connect4 rewrites an IPv4 destination (IPv6 sockets reach it v4-mapped). */
	if (m->outbound_listen.family != AF_INET || !m->outbound_listen.port)
		cfg_errf(errs,
			 "mtls.outbound_listen: not an IPv4 address with a port (got %s, expected "
			 "an IPv4 ip:port such as 127.0.0.1:15001)",
			 config_endpoint_str(&m->outbound_listen, ep, sizeof(ep)));
	if (!m->inbound_listen.port)
		cfg_errf(errs,
			 "mtls.inbound_listen: no port (got %s, expected ip:port with a port)",
			 config_endpoint_str(&m->inbound_listen, ep, sizeof(ep)));
	if (!memcmp(&m->outbound_listen, &m->inbound_listen, sizeof(m->inbound_listen)))
		cfg_errf(errs,
			 "mtls.inbound_listen: same as mtls.outbound_listen (got %s, expected a "
			 "different address or port)",
			 config_endpoint_str(&m->inbound_listen, ep, sizeof(ep)));
}

/* True when cgroup path `inner` lies strictly below `outer`. */
static bool cgroup_below(const char *inner, const char *outer)
{
	size_t n = strlen(outer);

	while (n > 1 && outer[n - 1] == '/')
		n--;
	return !strncmp(inner, outer, n) && inner[n] == '/' && inner[n + 1];
}

/* An identity covers its cgroup's whole subtree, so a nested one could never apply. */
static void check_nesting(const struct mesh_config *cfg, size_t i, struct config_errors *errs)
{
	const struct config_identity *id = &cfg->identities[i];

	for (size_t j = 0; j < cfg->n_identities; j++) {
		const char *outer = cfg->identities[j].cgroup;

		if (j != i && id->cgroup && outer && cgroup_below(id->cgroup, outer))
			cfg_errf(errs,
				 "identities[%zu].cgroup: inside identities[%zu].cgroup, whose "
				 "identity covers its whole subtree (got \"%s\", expected a cgroup "
				 "outside \"%s\")",
				 i, j, id->cgroup, outer);
	}
}

/* A port serves one service: the inbound listener decides the destination by it. */
static void check_ports(const struct mesh_config *cfg, size_t i, struct config_errors *errs)
{
	const struct config_identity *id = &cfg->identities[i];

	for (size_t p = 0; p < id->n_ports; p++) {
		for (size_t j = 0; j < i; j++) {
			const struct config_identity *o = &cfg->identities[j];

			for (size_t q = 0; q < o->n_ports; q++)
				if (o->ports[q] == id->ports[p] && id->service && o->service &&
				    strcmp(o->service, id->service))
					cfg_errf(
					    errs,
					    "identities[%zu].ports[%zu]: port already serves "
					    "identities[%zu].service \"%s\" (got %u, expected a "
					    "port of no other service)",
					    i, p, j, o->service, id->ports[p]);
		}
	}
}

/* Also fills `local` with every identity's service (rules may name them as destinations). */
static void check_identities(const struct mesh_config *cfg, struct blobset *local,
			     struct config_errors *errs)
{
	struct blobset cgroups;
	size_t i, prev;

	if (blobset_init(&cgroups, cfg->n_identities))
		return;
	for (i = 0; i < cfg->n_identities; i++) {
		const struct config_identity *id = &cfg->identities[i];

		if (id->service)
			blobset_add(local, id->service, strlen(id->service), i);
		if (id->cgroup &&
		    (prev = blobset_add(&cgroups, id->cgroup, strlen(id->cgroup), i)) != SIZE_MAX)
			cfg_errf(errs,
				 "identities[%zu].cgroup: duplicate cgroup (got \"%s\", expected a "
				 "cgroup not used by identities[%zu])",
				 i, id->cgroup, prev);
		check_nesting(cfg, i, errs);
		check_ports(cfg, i, errs);
	}
	free(cgroups.slots);
}

/* Sources are remote identities, unknown here: any service name. Destinations are services
 * this host serves (identities) or calls (services). */
static void check_rules(const struct mesh_config *cfg, const struct blobset *known,
			struct config_errors *errs)
{
	size_t i;

	for (i = 0; i < cfg->n_authz_rules; i++) {
		const struct config_authz_rule *r = &cfg->authz_rules[i];

		if (r->source && strcmp(r->source, "*") && !cfg_is_dns_label(r->source))
			cfg_errf(errs,
				 "authorization.rules[%zu].source: invalid service name (got "
				 "\"%.64s\", expected * or a lowercase DNS label)",
				 i, r->source);
		if (r->destination && strcmp(r->destination, "*") &&
		    !blobset_has(known, r->destination))
			cfg_errf(errs,
				 "authorization.rules[%zu].destination: unknown service (got "
				 "\"%.64s\", expected *, a service of identities or the name of an "
				 "entry of services)",
				 i, r->destination);
	}
}

/* Whether key `k` of `base` holds its default; `want` gets the default as problem lines show
 * it. Compared rendered, so "300s" equals "5m"; lists' default is empty. */
static bool is_default(const struct cfg_key *k, const void *base, char *want, size_t len)
{
	char scratch[sizeof(struct config_endpoint) + sizeof(char *)] = { 0 }, got[4096], def[256];
	struct config_errors ignore = { 0 };
	struct cfg_in in = { .text = k->def };
	struct cfg_key k0 = *k;

	if (k->type >= CT_STRLIST) {
		snprintf(want, len, "[]");
		return *(const size_t *)((const char *)base + k->count_off) == 0;
	}
	cfg_render(k, base, got, sizeof(got));
	k0.off = 0;
	if (k->def_from) /* a root key defaulting to another one's value */
		k0 = *cfg_find_key(&cfg_root_desc, k->def_from, NULL);
	else if (in.text)
		cfg_set(&k0, scratch, &in, k->path, &ignore);
	config_errors_free(&ignore);
	cfg_render(&k0, k->def_from ? base : scratch, def, sizeof(def));
	if (!k->def_from)
		cfg_free_value(&k0, scratch);
	snprintf(want, len, !*def ? "unset" : k->type >= CT_STRING ? "\"%s\"" : "%s", def);
	return !strcmp(got, def);
}

/* Whether key `k` of `base` holds a value `k->not_yet` refuses; `want` gets what is allowed. */
static bool not_yet_refused(const struct cfg_key *k, const void *base, char *want, size_t len)
{
	char got[128];
	size_t i, pos;

	if (!k->not_yet_value)
		return !is_default(k, base, want, len);
	for (i = pos = 0; k->names && k->names[i] && pos < len; i++)
		if (strcmp(k->names[i], k->not_yet_value))
			pos += (size_t)snprintf(want + pos, len - pos, "%s%s",
						pos ? "|" : "one of ", k->names[i]);
	return !strcmp(cfg_render(k, base, got, sizeof(got)), k->not_yet_value);
}

/* The refused value as the problem line shows it: text types quoted, lists by their size. */
static const char *not_yet_got(const struct cfg_key *k, const void *base, char *buf, size_t len)
{
	char val[128];

	if (k->type == CT_LIST) {
		size_t n = *(const size_t *)((const char *)base + k->count_off);

		snprintf(buf, len, "%zu %s", n, n == 1 ? "entry" : "entries");
		return buf;
	}
	cfg_render(k, base, val, sizeof(val));
	snprintf(buf, len, k->type >= CT_STRING ? "\"%s\"" : "%s", val);
	return buf;
}

/* Keys of one object (`name` NULL: the root, else service `si` of that name) that are not built
 * yet and hold anything but what they allow. Inherited service values were checked globally. */
static void check_not_yet_object(const struct cfg_desc *d, const void *base, const uint8_t *origin,
				 const char *name, size_t si, struct config_errors *errs)
{
	char want[256], got[160], var[256], full[200], prefix[40] = "";
	size_t i;

	if (name)
		snprintf(prefix, sizeof(prefix), "services[%zu].", si);
	for (i = 0; i < d->n_keys; i++) {
		const struct cfg_key *k = &d->keys[i];
		bool env = origin && origin[i] == ORIGIN_ENV;

		if (!k->not_yet || (origin && (origin[i] & ORIGIN_INHERITED)) ||
		    !not_yet_refused(k, base, want, sizeof(want)))
			continue;
		snprintf(full, sizeof(full), "%s%s%s%s", name ? "services." : "", name ? name : "",
			 name ? "." : "", k->path);
		cfg_errf(errs, "%s%s: not supported yet%s%s: %s (got %s, expected %s)", prefix,
			 k->path, env ? " in " : "",
			 env ? cfg_env_name("", full, var, sizeof(var)) : "", k->not_yet,
			 not_yet_got(k, base, got, sizeof(got)), want);
	}
}

/* Keys of a discovery backend's section (`discovery.<backend>.*`) set while another backend is
 * chosen would do nothing: refused, naming the backend that uses them. */
static void check_unused_discovery(const struct mesh_config *cfg, struct config_errors *errs)
{
	const struct cfg_key *sel = cfg_find_key(&cfg_root_desc, "discovery.backend", NULL);
	const uint8_t *origin = cfg->meta ? cfg->meta->root->origin : NULL;
	char want[256], got[160], section[64];
	size_t i, b;

	for (b = 0; sel && origin && sel->names[b]; b++) {
		if ((int)b == (int)cfg->discovery)
			continue;
		snprintf(section, sizeof(section), "discovery.%s.", sel->names[b]);
		for (i = 0; i < cfg_root_desc.n_keys; i++) {
			const struct cfg_key *k = &cfg_root_desc.keys[i];

			if (strncmp(k->path, section, strlen(section)) || k->not_yet ||
			    (k->flags & CF_ANY_BACKEND) ||
			    ((mtls_uses_consul(cfg) || cfg->config_kv_key) && agent_key(k->path)) ||
			    (origin[i] & ORIGIN_INHERITED) || origin[i] < ORIGIN_FILE ||
			    is_default(k, cfg, want, sizeof(want)))
				continue;
			cfg_errf(errs,
				 "%s: unused with discovery.backend %s (got %s, expected it only "
				 "with discovery.backend %s, or %s)",
				 k->path, sel->names[cfg->discovery],
				 not_yet_got(k, cfg, got, sizeof(got)), sel->names[b], want);
		}
	}
}

bool cfg_gate_off(const struct cfg_key *k, const struct mesh_config *cfg)
{
	const struct cfg_key *sw = k->gate ? cfg_find_key(&cfg_root_desc, k->gate, NULL) : NULL;
	char want[256];

	return sw && is_default(sw, cfg, want, sizeof(want));
}

/* A key set to anything but its default while its switch (cfg_key.gate) is off would do
 * nothing: refused, naming the switch. Only values set by the file, Consul KV or the
 * environment: a preset's value under a switch the user turned off is not the user's. */
static void check_gated(const struct mesh_config *cfg, struct config_errors *errs)
{
	const uint8_t *origin = cfg->meta ? cfg->meta->root->origin : NULL;
	char want[256], got[160];

	for (size_t i = 0; origin && i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i], *sw;

		if (!k->gate || origin[i] < ORIGIN_FILE || is_default(k, cfg, want, sizeof(want)) ||
		    !cfg_gate_off(k, cfg))
			continue;
		sw = cfg_find_key(&cfg_root_desc, k->gate, NULL);
		cfg_errf(errs,
			 "%s: unused while %s is %s (got %s, expected it only with %s %s, or %s)",
			 k->path, sw->path, sw->type == CT_BOOL ? "false" : "unset",
			 not_yet_got(k, cfg, got, sizeof(got)), sw->path,
			 sw->type == CT_BOOL ? "true" : "set", want);
	}
}

/* Every key the table marks `not_yet`, globally and per service. */
static void check_not_yet(const struct mesh_config *cfg, struct config_errors *errs)
{
	const struct cfg_node *svcs = cfg->meta ? cfg_root_list(cfg, "services") : NULL;
	size_t i;

	check_not_yet_object(&cfg_root_desc, cfg, cfg->meta ? cfg->meta->root->origin : NULL, NULL,
			     0, errs);
	for (i = 0; i < cfg->n_services; i++)
		check_not_yet_object(&cfg_service_desc, &cfg->services[i],
				     svcs ? svcs[i].origin : NULL,
				     cfg->services[i].name ? cfg->services[i].name : "", i, errs);
}

/* Secrets live in files that only their owner (and group) may read. */
static void check_secrets(const struct mesh_config *cfg, struct config_errors *errs)
{
	const char *rule = "an existing regular file with no access for others, e.g. mode 0600";
	size_t i;

	for (i = 0; i < cfg_root_desc.n_keys; i++) {
		const struct cfg_key *k = &cfg_root_desc.keys[i];
		const char *path;
		struct stat st;

		if (!(k->flags & CF_SECRET))
			continue;
		path = *(char *const *)((const char *)cfg + k->off);
		if (!path)
			continue;
		if (stat(path, &st))
			cfg_errf(errs,
				 "%s: secret file cannot be used: %s (got \"%s\", expected %s)",
				 k->path, strerror(errno), path, rule);
		else if (!S_ISREG(st.st_mode))
			cfg_errf(errs,
				 "%s: secret file is not a regular file (got \"%s\", expected %s)",
				 k->path, path, rule);
		else if (st.st_mode & (S_IROTH | S_IWOTH))
			cfg_errf(errs,
				 "%s: secret file is world-readable (got \"%s\" with mode %04o, "
				 "expected %s)",
				 k->path, path, (unsigned)(st.st_mode & 07777), rule);
	}
}

/* What the datapath holds: the services and backends (over all services; backend id 0 is never
 * used) of the maps meshd creates (datapath.max_services, datapath.max_backends), and backends
 * per service (include/mesh_abi.h). A config beyond them used to validate and then fail to start
 * (E2BIG, ENOSPC); the problem names the limit. Discovered backends are not known here. */
static void check_limits(const struct mesh_config *cfg, struct config_errors *errs)
{
	size_t i, total = 0;

	if (cfg->n_services > cfg->datapath_max_services)
		cfg_errf(errs,
			 "services: too many services for the datapath (got %zu, expected at most "
			 "%u, datapath.max_services)",
			 cfg->n_services, cfg->datapath_max_services);
	for (i = 0; i < cfg->n_services; i++) {
		total += cfg->services[i].n_backends;
		if (cfg->services[i].n_backends > MESH_MAX_BACKENDS_PER_SVC)
			cfg_errf(errs,
				 "services[%zu].backends: too many backends for one service (got "
				 "%zu, expected at most %u, MESH_MAX_BACKENDS_PER_SVC)",
				 i, cfg->services[i].n_backends,
				 (unsigned)MESH_MAX_BACKENDS_PER_SVC);
	}
	if (cfg->datapath_max_backends && total > cfg->datapath_max_backends - 1)
		cfg_errf(errs,
			 "services: too many backends for the datapath (got %zu in all services, "
			 "expected at most %u, datapath.max_backends - 1)",
			 total, cfg->datapath_max_backends - 1);
}

void cfg_validate(const struct mesh_config *cfg, struct config_errors *errs)
{
	struct blobset names = { 0 }, known = { 0 };
	struct policy_keys pk;
	size_t i;

	policy_keys(&cfg_root_desc, &pk);
	check_policy(&pk, cfg, NULL, SIZE_MAX, &cfg->load_balancer, errs);
	if (blobset_init(&names, cfg->n_services) ||
	    blobset_init(&known, cfg->n_services + cfg->n_identities)) {
		cfg_errf(errs, "(config): out of memory (got ENOMEM, expected memory)");
		goto out;
	}
	check_services(cfg, &names, errs);
	for (i = 0; i < cfg->n_services; i++)
		if (cfg->services[i].name)
			blobset_add(&known, cfg->services[i].name, strlen(cfg->services[i].name),
				    i);
	check_discovery(cfg, &names, errs);
	check_config_source(cfg, errs);
	check_mtls(cfg, errs);
	check_identities(cfg, &known, errs);
	check_rules(cfg, &known, errs);
	check_secrets(cfg, errs);
	check_not_yet(cfg, errs);
	check_unused_discovery(cfg, errs);
	check_gated(cfg, errs);
	check_limits(cfg, errs);
out:
	free(names.slots);
	free(known.slots);
}
