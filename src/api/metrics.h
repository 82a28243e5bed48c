/* metrics: the gateway's Prometheus registry, served on GET /metrics in the
 * text exposition format 0.0.4.
 *
 * Every worker thread records into one process-wide registry. Recording is
 * lock-free once a label combination exists (atomics only); the first use of
 * a new combination takes a mutex to add it. Each labelled family holds at
 * most METRICS_MAX_SERIES combinations; past that, new ones are counted under
 * label values "_other" (labels come from config and code, so that means a
 * bug, and it is logged once).
 *
 * Series (all prefixed msoa_):
 *   requests_total{route,status,node}           counter
 *   request_duration_seconds{route}             histogram
 *   time_to_first_chunk_seconds                 histogram
 *   upstream_duration_seconds{node}             histogram
 *   upstream_errors_total{node,kind}            counter
 *   tokens_total{node,direction="in"|"out"}     counter
 *   cost_usd_total{node}, baseline_cost_usd_total, saved_usd_total  counters
 *   open_connections, open_streams              gauges, given at scrape time
 * Histogram buckets run from 0.0005 s to 60 s; a negative duration counts as
 * 0, a NaN one is dropped. A NULL node or kind is recorded as the empty label
 * value (no node was involved). */
#ifndef MSOA_METRICS_H
#define MSOA_METRICS_H

#include <stdint.h>

#include "base/buf.h"

#define METRICS_MAX_SERIES 1024

/* Empties the registry. Call before any thread records (startup, tests). */
void metrics_init(void);

void metrics_request(const char *route, int status, const char *node, double seconds);
void metrics_first_chunk(double seconds);
void metrics_upstream(const char *node, double seconds);
void metrics_upstream_error(const char *node, const char *kind);
void metrics_tokens(const char *node, uint64_t in, uint64_t out);
/* USD spent at the node, what the baseline model would have cost, and what
 * was saved. Counters never go down, so a negative or non-finite amount is
 * not added (a node dearer than the baseline adds nothing to saved; the net
 * is baseline_cost_usd_total - cost_usd_total). */
void metrics_cost(const char *node, double cost, double baseline, double saved);

/* Appends the whole exposition; the gauges are sampled by the caller. */
void metrics_render(buf *out, long open_connections, long open_streams);

#endif
