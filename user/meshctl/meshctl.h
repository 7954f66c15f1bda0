/* Shared pieces of meshctl: the parsed global options, the command-table type with prefix
 * matching, the one error printer, and the admin-socket client returning parsed JSON. Each noun
 * lives in its own file (status.c, services.c, ...). */
#ifndef MESHCTL_H
#define MESHCTL_H

#include <cjson/cJSON.h>
#include <stdbool.h>

struct mesh_config;

enum ctl_exit {
	CTL_OK = 0,
	CTL_FAIL = 1,
	CTL_USAGE = 2,
};

struct ctl {
	const char *socket; /* --socket, else admin.socket of the config (ctl_socket) */
	char *socket_owned; /* the latter, once looked up */
	const char *config; /* --config, MESH_CONFIG, or NULL */
	bool json;	    /* -o json */
	bool pre;	    /* check --pre: skip the daemon check */
	unsigned timeout_ms;
	/* ca init / cert issue (defaults from the config file's mtls keys) */
	const char *ca_cert, *ca_key; /* --ca-cert, --ca-key */
	const char *out_dir;	      /* --out */
	const char *trust_domain, *datacenter, *ttl;
	bool force;
};

struct ctl_cmd {
	const char *name;
	int (*fn)(struct ctl *c, int argc, char **argv); /* argv[0] is the command name */
	const char *help;
};

/* Runs the command of `table` whose name `argv[0]` equals or uniquely prefixes. Unknown or
 * ambiguous names are usage errors (2). `what` names the level for messages ("command"). */
int ctl_dispatch(const struct ctl_cmd *table, const char *what, struct ctl *c, int argc,
		 char **argv);
/* Prints `meshctl: <message>` to stderr; returns CTL_FAIL. The one error printer. */
int ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, for usage errors; returns CTL_USAGE. */
int ctl_usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Fails with usage when a command got more positional arguments than `max`. */
int ctl_no_extra_args(int argc, char **argv, int max);

/* The config file meshctl reads, as meshd would: --config, MESH_CONFIG, else the installed
 * /etc/meshd/meshd.json when it exists, else NULL (built-in defaults). */
const char *ctl_config_path(const struct ctl *c);
/* Loads that config with the MESH_* environment, as meshd would; on failure prints every
 * problem to stderr (unless `quiet`) and returns NULL. Caller frees with config_free. */
struct mesh_config *ctl_load_config(const struct ctl *c, bool quiet);
/* The admin socket meshd listens on: --socket, else `admin.socket` of the config above
 * (MESH_ADMIN__SOCKET included). Looked up once; NULL after reporting why it cannot be known. */
const char *ctl_socket(struct ctl *c);

/* Sends METHOD target to the daemon; on a 2xx answer stores the body (caller frees) in `*raw` and
 * its parse in `*json` (caller deletes; either out may be NULL). Non-2xx answers and transport
 * failures are reported through ctl_err. Returns CTL_OK or CTL_FAIL. With `keep_error`, a
 * non-2xx JSON body is still handed back (reload reports its errors that way). */
int ctl_request(struct ctl *c, const char *method, const char *target, char **raw, cJSON **json,
		bool keep_error, int *status);
/* ctl_request GET; with -o json prints the raw body and returns with *json = NULL. */
int ctl_get(struct ctl *c, const char *target, cJSON **json);

/* Accessors that tolerate missing keys: "" / 0 / false. */
const char *ctl_str(const cJSON *o, const char *key);
double ctl_num(const cJSON *o, const char *key);
bool ctl_bool(const cJSON *o, const char *key);
/* Formats a number of seconds as `1h2m3s` / `4.2s`. */
const char *ctl_duration(double seconds, char *buf, size_t len);

int cmd_status(struct ctl *c, int argc, char **argv);
int cmd_services(struct ctl *c, int argc, char **argv);
int cmd_backends(struct ctl *c, int argc, char **argv);
int cmd_split(struct ctl *c, int argc, char **argv);
int cmd_circuits(struct ctl *c, int argc, char **argv);
int cmd_config(struct ctl *c, int argc, char **argv);
int cmd_reload(struct ctl *c, int argc, char **argv);
int cmd_check(struct ctl *c, int argc, char **argv);
int cmd_uninstall(struct ctl *c, int argc, char **argv);
int cmd_identities(struct ctl *c, int argc, char **argv);
int cmd_pool(struct ctl *c, int argc, char **argv);
int cmd_ca(struct ctl *c, int argc, char **argv);
int cmd_cert(struct ctl *c, int argc, char **argv);

#endif
