/* libFuzzer target for DNS answer handling (user/discovery/dns/dns_answer.c): any response bytes,
 * parsed as an SRV, A and AAAA answer, must parse or be refused cleanly; what parses must have
 * sane records and feed the backend selection without overrunning anything. The first byte of
 * the input picks nothing: the whole input is the response. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/dns/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void srv_case(const uint8_t *data, size_t size)
{
	struct dns_answer a;
	struct dns_resolved *r;
	struct dns_addr addr = { .family = AF_INET };
	struct config_backend b[16];

	if (dns_parse_answer(data, size, DNS_TYPE_SRV, &a))
		return;
	if (a.n_srv > DNS_MAX_RECORDS)
		abort();
	r = calloc(a.n_srv + 1, sizeof(*r));
	for (size_t i = 0; r && i < a.n_srv; i++) {
		if (strlen(a.srv[i].target) > DNS_NAME_MAX)
			abort();
		r[i] = (struct dns_resolved){ &a.srv[i], &addr, i % 2 };
	}
	if (r && dns_backends(r, a.n_srv, b, 16) > 16)
		abort();
	free(r);
	(void)dns_answer_status(&a);
	dns_answer_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dns_answer a;

	srv_case(data, size);
	for (int t = 0; t < 2; t++) {
		if (dns_parse_answer(data, size, t ? DNS_TYPE_AAAA : DNS_TYPE_A, &a))
			continue;
		for (size_t i = 0; i < a.n_addr; i++)
			if (a.addr[i].family != (t ? AF_INET6 : AF_INET))
				abort();
		dns_answer_free(&a);
	}
	return 0;
}
