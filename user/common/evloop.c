/* Event loop behind evloop.h: one epoll set, a binary min-heap of one-shot timers ordered by
 * (deadline, id) with an id -> heap position index (so cancelling is O(log n)), and an eventfd that wakes the loop for evloop_post() and evloop_stop() from
 * other threads. Everything except evloop_post()/evloop_stop() runs on the loop thread only;
 * the post queue is the only state shared across threads and sits behind a mutex. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/evloop.h"

#define MAX_EVENTS 64

struct fd_slot {
	evloop_fd_cb cb; /* NULL when the fd is not registered */
	void *arg;
};

struct timer {
	uint64_t when_ns; /* CLOCK_MONOTONIC deadline */
	int64_t id;	  /* increasing; breaks ties so equal deadlines fire in creation order */
	evloop_timer_cb cb;
	void *arg;
};

/* Where timer `id` sits in the heap. */
struct timer_pos {
	int64_t id;
	size_t idx;
};

struct post {
	struct post *next;
	evloop_post_cb cb;
	void *arg;
};

struct evloop {
	int epfd;
	int wakefd; /* eventfd: posts and cross-thread stop */
	struct fd_slot *fds;
	size_t n_fds; /* capacity of fds[], indexed by fd */
	struct timer *heap;
	size_t n_timers, cap_timers;
	struct timer_pos *pos; /* open addressing, linear probing; id 0 = empty slot */
	size_t pos_mask;       /* capacity - 1 (a power of two, >= 2 * cap_timers) */
	int64_t next_timer_id;
	pthread_mutex_t post_lock;
	struct post *post_head, **post_tail; /* FIFO, under post_lock */
	bool stop;			     /* written by any thread, atomically */
	uint64_t busy_ns;		     /* spin this long after the last event; 0 = never */
	struct evloop_stats stats;	     /* loop thread only */
};

const uint64_t evloop_hist_le_ns[EVLOOP_HIST_BUCKETS] = {
	1000000,  2000000,  5000000,   10000000,  15000000,   20000000,
	30000000, 50000000, 100000000, 250000000, 1000000000, UINT64_MAX,
};

static void account(struct evloop *loop, uint64_t ns)
{
	int b = 0;

	while (ns > evloop_hist_le_ns[b])
		b++;
	loop->stats.hist[b]++;
	loop->stats.iterations++;
	loop->stats.sum_ns += ns;
	if (ns > loop->stats.max_ns)
		loop->stats.max_ns = ns;
}

void evloop_get_stats(const struct evloop *loop, struct evloop_stats *st)
{
	*st = loop->stats;
}

uint64_t evloop_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct evloop *evloop_new(void)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct evloop *loop = calloc(1, sizeof(*loop));
	int err;

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		goto err_free;
	loop->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->wakefd < 0)
		goto err_epoll;
	ev.data.fd = loop->wakefd;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wakefd, &ev) < 0)
		goto err_wake;
	pthread_mutex_init(&loop->post_lock, NULL);
	loop->post_tail = &loop->post_head;
	return loop;

err_wake:
	err = errno;
	close(loop->wakefd);
	errno = err;
err_epoll:
	err = errno;
	close(loop->epfd);
	errno = err;
err_free:
	free(loop);
	return NULL;
}

static void run_posts_for(struct evloop *loop, uint64_t budget_ns);

/* Frees the loop. Posts still pending run first, so their callbacks release what they carry (no
 * thread may post meanwhile); registered fds are not closed (the loop does not own them).
 * Accepts NULL. */
void evloop_free(struct evloop *loop)
{
	if (!loop)
		return;
	run_posts_for(loop, 0);
	pthread_mutex_destroy(&loop->post_lock);
	close(loop->wakefd);
	close(loop->epfd);
	free(loop->heap);
	free(loop->pos);
	free(loop->fds);
	free(loop);
}

/* --- file descriptors ------------------------------------------------------------------------ */

static int grow_fds(struct evloop *loop, int fd)
{
	size_t n = loop->n_fds ? loop->n_fds : 16;
	struct fd_slot *fds;

	while (n <= (size_t)fd)
		n *= 2;
	fds = realloc(loop->fds, n * sizeof(*fds));
	if (!fds)
		return -ENOMEM;
	memset(fds + loop->n_fds, 0, (n - loop->n_fds) * sizeof(*fds));
	loop->fds = fds;
	loop->n_fds = n;
	return 0;
}

int evloop_add_fd(struct evloop *loop, int fd, uint32_t events, evloop_fd_cb cb, void *arg)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };
	int err;

	if (fd < 0 || !cb || fd == loop->wakefd)
		return -EINVAL;
	if ((size_t)fd >= loop->n_fds) {
		err = grow_fds(loop, fd);
		if (err)
			return err;
	}
	if (loop->fds[fd].cb)
		return -EEXIST;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	loop->fds[fd].cb = cb;
	loop->fds[fd].arg = arg;
	return 0;
}

static bool fd_registered(const struct evloop *loop, int fd)
{
	return fd >= 0 && (size_t)fd < loop->n_fds && loop->fds[fd].cb;
}

int evloop_mod_fd(struct evloop *loop, int fd, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.fd = fd };

	if (!fd_registered(loop, fd))
		return -ENOENT;
	return epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

/* Unregisters `fd`; safe from inside any callback (events already fetched for it are skipped). */
int evloop_del_fd(struct evloop *loop, int fd)
{
	if (!fd_registered(loop, fd))
		return -ENOENT;
	loop->fds[fd].cb = NULL;
	loop->fds[fd].arg = NULL;
	/* The fd may already be closed (then the kernel dropped it from the set itself). */
	if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != EBADF && errno != ENOENT)
		return -errno;
	return 0;
}

/* --- timers: min-heap on (when_ns, id) -------------------------------------------------------- */

static bool timer_before(const struct timer *a, const struct timer *b)
{
	return a->when_ns < b->when_ns || (a->when_ns == b->when_ns && a->id < b->id);
}

/* --- id -> position index --------------------------------------------------------------------- */

static size_t pos_hash(const struct evloop *loop, int64_t id)
{
	return ((uint64_t)id * 0x9e3779b97f4a7c15ull >> 17) & loop->pos_mask;
}

/* Slot holding `id`, or the empty slot where it would go. */
static size_t pos_slot(const struct evloop *loop, int64_t id)
{
	size_t i = pos_hash(loop, id);

	while (loop->pos[i].id && loop->pos[i].id != id)
		i = (i + 1) & loop->pos_mask;
	return i;
}

static void pos_set(struct evloop *loop, int64_t id, size_t idx)
{
	struct timer_pos *p = &loop->pos[pos_slot(loop, id)];

	p->id = id;
	p->idx = idx;
}

/* Deletes `id` with backward shifting, so probes never need tombstones. */
static void pos_del(struct evloop *loop, int64_t id)
{
	size_t hole = pos_slot(loop, id), i = hole;

	if (!loop->pos[hole].id)
		return;
	for (;;) {
		i = (i + 1) & loop->pos_mask;
		if (!loop->pos[i].id)
			break;
		/* Move entry i into the hole unless its home lies cyclically in (hole, i]. */
		size_t home = pos_hash(loop, loop->pos[i].id);
		if (((i - home) & loop->pos_mask) >= ((i - hole) & loop->pos_mask)) {
			loop->pos[hole] = loop->pos[i];
			hole = i;
		}
	}
	loop->pos[hole].id = 0;
}

/* Grows the heap and the index together; the index stays at most half full. */
static int timers_grow(struct evloop *loop)
{
	size_t cap = loop->cap_timers ? loop->cap_timers * 2 : 16;
	struct timer *h = realloc(loop->heap, cap * sizeof(*h));
	struct timer_pos *pos;

	if (!h)
		return -ENOMEM;
	loop->heap = h;
	pos = calloc(cap * 2, sizeof(*pos));
	if (!pos)
		return -ENOMEM;
	free(loop->pos);
	loop->pos = pos;
	loop->pos_mask = cap * 2 - 1;
	loop->cap_timers = cap;
	for (size_t i = 0; i < loop->n_timers; i++)
		pos_set(loop, h[i].id, i);
	return 0;
}

/* --- the heap ---------------------------------------------------------------------------------- */

/* Puts `t` at heap index `i` and records where it went. */
static void heap_put(struct evloop *loop, size_t i, struct timer t)
{
	loop->heap[i] = t;
	pos_set(loop, t.id, i);
}

static void timer_swap(struct evloop *loop, size_t i, size_t j)
{
	struct timer t = loop->heap[i];

	heap_put(loop, i, loop->heap[j]);
	heap_put(loop, j, t);
}

static void sift_up(struct evloop *loop, size_t i)
{
	struct timer *h = loop->heap;

	while (i > 0 && timer_before(&h[i], &h[(i - 1) / 2])) {
		timer_swap(loop, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void sift_down(struct evloop *loop, size_t i)
{
	struct timer *h = loop->heap;
	size_t n = loop->n_timers;

	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, min = i;

		if (l < n && timer_before(&h[l], &h[min]))
			min = l;
		if (r < n && timer_before(&h[r], &h[min]))
			min = r;
		if (min == i)
			return;
		timer_swap(loop, i, min);
		i = min;
	}
}

/* Removes heap entry `i`, keeping the heap ordered. */
static void heap_remove(struct evloop *loop, size_t i)
{
	pos_del(loop, loop->heap[i].id);
	loop->n_timers--;
	if (i == loop->n_timers)
		return;
	heap_put(loop, i, loop->heap[loop->n_timers]);
	sift_down(loop, i);
	sift_up(loop, i);
}

int64_t evloop_add_timer(struct evloop *loop, uint64_t delay_ns, evloop_timer_cb cb, void *arg)
{
	struct timer t;

	if (!cb)
		return -EINVAL;
	if (loop->n_timers == loop->cap_timers && timers_grow(loop))
		return -ENOMEM;
	t.when_ns = evloop_now_ns() + delay_ns;
	t.id = ++loop->next_timer_id;
	t.cb = cb;
	t.arg = arg;
	heap_put(loop, loop->n_timers, t);
	sift_up(loop, loop->n_timers++);
	return t.id;
}

void evloop_del_timer(struct evloop *loop, int64_t id)
{
	size_t slot;

	if (id <= 0 || !loop->pos)
		return;
	slot = pos_slot(loop, id);
	if (loop->pos[slot].id == id)
		heap_remove(loop, loop->pos[slot].idx);
}

/* Fires every timer due now. Timers added by the callbacks wait for the next round, so a
 * callback that re-arms with delay 0 cannot starve the fds. */
static void run_timers(struct evloop *loop)
{
	int64_t last_id = loop->next_timer_id;
	uint64_t now = evloop_now_ns();

	while (loop->n_timers && loop->heap[0].when_ns <= now && loop->heap[0].id <= last_id) {
		struct timer t = loop->heap[0];

		heap_remove(loop, 0);
		t.cb(loop, t.arg);
	}
}

/* epoll_wait timeout in ms: until the earliest timer (rounded up), or -1 with no timers. */
static int next_timeout_ms(const struct evloop *loop)
{
	uint64_t now, when;

	if (!loop->n_timers)
		return -1;
	now = evloop_now_ns();
	when = loop->heap[0].when_ns;
	if (when <= now)
		return 0;
	if (when - now > 3600ull * 1000000000ull)
		return 3600 * 1000;
	return (int)((when - now + 999999) / 1000000);
}

/* --- posts and wake-ups ----------------------------------------------------------------------- */

static void wake(struct evloop *loop)
{
	uint64_t one = 1;
	ssize_t w = write(loop->wakefd, &one, sizeof(one));

	(void)w; /* EAGAIN means the counter is already non-zero: the loop will wake anyway */
}

int evloop_post(struct evloop *loop, evloop_post_cb cb, void *arg)
{
	struct post *p = malloc(sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->next = NULL;
	p->cb = cb;
	p->arg = arg;
	pthread_mutex_lock(&loop->post_lock);
	*loop->post_tail = p;
	loop->post_tail = &p->next;
	pthread_mutex_unlock(&loop->post_lock);
	wake(loop);
	return 0;
}

/* Posts run for at most this long per iteration; the rest wait for the next one (a watcher that
 * queued a thousand answers at once must not hold the loop for all of them). */
#define POST_BUDGET_NS (2 * 1000 * 1000ULL)

/* Puts the posts from `p` on (not yet run) back at the front of the queue, and wakes the loop. */
static void requeue_posts(struct evloop *loop, struct post *p)
{
	struct post **tail = &p;

	while (*tail)
		tail = &(*tail)->next;
	pthread_mutex_lock(&loop->post_lock);
	*tail = loop->post_head;
	if (!loop->post_head)
		loop->post_tail = tail;
	loop->post_head = p;
	pthread_mutex_unlock(&loop->post_lock);
	wake(loop);
}

/* Takes the whole queue under the lock, then runs it unlocked in posting order, for at most
 * `budget_ns` (every post when 0). */
static void run_posts_for(struct evloop *loop, uint64_t budget_ns)
{
	struct post *p, *next;
	uint64_t v, t0 = evloop_now_ns();
	ssize_t r = read(loop->wakefd, &v, sizeof(v));

	(void)r;
	pthread_mutex_lock(&loop->post_lock);
	p = loop->post_head;
	loop->post_head = NULL;
	loop->post_tail = &loop->post_head;
	pthread_mutex_unlock(&loop->post_lock);
	for (; p; p = next) {
		if (budget_ns && evloop_now_ns() - t0 >= budget_ns) {
			requeue_posts(loop, p);
			return;
		}
		next = p->next;
		p->cb(p->arg);
		free(p);
	}
}

static void run_posts(struct evloop *loop)
{
	run_posts_for(loop, POST_BUDGET_NS);
}

/* --- the loop --------------------------------------------------------------------------------- */

static void dispatch(struct evloop *loop, const struct epoll_event *ev, int n)
{
	for (int i = 0; i < n; i++) {
		int fd = ev[i].data.fd;

		if (fd == loop->wakefd) {
			run_posts(loop);
			continue;
		}
		/* An earlier callback in this batch may have unregistered it. */
		if (fd_registered(loop, fd))
			loop->fds[fd].cb(loop, fd, ev[i].events, loop->fds[fd].arg);
	}
}

void evloop_set_busy_poll(struct evloop *loop, uint64_t ns)
{
	loop->busy_ns = ns;
}

/* Waits for events: blocks, or within busy_ns of the last event polls without blocking and
 * yields the CPU between polls (runnable threads go first; the CPU does not idle). */
static int wait_events(struct evloop *loop, struct epoll_event *ev, uint64_t last_ns, bool *spun)
{
	int n;

	*spun = loop->busy_ns && evloop_now_ns() - last_ns < loop->busy_ns;
	if (!*spun)
		return epoll_wait(loop->epfd, ev, MAX_EVENTS, next_timeout_ms(loop));
	n = epoll_wait(loop->epfd, ev, MAX_EVENTS, 0);
	if (n == 0)
		sched_yield();
	return n;
}

int evloop_run(struct evloop *loop)
{
	struct epoll_event ev[MAX_EVENTS];
	uint64_t last_ns = 0;

	while (!__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE)) {
		bool spun;
		int n = wait_events(loop, ev, last_ns, &spun);
		uint64_t t0;

		if (n < 0 && errno != EINTR)
			return -errno;
		t0 = evloop_now_ns();
		if (n > 0) {
			dispatch(loop, ev, n);
			last_ns = t0;
		}
		if (!__atomic_load_n(&loop->stop, __ATOMIC_ACQUIRE))
			run_timers(loop);
		if (n != 0 || !spun) /* an empty poll while spinning is no iteration */
			account(loop, evloop_now_ns() - t0);
	}
	__atomic_store_n(&loop->stop, false, __ATOMIC_RELEASE);
	return 0;
}

/* Makes evloop_run() return after the current callback. Safe from any thread. */
void evloop_stop(struct evloop *loop)
{
	__atomic_store_n(&loop->stop, true, __ATOMIC_RELEASE);
	wake(loop);
}
