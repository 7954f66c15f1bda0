/* The span exporter: a bounded queue filled by the event-loop thread (tracer_submit never blocks
 * on the network: a mutex held for one copy) and drained by the tracer's own thread, which
 * batches spans, encodes them (otlp.h) and POSTs them to an OTLP/HTTP endpoint with libcurl.
 * A full queue drops the new span (counted); a failed export is retried with exponential backoff
 * and jitter, then dropped (counted); while retrying, the batch keeps its queue slots, so a
 * collector that is down fills the queue and further spans are dropped, never buffered without
 * bound. Stopping aborts a transfer in flight (libcurl asks about once a second). */
#ifndef MESH_TRACER_H
#define MESH_TRACER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "telemetry/otlp.h"

/* Counters that outlive one tracer (a reload replaces the tracer, the series go on). Written with
 * atomics by the tracer thread and the submitter, read by the metrics scrape. */
struct tracer_counters {
	uint64_t exported;		    /* spans the collector accepted */
	uint64_t dropped_full;		    /* spans dropped: queue full */
	uint64_t dropped_error;		    /* spans dropped: export failed after its retries */
	uint64_t exports_ok, exports_error; /* POSTs by outcome (a retried batch counts each) */
};

struct tracer_opts {
	const char *endpoint;	       /* OTLP/HTTP URL (copied) */
	bool json;		       /* OTLP/JSON instead of protobuf */
	struct otlp_resource resource; /* strings copied */
	struct tracer_counters *counters;
	size_t queue_max;	  /* spans; default 2048 */
	size_t batch_max;	  /* spans per export; default 512 */
	uint64_t flush_ns;	  /* oldest span waits at most this long; default 1 s */
	uint64_t timeout_ns;	  /* one POST; default 5 s */
	uint64_t backoff_base_ns; /* first retry delay; default 500 ms, doubling */
	uint64_t backoff_max_ns;  /* default 5 s (as OTel SDK exporters) */
	unsigned attempts;	  /* per batch; default 3 */
};

struct tracer;

/* Starts the exporter thread. Returns NULL with errno set on failure. */
struct tracer *tracer_new(const struct tracer_opts *o);
/* Stops the thread (aborting an export in flight) and frees the queue; spans still queued are
 * dropped uncounted (a reload or shutdown, not a failure). Accepts NULL. */
void tracer_free(struct tracer *t);
/* Queues a copy of `s`. Returns true, or false when the queue is full (counted as dropped). */
bool tracer_submit(struct tracer *t, const struct span *s);

#endif
