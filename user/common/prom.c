/* Prometheus text format writer behind prom.h. Escaping follows the 0.0.4 rules: label values
 * escape backslash, double quote and newline; HELP text escapes backslash and newline. */
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "common/prom.h"

static void put_escaped(struct strbuf *sb, const char *s, bool quote)
{
	const char *run = s;

	for (; *s; s++) {
		if (*s != '\\' && *s != '\n' && !(quote && *s == '"'))
			continue;
		strbuf_append(sb, run, (size_t)(s - run));
		strbuf_puts(sb, *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : "\\\"");
		run = s + 1;
	}
	strbuf_append(sb, run, (size_t)(s - run));
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
	char tmp[20];
	size_t i = sizeof(tmp);

	if (put_name_labels(sb, name, labels, extra, sizeof(tmp) + 1))
		return;
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	memcpy(sb->data + sb->len, tmp + i, sizeof(tmp) - i);
	sb->len += sizeof(tmp) - i;
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
