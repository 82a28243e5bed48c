/* chat: see chat.h.
 *
 * The path of one completion: chat_start (validate, pick) -> dispatch ->
 * on_node_chunk* -> on_node_done | on_node_error -> finish (report, account).
 */
#include "api/chat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "api/metrics.h"
#include "ledger/cost.h"
#include "mesh/dispatch.h"

/* Pause the node while the client has this much unsent. */
#define BACKLOG_HIGH (256u << 10)
/* Nodes one request may try: the first and up to two failovers. */
#define MAX_ATTEMPTS 3

struct chat {
    worker *w;
    const chat_sink *sink;
    void *ud;
    cJSON *request;
    node *node;
    dispatch *dispatch;
    int stream;
    int include_usage;     /* the client asked for the usage chunk */
    int paused;
    int started;           /* on_stream_start has run */
    uint64_t start_ns;
    char id[40];
    long created;
    /* the current attempt, on c->node */
    cJSON *continuation;   /* the request sent when continuing a cut stream */
    long tokens_in, tokens_out;
    int have_usage;
    int content_chunks;
    /* the attempts before it (failover), folded in as each ended */
    node *used[MAX_ATTEMPTS];
    int n_used;
    long sum_in, sum_out, first_in;
    double sum_cost;
    int estimated;         /* some attempt's usage was counted by msoa */
    /* the route, for `auto` */
    int routed;
    route_result route;
    const char *domain;    /* the pool chosen: the router's domain, or "general" */
    const char *degraded;  /* why the answer is not from the specialist pool, or NULL */
    int flagged;           /* the guard flagged it and guard_action is flag */
    buf content;           /* streamed text, assembled */
    char *role;            /* from the first delta */
    char *finish_reason;
    cJSON *held_finish;    /* the finish_reason chunk, held until usage is known */
};

void api_error_json(buf *out, const char *message, const char *type, const char *code) {
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", type);
    if (code) cJSON_AddStringToObject(err, "code", code);
    else cJSON_AddNullToObject(err, "code");
    char *text = cJSON_PrintUnformatted(root);
    buf_puts(out, text);
    cJSON_free(text);
    cJSON_Delete(root);
}

static void chat_free(chat *c) {
    buf_free(&c->route.json);
    cJSON_Delete(c->request);
    cJSON_Delete(c->continuation);
    cJSON_Delete(c->held_finish);
    buf_free(&c->content);
    free(c->role);
    free(c->finish_reason);
    free(c);
}

static void fill_summary(chat *c, chat_summary *s);

static void report_error(chat *c, int status, const char *message, const char *type,
                         const char *code, int retry_after, int mid_stream) {
    buf e = BUF_INIT;
    api_error_json(&e, message, type, code);
    chat_summary s;
    fill_summary(c, &s);
    if (c->node) metrics_upstream_error(c->node->name, code);
    c->sink->on_error(c->ud, &s, status, e.data, e.len, retry_after, mid_stream);
    buf_free(&e);
}

/* ---- validation ---- */

static const char *valid_roles[] = {"system", "developer", "user", "assistant", "tool", "function"};

static int role_is_valid(const char *r) {
    for (size_t i = 0; i < sizeof valid_roles / sizeof *valid_roles; i++)
        if (!strcmp(r, valid_roles[i])) return 1;
    return 0;
}

/* Checks what msoa itself relies on; the node checks the rest. Returns NULL
 * or a message naming the offending field. */
static const char *validate(const cJSON *body, char *msg, size_t cap) {
    if (!cJSON_IsObject(body)) return "the request body must be a JSON object";
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (model && !cJSON_IsString(model) && !cJSON_IsNull(model)) return "'model' must be a string";
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!messages) return "'messages' is required";
    if (!cJSON_IsArray(messages)) return "'messages' must be an array";
    if (cJSON_GetArraySize(messages) == 0) return "'messages' must not be empty";
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m)) {
            snprintf(msg, cap, "'messages[%d]' must be an object", i);
            return msg;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            snprintf(msg, cap, "'messages[%d].role' must be a string", i);
            return msg;
        }
        if (!role_is_valid(role->valuestring)) {
            snprintf(msg, cap, "'messages[%d].role' must be one of system, developer, user, assistant, tool; got '%.40s'",
                     i, role->valuestring);
            return msg;
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (content && !cJSON_IsString(content) && !cJSON_IsArray(content) && !cJSON_IsNull(content)) {
            snprintf(msg, cap, "'messages[%d].content' must be a string, an array of parts or null", i);
            return msg;
        }
        i++;
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream)) return "'stream' must be a boolean";
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    if (so && !cJSON_IsObject(so) && !cJSON_IsNull(so)) return "'stream_options' must be an object";
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    if (mt && !cJSON_IsNull(mt) && (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble != floor(mt->valuedouble)))
        return "'max_tokens' must be an integer >= 1";
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(body, "temperature");
    if (temp && !cJSON_IsNull(temp) && (!cJSON_IsNumber(temp) || temp->valuedouble < 0 || temp->valuedouble > 2))
        return "'temperature' must be a number between 0 and 2";
    return NULL;
}

/* ---- the report ---- */

/* The request the current attempt was sent. */
static const cJSON *sent_request(const chat *c) { return c->continuation ? c->continuation : c->request; }

/* When a node reports no usage: its chunks for output, and ~4 characters a
 * token for the prompt, which is what tokenizers average on English. */
static void attempt_usage(const chat *c, long *in, long *out) {
    if (c->have_usage) {
        *in = c->tokens_in;
        *out = c->tokens_out;
        return;
    }
    size_t chars = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(sent_request(c), "messages")) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(content)) chars += strlen(content->valuestring);
    }
    *in = (long)(chars + 3) / 4;
    *out = c->content_chunks;
}

/* Usage counts every node's tokens and cost; the baseline is what one
 * monolithic call would have cost: the first prompt and all the output. */
static void fill_summary(chat *c, chat_summary *s) {
    long in = 0, out = 0;
    double cost = c->sum_cost;
    if (c->node) {
        attempt_usage(c, &in, &out);
        cost += cost_usd(c->node->price, in, out);
    }
    long first_in = c->n_used > 1 ? c->first_in : in;
    s->id = c->id;
    s->node = c->node ? c->node->name : NULL;
    s->model = c->node ? c->node->model : NULL;
    s->domain = c->domain ? c->domain : c->node ? c->node->domain : NULL;
    s->tokens_in = c->sum_in + in;
    s->tokens_out = c->sum_out + out;
    s->usage_estimated = c->estimated || (c->node && !c->have_usage);
    s->cost_usd = cost;
    s->baseline_cost_usd = cost_usd(c->w->gw->baseline, first_in, s->tokens_out);
    s->saved_usd = s->baseline_cost_usd - cost;
    s->latency_ms = (double)(clock_now_ns() - c->start_ns) / 1e6;
    s->nodes = (const node *const *)c->used;
    s->n_nodes = c->n_used;
    s->route_json = c->routed ? c->route.json.data : NULL;
    s->guard_score = c->routed ? c->route.guard_score : -1;
    s->degraded = c->degraded;
    s->flagged = c->flagged;
}

/* Written by hand and added raw: cJSON prints every non-integer number with
 * sprintf and checks it with sscanf, which cost more than the rest of the
 * gateway's work on a request. */
static cJSON *msoa_object(const chat_summary *s) {
    buf o = BUF_INIT;
    buf_puts(&o, "{\"node\":");
    json_put_string(&o, s->node);
    buf_puts(&o, ",\"model\":");
    json_put_string(&o, s->model);
    buf_puts(&o, ",\"domain\":");
    json_put_string(&o, s->domain);
    buf_printf(&o, ",\"tokens_in\":%ld,\"tokens_out\":%ld", s->tokens_in, s->tokens_out);
    if (s->usage_estimated) buf_puts(&o, ",\"usage_estimated\":true");
    buf_puts(&o, ",\"nodes\":[");
    for (int i = 0; i < s->n_nodes; i++) {
        if (i) buf_putc(&o, ',');
        json_put_string(&o, s->nodes[i]->name);
    }
    buf_printf(&o, "],\"failovers\":%d", s->n_nodes > 0 ? s->n_nodes - 1 : 0);
    if (s->route_json) {
        buf_puts(&o, ",\"route\":");
        buf_puts(&o, s->route_json);
    }
    if (s->flagged) buf_puts(&o, ",\"guard_flagged\":true");
    buf_printf(&o, ",\"degraded\":%s", s->degraded ? "true" : "false");
    if (s->degraded) {
        buf_puts(&o, ",\"degraded_reason\":");
        json_put_string(&o, s->degraded);
    }
    buf_printf(&o, ",\"cost_usd\":%.9g,\"baseline_cost_usd\":%.9g,\"saved_usd\":%.9g,\"latency_ms\":%.3f}",
               s->cost_usd, s->baseline_cost_usd, s->saved_usd, s->latency_ms);
    cJSON *raw = cJSON_CreateRaw(o.data);
    buf_free(&o);
    return raw;
}

/* Replaces obj[key] with item, placed first: clients and people read id,
 * object, created and model before the rest. */
static void set_first(cJSON *obj, const char *key, cJSON *item) {
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    cJSON_AddItemToObject(obj, key, item);
    cJSON_DetachItemViaPointer(obj, item);
    cJSON_InsertItemInArray(obj, 0, item);
}

/* One id, one model name and one creation time for the whole answer. */
static void brand(chat *c, cJSON *obj, const char *object) {
    set_first(obj, "model", cJSON_CreateString(c->node->model));
    set_first(obj, "created", cJSON_CreateNumber((double)c->created));
    set_first(obj, "object", cJSON_CreateString(object));
    set_first(obj, "id", cJSON_CreateString(c->id));
}

static void take_usage(chat *c, const cJSON *obj) {
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(obj, "usage");
    if (!cJSON_IsObject(usage)) return;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    if (!cJSON_IsNumber(pt) || !cJSON_IsNumber(ct)) return;
    c->tokens_in = (long)pt->valuedouble;
    c->tokens_out = (long)ct->valuedouble;
    c->have_usage = 1;
}

/* One node's share, when its attempt ends (well or not): usage counts every
 * node's tokens. */
static void fold_attempt(chat *c) {
    long in, out;
    attempt_usage(c, &in, &out);
    double cost = cost_usd(c->node->price, in, out);
    metrics_tokens(c->node->name, (uint64_t)in, (uint64_t)out);
    metrics_cost(c->node->name, cost, 0, 0);
    if (c->n_used == 1) c->first_in = in;
    c->sum_in += in;
    c->sum_out += out;
    c->sum_cost += cost;
    c->estimated |= !c->have_usage;
    c->tokens_in = c->tokens_out = 0;
    c->have_usage = 0;
    c->content_chunks = 0;
}

/* The ledger step: today the metrics; receipts come with the ledger. The
 * last node's tokens and cost are in s; the others were folded already. */
static void account(chat *c, const chat_summary *s) {
    long in, out;
    attempt_usage(c, &in, &out);
    metrics_tokens(s->node, (uint64_t)in, (uint64_t)out);
    metrics_cost(s->node, s->cost_usd - c->sum_cost, s->baseline_cost_usd, s->saved_usd);
    metrics_upstream(s->node, s->latency_ms / 1e3);
    log_debug("chat %s node=%s in=%ld out=%ld cost=%.8f latency=%.3fms", s->id, s->node,
              s->tokens_in, s->tokens_out, s->cost_usd, s->latency_ms);
}

/* ---- streams ---- */

static void emit_chunk(chat *c, cJSON *chunk) {
    char *text = cJSON_PrintUnformatted(chunk);
    c->sink->on_chunk(c->ud, text, strlen(text));
    cJSON_free(text);
    if (!c->paused && c->sink->backlog(c->ud) > BACKLOG_HIGH) {
        c->paused = 1;
        dispatch_pause(c->dispatch, 1);
    }
}

static void remember_delta(chat *c, const cJSON *choice) {
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(delta, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    const cJSON *finish = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    if (cJSON_IsString(role) && !c->role) c->role = xstrdup(role->valuestring);
    if (cJSON_IsString(content) && *content->valuestring) {
        buf_puts(&c->content, content->valuestring);
        c->content_chunks++;
    }
    if (cJSON_IsString(finish)) {
        free(c->finish_reason);
        c->finish_reason = xstrdup(finish->valuestring);
    }
}

static void on_node_chunk(void *ud, cJSON *chunk) {
    chat *c = ud;
    if (!c->started) {
        c->started = 1;
        metrics_first_chunk((double)(clock_now_ns() - c->start_ns) / 1e9);
        if (c->sink->on_stream_start) {
            chat_summary s;
            fill_summary(c, &s);
            c->sink->on_stream_start(c->ud, &s);
        }
    }
    take_usage(c, chunk);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *choice = cJSON_GetArrayItem(choices, 0);
    if (!choice) { /* the usage chunk: sent at the end, if asked for */
        cJSON_Delete(chunk);
        return;
    }
    /* A node continuing a cut stream starts with its own role delta: the
     * client has had one already. */
    if (c->role) cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(choice, "delta"), "role");
    remember_delta(c, choice);
    cJSON_DeleteItemFromObjectCaseSensitive(chunk, "usage");
    brand(c, chunk, "chat.completion.chunk");
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"))) {
        cJSON_Delete(c->held_finish);
        c->held_finish = chunk;
        return;
    }
    emit_chunk(c, chunk);
    cJSON_Delete(chunk);
}

/* The chat.completion a non-streaming client would have received. */
static cJSON *assembled_completion(chat *c) {
    cJSON *resp = cJSON_CreateObject();
    brand(c, resp, "chat.completion");
    cJSON *choices = cJSON_AddArrayToObject(resp, "choices");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", c->role ? c->role : "assistant");
    cJSON_AddStringToObject(msg, "content", c->content.data ? c->content.data : "");
    cJSON_AddStringToObject(choice, "finish_reason", c->finish_reason ? c->finish_reason : "stop");
    cJSON_AddItemToArray(choices, choice);
    return resp;
}

static void add_usage(cJSON *obj, const chat_summary *s) {
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "usage");
    cJSON *u = cJSON_AddObjectToObject(obj, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)s->tokens_in);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)s->tokens_out);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(s->tokens_in + s->tokens_out));
}

static void finish(chat *c, cJSON *completion, const chat_summary *s) {
    cJSON_DeleteItemFromObjectCaseSensitive(completion, "msoa");
    cJSON_AddItemToObject(completion, "msoa", msoa_object(s));
    char *text = cJSON_PrintUnformatted(completion);
    account(c, s);
    c->sink->on_finish(c->ud, s, text, strlen(text));
    cJSON_free(text);
    cJSON_Delete(completion);
    chat_free(c);
}

static void finish_stream(chat *c) {
    chat_summary s;
    fill_summary(c, &s);
    cJSON *last = c->held_finish;
    c->held_finish = NULL;
    if (!last) { /* the node ended without a finish chunk: make one */
        last = cJSON_CreateObject();
        brand(c, last, "chat.completion.chunk");
        cJSON *choices = cJSON_AddArrayToObject(last, "choices");
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", 0);
        cJSON_AddObjectToObject(choice, "delta");
        cJSON_AddStringToObject(choice, "finish_reason", "stop");
        cJSON_AddItemToArray(choices, choice);
    }
    if (c->include_usage) {
        emit_chunk(c, last);
        cJSON_Delete(last);
        last = cJSON_CreateObject();
        brand(c, last, "chat.completion.chunk");
        cJSON_AddArrayToObject(last, "choices");
        add_usage(last, &s);
    }
    /* The `msoa` report rides on the last chunk before [DONE]. */
    cJSON_AddItemToObject(last, "msoa", msoa_object(&s));
    emit_chunk(c, last);
    cJSON_Delete(last);
    cJSON *completion = assembled_completion(c);
    add_usage(completion, &s);
    finish(c, completion, &s);
}

/* ---- dispatch events ---- */

static void on_node_done(void *ud, cJSON *response) {
    chat *c = ud;
    c->dispatch = NULL;
    if (c->stream) {
        finish_stream(c);
        return;
    }
    take_usage(c, response);
    chat_summary s;
    fill_summary(c, &s);
    brand(c, response, "chat.completion");
    add_usage(response, &s);
    finish(c, response, &s);
}

static int start_attempt(chat *c);

/* Failures another node might not have: it is down, broken, overloaded or
 * slow. A 4xx other than 429 says the request itself is wrong. */
static int worth_another_node(const dispatch_error *e) { return e->status >= 500 || e->status == 429; }

/* Another node serving the same model (or, for `auto`, in the same pool),
 * not tried yet, reachable first. */
static node *failover_node(const chat *c) {
    node_registry *reg = &c->w->gw->nodes;
    node *fallback = NULL;
    for (int i = 0; i < reg->n; i++) {
        node *n = &reg->nodes[i];
        int tried = 0;
        for (int k = 0; k < c->n_used; k++) tried |= c->used[k] == n;
        /* the same model; for `auto`, also the rest of the pool */
        int same = !strcmp(n->model, c->node->model) || (c->routed && !strcmp(n->domain, c->domain));
        if (tried || !same) continue;
        if (atomic_load(&n->reachable)) return n;
        if (!fallback) fallback = n;
    }
    return fallback;
}

/* What the next node is sent when the client already has part of the
 * answer: the conversation plus that part as the assistant's message, which
 * OpenAI-compatible servers continue (vLLM needs continue_final_message). */
static void build_continuation(chat *c) {
    cJSON_Delete(c->continuation);
    c->continuation = cJSON_Duplicate(c->request, 1);
    cJSON *messages = cJSON_GetObjectItemCaseSensitive(c->continuation, "messages");
    cJSON *partial = cJSON_CreateObject();
    cJSON_AddStringToObject(partial, "role", "assistant");
    cJSON_AddStringToObject(partial, "content", c->content.data ? c->content.data : "");
    cJSON_AddItemToArray(messages, partial);
    cJSON_AddTrueToObject(c->continuation, "continue_final_message");
    cJSON_AddFalseToObject(c->continuation, "add_generation_prompt");
}

static void on_node_error(void *ud, const dispatch_error *e) {
    chat *c = ud;
    c->dispatch = NULL;
    log_warn("chat %s: %s", c->id, e->message);
    node *next = worth_another_node(e) && c->n_used < MAX_ATTEMPTS ? failover_node(c) : NULL;
    if (next) {
        fold_attempt(c);
        log_info("chat %s: failing over from node %s to %s%s", c->id, c->node->name, next->name,
                 c->started ? " mid-stream" : "");
        c->node = next;
        if (c->started) build_continuation(c);
        if (start_attempt(c) == 0) return;
    }
    report_error(c, e->status, e->message, e->type, e->code, e->retry_after_s, e->mid_stream || c->started);
    chat_free(c);
}

static const dispatch_events node_events = {on_node_chunk, on_node_done, on_node_error};

/* ---- start ---- */

/* Sends the request (or its continuation) to c->node. */
static int start_attempt(chat *c) {
    const msoa_config *cfg = &c->w->gw->cfg;
    dispatch_timeouts t = {cfg->upstream_connect_timeout_ms, cfg->upstream_timeout_ms, cfg->upstream_stall_ms};
    c->used[c->n_used++] = c->node;
    cJSON *req = c->continuation ? c->continuation : c->request;
    c->dispatch = dispatch_start(c->w->client, &c->w->loop, c->node, req, c->stream, &t, &node_events, c);
    return c->dispatch ? 0 : -1;
}

static void new_id(worker *w, char *out, size_t cap) {
    /* unique per process and worker; random enough to not collide across restarts */
    static _Atomic unsigned long boot;
    unsigned long b = atomic_load(&boot);
    if (!b) {
        b = (unsigned long)clock_now_ns() ^ ((unsigned long)getpid() << 32);
        atomic_store(&boot, b);
    }
    snprintf(out, cap, "chatcmpl-%012lx%02x%08lx", b & 0xffffffffffffUL, w->index & 0xff,
             ++w->next_id);
}

static int wants(const cJSON *obj, const char *key) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

/* ---- routing ---- */

/* A message's text: its string content, or its first text part. */
static const char *message_text(const cJSON *m, size_t *len) {
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsArray(content)) {
        const cJSON *part;
        cJSON_ArrayForEach(part, content) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(text)) {
                content = text;
                break;
            }
        }
    }
    if (!cJSON_IsString(content)) return NULL;
    *len = strlen(content->valuestring);
    return content->valuestring;
}

/* What the router reads: the system prompt and the last user message. */
static void router_input(const cJSON *request, const char **sys, size_t *sys_len, const char **user,
                         size_t *user_len) {
    *sys = *user = NULL;
    *sys_len = *user_len = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(request, "messages")) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) continue;
        const char *r = role->valuestring;
        size_t len = 0;
        const char *text = message_text(m, &len);
        if (!text) continue;
        if ((!strcmp(r, "system") || !strcmp(r, "developer")) && !*sys) {
            *sys = text;
            *sys_len = len;
        } else if (!strcmp(r, "user")) {
            *user = text;
            *user_len = len;
        }
    }
}

/* The least busy reachable node of a pool. */
static node *pool_node(node_registry *reg, const char *domain) {
    node *best = NULL;
    for (int i = 0; i < reg->n; i++) {
        node *n = &reg->nodes[i];
        if (strcmp(n->domain, domain) != 0 || !atomic_load(&n->reachable)) continue;
        if (!best || atomic_load(&n->inflight) < atomic_load(&best->inflight)) best = n;
    }
    return best;
}

/* Any reachable node, the least busy; else the first (it may come back). */
static node *any_node(node_registry *reg) {
    node *best = NULL;
    for (int i = 0; i < reg->n; i++) {
        node *n = &reg->nodes[i];
        if (atomic_load(&n->reachable) && (!best || atomic_load(&n->inflight) < atomic_load(&best->inflight)))
            best = n;
    }
    return best ? best : &reg->nodes[0];
}

/* `auto`: guard, then router, then the pool of the domain; below the
 * confidence threshold the generalist pool; then any healthy node, which
 * makes the answer degraded. NULL when the guard refuses. */
static node *route_auto(chat *c) {
    gateway *gw = c->w->gw;
    const char *sys, *user;
    size_t sys_len, user_len;
    router_input(c->request, &sys, &sys_len, &user, &user_len);
    if (gateway_classify(gw, sys, sys_len, user, user_len, &c->route) < 0) {
        c->domain = "general";
        node *n = pool_node(&gw->nodes, "general");
        return n ? n : any_node(&gw->nodes);
    }
    c->routed = 1;
    if (c->route.unsafe) {
        if (gw->guard_action == GUARD_REFUSE) return NULL;
        if (gw->guard_action == GUARD_FLAG) c->flagged = 1;
        if (gw->guard_action == GUARD_ROUTE) {
            c->domain = "safety";
            node *n = pool_node(&gw->nodes, "safety");
            if (n) return n;
            c->degraded = "no reachable node in the safety pool";
            return NULL;
        }
    }
    c->domain = c->route.confidence >= gw->cfg.router_min_confidence ? c->route.domain : "general";
    node *n = pool_node(&gw->nodes, c->domain);
    if (n) return n;
    if (strcmp(c->domain, "general") != 0) {
        n = pool_node(&gw->nodes, "general");
        c->degraded = "no reachable node in the specialist pool; answered by the generalist pool";
        if (n) return n;
    }
    c->degraded = "no reachable node in the specialist or generalist pool; answered by another node";
    return any_node(&gw->nodes);
}

/* `auto`, an absent model, or a name /v1/models lists. */
static node *pick_node(chat *c, const cJSON *model, int *status, const char **code, char *msg, size_t cap) {
    node_registry *reg = &c->w->gw->nodes;
    if (reg->n == 0) {
        *status = 503;
        *code = "no_nodes";
        snprintf(msg, cap, "no nodes are configured; start msoa with --node NAME=URL");
        return NULL;
    }
    const char *name = cJSON_IsString(model) ? model->valuestring : "auto";
    if (!strcmp(name, "auto") || !*name) {
        node *n = route_auto(c);
        if (!n && c->route.unsafe && c->w->gw->guard_action != GUARD_ROUTE) {
            *status = 400;
            *code = "content_policy";
            snprintf(msg, cap, "the request was refused by msoa's guard (unsafe score %.2f)", c->route.guard_score);
        } else if (!n) {
            *status = 503;
            *code = "no_safety_node";
            snprintf(msg, cap, "the guard sent this request to the safety pool, which has no reachable node");
        }
        return n;
    }
    node *n = node_registry_pick(reg, name);
    if (!n) {
        *status = 404;
        *code = "model_not_found";
        snprintf(msg, cap, "The model '%.200s' does not exist; GET /v1/models lists the models served", name);
    }
    return n;
}

chat *chat_start(worker *w, cJSON *body, const chat_sink *sink, void *ud) {
    chat *c = xcalloc(1, sizeof *c);
    c->w = w;
    c->sink = sink;
    c->ud = ud;
    c->request = body;
    c->start_ns = clock_now_ns();
    c->created = (long)clock_unix_s();
    new_id(w, c->id, sizeof c->id);

    char msg[512];
    const char *problem = validate(body, msg, sizeof msg);
    if (problem) {
        report_error(c, 400, problem, "invalid_request_error", "invalid_request", 0, 0);
        chat_free(c);
        return NULL;
    }
    int status = 0;
    const char *code = NULL;
    c->node = pick_node(c, cJSON_GetObjectItemCaseSensitive(body, "model"), &status, &code, msg, sizeof msg);
    if (!c->node) {
        report_error(c, status, msg, status == 503 ? "service_unavailable" : "invalid_request_error", code, 0, 0);
        chat_free(c);
        return NULL;
    }
    c->stream = wants(body, "stream");
    c->include_usage = wants(cJSON_GetObjectItemCaseSensitive(body, "stream_options"), "include_usage");

    if (start_attempt(c) < 0) {
        report_error(c, 500, "the upstream call could not be started", "server_error", "internal", 0, 0);
        chat_free(c);
        return NULL;
    }
    return c;
}

void chat_cancel(chat *c) {
    if (c->dispatch) dispatch_cancel(c->dispatch);
    chat_free(c);
}

void chat_resume(chat *c) {
    if (!c->paused || !c->dispatch) return;
    c->paused = 0;
    dispatch_pause(c->dispatch, 0);
}
