/* Pure pieces of the Consul client: the X-Consul-Index rules, the loop's token bucket and
 * backoff, URL and wait formatting (health answers are parsed by consul_stream.c). No I/O except
 * consul_read_token(); safe on any thread. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "discovery/consul/consul.h"

uint64_t consul_next_index(uint64_t prev, const char *hdr)
{
	unsigned long long v;
	char *end;

	if (!hdr || !isdigit((unsigned char)hdr[0]))
		return 1; /* missing, negative or garbage: treat as <= 0 */
	errno = 0;
	v = strtoull(hdr, &end, 10);
	if (errno || *end || v == 0)
		return 1;
	if (v < prev)
		return 0;
	return v;
}

bool consul_header_index(const char *line, size_t len, char *val, size_t val_len)
{
	static const char name[] = "x-consul-index:";
	size_t n = sizeof(name) - 1, i;

	if (len < n || strncasecmp(line, name, n) != 0 || !val_len)
		return false;
	line += n;
	len -= n;
	while (len && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	while (len && isspace((unsigned char)line[len - 1]))
		len--;
	for (i = 0; i < len && i + 1 < val_len; i++)
		val[i] = line[i];
	val[i] = '\0';
	return true;
}

uint64_t consul_bucket_take(struct consul_bucket *b, uint64_t now_ns, uint32_t burst,
			    uint64_t period_ns)
{
	if (!b->primed || now_ns < b->last_ns) {
		b->tokens = burst;
		b->last_ns = now_ns;
		b->primed = true;
	}
	b->tokens += (double)(now_ns - b->last_ns) / (double)period_ns;
	if (b->tokens > burst)
		b->tokens = burst;
	b->last_ns = now_ns;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return 0;
	}
	return (uint64_t)((1.0 - b->tokens) * (double)period_ns) + 1;
}

uint64_t consul_backoff_ns(unsigned failures, uint64_t base_ns, uint64_t max_ns, uint32_t rnd)
{
	uint64_t d = base_ns;
	unsigned i;

	for (i = 1; i < failures && d < max_ns; i++)
		d *= 2;
	if (d > max_ns)
		d = max_ns;
	return d - (d / 4) * rnd / UINT32_MAX;
}

void consul_format_wait(uint64_t ns, char *buf, size_t len)
{
	if (ns > CONSUL_MAX_WAIT_NS)
		ns = CONSUL_MAX_WAIT_NS;
	if (ns % 1000000000ull == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(ns / 1000000000ull));
	else
		snprintf(buf, len, "%llums", (unsigned long long)((ns + 999999) / 1000000));
}

/* Appends `s` percent-encoded (RFC 3986 unreserved characters kept). */
static int put_escaped(char *buf, size_t len, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';

		if (*pos + (plain ? 1 : 3) >= len)
			return -ENAMETOOLONG;
		if (plain) {
			buf[(*pos)++] = (char)c;
			continue;
		}
		buf[(*pos)++] = '%';
		buf[(*pos)++] = hex[c >> 4];
		buf[(*pos)++] = hex[c & 15];
	}
	buf[*pos] = '\0';
	return 0;
}

static int put_str(char *buf, size_t len, size_t *pos, const char *s)
{
	int n = snprintf(buf + *pos, len - *pos, "%s", s);

	if (n < 0 || (size_t)n >= len - *pos)
		return -ENAMETOOLONG;
	*pos += (size_t)n;
	return 0;
}

/* Appends `<sep>index=<i>&wait=<w>` for a blocking query; nothing when index is 0. */
static int put_blocking(char *buf, size_t len, size_t *pos, char sep, uint64_t index,
			uint64_t wait_ns)
{
	char tail[96], wait[32] = "";

	if (!index)
		return 0;
	if (wait_ns)
		consul_format_wait(wait_ns, wait, sizeof(wait));
	snprintf(tail, sizeof(tail), "%cindex=%llu%s%s", sep, (unsigned long long)index,
		 wait_ns ? "&wait=" : "", wait);
	return put_str(buf, len, pos, tail);
}

/* Starts buf with `address` without its trailing slashes. */
static int put_base(char *buf, size_t len, size_t *pos, const char *address)
{
	size_t alen = strlen(address);

	if (!len)
		return -ENAMETOOLONG;
	buf[0] = '\0';
	while (alen && address[alen - 1] == '/')
		alen--;
	if (alen + 1 >= len)
		return -ENAMETOOLONG;
	memcpy(buf, address, alen);
	buf[alen] = '\0';
	*pos = alen;
	return 0;
}

int consul_health_url(char *buf, size_t len, const char *address, const char *service,
		      const char *dc, uint64_t index, uint64_t wait_ns)
{
	size_t pos = 0;
	int err = put_base(buf, len, &pos, address);

	err = err ?: put_str(buf, len, &pos, "/v1/health/service/");
	err = err ?: put_escaped(buf, len, &pos, service);
	err = err ?: put_str(buf, len, &pos, "?passing=1");
	if (!err && dc && dc[0]) {
		err = put_str(buf, len, &pos, "&dc=");
		err = err ?: put_escaped(buf, len, &pos, dc);
	}
	err = err ?: put_blocking(buf, len, &pos, '&', index, wait_ns);
	return err ? err : (int)pos;
}

int consul_get_url(char *buf, size_t len, const char *address, const char *path, uint64_t index,
		   uint64_t wait_ns)
{
	size_t pos = 0;
	int err = put_base(buf, len, &pos, address);

	err = err ?: put_str(buf, len, &pos, path);
	err = err ?: put_blocking(buf, len, &pos, strchr(path, '?') ? '&' : '?', index, wait_ns);
	return err ? err : (int)pos;
}

int consul_kv_path(char *buf, size_t len, const char *key, const char *dc)
{
	size_t pos = 0;
	int err;
	char seg[CONSUL_KV_KEY_MAX + 1];

	if (!len || strlen(key) > CONSUL_KV_KEY_MAX)
		return -ENAMETOOLONG;
	buf[0] = '\0';
	err = put_str(buf, len, &pos, "/v1/kv");
	/* Each segment percent-encoded; the slashes between them stay (Consul keys are paths). */
	for (const char *s = key; !err && *s;) {
		size_t n = strcspn(s, "/");

		memcpy(seg, s, n);
		seg[n] = '\0';
		err = put_str(buf, len, &pos, "/");
		err = err ?: put_escaped(buf, len, &pos, seg);
		s += n + (s[n] == '/');
	}
	err = err ?: put_str(buf, len, &pos, "?raw");
	if (!err && dc && dc[0]) {
		err = put_str(buf, len, &pos, "&dc=");
		err = err ?: put_escaped(buf, len, &pos, dc);
	}
	return err ? err : (int)pos;
}

char *consul_read_token(const char *path)
{
	char buf[4096];
	size_t n = 0, start = 0, i;
	ssize_t r = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	close(fd);
	if (r < 0)
		return NULL;
	while (n && isspace((unsigned char)buf[n - 1]))
		n--;
	while (start < n && isspace((unsigned char)buf[start]))
		start++;
	buf[n] = '\0';
	for (i = start; i < n; i++) {
		if (iscntrl((unsigned char)buf[i])) { /* would break the header line */
			errno = EINVAL;
			return NULL;
		}
	}
	return strdup(buf + start);
}

int consul_entry_path(char *buf, size_t len, const char *kind, const char *name, const char *dc)
{
	size_t pos = 0;
	int err;

	if (!len)
		return -ENAMETOOLONG;
	buf[0] = '\0';
	err = put_str(buf, len, &pos, "/v1/config/");
	err = err ?: put_escaped(buf, len, &pos, kind);
	err = err ?: put_str(buf, len, &pos, "/");
	err = err ?: put_escaped(buf, len, &pos, name);
	if (!err && dc && dc[0]) {
		err = put_str(buf, len, &pos, "?dc=");
		err = err ?: put_escaped(buf, len, &pos, dc);
	}
	return err ? err : (int)pos;
}
