/* meshctl status: one daemon summary from GET /v1/status, as aligned `key value` lines, then one
 * line per Consul registration. */
#include <stdio.h>

#include "meshctl/meshctl.h"

static void line(const char *key, const char *fmt_value)
{
	printf("%-20s %s\n", key, fmt_value);
}

/* One line per service not healthy: "api  down (0/2 usable, 0 healthy)". */
static void print_unhealthy(const cJSON *arr)
{
	const cJSON *u;
	char buf[192];

	if (!cJSON_GetArraySize(arr)) {
		line("services not healthy", "none");
		return;
	}
	cJSON_ArrayForEach(u, arr)
	{
		snprintf(buf, sizeof(buf), "%s %s (%.0f/%.0f usable, %.0f healthy)",
			 ctl_str(u, "name"), ctl_str(u, "state"), ctl_num(u, "usable_backends"),
			 ctl_num(u, "backends"), ctl_num(u, "healthy_backends"));
		line(u == arr->child ? "services not healthy" : "", buf);
	}
}

/* One line per Consul registration: `registration <id>  registered|failing ...`. */
static void print_registrations(const cJSON *regs)
{
	char key[160], buf[320];
	const cJSON *r;

	cJSON_ArrayForEach(r, regs)
	{
		snprintf(key, sizeof(key), "registration %s", ctl_str(r, "id"));
		if (ctl_bool(r, "registered"))
			snprintf(
			    buf, sizeof(buf), "registered (service %s, %.0f writes, lost %.0f)%s%s",
			    ctl_str(r, "service"), ctl_num(r, "registrations"), ctl_num(r, "lost"),
			    *ctl_str(r, "ttl") ? ", ttl " : "", ctl_str(r, "ttl"));
		else
			snprintf(buf, sizeof(buf),
				 "failing (service %s, %.0f failures, status %.0f: %s)",
				 ctl_str(r, "service"), ctl_num(r, "failures"),
				 ctl_num(r, "status"),
				 *ctl_str(r, "error") ? ctl_str(r, "error") : "pending");
		line(key, buf);
	}
}

static void print_status(const cJSON *s)
{
	char buf[128], dur[32];

	line("version", ctl_str(s, "version"));
	snprintf(buf, sizeof(buf), "%.0f", ctl_num(s, "pid"));
	line("pid", buf);
	line("uptime", ctl_duration(ctl_num(s, "uptime_seconds"), dur, sizeof(dur)));
	line("node", ctl_str(s, "node"));
	line("discovery", ctl_str(s, "discovery"));
	line("config path", *ctl_str(s, "config_path") ? ctl_str(s, "config_path") : "(none)");
	snprintf(buf, sizeof(buf), "%.0f", ctl_num(s, "config_generation"));
	line("config generation", buf);
	line("ready", ctl_bool(s, "ready") ? "yes" : "no");
	line("datapath", !ctl_bool(s, "datapath_attached") ? "not attached"
			 : ctl_bool(s, "datapath_adopted") ? "attached (adopted from pins)"
							   : "attached (loaded)");
	snprintf(buf, sizeof(buf), "%.0f", ctl_num(s, "services"));
	line("services", buf);
	snprintf(buf, sizeof(buf), "%.0f (%.0f healthy, %.0f circuits open)",
		 ctl_num(s, "backends"), ctl_num(s, "healthy_backends"),
		 ctl_num(s, "open_circuits"));
	line("backends", buf);
	snprintf(buf, sizeof(buf), "%.0f", ctl_num(s, "active_connections"));
	line("active connections", buf);
	snprintf(buf, sizeof(buf), "%.0f ok, %.0f error",
		 ctl_num(cJSON_GetObjectItem(s, "reloads"), "ok"),
		 ctl_num(cJSON_GetObjectItem(s, "reloads"), "error"));
	line("reloads", buf);
	print_unhealthy(cJSON_GetObjectItem(s, "unhealthy_services"));
	if (*ctl_str(s, "datapath_error"))
		line("datapath error", ctl_str(s, "datapath_error"));
	print_registrations(cJSON_GetObjectItem(s, "registrations"));
}

int cmd_status(struct ctl *c, int argc, char **argv)
{
	cJSON *s;
	int rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	rc = ctl_get(c, "/v1/status", &s);
	if (rc || !s)
		return rc;
	print_status(s);
	cJSON_Delete(s);
	return CTL_OK;
}
