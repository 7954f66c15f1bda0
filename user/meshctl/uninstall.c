/* meshctl uninstall: removes what meshd installed on this host (detaches and unpins the datapath,
 * removes the admin socket), the same as `meshd --cleanup`. It refuses while meshd still answers
 * on its admin socket: a running daemon would re-create what this removes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "datapath/datapath.h"
#include "meshctl/meshctl.h"

/* True when something accepts connections on the unix socket at `path`. */
static bool daemon_listening(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ok;

	if (strlen(path) >= sizeof(sa.sun_path))
		return false;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int cmd_uninstall(struct ctl *c, int argc, char **argv)
{
	struct mesh_config *cfg;
	int rc = ctl_no_extra_args(argc, argv, 0), err;

	if (rc)
		return rc;
	cfg = ctl_load_config(c, false);
	if (!cfg)
		return ctl_err("config %s is invalid: cannot tell what to remove",
			       ctl_config_path(c) ? ctl_config_path(c) : "(defaults)");
	if (daemon_listening(cfg->admin_socket)) {
		rc = ctl_err("meshd is running (admin socket %s): stop it first, e.g. "
			     "systemctl stop meshd",
			     cfg->admin_socket);
		goto out;
	}
	if (access(cfg->bpf_pin_path, F_OK) != 0) {
		printf("no datapath at %s\n", cfg->bpf_pin_path);
		goto socket;
	}
	err = datapath_cleanup(cfg->bpf_pin_path);
	if (err) {
		rc = ctl_err("cannot remove the datapath at %s: %s", cfg->bpf_pin_path,
			     strerror(-err));
		goto out;
	}
	printf("removed datapath %s (cgroup %s)\n", cfg->bpf_pin_path, cfg->cgroup);
socket:
	if (unlink(cfg->admin_socket) == 0)
		printf("removed admin socket %s\n", cfg->admin_socket);
out:
	config_free(cfg);
	return rc;
}
