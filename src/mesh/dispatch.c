/* dispatch: see dispatch.h.
 *
 * A node's non-streamed answer is read into a JSON tape, not a cJSON tree:
 * the caller mostly passes it on, and building and freeing a tree for
 * that cost more than the rest of a proxied request. The request comes as
 * text, and goes to the node the same way: read into a tape, its members
 * copied as they are but for the few msoa sets itself. */
#include "mesh/dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "net/sse.h"

/* Error bodies and whole responses beyond this are not trusted. */
#define MAX_RESPONSE_BYTES (16u << 20)
#define MAX_ERROR_BODY_BYTES (64u << 10)
/* Tokens of an answer's tape held on the stack; larger answers use the heap. */
#define ANSWER_TOKENS 128

struct dispatch {
    http_call *call;
    void *backend_call;  /* the call of a node's backend, instead of `call` */
    node *node;
    int stream;
    int status;          /* upstream HTTP status, 0 until headers */
    int saw_done;        /* [DONE] or a finish_reason arrived */
    int chunks;          /* chunks delivered */
    int finished;        /* an end event was delivered */
    buf body;            /* non-streaming body, or an error body */
    sse_parser sse;
    dispatch_callbacks ev;
    void *ud;
};

static void dispatch_free(dispatch *d);
static void fail(dispatch *d, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail(dispatch *d, int status, const char *code, const char *fmt, ...) {
    if (d->finished) return;
    d->finished = 1;
    if (status >= 500 || status == 429) atomic_fetch_add(&d->node->failures, 1);
    dispatch_error e;
    memset(&e, 0, sizeof e);
    e.status = status;
    e.type = status == 429 ? "rate_limit_error" : status < 500 ? "invalid_request_error" : "upstream_error";
    e.code = code;
    e.mid_stream = d->chunks > 0;
    if (d->call) {
        const char *ra = http_call_header(d->call, "retry-after");
        if (ra) e.retry_after_s = atoi(ra);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    d->ev.on_error(d->ud, &e);
}

static void on_sse_event(const char *data, size_t len, void *ud) {
    dispatch *d = ud;
    if (d->finished) return;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        d->saw_done = 1;
        return;
    }
    cJSON *chunk = cJSON_ParseWithLength(data, len);
    if (!chunk || !cJSON_IsObject(chunk)) {
        cJSON_Delete(chunk);
        fail(d, 502, "upstream_bad_response", "node '%s' sent an invalid stream event: %.80s",
             d->node->name, data);
        return;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(chunk, "error");
    if (err) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
        fail(d, 502, "upstream_error", "node '%s' failed mid-stream: %s", d->node->name,
             cJSON_IsString(msg) ? msg->valuestring : "no message");
        cJSON_Delete(chunk);
        return;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *first = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    const cJSON *finish = first ? cJSON_GetObjectItemCaseSensitive(first, "finish_reason") : NULL;
    if (cJSON_IsString(finish)) d->saw_done = 1;
    d->chunks++;
    d->ev.on_chunk(d->ud, chunk);
}

static void on_headers(http_call *c, int status, void *ud) {
    (void)c;
    dispatch *d = ud;
    d->status = status;
}

static void on_data(http_call *c, const char *data, size_t len, void *ud) {
    dispatch *d = ud;
    if (d->finished) return;
    if (d->status == 200 && d->stream) {
        if (sse_parser_feed(&d->sse, data, len, on_sse_event, d) < 0)
            fail(d, 502, "upstream_bad_response", "node '%s' sent an oversized stream event",
                 d->node->name);
    } else {
        size_t cap = d->status == 200 ? MAX_RESPONSE_BYTES : MAX_ERROR_BODY_BYTES;
        if (d->body.len + len > cap) {
            if (d->status == 200)
                fail(d, 502, "upstream_bad_response", "node '%s' sent a response over %zu bytes",
                     d->node->name, cap);
            return; /* an error body: keep its beginning */
        }
        buf_append(&d->body, data, len);
    }
    if (d->finished) { /* a bad stream: stop reading it */
        http_call_cancel(c);
        d->call = NULL;
        atomic_store(&d->node->reachable, 1);
        dispatch_free(d);
    }
}

/* The node's own error message, when its body is OpenAI-shaped. */
static const char *upstream_message(dispatch *d, cJSON **holder) {
    *holder = cJSON_ParseWithLength(d->body.data ? d->body.data : "", d->body.len);
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(*holder, "error");
    const cJSON *msg = cJSON_IsObject(err) ? cJSON_GetObjectItemCaseSensitive(err, "message")
                       : cJSON_IsString(err) ? err : NULL;
    if (cJSON_IsString(msg)) return msg->valuestring;
    return d->body.len ? d->body.data : "no message";
}

static void finish_http_error(dispatch *d) {
    cJSON *holder;
    const char *msg = upstream_message(d, &holder);
    int s = d->status;
    if (s == 429)
        fail(d, 429, "rate_limited", "node '%s' is rate limited: %.300s", d->node->name, msg);
    else if (s == 401 || s == 403)
        fail(d, 502, "upstream_auth", "node '%s' rejected the gateway's credentials (%d): %.300s",
             d->node->name, s, msg);
    else if (s == 404)
        fail(d, 502, "upstream_not_found", "node '%s' does not serve model '%s' (404): %.300s",
             d->node->name, d->node->model, msg);
    else if (s >= 400 && s < 500)
        fail(d, s, "upstream_rejected", "node '%s' rejected the request (%d): %.300s",
             d->node->name, s, msg);
    else
        fail(d, 502, "upstream_error", "node '%s' failed with HTTP %d: %.300s", d->node->name, s, msg);
    cJSON_Delete(holder);
}

/* An answer must be a JSON object with a "choices" array. */
static void deliver_answer(dispatch *d, const char *text, size_t len) {
    json_tok space[ANSWER_TOKENS];
    json_doc doc;
    json_doc_init(&doc, space, ANSWER_TOKENS);
    if (json_parse(&doc, text, len) != 0 || json_type_of(&doc, 0) != JSON_OBJECT ||
        json_type_of(&doc, json_get(&doc, 0, "choices")) != JSON_ARRAY) {
        fail(d, 502, "upstream_bad_response", "node '%s' sent an invalid response (%s at byte %zu): %.80s",
             d->node->name, doc.error ? doc.error : "no \"choices\" array", doc.error_at, len ? text : "(empty)");
    } else {
        d->finished = 1;
        d->ev.on_done(d->ud, &doc);
    }
    json_doc_free(&doc);
}

static void finish_response(dispatch *d) {
    if (d->stream) {
        if (!d->saw_done) {
            fail(d, 502, "upstream_incomplete", "node '%s' ended the stream before it was complete",
                 d->node->name);
            return;
        }
        d->finished = 1;
        d->ev.on_done(d->ud, NULL);
        return;
    }
    deliver_answer(d, d->body.data ? d->body.data : "", d->body.len);
}

/* Ends the dispatch; the node's in-flight count follows it. */
static void dispatch_free(dispatch *d) {
    atomic_fetch_sub(&d->node->inflight, 1);
    buf_free(&d->body);
    sse_parser_free(&d->sse);
    free(d);
}

static void on_done(http_call *c, enum http_call_error err, const char *message, void *ud) {
    (void)c;
    dispatch *d = ud;
    if (!d->finished) {
        if (err == HTTP_CALL_CONNECT)
            fail(d, 502, "upstream_unreachable", "node '%s' is unreachable: %s", d->node->name, message);
        else if (err == HTTP_CALL_TIMEOUT)
            fail(d, 504, "upstream_timeout", "node '%s' timed out: %s", d->node->name, message);
        else if (err != HTTP_CALL_OK)
            fail(d, 502, "upstream_broken", "node '%s' broke the connection: %s", d->node->name, message);
        else if (d->status != 200)
            finish_http_error(d);
        else
            finish_response(d);
    }
    d->call = NULL;
    /* Reachability follows real traffic, not only probes. */
    atomic_store(&d->node->reachable, err != HTTP_CALL_CONNECT);
    dispatch_free(d);
}

/* The body sent upstream: the client's request, its members passed on as
 * they came, but the node's model name, streamed or not as this call is,
 * usage asked for in streams so every token is counted, and without msoa's
 * own "msoa" member. -1 when the request is not a JSON object. */
static int upstream_body(buf *out, const node *n, const json_doc *doc, int stream) {
    static const char *const ours[] = {"model", "stream", "stream_options", "msoa"};
    if (!doc->n || json_type_of(doc, 0) != JSON_OBJECT) return -1;
    buf_reserve(out, doc->len + 96 + strlen(n->model));
    buf_putc(out, '{');
    for (int k = json_member_next(doc, 0, -1); k >= 0; k = json_member_next(doc, 0, k)) {
        int mine = 0;
        for (size_t i = 0; i < sizeof ours / sizeof *ours && !mine; i++) mine = json_str_eq(doc, k, ours[i]);
        if (mine) continue;
        buf_append(out, json_raw(doc, k), doc->tok[k].len);
        buf_putc(out, ':');
        buf_append(out, json_raw(doc, k + 1), doc->tok[k + 1].len);
        buf_putc(out, ',');
    }
    buf_puts(out, "\"model\":");
    json_put_string(out, n->model);
    if (stream) buf_puts(out, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    buf_putc(out, '}');
    return 0;
}

/* ---- nodes with a backend ---- */

static void backend_chunk(void *ud, cJSON *chunk) {
    dispatch *d = ud;
    d->chunks++;
    d->ev.on_chunk(d->ud, chunk);
}

/* A backend's answer is a tree: printed, it goes the way of an HTTP node's
 * (a backend is far slower than the print). */
static void backend_done(void *ud, cJSON *response) {
    dispatch *d = ud;
    d->backend_call = NULL;
    if (response) {
        buf text = BUF_INIT;
        json_write(&text, response);
        cJSON_Delete(response);
        deliver_answer(d, text.data, text.len);
        buf_free(&text);
    } else {
        d->finished = 1;
        d->ev.on_done(d->ud, NULL);
    }
    dispatch_free(d);
}

static void backend_error(void *ud, const dispatch_error *e) {
    dispatch *d = ud;
    d->backend_call = NULL;
    d->finished = 1;
    if (e->status >= 500 || e->status == 429) atomic_fetch_add(&d->node->failures, 1);
    d->ev.on_error(d->ud, e);
    dispatch_free(d);
}

static const dispatch_events backend_events = {backend_chunk, backend_done, backend_error};

/* A backend reads the request as a tree. */
static void *start_backend(dispatch *d, uv_loop_t *loop, const json_doc *request, int stream) {
    cJSON *tree = cJSON_ParseWithLength(request->text, request->len);
    if (!cJSON_IsObject(tree)) {
        cJSON_Delete(tree);
        return NULL;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(tree, "msoa");
    void *call = d->node->backend->start(d->node->backend_state, loop, tree, stream, &backend_events, d);
    cJSON_Delete(tree);
    return call;
}

dispatch *dispatch_start(http_client *cl, uv_loop_t *loop, node *n, const json_doc *request, int stream,
                         const dispatch_timeouts *t, const dispatch_callbacks *cb, void *ud) {
    dispatch *d = xcalloc(1, sizeof *d);
    d->node = n;
    d->stream = stream;
    d->ev = *cb;
    d->ud = ud;
    sse_parser_init(&d->sse);
    atomic_fetch_add(&n->inflight, 1);
    atomic_fetch_add(&n->requests, 1);
    if (n->backend) {
        d->backend_call = start_backend(d, loop, request, stream);
        if (!d->backend_call) {
            dispatch_free(d);
            return NULL;
        }
        return d;
    }

    const char *headers[4];
    int h = 0;
    headers[h++] = "Content-Type: application/json";
    headers[h++] = stream ? "Accept: text/event-stream" : "Accept: application/json";
    if (n->auth_header) headers[h++] = n->auth_header;
    headers[h] = NULL;

    buf body = BUF_INIT;
    if (upstream_body(&body, n, request, stream) < 0) {
        buf_free(&body);
        dispatch_free(d);
        return NULL;
    }
    http_call_opts o;
    memset(&o, 0, sizeof o);
    o.method = "POST";
    o.url = n->chat_url;
    o.headers = headers;
    o.body = body.data;
    o.body_len = body.len;
    o.connect_timeout_ms = t->connect_ms;
    o.total_timeout_ms = t->total_ms;
    o.stall_timeout_ms = t->stall_ms;
    o.max_connections = n->max_conns;
    o.on_headers = on_headers;
    o.on_data = on_data;
    o.on_done = on_done;
    o.ud = d;
    d->call = http_client_start(cl, &o);
    buf_free(&body);
    if (!d->call) {
        dispatch_free(d);
        return NULL;
    }
    return d;
}

void dispatch_pause(dispatch *d, int paused) {
    if (d->call) http_call_pause(d->call, paused);
    if (d->backend_call) d->node->backend->pause(d->backend_call, paused);
}

void dispatch_cancel(dispatch *d) {
    if (d->call) http_call_cancel(d->call);
    if (d->backend_call) d->node->backend->cancel(d->backend_call);
    dispatch_free(d);
}
