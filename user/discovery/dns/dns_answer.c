/* Pure handling of DNS answers for SRV discovery: the wire format of a response (RFC 1035
 * header, question skipping, compressed names, SRV/A/AAAA records), which outcomes keep the last
 * good set (HAProxy's resolver semantics), TTL clamps and the backend set of the lowest SRV
 * priority that resolved. No I/O, no allocation beyond the records kept; fuzzed
 * (tests/fuzz/fuzz_dns.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "discovery/dns/dns.h"

#define HEADER_LEN 12
#define MAX_JUMPS 32 /* compression pointers followed for one name */

static const char *const status_names[] = {
	[DNS_OK] = "ok",
	[DNS_NODATA] = "nodata",
	[DNS_NXDOMAIN] = "nxdomain",
	[DNS_SERVFAIL] = "servfail",
	[DNS_REFUSED] = "refused",
	[DNS_TIMEOUT] = "timeout",
	[DNS_ERROR] = "error",
	[DNS_CANCELLED] = "cancelled",
};

const char *dns_status_name(enum dns_status s)
{
	return (unsigned)s < sizeof(status_names) / sizeof(status_names[0]) ? status_names[s]
									    : "unknown";
}

bool dns_status_is_failure(enum dns_status s)
{
	return s == DNS_SERVFAIL || s == DNS_REFUSED || s == DNS_TIMEOUT || s == DNS_ERROR;
}

/* --- wire format ----------------------------------------------------------------------------- */

struct rd {
	const uint8_t *buf;
	size_t len, pos;
};

static bool get16(struct rd *r, uint16_t *v)
{
	if (r->len - r->pos < 2)
		return false;
	*v = (uint16_t)(r->buf[r->pos] << 8 | r->buf[r->pos + 1]);
	r->pos += 2;
	return true;
}

static bool get32(struct rd *r, uint32_t *v)
{
	uint16_t hi, lo;

	if (!get16(r, &hi) || !get16(r, &lo))
		return false;
	*v = (uint32_t)hi << 16 | lo;
	return true;
}

/* Reads the name at r->pos into `out` (dotted, "" for the root; NULL to skip) and moves past it.
 * Follows compression pointers (backwards or forwards, at most MAX_JUMPS) without moving r->pos
 * past the first pointer. */
static bool get_name(struct rd *r, char *out)
{
	size_t pos = r->pos, n = 0, end = 0;
	int jumps = 0;

	for (;;) {
		uint8_t l;

		if (pos >= r->len)
			return false;
		l = r->buf[pos];
		if ((l & 0xc0) == 0xc0) {
			if (pos + 1 >= r->len || ++jumps > MAX_JUMPS)
				return false;
			if (!end)
				end = pos + 2;
			pos = (size_t)(l & 0x3f) << 8 | r->buf[pos + 1];
			continue;
		}
		if (l & 0xc0)
			return false; /* 0x40/0x80: reserved label types */
		pos++;
		if (!l)
			break;
		if (pos + l > r->len || n + l + 1 > DNS_NAME_MAX)
			return false;
		if (out) {
			if (n)
				out[n] = '.';
			memcpy(out + n + (n ? 1 : 0), r->buf + pos, l);
		}
		n += l + (n ? 1 : 0);
		pos += l;
	}
	if (out)
		out[n] = '\0';
	r->pos = end ? end : pos;
	return true;
}

static bool add_srv(struct dns_answer *a, struct rd *r, uint32_t ttl)
{
	struct dns_srv *s;

	if (a->n_srv == DNS_MAX_RECORDS)
		return true;
	s = &a->srv[a->n_srv];
	if (!get16(r, &s->priority) || !get16(r, &s->weight) || !get16(r, &s->port) ||
	    !get_name(r, s->target))
		return false;
	s->ttl = ttl;
	a->n_srv++;
	return true;
}

static bool add_addr(struct dns_answer *a, struct rd *r, int family, uint32_t ttl)
{
	size_t n = family == AF_INET ? 4 : 16;
	struct dns_addr *d;

	if (r->len - r->pos < n)
		return false;
	if (a->n_addr < DNS_MAX_RECORDS) {
		d = &a->addr[a->n_addr++];
		memset(d, 0, sizeof(*d));
		d->family = family;
		memcpy(&d->addr, r->buf + r->pos, n);
		d->ttl = ttl;
	}
	r->pos += n;
	return true;
}

/* One answer record: kept when it is of `type`, skipped otherwise. */
static bool parse_rr(struct rd *r, int type, struct dns_answer *a)
{
	uint16_t rtype, rclass, rdlen;
	uint32_t ttl;
	size_t end;
	bool ok = true;

	if (!get_name(r, NULL) || !get16(r, &rtype) || !get16(r, &rclass) || !get32(r, &ttl) ||
	    !get16(r, &rdlen) || r->len - r->pos < rdlen)
		return false;
	end = r->pos + rdlen;
	if (ttl & 0x80000000u)
		ttl = 0; /* RFC 2181: a TTL with the top bit set counts as 0 */
	if (rtype == type && rclass == 1) {
		struct rd sub = { r->buf, end, r->pos }; /* rdata ends where rdlength says */
		size_t before = a->n_srv + a->n_addr;

		if (type == DNS_TYPE_SRV)
			ok = add_srv(a, &sub, ttl) && sub.pos == end;
		else
			ok = rdlen == (type == DNS_TYPE_A ? 4 : 16) &&
			     add_addr(a, &sub, type == DNS_TYPE_A ? AF_INET : AF_INET6, ttl);
		if (ok && a->n_srv + a->n_addr > before && ttl < a->min_ttl)
			a->min_ttl = ttl;
	}
	r->pos = end;
	return ok;
}

int dns_parse_answer(const uint8_t *buf, size_t len, int type, struct dns_answer *out)
{
	struct rd r = { buf, len, 0 };
	uint16_t id, flags, qd, an, ns, ar;

	memset(out, 0, sizeof(*out));
	out->min_ttl = UINT32_MAX;
	if (!get16(&r, &id) || !get16(&r, &flags) || !get16(&r, &qd) || !get16(&r, &an) ||
	    !get16(&r, &ns) || !get16(&r, &ar) || !(flags & 0x8000))
		return -EINVAL;
	out->rcode = flags & 0xf;
	out->truncated = flags & 0x0200;
	for (uint16_t i = 0; i < qd; i++) {
		if (!get_name(&r, NULL) || len - r.pos < 4)
			return -EINVAL;
		r.pos += 4;
	}
	if (type == DNS_TYPE_SRV)
		out->srv =
		    calloc(an < DNS_MAX_RECORDS ? an + 1 : DNS_MAX_RECORDS, sizeof(*out->srv));
	else
		out->addr =
		    calloc(an < DNS_MAX_RECORDS ? an + 1 : DNS_MAX_RECORDS, sizeof(*out->addr));
	if (!out->srv && !out->addr)
		return -ENOMEM;
	for (uint16_t i = 0; i < an; i++) {
		if (!parse_rr(&r, type, out)) {
			dns_answer_free(out);
			return -EINVAL;
		}
	}
	return 0;
}

void dns_answer_free(struct dns_answer *a)
{
	free(a->srv);
	free(a->addr);
	a->srv = NULL;
	a->addr = NULL;
	a->n_srv = a->n_addr = 0;
}

enum dns_status dns_answer_status(const struct dns_answer *a)
{
	switch (a->rcode) {
	case 0:
		return a->n_srv || a->n_addr ? DNS_OK : DNS_NODATA;
	case 2:
		return DNS_SERVFAIL;
	case 3:
		return DNS_NXDOMAIN;
	case 5:
		return DNS_REFUSED;
	default:
		return DNS_ERROR;
	}
}

/* --- decisions ------------------------------------------------------------------------------- */

size_t dns_backends(const struct dns_resolved *r, size_t n, struct config_backend *out, size_t max)
{
	uint32_t best = UINT32_MAX;
	size_t i, j, k = 0;

	for (i = 0; i < n; i++) /* the lowest priority whose target resolved */
		if (r[i].n_addr && r[i].srv->target[0] && r[i].srv->port &&
		    r[i].srv->priority < best)
			best = r[i].srv->priority;
	for (i = 0; i < n && best != UINT32_MAX; i++) {
		if (r[i].srv->priority != best || !r[i].srv->target[0] || !r[i].srv->port)
			continue;
		for (j = 0; j < r[i].n_addr && k < max; j++, k++) {
			struct config_backend *b = &out[k];

			memset(b, 0, sizeof(*b));
			b->endpoint.family = r[i].addr[j].family;
			memcpy(&b->endpoint.addr, &r[i].addr[j].addr, sizeof(b->endpoint.addr));
			b->endpoint.port = r[i].srv->port;
			b->weight = r[i].srv->weight ? r[i].srv->weight : 1;
		}
	}
	return k;
}

uint64_t dns_refresh_ns(uint32_t ttl, uint64_t min_ns, uint64_t max_ns)
{
	uint64_t ns = (uint64_t)ttl * 1000000000ull;

	if (ns < min_ns)
		ns = min_ns;
	return ns > max_ns ? max_ns : ns;
}

enum dns_verdict dns_hold_decide(struct dns_hold *h, enum dns_status s, bool has_backends,
				 uint64_t now_ns, uint64_t hold_nx_ns, uint64_t hold_timeout_ns)
{
	if (s == DNS_OK && has_backends) {
		h->nx_since_ns = h->fail_since_ns = 0;
		return DNS_DELIVER;
	}
	if (dns_status_is_failure(s) || s == DNS_CANCELLED) {
		h->nx_since_ns = 0;
		if (!h->fail_since_ns)
			h->fail_since_ns = now_ns ? now_ns : 1;
		if (hold_timeout_ns && now_ns - h->fail_since_ns >= hold_timeout_ns)
			return DNS_EMPTY;
		return DNS_KEEP;
	}
	/* NXDOMAIN, an empty answer, or targets that resolve to nothing. */
	h->fail_since_ns = 0;
	if (!h->nx_since_ns)
		h->nx_since_ns = now_ns ? now_ns : 1;
	return now_ns - h->nx_since_ns >= hold_nx_ns ? DNS_EMPTY : DNS_KEEP;
}
