/* dispatch: one chat-completion call to one node, streamed or not.
 *
 * Sends the client's request to the node (model renamed to the node's, usage
 * asked for when streaming), and turns what comes back into events: parsed
 * chunks as they arrive, the final response, or an error already mapped to
 * what the client should see (status, OpenAI error type and code, a message
 * naming the node and what went wrong). Knows nothing of the client side. */
#ifndef MSOA_DISPATCH_H
#define MSOA_DISPATCH_H

#include <cjson/cJSON.h>

#include "mesh/node.h"
#include "net/http_client.h"

typedef struct dispatch dispatch;

typedef struct dispatch_error {
    int status;           /* HTTP status for the client: 4xx passed on, 502, 504, 429 */
    const char *type;     /* OpenAI error type, e.g. "upstream_error" */
    const char *code;     /* e.g. "upstream_unreachable", "upstream_timeout" */
    char message[512];
    int retry_after_s;    /* from the node's 429/503, or 0 */
    int mid_stream;       /* some chunks were already delivered */
} dispatch_error;

typedef struct dispatch_events {
    /* Streaming only: one upstream chunk (ownership passes to the callee). */
    void (*on_chunk)(void *ud, cJSON *chunk);
    /* The call ended well. Non-streaming: the response object (ownership
     * passes); streaming: NULL. */
    void (*on_done)(void *ud, cJSON *response);
    void (*on_error)(void *ud, const dispatch_error *err);
} dispatch_events;

typedef struct dispatch_timeouts {
    unsigned connect_ms, total_ms, stall_ms;
} dispatch_timeouts;

/* Starts the call; exactly one of on_done / on_error follows unless the call
 * is cancelled first, and the dispatch is gone once it has run. `request` is
 * not kept. NULL when the call could not be started. */
dispatch *dispatch_start(http_client *cl, node *n, const cJSON *request, int stream,
                         const dispatch_timeouts *t, const dispatch_events *ev, void *ud);
void dispatch_pause(dispatch *d, int paused);
void dispatch_cancel(dispatch *d);

#endif
