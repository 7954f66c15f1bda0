/* The DNS SRV source (discovery.backend dns). Placeholder until the resolver lands in this
 * series: starting it is refused, as before. */
#include <errno.h>

#include "common/log.h"
#include "discovery/source.h"

static bool dns_provides(const struct mesh_config *cfg, const char *name)
{
	return false;
}

static int dns_start(const struct mesh_config *cfg, struct evloop *loop,
		     const struct discovery_sink *sink, struct discovery_source **out)
{
	LOG_ERR("discovery", "discovery.backend \"dns\" is not supported yet", NULL);
	return -ENOTSUP;
}

static int dns_reload(struct discovery_source *s, const struct mesh_config *old,
		      const struct mesh_config *new)
{
	return -ENOTSUP;
}

static void dns_stop(struct discovery_source *s, bool switched)
{
}

const struct discovery_source_ops discovery_dns_source = {
	.name = "dns",
	.kind = CONFIG_DISCOVERY_DNS,
	.provides = dns_provides,
	.start = dns_start,
	.reload = dns_reload,
	.stop = dns_stop,
};
