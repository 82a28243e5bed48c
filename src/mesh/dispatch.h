/* dispatch: one chat-completion call to one node, streamed or not.
 *
 * HTTP nodes are called here; a node with a backend (backend.h) is handed
 * the call, with the same events and the same contract.
 * Sends the client's request to the node (model renamed to the node's, usage
 * asked for when streaming), and turns what comes back into events: parsed
 * chunks as they arrive, the final response (checked: a JSON object with a
 * "choices" array), or an error already mapped to
 * what the client should see (status, OpenAI error type and code, a message
 * naming the node and what went wrong). Knows nothing of the client side. */
#ifndef MSOA_DISPATCH_H
#define MSOA_DISPATCH_H

#include <cjson/cJSON.h>

#include "base/json_tape.h"
#include "mesh/dispatch_events.h"
#include "mesh/node.h"
#include "net/http_client.h"

typedef struct dispatch dispatch;

/* What a dispatch reports to its caller: the events of dispatch_events.h,
 * except that a non-streamed answer comes as its JSON text read into a
 * tape, which the caller can relay without building a tree. The doc is
 * the caller's only during the call; it is NULL when streaming. */
typedef struct dispatch_callbacks {
    void (*on_chunk)(void *ud, cJSON *chunk);
    void (*on_done)(void *ud, const json_doc *answer);
    void (*on_error)(void *ud, const dispatch_error *err);
} dispatch_callbacks;

typedef struct dispatch_timeouts {
    unsigned connect_ms, total_ms, stall_ms;
} dispatch_timeouts;

/* Starts the call; exactly one of on_done / on_error follows unless the call
 * is cancelled first, and the dispatch is gone once it has run. `request` is
 * the request read into a tape (not kept). NULL when the call could not be
 * started. */
dispatch *dispatch_start(http_client *cl, uv_loop_t *loop, node *n, const json_doc *request, int stream,
                         const dispatch_timeouts *t, const dispatch_callbacks *cb, void *ud);
void dispatch_pause(dispatch *d, int paused);
void dispatch_cancel(dispatch *d);

#endif
