/* Fault injection for the reload tests. meshd itself is built without MESHD_FAULTS: every point
 * then returns 0 and the environment is never read. The test build (build/tests/meshd_faults,
 * this file compiled with -DMESHD_FAULTS) reads the file named by MESHD_FAULTS_FILE at each
 * point; each line names a point that fails (with -EIO) while it is listed:
 *   reload.<component>   after that component applied a reload (it is rolled back with the rest)
 *   datapath.apply       before a batch of service changes reaches the datapath
 *   datapath.apply@N     the N-th change of each datapath transaction, after it was written
 * Loop thread only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "meshd/meshd.h"

#ifdef MESHD_FAULTS
/* The value after `point` on its line ("" for a bare point), copied into `val`; false when the
 * point is not listed. */
static bool listed(const char *point, char *val, size_t len)
{
	const char *path = getenv("MESHD_FAULTS_FILE");
	size_t n = strlen(point);
	char line[256];
	bool hit = false;
	FILE *f;

	if (!path || !(f = fopen(path, "re")))
		return false;
	while (!hit && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, point, n) || (line[n] && line[n] != '@'))
			continue;
		snprintf(val, len, "%s", line[n] ? line + n + 1 : "");
		hit = true;
	}
	fclose(f);
	return hit;
}

int meshd_fault(const char *point)
{
	char val[32];

	if (!listed(point, val, sizeof(val)) || val[0])
		return 0;
	LOG_WARN("faults", "injected fault", "point=%s", log_q(point));
	return -EIO;
}

void meshd_fault_arm_datapath(struct datapath *dp)
{
	char val[32];

	if (dp && listed("datapath.apply", val, sizeof(val)) && val[0])
		datapath_test_fail_at(dp, strtoul(val, NULL, 10));
}
#else
int meshd_fault(const char *point)
{
	return 0;
}

void meshd_fault_arm_datapath(struct datapath *dp)
{
}
#endif
