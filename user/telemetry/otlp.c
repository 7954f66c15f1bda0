/* OTLP encoders (otlp.h). Protobuf: every message is written into its own buffer and then as a
 * length-delimited field of its parent (batches are small, so the copies cost little and the
 * code stays a direct transcription of the .proto files). JSON: the OTLP/JSON mapping. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "telemetry/otlp.h"

/* --- attributes ------------------------------------------------------------------------------*/

static struct span_attr *attr_new(struct span *s, const char *key, enum span_attr_type t)
{
	struct span_attr *a;

	if (s->n_attrs >= SPAN_ATTRS_MAX)
		return NULL;
	a = &s->attrs[s->n_attrs++];
	a->key = key;
	a->type = t;
	return a;
}

void span_attr_str(struct span *s, const char *key, const char *value)
{
	struct span_attr *a = attr_new(s, key, SPAN_ATTR_STRING);

	if (a)
		snprintf(a->v.s, sizeof(a->v.s), "%s", value);
}

void span_attr_int(struct span *s, const char *key, int64_t value)
{
	struct span_attr *a = attr_new(s, key, SPAN_ATTR_INT);

	if (a)
		a->v.i = value;
}

void span_attr_bool(struct span *s, const char *key, bool value)
{
	struct span_attr *a = attr_new(s, key, SPAN_ATTR_BOOL);

	if (a)
		a->v.b = value;
}

void span_attr_double(struct span *s, const char *key, double value)
{
	struct span_attr *a = attr_new(s, key, SPAN_ATTR_DOUBLE);

	if (a)
		a->v.d = value;
}

/* --- protobuf wire format --------------------------------------------------------------------*/

enum wire {
	WIRE_VARINT = 0,
	WIRE_I64 = 1,
	WIRE_LEN = 2,
};

static void pb_varint(struct strbuf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	do {
		tmp[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			tmp[n] |= 0x80;
		n++;
	} while (v);
	strbuf_append(b, tmp, n);
}

static void pb_tag(struct strbuf *b, unsigned field, enum wire w)
{
	pb_varint(b, (uint64_t)field << 3 | w);
}

static void pb_bytes(struct strbuf *b, unsigned field, const void *p, size_t n)
{
	pb_tag(b, field, WIRE_LEN);
	pb_varint(b, n);
	strbuf_append(b, p, n);
}

static void pb_string(struct strbuf *b, unsigned field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

static void pb_fixed64(struct strbuf *b, unsigned field, uint64_t v)
{
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	pb_tag(b, field, WIRE_I64);
	strbuf_append(b, le, 8);
}

/* Writes `sub` as length-delimited field `field` of `b` and empties it. */
static void pb_message(struct strbuf *b, unsigned field, struct strbuf *sub)
{
	pb_bytes(b, field, sub->data ? sub->data : "", sub->len);
	if (sub->err)
		b->err = sub->err;
	strbuf_reset(sub);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4. */
static void pb_any_value(struct strbuf *b, const struct span_attr *a)
{
	uint64_t bits;

	switch (a->type) {
	case SPAN_ATTR_STRING:
		pb_string(b, 1, a->v.s);
		break;
	case SPAN_ATTR_BOOL:
		pb_tag(b, 2, WIRE_VARINT);
		pb_varint(b, a->v.b);
		break;
	case SPAN_ATTR_INT:
		pb_tag(b, 3, WIRE_VARINT);
		pb_varint(b, (uint64_t)a->v.i); /* int64: two's complement, 10 bytes if negative */
		break;
	case SPAN_ATTR_DOUBLE:
		memcpy(&bits, &a->v.d, sizeof(bits));
		pb_fixed64(b, 4, bits);
		break;
	}
}

/* KeyValue { string key = 1; AnyValue value = 2; } as repeated field `field` of `b`. */
static void pb_key_value(struct strbuf *b, unsigned field, const struct span_attr *a)
{
	struct strbuf kv = STRBUF_INIT, v = STRBUF_INIT;

	pb_string(&kv, 1, a->key);
	pb_any_value(&v, a);
	pb_message(&kv, 2, &v);
	pb_message(b, field, &kv);
	strbuf_free(&v);
	strbuf_free(&kv);
}

static void pb_str_attr(struct strbuf *b, unsigned field, const char *key, const char *value)
{
	struct span_attr a = { .key = key, .type = SPAN_ATTR_STRING };

	snprintf(a.v.s, sizeof(a.v.s), "%s", value ? value : "");
	pb_key_value(b, field, &a);
}

/* Span: trace_id 1, span_id 2, parent_span_id 4, name 5, kind 6, start 7, end 8, attributes 9,
 * status 15 (Status { message = 2; code = 3; }). */
static void pb_span(struct strbuf *b, const struct span *s)
{
	struct strbuf st = STRBUF_INIT;

	pb_bytes(b, 1, s->trace_id, sizeof(s->trace_id));
	pb_bytes(b, 2, s->span_id, sizeof(s->span_id));
	if (!all_zero(s->parent_span_id, sizeof(s->parent_span_id)))
		pb_bytes(b, 4, s->parent_span_id, sizeof(s->parent_span_id));
	pb_string(b, 5, s->name);
	pb_tag(b, 6, WIRE_VARINT);
	pb_varint(b, (uint64_t)s->kind);
	pb_fixed64(b, 7, s->start_unix_ns);
	pb_fixed64(b, 8, s->end_unix_ns);
	for (size_t i = 0; i < s->n_attrs; i++)
		pb_key_value(b, 9, &s->attrs[i]);
	if (s->status != SPAN_STATUS_UNSET) {
		if (s->status_message[0])
			pb_string(&st, 2, s->status_message);
		pb_tag(&st, 3, WIRE_VARINT);
		pb_varint(&st, (uint64_t)s->status);
		pb_message(b, 15, &st);
	}
	strbuf_free(&st);
}

/* The service.name span `i` is exported under. */
static const char *service_of(const struct otlp_resource *r, const struct span *spans, size_t i)
{
	return spans[i].service_name[0] ? spans[i].service_name : r->service_name;
}

static bool same_service(const struct otlp_resource *r, const struct span *spans, size_t i,
			 size_t j)
{
	const char *a = service_of(r, spans, i), *b = service_of(r, spans, j);

	return !strcmp(a ? a : "", b ? b : "");
}

/* True when an earlier span has span i's service.name (its ResourceSpans is already out). */
static bool seen_before(const struct otlp_resource *r, const struct span *spans, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (same_service(r, spans, i, j))
			return true;
	return false;
}

/* ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; } for the spans
 * from `first` on that share its service.name. */
static void pb_resource_spans(struct strbuf *out, const struct otlp_resource *r,
			      const struct span *spans, size_t n, size_t first)
{
	struct strbuf rs = STRBUF_INIT, m = STRBUF_INIT, ss = STRBUF_INIT, sp = STRBUF_INIT;

	pb_str_attr(&m, 1, "service.name", service_of(r, spans, first));
	pb_str_attr(&m, 1, "host.name", r->host_name);
	pb_str_attr(&m, 1, "meshd.version", r->version);
	pb_message(&rs, 1, &m);
	pb_string(&m, 1, "datapunk-mesh/meshd");
	pb_string(&m, 2, r->version ? r->version : "");
	pb_message(&ss, 1, &m);
	for (size_t i = first; i < n; i++) {
		if (!same_service(r, spans, first, i))
			continue;
		pb_span(&sp, &spans[i]);
		pb_message(&ss, 2, &sp);
	}
	pb_message(&rs, 2, &ss);
	pb_message(out, 1, &rs);
	if (rs.err || m.err || ss.err || sp.err)
		out->err = -ENOMEM;
	strbuf_free(&rs);
	strbuf_free(&m);
	strbuf_free(&ss);
	strbuf_free(&sp);
}

/* ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
 * Resource { repeated KeyValue attributes = 1; }
 * ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
 * InstrumentationScope { string name = 1; string version = 2; } */
int otlp_encode_protobuf(const struct otlp_resource *r, const struct span *spans, size_t n,
			 struct strbuf *out)
{
	for (size_t i = 0; i < n; i++)
		if (!seen_before(r, spans, i))
			pb_resource_spans(out, r, spans, n, i);
	return strbuf_error(out);
}

/* --- OTLP/JSON -------------------------------------------------------------------------------*/

static void js_string(struct strbuf *b, const char *s)
{
	strbuf_putc(b, '"');
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			strbuf_printf(b, "\\%c", c);
		else if (c < 0x20)
			strbuf_printf(b, "\\u%04x", c);
		else
			strbuf_putc(b, (char)c);
	}
	strbuf_putc(b, '"');
}

static void js_hex(struct strbuf *b, const uint8_t *p, size_t n)
{
	strbuf_putc(b, '"');
	for (size_t i = 0; i < n; i++)
		strbuf_printf(b, "%02x", p[i]);
	strbuf_putc(b, '"');
}

static void js_attr(struct strbuf *b, const struct span_attr *a)
{
	strbuf_puts(b, "{\"key\":");
	js_string(b, a->key);
	strbuf_puts(b, ",\"value\":{");
	switch (a->type) {
	case SPAN_ATTR_STRING:
		strbuf_puts(b, "\"stringValue\":");
		js_string(b, a->v.s);
		break;
	case SPAN_ATTR_BOOL:
		strbuf_puts(b, a->v.b ? "\"boolValue\":true" : "\"boolValue\":false");
		break;
	case SPAN_ATTR_INT:
		strbuf_printf(b, "\"intValue\":\"%lld\"", (long long)a->v.i);
		break;
	case SPAN_ATTR_DOUBLE:
		strbuf_printf(b, "\"doubleValue\":%.17g", a->v.d);
		break;
	}
	strbuf_puts(b, "}}");
}

static void js_str_attr(struct strbuf *b, const char *key, const char *value, bool comma)
{
	struct span_attr a = { .key = key, .type = SPAN_ATTR_STRING };

	snprintf(a.v.s, sizeof(a.v.s), "%s", value ? value : "");
	if (comma)
		strbuf_putc(b, ',');
	js_attr(b, &a);
}

static void js_span(struct strbuf *b, const struct span *s)
{
	strbuf_puts(b, "{\"traceId\":");
	js_hex(b, s->trace_id, sizeof(s->trace_id));
	strbuf_puts(b, ",\"spanId\":");
	js_hex(b, s->span_id, sizeof(s->span_id));
	if (!all_zero(s->parent_span_id, sizeof(s->parent_span_id))) {
		strbuf_puts(b, ",\"parentSpanId\":");
		js_hex(b, s->parent_span_id, sizeof(s->parent_span_id));
	}
	strbuf_puts(b, ",\"name\":");
	js_string(b, s->name);
	strbuf_printf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\"",
		      (int)s->kind, (unsigned long long)s->start_unix_ns,
		      (unsigned long long)s->end_unix_ns);
	strbuf_puts(b, ",\"attributes\":[");
	for (size_t i = 0; i < s->n_attrs; i++) {
		if (i)
			strbuf_putc(b, ',');
		js_attr(b, &s->attrs[i]);
	}
	strbuf_putc(b, ']');
	if (s->status != SPAN_STATUS_UNSET) {
		strbuf_puts(b, ",\"status\":{");
		if (s->status_message[0]) {
			strbuf_puts(b, "\"message\":");
			js_string(b, s->status_message);
			strbuf_putc(b, ',');
		}
		strbuf_printf(b, "\"code\":%d}", (int)s->status);
	}
	strbuf_putc(b, '}');
}

static void js_resource_spans(struct strbuf *out, const struct otlp_resource *r,
			      const struct span *spans, size_t n, size_t first)
{
	bool comma = false;

	strbuf_puts(out, "{\"resource\":{\"attributes\":[");
	js_str_attr(out, "service.name", service_of(r, spans, first), false);
	js_str_attr(out, "host.name", r->host_name, true);
	js_str_attr(out, "meshd.version", r->version, true);
	strbuf_puts(out, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"datapunk-mesh/meshd\","
			 "\"version\":");
	js_string(out, r->version ? r->version : "");
	strbuf_puts(out, "},\"spans\":[");
	for (size_t i = first; i < n; i++) {
		if (!same_service(r, spans, first, i))
			continue;
		if (comma)
			strbuf_putc(out, ',');
		js_span(out, &spans[i]);
		comma = true;
	}
	strbuf_puts(out, "]}]}");
}

int otlp_encode_json(const struct otlp_resource *r, const struct span *spans, size_t n,
		     struct strbuf *out)
{
	bool comma = false;

	strbuf_puts(out, "{\"resourceSpans\":[");
	for (size_t i = 0; i < n; i++) {
		if (seen_before(r, spans, i))
			continue;
		if (comma)
			strbuf_putc(out, ',');
		js_resource_spans(out, r, spans, n, i);
		comma = true;
	}
	strbuf_puts(out, "]}");
	return strbuf_error(out);
}
