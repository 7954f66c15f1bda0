/* meshctl check: preflight in the style of `linkerd check`. Each check prints one `[ok]` or
 * `[FAIL]` line (a fix hint under a failure): kernel version, BTF, cgroup BPF program and map
 * types, config validity, bpffs under the pin path, cgroup v2, capabilities, and (unless --pre)
 * the daemon. Exit 1 when any check fails. */
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/http.h"
#include "common/pathperm.h"
#include "config/config.h"
#include "meshctl/meshctl.h"
#include "mtls/mtls.h"

#define MAX_CHECKS 64

struct result {
	char name[64];
	bool ok;
	char detail[512];
	const char *hint;
};

struct checks {
	struct result r[MAX_CHECKS];
	int n;
};

static struct result *add(struct checks *cs, const char *name, bool ok, const char *hint,
			  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static struct result *add(struct checks *cs, const char *name, bool ok, const char *hint,
			  const char *fmt, ...)
{
	struct result *r = &cs->r[cs->n < MAX_CHECKS - 1 ? cs->n++ : cs->n];
	va_list ap;

	snprintf(r->name, sizeof(r->name), "%s", name);
	r->ok = ok;
	r->hint = ok ? NULL : hint;
	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
	return r;
}

/* The oldest kernel the programs load on: they need BPF atomic fetch-and-add (5.12); what
 * came later is probed below, one feature at a time, with its fallback when there is one. */
#define KERNEL_FLOOR_MAJOR 5
#define KERNEL_FLOOR_MINOR 12

static void check_kernel(struct checks *cs)
{
	struct utsname u;
	int major = 0, minor = 0;

	uname(&u);
	sscanf(u.release, "%d.%d", &major, &minor);
	add(cs, "kernel version",
	    major > KERNEL_FLOOR_MAJOR ||
		(major == KERNEL_FLOOR_MAJOR && minor >= KERNEL_FLOOR_MINOR),
	    "upgrade to Linux 5.12 or newer (5.18 or newer for reject errnos)",
	    "%s (need >= %d.%d)", u.release, KERNEL_FLOOR_MAJOR, KERNEL_FLOOR_MINOR);
}

static void check_btf(struct checks *cs)
{
	bool ok = access("/sys/kernel/btf/vmlinux", R_OK) == 0;

	add(cs, "kernel BTF", ok, "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
	    "/sys/kernel/btf/vmlinux %s", ok ? "readable" : strerror(errno));
}

/* Effective capability bits of this process (from /proc/self/status). */
static unsigned long long effective_caps(void)
{
	unsigned long long eff = 0;
	char line[256];
	FILE *f = fopen("/proc/self/status", "re");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	if (f)
		fclose(f);
	return eff;
}

#define CAP_NET_ADMIN_ 12
#define CAP_SYS_ADMIN_ 21
#define CAP_PERFMON_ 38
#define CAP_BPF_ 39

/* Every BPF feature bpf/mesh.bpf.c uses, and what happens without it. */
enum feat_kind { FEAT_PROG = 0, FEAT_MAP = 1, FEAT_HELPER = 2 };
static const struct bpf_feature {
	const char *name;
	enum feat_kind kind;
	int type;	     /* program or map type; for a helper, the program type using it */
	int helper;	     /* enum bpf_func_id */
	const char *without; /* NULL: required; else what runs without it */
} features[] = {
	{ "cgroup sock_addr programs", FEAT_PROG, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, 0, NULL },
	{ "sockops programs", FEAT_PROG, BPF_PROG_TYPE_SOCK_OPS, 0, NULL },
	{ "cgroup sock programs", FEAT_PROG, BPF_PROG_TYPE_CGROUP_SOCK, 0, NULL },
	{ "syscall programs", FEAT_PROG, BPF_PROG_TYPE_SYSCALL, 0,
	  "an ABI 3 or 4 datapath is rebuilt instead of upgraded in place" },
	{ "hash maps", FEAT_MAP, BPF_MAP_TYPE_HASH, 0, NULL },
	{ "array maps", FEAT_MAP, BPF_MAP_TYPE_ARRAY, 0, NULL },
	{ "per-CPU array maps", FEAT_MAP, BPF_MAP_TYPE_PERCPU_ARRAY, 0, NULL },
	{ "socket storage maps", FEAT_MAP, BPF_MAP_TYPE_SK_STORAGE, 0, NULL },
	{ "ring buffers", FEAT_MAP, BPF_MAP_TYPE_RINGBUF, 0, NULL },
	{ "array-of-maps", FEAT_MAP, BPF_MAP_TYPE_ARRAY_OF_MAPS, 0, NULL },
	{ "bpf_get_socket_cookie", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
	  BPF_FUNC_get_socket_cookie, NULL },
	{ "bpf_sk_storage_get", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
	  BPF_FUNC_sk_storage_get, NULL },
	{ "bpf_ringbuf_output", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
	  BPF_FUNC_ringbuf_output, NULL },
	{ "bpf_get_current_cgroup_id", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
	  BPF_FUNC_get_current_cgroup_id, NULL },
	{ "bpf_get_current_pid_tgid", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
	  BPF_FUNC_get_current_pid_tgid, NULL },
	{ "bpf_spin_lock", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_spin_lock, NULL },
	{ "bpf_ktime_get_ns", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_ktime_get_ns,
	  NULL },
	{ "bpf_set_retval", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval,
	  "rejected connects fail with EPERM instead of EHOSTUNREACH/ECONNREFUSED" },
	{ "bpf_sock_ops_cb_flags_set", FEAT_HELPER, BPF_PROG_TYPE_SOCK_OPS,
	  BPF_FUNC_sock_ops_cb_flags_set, NULL },
	{ "bpf_sk_storage_get (sockops)", FEAT_HELPER, BPF_PROG_TYPE_SOCK_OPS,
	  BPF_FUNC_sk_storage_get, NULL },
	{ "bpf_get_socket_cookie (sock)", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK,
	  BPF_FUNC_get_socket_cookie, NULL },
	/* mTLS (bpf/mesh_mtls.h) */
	{ "LRU hash maps", FEAT_MAP, BPF_MAP_TYPE_LRU_HASH, 0, NULL },
	{ "bpf_get_current_ancestor_cgroup_id", FEAT_HELPER, BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
	  BPF_FUNC_get_current_ancestor_cgroup_id, NULL },
	{ "tc programs (test run)", FEAT_PROG, BPF_PROG_TYPE_SCHED_CLS, 0, NULL },
	{ "sk_lookup programs", FEAT_PROG, BPF_PROG_TYPE_SK_LOOKUP, 0, NULL },
};

static int probe_feature(const struct bpf_feature *f)
{
	switch (f->kind) {
	case FEAT_PROG:
		return libbpf_probe_bpf_prog_type((enum bpf_prog_type)f->type, NULL);
	case FEAT_MAP:
		return libbpf_probe_bpf_map_type((enum bpf_map_type)f->type, NULL);
	default:
		return libbpf_probe_bpf_helper((enum bpf_prog_type)f->type,
					       (enum bpf_func_id)f->helper, NULL);
	}
}

/* Appends "; NAME[: WHY]" to buf (no separator first). */
static void append(char *buf, size_t len, const char *name, const char *why)
{
	size_t used = strlen(buf);

	snprintf(buf + used, len - used, "%s%s%s%s", used ? "; " : "", name, why ? ": " : "",
		 why ? why : "");
}

/* One line per kind of feature: what is missing (a failure), and what runs without the
 * features that have a fallback. */
static void check_bpf_features(struct checks *cs)
{
	static const char *const kinds[] = { "BPF program types", "BPF map types", "BPF helpers" };
	unsigned long long eff = effective_caps();
	bool priv = (eff >> CAP_BPF_ & 1) || (eff >> CAP_SYS_ADMIN_ & 1);

	libbpf_set_print(NULL);
	for (int k = FEAT_PROG; k <= FEAT_HELPER; k++) {
		char missing[400] = "", fallback[400] = "";
		int n = 0;

		for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
			const struct bpf_feature *f = &features[i];

			if ((int)f->kind != k)
				continue;
			n++;
			if (probe_feature(f) == 1)
				continue;
			if (f->without)
				append(fallback, sizeof(fallback), f->name, f->without);
			else
				append(missing, sizeof(missing), f->name, NULL);
		}
		if (!priv && (missing[0] || fallback[0]))
			add(cs, kinds[k], false,
			    "run `meshctl check` as root (the probe loads test programs)",
			    "cannot probe without CAP_BPF or CAP_SYS_ADMIN");
		else if (missing[0])
			add(cs, kinds[k], false,
			    "use a newer kernel with CONFIG_CGROUP_BPF=y and CONFIG_BPF_SYSCALL=y "
			    "(docs/datapath.md lists each feature)",
			    "missing: %s", missing);
		else if (fallback[0])
			add(cs, kinds[k], true, NULL, "%d probed; without %s", n, fallback);
		else
			add(cs, kinds[k], true, NULL, "%d probed, all supported", n);
	}
}

/* Loads the config meshd would (ctl_config_path) with the environment, then what it asks of
 * this host; returns it, or NULL (check failed, every problem under it). */
static struct mesh_config *check_config(struct checks *cs, const char *path)
{
	struct config_errors errs = { 0 };
	struct mesh_config *cfg = config_load(path, NULL, &errs);
	struct result *r;
	size_t i, off;

	if (cfg) {
		add(cs, "config valid", true, NULL, "%s",
		    path ? path : "(defaults and environment)");
		return cfg;
	}
	r = add(cs, "config valid", false, "fix the lines above, then `meshd validate FILE`",
		"%s: %zu problem%s", path ? path : "(defaults)", errs.n, errs.n == 1 ? "" : "s");
	for (i = 0; i < errs.n; i++) {
		off = strlen(r->detail);
		snprintf(r->detail + off, sizeof(r->detail) - off, "\n       %s", errs.msgs[i]);
	}
	config_errors_free(&errs);
	return NULL;
}

static void check_bpffs(struct checks *cs, const char *pin)
{
	static const char *hint = "mount bpffs (`mount -t bpf bpf /sys/fs/bpf` or `make bpffs`), "
				  "or set bpf_pin_path to a directory on a bpf filesystem";
	char why[4200];
	int err = config_host_pin_path(pin, why, sizeof(why));

	add(cs, "bpffs mounted", !err, hint, "pin path %s: %s (%s)", pin,
	    err ? "not on a bpf filesystem" : "on bpffs", why);
}

static void check_cgroup(struct checks *cs, const char *cgroup)
{
	char mount[4096], why[4200];
	bool have = config_host_cgroup2_mount(mount, sizeof(mount)) == 0;
	int err = config_host_cgroup(cgroup, why, sizeof(why));

	add(cs, "cgroup v2 mounted", have, "mount cgroup2: `mount -t cgroup2 none /sys/fs/cgroup`",
	    "%s", have ? mount : "no cgroup2 mount in /proc/mounts");
	add(cs, "cgroup path is cgroup v2", !err,
	    have ? "set \"cgroup\" (MESH_CGROUP) to a directory under the cgroup2 mount above"
		 : "mount cgroup2 first",
	    "%s: %s", cgroup, err ? why : "cgroup2");
}

static void check_admin_dir(struct checks *cs, const char *socket)
{
	char why[4200];
	int err = pathperm_private_parent(socket, geteuid(), why, sizeof(why));

	add(cs, "admin socket directory private", !err,
	    "put admin.socket in a directory only root can write to (meshd creates a missing one "
	    "0700), e.g. /run/meshd/admin.sock",
	    "%s%s%s", socket, err ? ": " : "", err ? why : "");
}

static void check_caps(struct checks *cs)
{
	static const struct {
		int bit;
		const char *name;
	} caps[] = { { CAP_BPF_, "CAP_BPF" },
		     { CAP_PERFMON_, "CAP_PERFMON" },
		     { CAP_NET_ADMIN_, "CAP_NET_ADMIN" } };
	unsigned long long eff = effective_caps();
	char missing[128] = "";
	size_t i;

	for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (!(eff >> caps[i].bit & 1))
			snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing),
				 "%s%s", *missing ? ", " : "", caps[i].name);
	add(cs, "capabilities", !*missing,
	    "run as root, or grant CAP_BPF CAP_PERFMON CAP_NET_ADMIN (AmbientCapabilities= in "
	    "meshd.service, as config/meshd.service does)",
	    "%s%s", *missing ? "missing " : "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN effective",
	    missing);
}

/* GET /v1/status on `socket`: --socket, else admin.socket of the config checked above. */
static void check_daemon(struct checks *cs, const struct ctl *c, const char *socket)
{
	char *body = NULL;
	int status = 0, err;
	cJSON *j;

	if (!socket) {
		add(cs, "daemon reachable", false, "fix the config, or pass --socket",
		    "cannot tell where meshd listens: the config is invalid");
		return;
	}
	err = http_unix_request(socket, "GET", "/v1/status", NULL, 0, c->timeout_ms, &status, &body,
				NULL);
	if (err || status != 200) {
		add(cs, "daemon reachable", false,
		    "start meshd (`systemctl start meshd`), or pass --socket; --pre skips this",
		    "%s: %s", socket, err ? strerror(-err) : "unexpected answer");
		free(body);
		return;
	}
	j = cJSON_Parse(body);
	free(body);
	add(cs, "daemon reachable", true, NULL, "meshd %s, pid %.0f, config generation %.0f",
	    ctl_str(j, "version"), ctl_num(j, "pid"), ctl_num(j, "config_generation"));
	add(cs, "daemon ready", ctl_bool(j, "ready"),
	    "see `journalctl -u meshd`: the datapath is not attached or the config not loaded",
	    "%s", ctl_bool(j, "ready") ? "datapath attached, config loaded" : "not ready");
	cJSON_Delete(j);
}

static void print_human(const struct checks *cs)
{
	int i, failed = 0;

	for (i = 0; i < cs->n; i++) {
		const struct result *r = &cs->r[i];

		printf("%-6s %s: %s\n", r->ok ? "[ok]" : "[FAIL]", r->name, r->detail);
		if (!r->ok) {
			failed++;
			printf("       fix: %s\n", r->hint ? r->hint : "see above");
		}
	}
	if (failed)
		printf("\n%d of %d checks failed\n", failed, cs->n);
	else
		printf("\nall %d checks passed\n", cs->n);
}

static int print_json(const struct checks *cs, bool all_ok)
{
	cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "checks");
	char *text;
	int i;

	cJSON_AddBoolToObject(root, "ok", all_ok);
	for (i = 0; i < cs->n; i++) {
		cJSON *o = cJSON_CreateObject();

		cJSON_AddStringToObject(o, "name", cs->r[i].name);
		cJSON_AddBoolToObject(o, "ok", cs->r[i].ok);
		cJSON_AddStringToObject(o, "detail", cs->r[i].detail);
		if (cs->r[i].hint)
			cJSON_AddStringToObject(o, "hint", cs->r[i].hint);
		cJSON_AddItemToArray(arr, o);
	}
	text = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (!text)
		return ctl_err("out of memory");
	puts(text);
	free(text);
	return CTL_OK;
}

static void mtls_line(bool ok, const char *what, const char *detail, void *arg)
{
	add(arg, what, ok, "fix the file named, or see docs/mtls.md (troubleshooting)", "%s",
	    detail);
}

int cmd_check(struct ctl *c, int argc, char **argv)
{
	struct checks *cs = calloc(1, sizeof(*cs));
	struct mesh_config *cfg;
	bool all_ok = true;
	int i, rc = ctl_no_extra_args(argc, argv, 0);

	if (rc || !cs) {
		free(cs);
		return rc ? rc : ctl_err("out of memory");
	}
	check_kernel(cs);
	check_btf(cs);
	check_bpf_features(cs);
	cfg = check_config(cs, ctl_config_path(c));
	if (cfg) {
		check_bpffs(cs, cfg->bpf_pin_path);
		check_cgroup(cs, cfg->cgroup);
		check_admin_dir(cs, cfg->admin_socket);
	}
	check_caps(cs);
	if (cfg)
		mtls_check_material(cfg, mtls_line, cs);
	if (!c->pre)
		check_daemon(cs, c, c->socket ? c->socket : cfg ? cfg->admin_socket : NULL);
	for (i = 0; i < cs->n; i++)
		all_ok = all_ok && cs->r[i].ok;
	rc = c->json ? print_json(cs, all_ok) : (print_human(cs), CTL_OK);
	config_free(cfg);
	free(cs);
	return rc ? rc : all_ok ? CTL_OK : CTL_FAIL;
}
