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
