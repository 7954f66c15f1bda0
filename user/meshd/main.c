/* meshd entry point: parses the top-level command line and dispatches to a subcommand. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meshd/commands.h"
#include "meshd/upgrade.h"
#include "mtls/fdstore.h"

static void usage(FILE *out)
{
	fprintf(out, "usage: meshd [--config FILE] [--cleanup]\n"
		     "       meshd validate [--offline] FILE\n"
		     "       meshd config show --config FILE [-o json]\n"
		     "       meshd config env\n"
		     "       meshd config docs\n"
		     "       meshd --version\n"
		     "The config file may also be named by MESH_CONFIG.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "cleanup", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *config = getenv("MESH_CONFIG");
	int cleanup = 0, c;

	upgrade_init(argv);
	if (argc > 2 && strcmp(argv[1], "fdstore") == 0) /* the listener holder (mtls/fdstore.h) */
		return fdstore_holder_main(argv[2]);
	if (argc > 1 && strcmp(argv[1], "validate") == 0)
		return cmd_validate(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "config") == 0)
		return cmd_config(argc - 1, argv + 1);

	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'C':
			cleanup = 1;
			break;
		case 'V':
			printf("meshd %s\n", MESH_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "meshd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return cleanup ? cmd_cleanup(config) : cmd_run(config);
}
