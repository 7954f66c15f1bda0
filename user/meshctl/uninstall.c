/* meshctl uninstall: removes what meshd installed on this host (detaches and unpins the datapath,
 * removes the admin socket) with the same code as `meshd --cleanup` (install/uninstall.c). It
 * refuses while meshd still answers on its admin socket: a running daemon would re-create what
 * this removes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config/config.h"
#include "install/uninstall.h"
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
	int rc = ctl_no_extra_args(argc, argv, 0);

	if (rc)
		return rc;
	cfg = ctl_load_config(c, false);
	if (!cfg)
		return ctl_err("config %s is invalid: cannot tell what to remove",
			       ctl_config_path(c) ? ctl_config_path(c) : "(defaults)");
	if (daemon_listening(cfg->admin_socket))
		rc = ctl_err("meshd is running (admin socket %s): stop it first, e.g. "
			     "systemctl stop meshd",
			     cfg->admin_socket);
	else if (uninstall_host(cfg, "meshctl", stdout, stderr))
		rc = CTL_FAIL;
	config_free(cfg);
	return rc;
}
