/* meshctl plumbing: prefix-matching dispatch, the one error printer, and the admin-socket client
 * (one blocking HTTP request per call, JSON parsed with cJSON). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/http.h"
#include "config/config.h"
#include "meshctl/meshctl.h"

static void vreport(const char *fmt, va_list ap)
{
	fputs("meshctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

int ctl_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
	return CTL_FAIL;
}

int ctl_usage_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(fmt, ap);
	va_end(ap);
	fputs("Run 'meshctl --help' for usage.\n", stderr);
	return CTL_USAGE;
}

int ctl_no_extra_args(int argc, char **argv, int max)
{
	if (argc - 1 > max)
		return ctl_usage_err("%s: unexpected argument '%s'", argv[0], argv[max + 1]);
	return CTL_OK;
}

int ctl_dispatch(const struct ctl_cmd *table, const char *what, struct ctl *c, int argc,
		 char **argv)
{
	const struct ctl_cmd *found = NULL, *t;
	size_t n;

	if (argc < 1)
		return ctl_usage_err("missing %s", what);
	n = strlen(argv[0]);
	for (t = table; t->name; t++) {
		if (!strcmp(t->name, argv[0]))
			return t->fn(c, argc, argv);
		if (n && !strncmp(t->name, argv[0], n)) {
			if (found)
				return ctl_usage_err("ambiguous %s '%s' (%s, %s, ...)", what,
						     argv[0], found->name, t->name);
			found = t;
		}
	}
	if (!found)
		return ctl_usage_err("unknown %s '%s'", what, argv[0]);
	return found->fn(c, argc, argv);
}

const char *ctl_config_path(const struct ctl *c)
{
	if (c->config)
		return c->config;
	return access(CONFIG_INSTALLED_PATH, F_OK) == 0 ? CONFIG_INSTALLED_PATH : NULL;
}

struct mesh_config *ctl_load_config(const struct ctl *c, bool quiet)
{
	struct config_errors errs = { 0 };
	struct mesh_config *cfg = config_load(ctl_config_path(c), NULL, &errs);

	for (size_t i = 0; !cfg && !quiet && i < errs.n; i++)
		fprintf(stderr, "  %s\n", errs.msgs[i]);
	config_errors_free(&errs);
	return cfg;
}

const char *ctl_socket(struct ctl *c)
{
	struct mesh_config *cfg;
	const char *path = ctl_config_path(c);

	if (c->socket)
		return c->socket;
	cfg = ctl_load_config(c, false);
	if (!cfg) {
		ctl_err("cannot tell where meshd listens: the config %s is invalid (see above); "
			"fix it or pass --socket",
			path ? path : "(defaults and MESH_* environment)");
		return NULL;
	}
	c->socket = c->socket_owned = strdup(cfg->admin_socket);
	config_free(cfg);
	if (!c->socket)
		ctl_err("out of memory");
	return c->socket;
}

static int transport_error(const struct ctl *c, int err)
{
	if (err == -ENOENT || err == -ECONNREFUSED)
		return ctl_err("cannot reach meshd at %s: %s (is meshd running? see --socket)",
			       c->socket, strerror(-err));
	if (err == -EPERM)
		return ctl_err(
		    "refusing to talk to %s: the process listening there runs neither as "
		    "root nor as you (another user's socket?); nothing it says is shown",
		    c->socket);
	if (err == -EACCES)
		return ctl_err("cannot reach meshd at %s: %s (the socket is root-only: use sudo)",
			       c->socket, strerror(-err));
	return ctl_err("request to meshd at %s failed: %s", c->socket, strerror(-err));
}

/* The daemon's {"error": "..."} message, or the body itself. */
static int http_error(const char *target, int status, const char *body)
{
	cJSON *j = cJSON_Parse(body);
	const char *msg = cJSON_IsString(cJSON_GetObjectItem(j, "error"))
			      ? cJSON_GetObjectItem(j, "error")->valuestring
			      : body;

	ctl_err("%s: %d %s: %s", target, status, http_status_text(status), msg);
	cJSON_Delete(j);
	return CTL_FAIL;
}

int ctl_request(struct ctl *c, const char *method, const char *target, char **raw, cJSON **json,
		bool keep_error, int *status_out)
{
	char *body = NULL;
	int status = 0, err;

	if (!ctl_socket(c))
		return CTL_FAIL;
	err = http_unix_request(c->socket, method, target, NULL, 0, c->timeout_ms, &status, &body,
				NULL);
	if (err)
		return transport_error(c, err);
	if (status_out)
		*status_out = status;
	if ((status < 200 || status > 299) && !keep_error) {
		http_error(target, status, body);
		free(body);
		return CTL_FAIL;
	}
	if (json) {
		*json = cJSON_Parse(body);
		if (!*json) {
			free(body);
			return ctl_err("%s: the daemon's answer is not JSON", target);
		}
	}
	if (raw)
		*raw = body;
	else
		free(body);
	return CTL_OK;
}

int ctl_get(struct ctl *c, const char *target, cJSON **json)
{
	char *raw = NULL;
	int rc;

	*json = NULL;
	if (!c->json)
		return ctl_request(c, "GET", target, NULL, json, false, NULL);
	rc = ctl_request(c, "GET", target, &raw, NULL, false, NULL);
	if (rc == CTL_OK)
		fputs(raw, stdout);
	free(raw);
	return rc;
}

const char *ctl_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

double ctl_num(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

bool ctl_bool(const cJSON *o, const char *key)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

const char *ctl_duration(double s, char *buf, size_t len)
{
	unsigned long t = (unsigned long)s;

	if (s < 60)
		snprintf(buf, len, "%.1fs", s);
	else if (s < 3600)
		snprintf(buf, len, "%lum%lus", t / 60, t % 60);
	else if (s < 86400)
		snprintf(buf, len, "%luh%lum%lus", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, len, "%lud%luh%lum", t / 86400, t / 3600 % 24, t / 60 % 60);
	return buf;
}
