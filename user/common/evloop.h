/* Event loop in the style of Redis' ae: one epoll set, one-shot timers, and a thread-safe post()
 * for work finished on other threads (e.g. a discovery long poll). Everything registered runs on
 * the thread that calls evloop_run(). */
#ifndef MESH_EVLOOP_H
#define MESH_EVLOOP_H

#include <stdint.h>

struct evloop;

/* `events` are EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP bits. */
typedef void (*evloop_fd_cb)(struct evloop *loop, int fd, uint32_t events, void *arg);
typedef void (*evloop_timer_cb)(struct evloop *loop, void *arg);
typedef void (*evloop_post_cb)(void *arg);

struct evloop *evloop_new(void);
void evloop_free(struct evloop *loop);

/* Watches `fd` for `events`. One registration per fd. Returns 0 or -errno. */
int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_fd_cb cb, void *arg);
int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events);
int evloop_del_fd(struct evloop *loop, int fd);

/* One-shot timer `delay_ns` from now. Returns an id > 0, or -errno. A callback may re-arm. */
int64_t evloop_add_timer(struct evloop *loop, uint64_t delay_ns, evloop_timer_cb cb, void *arg);
/* Cancels a pending timer; unknown or fired ids are ignored. */
void evloop_del_timer(struct evloop *loop, int64_t id);

/* Runs `cb(arg)` on the loop thread soon. Safe from any thread. Returns 0 or -errno. */
int evloop_post(struct evloop *loop, evloop_post_cb cb, void *arg);

/* Busy polling: for `ns` after the last event the loop polls without blocking (yielding the
 * CPU between polls) instead of sleeping, so a reply that comes soon finds it awake: no wake-up
 * of a sleeping thread (on a VM, an idle vCPU's halt) on the path. 0 (the default) = off.
 * Loop thread only. */
void evloop_set_busy_poll(struct evloop *loop, uint64_t ns);

/* Runs until evloop_stop(). Returns 0, or -errno if epoll itself failed. */
int evloop_run(struct evloop *loop);
void evloop_stop(struct evloop *loop);

/* How long the loop's iterations took (callbacks only, not the wait in epoll). */
#define EVLOOP_HIST_BUCKETS 12
struct evloop_stats {
	uint64_t iterations;
	uint64_t max_ns; /* longest iteration since the loop was created */
	uint64_t sum_ns;
	uint64_t hist[EVLOOP_HIST_BUCKETS]; /* iterations of at most evloop_hist_le_ns[i] */
};
extern const uint64_t evloop_hist_le_ns[EVLOOP_HIST_BUCKETS]; /* last: UINT64_MAX (+Inf) */
void evloop_get_stats(const struct evloop *loop, struct evloop_stats *st);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t evloop_now_ns(void);

#endif
