/* meshctl entry point: global options (anywhere on the line), then the command table with prefix
 * matching (`meshctl serv` runs `services`). Exit codes: 0 ok, 1 failure, 2 usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "meshctl/meshctl.h"

static const struct ctl_cmd commands[] = {
	{ "status", cmd_status, "daemon version, uptime, config generation, readiness, counts" },
	{ "services", cmd_services, "services with their VIP, algorithm and backend health" },
	{ "backends", cmd_backends, "backends of SERVICE: health, circuit, connections" },
	{ "split", cmd_split, "traffic split of SERVICE: each subset's weight and observed share" },
	{ "circuits", cmd_circuits, "circuit breaker state of every backend" },
	{ "config", cmd_config, "config show: the running config, secrets redacted" },
	{ "reload", cmd_reload, "reload the config file (validate, then apply or keep old)" },
	{ "check", cmd_check,
	  "preflight: kernel, BTF, cgroup BPF, bpffs, cgroup v2, caps, config" },
	{ "uninstall", cmd_uninstall,
	  "remove the pinned datapath and admin socket (meshd must be stopped)" },
	{ "identities", cmd_identities,
	  "mTLS identities: cgroups, certificate serial, SPIFFE ID, expiry; trust roots" },
	{ "pool", cmd_pool, "pooled mTLS connections to other hosts and their streams" },
	{ "ca", cmd_ca, "ca init: create the built-in CA (key mode 0600)" },
	{ "cert", cmd_cert, "cert issue SERVICE: write a certificate pair for cert_source files" },
	{ 0 },
};

static void usage(FILE *out)
{
	const struct ctl_cmd *t;

	fprintf(out, "usage: meshctl [--socket PATH | --config FILE] [-o json] COMMAND [ARGS]\n\n"
		     "commands (any unique prefix works):\n");
	for (t = commands; t->name; t++)
		fprintf(out, "  %-10s %s\n", t->name, t->help);
	fprintf(
	    out,
	    "\noptions:\n"
	    "  -s, --socket PATH   admin socket (default: admin.socket of the config below)\n"
	    "  -o, --output FMT    table (default) or json; every read command takes it\n"
	    "  -c, --config FILE   meshd's config, read as meshd reads it, MESH_* included\n"
	    "                      (default $MESH_CONFIG, else %s if present,\n"
	    "                      else the built-in defaults)\n"
	    "      --pre           check: skip the daemon check (before installing)\n"
	    "      --ca-cert PATH  ca/cert: the CA certificate (default mtls.ca_file)\n"
	    "      --ca-key PATH   ca/cert: the CA key (default mtls.ca_key_file)\n"
	    "      --out DIR       cert issue: where SERVICE.crt/.key go (default mtls.cert_dir)\n"
	    "      --trust-domain D, --datacenter DC, --ttl DURATION, --force\n"
	    "  -t, --timeout MS    admin request timeout (default 5000)\n"
	    "  -h, --help          this help\n",
	    CONFIG_INSTALLED_PATH);
}

static int parse_output(struct ctl *c, const char *v)
{
	if (!strcmp(v, "json"))
		c->json = true;
	else if (!strcmp(v, "table") || !strcmp(v, "text"))
		c->json = false;
	else
		return ctl_usage_err("unknown output format '%s' (expected json or table)", v);
	return CTL_OK;
}

/* Parses the global options; -1 means "done, exit 0" (help). */
static int parse_opts(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "output", required_argument, NULL, 'o' },
		{ "config", required_argument, NULL, 'c' },
		{ "pre", no_argument, NULL, 'P' },
		{ "timeout", required_argument, NULL, 't' },
		{ "ca-cert", required_argument, NULL, 1 },
		{ "ca-key", required_argument, NULL, 2 },
		{ "out", required_argument, NULL, 3 },
		{ "trust-domain", required_argument, NULL, 4 },
		{ "datacenter", required_argument, NULL, 5 },
		{ "ttl", required_argument, NULL, 6 },
		{ "force", no_argument, NULL, 7 },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char *end;
	int o;

	while ((o = getopt_long(argc, argv, "s:o:c:t:h", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			c->socket = optarg;
			break;
		case 'o':
			if (parse_output(c, optarg))
				return CTL_USAGE;
			break;
		case 'c':
			c->config = optarg;
			break;
		case 'P':
			c->pre = true;
			break;
		case 't':
			c->timeout_ms = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !c->timeout_ms)
				return ctl_usage_err("bad --timeout '%s' (milliseconds)", optarg);
			break;
		case 1:
			c->ca_cert = optarg;
			break;
		case 2:
			c->ca_key = optarg;
			break;
		case 3:
			c->out_dir = optarg;
			break;
		case 4:
			c->trust_domain = optarg;
			break;
		case 5:
			c->datacenter = optarg;
			break;
		case 6:
			c->ttl = optarg;
			break;
		case 7:
			c->force = true;
			break;
		case 'h':
			usage(stdout);
			return -1;
		default:
			return ctl_usage_err("bad option");
		}
	}
	return CTL_OK;
}

int main(int argc, char **argv)
{
	struct ctl c = { .timeout_ms = 5000 };
	const char *env = getenv("MESH_CONFIG");
	int rc;

	c.config = env && *env ? env : NULL;
	opterr = 0;
	rc = parse_opts(&c, argc, argv);
	if (rc)
		return rc < 0 ? CTL_OK : rc;
	if (optind == argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	rc = ctl_dispatch(commands, "command", &c, argc - optind, argv + optind);
	free(c.socket_owned);
	return rc;
}
