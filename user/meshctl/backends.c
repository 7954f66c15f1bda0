/* meshctl backends SERVICE: GET /v1/services/SERVICE/backends as a table. */
#include <stdio.h>
#include <string.h>

#include "common/table.h"
#include "meshctl/meshctl.h"

/* Text of one row; `stats` is false when the daemon had no datapath to read (config only). */
struct row_text {
	char weight[16], active[24], ok[24], failed[24], latency[24];
};

static void backend_row(const cJSON *b, struct row_text *t, const char **row)
{
	bool stats = cJSON_GetObjectItem(b, "healthy") != NULL;

	snprintf(t->weight, sizeof(t->weight), "%.0f", ctl_num(b, "weight"));
	snprintf(t->active, sizeof(t->active), "%.0f", ctl_num(b, "active_connections"));
	snprintf(t->ok, sizeof(t->ok), "%.0f", ctl_num(b, "connections_ok_total"));
	snprintf(t->failed, sizeof(t->failed), "%.0f", ctl_num(b, "connections_failed_total"));
	snprintf(t->latency, sizeof(t->latency), "%.2fms",
		 ctl_num(b, "latency_ewma_seconds") * 1e3);
	row[0] = ctl_str(b, "address");
	row[1] = t->weight;
	row[2] = stats ? (ctl_bool(b, "healthy") ? "yes" : "no") : NULL;
	row[3] = stats ? ctl_str(b, "circuit") : NULL;
	row[4] = stats ? t->active : NULL;
	row[5] = stats ? t->ok : NULL;
	row[6] = stats ? t->failed : NULL;
	row[7] = stats ? t->latency : NULL;
}

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
	table_align_right(t, 1);
	for (i = 4; i < 8; i++)
		table_align_right(t, i);
	cJSON_ArrayForEach(b, arr)
	{
		struct row_text text;
		const char *row[8];

		backend_row(b, &text, row);
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
	if (!strcmp(ctl_str(j, "origin"), "catalog"))
		printf("defined by the consul catalog (tag and meta mesh-vip)\n");
	if (*ctl_str(j, "datacenter"))
		printf("datacenter %s%s\n", ctl_str(j, "datacenter"),
		       ctl_bool(j, "failover") ? " (failover: no passing instance in the local one)"
					       : "");
	rc = print_backends(cJSON_GetObjectItem(j, "backends"));
	cJSON_Delete(j);
	return rc;
}
