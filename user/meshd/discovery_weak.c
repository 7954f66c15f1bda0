/* Weak stand-ins for the daemon hooks discovery calls, so meshd links before lifecycle.c lands;
 * lifecycle.c's strong definitions replace them. Delete once it has. */
#include <errno.h>

#include "meshd/meshd.h"

#define WEAK __attribute__((weak))

WEAK int meshd_apply_service(struct meshd *m, const struct config_service *svc)
{
	return -ENOSYS;
}

WEAK int meshd_remove_service(struct meshd *m, const char *name)
{
	return -ENOSYS;
}

/* user/common/evloop.c (branch daemon) defines the real one; meshd pulls that object from
 * libmesh.a for evloop_new() and its strong symbol replaces this one. */
WEAK int evloop_post(struct evloop *loop, evloop_post_cb cb, void *arg)
{
	return -ENOSYS;
}
