/* sd_notify(3) over a plain AF_UNIX datagram socket: $NOTIFY_SOCKET is a filesystem path or, with
 * a leading '@', an abstract socket name. A fresh socket per message keeps it stateless and
 * thread-safe; messages are rare (start, reloads, stop, watchdog pings). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "meshd/sdnotify.h"

/* Fills `sa` from $NOTIFY_SOCKET; returns the address length, 0 when unset, or -EINVAL. */
static int notify_addr(struct sockaddr_un *sa)
{
	const char *path = getenv("NOTIFY_SOCKET");
	size_t len;

	if (!path || !*path)
		return 0;
	len = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa->sun_path))
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, len);
	if (path[0] == '@')
		sa->sun_path[0] = '\0';
	return (int)(offsetof(struct sockaddr_un, sun_path) + len);
}

int sdnotify(const char *fmt, ...)
{
	struct sockaddr_un sa;
	char msg[256];
	va_list ap;
	int len = notify_addr(&sa), fd, n, err = 0;

	if (len <= 0)
		return len;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return -EMSGSIZE;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, (socklen_t)len) < 0)
		err = -errno;
	close(fd);
	return err ? err : 1;
}

uint64_t sdnotify_watchdog_ns(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long v;
	char *end;

	if (!usec || !*usec)
		return 0;
	/* The variables may be inherited from a parent the watchdog was meant for. */
	if (pid && *pid && strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	errno = 0;
	v = strtoull(usec, &end, 10);
	if (errno || *end || v == 0)
		return 0;
	return (uint64_t)v * 1000ull;
}
