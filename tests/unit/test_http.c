/* Unit tests for the HTTP framing (http_parse.c): complete and partial requests, limits, request
 * smuggling guards, query decoding, response parsing and response heads. No sockets. */
#include <errno.h>
#include <stdlib.h>

#include "common/http.h"
#include "test.h"

static long parse(const char *s, struct http_request *req)
{
	return http_parse_request(s, strlen(s), req);
}

TEST(parses_simple_get)
{
	const char *s = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
	struct http_request req;

	CHECK_INT_EQ(parse(s, &req), strlen(s));
	CHECK_INT_EQ(req.method, HTTP_METHOD_GET);
	CHECK_STR_EQ(req.path, "/metrics");
	CHECK_STR_EQ(req.query, "");
	CHECK(req.keep_alive);
	CHECK_INT_EQ(req.body_len, 0);
}

TEST(splits_path_and_query)
{
	struct http_request req;

	CHECK(parse("GET /v1/backends?service=api&x=1 HTTP/1.0\n\n", &req) > 0);
	CHECK_STR_EQ(req.path, "/v1/backends");
	CHECK_STR_EQ(req.query, "service=api&x=1");
	CHECK(!req.keep_alive); /* HTTP/1.0 default */
}

TEST(incomplete_request_needs_more)
{
	struct http_request req;
	const char *s = "POST /v1/reload HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";

	CHECK_INT_EQ(parse("GET /metrics HTTP/1.1\r\nHost", &req), 0);
	CHECK_INT_EQ(parse("", &req), 0);
	CHECK_INT_EQ(parse(s, &req), 0);
}

TEST(post_body_and_pipelined_rest)
{
	const char *s =
	    "POST /v1/reload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
	struct http_request req;
	long n = parse(s, &req);

	CHECK_INT_EQ(n, strlen(s) - strlen("GET / HTTP/1.1\r\n"));
	CHECK_INT_EQ(req.method, HTTP_METHOD_POST);
	CHECK_INT_EQ(req.body_len, 5);
	CHECK(req.body && !memcmp(req.body, "hello", 5));
}

TEST(connection_header_controls_keep_alive)
{
	struct http_request req;

	CHECK(parse("GET / HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n", &req) > 0);
	CHECK(!req.keep_alive);
	CHECK(parse("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n", &req) > 0);
	CHECK(req.keep_alive);
}

TEST(unknown_method_is_other)
{
	struct http_request req;

	CHECK(parse("DELETE /x HTTP/1.1\r\n\r\n", &req) > 0);
	CHECK_INT_EQ(req.method, HTTP_METHOD_OTHER);
	CHECK_STR_EQ(req.method_name, "DELETE");
	CHECK(parse("HEAD /metrics HTTP/1.1\r\n\r\n", &req) > 0);
	CHECK_INT_EQ(req.method, HTTP_METHOD_HEAD);
}

TEST(rejects_malformed_request_lines)
{
	static const char *const bad[] = {
		"GET\r\n\r\n",
		"GET /\r\n\r\n",
		"GET metrics HTTP/1.1\r\n\r\n",
		"GET  / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1 \r\n\r\n",
		"GET / FTP/1.1\r\n\r\n",
		"G(T / HTTP/1.1\r\n\r\n",
		"GET /a\x01 HTTP/1.1\r\n\r\n",
		" GET / HTTP/1.1\r\n\r\n",
	};
	struct http_request req;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		long n = parse(bad[i], &req);

		if (n != -EINVAL)
			test_fail(__FILE__, __LINE__, "case %zu: got %ld, want -EINVAL", i, n);
	}
}

TEST(rejects_other_http_versions)
{
	struct http_request req;

	CHECK_INT_EQ(parse("GET / HTTP/2.0\r\n\r\n", &req), -ENOTSUP);
	CHECK_INT_EQ(http_parse_error_status(-ENOTSUP), 501);
}

TEST(rejects_bad_headers)
{
	struct http_request req;

	CHECK_INT_EQ(parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n", &req), -EINVAL);
	CHECK_INT_EQ(parse("GET / HTTP/1.1\r\nHost : x\r\n\r\n", &req), -EINVAL);
	CHECK_INT_EQ(parse("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", &req), -EINVAL);
	CHECK_INT_EQ(parse("GET / HTTP/1.1\r\n: x\r\n\r\n", &req), -EINVAL);
	CHECK_INT_EQ(parse("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n", &req), -EINVAL);
}

TEST(content_length_is_strict)
{
	struct http_request req;

	CHECK_INT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &req), -EINVAL);
	CHECK_INT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\nab", &req), -EINVAL);
	CHECK_INT_EQ(
	    parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", &req),
	    -EINVAL);
	CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab", &req) >
	      0);
	CHECK_INT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", &req), -EMSGSIZE);
	CHECK_INT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", &req),
		     -EMSGSIZE);
	CHECK_INT_EQ(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &req),
		     -ENOTSUP);
}

TEST(header_block_limit)
{
	struct http_request req;
	size_t n = HTTP_HEADER_MAX + 16;
	char *s = malloc(n + 1);

	strcpy(s, "GET / HTTP/1.1\r\nX: ");
	memset(s + strlen(s), 'a', n - strlen(s));
	s[n] = '\0';
	CHECK_INT_EQ(http_parse_request(s, n, &req), -EMSGSIZE);
	CHECK_INT_EQ(http_parse_request(s, HTTP_HEADER_MAX - 1, &req), 0);
	free(s);
}

TEST(header_count_limit)
{
	struct http_request req;
	char s[4096] = "GET / HTTP/1.1\r\n";
	int i;

	for (i = 0; i <= HTTP_HEADERS_COUNT_MAX; i++)
		strcat(s, "A: b\r\n");
	strcat(s, "\r\n");
	CHECK_INT_EQ(parse(s, &req), -EMSGSIZE);
}

TEST(target_length_limit)
{
	struct http_request req;
	char s[HTTP_TARGET_MAX + 64] = "GET /";

	memset(s + 5, 'a', HTTP_TARGET_MAX);
	strcpy(s + 5 + HTTP_TARGET_MAX, " HTTP/1.1\r\n\r\n");
	CHECK_INT_EQ(parse(s, &req), -EMSGSIZE);
}

TEST(query_get_decodes)
{
	char v[32];

	CHECK_INT_EQ(http_query_get("service=api&x=1", "service", v, sizeof(v)), 0);
	CHECK_STR_EQ(v, "api");
	CHECK_INT_EQ(http_query_get("a=b&service=my%2Dsvc+x", "service", v, sizeof(v)), 0);
	CHECK_STR_EQ(v, "my-svc x");
	CHECK_INT_EQ(http_query_get("services=a", "service", v, sizeof(v)), -ENOENT);
	CHECK_INT_EQ(http_query_get("service", "service", v, sizeof(v)), 0);
	CHECK_STR_EQ(v, "");
	CHECK_INT_EQ(http_query_get("service=%4", "service", v, sizeof(v)), -EINVAL);
	CHECK_INT_EQ(http_query_get("service=%zz", "service", v, sizeof(v)), -EINVAL);
	CHECK_INT_EQ(http_query_get("service=%00", "service", v, sizeof(v)), -EINVAL);
	CHECK_INT_EQ(http_query_get("service=0123456789", "service", v, 5), -EINVAL);
	CHECK_INT_EQ(http_query_get("", "service", v, sizeof(v)), -ENOENT);
}

TEST(parses_responses)
{
	const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabcdef";
	const char *body;
	size_t blen;
	int status;

	CHECK_INT_EQ(http_parse_response(r, strlen(r), &status, &body, &blen), 0);
	CHECK_INT_EQ(status, 404);
	CHECK_INT_EQ(blen, 3);
	CHECK(!memcmp(body, "abc", 3));
	r = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
	CHECK_INT_EQ(http_parse_response(r, strlen(r), &status, &body, &blen), -EAGAIN);
	r = "HTTP/1.0 200 OK\r\n\r\nuntil eof";
	CHECK_INT_EQ(http_parse_response(r, strlen(r), &status, &body, &blen), 0);
	CHECK_INT_EQ(blen, 9);
	r = "HTTP/1.1 2x0 OK\r\n\r\n";
	CHECK_INT_EQ(http_parse_response(r, strlen(r), &status, &body, &blen), -EINVAL);
	r = "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n";
	CHECK_INT_EQ(http_parse_response(r, strlen(r), &status, &body, &blen), -EINVAL);
}

TEST(formats_response_head)
{
	struct http_response resp = { .status = 404, .content_type = "application/json" };
	struct strbuf out = STRBUF_INIT;

	strbuf_puts(&resp.body, "{}");
	http_format_head(&resp, false, &out);
	CHECK_STR_EQ(out.data, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
			       "Content-Length: 2\r\nConnection: close\r\n"
			       "Cache-Control: no-store\r\n\r\n");
	strbuf_free(&out);
	strbuf_free(&resp.body);
}
