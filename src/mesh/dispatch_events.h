/* dispatch_events: what a node call reports back, whoever serves it (an
 * HTTP node through dispatch.c, or a backend such as the built-in engine). */
#ifndef MSOA_DISPATCH_EVENTS_H
#define MSOA_DISPATCH_EVENTS_H

#include <cjson/cJSON.h>

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

#endif
