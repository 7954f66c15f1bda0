/* Host checks: what a loaded config asks of this machine, beyond the file itself. The `cgroup`
 * directory must exist on the cgroup v2 filesystem and `bpf_pin_path` must be on bpffs (or be
 * missing below a bpffs mount, meshd creates it), and `admin.socket` must sit where only root (or
 * meshd's user) can change it. Run by `meshd validate` (unless --offline), by
 * meshd before it starts anything, and by `meshctl check`; never by config_load() itself, so
 * loading stays free of the host (tests, fuzzing, meshctl on another machine). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "common/pathperm.h"
#include "config/config_int.h"

#define BPF_FS_MAGIC_ 0xcafe4a11
#define CGROUP2_MAGIC_ 0x63677270

/* A name for the filesystems a wrong path usually lands on. */
static const char *fs_name(unsigned long magic, char *buf, size_t len)
{
	static const struct {
		unsigned long magic;
		const char *name;
	} known[] = {
		{ BPF_FS_MAGIC_, "bpffs" },  { CGROUP2_MAGIC_, "cgroup2" },
		{ 0x27e0eb, "cgroup v1" },   { 0x01021994, "tmpfs" },
		{ 0x62656572, "sysfs" },     { 0xef53, "ext4" },
		{ 0x58465342, "xfs" },	     { 0x9123683e, "btrfs" },
		{ 0x794c7630, "overlayfs" },
	};

	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (known[i].magic == magic)
			return known[i].name;
	snprintf(buf, len, "filesystem 0x%lx", magic);
	return buf;
}

int config_host_cgroup2_mount(char *out, size_t len)
{
	char dev[256], dir[4096], type[64];
	FILE *f = fopen("/proc/mounts", "re");
	int err = -ENOENT;

	if (!f)
		return -errno;
	while (err && fscanf(f, "%255s %4095s %63s %*[^\n]", dev, dir, type) == 3) {
		if (!strcmp(type, "cgroup2")) {
			snprintf(out, len, "%s", dir);
			err = 0;
		}
	}
	fclose(f);
	return err;
}

int config_host_cgroup(const char *path, char *why, size_t len)
{
	char mount[4096], fs[32];
	struct statfs sf;
	struct stat st;

	if (stat(path, &st) < 0) {
		snprintf(why, len, "%s", strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(why, len, "not a directory");
		return -ENOTDIR;
	}
	if (statfs(path, &sf) < 0) {
		snprintf(why, len, "%s", strerror(errno));
		return -errno;
	}
	if ((unsigned long)sf.f_type == CGROUP2_MAGIC_)
		return 0;
	if (config_host_cgroup2_mount(mount, sizeof(mount)))
		snprintf(why, len, "on %s, and no cgroup2 filesystem is mounted",
			 fs_name((unsigned long)sf.f_type, fs, sizeof(fs)));
	else
		snprintf(why, len, "on %s, not cgroup2; the cgroup2 mount is %s",
			 fs_name((unsigned long)sf.f_type, fs, sizeof(fs)), mount);
	return -EMEDIUMTYPE;
}

int config_host_pin_path(const char *path, char *why, size_t len)
{
	char at[4096], *slash, fs[32];
	struct statfs sf;

	/* statfs of the path or, while it does not exist yet, of its nearest existing ancestor */
	snprintf(at, sizeof(at), "%s", path);
	while (statfs(at, &sf) < 0) {
		if (errno != ENOENT || !(slash = strrchr(at, '/'))) {
			snprintf(why, len, "%s: %s", at, strerror(errno));
			return -errno;
		}
		slash[slash == at] = '\0'; /* "/x" -> "/" */
	}
	if ((unsigned long)sf.f_type == BPF_FS_MAGIC_) {
		snprintf(why, len, "%s is on bpffs", at);
		return 0;
	}
	snprintf(why, len, "%s is on %s", at, fs_name((unsigned long)sf.f_type, fs, sizeof(fs)));
	return -EMEDIUMTYPE;
}

size_t config_check_host(const struct mesh_config *cfg, struct config_errors *errs)
{
	size_t n0 = errs->n;
	char why[4200];

	if (cfg->cgroup && config_host_cgroup(cfg->cgroup, why, sizeof(why)))
		cfg_errf(errs,
			 "cgroup: not a cgroup v2 directory: %s (got \"%s\", expected an existing "
			 "directory of the cgroup2 filesystem)",
			 why, cfg->cgroup);
	if (cfg->bpf_pin_path && config_host_pin_path(cfg->bpf_pin_path, why, sizeof(why)))
		cfg_errf(errs,
			 "bpf_pin_path: not on a bpf filesystem: %s (got \"%s\", expected a "
			 "directory on bpffs, or a missing one below a bpffs mount such as "
			 "/sys/fs/bpf)",
			 why, cfg->bpf_pin_path);
	if (cfg->admin_socket &&
	    pathperm_private_parent(cfg->admin_socket, geteuid(), why, sizeof(why)))
		cfg_errf(errs,
			 "admin.socket: in a directory others can change: %s (got \"%s\", expected "
			 "a directory only root or this user can write to, e.g. /run/meshd)",
			 why, cfg->admin_socket);
	return errs->n - n0;
}
