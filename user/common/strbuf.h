/* Growable byte buffer for building text (HTTP responses, /metrics exposition, JSON). An
 * allocation failure is sticky: later appends do nothing and strbuf_error() reports -ENOMEM, so
 * builders append freely and check once at the end. Not thread-safe. */
#ifndef MESH_STRBUF_H
#define MESH_STRBUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct strbuf {
	char *data; /* NUL-terminated when len > 0 or after any append */
	size_t len;
	size_t cap;
	int err; /* 0 or -ENOMEM, sticky */
};

#define STRBUF_INIT                                                                                \
	{                                                                                          \
		0                                                                                  \
	}

/* Releases the storage and resets to empty. Accepts an empty buffer. */
void strbuf_free(struct strbuf *sb);
/* Empties the buffer but keeps its storage (and clears a sticky error). */
void strbuf_reset(struct strbuf *sb);
/* Makes room for `extra` more bytes (plus the NUL). Returns 0 or -ENOMEM (sticky). */
int strbuf_reserve(struct strbuf *sb, size_t extra);
void strbuf_append(struct strbuf *sb, const void *p, size_t n);
void strbuf_puts(struct strbuf *sb, const char *s);
void strbuf_putc(struct strbuf *sb, char c);
/* Appends a decimal unsigned integer without going through printf (hot path of /metrics). */
void strbuf_put_u64(struct strbuf *sb, uint64_t v);
/* Writes `v` in decimal at `dst` (room for 20 bytes; no NUL) and returns the length: the one
 * integer formatter behind strbuf_put_u64, Prometheus samples and endpoint text. */
size_t fmt_u64(char *dst, uint64_t v);
void strbuf_printf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_vprintf(struct strbuf *sb, const char *fmt, va_list ap);
/* Takes ownership of the text (never NULL unless the buffer failed: then NULL, errno ENOMEM);
 * the buffer is left empty. Caller frees. */
char *strbuf_detach(struct strbuf *sb, size_t *len);
/* 0 or the sticky -ENOMEM. */
static inline int strbuf_error(const struct strbuf *sb)
{
	return sb->err;
}

#endif
