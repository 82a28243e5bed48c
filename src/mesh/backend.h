/* backend: how a node that is not reached over HTTP answers a call.
 *
 * Most nodes are OpenAI-compatible HTTP servers, which dispatch.c calls
 * itself. A node may instead carry a backend (the built-in GGUF engine, in
 * src/node/): dispatch then hands the call to it. The backend speaks the same
 * events as an HTTP node — chat.completion.chunk objects, a final
 * chat.completion, or a mapped error — so nothing above dispatch can tell
 * the difference. Callbacks run on the loop the call was started on. */
#ifndef MSOA_BACKEND_H
#define MSOA_BACKEND_H

#include <cjson/cJSON.h>
#include <uv.h>

#include "mesh/dispatch_events.h"

typedef struct node_backend {
    /* Starts a completion; exactly one of ev->on_done / ev->on_error follows
     * (from a later loop turn, never inside start) unless cancelled first.
     * Returns the call, or NULL if it could not be started at all. */
    void *(*start)(void *state, uv_loop_t *loop, const cJSON *request, int stream,
                   const dispatch_events *ev, void *ud);
    void (*pause)(void *call, int paused);
    /* No callback runs after cancel; the call is freed. */
    void (*cancel)(void *call);
} node_backend;

#endif
