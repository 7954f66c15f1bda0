/* Registration of local services in the Consul agent: the request bodies and URLs (pure, built
 * with cJSON for Consul JSON only). The watcher thread sends them (consul_watch.c). */
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

/* The agent's TCP check on the registered address: Consul drops the instance from ?passing while
 * it is down and reaps it after `deregister_critical_after`. */
static cJSON *check_json(const struct consul_registration *r)
{
	char hostport[INET6_ADDRSTRLEN + 8], after[32], id[CONSUL_ID_MAX + 16], name[96];
	cJSON *c = cJSON_CreateObject();

	format_hostport(&r->endpoint, hostport, sizeof(hostport));
	snprintf(id, sizeof(id), "service:%s", r->id);
	snprintf(name, sizeof(name), "meshd TCP check %s", hostport);
	cJSON_AddStringToObject(c, "CheckID", id);
	cJSON_AddStringToObject(c, "Name", name);
	cJSON_AddStringToObject(c, "TCP", hostport);
	cJSON_AddStringToObject(c, "Interval", "10s");
	cJSON_AddStringToObject(c, "Timeout", "2s");
	if (r->deregister_critical_after_ns) {
		format_duration(r->deregister_critical_after_ns, after, sizeof(after));
		cJSON_AddStringToObject(c, "DeregisterCriticalServiceAfter", after);
	}
	return c;
}

char *consul_registration_json(const struct consul_registration *r)
{
	char ip[INET6_ADDRSTRLEN];
	cJSON *root, *meta;
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
	cJSON_AddStringToObject(root, "Address", ip);
	cJSON_AddNumberToObject(root, "Port", r->endpoint.port);
	meta = cJSON_AddObjectToObject(root, "Meta");
	if (meta)
		cJSON_AddStringToObject(meta, "managed-by", "meshd");
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
