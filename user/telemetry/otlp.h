/* OTLP trace encoding: spans (plain C structs) into an ExportTraceServiceRequest, as protobuf
 * (the protocol's default, written by hand: the wire format is small) or as OTLP/JSON. Pure: no
 * I/O, no clock; the exporter (tracer.c) batches spans and posts the result to
 * telemetry.tracing.endpoint. Field numbers: opentelemetry-proto's trace/v1/trace.proto,
 * common/v1/common.proto, resource/v1/resource.proto, collector/trace/v1/trace_service.proto. */
#ifndef MESH_OTLP_H
#define MESH_OTLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

#define SPAN_ATTRS_MAX 24
#define SPAN_STR_MAX 72 /* a service name (63), an [ip6]:port (47), a reason */

/* OTLP SpanKind and Status.StatusCode values. */
enum span_kind {
	SPAN_KIND_INTERNAL = 1,
	SPAN_KIND_SERVER = 2,
	SPAN_KIND_CLIENT = 3,
};

enum span_status {
	SPAN_STATUS_UNSET = 0,
	SPAN_STATUS_OK = 1,
	SPAN_STATUS_ERROR = 2,
};

enum span_attr_type {
	SPAN_ATTR_STRING = 1,
	SPAN_ATTR_INT = 2,
	SPAN_ATTR_BOOL = 3,
	SPAN_ATTR_DOUBLE = 4,
};

/* One attribute. `key` points at a string that outlives the span (a literal). */
struct span_attr {
	const char *key;
	enum span_attr_type type;
	union {
		char s[SPAN_STR_MAX];
		int64_t i;
		bool b;
		double d;
	} v;
};

struct span {
	uint8_t trace_id[16];
	uint8_t span_id[8];
	uint8_t parent_span_id[8]; /* all zero: a root span */
	char name[SPAN_STR_MAX];
	enum span_kind kind;
	uint64_t start_unix_ns, end_unix_ns;
	enum span_status status;
	char status_message[SPAN_STR_MAX];
	struct span_attr attrs[SPAN_ATTRS_MAX];
	size_t n_attrs;
	char
	    service_name[SPAN_STR_MAX]; /* its resource's service.name; "" = the export's default */
};

/* What every span of one export shares: the Resource and the InstrumentationScope. */
struct otlp_resource {
	const char *service_name; /* service.name */
	const char *host_name;	  /* host.name */
	const char *version;	  /* meshd.version and the scope's version */
};

/* Appends an attribute to `s` (silently ignored past SPAN_ATTRS_MAX; strings truncated to
 * SPAN_STR_MAX - 1 bytes). */
void span_attr_str(struct span *s, const char *key, const char *value);
void span_attr_int(struct span *s, const char *key, int64_t value);
void span_attr_bool(struct span *s, const char *key, bool value);
void span_attr_double(struct span *s, const char *key, double value);

/* Appends one ExportTraceServiceRequest holding `spans[0..n)` to `out`, as protobuf or as
 * OTLP/JSON (ids in lowercase hex, 64-bit integers as strings, enums as numbers): one
 * ResourceSpans per distinct service.name (a span's own, else `r`'s), in order of first
 * appearance, each with `r`'s host.name and version. Returns 0 or -ENOMEM. */
int otlp_encode_protobuf(const struct otlp_resource *r, const struct span *spans, size_t n,
			 struct strbuf *out);
int otlp_encode_json(const struct otlp_resource *r, const struct span *spans, size_t n,
		     struct strbuf *out);

#endif
