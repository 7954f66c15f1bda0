/* meshctl backends SERVICE: GET /v1/services/SERVICE/backends as a table. */
#include <stdio.h>
#include <string.h>

#include "common/table.h"
#include "meshctl/meshctl.h"

static int print_backends(const cJSON *arr)
{
	static const char *const h[] = { "ADDRESS", "WEIGHT", "HEALTHY", "CIRCUIT",
					 "ACTIVE",  "OK",     "FAILED",	 "LATENCY" };
	struct table *t = table_new(8, h);
	const cJSON *b;
	int rc = 0;
	size_t i;

	if (!t)
		return ctl_err("out of memory");
	for (i = 4; i < 8; i++)
		table_align_right(t, i);
	table_align_right(t, 1);
	cJSON_ArrayForEach(b, arr)
	{
		char w[16], a[24], ok[24], f[24], lat[24];
		bool stats = cJSON_GetObjectItem(b, "healthy") != NULL;
		const char *row[] = {
			ctl_str(b, "address"),
			(snprintf(w, sizeof(w), "%.0f", ctl_num(b, "weight")), w),
			stats ? (ctl_bool(b, "healthy") ? "yes" : "no") : NULL,
			stats ? ctl_str(b, "circuit") : NULL,
			stats
			    ? (snprintf(a, sizeof(a), "%.0f", ctl_num(b, "active_connections")), a)
			    : NULL,
			stats
			    ? (snprintf(ok, sizeof(ok), "%.0f", ctl_num(b, "connections_ok_total")),
			       ok)
			    : NULL,
			stats ? (snprintf(f, sizeof(f), "%.0f",
					  ctl_num(b, "connections_failed_total")),
				 f)
			      : NULL,
			stats ? (snprintf(lat, sizeof(lat), "%.2fms",
					  ctl_num(b, "latency_ewma_seconds") * 1e3),
				 lat)
			      : NULL,
		};

		rc = rc ? rc : table_add_row(t, row);
	}
	if (!rc)
		rc = table_print(t, stdout);
	table_free(t);
	return rc ? ctl_err("cannot print the table") : CTL_OK;
}

int cmd_backends(struct ctl *c, int argc, char **argv)
{
	char target[256];
	cJSON *j;
	int rc;

	if (argc < 2)
		return ctl_usage_err("backends: missing SERVICE (see 'meshctl services')");
	rc = ctl_no_extra_args(argc, argv, 1);
	if (rc)
		return rc;
	if (strlen(argv[1]) > 64 ||
	    strspn(argv[1], "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(argv[1]))
		return ctl_usage_err("backends: '%s' is not a service name", argv[1]);
	snprintf(target, sizeof(target), "/v1/services/%s/backends", argv[1]);
	rc = ctl_get(c, target, &j);
	if (rc || !j)
		return rc;
	rc = print_backends(cJSON_GetObjectItem(j, "backends"));
	cJSON_Delete(j);
	return rc;
}
