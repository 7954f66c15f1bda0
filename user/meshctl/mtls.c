/* meshctl's mTLS nouns: `identities` and `pool` (GET /v1/mtls/identities, /v1/mtls/pool) as
 * tables, and the offline PKI: `ca init` (the built-in CA) and `cert issue SERVICE` (a pair for
 * cert_source files). Paths and names default to the config file's mtls keys (--config). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/table.h"
#include "config/config.h"
#include "meshctl/meshctl.h"
#include "mtls/mtls.h"

#define DEFAULT_CA_TTL_S (10ull * 365 * 24 * 3600)

static int print_identities(const cJSON *j)
{
	static const char *const h[] = { "SERVICE", "SPIFFE_ID", "SERIAL", "NOT_AFTER",
					 "SOURCE",  "CGROUPS",	 "ERROR" };
	struct table *t = table_new(7, h);
	const cJSON *o;
	int rc = 0;

	if (!t)
		return ctl_err("out of memory");
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(j, "identities"))
	{
		const char *row[] = { ctl_str(o, "service"), ctl_str(o, "spiffe_id"),
				      ctl_str(o, "serial"),  ctl_str(o, "not_after"),
				      ctl_str(o, "source"),  ctl_str(o, "cgroups"),
				      ctl_str(o, "error") };

		rc = rc ? rc : table_add_row(t, row);
	}
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(j, "roots"))
	{
		char src[64];
		const char *row[] = { "(root)",
				      ctl_str(o, "spiffe_id"),
				      ctl_str(o, "serial"),
				      ctl_str(o, "not_after"),
				      src,
				      "",
				      "" };

		snprintf(src, sizeof(src), "%s%s",
			 *ctl_str(o, "retained_until") ? "retained until " : "bundle",
			 ctl_str(o, "retained_until"));
		rc = rc ? rc : table_add_row(t, row);
	}
	if (!rc)
		rc = table_print(t, stdout);
	table_free(t);
	return rc ? ctl_err("cannot print the table") : CTL_OK;
}

static int get_mtls(struct ctl *c, int argc, char **argv, const char *what,
		    int (*print)(const cJSON *j))
{
	char target[64];
	cJSON *j;
	int rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	snprintf(target, sizeof(target), "/v1/mtls/%s", what);
	rc = ctl_get(c, target, &j);
	if (rc || !j)
		return rc;
	if (!ctl_bool(j, "enabled"))
		printf("mTLS is off (mtls.enabled is false)\n");
	else
		rc = print(j);
	cJSON_Delete(j);
	return rc;
}

int cmd_identities(struct ctl *c, int argc, char **argv)
{
	return get_mtls(c, argc, argv, "identities", print_identities);
}

static int print_pool(const cJSON *j)
{
	static const char *const h[] = { "IDENTITY", "SERVICE", "PEER", "STREAMS",
					 "STATE",    "WORKER",	"AGE" };
	struct table *t = table_new(7, h);
	const cJSON *o;
	int rc = 0;

	if (!t)
		return ctl_err("out of memory");
	table_align_right(t, 3);
	cJSON_ArrayForEach(o, cJSON_GetObjectItem(j, "pool"))
	{
		char streams[32], worker[16], age[32];
		const char *row[] = { ctl_str(o, "identity"),
				      ctl_str(o, "service"),
				      ctl_str(o, "peer"),
				      streams,
				      ctl_str(o, "state"),
				      worker,
				      ctl_duration(ctl_num(o, "age_seconds"), age, sizeof(age)) };

		snprintf(streams, sizeof(streams), "%.0f/%.0f", ctl_num(o, "streams"),
			 ctl_num(o, "max_streams"));
		snprintf(worker, sizeof(worker), "%.0f", ctl_num(o, "worker"));
		rc = rc ? rc : table_add_row(t, row);
	}
	if (!rc)
		rc = table_print(t, stdout);
	table_free(t);
	return rc ? ctl_err("cannot print the table") : CTL_OK;
}

int cmd_pool(struct ctl *c, int argc, char **argv)
{
	return get_mtls(c, argc, argv, "pool", print_pool);
}

/* --- offline PKI --------------------------------------------------------------------------------- */

/* The config named by --config (or MESH_CONFIG), for defaults; NULL when none is named. */
static struct mesh_config *pki_config(const struct ctl *c, int *rc)
{
	struct config_errors errs = { 0 };
	struct mesh_config *cfg;

	*rc = CTL_OK;
	if (!c->config)
		return NULL;
	cfg = config_load(c->config, NULL, &errs);
	if (!cfg) {
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s\n", errs.msgs[i]);
		*rc = ctl_err("cannot load %s", c->config);
	}
	config_errors_free(&errs);
	return cfg;
}

static const char *pick(const char *flag, const char *cfgval)
{
	return flag ? flag : cfgval && *cfgval ? cfgval : NULL;
}

static int parse_ttl(const char *s, uint64_t def_s, uint64_t *out)
{
	uint64_t ns;

	if (!s) {
		*out = def_s;
		return 0;
	}
	if (config_parse_duration(s, &ns) || ns < 1000000000ull)
		return ctl_usage_err("bad --ttl '%s' (a duration of at least 1s, e.g. 24h)", s);
	*out = ns / 1000000000ull;
	return 0;
}

static int ca_init(struct ctl *c, const struct mesh_config *cfg)
{
	const char *crt = pick(c->ca_cert, cfg ? cfg->mtls.ca_file : NULL);
	const char *key = pick(c->ca_key, cfg ? cfg->mtls.ca_key_file : NULL);
	const char *td = pick(c->trust_domain, cfg ? cfg->mtls.trust_domain : "mesh.local");
	char why[512];
	uint64_t ttl = 0;

	if (!crt || !key)
		return ctl_usage_err("ca init needs --ca-cert and --ca-key (or --config with "
				     "mtls.ca_file and mtls.ca_key_file)");
	if (parse_ttl(c->ttl, DEFAULT_CA_TTL_S, &ttl))
		return CTL_USAGE;
	if (mtls_ca_init(crt, key, td, ttl, c->force, why, sizeof(why)))
		return ctl_err("ca init: %s", why);
	printf("created CA for trust domain %s: certificate %s, key %s (mode 0600)\n", td, crt,
	       key);
	return CTL_OK;
}

int cmd_ca(struct ctl *c, int argc, char **argv)
{
	struct mesh_config *cfg;
	int rc;

	if (argc < 2 || strcmp(argv[1], "init"))
		return ctl_usage_err(
		    "usage: meshctl ca init [--config FILE] [--ca-cert PATH] "
		    "[--ca-key PATH] [--trust-domain D] [--ttl DURATION] [--force]");
	if ((rc = ctl_no_extra_args(argc - 1, argv + 1, 0)))
		return rc;
	cfg = pki_config(c, &rc);
	if (!rc)
		rc = ca_init(c, cfg);
	config_free(cfg);
	return rc;
}

static int cert_issue(struct ctl *c, const struct mesh_config *cfg, const char *service)
{
	const char *crt = pick(c->ca_cert, cfg ? cfg->mtls.ca_file : NULL);
	const char *key = pick(c->ca_key, cfg ? cfg->mtls.ca_key_file : NULL);
	const char *dir = pick(c->out_dir, cfg ? cfg->mtls.cert_dir : NULL);
	const char *td = pick(c->trust_domain, cfg ? cfg->mtls.trust_domain : "mesh.local");
	const char *dc = pick(c->datacenter, cfg ? cfg->node_datacenter : "dc1");
	char why[512], serial[96], id[512];
	uint64_t ttl = 0;

	if (!crt || !key || !dir)
		return ctl_usage_err("cert issue needs --ca-cert, --ca-key and --out (or --config "
				     "with mtls.ca_file, mtls.ca_key_file and mtls.cert_dir)");
	if (parse_ttl(c->ttl, cfg ? cfg->mtls.cert_ttl_ns / 1000000000ull : 86400, &ttl))
		return CTL_USAGE;
	if (mtls_cert_issue(crt, key, service, td, dc, ttl, dir, serial, sizeof(serial), id,
			    sizeof(id), why, sizeof(why)))
		return ctl_err("cert issue: %s", why);
	printf("issued %s/%s.crt and %s/%s.key: %s serial %s\n", dir, service, dir, service, id,
	       serial);
	return CTL_OK;
}

int cmd_cert(struct ctl *c, int argc, char **argv)
{
	struct mesh_config *cfg;
	int rc;

	if (argc < 3 || strcmp(argv[1], "issue"))
		return ctl_usage_err(
		    "usage: meshctl cert issue SERVICE [--config FILE] "
		    "[--ca-cert PATH] [--ca-key PATH] [--out DIR] [--ttl DURATION]");
	if ((rc = ctl_no_extra_args(argc - 2, argv + 2, 0)))
		return rc;
	cfg = pki_config(c, &rc);
	if (!rc)
		rc = cert_issue(c, cfg, argv[2]);
	config_free(cfg);
	return rc;
}
