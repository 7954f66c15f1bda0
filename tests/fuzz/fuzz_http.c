/* libFuzzer target for the HTTP framing (common/http_parse.c): arbitrary bytes as a request, as a
 * response, and as a query string. Checks the parser's promises, not just the absence of crashes:
 * a complete request spans at most the input, its body lies inside it, and paths are NUL-bounded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"

static void fuzz_request(const char *buf, size_t len)
{
	struct http_request req;
	long n = http_parse_request(buf, len, &req);

	if (n > 0) {
		if ((size_t)n > len || req.path[0] != '/' || strlen(req.path) > HTTP_TARGET_MAX)
			abort();
		if (req.body_len && (req.body < buf || req.body + req.body_len > buf + len))
			abort();
		if (req.body_len > HTTP_BODY_MAX)
			abort();
	} else if (n < 0 && http_parse_error_status(n) < 400) {
		abort();
	}
}

static void fuzz_response(const char *buf, size_t len)
{
	const char *body;
	size_t blen;
	int status;

	if (http_parse_response(buf, len, &status, &body, &blen) == 0) {
		if (body < buf || body + blen > buf + len || status < 0 || status > 999)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), v[64], *nl;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	fuzz_request(s, size);
	fuzz_response(s, size);
	/* As a query: the first line is the key, the rest the query string. */
	nl = memchr(s, '\n', size);
	if (nl) {
		*nl = '\0';
		if (http_query_get(nl + 1, s, v, sizeof(v)) == 0 && strlen(v) >= sizeof(v))
			abort();
	}
	free(s);
	return 0;
}
