/* Temporary: subcommands not written yet. Each file that implements one deletes its stub. */
#include <stdio.h>

#include "meshd/commands.h"

int cmd_validate(int argc, char **argv)
{
	fprintf(stderr, "meshd: validate not implemented yet\n");
	return 1;
}

int cmd_config(int argc, char **argv)
{
	fprintf(stderr, "meshd: config not implemented yet\n");
	return 1;
}

int cmd_run(const char *config_path)
{
	fprintf(stderr, "meshd: run not implemented yet\n");
	return 1;
}

int cmd_cleanup(const char *config_path)
{
	fprintf(stderr, "meshd: cleanup not implemented yet\n");
	return 1;
}
