/* chat: one chat completion from request to ledger, whatever the transport.
 *
 * The OpenAI HTTP endpoint and the JSON-RPC method both hand a read request
 * body here with a sink that knows how to write to their client. chat
 * validates the request, picks the node, dispatches, rewrites what the node
 * sends into one coherent answer (one id, the requested model, usage), adds
 * the `msoa` report (route, tokens, cost, savings, latency) and accounts for
 * it in the metrics. */
#ifndef MSOA_CHAT_H
#define MSOA_CHAT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "api/gateway.h"
#include "base/buf.h"
#include "base/json_tape.h"

typedef struct chat chat;

typedef struct chat_summary {
    const char *id;
    const char *node;
    const char *model;
    const char *domain;
    long tokens_in, tokens_out;
    int usage_estimated;    /* the node reported no usage; counted by msoa */
    double cost_usd, baseline_cost_usd, saved_usd;
    double latency_ms;
    const struct node *const *nodes; /* every node tried, in order; the last answered */
    int n_nodes;
    const char *route_json;  /* the router's decision (JSON), for `auto`; else NULL */
    double guard_score;      /* -1 when not routed */
    const char *degraded;    /* why the answer is not from the specialist pool, or NULL */
    int flagged;             /* the guard flagged the request (guard_action flag) */
    int hedged;              /* a second node was asked because the first was slow */
    const char *cascade_json;/* the cascade's steps (JSON objects, comma-separated), or NULL */
} chat_summary;

typedef struct chat_options {
    unsigned timeout_ms;     /* the request's deadline (x-msoa-timeout-ms); 0: the configured one */
} chat_options;

typedef struct chat_sink {
    /* Streams: the node has started answering; headers may be sent now. */
    void (*on_stream_start)(void *ud, const chat_summary *s);
    /* Streams: one chat.completion.chunk as JSON text. */
    void (*on_chunk)(void *ud, const char *json, size_t len);
    /* Bytes written but not yet taken by the client (back-pressure). */
    size_t (*backlog)(void *ud);
    /* The answer is complete. json: the chat.completion object (for streams,
     * assembled from the chunks), with its `msoa` report. */
    void (*on_finish)(void *ud, const chat_summary *s, const char *json, size_t len);
    /* It failed. error_json is {"error":{"message","type","code"}}; status
     * the HTTP status; mid_stream: chunks were already sent. s->node is NULL
     * when no node was chosen. */
    void (*on_error)(void *ud, const chat_summary *s, int status, const char *error_json, size_t len,
                     int retry_after_s, int mid_stream);
} chat_sink;

/* Starts a completion for the request read into `request` (its text is
 * copied; an empty doc, one that did not parse, is refused). Exactly one of
 * on_finish / on_error follows, possibly before chat_start returns, unless
 * chat_cancel is called first; after it the chat is gone. Returns NULL when
 * it already ended (validation error, no node). */
chat *chat_start(worker *w, const json_doc *request, const chat_options *opts, const chat_sink *sink, void *ud);
/* chat_start for a request built as a tree (taken over). */
chat *chat_start_tree(worker *w, cJSON *body, const chat_options *opts, const chat_sink *sink, void *ud);
/* The client went away: stop the node's work, no sink callback runs. */
void chat_cancel(chat *c);
/* Frees the chats a worker keeps for reuse, once its loop has stopped. */
void chat_free_spares(worker *w);
/* The client's backlog has drained: read from the node again. */
void chat_resume(chat *c);

/* Writes {"error":{"message","type","code"}} (code may be NULL). */
void api_error_json(buf *out, const char *message, const char *type, const char *code);

#endif
