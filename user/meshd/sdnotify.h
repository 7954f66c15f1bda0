/* systemd's readiness protocol (sd_notify(3)) without libsystemd: state lines sent as one
 * datagram to the unix socket named by $NOTIFY_SOCKET, and the watchdog period from
 * $WATCHDOG_USEC. Without those variables every call is a no-op, so meshd runs the same in a
 * terminal. Any thread. */
#ifndef MESHD_SDNOTIFY_H
#define MESHD_SDNOTIFY_H

#include <stdint.h>

/* Sends `fmt` (printf-style, newline-separated `KEY=value` lines such as "READY=1") to
 * $NOTIFY_SOCKET. Returns 1 when sent, 0 when not running under a notify socket, or -errno. */
int sdnotify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog period systemd expects pings within (WATCHDOG_USEC, honouring WATCHDOG_PID), in
 * nanoseconds; 0 when the watchdog is off. */
uint64_t sdnotify_watchdog_ns(void);

#endif
