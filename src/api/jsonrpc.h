/* jsonrpc: JSON-RPC 2.0 (jsonrpc.org/specification), transport-free.
 *
 * A transport (HTTP POST /rpc, a WebSocket, stdio) hands each received text to
 * jsonrpc_handle(); the layer validates it, runs the named methods and calls
 * the transport's `send` with what must go back on the wire:
 *  - a single request: its response object, once the method has answered;
 *  - a batch: one array with the responses of the non-notification members,
 *    sent once all of them have answered (in request order);
 *  - a notification, or a batch of notifications only: nothing at all;
 *  - invalid JSON: -32700 with id null; empty batch: one -32600; a non-object
 *    batch member: -32600 for that member; unknown method: -32601.
 * Methods may answer later (asynchronously) from the same thread. A method
 * may also send notifications of its own (for example streamed chunks) with
 * jsonrpc_notify(); those go out at once, before the final response.
 *
 * If the transport goes away, it calls jsonrpc_session_close(): pending calls
 * get their on_cancel, later answers are dropped, memory is freed when the last
 * call has answered.
 *
 * Every call, notifications included, must answer exactly once (a
 * notification's answer is discarded): that is what frees it. A second answer
 * is ignored with a warning as long as the call's batch is still pending (a
 * call lives as long as its batch); after that the call is gone.
 *
 * Limits: texts nested deeper than JSONRPC_MAX_DEPTH get one -32600 (id null);
 * so do batches with more members than the session's max_batch. Number ids are
 * echoed byte for byte as received (1.50 stays 1.50, big integers keep all
 * their digits). */
#ifndef MSOA_JSONRPC_H
#define MSOA_JSONRPC_H

#include <cjson/cJSON.h>
#include <stddef.h>

enum {
    JSONRPC_PARSE_ERROR = -32700,
    JSONRPC_INVALID_REQUEST = -32600,
    JSONRPC_METHOD_NOT_FOUND = -32601,
    JSONRPC_INVALID_PARAMS = -32602,
    JSONRPC_INTERNAL_ERROR = -32603
};

#define JSONRPC_MAX_DEPTH 64
#define JSONRPC_DEFAULT_MAX_BATCH 1000

typedef struct jsonrpc_session jsonrpc_session;
typedef struct jsonrpc_call jsonrpc_call;

/* params is the request's "params" (object or array) or NULL when absent;
 * it stays valid until the call answers. */
typedef void (*jsonrpc_method_fn)(jsonrpc_call *call, const cJSON *params, void *ud);

typedef struct jsonrpc_method {
    const char *name;
    jsonrpc_method_fn fn;
} jsonrpc_method;

/* send: called with complete JSON texts to write to the peer. */
typedef void (*jsonrpc_send_fn)(const char *json, size_t len, void *transport_ud);

jsonrpc_session *jsonrpc_session_new(const jsonrpc_method *methods, size_t n_methods, void *method_ud,
                                     jsonrpc_send_fn send, void *transport_ud);
/* Largest batch accepted (default JSONRPC_DEFAULT_MAX_BATCH). */
void jsonrpc_session_set_max_batch(jsonrpc_session *s, size_t max_batch);
/* Handles one received text (a request, notification or batch). */
void jsonrpc_handle(jsonrpc_session *s, const char *text, size_t len);
/* Calls not yet answered. */
size_t jsonrpc_session_pending(const jsonrpc_session *s);
/* Pending calls that owe an answer (not notifications). */
size_t jsonrpc_session_awaiting(const jsonrpc_session *s);
/* The transport is gone: see above. The session must not be used after. */
void jsonrpc_session_close(jsonrpc_session *s);

/* --- inside a method --- */
int jsonrpc_call_is_notification(const jsonrpc_call *c);
const cJSON *jsonrpc_call_id(const jsonrpc_call *c);     /* NULL for notifications */
void *jsonrpc_call_transport(const jsonrpc_call *c);     /* the transport_ud */
/* Runs once if the session closes before the call answers (at once if it
 * already has). The call must still answer (the answer is dropped). */
void jsonrpc_call_on_cancel(jsonrpc_call *c, void (*on_cancel)(void *ud), void *ud);
int jsonrpc_call_cancelled(const jsonrpc_call *c);
/* Answer exactly once. Takes ownership of result / data (may be NULL). */
void jsonrpc_result(jsonrpc_call *c, cJSON *result);
void jsonrpc_error(jsonrpc_call *c, int code, const char *message, cJSON *data);
/* Sends {"jsonrpc":"2.0","method":method,"params":params} now; takes params. */
void jsonrpc_notify(jsonrpc_call *c, const char *method, cJSON *params);

#endif
