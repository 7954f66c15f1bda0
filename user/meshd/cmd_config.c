/* `meshd validate FILE` and `meshd config show|env|docs`: views of the configuration run in the
 * CLI process (no daemon); validate also checks what the config asks of this host unless given
 * --offline. Problems found by validate go to stdout, one per line;
 * usage errors go to stderr. Exit codes: 0 ok, 1 invalid configuration or I/O error, 2 usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "meshd/commands.h"

extern char **environ;

static int usage_err(const char *fmt, const char *arg)
{
	fprintf(stderr, "meshd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nusage: meshd validate [--offline] FILE\n"
			"       meshd config show [--config FILE] [-o json|text]\n"
			"       meshd config env\n"
			"       meshd config docs\n");
	return 2;
}

static void print_errors(FILE *out, const struct config_errors *errs)
{
	size_t i;

	for (i = 0; i < errs->n; i++)
		fprintf(out, "%s\n", errs->msgs[i]);
}

/* `meshd validate [--offline] FILE`: the file and environment, then (unless --offline, for a
 * config meant for another machine) what it asks of this host: cgroup v2, bpffs. */
int cmd_validate(int argc, char **argv)
{
	struct config_errors errs = { 0 };
	bool offline = argc == 3 && !strcmp(argv[1], "--offline");
	struct mesh_config *cfg;

	if (argc != 2 + offline || argv[argc - 1][0] == '-')
		return usage_err("validate takes exactly one FILE (and --offline)%s", "");
	cfg = config_load(argv[argc - 1], environ, &errs);
	if (cfg && !offline && config_check_host(cfg, &errs)) {
		config_free(cfg);
		cfg = NULL;
	}
	if (!cfg) {
		print_errors(stdout, &errs);
		config_errors_free(&errs);
		return 1;
	}
	printf("configuration is valid\n");
	config_free(cfg);
	return 0;
}

static int config_show_cmd(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "output", required_argument, NULL, 'o' },
		{ 0 },
	};
	const char *path = getenv("MESH_CONFIG"), *fmt = "text";
	struct config_errors errs = { 0 };
	struct mesh_config *cfg;
	int c, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:o:", opts, NULL)) != -1) {
		if (c == 'c')
			path = optarg;
		else if (c == 'o')
			fmt = optarg;
		else
			return usage_err("config show: bad option%s", "");
	}
	if (optind != argc)
		return usage_err("config show: unexpected argument '%s'", argv[optind]);
	if (strcmp(fmt, "json") && strcmp(fmt, "text"))
		return usage_err("config show: -o takes json or text, not '%s'", fmt);
	cfg = config_load(path, environ, &errs);
	if (!cfg) {
		print_errors(stderr, &errs);
		config_errors_free(&errs);
		return 1;
	}
	err = config_show(cfg, !strcmp(fmt, "json"), stdout);
	config_free(cfg);
	return err ? 1 : 0;
}

static int config_env_cmd(int argc, char **argv)
{
	if (argc != 1)
		return usage_err("config env takes no arguments%s", "");
	return config_print_env(stdout) ? 1 : 0;
}

static int config_docs_cmd(int argc, char **argv)
{
	if (argc != 1)
		return usage_err("config docs takes no arguments%s", "");
	return config_print_docs(stdout) ? 1 : 0;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} config_cmds[] = {
	{ "show", config_show_cmd },
	{ "env", config_env_cmd },
	{ "docs", config_docs_cmd },
};

/* meshd config <show|env|docs>: a unique prefix of the subcommand is enough. */
int cmd_config(int argc, char **argv)
{
	size_t i, n = sizeof(config_cmds) / sizeof(config_cmds[0]), found = n;

	if (argc < 2)
		return usage_err("config needs a subcommand%s", "");
	for (i = 0; i < n; i++) {
		if (strncmp(config_cmds[i].name, argv[1], strlen(argv[1])))
			continue;
		if (found != n)
			return usage_err("config: ambiguous subcommand '%s'", argv[1]);
		found = i;
	}
	if (found == n || !argv[1][0])
		return usage_err("config: unknown subcommand '%s'", argv[1]);
	return config_cmds[found].fn(argc - 1, argv + 1);
}
