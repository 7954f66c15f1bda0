/* Weak stand-ins for components other modules provide (health, metrics, admin, discovery), so
 * meshd links and runs before they land; each real module's strong symbols replace these with no
 * edit here. Each says at start that it is not built. The discovery stand-in serves static
 * services straight from the config so the datapath is usable; it cannot watch Consul. */
#include <errno.h>

#include "common/log.h"
#include "meshd/meshd.h"

#define WEAK __attribute__((weak))

WEAK int health_start(struct meshd *m)
{
	LOG_WARN("health", "health checks not built: every backend counts as healthy", NULL);
	return 0;
}

WEAK void health_stop(struct meshd *m)
{
}

WEAK int health_reload(struct meshd *m, const struct mesh_config *old,
		       const struct mesh_config *new, const struct config_diff *diff)
{
	return 0;
}

WEAK bool health_backend_healthy(const struct meshd *m, const char *service,
				 const struct config_endpoint *backend)
{
	return true;
}

WEAK int metrics_start(struct meshd *m)
{
	LOG_WARN("metrics", "metrics endpoint not built", NULL);
	return 0;
}

WEAK void metrics_stop(struct meshd *m)
{
}

WEAK int metrics_reload(struct meshd *m, const struct mesh_config *old,
			const struct mesh_config *new, const struct config_diff *diff)
{
	return 0;
}

WEAK int admin_start(struct meshd *m)
{
	LOG_WARN("admin", "admin API not built", NULL);
	return 0;
}

WEAK void admin_stop(struct meshd *m)
{
}

WEAK int admin_reload(struct meshd *m, const struct mesh_config *old, const struct mesh_config *new,
		      const struct config_diff *diff)
{
	return 0;
}

/* Writes every service of `cfg` into the datapath. */
static int apply_static(struct meshd *m, const struct mesh_config *cfg)
{
	for (size_t i = 0; i < cfg->n_services; i++) {
		int err = meshd_apply_service(m, &cfg->services[i]);

		if (err)
			return err;
	}
	return 0;
}

WEAK int discovery_start(struct meshd *m)
{
	if (m->cfg->discovery != CONFIG_DISCOVERY_STATIC) {
		LOG_ERR("discovery", "discovery component not built: only static services work",
			NULL);
		return -ENOTSUP;
	}
	LOG_WARN("discovery",
		 "discovery component not built: serving static services from the config",
		 "services=%zu", m->cfg->n_services);
	return apply_static(m, m->cfg);
}

WEAK void discovery_stop(struct meshd *m)
{
}

WEAK int discovery_reload(struct meshd *m, const struct mesh_config *old,
			  const struct mesh_config *new, const struct config_diff *diff)
{
	int err = apply_static(m, new);

	for (size_t i = 0; !err && i < old->n_services; i++)
		if (!config_service_find(new, old->services[i].name))
			err = meshd_remove_service(m, old->services[i].name);
	return err;
}

WEAK const struct config_service *discovery_service(const struct meshd *m, const char *name)
{
	return m->cfg ? config_service_find(m->cfg, name) : NULL;
}
