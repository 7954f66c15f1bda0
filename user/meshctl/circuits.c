/* meshctl circuits: GET /v1/circuits as a table, one row per backend. */
#include <stdio.h>

#include "common/table.h"
#include "meshctl/meshctl.h"

static int print_circuits(const cJSON *arr)
{
	static const char *const h[] = { "SERVICE",  "BACKEND",	 "STATE",
					 "FAILURES", "OPEN_FOR", "OPENED" };
	struct table *t = table_new(6, h);
	const cJSON *b;
	int rc = 0;

	if (!t)
		return ctl_err("out of memory");
	table_align_right(t, 3);
	table_align_right(t, 5);
	cJSON_ArrayForEach(b, arr)
	{
		char fails[24], open_for[32], opened[24];
		double rem = ctl_num(b, "open_remaining_seconds");
		const char *row[] = {
			ctl_str(b, "service"),
			ctl_str(b, "address"),
			ctl_str(b, "circuit"),
			fails,
			rem > 0 ? ctl_duration(rem, open_for, sizeof(open_for)) : NULL,
			opened,
		};

		snprintf(fails, sizeof(fails), "%.0f", ctl_num(b, "consecutive_failures"));
		snprintf(opened, sizeof(opened), "%.0f", ctl_num(b, "transitions_to_open"));

		rc = rc ? rc : table_add_row(t, row);
	}
	if (!rc)
		rc = table_print(t, stdout);
	table_free(t);
	return rc ? ctl_err("cannot print the table") : CTL_OK;
}

int cmd_circuits(struct ctl *c, int argc, char **argv)
{
	cJSON *j;
	int rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	rc = ctl_get(c, "/v1/circuits", &j);
	if (rc || !j)
		return rc;
	rc = print_circuits(cJSON_GetObjectItem(j, "circuits"));
	cJSON_Delete(j);
	return rc;
}
