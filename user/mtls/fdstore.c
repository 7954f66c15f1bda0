/* Listener store behind fdstore.h. (Placeholder: nothing survives yet.) */
#include "mtls/fdstore.h"

void fdstore_init(const char *dir, const char *self_exe)
{
}

size_t fdstore_take(const char *name, const struct config_endpoint *ep, int *fds, size_t max)
{
	return 0;
}

void fdstore_keep(const char *name, const struct config_endpoint *ep, const int *fds, size_t n)
{
}

void fdstore_release(const char *name)
{
}

int fdstore_shutdown(const char *dir)
{
	return -2;
}

int fdstore_holder_main(const char *dir)
{
	return 1;
}
