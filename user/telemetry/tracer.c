/* The span exporter (tracer.h). The queue is a ring of spans: the submitter copies one in at the
 * tail under the mutex; the tracer thread encodes a batch straight from the slots at the head
 * without holding the mutex (the submitter never writes occupied slots) and frees them when the
 * batch is exported or given up. libcurl easy, in this thread only. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/evloop.h"
#include "common/log.h"
#include "telemetry/tracer.h"

#define NS_PER_MS 1000000ull

struct tracer {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	struct span *ring;
	size_t head, count;
	uint64_t oldest_ns; /* when the span at the head was queued */
	struct tracer_opts o;
	char *endpoint, *service_name, *host_name, *version;
	uint64_t rng;
};

static uint64_t now_ns(void)
{
	return evloop_now_ns(); /* a plain CLOCK_MONOTONIC read: fine on this thread too */
}

static void add(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

bool tracer_submit(struct tracer *t, const struct span *s)
{
	bool ok;

	pthread_mutex_lock(&t->mu);
	ok = t->count < t->o.queue_max;
	if (ok) {
		t->ring[(t->head + t->count) % t->o.queue_max] = *s;
		if (t->count++ == 0)
			t->oldest_ns = now_ns();
		if (t->count == t->o.batch_max)
			pthread_cond_signal(&t->cv);
	}
	pthread_mutex_unlock(&t->mu);
	if (!ok)
		add(&t->o.counters->dropped_full, 1);
	return ok;
}

/* Waits (mutex held) until `deadline_ns` or a signal; false once stopping. */
static bool wait_until(struct tracer *t, uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / 1000000000ull),
			       .tv_nsec = (long)(deadline_ns % 1000000000ull) };

	if (!t->stop)
		pthread_cond_timedwait(&t->cv, &t->mu, &ts);
	return !t->stop;
}

/* Waits for a batch: batch_max spans, or the oldest queued for flush_ns. Returns how many spans
 * to export from the head (contiguous in the ring), 0 when stopping. */
static size_t next_batch(struct tracer *t)
{
	size_t n = 0;

	pthread_mutex_lock(&t->mu);
	while (!t->stop) {
		uint64_t due = t->oldest_ns + t->o.flush_ns;

		if (t->count >= t->o.batch_max || (t->count && now_ns() >= due)) {
			n = t->count < t->o.batch_max ? t->count : t->o.batch_max;
			if (n > t->o.queue_max - t->head)
				n = t->o.queue_max -
				    t->head; /* the rest after the wrap, next time */
			break;
		}
		wait_until(t, t->count ? due : now_ns() + 1000 * NS_PER_MS);
	}
	pthread_mutex_unlock(&t->mu);
	return n;
}

static void release(struct tracer *t, size_t n)
{
	pthread_mutex_lock(&t->mu);
	t->head = (t->head + n) % t->o.queue_max;
	t->count -= n;
	t->oldest_ns = now_ns(); /* the next span's age is unknown: give it a full flush_ns */
	pthread_mutex_unlock(&t->mu);
}

/* libcurl progress callback: aborts the transfer once the tracer stops. */
static int on_progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	struct tracer *t = arg;

	return __atomic_load_n(&t->stop, __ATOMIC_RELAXED);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	return size * n;
}

/* POSTs one encoded request. Returns 0, -EAGAIN for a failure worth retrying (no answer, 429,
 * 5xx), or -EPROTO for one that is not (other statuses). */
static int post(struct tracer *t, CURL *c, const struct strbuf *body)
{
	struct curl_slist *h =
	    curl_slist_append(NULL, t->o.json ? "Content-Type: application/json"
					      : "Content-Type: application/x-protobuf");
	long status = 0;
	CURLcode rc;

	curl_easy_setopt(c, CURLOPT_URL, t->endpoint);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->data);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body->len);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(t->o.timeout_ns / NS_PER_MS));
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, t);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	if (rc == CURLE_OK && status >= 200 && status < 300)
		return 0;
	LOG_DEBUG("tracing", "export failed", "status=%ld err=%s", status,
		  log_q(curl_easy_strerror(rc)));
	return rc != CURLE_OK || status == 429 || status >= 500 ? -EAGAIN : -EPROTO;
}

/* Exponential backoff with jitter: a uniform draw in [d/2, d], d = base x 2^(failures - 1). */
static uint64_t backoff_ns(struct tracer *t, unsigned failures)
{
	uint64_t d = t->o.backoff_base_ns;

	for (unsigned i = 1; i < failures && d < t->o.backoff_max_ns; i++)
		d *= 2;
	if (d > t->o.backoff_max_ns)
		d = t->o.backoff_max_ns;
	t->rng ^= t->rng << 13;
	t->rng ^= t->rng >> 7;
	t->rng ^= t->rng << 17;
	return d / 2 + t->rng % (d / 2 + 1);
}

/* Exports the `n` spans at the head, retrying as the options say. Returns the failures in a row
 * after it (0 on success), for the next batch's backoff. */
static unsigned export_batch(struct tracer *t, CURL *c, size_t n, unsigned failures)
{
	const struct otlp_resource *r = &t->o.resource;
	struct strbuf body = STRBUF_INIT;
	int err;

	err = t->o.json ? otlp_encode_json(r, &t->ring[t->head], n, &body)
			: otlp_encode_protobuf(r, &t->ring[t->head], n, &body);
	for (unsigned attempt = 1; !err; attempt++) {
		err = post(t, c, &body);
		if (!err) {
			add(&t->o.counters->exports_ok, 1);
			add(&t->o.counters->exported, n);
			failures = 0;
			break;
		}
		add(&t->o.counters->exports_error, 1);
		failures++;
		if (err != -EAGAIN || attempt >= t->o.attempts)
			break;
		pthread_mutex_lock(&t->mu);
		err = wait_until(t, now_ns() + backoff_ns(t, failures)) ? 0 : -ECANCELED;
		pthread_mutex_unlock(&t->mu);
	}
	if (err && err != -ECANCELED) {
		add(&t->o.counters->dropped_error, n);
		LOG_WARN("tracing", "spans dropped: export failed", "spans=%zu endpoint=%s", n,
			 log_q(t->endpoint));
	}
	strbuf_free(&body);
	return failures;
}

static void *tracer_main(void *arg)
{
	struct tracer *t = arg;
	CURL *c = curl_easy_init();
	unsigned failures = 0;
	size_t n;

	while (c && (n = next_batch(t)) > 0) {
		failures = export_batch(t, c, n, failures);
		release(t, n);
		if (failures) { /* the collector is failing: give it time before the next batch */
			pthread_mutex_lock(&t->mu);
			wait_until(t, now_ns() + backoff_ns(t, failures));
			pthread_mutex_unlock(&t->mu);
		}
	}
	if (!c)
		LOG_ERR("tracing", "cannot start libcurl; spans will queue and drop", NULL);
	curl_easy_cleanup(c);
	return NULL;
}

static void defaults(struct tracer_opts *o)
{
	if (!o->queue_max)
		o->queue_max = 2048;
	if (!o->batch_max || o->batch_max > o->queue_max)
		o->batch_max = o->queue_max < 512 ? o->queue_max : 512;
	if (!o->flush_ns)
		o->flush_ns = 1000 * NS_PER_MS;
	if (!o->timeout_ns)
		o->timeout_ns = 5000 * NS_PER_MS;
	if (!o->backoff_base_ns)
		o->backoff_base_ns = 500 * NS_PER_MS;
	if (!o->backoff_max_ns)
		o->backoff_max_ns = 5000 * NS_PER_MS;
	if (!o->attempts)
		o->attempts = 3;
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

static void tracer_release(struct tracer *t)
{
	free(t->ring);
	free(t->endpoint);
	free(t->service_name);
	free(t->host_name);
	free(t->version);
	free(t);
}

struct tracer *tracer_new(const struct tracer_opts *o)
{
	struct tracer *t = calloc(1, sizeof(*t));
	pthread_condattr_t ca;
	int err;

	if (!t)
		return NULL;
	t->o = *o;
	defaults(&t->o);
	t->ring = calloc(t->o.queue_max, sizeof(*t->ring));
	t->endpoint = dup_or_empty(o->endpoint);
	t->service_name = dup_or_empty(o->resource.service_name);
	t->host_name = dup_or_empty(o->resource.host_name);
	t->version = dup_or_empty(o->resource.version);
	if (!t->ring || !t->endpoint || !t->service_name || !t->host_name || !t->version ||
	    !o->counters) {
		tracer_release(t);
		errno = o->counters ? ENOMEM : EINVAL;
		return NULL;
	}
	t->o.resource = (struct otlp_resource){ t->service_name, t->host_name, t->version };
	if (getrandom(&t->rng, sizeof(t->rng), 0) != sizeof(t->rng) || !t->rng)
		t->rng = now_ns() | 1;
	/* Reference counted, and called on the loop thread like the Consul client's. */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	pthread_mutex_init(&t->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&t->cv, &ca);
	pthread_condattr_destroy(&ca);
	err = pthread_create(&t->thread, NULL, tracer_main, t);
	if (err) {
		pthread_cond_destroy(&t->cv);
		pthread_mutex_destroy(&t->mu);
		tracer_release(t);
		errno = err;
		return NULL;
	}
	return t;
}

void tracer_free(struct tracer *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	__atomic_store_n(&t->stop, true, __ATOMIC_RELAXED);
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	pthread_cond_destroy(&t->cv);
	pthread_mutex_destroy(&t->mu);
	tracer_release(t);
}
