/* SPIFFE IDs in Consul's service form, spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>:
 * strict parsing (the SPIFFE ID rules: lowercase scheme and trust domain, no port, user info,
 * query, fragment, percent-encoding, empty/dot segments or trailing slash) and formatting. Pure:
 * no allocation, no OpenSSL; any thread. */
#ifndef MESH_MTLS_SPIFFE_H
#define MESH_MTLS_SPIFFE_H

#include <stdbool.h>
#include <stddef.h>

#define SPIFFE_DOMAIN_MAX 255
#define SPIFFE_SEGMENT_MAX 63
/* "spiffe://" + domain + "/ns/" + seg + "/dc/" + seg + "/svc/" + seg, NUL included. */
#define SPIFFE_ID_MAX (9 + SPIFFE_DOMAIN_MAX + 4 + 5 + 4 + SPIFFE_SEGMENT_MAX * 3 + 1)

struct spiffe_id {
	char trust_domain[SPIFFE_DOMAIN_MAX + 1];
	char ns[SPIFFE_SEGMENT_MAX + 1];
	char dc[SPIFFE_SEGMENT_MAX + 1];
	char service[SPIFFE_SEGMENT_MAX + 1]; /* a lowercase DNS label */
};

/* Parses `len` bytes of `uri` (need not be NUL-terminated). Returns 0, or -EINVAL with
 * `*why` (may be NULL) set to a static phrase naming the first rule broken. */
int spiffe_parse(const char *uri, size_t len, struct spiffe_id *out, const char **why);

/* Writes the URI of `id` into buf; returns its length, or -ENOSPC / -EINVAL (a field fails the
 * rules spiffe_parse applies). */
int spiffe_format(const struct spiffe_id *id, char *buf, size_t len);

/* Fills `out` for a service of this mesh (namespace "default") and formats it into buf.
 * Returns the length or -errno as spiffe_format. */
int spiffe_service_id(const char *trust_domain, const char *dc, const char *service, char *buf,
		      size_t len);

/* True when `s` is a valid SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'). */
bool spiffe_domain_valid(const char *s, size_t len);

#endif
