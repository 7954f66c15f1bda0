/* The static source: every service's backends come from `services[].backends` in the config, so
 * it provides none itself; the registry writes the config's sets. It counts one successful sync
 * at start and at every reload (the config is the source: in sync by definition). */
#include <errno.h>
#include <stdlib.h>

#include "discovery/source.h"

struct discovery_source {
	struct discovery_sink sink;
};

static bool static_provides(const struct mesh_config *cfg, const char *name)
{
	return false;
}

static int static_start(const struct mesh_config *cfg, struct evloop *loop,
			const struct discovery_sink *sink, struct discovery_source **out)
{
	struct discovery_source *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->sink = *sink;
	s->sink.synced(s->sink.arg, true);
	s->sink.up(s->sink.arg, true);
	*out = s;
	return 0;
}

static int static_reload(struct discovery_source *s, const struct mesh_config *old,
			 const struct mesh_config *new)
{
	s->sink.synced(s->sink.arg, true);
	return 0;
}

static void static_stop(struct discovery_source *s, bool switched)
{
	free(s);
}

const struct discovery_source_ops discovery_static_source = {
	.name = "static",
	.kind = CONFIG_DISCOVERY_STATIC,
	.provides = static_provides,
	.start = static_start,
	.reload = static_reload,
	.stop = static_stop,
};
