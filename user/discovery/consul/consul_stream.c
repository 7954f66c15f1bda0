/* Parsing a /v1/health/service answer as it streams in, with memory bounded by the largest
 * entry and the instances kept (not by the answer): a small scanner finds each top-level array
 * element (depth, strings, escapes), cJSON parses that one entry, and it is dropped once turned
 * into a backend (an IP address), a named instance (a hostname the caller resolves) or a count of
 * unusable ones; each instance gets its selector document only when the stream was asked to.
 * A 100,000-instance answer never sits in memory whole. Pure; any thread. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"
#include "discovery/state.h"

#define CONSUL_MAX_ENTRY (4u << 20)   /* one instance's JSON (Meta can be large) */
#define CONSUL_MAX_INSTANCES 1000000u /* entries kept per answer */

static const char NOT_PASSING[] = "not passing";

enum scan_state {
	SCAN_BEFORE = 0, /* before '[' */
	SCAN_BETWEEN,	 /* inside the array, between elements */
	SCAN_ELEMENT,	 /* inside an element */
	SCAN_AFTER,	 /* after ']' */
};

struct consul_stream {
	enum scan_state st;
	int depth;		 /* of {} and [] inside the element */
	bool in_str, esc, comma; /* comma: an element may start (after '[' or ',') */
	size_t elems;		 /* elements started */
	char *elem;		 /* bytes of the element being read */
	size_t len, cap;
	size_t cap_backends, cap_named;
	struct consul_health h;
	bool selectors; /* build each instance's selector document */
	int err;
	char why[128];
};

/* --- one entry -------------------------------------------------------------------------------- */

static bool parse_ip(const char *s, struct config_endpoint *ep)
{
	if (inet_pton(AF_INET, s, &ep->addr.v4) == 1) {
		ep->family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, &ep->addr.v6) == 1) {
		ep->family = AF_INET6;
		return true;
	}
	return false;
}

/* A DNS host name (RFC 1123 letters, digits, '-', '.'; '_' tolerated as Consul allows it). */
static bool is_hostname(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 253 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.' && s[i] != '_')
			return false;
	return true;
}

/* An integer JSON number in [min, max]. */
static bool get_uint(const cJSON *n, double min, double max, uint32_t *out)
{
	double v;

	if (!cJSON_IsNumber(n))
		return false;
	v = n->valuedouble;
	if (!(v >= min && v <= max) || v != (double)(uint32_t)v)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool all_checks_passing(const cJSON *entry)
{
	const cJSON *checks = cJSON_GetObjectItemCaseSensitive(entry, "Checks"), *c;

	if (!checks || cJSON_IsNull(checks))
		return true;
	if (!cJSON_IsArray(checks))
		return false;
	cJSON_ArrayForEach(c, checks)
	{
		const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "Status");

		if (!cJSON_IsString(st) || strcmp(st->valuestring, "passing") != 0)
			return false;
	}
	return true;
}

/* Service.Address, or Node.Address when the service has none (Consul's own rule). */
static const char *entry_address(const cJSON *entry, const cJSON *svc)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(svc, "Address");
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(entry, "Node");

	if (cJSON_IsString(a) && a->valuestring[0])
		return a->valuestring;
	a = cJSON_GetObjectItemCaseSensitive(node, "Address");
	return cJSON_IsString(a) ? a->valuestring : NULL;
}

/* Port and weight of an instance; NULL when usable, else why not. */
static const char *port_weight(const cJSON *svc, uint16_t *port, uint32_t *weight)
{
	const cJSON *passing = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(svc, "Weights"), "Passing");
	uint32_t p;

	if (!get_uint(cJSON_GetObjectItemCaseSensitive(svc, "Port"), 1, 65535, &p))
		return "port is not an integer in 1..65535";
	*port = (uint16_t)p;
	*weight = 1;
	if (passing && !get_uint(passing, 1, 65535, weight))
		return "Weights.Passing is not an integer in 1..65535";
	return NULL;
}

/* Service.Meta["mesh-port"]: the port other meshd dial for this instance's host (a string, as
 * every Consul meta value). 0 when absent; 0 and the instance noted when not a port. */
static uint16_t mesh_port(struct consul_health *h, const cJSON *svc, const char *addr,
			  uint16_t port)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(
	    cJSON_GetObjectItemCaseSensitive(svc, "Meta"), "mesh-port");
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(svc, "ID");
	struct consul_bad_mesh_port *bad;
	unsigned long p = 0;
	const char *c;

	if (!v || cJSON_IsNull(v))
		return 0;
	c = cJSON_IsString(v) ? v->valuestring : "";
	for (; *c >= '0' && *c <= '9' && p <= 65535; c++)
		p = p * 10 + (unsigned long)(*c - '0');
	if (cJSON_IsString(v) && v->valuestring[0] && !*c && p >= 1 && p <= 65535 &&
	    v->valuestring[0] != '0')
		return (uint16_t)p;
	if (h->n_bad_mesh_port >= CONSUL_BAD_MESH_PORT_MAX)
		return 0;
	bad = &h->bad_mesh_port[h->n_bad_mesh_port++];
	if (cJSON_IsString(id) && id->valuestring[0])
		snprintf(bad->instance, sizeof(bad->instance), "%s", id->valuestring);
	else
		snprintf(bad->instance, sizeof(bad->instance), "%.100s:%u", addr, port);
	snprintf(bad->value, sizeof(bad->value), "%s",
		 cJSON_IsString(v) ? v->valuestring : "(not a string)");
	return 0;
}

static bool grow(void **p, size_t *cap, size_t need, size_t size)
{
	size_t cap2 = *cap ? *cap : 16;
	void *n;

	if (need <= *cap)
		return true;
	while (cap2 < need)
		cap2 *= 2;
	n = realloc(*p, cap2 * size);
	if (!n)
		return false;
	*p = n;
	*cap = cap2;
	return true;
}

/* Copies member `k` of `from` (when present) into `to`. */
static bool keep_member(cJSON *to, const cJSON *from, const char *k)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(from, k);
	cJSON *d;

	if (!m)
		return true;
	d = cJSON_Duplicate(m, true);
	return d && cJSON_AddItemToObject(to, k, d);
}

/* The parts of an entry a resolver subset's Filter reads (consul_filter_match), as compact JSON
 * (malloc'd), or NULL on ENOMEM: Service ID, Service, Tags, Meta, Address, Port, Kind and Node
 * ID, Node, Address, Datacenter, Meta. */
static char *selector_doc(const cJSON *entry)
{
	static const char *const sk[] = {
		"ID", "Service", "Tags", "Meta", "Address", "Port", "Kind"
	};
	static const char *const nk[] = { "ID", "Node", "Address", "Datacenter", "Meta" };
	const cJSON *svc = cJSON_GetObjectItemCaseSensitive(entry, "Service");
	const cJSON *node = cJSON_GetObjectItemCaseSensitive(entry, "Node");
	cJSON *doc = cJSON_CreateObject(), *s = cJSON_AddObjectToObject(doc, "Service"),
	      *n = cJSON_AddObjectToObject(doc, "Node");
	bool ok = s && n;
	char *out = NULL;

	for (size_t i = 0; ok && i < sizeof(sk) / sizeof(sk[0]); i++)
		ok = keep_member(s, svc, sk[i]);
	for (size_t i = 0; ok && cJSON_IsObject(node) && i < sizeof(nk) / sizeof(nk[0]); i++)
		ok = keep_member(n, node, nk[i]);
	if (ok)
		out = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	return out;
}

/* Adds one entry's instance: a backend, a named instance, or a reason it is unusable. */
static const char *add_entry(struct consul_stream *s, const cJSON *entry)
{
	const cJSON *svc = cJSON_GetObjectItemCaseSensitive(entry, "Service");
	struct consul_health *h = &s->h;
	struct config_backend b = { 0 };
	const char *addr, *why;
	uint16_t port, mport;
	uint32_t weight;

	if (!cJSON_IsObject(svc))
		return "entry without a Service object";
	if (!all_checks_passing(entry))
		return NOT_PASSING;
	addr = entry_address(entry, svc);
	if (!addr || (!parse_ip(addr, &b.endpoint) && !is_hostname(addr)))
		return "address is neither an IP address nor a host name";
	why = port_weight(svc, &port, &weight);
	if (why)
		return why;
	if (h->n + h->n_named >= CONSUL_MAX_INSTANCES)
		return "too many instances";
	mport = mesh_port(h, svc, addr, port);
	if (b.endpoint.family) {
		if (!grow((void **)&h->backends, &s->cap_backends, h->n + 1, sizeof(b)))
			return "out of memory";
		b.endpoint.port = port;
		b.weight = weight;
		b.mesh_port = mport;
		if (s->selectors && !(b.subset = selector_doc(entry)))
			return "out of memory";
		h->backends[h->n++] = b;
		return NULL;
	}
	if (!grow((void **)&h->named, &s->cap_named, h->n_named + 1, sizeof(*h->named)) ||
	    !(h->named[h->n_named].host = strdup(addr)))
		return "out of memory";
	h->named[h->n_named].sel = NULL;
	if (s->selectors && !(h->named[h->n_named].sel = selector_doc(entry))) {
		free(h->named[h->n_named].host);
		return "out of memory";
	}
	h->named[h->n_named].port = port;
	h->named[h->n_named].mesh_port = mport;
	h->named[h->n_named++].weight = weight;
	return NULL;
}

static void element_done(struct consul_stream *s)
{
	cJSON *entry = cJSON_ParseWithLength(s->elem, s->len);
	const char *why_not;

	s->len = 0;
	if (!entry) {
		s->err = -EINVAL;
		snprintf(s->why, sizeof(s->why), "invalid JSON");
		return;
	}
	why_not = add_entry(s, entry);
	cJSON_Delete(entry);
	if (why_not && why_not != NOT_PASSING && !s->h.skipped++)
		snprintf(s->h.skip_reason, sizeof(s->h.skip_reason), "%s", why_not);
}

/* --- the scanner ------------------------------------------------------------------------------ */

static bool put(struct consul_stream *s, char c)
{
	if (s->len + 1 >= CONSUL_MAX_ENTRY) {
		s->err = -EMSGSIZE;
		snprintf(s->why, sizeof(s->why), "an entry larger than %u bytes", CONSUL_MAX_ENTRY);
		return false;
	}
	if (!grow((void **)&s->elem, &s->cap, s->len + 2, 1)) {
		s->err = -ENOMEM;
		return false;
	}
	s->elem[s->len++] = c;
	s->elem[s->len] = '\0';
	return true;
}

static bool bad(struct consul_stream *s, const char *why)
{
	s->err = -EINVAL;
	snprintf(s->why, sizeof(s->why), "%s", why);
	return false;
}

/* One byte inside an element. Returns false on error. */
static bool scan_element(struct consul_stream *s, char c)
{
	if (s->in_str) {
		if (s->esc)
			s->esc = false;
		else if (c == '\\')
			s->esc = true;
		else if (c == '"')
			s->in_str = false;
		return put(s, c);
	}
	if (s->depth == 0 && (c == ',' || c == ']')) { /* a scalar element ends */
		element_done(s);
		s->st = c == ',' ? SCAN_BETWEEN : SCAN_AFTER;
		s->comma = true;
		return !s->err;
	}
	if (c == '"')
		s->in_str = true;
	else if (c == '{' || c == '[')
		s->depth++;
	else if (c == '}' || c == ']')
		s->depth--;
	if (s->depth < 0)
		return bad(s, "invalid JSON");
	if (!put(s, c))
		return false;
	if (s->depth == 0 && (c == '}' || c == ']')) {
		element_done(s);
		s->st = SCAN_BETWEEN;
		s->comma = false;
	}
	return !s->err;
}

static bool scan(struct consul_stream *s, char c)
{
	bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r';

	switch (s->st) {
	case SCAN_BEFORE:
		if (space)
			return true;
		if (c != '[')
			return bad(s, c == '{' ? "not a JSON array" : "invalid JSON");
		s->st = SCAN_BETWEEN;
		s->comma = true; /* an element may follow at once */
		return true;
	case SCAN_BETWEEN:
		if (space)
			return true;
		if (c == ']' && (!s->comma || !s->elems)) { /* no trailing comma */
			s->st = SCAN_AFTER;
			return true;
		}
		if (c == ',' && !s->comma) {
			s->comma = true;
			return true;
		}
		if (!s->comma || c == ',' || c == ']')
			return bad(s, "invalid JSON");
		s->st = SCAN_ELEMENT;
		s->depth = 0;
		s->in_str = s->esc = false;
		s->elems++;
		return scan_element(s, c);
	case SCAN_ELEMENT:
		return scan_element(s, c);
	default:
		return space || bad(s, "invalid JSON");
	}
}

struct consul_stream *consul_stream_new(bool selectors)
{
	struct consul_stream *s = calloc(1, sizeof(*s));

	if (s)
		s->selectors = selectors;
	return s;
}

int consul_stream_feed(struct consul_stream *s, const char *buf, size_t len)
{
	for (size_t i = 0; i < len && !s->err; i++)
		scan(s, buf[i]);
	return s->err;
}

int consul_stream_finish(struct consul_stream *s, struct consul_health *out, char *why,
			 size_t why_len)
{
	int err = s->err;

	if (!err && s->st != SCAN_AFTER) {
		bad(s, "invalid JSON");
		err = s->err;
	}
	memset(out, 0, sizeof(*out));
	if (err) {
		snprintf(why, why_len, "%s", s->why);
		return err;
	}
	*out = s->h;
	memset(&s->h, 0, sizeof(s->h));
	if (!out->backends)
		out->backends = calloc(1, sizeof(*out->backends));
	return out->backends ? 0 : -ENOMEM;
}

void consul_health_free(struct consul_health *h)
{
	for (size_t i = 0; i < h->n_named; i++) {
		free(h->named[i].host);
		free(h->named[i].sel);
	}
	free(h->named);
	state_backends_free(h->backends, h->n);
	memset(h, 0, sizeof(*h));
}

void consul_stream_free(struct consul_stream *s)
{
	if (!s)
		return;
	consul_health_free(&s->h);
	free(s->elem);
	free(s);
}

int consul_parse_health(const char *json, size_t len, struct consul_health *out, char *why,
			size_t why_len)
{
	struct consul_stream *s = consul_stream_new(true);
	int err;

	memset(out, 0, sizeof(*out));
	if (!s)
		return -ENOMEM;
	consul_stream_feed(s, json, len);
	err = consul_stream_finish(s, out, why, why_len);
	consul_stream_free(s);
	return err;
}
