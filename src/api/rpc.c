/* rpc: see rpc.h. The JSON-RPC layer (jsonrpc.c) does the protocol; this
 * file holds the methods and binds sessions to HTTP exchanges and sockets. */
#include "api/rpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/chat.h"
#include "api/jsonrpc.h"
#include "api/metrics.h"
#include "api/openai.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"

/* Server errors in the range the spec reserves for implementations. */
#define RPC_UPSTREAM_ERROR (-32000)

typedef struct rpc_chat rpc_chat;

/* The transport behind a session: an HTTP exchange or a WebSocket. */
typedef struct rpc_transport {
    worker *w;
    http_exchange *x;  /* POST /rpc, until answered */
    ws_conn *ws;       /* GET /rpc */
    jsonrpc_session *session;
    int answered;      /* POST: the HTTP response has been written */
    int handling;      /* POST: inside rpc_http's jsonrpc_handle */
    rpc_chat *chats;   /* in flight, to resume when the socket drains */
} rpc_transport;

/* ---- chat.complete ---- */

struct rpc_chat {
    jsonrpc_call *call;
    rpc_transport *t;
    chat *chat;
    int stream;
    rpc_chat *prev, *next;
};

static void rpc_chat_link(rpc_chat *rc) {
    rc->next = rc->t->chats;
    if (rc->next) rc->next->prev = rc;
    rc->t->chats = rc;
}

static void rpc_chat_free(rpc_chat *rc) {
    if (rc->prev) rc->prev->next = rc->next;
    else if (rc->t->chats == rc) rc->t->chats = rc->next;
    if (rc->next) rc->next->prev = rc->prev;
    free(rc);
}

static void rpc_chat_on_chunk(void *ud, const char *json, size_t len) {
    rpc_chat *rc = ud;
    if (!rc->stream) return;
    cJSON *params = cJSON_CreateObject();
    cJSON_AddItemToObject(params, "id", cJSON_Duplicate(jsonrpc_call_id(rc->call), 1));
    cJSON_AddItemToObject(params, "chunk", cJSON_ParseWithLength(json, len));
    jsonrpc_notify(rc->call, "chat.chunk", params);
}

static size_t rpc_chat_backlog(void *ud) {
    rpc_chat *rc = ud;
    return rc->t->ws ? ws_backlog(rc->t->ws) : 0;
}

#define CHAT_ROUTE "rpc:chat.complete"

static void rpc_chat_on_finish(void *ud, const chat_summary *s, const char *json, size_t len) {
    rpc_chat *rc = ud;
    jsonrpc_call *call = rc->call;
    metrics_request(CHAT_ROUTE, 200, s->node, s->latency_ms / 1e3);
    /* freed first: the answer may end the transport (POST /rpc) */
    rpc_chat_free(rc);
    jsonrpc_result(call, cJSON_ParseWithLength(json, len));
}

static void rpc_chat_on_error(void *ud, const chat_summary *s, int status, const char *error_json, size_t len,
                              int retry_after_s, int mid_stream) {
    rpc_chat *rc = ud;
    metrics_request(CHAT_ROUTE, status, s->node, s->latency_ms / 1e3);
    cJSON *err = cJSON_ParseWithLength(error_json, len);
    cJSON *inner = cJSON_DetachItemFromObjectCaseSensitive(err, "error");
    cJSON_Delete(err);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(inner, "message");
    char message[600];
    snprintf(message, sizeof message, "%s", cJSON_IsString(msg) ? msg->valuestring : "chat failed");
    cJSON_AddNumberToObject(inner, "status", status);
    if (retry_after_s > 0) cJSON_AddNumberToObject(inner, "retry_after", retry_after_s);
    if (mid_stream) cJSON_AddTrueToObject(inner, "mid_stream");
    int code = status == 400 || status == 404 ? JSONRPC_INVALID_PARAMS : RPC_UPSTREAM_ERROR;
    jsonrpc_call *call = rc->call;
    rpc_chat_free(rc);
    jsonrpc_error(call, code, message, inner);
}

static const chat_sink rpc_sink = {NULL, rpc_chat_on_chunk, rpc_chat_backlog, rpc_chat_on_finish,
                                   rpc_chat_on_error};

static void rpc_chat_cancel(void *ud) {
    rpc_chat *rc = ud;
    jsonrpc_call *call = rc->call;
    chat_cancel(rc->chat);
    rpc_chat_free(rc);
    jsonrpc_error(call, JSONRPC_INTERNAL_ERROR, "cancelled: the client went away", NULL);
}

static void method_chat_complete(jsonrpc_call *call, const cJSON *params, void *ud) {
    (void)ud;
    rpc_transport *t = jsonrpc_call_transport(call);
    if (!cJSON_IsObject(params)) {
        jsonrpc_error(call, JSONRPC_INVALID_PARAMS,
                      "params must be an object: the OpenAI chat completion request", NULL);
        return;
    }
    cJSON *body = cJSON_Duplicate(params, 1);
    rpc_chat *rc = xcalloc(1, sizeof *rc);
    rc->call = call;
    rc->t = t;
    /* Chunks need somewhere to go: a WebSocket, and a request with an id. */
    rc->stream = t->ws && !jsonrpc_call_is_notification(call) &&
                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "stream"));
    if (!rc->stream) cJSON_DeleteItemFromObjectCaseSensitive(body, "stream");
    chat *c = chat_start_tree(t->w, body, NULL, &rpc_sink, rc);
    if (!c) return; /* answered already, rc freed */
    rc->chat = c;
    rpc_chat_link(rc);
    jsonrpc_call_on_cancel(call, rpc_chat_cancel, rc);
}

/* ---- the other methods ---- */

static void method_models_list(jsonrpc_call *call, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    rpc_transport *t = jsonrpc_call_transport(call);
    jsonrpc_result(call, openai_model_list(t->w->gw));
}

cJSON *rpc_mesh_nodes(const gateway *gw) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < gw->nodes.n; i++) {
        node *n = &gw->nodes.nodes[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", n->name);
        cJSON_AddStringToObject(o, "url", n->base_url);
        cJSON_AddStringToObject(o, "model", n->model);
        cJSON_AddStringToObject(o, "domain", n->domain);
        cJSON_AddNumberToObject(o, "price_in", n->price.in);
        cJSON_AddNumberToObject(o, "price_out", n->price.out);
        cJSON_AddBoolToObject(o, "reachable", atomic_load(&n->reachable) == 1);
        uint64_t now = clock_now_ms_u64();
        breaker_info bi;
        breaker_snapshot(&n->breaker, now, &bi);
        cJSON_AddStringToObject(o, "breaker", breaker_state_name(bi.state));
        cJSON_AddNumberToObject(o, "ttft_p95_ms", (double)latency_ttft_quantile(&n->latency, 0.95) / 1e3);
        cJSON_AddNumberToObject(o, "tokens_per_s", latency_speed(&n->latency));
        cJSON_AddNumberToObject(o, "inflight", (double)atomic_load(&n->inflight));
        cJSON_AddNumberToObject(o, "requests", (double)atomic_load(&n->requests));
        cJSON_AddNumberToObject(o, "failures", (double)atomic_load(&n->failures));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

cJSON *rpc_mesh_health(const gateway *gw) {
    int reachable = 0;
    for (int i = 0; i < gw->nodes.n; i++) reachable += atomic_load(&gw->nodes.nodes[i].reachable) == 1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", reachable == gw->nodes.n && reachable > 0 ? "ok"
                                         : reachable > 0                           ? "degraded"
                                                                                   : "unavailable");
    cJSON_AddNumberToObject(o, "nodes", gw->nodes.n);
    cJSON_AddNumberToObject(o, "nodes_reachable", reachable);
    return o;
}

static void method_mesh_nodes(jsonrpc_call *call, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    rpc_transport *t = jsonrpc_call_transport(call);
    jsonrpc_result(call, rpc_mesh_nodes(t->w->gw));
}

static void method_mesh_health(jsonrpc_call *call, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    rpc_transport *t = jsonrpc_call_transport(call);
    jsonrpc_result(call, rpc_mesh_health(t->w->gw));
}

/* Reloads the router model file without a restart (as SIGHUP does). */
static void method_reload_router(jsonrpc_call *call, const cJSON *params, void *ud) {
    (void)params;
    (void)ud;
    rpc_transport *t = jsonrpc_call_transport(call);
    char *err = NULL;
    if (gateway_reload_router(t->w->gw, &err) < 0) {
        jsonrpc_error(call, JSONRPC_INTERNAL_ERROR, err, NULL);
        free(err);
        return;
    }
    cJSON *res = cJSON_CreateObject();
    cJSON_AddStringToObject(res, "router", t->w->gw->router_path);
    jsonrpc_result(call, res);
}

static const jsonrpc_method methods[] = {
    {"chat.complete", method_chat_complete},
    {"models.list", method_models_list},
    {"mesh.nodes", method_mesh_nodes},
    {"mesh.health", method_mesh_health},
    {"admin.reload_router", method_reload_router},
};

/* ---- POST /rpc ---- */

static void http_transport_free(rpc_transport *t) {
    jsonrpc_session_close(t->session);
    free(t);
}

/* The one answer an HTTP request gets. Once it is out, the session is over
 * (calls still running, notifications only, are cancelled): freed here, or
 * by rpc_http when the answer came before jsonrpc_handle returned. */
static void http_send(const char *json, size_t len, void *ud) {
    rpc_transport *t = ud;
    if (t->answered) return;
    t->answered = 1;
    http_respond(t->x, 200, "application/json", json, len);
    if (!t->handling) http_transport_free(t);
}

static void http_abort(void *ud) {
    rpc_transport *t = ud;
    if (!t->answered) {
        t->answered = 1;
        http_respond(t->x, 499, "application/json", "", 0);
    }
    http_transport_free(t);
}

static void http_drain(void *ud) { (void)ud; }

void rpc_http(worker *w, http_exchange *x, const http_request *req) {
    rpc_transport *t = xcalloc(1, sizeof *t);
    t->w = w;
    t->x = x;
    t->session = jsonrpc_session_new(methods, sizeof methods / sizeof *methods, NULL, http_send, t);
    t->handling = 1;
    jsonrpc_handle(t->session, req->body, req->body_len);
    t->handling = 0;
    if (t->answered || jsonrpc_session_awaiting(t->session) == 0) {
        /* Only notifications: nothing to say, but HTTP must answer (and the
         * notifications still running are cancelled with the session). */
        if (!t->answered) http_respond(x, 204, NULL, "", 0);
        http_transport_free(t);
        return;
    }
    http_exchange_on(x, http_drain, http_abort, t);
}

/* ---- WebSocket /rpc ---- */

static void ws_send(const char *json, size_t len, void *ud) {
    rpc_transport *t = ud;
    ws_send_text(t->ws, json, len);
}

static void ws_message(ws_conn *ws, int is_text, const char *data, size_t len, void *ud) {
    (void)ws;
    rpc_transport *t = ud;
    if (!is_text) {
        ws_close(t->ws, 1003, "JSON-RPC messages are text frames");
        return;
    }
    jsonrpc_handle(t->session, data, len);
}

static void ws_closed(ws_conn *ws, void *ud) {
    (void)ws;
    rpc_transport *t = ud;
    jsonrpc_session_close(t->session);
    free(t);
}

static void ws_drained(ws_conn *ws, void *ud) {
    (void)ws;
    rpc_transport *t = ud;
    for (rpc_chat *rc = t->chats; rc; rc = rc->next) chat_resume(rc->chat);
}

static const ws_callbacks ws_cb = {ws_message, ws_drained, ws_closed};

void rpc_websocket(worker *w, http_exchange *x) {
    rpc_transport *t = xcalloc(1, sizeof *t);
    t->w = w;
    t->ws = http_upgrade_websocket(x, &ws_cb, t);
    if (!t->ws) {
        free(t);
        return;
    }
    t->session = jsonrpc_session_new(methods, sizeof methods / sizeof *methods, NULL, ws_send, t);
}
