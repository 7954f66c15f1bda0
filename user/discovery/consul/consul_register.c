/* Registration of local services in the Consul agent: the request bodies (tags, meta, Connect
 * native, one tcp/http/ttl check) and URLs (pure, built with cJSON for Consul JSON only). The watcher thread sends them (consul_watch.c). */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

/* Go duration text for Consul: whole seconds when exact, else milliseconds. */
static void format_duration(uint64_t ns, char *buf, size_t len)
{
	if (ns % 1000000000ull == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(ns / 1000000000ull));
	else
		snprintf(buf, len, "%llums", (unsigned long long)((ns + 999999) / 1000000));
}

static void format_hostport(const struct config_endpoint *ep, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(ep->family, &ep->addr, ip, sizeof(ip));
	if (ep->family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", ip, ep->port);
	else
		snprintf(buf, len, "%s:%u", ip, ep->port);
}

void consul_check_id(const char *id, char *buf, size_t len)
{
	snprintf(buf, len, "service:%s", id);
}

/* The one check of the registration: the agent's TCP or HTTP probe of the registered address,
 * or a TTL check meshd reports on. Consul drops the instance from ?passing while it is not
 * passing and reaps it after `deregister_critical_after`. Field names as api.AgentServiceCheck. */
static cJSON *check_json(const struct consul_registration *r)
{
	char hostport[INET6_ADDRSTRLEN + 8], dur[32], id[CONSUL_ID_MAX + 16], name[160];
	char url[INET6_ADDRSTRLEN + 8 + 512];
	cJSON *c = cJSON_CreateObject();

	if (!c)
		return NULL;
	format_hostport(&r->endpoint, hostport, sizeof(hostport));
	consul_check_id(r->id, id, sizeof(id));
	cJSON_AddStringToObject(c, "CheckID", id);
	format_duration(r->interval_ns ? r->interval_ns : 10000000000ull, dur, sizeof(dur));
	switch (r->check) {
	case CONFIG_CONSUL_CHECK_TTL:
		snprintf(name, sizeof(name), "meshd TTL check %s", hostport);
		cJSON_AddStringToObject(c, "Name", name);
		cJSON_AddStringToObject(c, "TTL", dur);
		break;
	case CONFIG_CONSUL_CHECK_HTTP:
		snprintf(name, sizeof(name), "meshd HTTP check %s", hostport);
		snprintf(url, sizeof(url), "http://%s%s", hostport,
			 r->http_path && r->http_path[0] ? r->http_path : "/");
		cJSON_AddStringToObject(c, "Name", name);
		cJSON_AddStringToObject(c, "HTTP", url);
		cJSON_AddStringToObject(c, "Method", "GET");
		cJSON_AddStringToObject(c, "Interval", dur);
		break;
	default:
		snprintf(name, sizeof(name), "meshd TCP check %s", hostport);
		cJSON_AddStringToObject(c, "Name", name);
		cJSON_AddStringToObject(c, "TCP", hostport);
		cJSON_AddStringToObject(c, "Interval", dur);
		break;
	}
	if (r->check != CONFIG_CONSUL_CHECK_TTL) {
		format_duration(r->timeout_ns ? r->timeout_ns : 2000000000ull, dur, sizeof(dur));
		cJSON_AddStringToObject(c, "Timeout", dur);
	}
	if (r->deregister_critical_after_ns) {
		format_duration(r->deregister_critical_after_ns, dur, sizeof(dur));
		cJSON_AddStringToObject(c, "DeregisterCriticalServiceAfter", dur);
	}
	return c;
}

/* The user's key=value pairs (validated by the config), then meshd's own. */
static void add_meta(cJSON *root, const struct consul_registration *r)
{
	cJSON *meta = cJSON_AddObjectToObject(root, "Meta");
	char key[130], port[8];

	if (!meta)
		return;
	for (size_t i = 0; i < r->n_meta; i++) {
		const char *eq = strchr(r->meta[i], '=');
		size_t klen = eq ? (size_t)(eq - r->meta[i]) : 0;

		if (!klen || klen >= sizeof(key))
			continue;
		memcpy(key, r->meta[i], klen);
		key[klen] = '\0';
		cJSON_AddStringToObject(meta, key, eq + 1);
	}
	cJSON_AddStringToObject(meta, "managed-by", "meshd");
	if (r->mesh_port) {
		snprintf(port, sizeof(port), "%u", r->mesh_port);
		cJSON_AddStringToObject(meta, "mesh-port", port);
	}
}

char *consul_registration_json(const struct consul_registration *r)
{
	char ip[INET6_ADDRSTRLEN];
	cJSON *root, *tags, *connect;
	char *text;

	if (!r->id || !r->name || strlen(r->id) > CONSUL_ID_MAX) {
		errno = EINVAL;
		return NULL;
	}
	inet_ntop(r->endpoint.family, &r->endpoint.addr, ip, sizeof(ip));
	root = cJSON_CreateObject();
	if (!root)
		return NULL;
	cJSON_AddStringToObject(root, "ID", r->id);
	cJSON_AddStringToObject(root, "Name", r->name);
	tags = cJSON_AddArrayToObject(root, "Tags");
	for (size_t i = 0; tags && i < r->n_tags; i++)
		cJSON_AddItemToArray(tags, cJSON_CreateString(r->tags[i]));
	cJSON_AddStringToObject(root, "Address", ip);
	cJSON_AddNumberToObject(root, "Port", r->endpoint.port);
	add_meta(root, r);
	connect = cJSON_AddObjectToObject(root, "Connect"); /* a mesh service to Consul's UI */
	if (connect)
		cJSON_AddTrueToObject(connect, "Native");
	cJSON_AddItemToObject(root, "Check", check_json(r));
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!text)
		errno = ENOMEM;
	return text;
}

int consul_agent_url(char *buf, size_t len, const char *address, const char *path, const char *id)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t alen = strlen(address), pos;
	int n;

	while (alen && address[alen - 1] == '/')
		alen--;
	n = snprintf(buf, len, "%.*s%s", (int)alen, address, path);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	pos = (size_t)n;
	for (; id && *id; id++) {
		unsigned char c = (unsigned char)*id;
		bool plain = isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == ':';

		if (pos + 4 > len)
			return -ENAMETOOLONG;
		if (plain) {
			buf[pos++] = (char)c;
			continue;
		}
		buf[pos++] = '%';
		buf[pos++] = hex[c >> 4];
		buf[pos++] = hex[c & 15];
	}
	buf[pos] = '\0';
	return (int)pos;
}
