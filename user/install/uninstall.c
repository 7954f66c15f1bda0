/* uninstall_host() behind uninstall.h: the datapath through datapath_cleanup(), then the admin
 * socket, then the mTLS listener holder. Each step reports once, here, where the paths are known. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "datapath/datapath.h"
#include "install/uninstall.h"
#include "mtls/fdstore.h"

static int remove_datapath(const struct mesh_config *cfg, const char *prog, FILE *out, FILE *err)
{
	int rc;

	if (access(cfg->bpf_pin_path, F_OK) != 0 && errno == ENOENT) {
		fprintf(out, "no datapath at %s\n", cfg->bpf_pin_path);
		return 0;
	}
	rc = datapath_cleanup(cfg->bpf_pin_path);
	if (rc && rc != -ENOENT) {
		fprintf(err, "%s: cannot remove the datapath at %s: %s\n", prog, cfg->bpf_pin_path,
			strerror(-rc));
		return rc;
	}
	fprintf(out, "removed datapath %s (detached from %s)\n", cfg->bpf_pin_path, cfg->cgroup);
	return 0;
}

static int remove_socket(const struct mesh_config *cfg, const char *prog, FILE *out, FILE *err)
{
	if (unlink(cfg->admin_socket) == 0) {
		fprintf(out, "removed admin socket %s\n", cfg->admin_socket);
		return 0;
	}
	if (errno == ENOENT)
		return 0;
	fprintf(err, "%s: cannot remove %s: %s\n", prog, cfg->admin_socket, strerror(errno));
	return -errno;
}

int uninstall_host(const struct mesh_config *cfg, const char *prog, FILE *out, FILE *err)
{
	int rc = remove_datapath(cfg, prog, out, err), rc2 = remove_socket(cfg, prog, out, err);

	/* The mTLS listening sockets' holder (mtls/fdstore.h): its sockets close with it. */
	if (cfg->state_dir && fdstore_shutdown(cfg->state_dir) == 0)
		fprintf(out, "stopped the listener holder of %s\n", cfg->state_dir);
	return rc ? rc : rc2;
}
