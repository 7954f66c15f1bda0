/* meshctl services: GET /v1/services as a table (one row per service). */
#include <stdio.h>

#include "common/table.h"
#include "meshctl/meshctl.h"

static const char *const num_keys[] = { "backends",	 "healthy_backends",   "usable_backends",
					"open_circuits", "active_connections", "rejected_total" };
#define N_NUM (sizeof(num_keys) / sizeof(num_keys[0]))

static int print_services(const cJSON *arr)
{
	static const char *const h[] = { "NAME",  "VIP",      "ALGORITHM", "MTLS",
					 "STATE", "BACKENDS", "HEALTHY",   "USABLE",
					 "OPEN",  "ACTIVE",   "REJECTED",  "ORIGIN" };
	struct table *t = table_new(6 + N_NUM, h);
	const cJSON *s;
	int rc = 0;
	size_t i;

	if (!t)
		return ctl_err("out of memory");
	for (i = 0; i < N_NUM; i++)
		table_align_right(t, 5 + i);
	cJSON_ArrayForEach(s, arr)
	{
		char num[N_NUM][24];
		const char *row[6 + N_NUM] = {
			ctl_str(s, "name"),
			*ctl_str(s, "vip") ? ctl_str(s, "vip") : NULL,
			*ctl_str(s, "algorithm") ? ctl_str(s, "algorithm") : NULL,
			ctl_bool(s, "mtls") ? "on" : "off",
			*ctl_str(s, "state") ? ctl_str(s, "state") : NULL,
		};

		for (i = 0; i < N_NUM; i++) {
			snprintf(num[i], sizeof(num[i]), "%.0f", ctl_num(s, num_keys[i]));
			row[5 + i] = num[i];
		}
		row[5 + N_NUM] = *ctl_str(s, "origin") ? ctl_str(s, "origin") : NULL;
		rc = rc ? rc : table_add_row(t, row);
	}
	if (!rc)
		rc = table_print(t, stdout);
	table_free(t);
	return rc ? ctl_err("cannot print the table") : CTL_OK;
}

int cmd_services(struct ctl *c, int argc, char **argv)
{
	cJSON *j;
	int rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	rc = ctl_get(c, "/v1/services", &j);
	if (rc || !j)
		return rc;
	rc = print_services(cJSON_GetObjectItem(j, "services"));
	cJSON_Delete(j);
	return rc;
}
