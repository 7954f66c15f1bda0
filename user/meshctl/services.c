/* meshctl services: GET /v1/services as a table (one row per service). */
#include <stdio.h>

#include "common/table.h"
#include "meshctl/meshctl.h"

#define NUM(buf, v) (snprintf(buf, sizeof(buf), "%.0f", v), buf)

static int print_services(const cJSON *arr)
{
	static const char *const h[] = { "NAME",    "VIP",  "ALGORITHM", "MTLS",    "BACKENDS",
					 "HEALTHY", "OPEN", "ACTIVE",	 "REJECTED" };
	struct table *t = table_new(9, h);
	const cJSON *s;
	int rc = 0;
	size_t i;

	if (!t)
		return ctl_err("out of memory");
	for (i = 4; i < 9; i++)
		table_align_right(t, i);
	cJSON_ArrayForEach(s, arr)
	{
		char b[5][24];
		const char *row[] = {
			ctl_str(s, "name"),
			*ctl_str(s, "vip") ? ctl_str(s, "vip") : "-",
			*ctl_str(s, "algorithm") ? ctl_str(s, "algorithm") : "-",
			ctl_bool(s, "mtls") ? "on" : "off",
			NUM(b[0], ctl_num(s, "backends")),
			NUM(b[1], ctl_num(s, "healthy_backends")),
			NUM(b[2], ctl_num(s, "open_circuits")),
			NUM(b[3], ctl_num(s, "active_connections")),
			NUM(b[4], ctl_num(s, "rejected_total")),
		};

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
