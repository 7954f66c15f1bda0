/* The one table of discovery sources, indexed by the discovery.backend value: the only place
 * that maps a backend kind to its implementation and its name (metrics label, logs, state file,
 * admin API). */
#include <stddef.h>

#include "discovery/source.h"

static const struct discovery_source_ops *const sources[] = {
	[CONFIG_DISCOVERY_STATIC] = &discovery_static_source,
	[CONFIG_DISCOVERY_CONSUL] = &discovery_consul_source,
	[CONFIG_DISCOVERY_DNS] = &discovery_dns_source,
};

const struct discovery_source_ops *discovery_source_ops(enum config_discovery kind)
{
	if ((unsigned)kind >= sizeof(sources) / sizeof(sources[0]))
		return NULL;
	return sources[kind];
}
