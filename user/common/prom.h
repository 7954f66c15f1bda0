/* Prometheus text exposition format 0.0.4 writer: family headers (HELP/TYPE), label rendering
 * with escaping, and samples. Pure string building into a strbuf; callers render a sample's
 * constant labels once and reuse them across families (the /metrics hot path). */
#ifndef MESH_PROM_H
#define MESH_PROM_H

#include <stdint.h>

#include "common/strbuf.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Appends "# HELP name help\n# TYPE name type\n"; `type` is counter, gauge or untyped. */
void prom_family(struct strbuf *sb, const char *name, const char *type, const char *help);
/* Appends `key="value"` to a label list, preceded by a comma when the list is not empty. The
 * value is escaped (backslash, double quote, newline). */
void prom_label(struct strbuf *labels, const char *key, const char *value);
/* The same into a fixed NUL-terminated buffer of `len` bytes (what it holds is kept), without
 * allocating: per-object label lists rendered once per scrape. Returns 0, or -ENAMETOOLONG
 * (nothing appended) when it does not fit. */
int prom_label_buf(char *dst, size_t len, const char *key, const char *value);
/* Appends one sample `name{labels,extra} value\n`. `labels` and `extra` are rendered label lists
 * (from prom_label, or literals like `result="ok"`); either may be NULL or "". */
void prom_sample_u64(struct strbuf *sb, const char *name, const char *labels, const char *extra,
		     uint64_t v);
void prom_sample_double(struct strbuf *sb, const char *name, const char *labels, const char *extra,
			double v);
/* Same, for a duration in nanoseconds written as exact decimal seconds (no printf). */
void prom_sample_nanos(struct strbuf *sb, const char *name, const char *labels, const char *extra,
		       uint64_t ns);

#endif
