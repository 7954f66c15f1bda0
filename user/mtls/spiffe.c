/* SPIFFE ID parsing and formatting behind spiffe.h. The parser walks the URI once, checking
 * each part against the SPIFFE ID specification and then the Consul service path shape. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mtls/spiffe.h"

static bool domain_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* Path segment characters of the SPIFFE spec: letters, digits, '.', '-', '_'. */
static bool segment_char(char c)
{
	return domain_char(c) || (c >= 'A' && c <= 'Z');
}

bool spiffe_domain_valid(const char *s, size_t len)
{
	if (!len || len > SPIFFE_DOMAIN_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!domain_char(s[i]))
			return false;
	return true;
}

static bool dns_label(const char *s, size_t len)
{
	if (!len || len > SPIFFE_SEGMENT_MAX || s[0] == '-' || s[len - 1] == '-')
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

static int fail(const char **why, const char *what)
{
	if (why)
		*why = what;
	return -EINVAL;
}

/* Splits the path (after the trust domain) into at most 6 segments; checks each. */
static int split_path(const char *p, size_t len, const char *seg[6], size_t seglen[6], size_t *n,
		      const char **why)
{
	size_t i = 0;

	*n = 0;
	if (!len)
		return fail(why, "no path");
	while (i < len) {
		size_t start;

		if (p[i] != '/')
			return fail(why, "path does not start with /");
		start = ++i;
		while (i < len && p[i] != '/') {
			if (!segment_char(p[i]))
				return fail(why, "invalid character in the path");
			i++;
		}
		if (i == start)
			return fail(why, "empty path segment");
		if ((i - start == 1 && p[start] == '.') ||
		    (i - start == 2 && p[start] == '.' && p[start + 1] == '.'))
			return fail(why, "dot segment in the path");
		if (*n == 6)
			return fail(why, "not a service ID (expected /ns/NS/dc/DC/svc/SERVICE)");
		seg[*n] = p + start;
		seglen[(*n)++] = i - start;
	}
	return 0;
}

static bool seg_is(const char *s, size_t len, const char *want)
{
	return len == strlen(want) && !memcmp(s, want, len);
}

static int copy_seg(char *dst, const char *s, size_t len, const char **why, const char *what)
{
	if (len > SPIFFE_SEGMENT_MAX)
		return fail(why, what);
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

/* Checks the Consul shape of the segments and copies the three values. */
static int service_path(const char *seg[6], const size_t seglen[6], size_t n, struct spiffe_id *out,
			const char **why)
{
	if (n != 6 || !seg_is(seg[0], seglen[0], "ns") || !seg_is(seg[2], seglen[2], "dc") ||
	    !seg_is(seg[4], seglen[4], "svc"))
		return fail(why, "not a service ID (expected /ns/NS/dc/DC/svc/SERVICE)");
	if (!dns_label(seg[5], seglen[5]))
		return fail(why, "service name is not a lowercase DNS label");
	if (copy_seg(out->ns, seg[1], seglen[1], why, "namespace too long") ||
	    copy_seg(out->dc, seg[3], seglen[3], why, "datacenter too long"))
		return -EINVAL;
	return copy_seg(out->service, seg[5], seglen[5], why, "service name too long");
}

int spiffe_parse(const char *uri, size_t len, struct spiffe_id *out, const char **why)
{
	const char *seg[6];
	size_t seglen[6], n, d = 9;

	if (len < 9 || memcmp(uri, "spiffe://", 9))
		return fail(why, "scheme is not spiffe://");
	while (d < len && uri[d] != '/') {
		if (!domain_char(uri[d]))
			return fail(why, uri[d] == ':'	 ? "port in the trust domain"
					 : uri[d] == '@' ? "user info in the URI"
							 : "invalid character in the trust domain");
		d++;
	}
	if (d == 9)
		return fail(why, "empty trust domain");
	if (d - 9 > SPIFFE_DOMAIN_MAX)
		return fail(why, "trust domain too long");
	if (split_path(uri + d, len - d, seg, seglen, &n, why))
		return -EINVAL;
	if (service_path(seg, seglen, n, out, why))
		return -EINVAL;
	memcpy(out->trust_domain, uri + 9, d - 9);
	out->trust_domain[d - 9] = '\0';
	return 0;
}

static bool segment_valid(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > SPIFFE_SEGMENT_MAX || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!segment_char(s[i]))
			return false;
	return true;
}

int spiffe_format(const struct spiffe_id *id, char *buf, size_t len)
{
	int n;

	if (!spiffe_domain_valid(id->trust_domain, strlen(id->trust_domain)) ||
	    !segment_valid(id->ns) || !segment_valid(id->dc) ||
	    !dns_label(id->service, strlen(id->service)))
		return -EINVAL;
	n = snprintf(buf, len, "spiffe://%s/ns/%s/dc/%s/svc/%s", id->trust_domain, id->ns, id->dc,
		     id->service);
	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int spiffe_service_id(const char *trust_domain, const char *dc, const char *service, char *buf,
		      size_t len)
{
	struct spiffe_id id;

	if (strlen(trust_domain) > SPIFFE_DOMAIN_MAX || strlen(dc) > SPIFFE_SEGMENT_MAX ||
	    strlen(service) > SPIFFE_SEGMENT_MAX)
		return -EINVAL;
	strcpy(id.trust_domain, trust_domain);
	strcpy(id.ns, "default");
	strcpy(id.dc, dc);
	strcpy(id.service, service);
	return spiffe_format(&id, buf, len);
}
