/* Pure decoding of Consul Connect answers (cJSON, Consul JSON only): the CA roots and a leaf
 * certificate of the agent's Connect CA endpoints, and the intentions that match a destination,
 * put in Consul's evaluation order. Shapes follow /work/shared/consul/agent-connect-ca-*.json and
 * connect-intentions-match.json. No I/O, no OpenSSL (PEM text is handed on as text); any
 * thread. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/consul/consul.h"

#define PEM_MAX (256u << 10)

static const char *str_item(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

static cJSON *parse_doc(const char *json, size_t len, char *why, size_t wlen)
{
	cJSON *doc = cJSON_ParseWithLength(json, len);

	if (!doc)
		snprintf(why, wlen, "not JSON");
	return doc;
}

/* RootCert then each IntermediateCerts entry, one malloc'd PEM text. */
static char *root_pem(const cJSON *r)
{
	const char *cert = str_item(r, "RootCert");
	const cJSON *ims = cJSON_GetObjectItemCaseSensitive(r, "IntermediateCerts");
	int n = cJSON_IsArray(ims) ? cJSON_GetArraySize(ims) : 0;
	size_t len;
	char *out;

	if (!cert || !strstr(cert, "-----BEGIN CERTIFICATE-----"))
		return NULL;
	len = strlen(cert) + 1;
	for (int i = 0; i < n; i++) {
		const char *im = cJSON_GetStringValue(cJSON_GetArrayItem(ims, i));

		len += im ? strlen(im) + 1 : 0;
	}
	if (len > PEM_MAX || !(out = malloc(len)))
		return NULL;
	strcpy(out, cert);
	for (int i = 0; i < n; i++) {
		const char *im = cJSON_GetStringValue(cJSON_GetArrayItem(ims, i));

		if (im) {
			strcat(out, "\n");
			strcat(out, im);
		}
	}
	return out;
}

void consul_ca_roots_free(struct consul_ca_roots *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		free(r->roots[i].id);
		free(r->roots[i].pem);
	}
	free(r->roots);
	free(r->trust_domain);
	free(r->active_id);
	memset(r, 0, sizeof(*r));
}

static int parse_root(const cJSON *j, struct consul_ca_root *r, size_t i, char *why, size_t wlen)
{
	const char *id = str_item(j, "ID");
	const cJSON *active = cJSON_GetObjectItemCaseSensitive(j, "Active");

	if (!cJSON_IsObject(j) || !id || !id[0])
		return snprintf(why, wlen, "Roots[%zu]: no ID", i), -EINVAL;
	r->id = strdup(id);
	r->pem = root_pem(j);
	r->active = cJSON_IsTrue(active);
	if (!r->id)
		return -ENOMEM;
	if (!r->pem)
		return snprintf(why, wlen, "Roots[%zu]: no PEM RootCert", i), -EINVAL;
	return 0;
}

static int roots_from(const cJSON *doc, struct consul_ca_roots *out, char *why, size_t wlen)
{
	const char *td = str_item(doc, "TrustDomain"), *active = str_item(doc, "ActiveRootID");
	const cJSON *roots = cJSON_GetObjectItemCaseSensitive(doc, "Roots"), *j;
	size_t n_active = 0;
	int err;

	if (!td || !td[0]) /* its syntax is the SPIFFE code's business */
		return snprintf(why, wlen, "no TrustDomain"), -EINVAL;
	if (!active || !cJSON_IsArray(roots) || !cJSON_GetArraySize(roots))
		return snprintf(why, wlen, "no ActiveRootID or no Roots"), -EINVAL;
	out->trust_domain = strdup(td);
	out->active_id = strdup(active);
	out->roots = calloc((size_t)cJSON_GetArraySize(roots), sizeof(*out->roots));
	if (!out->trust_domain || !out->active_id || !out->roots)
		return -ENOMEM;
	cJSON_ArrayForEach(j, roots)
	{
		err = parse_root(j, &out->roots[out->n], out->n, why, wlen);
		out->n++;
		if (err)
			return err;
		if (out->roots[out->n - 1].active) {
			n_active++;
			if (strcmp(out->roots[out->n - 1].id, active))
				return snprintf(why, wlen, "the Active root is not ActiveRootID"),
				       -EINVAL;
		}
	}
	if (n_active != 1)
		return snprintf(why, wlen, "%zu roots marked Active, expected 1", n_active),
		       -EINVAL;
	return 0;
}

int consul_parse_roots(const char *json, size_t len, struct consul_ca_roots *out, char *why,
		       size_t wlen)
{
	cJSON *doc = parse_doc(json, len, why, wlen);
	int err;

	memset(out, 0, sizeof(*out));
	if (!doc)
		return -EINVAL;
	err = cJSON_IsObject(doc) ? roots_from(doc, out, why, wlen)
				  : (snprintf(why, wlen, "not an object"), -EINVAL);
	cJSON_Delete(doc);
	if (err)
		consul_ca_roots_free(out);
	return err;
}

/* --- leaf ------------------------------------------------------------------------------------ */

static void wipe_free(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

void consul_leaf_free(struct consul_leaf *l)
{
	if (!l)
		return;
	free(l->service);
	free(l->service_uri);
	free(l->cert_pem);
	wipe_free(l->key_pem);
	memset(l, 0, sizeof(*l));
}

/* ServiceURI names `service`: it ends in "/svc/<service>". */
static bool uri_names(const char *uri, const char *service)
{
	size_t ul = strlen(uri), sl = strlen(service);

	return !strncmp(uri, "spiffe://", 9) && ul > sl + 5 &&
	       !strncmp(uri + ul - sl - 5, "/svc/", 5) && !strcmp(uri + ul - sl, service);
}

static int leaf_from(const cJSON *doc, const char *service, struct consul_leaf *out, char *why,
		     size_t wlen)
{
	const char *svc = str_item(doc, "Service"), *uri = str_item(doc, "ServiceURI");
	const char *cert = str_item(doc, "CertPEM"), *key = str_item(doc, "PrivateKeyPEM");
	const cJSON *mi = cJSON_GetObjectItemCaseSensitive(doc, "ModifyIndex");

	if (!svc || !uri || !cert || !key)
		return snprintf(why, wlen, "Service, ServiceURI, CertPEM or PrivateKeyPEM missing"),
		       -EINVAL;
	if (strcmp(svc, service) || !uri_names(uri, service))
		return snprintf(why, wlen, "a leaf for service \"%.64s\" (%.200s), expected %s",
				svc, uri, service),
		       -EINVAL;
	if (strlen(cert) > PEM_MAX || strlen(key) > PEM_MAX)
		return snprintf(why, wlen, "PEM text too large"), -EINVAL;
	out->service = strdup(svc);
	out->service_uri = strdup(uri);
	out->cert_pem = strdup(cert);
	out->key_pem = strdup(key);
	if (cJSON_IsNumber(mi) && mi->valuedouble >= 0 && mi->valuedouble < 1.8e19)
		out->modify_index = (uint64_t)mi->valuedouble;
	return out->service && out->service_uri && out->cert_pem && out->key_pem ? 0 : -ENOMEM;
}

int consul_parse_leaf(const char *json, size_t len, const char *service, struct consul_leaf *out,
		      char *why, size_t wlen)
{
	cJSON *doc = parse_doc(json, len, why, wlen);
	const cJSON *key;
	int err;

	memset(out, 0, sizeof(*out));
	if (!doc)
		return -EINVAL;
	err = cJSON_IsObject(doc) ? leaf_from(doc, service, out, why, wlen)
				  : (snprintf(why, wlen, "not an object"), -EINVAL);
	key = cJSON_GetObjectItemCaseSensitive(doc, "PrivateKeyPEM");
	if (cJSON_IsString(key) && key->valuestring) /* the parse tree held the key too */
		explicit_bzero(key->valuestring, strlen(key->valuestring));
	cJSON_Delete(doc);
	if (err)
		consul_leaf_free(out);
	return err;
}

/* --- intentions ------------------------------------------------------------------------------- */

unsigned consul_intention_precedence(const char *source, const char *destination)
{
	bool src = strcmp(source, "*") != 0, dst = strcmp(destination, "*") != 0;

	/* agent/structs/intention.go UpdatePrecedence, namespaces and partitions exact. */
	return dst ? (src ? 9 : 8) : (src ? 6 : 5);
}

void consul_intentions_free(struct consul_intention *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].source);
		free(v[i].destination);
	}
	free(v);
}

static int cmp_intention(const void *pa, const void *pb)
{
	const struct consul_intention *a = pa, *b = pb;
	int c;

	if (a->precedence != b->precedence)
		return a->precedence > b->precedence ? -1 : 1;
	c = strcmp(a->source, b->source);
	return c ? c : strcmp(a->destination, b->destination);
}

void consul_intentions_sort(struct consul_intention *v, size_t n)
{
	if (n > 1)
		qsort(v, n, sizeof(*v), cmp_intention);
}

/* "default" or absent: the only namespace and partition CE has. */
static bool default_scope(const cJSON *j, const char *key)
{
	const char *v = str_item(j, key);

	return !cJSON_GetObjectItemCaseSensitive(j, key) || (v && (!v[0] || !strcmp(v, "default")));
}

/* 1 when `j` applies here and was filled in, 0 when it is left out, -EINVAL / -ENOMEM. */
static int parse_intention(const cJSON *j, size_t i, struct consul_intention *it, char *why,
			   size_t wlen)
{
	const char *src = str_item(j, "SourceName"), *dst = str_item(j, "DestinationName");
	const char *action = str_item(j, "Action"), *peer = str_item(j, "SourcePeer");
	const cJSON *perms = cJSON_GetObjectItemCaseSensitive(j, "Permissions");

	if (!cJSON_IsObject(j) || !src || !dst || !src[0] || !dst[0])
		return snprintf(why, wlen, "entry %zu: no SourceName or DestinationName", i),
		       -EINVAL;
	if ((peer && peer[0]) || !default_scope(j, "SourceNS") ||
	    !default_scope(j, "DestinationNS") || !default_scope(j, "SourcePartition") ||
	    !default_scope(j, "DestinationPartition"))
		return 0;
	if (action && strcmp(action, "allow") && strcmp(action, "deny"))
		return snprintf(why, wlen, "entry %zu: Action \"%.32s\"", i, action), -EINVAL;
	if (!action && !(cJSON_IsArray(perms) && cJSON_GetArraySize(perms)))
		return snprintf(why, wlen, "entry %zu: neither Action nor Permissions", i), -EINVAL;
	it->allow = action && !strcmp(action, "allow"); /* L7 only: deny at L4 */
	it->precedence = consul_intention_precedence(src, dst);
	it->source = strdup(src);
	it->destination = strdup(dst);
	return it->source && it->destination ? 1 : -ENOMEM;
}

int consul_parse_intentions(const char *json, size_t len, const char *name,
			    struct consul_intention **out, size_t *n, char *why, size_t wlen)
{
	cJSON *doc = parse_doc(json, len, why, wlen);
	const cJSON *list, *j;
	int err = 0, r;

	*out = NULL;
	*n = 0;
	if (!doc)
		return -EINVAL;
	list = cJSON_IsObject(doc) ? cJSON_GetObjectItemCaseSensitive(doc, name) : NULL;
	if (!cJSON_IsArray(list) && !cJSON_IsNull(list)) {
		snprintf(why, wlen, "no list of intentions for \"%.64s\"", name);
		err = -EINVAL;
	} else if (!(*out = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof(**out)))) {
		err = -ENOMEM;
	}
	if (err)
		list = NULL;
	cJSON_ArrayForEach(j, list)
	{
		r = parse_intention(j, *n, &(*out)[*n], why, wlen);
		if (r < 0) {
			(*n)++; /* freed below */
			err = r;
			break;
		}
		*n += (size_t)r;
	}
	cJSON_Delete(doc);
	if (err) {
		consul_intentions_free(*out, *n);
		*out = NULL;
		*n = 0;
		return err;
	}
	consul_intentions_sort(*out, *n);
	return 0;
}
