/* Unit tests for the OTLP encoders: protobuf bytes checked field by field against the numbers of
 * opentelemetry-proto (the end-to-end suite decodes real exports with the official definitions),
 * OTLP/JSON's mapping (hex ids, 64-bit integers as strings, escaping), attribute limits. */
#include <stdlib.h>

#include "telemetry/otlp.h"
#include "test.h"

static const struct otlp_resource res = { "web", "host-1", "1.2.3" };

static struct span one_span(void)
{
	struct span s = { .kind = SPAN_KIND_CLIENT, .start_unix_ns = 1, .end_unix_ns = 2 };

	for (int i = 0; i < 16; i++)
		s.trace_id[i] = (uint8_t)(0xa0 + i);
	for (int i = 0; i < 8; i++)
		s.span_id[i] = (uint8_t)(0xb0 + i);
	snprintf(s.name, sizeof(s.name), "connect api");
	return s;
}

/* Finds `needle` (n bytes) in `hay`. */
static bool contains(const struct strbuf *hay, const void *needle, size_t n)
{
	for (size_t i = 0; i + n <= hay->len; i++)
		if (!memcmp(hay->data + i, needle, n))
			return true;
	return false;
}

TEST(protobuf_span_fields)
{
	struct span s = one_span();
	struct strbuf b = STRBUF_INIT;
	/* trace_id: field 1, LEN (0x0a), 16 bytes; span_id: field 2 (0x12), 8 bytes. */
	const uint8_t trace[] = { 0x0a, 16, 0xa0, 0xa1, 0xa2 }, span[] = { 0x12, 8, 0xb0, 0xb1 };
	/* name: field 5 (0x2a); kind: field 6 varint (0x30) = 3; start: field 7 fixed64 (0x39). */
	const uint8_t name[] = { 0x2a, 11, 'c', 'o', 'n', 'n', 'e', 'c', 't', ' ', 'a', 'p', 'i' };
	const uint8_t kind[] = { 0x30, 3 }, start[] = { 0x39, 1, 0, 0, 0, 0, 0, 0, 0 };
	const uint8_t end[] = { 0x41, 2, 0, 0, 0, 0, 0, 0, 0 };

	CHECK_INT_EQ(otlp_encode_protobuf(&res, &s, 1, &b), 0);
	CHECK(b.len > 0 && (uint8_t)b.data[0] == 0x0a); /* resource_spans: field 1 */
	CHECK(contains(&b, trace, sizeof(trace)));
	CHECK(contains(&b, span, sizeof(span)));
	CHECK(contains(&b, name, sizeof(name)));
	CHECK(contains(&b, kind, sizeof(kind)));
	CHECK(contains(&b, start, sizeof(start)));
	CHECK(contains(&b, end, sizeof(end)));
	CHECK(contains(&b, "service.name", 12));
	CHECK(contains(&b, "datapunk-mesh/meshd", 19));
	strbuf_free(&b);
}

TEST(protobuf_attributes_and_status)
{
	struct span s = one_span();
	struct strbuf b = STRBUF_INIT;
	/* KeyValue{key "n" (0x0a 1 'n'), value (0x12 len) AnyValue{int_value field 3: 0x18 300}} */
	const uint8_t int_kv[] = { 0x0a, 1, 'n', 0x12, 3, 0x18, 0xac, 0x02 };
	/* AnyValue{bool_value field 2: 0x10 1} */
	const uint8_t bool_kv[] = { 0x0a, 1, 'b', 0x12, 2, 0x10, 1 };
	/* AnyValue{string_value field 1} */
	const uint8_t str_kv[] = { 0x0a, 1, 's', 0x12, 4, 0x0a, 2, 'h', 'i' };
	/* Status (field 15: 0x7a) { message (0x12) "x", code (0x18) 2 } */
	const uint8_t status[] = { 0x7a, 5, 0x12, 1, 'x', 0x18, 2 };
	/* a negative int64 takes 10 varint bytes */
	const uint8_t neg[] = { 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };

	span_attr_int(&s, "n", 300);
	span_attr_bool(&s, "b", true);
	span_attr_str(&s, "s", "hi");
	span_attr_int(&s, "m", -1);
	s.status = SPAN_STATUS_ERROR;
	snprintf(s.status_message, sizeof(s.status_message), "x");
	CHECK_INT_EQ(otlp_encode_protobuf(&res, &s, 1, &b), 0);
	CHECK(contains(&b, int_kv, sizeof(int_kv)));
	CHECK(contains(&b, bool_kv, sizeof(bool_kv)));
	CHECK(contains(&b, str_kv, sizeof(str_kv)));
	CHECK(contains(&b, status, sizeof(status)));
	CHECK(contains(&b, neg, sizeof(neg)));
	strbuf_free(&b);
}

TEST(protobuf_root_span_has_no_parent)
{
	struct span s = one_span();
	struct strbuf b = STRBUF_INIT;
	const uint8_t parent[] = { 0x22, 8 }; /* parent_span_id: field 4 */

	CHECK_INT_EQ(otlp_encode_protobuf(&res, &s, 1, &b), 0);
	CHECK(!contains(&b, parent, sizeof(parent)));
	strbuf_reset(&b);
	s.parent_span_id[7] = 1;
	CHECK_INT_EQ(otlp_encode_protobuf(&res, &s, 1, &b), 0);
	CHECK(contains(&b, parent, sizeof(parent)));
	strbuf_free(&b);
}

TEST(json_mapping)
{
	struct span s = one_span();
	struct strbuf b = STRBUF_INIT;

	span_attr_int(&s, "mesh.bytes_sent", 8);
	span_attr_str(&s, "q", "a\"b\\c\n");
	span_attr_double(&s, "d", 0.5);
	s.status = SPAN_STATUS_ERROR;
	CHECK_INT_EQ(otlp_encode_json(&res, &s, 1, &b), 0);
	CHECK_CONTAINS(b.data, "\"traceId\":\"a0a1a2a3a4a5a6a7a8a9aaabacadaeaf\"");
	CHECK_CONTAINS(b.data, "\"spanId\":\"b0b1b2b3b4b5b6b7\"");
	CHECK_CONTAINS(b.data, "\"kind\":3,\"startTimeUnixNano\":\"1\",\"endTimeUnixNano\":\"2\"");
	CHECK_CONTAINS(b.data, "{\"key\":\"mesh.bytes_sent\",\"value\":{\"intValue\":\"8\"}}");
	CHECK_CONTAINS(b.data, "\"stringValue\":\"a\\\"b\\\\c\\u000a\"");
	CHECK_CONTAINS(b.data, "\"doubleValue\":0.5");
	CHECK_CONTAINS(b.data, "\"status\":{\"code\":2}");
	CHECK_CONTAINS(b.data, "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"web\"}}");
	CHECK(!strstr(b.data, "parentSpanId"));
	strbuf_free(&b);
}

TEST(attribute_limit_and_truncation)
{
	struct span s = one_span();
	char longv[200];

	memset(longv, 'x', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = 0;
	for (int i = 0; i < SPAN_ATTRS_MAX + 5; i++)
		span_attr_int(&s, "k", i);
	CHECK_INT_EQ(s.n_attrs, SPAN_ATTRS_MAX);
	s.n_attrs = 0;
	span_attr_str(&s, "long", longv);
	CHECK_INT_EQ(strlen(s.attrs[0].v.s), SPAN_STR_MAX - 1);
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Spans of different service.name go in one ResourceSpans each (first-appearance order); a span
 * without one falls under the export's default. */
TEST(one_resource_per_service_name)
{
	struct span s[4] = { one_span(), one_span(), one_span(), one_span() };
	struct strbuf b = STRBUF_INIT;
	const char *web, *api, *dflt;

	snprintf(s[0].service_name, sizeof(s[0].service_name), "caller");
	snprintf(s[1].service_name, sizeof(s[1].service_name), "api");
	snprintf(s[2].service_name, sizeof(s[2].service_name), "caller");
	snprintf(s[0].name, sizeof(s[0].name), "first");
	snprintf(s[2].name, sizeof(s[2].name), "third");
	CHECK_INT_EQ(otlp_encode_json(&res, s, 4, &b), 0);
	CHECK_INT_EQ((long long)count(b.data, "\"resource\":"), 3);
	web = strstr(b.data, "{\"stringValue\":\"caller\"}");
	api = strstr(b.data, "{\"stringValue\":\"api\"}");
	dflt = strstr(b.data, "{\"stringValue\":\"web\"}"); /* res.service_name */
	CHECK(web && api && dflt && web < api && api < dflt);
	/* both "caller" spans sit in the first resource, before "api"'s */
	CHECK(strstr(b.data, "\"first\"") < api && strstr(b.data, "\"third\"") < api);
	strbuf_reset(&b);
	CHECK_INT_EQ(otlp_encode_protobuf(&res, s, 4, &b), 0);
	CHECK(b.len > 0 && (uint8_t)b.data[0] == 0x0a);
	CHECK(contains(&b, "caller", 6) && contains(&b, "api", 3));
	strbuf_free(&b);
	CHECK_INT_EQ(otlp_encode_json(&res, s, 0, &b), 0);
	CHECK_STR_EQ(b.data, "{\"resourceSpans\":[]}");
	strbuf_free(&b);
}
