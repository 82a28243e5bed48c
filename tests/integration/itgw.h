/* itgw: the fixture most integration tests share: a mock upstream and an
 * msoa gateway in front of it, both real processes on free loopback ports. */
#ifndef MSOA_ITGW_H
#define MSOA_ITGW_H

#include <cjson/cJSON.h>

#include "itlib.h"

typedef struct itgw {
    it_proc mock;
    it_proc msoa;
} itgw;

/* Starts mock_upstream (serving model "mock-small") and msoa with one node
 * "m1" in front of it plus the given extra msoa arguments (NULL-terminated).
 * Waits until /ready says 200. Returns 0 or -1. */
int itgw_start(itgw *g, const char *const *extra_args);
void itgw_stop(itgw *g);

/* Waits up to 5 s until msoa on port says `reachable` nodes are reachable
 * (its probes have run). Returns 0 or -1. */
int it_wait_reachable(int port, int reachable);
/* POSTs a JSON body to msoa; returns 0 or -1. */
int itgw_post(itgw *g, const char *path, const char *json, it_response *r);
/* The JSON body of a response (caller deletes), NULL if not JSON. */
cJSON *it_json(const it_response *r);
/* Splits an SSE body into its data payloads: returns a cJSON array of
 * strings (caller deletes). */
cJSON *it_sse_events(const char *body);

#endif
