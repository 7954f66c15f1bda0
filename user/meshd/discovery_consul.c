/* Consul discovery glue: runs the watcher from user/consul, hands its results to the loop thread
 * with evloop_post(), applies them through discovery_update() and persists them under state_dir. */
#include <errno.h>

#include "common/log.h"
#include "meshd/discovery.h"
#include "meshd/meshd.h"

void discovery_consul_load_state(struct discovery *d, const struct mesh_config *cfg)
{
}

int discovery_consul_start(struct discovery *d, const struct mesh_config *cfg)
{
	LOG_ERR("discovery", "discovery.backend \"consul\" is not supported yet", NULL);
	return -ENOTSUP;
}

void discovery_consul_stop(struct discovery *d)
{
}

bool discovery_consul_same(const struct config_consul *a, const struct config_consul *b)
{
	return true;
}
