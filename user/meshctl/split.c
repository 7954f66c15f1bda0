/* meshctl split SERVICE: the service's traffic split from GET /v1/services, one row per subset
 * (configured weight, share of the connects sent to subsets so far, counts, backends). */
#include <stdio.h>
#include <string.h>

#include "common/table.h"
#include "meshctl/meshctl.h"

static int print_split(const cJSON *split)
{
	static const char *const h[] = { "SUBSET",    "WEIGHT",	  "SHARE",  "CONNECTIONS",
					 "FALLBACKS", "BACKENDS", "HEALTHY" };
	struct table *t = table_new(7, h);
	const cJSON *e;
	int rc = 0;

	if (!t)
		return ctl_err("out of memory");
	for (size_t i = 1; i < 7; i++)
		table_align_right(t, i);
	cJSON_ArrayForEach(e, split)
	{
		char num[6][24];
		const char *row[7] = { ctl_str(e, "subset") };

		snprintf(num[0], sizeof(num[0]), "%.2f%%", ctl_num(e, "weight_percent"));
		snprintf(num[1], sizeof(num[1]), "%.2f%%", ctl_num(e, "share_percent"));
		snprintf(num[2], sizeof(num[2]), "%.0f", ctl_num(e, "connections_total"));
		snprintf(num[3], sizeof(num[3]), "%.0f", ctl_num(e, "fallbacks_total"));
		snprintf(num[4], sizeof(num[4]), "%.0f", ctl_num(e, "backends"));
		snprintf(num[5], sizeof(num[5]), "%.0f", ctl_num(e, "healthy_backends"));
		for (int i = 0; i < 6; i++)
			row[1 + i] = num[i];
		rc = rc ? rc : table_add_row(t, row);
	}
	if (!rc)
		rc = table_print(t, stdout);
	table_free(t);
	return rc ? ctl_err("cannot print the table") : CTL_OK;
}

/* The entry of `name` in the services array, or NULL. */
static const cJSON *find_service(const cJSON *arr, const char *name)
{
	const cJSON *s;

	cJSON_ArrayForEach(s, arr)
	{
		if (!strcmp(ctl_str(s, "name"), name))
			return s;
	}
	return NULL;
}

int cmd_split(struct ctl *c, int argc, char **argv)
{
	const cJSON *svc, *split;
	cJSON *j;
	int rc;

	if (argc < 2)
		return ctl_usage_err("split: missing SERVICE (see 'meshctl services')");
	rc = ctl_no_extra_args(argc, argv, 1);
	if (rc)
		return rc;
	rc = ctl_get(c, "/v1/services", &j);
	if (rc || !j)
		return rc;
	svc = find_service(cJSON_GetObjectItem(j, "services"), argv[1]);
	split = svc ? cJSON_GetObjectItem(svc, "split") : NULL;
	if (!svc)
		rc = ctl_err("split: no service '%s'", argv[1]);
	else if (!cJSON_IsArray(split))
		printf("service %s has no traffic split\n", argv[1]);
	else
		rc = print_split(split);
	cJSON_Delete(j);
	return rc;
}
