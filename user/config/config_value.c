/* Typed values of the key table: parsing one value from the file (a cJSON item) or from text
 * (MESH_* variable, default, preset) into its C storage with range checks, the rule text used in
 * error messages and docs, rendering a stored value back to text, and freeing owned storage. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_int.h"

/* A control character: never part of a value, replaced in problem lines. The one definition. */
static bool is_control(unsigned char c)
{
	return c < ' ' || c == 0x7f;
}

/* Stands in for a problem line that could not be allocated, so that running out of memory
 * still fails the load instead of silently dropping the problem. Never freed. */
static char oom_line[] = "(config): out of memory while reporting a problem (got ENOMEM, "
			 "expected memory)";

void cfg_errf(struct config_errors *errs, const char *fmt, ...)
{
	char **msgs, *line;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		line = oom_line;
	for (char *c = line; line != oom_line && *c; c++)
		if (is_control((unsigned char)*c))
			*c = '?'; /* values and key names from the input: one problem, one line */
	msgs = realloc(errs->msgs, (errs->n + 1) * sizeof(*msgs));
	if (!msgs) {
		if (line != oom_line)
			free(line);
		if (errs->n && errs->msgs[errs->n - 1] != oom_line) {
			free(errs->msgs[errs->n - 1]);
			errs->msgs[errs->n - 1] = oom_line;
		}
		return;
	}
	msgs[errs->n++] = line;
	errs->msgs = msgs;
}

void config_errors_free(struct config_errors *errs)
{
	size_t i;

	if (!errs)
		return;
	for (i = 0; i < errs->n; i++)
		if (errs->msgs[i] != oom_line)
			free(errs->msgs[i]);
	free(errs->msgs);
	errs->msgs = NULL;
	errs->n = 0;
}

/* The offending value as it was written: JSON text from the file, quoted text from env. */
static const char *got_str(const struct cfg_in *in, char *buf, size_t len)
{
	char *s = NULL;

	if (in->json)
		s = cJSON_PrintUnformatted((cJSON *)in->json);
	snprintf(buf, len, in->json ? "%s" : "\"%s\"", s ? s : in->text ? in->text : "");
	if (strlen(buf) == len - 1)
		memcpy(buf + len - 4, "...", 3);
	cJSON_free(s);
	return buf;
}

static int bad(const struct cfg_key *k, const struct cfg_in *in, const char *path,
	       struct config_errors *errs, const char *what)
{
	char got[96], rule[160];

	cfg_errf(errs, "%s: %s%s%s (got %s, expected %s)", path, what, in->env ? " in " : "",
		 in->env ? in->env : "", got_str(in, got, sizeof(got)),
		 cfg_rule(k, rule, sizeof(rule)));
	return -EINVAL;
}

static int parse_bool(const struct cfg_in *in, bool *v)
{
	if (in->json) {
		if (!cJSON_IsBool(in->json))
			return -EINVAL;
		*v = cJSON_IsTrue(in->json);
		return 0;
	}
	if (!strcmp(in->text, "true") || !strcmp(in->text, "1"))
		*v = true;
	else if (!strcmp(in->text, "false") || !strcmp(in->text, "0"))
		*v = false;
	else
		return -EINVAL;
	return 0;
}

/* Skips a run of decimal digits; returns how many there were. */
static size_t digits(const char **s)
{
	const char *p = *s;

	while (**s >= '0' && **s <= '9')
		(*s)++;
	return (size_t)(*s - p);
}

/* Whether `s` is exactly a JSON number (RFC 8259): -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
 * Text values (MESH_* variables) follow the file's grammar: no hex, no sign +, no whitespace,
 * no leading zeros, no inf or nan, which strtod alone would all accept. */
static bool json_number(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (!digits(&s))
		return false;
	if (*s == '.' && (s++, !digits(&s)))
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!digits(&s))
			return false;
	}
	return *s == '\0';
}

static int parse_number(const struct cfg_in *in, double *v)
{
	if (in->json) {
		if (!cJSON_IsNumber(in->json))
			return -EINVAL;
		*v = in->json->valuedouble;
		return 0;
	}
	if (!json_number(in->text))
		return -EINVAL;
	errno = 0;
	*v = strtod(in->text, NULL);
	return errno || !isfinite(*v) ? -EINVAL : 0;
}

static int set_number(const struct cfg_key *k, void *dst, const struct cfg_in *in, const char *path,
		      struct config_errors *errs)
{
	double v;

	if (parse_number(in, &v))
		return bad(k, in, path, errs, in->json ? "wrong type" : "not a number");
	if (k->type == CT_PERCENT)
		v *= 100; /* hundredths: an integer when the value has at most two decimals */
	if (k->type == CT_PERCENT && fabs(v - round(v)) < 1e-6)
		v = round(v);
	if (k->type != CT_RATIO && v != floor(v))
		return bad(k, in, path, errs,
			   k->type == CT_PERCENT ? "more than two decimals" : "not an integer");
	if (v < k->min || v > k->max || isnan(v))
		return bad(k, in, path, errs,
			   k->type == CT_RATIO ? "ratio outside 0..1" : "out of range");
	if (k->type == CT_RATIO)
		*(double *)dst = v;
	else if (k->type == CT_PORT)
		*(uint16_t *)dst = (uint16_t)v;
	else if (k->type == CT_INT)
		*(int *)dst = (int)v;
	else
		*(uint32_t *)dst = (uint32_t)v;
	return 0;
}

/* Length of `s`, scanning at most `max` + 1 bytes; *ctl tells whether a control character came
 * first. One pass for both rules of a string value. */
static size_t text_scan(const char *s, size_t max, bool *ctl)
{
	size_t n;

	for (n = 0; s[n] && n <= max; n++)
		if (is_control((unsigned char)s[n])) {
			*ctl = true;
			return n;
		}
	*ctl = false;
	return n;
}

static int set_string(const struct cfg_key *k, void *dst, const char *s, const struct cfg_in *in,
		      const char *path, struct config_errors *errs)
{
	char *copy = NULL;

	if (*s) {
		bool ctl;

		if (text_scan(s, 4096, &ctl) > 4096)
			return bad(k, in, path, errs, "too long");
		if (ctl)
			return bad(k, in, path, errs, "contains a control character");
		if (k->type == CT_PATH && s[0] != '/')
			return bad(k, in, path, errs, "not an absolute path");
		if (k->type == CT_URL && config_parse_url(s))
			return bad(k, in, path, errs, "invalid URL");
		if ((k->flags & CF_DNSNAME) && !cfg_is_dns_label(s))
			return bad(k, in, path, errs, "invalid name");
		copy = strdup(s);
		if (!copy)
			return -ENOMEM;
	}
	free(*(char **)dst);
	*(char **)dst = copy;
	return 0;
}

static int set_text(const struct cfg_key *k, void *dst, const struct cfg_in *in, const char *path,
		    struct config_errors *errs)
{
	const char *s = in->json ? cJSON_GetStringValue(in->json) : in->text;
	struct config_endpoint ep;
	uint64_t ns;
	int i;

	if (!s)
		return bad(k, in, path, errs, "wrong type");
	switch (k->type) {
	case CT_DURATION:
		if (config_parse_duration(s, &ns))
			return bad(k, in, path, errs, "invalid duration");
		if ((double)ns < k->min || (double)ns > k->max)
			return bad(k, in, path, errs, "out of range");
		*(uint64_t *)dst = ns;
		return 0;
	case CT_ENDPOINT:
		if (config_parse_endpoint(s, &ep))
			return bad(k, in, path, errs, "invalid address");
		*(struct config_endpoint *)dst = ep;
		return 0;
	case CT_ADDR:
		ep = *(struct config_endpoint *)dst;
		if (config_parse_address(s, &ep))
			return bad(k, in, path, errs, "invalid address");
		*(struct config_endpoint *)dst = ep;
		return 0;
	case CT_ENUM:
		for (i = 0; k->names[i]; i++) {
			if (!strcmp(k->names[i], s)) {
				*(int *)dst = i;
				return 0;
			}
		}
		return bad(k, in, path, errs, "unknown value");
	default:
		return set_string(k, dst, s, in, path, errs);
	}
}

/* Splits `text` at commas into trimmed items, empty ones kept so they can be reported (an
 * empty text is an empty list). The items point into *copy, which the caller frees. */
static char **split_commas(const char *text, size_t *n, char **copyp)
{
	char *copy = strdup(text), *tok, *next, **items = NULL, **tmp;

	*n = 0;
	*copyp = copy;
	if (!copy || !*copy)
		return NULL;
	for (tok = copy; tok; tok = next) {
		char *end;

		next = strchr(tok, ',');
		if (next)
			*next++ = '\0';
		while (*tok == ' ' || *tok == '\t')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		tmp = realloc(items, (*n + 1) * sizeof(*items));
		if (!tmp) {
			free(items);
			*n = 0;
			return NULL;
		}
		items = tmp;
		items[(*n)++] = tok;
	}
	return items;
}

/* Element rule for a list key: the same key seen as one string / endpoint. */
static struct cfg_key elem_key(const struct cfg_key *k)
{
	struct cfg_key e = *k;

	e.type = k->type == CT_EPLIST ? CT_ENDPOINT : k->type == CT_PORTLIST ? CT_PORT : CT_STRING;
	e.off = 0;
	return e;
}

static void free_items(const struct cfg_key *k, char *arr, size_t n)
{
	size_t i;

	for (i = 0; k->type == CT_STRLIST && i < n; i++)
		free(((char **)arr)[i]);
	free(arr);
}

static int set_list(const struct cfg_key *k, void *base, const struct cfg_in *in, const char *path,
		    struct config_errors *errs)
{
	size_t esz = k->type == CT_EPLIST     ? sizeof(struct config_endpoint)
		     : k->type == CT_PORTLIST ? sizeof(uint16_t)
					      : sizeof(char *);
	struct cfg_key ek = elem_key(k);
	char **items = NULL, *copy = NULL, epath[512];
	size_t i, n = 0;
	char *arr;
	int err = 0;

	if (in->json && !cJSON_IsArray(in->json))
		return bad(k, in, path, errs, "wrong type");
	if (in->json)
		n = (size_t)cJSON_GetArraySize(in->json);
	else if (!(items = split_commas(in->text, &n, &copy)) && *in->text) {
		free(copy);
		return -ENOMEM;
	}
	arr = calloc(n ? n : 1, esz);
	if (!arr) {
		err = -ENOMEM;
		goto out;
	}
	i = 0;
	for (const cJSON *it = in->json ? in->json->child : NULL; i < n; i++) {
		struct cfg_in ei = { .json = in->json ? it : NULL,
				     .text = items ? items[i] : NULL,
				     .env = in->env };

		const char *es = ei.json ? cJSON_GetStringValue(ei.json) : ei.text;

		snprintf(epath, sizeof(epath), "%s[%zu]", path, i);
		if (es && !*es)
			err = bad(&ek, &ei, epath, errs, "empty item");
		else if (cfg_set(&ek, arr + i * esz, &ei, epath, errs))
			err = -EINVAL;
		if (it)
			it = it->next;
	}
	if (err) {
		free_items(k, arr, n);
		goto out;
	}
	cfg_free_value(k, base);
	*(void **)((char *)base + k->off) = arr;
	*(size_t *)((char *)base + k->count_off) = n;
out:
	free(copy);
	free(items);
	return err;
}

int cfg_set(const struct cfg_key *k, void *base, const struct cfg_in *in, const char *path,
	    struct config_errors *errs)
{
	void *dst = (char *)base + k->off;
	bool b;

	switch (k->type) {
	case CT_BOOL:
		if (parse_bool(in, &b))
			return bad(k, in, path, errs, in->json ? "wrong type" : "not a boolean");
		*(bool *)dst = b;
		return 0;
	case CT_UINT:
	case CT_INT:
	case CT_RATIO:
	case CT_PORT:
	case CT_PERCENT:
		return set_number(k, dst, in, path, errs);
	case CT_STRLIST:
	case CT_EPLIST:
	case CT_PORTLIST:
		return set_list(k, base, in, path, errs);
	case CT_LIST:
		return bad(k, in, path, errs, "cannot be set here");
	default:
		return set_text(k, dst, in, path, errs);
	}
}

static const char *range_str(const struct cfg_key *k, char *buf, size_t len)
{
	char a[32], b[32];

	if (k->type == CT_DURATION)
		snprintf(buf, len, "%s..%s", cfg_duration_str((uint64_t)k->min, a, sizeof(a)),
			 cfg_duration_str((uint64_t)k->max, b, sizeof(b)));
	else
		snprintf(buf, len, "%.15g..%.15g", k->min, k->max);
	return buf;
}

const char *cfg_rule(const struct cfg_key *k, char *buf, size_t len)
{
	char r[80];
	size_t pos;
	int i;

	switch (k->type) {
	case CT_BOOL:
		return snprintf(buf, len, "true or false"), buf;
	case CT_UINT:
	case CT_INT:
	case CT_PORT:
		return snprintf(buf, len, "an integer in %s", range_str(k, r, sizeof(r))), buf;
	case CT_RATIO:
		return snprintf(buf, len, "a number in 0..1"), buf;
	case CT_PERCENT:
		return snprintf(buf, len, "a percentage in 0..100 in steps of 0.01"), buf;
	case CT_DURATION:
		return snprintf(buf, len, "a duration like 250ms, 10s, 5m, 1h in %s",
				range_str(k, r, sizeof(r))),
		       buf;
	case CT_STRING:
		return snprintf(buf, len, "%s",
				k->flags & CF_DNSNAME
				    ? "a lowercase DNS label ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
				    : "a string"),
		       buf;
	case CT_PATH:
		return snprintf(buf, len, "an absolute path"), buf;
	case CT_URL:
		return snprintf(buf, len, "an http:// or https:// URL"), buf;
	case CT_ENDPOINT:
		return snprintf(buf, len, "ip:port or [ipv6]:port"), buf;
	case CT_ADDR:
		return snprintf(buf, len, "an IPv4 or IPv6 address"), buf;
	case CT_ENUM:
		pos = (size_t)snprintf(buf, len, "one of ");
		for (i = 0; k->names[i] && pos < len; i++)
			pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", i ? "|" : "",
						k->names[i]);
		return buf;
	case CT_STRLIST:
		return snprintf(buf, len, "a list of %s (env: comma-separated)",
				k->flags & CF_DNSNAME ? "lowercase DNS labels" : "strings"),
		       buf;
	case CT_EPLIST:
		return snprintf(buf, len, "a list of ip:port (env: comma-separated)"), buf;
	case CT_PORTLIST:
		return snprintf(buf, len, "a list of ports in 1..65535 (env: comma-separated)"),
		       buf;
	case CT_LIST:
		return snprintf(buf, len, "a list of %s objects", k->sub->name), buf;
	}
	return "";
}

static const char *render_list(const struct cfg_key *k, const void *base, char *buf, size_t len)
{
	const void *arr = *(void *const *)((const char *)base + k->off);
	size_t n = *(const size_t *)((const char *)base + k->count_off), i, pos = 0;
	char ep[64];

	buf[0] = '\0';
	for (i = 0; i < n && pos < len; i++) {
		const char *s = ep;

		if (k->type == CT_STRLIST)
			s = ((char *const *)arr)[i];
		else if (k->type == CT_PORTLIST)
			snprintf(ep, sizeof(ep), "%u", ((const uint16_t *)arr)[i]);
		else
			config_endpoint_str((const struct config_endpoint *)arr + i, ep,
					    sizeof(ep));
		pos += (size_t)snprintf(buf + pos, len - pos, "%s%s", i ? "," : "", s);
	}
	return buf;
}

/* Name of enum value `v`, "?" when out of range (a config built by hand). */
static const char *enum_name(const struct cfg_key *k, int v)
{
	int i;

	for (i = 0; k->names[i]; i++)
		if (i == v)
			return k->names[i];
	return "?";
}

const char *cfg_render(const struct cfg_key *k, const void *base, char *buf, size_t len)
{
	const void *v = (const char *)base + k->off;

	switch (k->type) {
	case CT_BOOL:
		return snprintf(buf, len, "%s", *(const bool *)v ? "true" : "false"), buf;
	case CT_UINT:
		return snprintf(buf, len, "%u", *(const uint32_t *)v), buf;
	case CT_INT:
		return snprintf(buf, len, "%d", *(const int *)v), buf;
	case CT_PORT:
		return snprintf(buf, len, "%u", *(const uint16_t *)v), buf;
	case CT_RATIO:
		return snprintf(buf, len, "%.17g", *(const double *)v), buf;
	case CT_PERCENT:
		return snprintf(buf, len, "%u.%02u", *(const uint32_t *)v / 100,
				*(const uint32_t *)v % 100),
		       buf;
	case CT_DURATION:
		return cfg_duration_str(*(const uint64_t *)v, buf, len);
	case CT_ENDPOINT:
		return config_endpoint_str(v, buf, len);
	case CT_ADDR:
		return config_address_str(v, buf, len);
	case CT_ENUM:
		return snprintf(buf, len, "%s", enum_name(k, *(const int *)v)), buf;
	case CT_STRLIST:
	case CT_EPLIST:
	case CT_PORTLIST:
		return render_list(k, base, buf, len);
	case CT_LIST:
		return snprintf(buf, len, "%zu items",
				*(const size_t *)((const char *)base + k->count_off)),
		       buf;
	default:
		return snprintf(buf, len, "%s", *(char *const *)v ? *(char *const *)v : ""), buf;
	}
}

void cfg_free_value(const struct cfg_key *k, void *base)
{
	void **p = (void **)((char *)base + k->off);
	size_t *n = (size_t *)((char *)base + k->count_off), i;

	switch (k->type) {
	case CT_STRING:
	case CT_PATH:
	case CT_URL:
		free(*p);
		*p = NULL;
		return;
	case CT_STRLIST:
		for (i = 0; i < *n; i++)
			free(((char **)*p)[i]);
		break;
	case CT_LIST:
		for (i = 0; *p && i < *n; i++)
			cfg_free_object(k->sub, (char *)*p + i * k->sub->size);
		break;
	case CT_EPLIST:
	case CT_PORTLIST:
		break;
	default:
		return;
	}
	free(*p);
	*p = NULL;
	*n = 0;
}

void cfg_free_object(const struct cfg_desc *d, void *base)
{
	size_t i;

	for (i = 0; i < d->n_keys; i++)
		cfg_free_value(&d->keys[i], base);
}

void config_service_release(struct config_service *svc)
{
	cfg_free_object(&cfg_service_desc, svc);
	memset(svc, 0, sizeof(*svc));
}

static int dup_object(const struct cfg_desc *d, void *base, int err);

/* Gives key `k` of `base` (shallow-copied) its own copy of what it points to, or empties it once
 * `err` is set; returns `err` or -ENOMEM. */
static int dup_value(const struct cfg_key *k, void *base, int err)
{
	void **p = (void **)((char *)base + k->off);
	size_t *n = (size_t *)((char *)base + k->count_off);
	void *copy;

	switch (k->type) {
	case CT_STRING:
	case CT_PATH:
	case CT_URL:
		if (*p && (err || !(*p = strdup(*p))))
			return *p = NULL, -ENOMEM;
		return err;
	case CT_LIST:
		copy = !err && *p && *n ? malloc(*n * k->sub->size) : NULL;
		if (!copy) {
			err = err || !*p || !*n ? err : -ENOMEM;
			*p = NULL;
			*n = 0;
			return err;
		}
		memcpy(copy, *p, *n * k->sub->size);
		*p = copy;
		for (size_t i = 0; i < *n; i++)
			err = dup_object(k->sub, (char *)copy + i * k->sub->size, err);
		return err;
	default: /* per-service tables hold no other owned storage (string and address lists) */
		return err;
	}
}

/* Replaces every owned value of the shallow copy at `base` by its own copy, derived from the
 * table; after an error each one holds its own copy or is empty (cfg_free_object frees it). */
static int dup_object(const struct cfg_desc *d, void *base, int err)
{
	for (size_t i = 0; i < d->n_keys; i++)
		err = dup_value(&d->keys[i], base, err);
	return err;
}

int config_service_copy(struct config_service *dst, const struct config_service *src,
			const struct config_backend *backends, size_t n)
{
	*dst = *src;
	dst->backends = (struct config_backend *)backends;
	dst->n_backends = n;
	if (!dup_object(&cfg_service_desc, dst, 0))
		return 0;
	config_service_release(dst);
	return -ENOMEM;
}

const char *cfg_origin_name(uint8_t origin)
{
	static const char *const names[] = { "unset", "default",   "preset",
					     "file",  "consul_kv", "env" };

	origin &= (uint8_t)~ORIGIN_INHERITED;
	return origin < sizeof(names) / sizeof(names[0]) ? names[origin] : "?";
}
