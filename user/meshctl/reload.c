/* meshctl reload: POST /v1/reload. The daemon validates the file and applies it or keeps the
 * running config; every problem it found is printed (stderr) and the exit code is 1. */
#include <stdio.h>
#include <stdlib.h>

#include "meshctl/meshctl.h"

int cmd_reload(struct ctl *c, int argc, char **argv)
{
	const cJSON *e;
	char *raw = NULL;
	cJSON *j = NULL;
	int status = 0, rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	rc = ctl_request(c, "POST", "/v1/reload", &raw, &j, true, &status);
	if (rc)
		return rc;
	if (c->json)
		fputs(raw, stdout);
	free(raw);
	if (status == 200) {
		if (!c->json)
			printf("reloaded: config generation %.0f\n",
			       ctl_num(j, "config_generation"));
		cJSON_Delete(j);
		return CTL_OK;
	}
	ctl_err("reload failed (%d): the running config (generation %.0f) stays", status,
		ctl_num(j, "config_generation"));
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "errors"))
	{
		if (cJSON_IsString(e))
			fprintf(stderr, "  %s\n", e->valuestring);
	}
	cJSON_Delete(j);
	return CTL_FAIL;
}
