/* Unit tests for the pure DNS answer handling of SRV discovery (user/discovery/dns/dns_answer.c):
 * wire parsing (SRV with compressed targets, A, AAAA, TTLs, truncation bit, rcodes), malformed
 * and hostile answers refused (pointer loops, overruns, bad rdlength), the backend set of the
 * lowest priority that resolved, TTL clamps, and HAProxy's hold semantics with a fake clock. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>

#include "discovery/dns/dns.h"
#include "test.h"

#define SEC 1000000000ull

struct pkt {
	uint8_t b[1024];
	size_t n;
};

static void put8(struct pkt *p, uint8_t v)
{
	p->b[p->n++] = v;
}

static void put16(struct pkt *p, uint16_t v)
{
	put8(p, (uint8_t)(v >> 8));
	put8(p, (uint8_t)v);
}

static void put32(struct pkt *p, uint32_t v)
{
	put16(p, (uint16_t)(v >> 16));
	put16(p, (uint16_t)v);
}

static void put_name(struct pkt *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);

		put8(p, (uint8_t)l);
		memcpy(p->b + p->n, name, l);
		p->n += l;
		name += l + (dot ? 1 : 0);
	}
	put8(p, 0);
}

/* Header + one question for `qname`; `an` answers follow. */
static void header(struct pkt *p, uint16_t flags, uint16_t an, const char *qname, uint16_t qtype)
{
	p->n = 0;
	put16(p, 0x1234);
	put16(p, 0x8000 | flags);
	put16(p, 1);
	put16(p, an);
	put16(p, 0);
	put16(p, 0);
	put_name(p, qname);
	put16(p, qtype);
	put16(p, 1);
}

/* An SRV answer whose owner is a pointer to the question name (offset 12). */
static void srv_rr(struct pkt *p, uint32_t ttl, uint16_t prio, uint16_t w, uint16_t port,
		   const char *target)
{
	size_t len_at;

	put16(p, 0xc00c);
	put16(p, DNS_TYPE_SRV);
	put16(p, 1);
	put32(p, ttl);
	len_at = p->n;
	put16(p, 0);
	put16(p, prio);
	put16(p, w);
	put16(p, port);
	put_name(p, target);
	p->b[len_at] = (uint8_t)((p->n - len_at - 2) >> 8);
	p->b[len_at + 1] = (uint8_t)(p->n - len_at - 2);
}

TEST(parses_srv_records_with_ttls)
{
	struct pkt p;
	struct dns_answer a;

	header(&p, 0, 2, "_api._tcp.mesh.test", DNS_TYPE_SRV);
	srv_rr(&p, 30, 0, 10, 8080, "a.mesh.test");
	srv_rr(&p, 5, 1, 0, 8081, "b.mesh.test");
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_SRV, &a), 0);
	CHECK_INT_EQ(a.n_srv, 2);
	CHECK_INT_EQ(a.min_ttl, 5);
	CHECK_STR_EQ(a.srv[0].target, "a.mesh.test");
	CHECK_INT_EQ(a.srv[0].port, 8080);
	CHECK_INT_EQ(a.srv[0].weight, 10);
	CHECK_INT_EQ(a.srv[1].priority, 1);
	CHECK_INT_EQ(dns_answer_status(&a), DNS_OK);
	CHECK(!a.truncated);
	dns_answer_free(&a);
}

TEST(parses_a_and_aaaa_and_skips_other_types)
{
	struct pkt p;
	struct dns_answer a;
	char ip[64];

	header(&p, 0x0200, 3, "a.mesh.test", DNS_TYPE_A);
	put16(&p, 0xc00c); /* a CNAME, skipped */
	put16(&p, 5);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 2);
	put16(&p, 0xc00c);
	put16(&p, 0xc00c); /* A 127.0.0.9, TTL with the top bit: counts as 0 */
	put16(&p, DNS_TYPE_A);
	put16(&p, 1);
	put32(&p, 0x80000005u);
	put16(&p, 4);
	put32(&p, 0x7f000009);
	put16(&p, 0xc00c); /* an AAAA in an A answer: not kept */
	put16(&p, DNS_TYPE_AAAA);
	put16(&p, 1);
	put32(&p, 9);
	put16(&p, 16);
	memset(p.b + p.n, 0, 16);
	p.n += 16;
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_A, &a), 0);
	CHECK_INT_EQ(a.n_addr, 1);
	CHECK(a.truncated);
	CHECK_INT_EQ(a.min_ttl, 0);
	CHECK_STR_EQ(inet_ntop(AF_INET, &a.addr[0].addr.v4, ip, sizeof(ip)), "127.0.0.9");
	dns_answer_free(&a);
}

TEST(rcodes_and_empty_answers)
{
	struct pkt p;
	struct dns_answer a;
	static const struct {
		uint16_t rcode, an;
		enum dns_status want;
	} cases[] = { { 0, 0, DNS_NODATA },
		      { 3, 0, DNS_NXDOMAIN },
		      { 2, 0, DNS_SERVFAIL },
		      { 5, 0, DNS_REFUSED },
		      { 4, 0, DNS_ERROR } };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		header(&p, cases[i].rcode, 0, "x.test", DNS_TYPE_SRV);
		CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_SRV, &a), 0);
		CHECK_INT_EQ(dns_answer_status(&a), cases[i].want);
		dns_answer_free(&a);
	}
	CHECK(dns_status_is_failure(DNS_SERVFAIL) && dns_status_is_failure(DNS_TIMEOUT));
	CHECK(!dns_status_is_failure(DNS_NXDOMAIN) && !dns_status_is_failure(DNS_NODATA));
}

TEST(hostile_answers_are_refused)
{
	struct pkt p;
	struct dns_answer a;

	/* A query, not a response. */
	header(&p, 0, 0, "x.test", DNS_TYPE_SRV);
	p.b[2] &= 0x7f;
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_SRV, &a), -EINVAL);
	/* A compression pointer to itself. */
	header(&p, 0, 1, "x.test", DNS_TYPE_SRV);
	put16(&p, (uint16_t)(0xc000 | p.n));
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_SRV, &a), -EINVAL);
	/* rdlength beyond the end. */
	header(&p, 0, 1, "x.test", DNS_TYPE_SRV);
	srv_rr(&p, 1, 0, 0, 1, "t.test");
	p.n -= 3;
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_SRV, &a), -EINVAL);
	/* An A record with 3 bytes of rdata. */
	header(&p, 0, 1, "x.test", DNS_TYPE_A);
	put16(&p, 0xc00c);
	put16(&p, DNS_TYPE_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 3);
	put16(&p, 0);
	put8(&p, 0);
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_A, &a), -EINVAL);
	/* Fewer answers than the header says. */
	header(&p, 0, 2, "x.test", DNS_TYPE_SRV);
	srv_rr(&p, 1, 0, 0, 1, "t.test");
	CHECK_INT_EQ(dns_parse_answer(p.b, p.n, DNS_TYPE_SRV, &a), -EINVAL);
	CHECK_INT_EQ(dns_parse_answer(p.b, 5, DNS_TYPE_SRV, &a), -EINVAL);
}

static struct dns_addr addr4(const char *ip)
{
	struct dns_addr d = { .family = AF_INET };

	inet_pton(AF_INET, ip, &d.addr.v4);
	return d;
}

TEST(backends_come_from_the_lowest_priority_that_resolved)
{
	struct dns_srv srv[4] = {
		{ .priority = 0, .weight = 10, .port = 80, .target = "dead" }, /* no addresses */
		{ .priority = 1, .weight = 0, .port = 81, .target = "one" },
		{ .priority = 1, .weight = 30, .port = 82, .target = "two" },
		{ .priority = 2, .weight = 5, .port = 83, .target = "backup" },
	};
	struct dns_addr one[2] = { addr4("127.0.0.1"), addr4("127.0.0.2") };
	struct dns_addr two[1] = { addr4("127.0.0.3") }, backup[1] = { addr4("127.0.0.4") };
	struct dns_resolved r[4] = { { &srv[0], NULL, 0 },
				     { &srv[1], one, 2 },
				     { &srv[2], two, 1 },
				     { &srv[3], backup, 1 } };
	struct config_backend b[8];

	CHECK_INT_EQ(dns_backends(r, 4, b, 8), 3);
	CHECK_INT_EQ(b[0].endpoint.port, 81);
	CHECK_INT_EQ(b[0].weight, 1); /* SRV weight 0 */
	CHECK_INT_EQ(b[2].endpoint.port, 82);
	CHECK_INT_EQ(b[2].weight, 30);
	CHECK_INT_EQ(dns_backends(r, 4, b, 2), 2); /* capped */
	r[1].n_addr = r[2].n_addr = 0;
	CHECK_INT_EQ(dns_backends(r, 4, b, 8), 1);
	CHECK_INT_EQ(b[0].endpoint.port, 83);
	srv[3].target[0] = '\0'; /* "." target: not available */
	CHECK_INT_EQ(dns_backends(r, 4, b, 8), 0);
}

TEST(refresh_follows_the_ttl_within_the_clamps)
{
	CHECK_INT_EQ(dns_refresh_ns(0, SEC, 300 * SEC), SEC); /* Consul's TTL 0 */
	CHECK_INT_EQ(dns_refresh_ns(30, SEC, 300 * SEC), 30 * SEC);
	CHECK_INT_EQ(dns_refresh_ns(86400, SEC, 300 * SEC), 300 * SEC);
	CHECK_INT_EQ(dns_refresh_ns(UINT32_MAX, SEC, 300 * SEC), 300 * SEC);
}

TEST(hold_semantics_follow_haproxy)
{
	struct dns_hold h = { 0 };
	uint64_t t = 100 * SEC;

	CHECK_INT_EQ(dns_hold_decide(&h, DNS_OK, true, t, 30 * SEC, 0), DNS_DELIVER);
	/* Failures keep the set, however long (hold_timeout 0). */
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_SERVFAIL, false, t + SEC, 30 * SEC, 0), DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_TIMEOUT, false, t + 9999 * SEC, 30 * SEC, 0),
		     DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_REFUSED, false, t + 9999 * SEC, 30 * SEC, 0),
		     DNS_KEEP);
	/* NXDOMAIN: kept until it persisted for hold_nx, counted from the first one. */
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_NXDOMAIN, false, t, 30 * SEC, 0), DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_NODATA, false, t + 29 * SEC, 30 * SEC, 0), DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_NXDOMAIN, false, t + 30 * SEC, 30 * SEC, 0),
		     DNS_EMPTY);
	/* A good answer in between starts the count over. */
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_OK, true, t + 31 * SEC, 30 * SEC, 0), DNS_DELIVER);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_NXDOMAIN, false, t + 40 * SEC, 30 * SEC, 0), DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_OK, false, t + 69 * SEC, 30 * SEC, 0), DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_OK, false, t + 70 * SEC, 30 * SEC, 0), DNS_EMPTY);
	/* hold_timeout set: failures empty the set after it. */
	h = (struct dns_hold){ 0 };
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_TIMEOUT, false, t, 30 * SEC, 5 * SEC), DNS_KEEP);
	CHECK_INT_EQ(dns_hold_decide(&h, DNS_TIMEOUT, false, t + 5 * SEC, 30 * SEC, 5 * SEC),
		     DNS_EMPTY);
}
