/* Pure HTTP/1.x framing behind http.h: request and response parsing, query lookup, status texts
 * and response heads. No I/O and no allocation, so it is fuzzed directly (tests/fuzz/fuzz_http.c).
 * Strict where ambiguity could smuggle a request (Content-Length, Transfer-Encoding, folding),
 * lenient on bare LF line endings. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http.h"

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Header field value bytes: visible ASCII, space, tab, obs-text. */
static bool is_vchar(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Offset just past the blank line ending the header block, 0 if not found in the first `len`. */
static size_t header_end(const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (buf[i] != '\n')
			continue;
		if (i + 1 < len && buf[i + 1] == '\n')
			return i + 2;
		if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

/* Splits the next line off [*p, end): returns its length without CR/LF and advances *p. */
static size_t next_line(const char **p, const char *end)
{
	const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
	size_t n;

	if (!nl)
		nl = end;
	n = (size_t)(nl - s);
	if (n && s[n - 1] == '\r')
		n--;
	*p = nl < end ? nl + 1 : end;
	return n;
}

static enum http_method method_of(const char *m)
{
	if (!strcmp(m, "GET"))
		return HTTP_METHOD_GET;
	if (!strcmp(m, "HEAD"))
		return HTTP_METHOD_HEAD;
	if (!strcmp(m, "POST"))
		return HTTP_METHOD_POST;
	return HTTP_METHOD_OTHER;
}

static int parse_target(const char *t, size_t n, struct http_request *req)
{
	const char *q;
	size_t i;

	if (n == 0 || t[0] != '/')
		return -EINVAL;
	if (n > HTTP_TARGET_MAX)
		return -EMSGSIZE;
	for (i = 0; i < n; i++)
		if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
			return -EINVAL;
	q = memchr(t, '?', n);
	i = q ? (size_t)(q - t) : n;
	memcpy(req->path, t, i);
	req->path[i] = '\0';
	if (q) {
		memcpy(req->query, q + 1, n - i - 1);
		req->query[n - i - 1] = '\0';
	}
	return 0;
}

/* METHOD SP target SP HTTP/1.x */
static int parse_request_line(const char *s, size_t n, struct http_request *req)
{
	const char *sp1 = memchr(s, ' ', n), *sp2, *ver;
	size_t mlen, i;
	int err;

	if (!sp1)
		return -EINVAL;
	mlen = (size_t)(sp1 - s);
	if (mlen == 0 || mlen >= sizeof(req->method_name))
		return -EINVAL;
	for (i = 0; i < mlen; i++)
		if (!is_tchar((unsigned char)s[i]))
			return -EINVAL;
	memcpy(req->method_name, s, mlen);
	req->method_name[mlen] = '\0';
	req->method = method_of(req->method_name);
	sp2 = memchr(sp1 + 1, ' ', n - mlen - 1);
	if (!sp2)
		return -EINVAL;
	err = parse_target(sp1 + 1, (size_t)(sp2 - sp1 - 1), req);
	if (err)
		return err;
	ver = sp2 + 1;
	if ((size_t)(s + n - ver) != 8 || memcmp(ver, "HTTP/", 5) != 0)
		return -EINVAL;
	if (ver[5] != '1' || ver[6] != '.' || (ver[7] != '0' && ver[7] != '1'))
		return isdigit((unsigned char)ver[5]) ? -ENOTSUP : -EINVAL;
	req->version_minor = ver[7] - '0';
	req->keep_alive = req->version_minor == 1;
	return 0;
}

static int parse_content_length(const char *v, size_t n, bool *seen, size_t *out)
{
	size_t i, val = 0;

	if (n == 0 || n > 12)
		return n > 12 ? -EMSGSIZE : -EINVAL;
	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -EINVAL;
		val = val * 10 + (size_t)(v[i] - '0');
	}
	if (*seen && val != *out)
		return -EINVAL;
	if (val > HTTP_BODY_MAX)
		return -EMSGSIZE;
	*seen = true;
	*out = val;
	return 0;
}

/* Connection: a comma-separated token list; only close and keep-alive matter. */
static void parse_connection(const char *v, size_t n, struct http_request *req)
{
	while (n) {
		size_t tl = 0;

		while (n && (*v == ' ' || *v == '\t' || *v == ',')) {
			v++;
			n--;
		}
		while (tl < n && v[tl] != ',' && v[tl] != ' ' && v[tl] != '\t')
			tl++;
		if (tl == 5 && !strncasecmp(v, "close", 5))
			req->keep_alive = false;
		else if (tl == 10 && !strncasecmp(v, "keep-alive", 10))
			req->keep_alive = true;
		v += tl;
		n -= tl;
	}
}

static int parse_header(const char *s, size_t n, struct http_request *req, bool *cl_seen)
{
	const char *colon = memchr(s, ':', n), *v, *e;
	size_t i, nlen;

	if (!colon || colon == s)
		return -EINVAL;
	nlen = (size_t)(colon - s);
	for (i = 0; i < nlen; i++)
		if (!is_tchar((unsigned char)s[i]))
			return -EINVAL; /* also rejects folded lines and "Name :" */
	v = colon + 1;
	e = s + n;
	for (const char *c = v; c < e; c++)
		if (!is_vchar((unsigned char)*c))
			return -EINVAL;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (nlen == 14 && !strncasecmp(s, "content-length", 14))
		return parse_content_length(v, (size_t)(e - v), cl_seen, &req->content_length);
	if (nlen == 17 && !strncasecmp(s, "transfer-encoding", 17))
		return -ENOTSUP;
	if (nlen == 10 && !strncasecmp(s, "connection", 10))
		parse_connection(v, (size_t)(e - v), req);
	return 0;
}

static int parse_head(const char *buf, size_t hlen, struct http_request *req)
{
	const char *p = buf, *end = buf + hlen, *line;
	bool cl_seen = false;
	unsigned count = 0;
	size_t n;
	int err;

	line = p;
	n = next_line(&p, end);
	err = parse_request_line(line, n, req);
	if (err)
		return err;
	for (;;) {
		line = p;
		n = next_line(&p, end);
		if (n == 0)
			return 0;
		if (++count > HTTP_HEADERS_COUNT_MAX)
			return -EMSGSIZE;
		err = parse_header(line, n, req, &cl_seen);
		if (err)
			return err;
	}
}

long http_parse_request(const char *buf, size_t len, struct http_request *req)
{
	size_t scan = len < HTTP_HEADER_MAX ? len : HTTP_HEADER_MAX;
	size_t hlen = header_end(buf, scan);
	int err;

	memset(req, 0, sizeof(*req));
	if (!hlen)
		return len >= HTTP_HEADER_MAX ? -EMSGSIZE : 0;
	err = parse_head(buf, hlen, req);
	if (err)
		return err;
	if (len - hlen < req->content_length)
		return 0;
	req->body = buf + hlen;
	req->body_len = req->content_length;
	return (long)(hlen + req->content_length);
}

int http_parse_error_status(long err)
{
	switch (err) {
	case -EMSGSIZE:
		return 413;
	case -ENOTSUP:
		return 501;
	default:
		return 400;
	}
}

static const char *find_header(const char *p, const char *end, const char *name)
{
	size_t nl = strlen(name);

	while (p < end) {
		const char *line = p;
		size_t n = next_line(&p, end);

		if (n > nl && line[nl] == ':' && !strncasecmp(line, name, nl))
			return line + nl + 1;
	}
	return NULL;
}

int http_parse_response(const char *buf, size_t len, int *status, const char **body,
			size_t *body_len)
{
	size_t hlen = header_end(buf, len), avail;
	const char *cl;
	char *endp;
	long v;

	if (!hlen)
		return -EAGAIN;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
		return -EINVAL;
	if (!isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]) ||
	    (len > 12 && buf[12] != ' ' && buf[12] != '\r' && buf[12] != '\n'))
		return -EINVAL;
	*status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	avail = len - hlen;
	*body = buf + hlen;
	*body_len = avail;
	cl = find_header(buf, buf + hlen, "content-length");
	if (!cl)
		return 0;
	while (*cl == ' ' || *cl == '\t')
		cl++;
	if (!isdigit((unsigned char)*cl))
		return -EINVAL;
	errno = 0;
	v = strtol(cl, &endp, 10);
	if (errno || v < 0 || (*endp != '\r' && *endp != '\n' && *endp != ' '))
		return -EINVAL;
	if ((size_t)v > avail)
		return -EAGAIN;
	*body_len = (size_t)v;
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int decode_value(const char *v, size_t n, char *out, size_t out_len)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		char c = v[i];

		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -EINVAL;
			hi = hexval(v[i + 1]);
			lo = hexval(v[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (o + 1 >= out_len || c == '\0')
			return -EINVAL;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

int http_query_get(const char *query, const char *key, char *out, size_t out_len)
{
	size_t klen = strlen(key);
	const char *p = query;

	if (out_len == 0)
		return -EINVAL;
	while (*p) {
		const char *amp = strchr(p, '&');
		size_t n = amp ? (size_t)(amp - p) : strlen(p);

		if (n >= klen && !strncmp(p, key, klen) && (n == klen || p[klen] == '='))
			return n == klen ? decode_value("", 0, out, out_len)
					 : decode_value(p + klen + 1, n - klen - 1, out, out_len);
		p += n;
		if (*p == '&')
			p++;
	}
	return -ENOENT;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

void http_format_head(const struct http_response *resp, bool keep_alive, struct strbuf *out)
{
	strbuf_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", resp->status,
		      http_status_text(resp->status),
		      resp->content_type ? resp->content_type : "text/plain; charset=utf-8");
	if (resp->produce)
		strbuf_puts(out, "Transfer-Encoding: chunked\r\n");
	else
		strbuf_printf(out, "Content-Length: %zu\r\n", resp->body.len);
	if (!keep_alive)
		strbuf_puts(out, "Connection: close\r\n");
	strbuf_puts(out, "Cache-Control: no-store\r\n\r\n");
}
