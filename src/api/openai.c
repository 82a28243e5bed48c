/* openai: see openai.h. The HTTP side of a chat completion is a chat_sink
 * that writes either one JSON response or an SSE stream. */
#include "api/openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/chat.h"
#include "api/metrics.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/utf8.h"
#include "base/xalloc.h"
#include "net/sse.h"

void api_respond_error(http_exchange *x, int status, const char *message, const char *type, const char *code) {
    buf e = BUF_INIT;
    api_error_json(&e, message, type, code);
    http_respond(x, status, "application/json", e.data, e.len);
    buf_free(&e);
}

int api_read_body(const char *body, size_t len, json_doc *d, char *errbuf, size_t cap, const char **err) {
    if (len == 0) {
        *err = "the request body is empty; send a JSON object";
        return -1;
    }
    size_t bad = utf8_check(body, len);
    if (bad < len) {
        snprintf(errbuf, cap, "the request body is not valid UTF-8 (byte %zu)", bad);
        *err = errbuf;
        return -1;
    }
    if (json_parse(d, body, len) == 0) return 0;
    if (!strcmp(d->error, JSON_ERROR_TRAILING))
        snprintf(errbuf, cap, "the request body has data after the JSON value (byte %zu)", d->error_at);
    else
        snprintf(errbuf, cap, "the request body is not valid JSON (near byte %zu: %s)", d->error_at, d->error);
    *err = errbuf;
    return -1;
}

/* ---- /v1/models ---- */

cJSON *openai_model_list(const gateway *gw) {
    cJSON *list = cJSON_CreateObject();
    cJSON_AddStringToObject(list, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(list, "data");
    double created = (double)clock_unix_s();
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", "auto");
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", created);
    cJSON_AddStringToObject(m, "owned_by", "msoa");
    cJSON_AddItemToArray(data, m);
    for (int i = 0; i < gw->nodes.n; i++) {
        const node *n = &gw->nodes.nodes[i];
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= !strcmp(gw->nodes.nodes[j].model, n->model);
        if (seen) continue;
        m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", n->model);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", created);
        cJSON_AddStringToObject(m, "owned_by", n->name);
        cJSON_AddItemToArray(data, m);
    }
    return list;
}

void openai_models(worker *w, http_exchange *x) {
    cJSON *list = openai_model_list(w->gw);
    char *text = cJSON_PrintUnformatted(list);
    http_respond(x, 200, "application/json", text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(list);
}

/* ---- /v1/chat/completions ---- */

typedef struct http_chat {
    http_exchange *x;
    chat *chat;
    int streaming;  /* SSE headers sent */
    buf frame;
} http_chat;

static void http_chat_free(http_chat *hc) {
    buf_free(&hc->frame);
    free(hc);
}

static void add_route_headers(http_exchange *x, const chat_summary *s) {
    http_add_header(x, "x-msoa-node", s->node);
    http_add_header(x, "x-msoa-domain", s->domain);
    http_add_header(x, "x-msoa-request-id", s->id);
    if (s->guard_score >= 0) {
        char score[32];
        snprintf(score, sizeof score, "%.4f", s->guard_score);
        http_add_header(x, "x-msoa-guard-score", score);
    }
    if (s->degraded) http_add_header(x, "x-msoa-degraded", "true");
}

static void on_stream_start(void *ud, const chat_summary *s) {
    http_chat *hc = ud;
    hc->streaming = 1;
    add_route_headers(hc->x, s);
    http_add_header(hc->x, "Cache-Control", "no-cache");
    http_stream_start(hc->x, 200, "text/event-stream");
}

static void write_event(http_chat *hc, const char *json, size_t len) {
    buf_clear(&hc->frame);
    sse_write_data(&hc->frame, json, len);
    http_stream_write(hc->x, hc->frame.data, hc->frame.len);
}

static void on_chunk(void *ud, const char *json, size_t len) { write_event(ud, json, len); }

static size_t backlog(void *ud) {
    http_chat *hc = ud;
    return http_stream_backlog(hc->x);
}

#define CHAT_ROUTE "/v1/chat/completions"

static void on_finish(void *ud, const chat_summary *s, const char *json, size_t len) {
    http_chat *hc = ud;
    metrics_request(CHAT_ROUTE, 200, s->node, s->latency_ms / 1e3);
    if (hc->streaming) {
        write_event(hc, "[DONE]", 6);
        http_stream_end(hc->x);
    } else {
        buf cost = BUF_INIT;
        json_put_decimal(&cost, s->cost_usd, 10);
        add_route_headers(hc->x, s);
        http_add_header(hc->x, "x-msoa-cost-usd", cost.data);
        buf_free(&cost);
        http_respond(hc->x, 200, "application/json", json, len);
    }
    http_chat_free(hc);
}

static void on_error(void *ud, const chat_summary *s, int status, const char *error_json, size_t len,
                     int retry_after_s, int mid_stream) {
    (void)mid_stream;
    http_chat *hc = ud;
    metrics_request(CHAT_ROUTE, hc->streaming ? 200 : status, s->node, s->latency_ms / 1e3);
    if (hc->streaming) {
        /* Headers are gone: the OpenAI clients raise an error event. */
        write_event(hc, error_json, len);
        http_stream_end(hc->x);
    } else {
        if (retry_after_s > 0) {
            char ra[24];
            snprintf(ra, sizeof ra, "%d", retry_after_s);
            http_add_header(hc->x, "Retry-After", ra);
        }
        http_respond(hc->x, status, "application/json", error_json, len);
    }
    http_chat_free(hc);
}

static const chat_sink http_sink = {on_stream_start, on_chunk, backlog, on_finish, on_error};

static void on_drain(void *ud) {
    http_chat *hc = ud;
    if (hc->chat) chat_resume(hc->chat);
}

static void on_abort(void *ud) {
    http_chat *hc = ud;
    chat_cancel(hc->chat);
    if (hc->streaming) http_stream_end(hc->x);
    else http_respond(hc->x, 499, "application/json", "", 0);
    http_chat_free(hc);
}

/* Tokens of a request's tape held on the stack; larger requests use the heap. */
#define REQUEST_TOKENS 128

void openai_chat_completions(worker *w, http_exchange *x, const http_request *req) {
    char errbuf[160];
    const char *err = NULL;
    json_tok space[REQUEST_TOKENS];
    json_doc body;
    json_doc_init(&body, space, REQUEST_TOKENS);
    if (api_read_body(req->body, req->body_len, &body, errbuf, sizeof errbuf, &err) < 0) {
        json_doc_free(&body);
        api_respond_error(x, 400, err, "invalid_request_error", "invalid_json");
        return;
    }
    chat_options opts = {0};
    const char *timeout = http_request_header(req, "x-msoa-timeout-ms");
    if (timeout) {
        char *end;
        unsigned long ms = strtoul(timeout, &end, 10);
        if (*end || !*timeout || ms == 0 || ms > 86400000) {
            json_doc_free(&body);
            api_respond_error(x, 400, "x-msoa-timeout-ms must be a whole number of milliseconds from 1 to 86400000",
                              "invalid_request_error", "invalid_header");
            return;
        }
        opts.timeout_ms = (unsigned)ms;
    }
    http_chat *hc = xcalloc(1, sizeof *hc);
    hc->x = x;
    chat *c = chat_start(w, &body, &opts, &http_sink, hc);
    json_doc_free(&body);
    if (!c) return; /* already answered, hc freed */
    hc->chat = c;
    http_exchange_on(x, on_drain, on_abort, hc);
}
