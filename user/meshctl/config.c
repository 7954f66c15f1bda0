/* meshctl config show: the daemon's running config (GET /v1/config), secrets redacted by the
 * daemon; pretty-printed JSON for humans, the daemon's JSON as is with -o json. */
#include <stdio.h>
#include <stdlib.h>

#include "meshctl/meshctl.h"

static int config_show(struct ctl *c, int argc, char **argv)
{
	cJSON *j;
	char *text;
	int rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	rc = ctl_get(c, "/v1/config", &j);
	if (rc || !j)
		return rc;
	text = cJSON_Print(j);
	cJSON_Delete(j);
	if (!text)
		return ctl_err("out of memory");
	puts(text);
	free(text);
	return CTL_OK;
}

static const struct ctl_cmd config_commands[] = {
	{ "show", config_show, "print the running config" },
	{ 0 },
};

int cmd_config(struct ctl *c, int argc, char **argv)
{
	return ctl_dispatch(config_commands, "config subcommand", c, argc - 1, argv + 1);
}
