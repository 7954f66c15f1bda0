/* Weak placeholders for subcommands and components not written yet: the module that implements
 * one defines the strong symbol and this file needs no edit. Delete a stub once all land. */
#include <errno.h>
#include <stdio.h>

#include "meshd/commands.h"
#include "meshd/meshd.h"

#define WEAK __attribute__((weak))

WEAK int cmd_validate(int argc, char **argv)
{
	fprintf(stderr, "meshd: validate not implemented yet\n");
	return 1;
}

WEAK int cmd_config(int argc, char **argv)
{
	fprintf(stderr, "meshd: config not implemented yet\n");
	return 1;
}

WEAK int cmd_run(const char *config_path)
{
	fprintf(stderr, "meshd: run not implemented yet\n");
	return 1;
}

WEAK int cmd_cleanup(const char *config_path)
{
	fprintf(stderr, "meshd: cleanup not implemented yet\n");
	return 1;
}
