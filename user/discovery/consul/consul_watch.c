/* Consul watcher: one thread drives a blocking-query loop per service over one libcurl multi
 * handle (curl_multi_poll, woken by curl_multi_wakeup to stop), and the agent writes: each
 * registration retried on its own with backoff, kept true afterwards (a periodic
 * GET /v1/agent/services, or a 404 on a TTL update, means the agent lost it: written again),
 * TTL checks reported from what the owner sets; a service's answers carry selector documents
 * while the owner asks for them (turning them on reads it again at once). Each loop follows
 * Consul's client rules: X-Consul-Index handling, a token bucket between queries, capped
 * jittered backoff on errors (and a fresh non-blocking read after one). Results go to the
 * owner's callback on this thread. The token only ever sits in one header list; nothing here logs it. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "discovery/consul/consul.h"
#include "discovery/state.h"

#define NS_PER_MS 1000000ull
#define URL_MAX 2048
#define POLL_MAX_MS 1000
#define GET_BODY_MAX (4u << 20) /* a Connect answer: a few certificates or intentions */

enum query_kind {
	QUERY_WATCH = 0,      /* blocking health query, forever */
	QUERY_REGISTER = 1,   /* PUT /v1/agent/service/register, until it succeeds */
	QUERY_DEREGISTER = 2, /* PUT /v1/agent/service/deregister/:id, until it succeeds */
	QUERY_GET = 3,	      /* another blocking read, forever; the body goes to the owner */
	QUERY_TTL = 4,	      /* PUT /v1/agent/check/pass|fail/:id, every third of the TTL */
	QUERY_VERIFY = 5,     /* GET /v1/agent/services: re-register what the agent lost */
};

struct query {
	struct consul_watch *w;
	enum query_kind kind;
	char *service;	       /* service name (watch), service ID (writes) or path (get) */
	char *dc;	       /* QUERY_WATCH: ?dc= of this loop, NULL = the watcher's datacenter */
	char *put_body;	       /* registration JSON */
	bool done;	       /* a write that succeeded */
	struct query *reg;     /* QUERY_TTL: its registration */
	struct query *ttl;     /* QUERY_REGISTER: its TTL job, NULL when none */
	atomic_bool selectors; /* QUERY_WATCH: answers carry selector documents */
	atomic_bool refresh;   /* QUERY_WATCH: read again now (selectors were turned on) */
	bool sel_now;	       /* QUERY_WATCH: `selectors` as the request in flight began */
	atomic_int passing;    /* QUERY_TTL: what to report (1/0), -1 = not known yet */
	atomic_bool dirty;     /* QUERY_TTL: `passing` changed since the last report */
	int sending;	       /* QUERY_TTL: the status the request in flight reports */
	uint64_t period_ns;    /* QUERY_TTL, QUERY_VERIFY: time between requests */
	struct discovery_registration
	    st;	     /* QUERY_REGISTER: state for status and metrics (w->lock) */
	CURL *easy;  /* non-NULL while a request is in flight */
	long status; /* status of the response being received (from its status line) */
	struct consul_stream *stream; /* a 200 health answer, parsed as it arrives */
	char err_body[256];	      /* the start of any other body (Consul errors are text) */
	char *body;		      /* a 200 answer of a QUERY_GET, whole, NUL-terminated */
	size_t got;		      /* its length */
	size_t err_len;
	size_t body_len;    /* bytes received */
	char index_hdr[32]; /* last X-Consul-Index value seen, "" when none */
	bool has_index;
	uint64_t index; /* index the next query sends (0 = non-blocking) */
	uint64_t next_ns;
	unsigned failures;
	struct consul_bucket bucket;
	char url[URL_MAX];
};

struct consul_watch {
	struct consul_watch_opts o; /* strings below are owned copies */
	char *address, *datacenter, *ca_file;
	struct curl_slist *headers; /* may hold the token: never logged */
	struct query *q;
	size_t n;
	CURLM *multi;
	pthread_t thread;
	atomic_bool stop;
	atomic_size_t writes_left; /* agent writes not done yet */
	pthread_mutex_t lock;	   /* the registrations' `st` */
	struct query **regs;	   /* QUERY_REGISTER jobs in option order */
	size_t n_regs;
	uint64_t rnd;
	consul_update_cb cb;
	void *arg;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t next_rand(struct consul_watch *w)
{
	w->rnd ^= w->rnd << 13;
	w->rnd ^= w->rnd >> 7;
	w->rnd ^= w->rnd << 17;
	return (uint32_t)(w->rnd >> 32);
}

void consul_update_free(struct consul_update *u)
{
	if (!u)
		return;
	free(u->service);
	free(u->dc);
	state_backends_free(u->backends, u->n_backends);
	for (size_t i = 0; i < u->n_named; i++) {
		free(u->named[i].host);
		free(u->named[i].sel);
	}
	free(u->named);
	free(u->body);
	free(u);
}

/* A QUERY_GET answer is kept whole for its owner (at most GET_BODY_MAX bytes). */
static size_t get_append(struct query *q, const char *ptr, size_t n)
{
	char *nb;

	if (q->got + n > GET_BODY_MAX || !(nb = realloc(q->body, q->got + n + 1)))
		return 0; /* aborts the transfer */
	memcpy(nb + q->got, ptr, n);
	q->body = nb;
	q->got += n;
	nb[q->got] = '\0';
	return n;
}

/* A health answer goes to the streaming parser as it arrives (never held whole); a QUERY_GET
 * answer is kept whole; any other body keeps only its start, for the log. */
static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct query *q = arg;
	size_t n = size * nmemb, keep;

	if (q->body_len + n > CONSUL_MAX_BODY)
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	q->body_len += n;
	if (q->kind == QUERY_WATCH && q->status == 200) {
		if (!q->stream && !(q->stream = consul_stream_new(q->sel_now)))
			return 0;
		consul_stream_feed(q->stream, ptr, n); /* an error is reported at the end */
		return n;
	}
	if ((q->kind == QUERY_GET || q->kind == QUERY_VERIFY) && q->status == 200)
		return get_append(q, ptr, n);
	keep = sizeof(q->err_body) - 1 - q->err_len;
	keep = n < keep ? n : keep;
	memcpy(q->err_body + q->err_len, ptr, keep);
	q->err_len += keep;
	q->err_body[q->err_len] = '\0';
	return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct query *q = arg;
	size_t n = size * nmemb;

	if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) { /* a new response (after 1xx, redirect) */
		const char *sp = memchr(ptr, ' ', n);

		q->has_index = false;
		q->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		consul_stream_free(q->stream);
		q->stream = NULL;
		q->err_len = 0;
		q->got = 0;
	} else if (consul_header_index(ptr, n, q->index_hdr, sizeof(q->index_hdr)))
		q->has_index = true;
	return n;
}

static int query_url(struct query *q)
{
	struct consul_watch *w = q->w;

	switch (q->kind) {
	case QUERY_REGISTER:
		return consul_agent_url(q->url, sizeof(q->url), w->address,
					"/v1/agent/service/register", NULL);
	case QUERY_DEREGISTER:
		return consul_agent_url(q->url, sizeof(q->url), w->address,
					"/v1/agent/service/deregister/", q->service);
	case QUERY_GET:
		return consul_get_url(q->url, sizeof(q->url), w->address, q->service, q->index,
				      w->o.wait_ns);
	case QUERY_TTL: {
		char id[CONSUL_ID_MAX + 16];

		consul_check_id(q->service, id, sizeof(id));
		return consul_agent_url(
		    q->url, sizeof(q->url), w->address,
		    q->sending ? "/v1/agent/check/pass/" : "/v1/agent/check/fail/", id);
	}
	case QUERY_VERIFY:
		return consul_agent_url(q->url, sizeof(q->url), w->address, "/v1/agent/services",
					NULL);
	default:
		return consul_health_url(q->url, sizeof(q->url), w->address, q->service,
					 q->dc ? q->dc : w->datacenter, q->index, w->o.wait_ns);
	}
}

static bool reads(const struct query *q)
{
	return q->kind == QUERY_WATCH || q->kind == QUERY_GET;
}

static int query_start(struct query *q)
{
	struct consul_watch *w = q->w;
	uint64_t wait_ns = w->o.wait_ns ? w->o.wait_ns : 300000000000ull;
	uint64_t timeout_ns = w->o.connect_timeout_ns + 10000000000ull;
	CURL *e;

	if (q->kind == QUERY_TTL) /* one read: the URL and the state recorded agree */
		q->sending = atomic_load(&q->passing) == 1;
	q->sel_now = atomic_load(&q->selectors);
	if (query_url(q) < 0)
		return -ENAMETOOLONG;
	if (reads(q) && q->index) /* Consul adds up to wait/16 of jitter */
		timeout_ns += wait_ns + wait_ns / 16;
	e = curl_easy_init();
	if (!e)
		return -ENOMEM;
	curl_easy_setopt(e, CURLOPT_URL, q->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, w->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, q);
	curl_easy_setopt(e, CURLOPT_PRIVATE, q);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(w->o.connect_timeout_ns / NS_PER_MS));
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ns / NS_PER_MS));
	if (w->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, w->ca_file);
	if (!reads(q) && q->kind != QUERY_VERIFY) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->put_body ? q->put_body : "");
	}
	q->body_len = q->err_len = 0;
	q->status = 0;
	q->has_index = false;
	if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		return -ENOMEM;
	}
	q->easy = e;
	return 0;
}

/* First line of an error body, printable, at most 200 bytes (Consul errors are plain text). */
static const char *error_line(const struct query *q, char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < q->err_len && i + 1 < len && i < 200; i++) {
		char c = q->err_body[i];

		if (c == '\n' || c == '\r')
			break;
		buf[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
	}
	buf[i] = '\0';
	return buf;
}

/* Turns a finished transfer into an update: 0, or -EIO / -EPROTO / -EINVAL (logged). */
static int query_result(struct query *q, CURLcode res, long status, struct consul_update *u)
{
	struct consul_health h;
	char why[256];
	int err;

	if (res != CURLE_OK) {
		snprintf(why, sizeof(why), "%s", curl_easy_strerror(res));
		err = -EIO;
	} else if (q->kind == QUERY_GET && status == 404 && q->has_index) {
		return 0; /* a KV key that does not exist: an answer, its index followed */
	} else if (status != 200) {
		error_line(q, why, sizeof(why));
		err = -EPROTO;
	} else if (q->kind == QUERY_GET) {
		u->body = q->body ? q->body : strdup("");
		u->body_len = q->got;
		q->body = NULL;
		q->got = 0;
		return u->body ? 0 : -ENOMEM;
	} else if (!q->stream) {
		snprintf(why, sizeof(why), "empty body");
		err = -EINVAL;
	} else {
		err = consul_stream_finish(q->stream, &h, why, sizeof(why));
	}
	consul_stream_free(q->stream);
	q->stream = NULL;
	if (err) {
		if (q->failures == 0)
			LOG_WARN("consul", "query failed, keeping last known backends",
				 "service=%s dc=%s status=%ld error=%s", log_q(q->service),
				 log_q(q->dc ? q->dc : ""), status, log_q(why));
		else
			LOG_DEBUG("consul", "query failed again", "service=%s status=%ld error=%s",
				  log_q(q->service), status, log_q(why));
		return err;
	}
	if (q->failures)
		LOG_INFO("consul", "query succeeded again", "service=%s failures=%u",
			 log_q(q->service), q->failures);
	u->backends = h.backends;
	u->n_backends = h.n;
	u->selectors = q->sel_now;
	u->named = h.named;
	u->n_named = h.n_named;
	u->skipped = h.skipped;
	memcpy(u->skip_reason, h.skip_reason, sizeof(u->skip_reason));
	memcpy(u->bad_mesh_port, h.bad_mesh_port, sizeof(u->bad_mesh_port));
	u->n_bad_mesh_port = h.n_bad_mesh_port;
	return 0;
}

static void reg_update(struct query *q, bool ok, long status, const char *why)
{
	struct consul_watch *w = q->w;

	pthread_mutex_lock(&w->lock);
	q->st.registered = ok;
	if (ok) {
		q->st.registrations++;
		q->st.failures = 0;
		q->st.error[0] = '\0';
	} else {
		q->st.failures++;
		q->st.status = status;
		snprintf(q->st.error, sizeof(q->st.error), "%.159s", why);
	}
	pthread_mutex_unlock(&w->lock);
}

/* The agent no longer holds registration `q` (restarted, or anti-entropy dropped it): write it
 * again now. */
static void reg_lost(struct query *q, const char *how)
{
	struct consul_watch *w = q->w;

	if (!q->done)
		return;
	LOG_WARN("consul", "agent lost a registration, registering it again", "id=%s seen=%s",
		 log_q(q->service), how);
	q->done = false;
	q->failures = 0;
	q->next_ns = now_ns();
	atomic_fetch_add(&w->writes_left, 1);
	pthread_mutex_lock(&w->lock);
	q->st.registered = false;
	q->st.lost++;
	q->st.ttl = -1;
	pthread_mutex_unlock(&w->lock);
}

static void retry_later(struct query *q)
{
	struct consul_watch *w = q->w;

	q->failures++;
	q->next_ns = now_ns() + consul_backoff_ns(q->failures, w->o.backoff_base_ns,
						  w->o.backoff_max_ns, next_rand(w));
}

/* A finished TTL report: 200 -> next one in a third of the TTL; 404 -> the agent lost the
 * check (and so the registration); else retried with backoff. */
static void ttl_finish(struct query *q, CURLcode res, long status)
{
	char why[256];

	if (res == CURLE_OK && status == 200) {
		pthread_mutex_lock(&q->w->lock);
		q->reg->st.ttl = q->sending;
		pthread_mutex_unlock(&q->w->lock);
		q->failures = 0;
		q->next_ns = now_ns() + q->period_ns;
		return;
	}
	if (res == CURLE_OK && status == 404) {
		reg_lost(q->reg, "ttl check unknown");
		return;
	}
	if (q->failures == 0)
		LOG_WARN("consul", "ttl check update failed, will retry",
			 "id=%s status=%ld error=%s", log_q(q->service), status,
			 log_q(res != CURLE_OK ? curl_easy_strerror(res)
					       : error_line(q, why, sizeof(why))));
	retry_later(q);
}

/* Every registration the agent's service list lacks is written again. */
static void verify_finish(struct query *q, CURLcode res, long status)
{
	struct consul_watch *w = q->w;
	cJSON *list = NULL;

	q->next_ns = now_ns() + q->period_ns;
	if (res == CURLE_OK && status == 200 && q->body)
		list = cJSON_ParseWithLength(q->body, q->got);
	if (!cJSON_IsObject(list)) {
		LOG_DEBUG("consul", "agent service list unavailable", "status=%ld", status);
		cJSON_Delete(list);
		return;
	}
	for (size_t i = 0; i < w->n_regs; i++)
		if (w->regs[i]->done &&
		    !cJSON_GetObjectItemCaseSensitive(list, w->regs[i]->service))
			reg_lost(w->regs[i], "agent service list");
	cJSON_Delete(list);
}

/* A finished agent write: done on 200 (or 404 for a deregistration: already gone), else retried
 * with backoff, on its own: other registrations go on. */
static void write_finish(struct query *q, CURLcode res, long status)
{
	struct consul_watch *w = q->w;
	const char *what = q->kind == QUERY_REGISTER ? "register" : "deregister";
	char why[256];

	if (res == CURLE_OK && (status == 200 || (q->kind == QUERY_DEREGISTER && status == 404))) {
		q->done = true;
		q->failures = 0;
		atomic_fetch_sub(&w->writes_left, 1);
		LOG_INFO("consul", "agent write done", "op=%s id=%s", what, log_q(q->service));
		if (q->kind == QUERY_REGISTER)
			reg_update(q, true, status, "");
		if (q->ttl) /* report the check's state right away */
			q->ttl->next_ns = now_ns();
		return;
	}
	if (res != CURLE_OK)
		snprintf(why, sizeof(why), "%s", curl_easy_strerror(res));
	else
		error_line(q, why, sizeof(why));
	if (q->failures == 0)
		LOG_WARN("consul", "agent write failed, will retry",
			 "op=%s id=%s status=%ld error=%s", what, log_q(q->service), status,
			 log_q(why));
	if (q->kind == QUERY_REGISTER)
		reg_update(q, false, res == CURLE_OK ? status : 0, why);
	retry_later(q);
}

static void query_finish(struct query *q, CURLcode res)
{
	struct consul_watch *w = q->w;
	struct consul_update *u = calloc(1, sizeof(*u));
	uint64_t now = now_ns();
	long status = 0;

	curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_multi_remove_handle(w->multi, q->easy);
	curl_easy_cleanup(q->easy);
	q->easy = NULL;
	if (!reads(q)) {
		free(u);
		if (q->kind == QUERY_TTL)
			ttl_finish(q, res, status);
		else if (q->kind == QUERY_VERIFY)
			verify_finish(q, res, status);
		else
			write_finish(q, res, status);
		return;
	}
	if (!u || !(u->service = strdup(q->service)) || (q->dc && !(u->dc = strdup(q->dc)))) {
		consul_update_free(u);
		q->next_ns = now + w->o.backoff_base_ns;
		return;
	}
	u->status = status;
	u->err = query_result(q, res, status, u);
	if (u->err) {
		/* After an error Consul may have restarted with a lower index: start fresh. */
		q->failures++;
		q->index = 0;
		q->next_ns = now + consul_backoff_ns(q->failures, w->o.backoff_base_ns,
						     w->o.backoff_max_ns, next_rand(w));
	} else {
		q->failures = 0;
		q->index = consul_next_index(q->index, q->has_index ? q->index_hdr : NULL);
		/* An answer with no IP-addressed instance (all unusable, or names still to resolve)
		 * does not spend the rate limit: the query blocks until the next change anyway, and
		 * the fix must arrive at once, not up to 15 s later. */
		q->next_ns = now;
		if (q->kind == QUERY_GET && w->o.get_rate_period_ns)
			q->next_ns += consul_bucket_take(&q->bucket, now, w->o.get_rate_burst,
							 w->o.get_rate_period_ns);
		else if (u->n_backends || (!u->skipped && !u->n_named))
			q->next_ns += consul_bucket_take(&q->bucket, now, w->o.rate_burst,
							 w->o.rate_period_ns);
	}
	u->index = q->index;
	w->cb(u, w->arg);
}

/* A read asked for again now: any blocking query in flight is dropped (its answer would lack
 * what was asked for) and a non-blocking one is due at once. */
static void refresh_now(struct query *q, uint64_t now)
{
	if (q->easy) {
		curl_multi_remove_handle(q->w->multi, q->easy);
		curl_easy_cleanup(q->easy);
		q->easy = NULL;
		consul_stream_free(q->stream);
		q->stream = NULL;
	}
	q->index = 0;
	q->next_ns = now;
}

/* Starts the queries that are due; returns how long the loop may sleep (ms). */
static long start_due(struct consul_watch *w)
{
	uint64_t now = now_ns(), wait_ms = POLL_MAX_MS, d;
	size_t i;

	for (i = 0; i < w->n; i++) {
		struct query *q = &w->q[i];

		if (q->kind == QUERY_WATCH && atomic_exchange(&q->refresh, false))
			refresh_now(q, now);
		if (q->easy || q->done)
			continue;
		if (q->kind == QUERY_TTL) {
			if (!q->reg->done || atomic_load(&q->passing) < 0)
				continue;
			if (atomic_exchange(&q->dirty, false))
				q->next_ns = now;
		}
		if (now >= q->next_ns && query_start(q) != 0) {
			q->failures++;
			q->next_ns = now + w->o.backoff_max_ns;
		}
		if (!q->easy) {
			d = (q->next_ns > now ? q->next_ns - now : 0) / NS_PER_MS + 1;
			wait_ms = d < wait_ms ? d : wait_ms;
		}
	}
	return (long)wait_ms;
}

static void drain_done(struct consul_watch *w)
{
	struct query *q;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(w->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		q = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&q);
		if (q)
			query_finish(q, msg->data.result);
	}
}

static void *watch_main(void *arg)
{
	struct consul_watch *w = arg;
	int running;
	long wait_ms;
	size_t i;

	while (!atomic_load(&w->stop)) {
		curl_multi_perform(w->multi, &running);
		drain_done(w);
		/* After drain, so a query due right after its answer starts now; libcurl's own
		 * timer for a just-added handle makes the poll return at once to drive it. */
		wait_ms = start_due(w);
		if (atomic_load(&w->stop))
			break;
		curl_multi_poll(w->multi, NULL, 0, (int)wait_ms, NULL);
	}
	for (i = 0; i < w->n; i++) {
		if (!w->q[i].easy)
			continue;
		curl_multi_remove_handle(w->multi, w->q[i].easy);
		curl_easy_cleanup(w->q[i].easy);
		w->q[i].easy = NULL;
	}
	return NULL;
}

static void set_defaults(struct consul_watch_opts *o)
{
	if (!o->rate_burst)
		o->rate_burst = 2;
	if (!o->rate_period_ns)
		o->rate_period_ns =
		    15000000000ull; /* Consul: under churn, poll "say every 15 seconds" */
	if (!o->backoff_base_ns)
		o->backoff_base_ns = 500 * NS_PER_MS;
	if (!o->backoff_max_ns)
		o->backoff_max_ns = 10000000000ull;
	if (!o->connect_timeout_ns)
		o->connect_timeout_ns = 3000000000ull;
	if (!o->get_rate_burst)
		o->get_rate_burst = o->rate_burst;
	if (o->wait_ns > CONSUL_MAX_WAIT_NS)
		o->wait_ns = CONSUL_MAX_WAIT_NS;
}

static char *dup_opt(const char *s, bool *oom)
{
	char *d;

	if (!s || !s[0])
		return NULL;
	d = strdup(s);
	*oom |= !d;
	return d;
}

static struct query *add_job(struct consul_watch *w, enum query_kind kind, const char *name,
			     char *body)
{
	struct query *q = &w->q[w->n];

	q->w = w;
	q->kind = kind;
	q->put_body = body;
	q->service = strdup(name);
	atomic_init(&q->passing, -1);
	w->n++; /* counted now so that watch_release frees `body` even on failure */
	return q->service ? q : NULL;
}

/* A registration, and its TTL job when its check is a TTL check. */
static int add_registration(struct consul_watch *w, const struct consul_registration *r)
{
	char *body = consul_registration_json(r);
	struct query *q;

	if (!body)
		return -errno;
	q = add_job(w, QUERY_REGISTER, r->id, body);
	if (!q)
		return -ENOMEM;
	snprintf(q->st.id, sizeof(q->st.id), "%s", r->id);
	snprintf(q->st.service, sizeof(q->st.service), "%s", r->name);
	q->st.ttl = -1;
	w->regs[w->n_regs++] = q;
	if (r->check != CONFIG_CONSUL_CHECK_TTL)
		return 0;
	q->ttl = add_job(w, QUERY_TTL, r->id, NULL);
	if (!q->ttl)
		return -ENOMEM;
	q->ttl->reg = q;
	q->ttl->period_ns = r->interval_ns / 3 ? r->interval_ns / 3 : 1000 * NS_PER_MS;
	return 0;
}

/* One watch per service, then the agent writes: registrations (with their TTL jobs and one
 * verifier of them all), deregistrations. */
static int add_jobs(struct consul_watch *w, const struct consul_watch_opts *o)
{
	size_t i, n = o->n_services + 2 * o->n_regs + 1 + o->n_deregs + o->n_gets;
	struct query *v;
	int err = 0;

	w->q = calloc(n, sizeof(*w->q));
	w->regs = calloc(o->n_regs + 1, sizeof(*w->regs));
	if (!w->q || !w->regs)
		return -ENOMEM;
	for (i = 0; !err && i < o->n_services; i++) {
		const char *dc = o->service_dcs ? o->service_dcs[i] : NULL;
		struct query *q = add_job(w, QUERY_WATCH, o->services[i], NULL);

		err = q && (!dc || (q->dc = strdup(dc))) ? 0 : -ENOMEM;
		if (q)
			atomic_init(&q->selectors, o->selectors && o->selectors[i]);
	}
	for (i = 0; !err && i < o->n_regs; i++)
		err = add_registration(w, &o->regs[i]);
	if (!err && o->n_regs) {
		v = add_job(w, QUERY_VERIFY, "agent services", NULL);
		err = v ? 0 : -ENOMEM;
		if (v) {
			v->period_ns = o->resync_ns ? o->resync_ns : 30000000000ull;
			v->next_ns = now_ns() + v->period_ns;
		}
	}
	for (i = 0; !err && i < o->n_deregs; i++)
		err = add_job(w, QUERY_DEREGISTER, o->deregs[i], NULL) ? 0 : -ENOMEM;
	atomic_store(&w->writes_left, o->n_regs + o->n_deregs);
	for (i = 0; !err && i < o->n_gets; i++)
		err = add_job(w, QUERY_GET, o->gets[i], NULL) ? 0 : -ENOMEM;
	return err;
}

/* Copies options, builds the header list and the per-service queries. */
static int watch_setup(struct consul_watch *w, const struct consul_watch_opts *o)
{
	struct curl_slist *h;
	bool oom = false;

	w->o = *o;
	set_defaults(&w->o);
	w->address = dup_opt(o->address, &oom);
	w->datacenter = dup_opt(o->datacenter, &oom);
	w->ca_file = dup_opt(o->ca_file, &oom);
	if (oom || !w->address)
		return oom ? -ENOMEM : -EINVAL;
	w->headers = curl_slist_append(NULL, "Accept: application/json");
	if (w->headers && o->token && o->token[0]) {
		size_t len = strlen(o->token) + sizeof("X-Consul-Token: ");
		char *line = malloc(len);

		if (!line)
			return -ENOMEM;
		snprintf(line, len, "X-Consul-Token: %s", o->token);
		h = curl_slist_append(w->headers, line);
		explicit_bzero(line, len);
		free(line);
		if (!h)
			return -ENOMEM;
	}
	if (!w->headers)
		return -ENOMEM;
	return add_jobs(w, o);
}

static void watch_release(struct consul_watch *w)
{
	size_t i;

	for (i = 0; i < w->n; i++) {
		free(w->q[i].service);
		free(w->q[i].dc);
		consul_stream_free(w->q[i].stream);
		free(w->q[i].body);
		free(w->q[i].put_body);
	}
	free(w->q);
	free(w->regs);
	pthread_mutex_destroy(&w->lock);
	if (w->multi)
		curl_multi_cleanup(w->multi);
	curl_slist_free_all(w->headers); /* the token's bytes go back to the allocator here */
	free(w->address);
	free(w->datacenter);
	free(w->ca_file);
	free(w);
}

struct consul_watch *consul_watch_new(const struct consul_watch_opts *o, consul_update_cb cb,
				      void *arg)
{
	struct consul_watch *w;
	int err;

	pthread_once(&curl_once, curl_init_once);
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->cb = cb;
	w->arg = arg;
	w->rnd = now_ns() | 1;
	pthread_mutex_init(&w->lock, NULL);
	err = watch_setup(w, o);
	if (!err) {
		w->multi = curl_multi_init();
		err = w->multi ? 0 : -ENOMEM;
	}
	if (!err)
		err = -pthread_create(&w->thread, NULL, watch_main, w);
	if (err) {
		watch_release(w);
		errno = -err;
		return NULL;
	}
	return w;
}

bool consul_watch_writes_done(struct consul_watch *w)
{
	return atomic_load(&w->writes_left) == 0;
}

int consul_watch_reg_state(struct consul_watch *w, size_t i, struct discovery_registration *out)
{
	if (!w || i >= w->n_regs)
		return -ENOENT;
	pthread_mutex_lock(&w->lock);
	*out = w->regs[i]->st;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void consul_watch_selectors(struct consul_watch *w, const char *service, bool on)
{
	bool wake = false;

	for (size_t i = 0; w && i < w->n; i++) {
		struct query *q = &w->q[i];

		if (q->kind != QUERY_WATCH || q->dc || strcmp(q->service, service))
			continue;
		if (atomic_exchange(&q->selectors, on) != on && on) {
			atomic_store(&q->refresh, true);
			wake = true;
		}
	}
	if (wake)
		curl_multi_wakeup(w->multi);
}

void consul_watch_set_passing(struct consul_watch *w, size_t i, bool passing)
{
	struct query *t;

	if (!w || i >= w->n_regs || !(t = w->regs[i]->ttl))
		return;
	if (atomic_exchange(&t->passing, passing ? 1 : 0) == (passing ? 1 : 0))
		return;
	atomic_store(&t->dirty, true);
	curl_multi_wakeup(w->multi);
}

void consul_watch_free(struct consul_watch *w)
{
	if (!w)
		return;
	atomic_store(&w->stop, true);
	curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	watch_release(w);
}
