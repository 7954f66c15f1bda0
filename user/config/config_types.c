/* Text forms of configuration values: durations ("1m30s"), endpoints ("ip:port", "[ip6]:port"),
 * Consul URLs, DNS labels, MESH_* variable names, and the edit distance behind "did you mean".
 * Pure functions, no allocation, safe from any thread. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/strbuf.h"
#include "config/config_int.h"

static const struct {
	const char *name;
	uint64_t ns;
} units[] = {
	{ "h", 3600000000000ull }, { "m", 60000000000ull }, { "s", 1000000000ull },
	{ "ms", 1000000ull },	   { "us", 1000ull },	    { "ns", 1ull },
};

#define N_UNITS (sizeof(units) / sizeof(units[0]))

/* Matches the longest unit name at `s`; returns its index or -1. */
static int match_unit(const char *s, size_t *len)
{
	size_t n = 0;
	int i;

	while (isalpha((unsigned char)s[n]))
		n++;
	for (i = 0; i < (int)N_UNITS; i++) {
		if (strlen(units[i].name) == n && !strncmp(s, units[i].name, n)) {
			*len = n;
			return i;
		}
	}
	return -1;
}

int config_parse_duration(const char *s, uint64_t *ns)
{
	uint64_t total = 0;

	if (!s || !*s)
		return -EINVAL;
	if (!strcmp(s, "0")) {
		*ns = 0;
		return 0;
	}
	while (*s) {
		uint64_t v = 0;
		size_t ulen;
		int u;

		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		while (isdigit((unsigned char)*s)) {
			if (v > (UINT64_MAX - 9) / 10)
				return -EINVAL;
			v = v * 10 + (uint64_t)(*s++ - '0');
		}
		u = match_unit(s, &ulen);
		if (u < 0 || (v && units[u].ns > UINT64_MAX / v) ||
		    v * units[u].ns > UINT64_MAX - total)
			return -EINVAL;
		total += v * units[u].ns;
		s += ulen;
	}
	*ns = total;
	return 0;
}

const char *cfg_duration_str(uint64_t ns, char *buf, size_t len)
{
	unsigned long long h, m, sec;
	size_t pos = 0;

	if (ns % 1000000000ull) {
		int u = ns % 1000000ull == 0 ? 3 : ns % 1000ull == 0 ? 4 : 5;

		snprintf(buf, len, "%llu%s", (unsigned long long)(ns / units[u].ns), units[u].name);
		return buf;
	}
	sec = ns / 1000000000ull;
	h = sec / 3600;
	m = sec / 60 % 60;
	sec %= 60;
	buf[0] = '\0';
	if (h)
		pos += (size_t)snprintf(buf + pos, len - pos, "%lluh", h);
	if (m && pos < len)
		pos += (size_t)snprintf(buf + pos, len - pos, "%llum", m);
	if ((sec || (!h && !m)) && pos < len)
		snprintf(buf + pos, len - pos, "%llus", sec);
	return buf;
}

/* Parses a decimal port 1..65535 filling all of `s`. */
static int parse_port(const char *s, uint16_t *port)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < 1 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/* The dotted quads inet_pton accepts (four numbers 0..255, no leading zeros), without its
 * per-character table walk: the loader parses one per backend. Anything else goes on to
 * inet_pton, so the accepted forms stay exactly its own. */
static bool parse_ipv4(const char *s, struct in_addr *out)
{
	uint8_t b[4];
	int i, v, digits;

	for (i = 0; i < 4; i++) {
		if (i && *s++ != '.')
			return false;
		for (v = 0, digits = 0; *s >= '0' && *s <= '9'; s++, digits++) {
			if (digits && !v)
				return false; /* a leading zero */
			v = v * 10 + (*s - '0');
			if (v > 255)
				return false;
		}
		if (!digits)
			return false;
		b[i] = (uint8_t)v;
	}
	if (*s)
		return false;
	memcpy(out, b, sizeof(b));
	return true;
}

int config_parse_address(const char *s, struct config_endpoint *ep)
{
	if (s && (parse_ipv4(s, &ep->addr.v4) || inet_pton(AF_INET, s, &ep->addr.v4) == 1)) {
		ep->family = AF_INET;
		return 0;
	}
	if (s && inet_pton(AF_INET6, s, &ep->addr.v6) == 1) {
		ep->family = AF_INET6;
		return 0;
	}
	return -EINVAL;
}

int config_parse_endpoint(const char *s, struct config_endpoint *ep)
{
	struct config_endpoint tmp = { 0 };
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	size_t n;

	if (!s)
		return -EINVAL;
	if (s[0] == '[') {
		colon = strstr(s, "]:");
		if (!colon || (n = (size_t)(colon - s - 1)) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		if (inet_pton(AF_INET6, host, &tmp.addr.v6) != 1)
			return -EINVAL;
		tmp.family = AF_INET6;
		colon++;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (n = (size_t)(colon - s)) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = '\0';
		if (!parse_ipv4(host, &tmp.addr.v4) && inet_pton(AF_INET, host, &tmp.addr.v4) != 1)
			return -EINVAL;
		tmp.family = AF_INET;
	}
	if (parse_port(colon + 1, &tmp.port))
		return -EINVAL;
	*ep = tmp;
	return 0;
}

const char *config_endpoint_str(const struct config_endpoint *ep, char *buf, size_t len)
{
	const unsigned char *b = (const unsigned char *)&ep->addr.v4;
	char ip[INET6_ADDRSTRLEN] = "?", *p = buf;
	int i;

	/* IPv4 by hand: inet_ntop and snprintf cost more than the rest of a backend's samples on
	 * /metrics, which renders one per backend per scrape. */
	if (ep->family == AF_INET && len >= sizeof("255.255.255.255:65535")) {
		for (i = 0; i < 4; i++) {
			p += fmt_u64(p, b[i]);
			*p++ = i < 3 ? '.' : ':';
		}
		p[fmt_u64(p, ep->port)] = '\0';
		return buf;
	}
	if (ep->family == AF_INET6) {
		inet_ntop(AF_INET6, &ep->addr.v6, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ep->port);
	} else if (ep->family == AF_INET) {
		inet_ntop(AF_INET, &ep->addr.v4, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ep->port);
	} else {
		snprintf(buf, len, "%s", "");
	}
	return buf;
}

const char *config_address_str(const struct config_endpoint *ep, char *buf, size_t len)
{
	buf[0] = '\0';
	if (ep->family == AF_INET || ep->family == AF_INET6)
		inet_ntop(ep->family, &ep->addr, buf, (socklen_t)len);
	return buf;
}

int config_parse_url(const char *s)
{
	const char *host, *end;
	uint16_t port;
	char pbuf[8];
	size_t n;

	if (!strncmp(s, "http://", 7))
		host = s + 7;
	else if (!strncmp(s, "https://", 8))
		host = s + 8;
	else
		return -EINVAL;
	if (*host == '[') {
		end = strchr(host, ']');
		if (!end || end == host + 1)
			return -EINVAL;
		end++;
	} else {
		end = host;
		while (isalnum((unsigned char)*end) || *end == '.' || *end == '-' || *end == '_')
			end++;
		if (end == host)
			return -EINVAL;
	}
	if (*end == ':') {
		n = strcspn(end + 1, "/");
		if (n == 0 || n >= sizeof(pbuf))
			return -EINVAL;
		memcpy(pbuf, end + 1, n);
		pbuf[n] = '\0';
		if (parse_port(pbuf, &port))
			return -EINVAL;
		end += 1 + n;
	}
	if (*end && *end != '/')
		return -EINVAL;
	for (; *end; end++)
		if ((unsigned char)*end <= ' ' || *end == 0x7f)
			return -EINVAL;
	return 0;
}

int cfg_is_dns_label(const char *s)
{
	size_t i, n = strlen(s);

	if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return 0;
	return 1;
}

int config_is_dns_label(const char *s)
{
	return s && cfg_is_dns_label(s);
}

const char *cfg_env_name(const char *prefix, const char *path, char *buf, size_t len)
{
	size_t pos = (size_t)snprintf(buf, len, "MESH_%s", prefix);

	for (; *path && pos + 3 < len; path++) {
		if (*path == '.') {
			buf[pos++] = '_';
			buf[pos++] = '_';
		} else if (*path == '-') {
			buf[pos++] = '_';
		} else {
			buf[pos++] = (char)toupper((unsigned char)*path);
		}
	}
	buf[pos < len ? pos : len - 1] = '\0';
	return buf;
}

size_t cfg_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	size_t row[64];

	if (la >= 63 || lb >= 63)
		return 99;
	for (j = 0; j <= lb; j++)
		row[j] = j;
	for (i = 1; i <= la; i++) {
		size_t diag = row[0], up;

		row[0] = i;
		for (j = 1; j <= lb; j++) {
			size_t best = diag + (a[i - 1] != b[j - 1]);

			up = row[j];
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}
