/* Prometheus text format writer behind prom.h. Escaping follows the 0.0.4 rules: label values
 * escape backslash, double quote and newline; HELP text escapes backslash and newline. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/prom.h"

/* The one escaper: writes `s` escaped (backslash, newline, and with `quote` the double quote) into
 * `dst`, at most `cap` bytes (no NUL), and returns the length the whole of it needs. */
static size_t escape(char *dst, size_t cap, const char *s, bool quote)
{
	size_t n = 0;

	for (; *s; s++) {
		bool esc = *s == '\\' || *s == '\n' || (quote && *s == '"');

		if (esc && n < cap)
			dst[n] = '\\';
		n += esc;
		if (n < cap)
			dst[n] = *s == '\n' ? 'n' : *s;
		n++;
	}
	return n;
}

static void put_escaped(struct strbuf *sb, const char *s, bool quote)
{
	size_t n = escape(NULL, 0, s, quote);

	if (strbuf_reserve(sb, n))
		return;
	sb->len += escape(sb->data + sb->len, n, s, quote);
	sb->data[sb->len] = '\0';
}

void prom_family(struct strbuf *sb, const char *name, const char *type, const char *help)
{
	strbuf_puts(sb, "# HELP ");
	strbuf_puts(sb, name);
	strbuf_putc(sb, ' ');
	put_escaped(sb, help, false);
	strbuf_puts(sb, "\n# TYPE ");
	strbuf_puts(sb, name);
	strbuf_putc(sb, ' ');
	strbuf_puts(sb, type);
	strbuf_putc(sb, '\n');
}

int prom_label_buf(char *dst, size_t len, const char *key, const char *value)
{
	size_t pos = strlen(dst), kl = strlen(key), vl = escape(NULL, 0, value, true);
	bool comma = pos > 0;

	if (pos + comma + kl + 3 + vl >= len)
		return -ENAMETOOLONG;
	if (comma)
		dst[pos++] = ',';
	memcpy(dst + pos, key, kl);
	pos += kl;
	dst[pos++] = '=';
	dst[pos++] = '"';
	pos += escape(dst + pos, vl, value, true);
	dst[pos++] = '"';
	dst[pos] = '\0';
	return 0;
}

void prom_label(struct strbuf *labels, const char *key, const char *value)
{
	if (labels->len)
		strbuf_putc(labels, ',');
	strbuf_puts(labels, key);
	strbuf_puts(labels, "=\"");
	put_escaped(labels, value, true);
	strbuf_putc(labels, '"');
}

/* Appends `name{labels,extra} ` with one reservation (the /metrics hot path: ~100,000 samples
 * per scrape at 10,000 backends), leaving room for `tail` more bytes. Returns 0 or -ENOMEM. */
static int put_name_labels(struct strbuf *sb, const char *name, const char *labels,
			   const char *extra, size_t tail)
{
	size_t nl = strlen(name), ll = labels ? strlen(labels) : 0, xl = extra ? strlen(extra) : 0;
	char *p;

	if (strbuf_reserve(sb, nl + ll + xl + 4 + tail))
		return sb->err;
	p = sb->data + sb->len;
	memcpy(p, name, nl);
	p += nl;
	if (ll || xl) {
		*p++ = '{';
		memcpy(p, labels ? labels : "", ll);
		p += ll;
		if (ll && xl)
			*p++ = ',';
		memcpy(p, extra ? extra : "", xl);
		p += xl;
		*p++ = '}';
	}
	*p++ = ' ';
	*p = '\0';
	sb->len = (size_t)(p - sb->data);
	return 0;
}

void prom_sample_u64(struct strbuf *sb, const char *name, const char *labels, const char *extra,
		     uint64_t v)
{
	if (put_name_labels(sb, name, labels, extra, 20 + 1))
		return;
	sb->len += fmt_u64(sb->data + sb->len, v);
	sb->data[sb->len++] = '\n';
	sb->data[sb->len] = '\0';
}

void prom_sample_double(struct strbuf *sb, const char *name, const char *labels, const char *extra,
			double v)
{
	if (put_name_labels(sb, name, labels, extra, 0))
		return;
	if (isnan(v))
		strbuf_puts(sb, "NaN");
	else if (isinf(v))
		strbuf_puts(sb, v > 0 ? "+Inf" : "-Inf");
	else
		strbuf_printf(sb, "%.15g", v);
	strbuf_putc(sb, '\n');
}

void prom_sample_nanos(struct strbuf *sb, const char *name, const char *labels, const char *extra,
		       uint64_t ns)
{
	char frac[10];
	uint64_t f = ns % 1000000000;
	int i, n = 9;

	if (put_name_labels(sb, name, labels, extra, 0))
		return;
	strbuf_put_u64(sb, ns / 1000000000);
	if (f) {
		for (i = 8; i >= 0; i--, f /= 10)
			frac[i] = (char)('0' + f % 10);
		while (frac[n - 1] == '0')
			n--;
		strbuf_putc(sb, '.');
		strbuf_append(sb, frac, (size_t)n);
	}
	strbuf_putc(sb, '\n');
}
