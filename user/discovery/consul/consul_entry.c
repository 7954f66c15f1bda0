/* Consul config entries for traffic splits, as pure functions: the service-splitter's splits,
 * the service-resolver's subsets, and the part of go-bexpr their Filter expressions use
 * (selector == / != value, value in / not in selector, selector contains / not contains value,
 * selector matches / not matches regex, selector is empty / is not empty, and, or, not,
 * parentheses), evaluated against one /v1/health/service entry (selectors are paths into it:
 * Service.Tags, Service.Meta.version, Service.ID, Node.Node, ...). Shapes as Consul answers
 * GET /v1/config/<kind>/<name> (agent/structs/config_entry_discoverychain.go). No I/O. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

#define FILTER_MAX_LEN 4096
#define FILTER_MAX_DEPTH 32
#define FILTER_MAX_PATH 8

enum fop { F_AND, F_OR, F_NOT, F_EQ, F_NE, F_IN, F_NOT_IN, F_EMPTY, F_NOT_EMPTY, F_RE, F_NOT_RE };

struct consul_filter {
	enum fop op;
	struct consul_filter *a, *b; /* operands of and/or/not */
	char *path[FILTER_MAX_PATH]; /* selector segments */
	size_t n_path;
	char *value;
	regex_t re;
	bool has_re;
};

/* --- tokens -------------------------------------------------------------------------------- */

struct lexer {
	const char *s;
	size_t pos;
	char tok[512];
	bool quoted; /* the current token was a quoted string */
	bool end;
	char *why;
	size_t why_len;
	int depth;
};

static bool word_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("_.:/-[]", c));
}

/* Reads a quoted string (opening quote at s[pos]) into l->tok. */
static bool lex_quoted(struct lexer *l)
{
	char q = l->s[l->pos++];
	size_t n = 0;

	for (; l->s[l->pos] && l->s[l->pos] != q; l->pos++) {
		char c = l->s[l->pos];

		if (q == '"' && c == '\\' && l->s[l->pos + 1])
			c = l->s[++l->pos];
		if (n + 1 >= sizeof(l->tok))
			return false;
		l->tok[n++] = c;
	}
	if (l->s[l->pos] != q)
		return false;
	l->pos++;
	l->tok[n] = '\0';
	l->quoted = true;
	return true;
}

/* Advances to the next token. Returns false (with l->why) on garbage. */
static bool lex(struct lexer *l)
{
	size_t n = 0;

	while (l->s[l->pos] == ' ' || l->s[l->pos] == '\t' || l->s[l->pos] == '\n')
		l->pos++;
	l->quoted = false;
	l->end = !l->s[l->pos];
	l->tok[0] = '\0';
	if (l->end)
		return true;
	if (l->s[l->pos] == '"' || l->s[l->pos] == '`') {
		if (lex_quoted(l))
			return true;
		snprintf(l->why, l->why_len, "unterminated string at %zu", l->pos + 1);
		return false;
	}
	if (strchr("()", l->s[l->pos]) || !strncmp(l->s + l->pos, "==", 2) ||
	    !strncmp(l->s + l->pos, "!=", 2)) {
		n = l->s[l->pos] == '(' || l->s[l->pos] == ')' ? 1 : 2;
		memcpy(l->tok, l->s + l->pos, n);
		l->tok[n] = '\0';
		l->pos += n;
		return true;
	}
	while (word_char(l->s[l->pos]) && n + 1 < sizeof(l->tok))
		l->tok[n++] = l->s[l->pos++];
	l->tok[n] = '\0';
	if (n)
		return true;
	snprintf(l->why, l->why_len, "unexpected character '%c' at %zu", l->s[l->pos], l->pos + 1);
	return false;
}

/* Whether the current token is the bare word `w`. */
static bool is(const struct lexer *l, const char *w)
{
	return !l->quoted && !l->end && !strcmp(l->tok, w);
}

/* Takes the current token when it is the bare word `w`. */
static bool take(struct lexer *l, const char *w, bool *err)
{
	if (!is(l, w))
		return false;
	*err = !lex(l);
	return true;
}

/* --- parse ----------------------------------------------------------------------------------- */

void consul_filter_free(struct consul_filter *f)
{
	if (!f)
		return;
	consul_filter_free(f->a);
	consul_filter_free(f->b);
	for (size_t i = 0; i < f->n_path; i++)
		free(f->path[i]);
	free(f->value);
	if (f->has_re)
		regfree(&f->re);
	free(f);
}

/* Splits a selector (Service.Meta.version) into f->path. */
static bool set_selector(struct consul_filter *f, const char *sel, struct lexer *l)
{
	char buf[512], *save = NULL, *seg;

	snprintf(buf, sizeof(buf), "%s", sel);
	if (strncmp(buf, "Service.", 8) && strcmp(buf, "Service") && strncmp(buf, "Node.", 5) &&
	    strcmp(buf, "Checks")) {
		snprintf(l->why, l->why_len, "unknown selector \"%s\" (expected Service.*, Node.*)",
			 sel);
		return false;
	}
	for (seg = strtok_r(buf, ".", &save); seg; seg = strtok_r(NULL, ".", &save)) {
		if (f->n_path == FILTER_MAX_PATH || !(f->path[f->n_path++] = strdup(seg)))
			return false;
	}
	return f->n_path > 0;
}

static struct consul_filter *node_new(enum fop op)
{
	struct consul_filter *f = calloc(1, sizeof(*f));

	if (f)
		f->op = op;
	return f;
}

/* The operand value after an operator. */
static bool operand(struct lexer *l, char **out)
{
	if (l->end || (!l->quoted && (!strcmp(l->tok, "(") || !strcmp(l->tok, ")")))) {
		snprintf(l->why, l->why_len, "expected a value, got %s",
			 l->end ? "the end" : l->tok);
		return false;
	}
	*out = strdup(l->tok);
	return *out && lex(l);
}

static bool parse_match(struct lexer *l, struct consul_filter *f)
{
	char left[512];
	bool left_quoted = l->quoted, err = false, neg;

	snprintf(left, sizeof(left), "%s", l->tok);
	if (!lex(l))
		return false;
	if (!left_quoted && (is(l, "==") || is(l, "!="))) {
		f->op = is(l, "==") ? F_EQ : F_NE;
		return lex(l) && set_selector(f, left, l) && operand(l, &f->value);
	}
	if (!left_quoted && take(l, "is", &err)) {
		neg = !err && take(l, "not", &err);
		f->op = neg ? F_NOT_EMPTY : F_EMPTY;
		if (err || !take(l, "empty", &err) || err) {
			snprintf(l->why, l->why_len, "expected \"empty\" after \"is\"");
			return false;
		}
		return set_selector(f, left, l);
	}
	neg = take(l, "not", &err);
	if (!err && take(l, "in", &err)) { /* value in selector */
		f->op = neg ? F_NOT_IN : F_IN;
		f->value = strdup(left);
		return !err && f->value && !l->end && set_selector(f, l->tok, l) && lex(l);
	}
	if (!err && !left_quoted && take(l, "contains", &err)) {
		f->op = neg ? F_NOT_IN : F_IN;
		return !err && set_selector(f, left, l) && operand(l, &f->value);
	}
	if (!err && !left_quoted && take(l, "matches", &err)) {
		f->op = neg ? F_NOT_RE : F_RE;
		if (err || !set_selector(f, left, l) || !operand(l, &f->value))
			return false;
		f->has_re = !regcomp(&f->re, f->value, REG_EXTENDED | REG_NOSUB);
		if (!f->has_re)
			snprintf(l->why, l->why_len, "invalid regular expression \"%s\"", f->value);
		return f->has_re;
	}
	if (!err)
		snprintf(l->why, l->why_len, "no operator after \"%s\"", left);
	return false;
}

static struct consul_filter *parse_or(struct lexer *l);

static struct consul_filter *parse_primary(struct lexer *l)
{
	struct consul_filter *f;
	bool err = false;

	if (++l->depth > FILTER_MAX_DEPTH) {
		snprintf(l->why, l->why_len, "nested too deeply");
		return NULL;
	}
	if (take(l, "(", &err)) {
		f = err ? NULL : parse_or(l);
		if (f && !take(l, ")", &err)) {
			snprintf(l->why, l->why_len, "missing )");
			consul_filter_free(f);
			return NULL;
		}
	} else if (take(l, "not", &err)) {
		f = node_new(F_NOT);
		if (f && (err || !(f->a = parse_primary(l)))) {
			consul_filter_free(f);
			f = NULL;
		}
	} else if (l->end) {
		snprintf(l->why, l->why_len, "unexpected end of expression");
		return NULL;
	} else {
		f = node_new(F_EQ);
		if (f && !parse_match(l, f)) {
			consul_filter_free(f);
			f = NULL;
		}
	}
	l->depth--;
	return err ? (consul_filter_free(f), NULL) : f;
}

/* left (op right)* for `and` (below `or`) and `or`. */
static struct consul_filter *parse_chain(struct lexer *l, const char *word, enum fop op,
					 struct consul_filter *(*sub)(struct lexer *))
{
	struct consul_filter *left = sub(l), *n;
	bool err = false;

	while (left && take(l, word, &err)) {
		n = node_new(op);
		if (!n || err || !(n->b = sub(l))) {
			consul_filter_free(n);
			consul_filter_free(left);
			return NULL;
		}
		n->a = left;
		left = n;
	}
	return left;
}

static struct consul_filter *parse_and(struct lexer *l)
{
	return parse_chain(l, "and", F_AND, parse_primary);
}

static struct consul_filter *parse_or(struct lexer *l)
{
	return parse_chain(l, "or", F_OR, parse_and);
}

struct consul_filter *consul_filter_parse(const char *expr, char *why, size_t why_len)
{
	struct lexer l = { .s = expr, .why = why, .why_len = why_len };
	struct consul_filter *f;

	snprintf(why, why_len, "out of memory");
	if (!expr || strlen(expr) > FILTER_MAX_LEN) {
		snprintf(why, why_len, "expression empty or longer than %d bytes", FILTER_MAX_LEN);
		return NULL;
	}
	if (!lex(&l))
		return NULL;
	f = parse_or(&l);
	if (f && !l.end) {
		snprintf(why, why_len, "unexpected \"%s\"", l.tok);
		consul_filter_free(f);
		return NULL;
	}
	if (f)
		why[0] = '\0';
	return f;
}

/* --- evaluate -------------------------------------------------------------------------------- */

static const cJSON *select_path(const struct consul_filter *f, const cJSON *entry)
{
	const cJSON *o = entry;

	for (size_t i = 0; o && i < f->n_path; i++)
		o = cJSON_GetObjectItemCaseSensitive(o, f->path[i]);
	return o;
}

/* A scalar as text (numbers as Consul's JSON writes them, booleans true/false). */
static const char *scalar(const cJSON *o, char *buf, size_t len)
{
	if (cJSON_IsString(o))
		return o->valuestring;
	if (cJSON_IsBool(o))
		return cJSON_IsTrue(o) ? "true" : "false";
	if (cJSON_IsNumber(o)) {
		snprintf(buf, len, "%.17g", o->valuedouble);
		return buf;
	}
	return "";
}

static bool is_empty(const cJSON *o)
{
	return !o || cJSON_IsNull(o) || (cJSON_IsString(o) && !o->valuestring[0]) ||
	       ((cJSON_IsArray(o) || cJSON_IsObject(o)) && !o->child);
}

static bool contains(const cJSON *o, const char *v)
{
	const cJSON *e;

	if (cJSON_IsString(o))
		return strstr(o->valuestring, v) != NULL;
	if (cJSON_IsObject(o))
		return cJSON_GetObjectItemCaseSensitive(o, v) != NULL;
	if (!cJSON_IsArray(o))
		return false;
	cJSON_ArrayForEach(e, o)
	{
		if (cJSON_IsString(e) && !strcmp(e->valuestring, v))
			return true;
	}
	return false;
}

bool consul_filter_match(const struct consul_filter *f, const cJSON *entry)
{
	const cJSON *o;
	char buf[64];

	if (!f)
		return false;
	switch (f->op) {
	case F_AND:
		return consul_filter_match(f->a, entry) && consul_filter_match(f->b, entry);
	case F_OR:
		return consul_filter_match(f->a, entry) || consul_filter_match(f->b, entry);
	case F_NOT:
		return !consul_filter_match(f->a, entry);
	default:
		break;
	}
	o = select_path(f, entry);
	switch (f->op) {
	case F_EQ:
	case F_NE:
		return !strcmp(scalar(o, buf, sizeof(buf)), f->value) == (f->op == F_EQ);
	case F_IN:
	case F_NOT_IN:
		return contains(o, f->value) == (f->op == F_IN);
	case F_EMPTY:
	case F_NOT_EMPTY:
		return is_empty(o) == (f->op == F_EMPTY);
	default:
		return f->has_re && (regexec(&f->re, scalar(o, buf, sizeof(buf)), 0, NULL, 0) ==
				     0) == (f->op == F_RE);
	}
}

/* --- config entries ---------------------------------------------------------------------------- */

/* A top-level member in Consul's spelling (CamelCase) or the snake_case the API also accepts. */
static const cJSON *member(const cJSON *o, const char *camel, const char *snake)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, camel);

	return m ? m : cJSON_GetObjectItemCaseSensitive(o, snake);
}

static const char *str_member(const cJSON *o, const char *camel, const char *snake)
{
	const cJSON *m = member(o, camel, snake);

	return cJSON_IsString(m) ? m->valuestring : "";
}

void consul_splits_free(struct config_split *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++)
		free(s[i].subset);
	free(s);
}

/* One entry of Splits into out (weight in hundredths). */
static int one_split(const cJSON *sp, const char *service, struct config_split *out, char *why,
		     size_t why_len)
{
	const cJSON *w = member(sp, "Weight", "weight");
	const char *to = str_member(sp, "Service", "service");
	double v = cJSON_IsNumber(w) ? w->valuedouble * 100 : -1;

	if (to[0] && strcmp(to, service)) {
		snprintf(why, why_len, "a split to another service is not supported (got \"%s\")",
			 to);
		return -EINVAL;
	}
	if (!(v >= 0 && v <= MESH_SPLIT_SCALE)) {
		snprintf(why, why_len, "split weight missing or outside 0..100");
		return -EINVAL;
	}
	out->weight = (uint32_t)lround(v);
	out->subset = strdup(str_member(sp, "ServiceSubset", "service_subset"));
	return out->subset ? 0 : -ENOMEM;
}

int consul_parse_splitter(const char *json, size_t len, const char *service,
			  struct config_split **out, size_t *n, char *why, size_t why_len)
{
	cJSON *root = cJSON_ParseWithLength(json, len);
	const cJSON *splits = member(root, "Splits", "splits"), *sp;
	uint32_t sum = 0;
	int err = 0;

	*out = NULL;
	*n = 0;
	if (!cJSON_IsObject(root) || !cJSON_IsArray(splits) || !cJSON_GetArraySize(splits) ||
	    cJSON_GetArraySize(splits) > MESH_SPLIT_MAX) {
		snprintf(why, why_len, "not a service-splitter with 1..%d splits", MESH_SPLIT_MAX);
		cJSON_Delete(root);
		return -EINVAL;
	}
	*out = calloc((size_t)cJSON_GetArraySize(splits), sizeof(**out));
	err = *out ? 0 : -ENOMEM;
	cJSON_ArrayForEach(sp, splits)
	{
		if (err || (err = one_split(sp, service, &(*out)[*n], why, why_len)))
			break;
		sum += (*out)[(*n)++].weight;
	}
	if (!err && sum != MESH_SPLIT_SCALE) {
		snprintf(why, why_len, "the split weights sum to %u.%02u, not 100", sum / 100,
			 sum % 100);
		err = -EINVAL;
	}
	cJSON_Delete(root);
	if (err) {
		consul_splits_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return err;
}

void consul_resolver_free(struct consul_resolver *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->subsets[i].name);
		consul_filter_free(r->subsets[i].filter);
	}
	free(r->subsets);
	free(r->default_subset);
	memset(r, 0, sizeof(*r));
}

/* One member of Subsets into r->subsets[r->n]. */
static int one_subset(struct consul_resolver *r, const cJSON *sub, char *why, size_t why_len)
{
	const char *filter = str_member(sub, "Filter", "filter");
	struct consul_subset *s = &r->subsets[r->n];
	char fwhy[160];

	s->name = strdup(sub->string);
	if (!s->name)
		return -ENOMEM;
	r->n++;
	if (!filter[0])
		return 0; /* no filter: every instance */
	s->filter = consul_filter_parse(filter, fwhy, sizeof(fwhy));
	if (!s->filter) {
		snprintf(why, why_len, "Filter for subset \"%s\" is not a valid expression: %s",
			 sub->string, fwhy);
		return -EINVAL;
	}
	return 0;
}

int consul_parse_resolver(const char *json, size_t len, struct consul_resolver *r, char *why,
			  size_t why_len)
{
	cJSON *root = cJSON_ParseWithLength(json, len);
	const cJSON *subsets = member(root, "Subsets", "subsets"), *sub;
	int err = 0;

	memset(r, 0, sizeof(*r));
	if (!cJSON_IsObject(root) || (subsets && !cJSON_IsObject(subsets))) {
		snprintf(why, why_len, "not a service-resolver object");
		cJSON_Delete(root);
		return -EINVAL;
	}
	r->subsets = calloc((size_t)cJSON_GetArraySize(subsets) + 1, sizeof(*r->subsets));
	r->default_subset = strdup(str_member(root, "DefaultSubset", "default_subset"));
	if (!r->subsets || !r->default_subset)
		err = -ENOMEM;
	cJSON_ArrayForEach(sub, subsets)
	{
		if (err || (err = one_subset(r, sub, why, why_len)))
			break;
	}
	cJSON_Delete(root);
	if (err)
		consul_resolver_free(r);
	return err;
}

char *consul_subsets_of(const struct consul_resolver *r, const cJSON *entry)
{
	size_t len = 1;
	char *out;

	for (size_t i = 0; i < r->n; i++)
		len += strlen(r->subsets[i].name) + 1;
	out = calloc(1, len);
	for (size_t i = 0; out && i < r->n; i++) {
		if (r->subsets[i].filter && !consul_filter_match(r->subsets[i].filter, entry))
			continue;
		if (out[0])
			strcat(out, ",");
		strcat(out, r->subsets[i].name);
	}
	return out;
}
