/* chat: see chat.h.
 *
 * The path of one completion:
 *   chat_start: check the request, plan the nodes (guard and router for
 *     `auto`, then pools ordered by the planner), start the first attempt;
 *   an attempt is one node's call (dispatch); the first to produce a chunk
 *     (or, unstreamed, an answer) wins; a hedge is a second attempt started
 *     when the first is slower than its node's p95 time to first token;
 *   on_attempt_chunk* -> on_attempt_done: the answer, with one id, the usage
 *     of every node, the `msoa` report -> finish -> account;
 *   on_attempt_error: the next node of the plan (continuing a cut stream
 *     from the text already sent), while attempts, the retry budget and the
 *     deadline allow; when no node takes it now but one may soon, waiting
 *     for it (bounded by the deadline and --upstream-wait-ms); else the
 *     error. A request no node takes at the start waits the same way.
 * Two variants of the same path live here too: a cascade (the plan is the
 * domain's nodes, cheapest first, and each answer but the last is checked
 * before it is accepted), and a multi-part request (one child chat per
 * part, each on this same path, merged when all have answered).
 */
#include "api/chat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/chat_request.h"
#include "api/metrics.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/json_tape.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "ledger/cost.h"
#include "mesh/budget.h"
#include "mesh/dispatch.h"
#include "mesh/planner.h"
#include "mesh/validate.h"

/* Pause the node while the client has this much unsent. */
#define BACKLOG_HIGH (256u << 10)
#define MAX_ATTEMPTS 8
/* A node that failed a request may take it once more (after a wait: it
 * may have been a blip), not again. */
#define MAX_TRIES_PER_NODE 2
/* A node's p95 time to first token is trusted after this many samples;
 * before that, no hedging. */
#define HEDGE_MIN_SAMPLES 20
#define MAX_PLAN 64
#define MAX_SPARE_CHATS 256 /* finished chats a worker keeps for reuse: at most ~0.6 MB */
#define SPARE_REQUEST_CAP 4096 /* and their request buffers, up to this size */
/* Tokens of a request's tape held on the stack; larger requests use the heap. */
#define REQUEST_TOKENS 128
/* Tokens of the request's tape a chat holds itself; larger ones use the heap. */
#define CHAT_REQUEST_TOKENS 32
/* Price against time in the planner: a node $0.001 dearer per request must
 * be a second faster to be preferred. */
#define PLAN_MS_PER_USD 1e6

typedef struct attempt {
    struct chat *c;
    node *node;
    dispatch *d;
    uint64_t start_ns, first_ns, last_ns; /* sent, first chunk, latest chunk */
    long tokens_in, tokens_out;
    int have_usage;
    int content_chunks;
    const buf *sent;       /* the request it was sent (JSON text) */
    int stream;            /* asked for a stream (a cascade's cheap steps are not) */
    int judged;            /* its success went to the breaker at the first chunk */
} attempt;

struct chat {
    worker *w;
    const chat_sink *sink;
    void *ud;
    buf request;           /* the request's JSON text, as the client sent it */
    json_doc doc;          /* `request` read into a tape, for every node it goes to */
    json_tok doc_space[CHAT_REQUEST_TOKENS];
    cJSON *tree;           /* the request as a tree, built when a rarer path needs one */
    buf continuation;      /* sent when continuing a cut stream (JSON text); empty: none */
    int stream;
    int include_usage;     /* the client asked for the usage chunk */
    int paused;
    int started;           /* the client has the first chunk */
    uint64_t start_ns, deadline_ns;
    char id[40];
    long created;
    /* the plan: nodes in the order to try them */
    node *plan[MAX_PLAN];
    int n_plan, next_in_plan;
    /* attempts: `live` run now (two while hedging); `winner` answers */
    attempt *live[2];
    attempt *winner;
    node *used[MAX_ATTEMPTS];
    int n_used, hedged;
    uv_timer_t hedge_timer;  /* hedging, then backing off before a retry or waiting for a node */
    int owes_token;          /* a retry not yet paid from the retry budget */
    node *failed;            /* the node the last failover left */
    uint64_t wait_start_ns;  /* waiting for a node since; 0: not waiting */
    unsigned waits;          /* polls while waiting */
    dispatch_error last_error; /* the last attempt's, for the client when nothing else works */
    /* attempts that ended, folded in */
    long sum_in, sum_out, first_in;
    double sum_cost;
    int estimated;
    const char *model;     /* the model asked for (in model_name); NULL for `auto` */
    buf model_name;        /* the request's "model", decoded; kept, like `request`, by a reused chat */
    buf answer;            /* the complete answer's text, for the sink; kept likewise */
    char unavailable[320]; /* why the plan is empty, or "" */
    /* the route, for `auto` */
    int routed;
    route_result route;
    const char *domain;    /* the pool planned for */
    char degraded[320];    /* why the answer is not from the specialist pool, or "" */
    int flagged;
    /* a cascade: the plan is its nodes, cheapest first; each answer but the
     * last is checked before it is accepted */
    int cascade;
    buf cascade_log;       /* JSON objects, comma-separated */
    /* the answer, as streamed */
    buf content;
    char *role;
    char *finish_reason;
    cJSON *held_finish;    /* the finish_reason chunk, held until usage is known */
    /* a multi-part request: one child chat per part, answered in parallel */
    struct parts *parts;
    chat *next_spare;      /* in the worker's spare chats */
};

typedef struct part {
    struct chat *parent;
    chat *child;           /* NULL once it has answered */
    int index;
    char *question;
    buf answer;            /* the answer, or why it failed */
    int ok;
    char *node, *domain;
    long tokens_in, tokens_out;
    double cost, baseline;
    buf route;             /* the router's decision, JSON */
} part;

struct parts {
    part *p;
    int n, done;
    int starting;          /* inside chat_start: a finished set is merged there */
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

/* ---- freeing ---- */

static void parts_free(struct parts *ps) {
    if (!ps) return;
    for (int i = 0; i < ps->n; i++) {
        part *pt = &ps->p[i];
        if (pt->child) chat_cancel(pt->child);
        free(pt->question);
        free(pt->node);
        free(pt->domain);
        buf_free(&pt->answer);
        buf_free(&pt->route);
    }
    free(ps->p);
    free(ps);
}

/* The buffers a reused chat keeps (see chat_alloc). */
#define KEPT_BUFFERS(c) {&(c)->request, &(c)->model_name, &(c)->answer}

/* Frees those of c's kept buffers that grew beyond `above` bytes. */
static void free_kept(chat *c, size_t above) {
    buf *kept[] = KEPT_BUFFERS(c);
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        if (kept[i]->cap > above) buf_free(kept[i]);
}

static void free_after_close(uv_handle_t *h) {
    chat *c = h->data;
    buf_free(&c->route.json);
    buf_free(&c->cascade_log);
    cJSON_Delete(c->tree);
    json_doc_free(&c->doc);
    buf_free(&c->continuation);
    free_kept(c, SPARE_REQUEST_CAP);
    cJSON_Delete(c->held_finish);
    buf_free(&c->content);
    free(c->role);
    free(c->finish_reason);
    worker *w = c->w;
    if (w->n_spare_chats < MAX_SPARE_CHATS) {
        c->next_spare = w->spare_chats;
        w->spare_chats = c;
        w->n_spare_chats++;
    } else {
        free_kept(c, 0);
        free(c);
    }
}

void chat_free_spares(worker *w) {
    while (w->spare_chats) {
        chat *c = w->spare_chats;
        w->spare_chats = c->next_spare;
        free_kept(c, 0);
        free(c);
    }
    w->n_spare_chats = 0;
}

/* A chat is one allocation of over 2 KB, above glibc's small sizes: each
 * malloc of it first consolidated the free lists of small blocks that the
 * request's JSON had just filled. A worker reuses finished chats instead,
 * with the buffers of their request's text, model name and answer. */
static chat *chat_alloc(worker *w) {
    chat *c = w->spare_chats;
    if (!c) return xcalloc(1, sizeof *c);
    w->spare_chats = c->next_spare;
    w->n_spare_chats--;
    buf request = c->request, model_name = c->model_name, answer = c->answer;
    memset(c, 0, sizeof *c);
    c->request = request;
    c->model_name = model_name;
    c->answer = answer;
    buf *kept[] = KEPT_BUFFERS(c);
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) buf_clear(kept[i]);
    return c;
}

/* The request's text is `text`: c->request and its tape become it. */
static void set_request(chat *c, const json_doc *text) {
    if (text->text != c->request.data) {
        buf_clear(&c->request);
        buf_append(&c->request, text->text, text->len);
    }
    json_doc_free(&c->doc);
    json_doc_init(&c->doc, c->doc_space, CHAT_REQUEST_TOKENS);
    json_doc_copy(&c->doc, text, c->request.data);
}

/* The request as a tree, for the paths that change or copy it (cascades,
 * continuations, parts); NULL if cJSON cannot read what the tape did. */
static cJSON *request_tree(chat *c) {
    if (!c->tree) c->tree = cJSON_ParseWithLength(c->request.data, c->request.len);
    return c->tree;
}

/* A request's token estimate, from its text. */
static long text_tokens(const buf *text) {
    json_tok space[REQUEST_TOKENS];
    json_doc d;
    json_doc_init(&d, space, REQUEST_TOKENS);
    long n = json_parse(&d, text->data ? text->data : "", text->len) == 0 ? chat_request_estimate_tokens(&d) : 0;
    json_doc_free(&d);
    return n;
}

/* The router's input from the request's text: system prompt and last user
 * message, decoded; NULL when absent. */
typedef struct router_text {
    buf sys, user;
    int has_sys, has_user;
} router_text;

static void router_text_read(const chat *c, router_text *t) {
    memset(t, 0, sizeof *t);
    json_tok space[REQUEST_TOKENS];
    json_doc d;
    json_doc_init(&d, space, REQUEST_TOKENS);
    if (json_parse(&d, c->request.data ? c->request.data : "", c->request.len) == 0)
        chat_request_router_input(&d, &t->sys, &t->has_sys, &t->user, &t->has_user);
    json_doc_free(&d);
}

static const char *router_sys(const router_text *t) { return t->has_sys ? (t->sys.data ? t->sys.data : "") : NULL; }
static const char *router_user(const router_text *t) { return t->has_user ? (t->user.data ? t->user.data : "") : NULL; }

static void router_text_free(router_text *t) {
    buf_free(&t->sys);
    buf_free(&t->user);
}

/* The hedge timer closes asynchronously; the chat goes with it. */
static void chat_free(chat *c) {
    parts_free(c->parts);
    c->parts = NULL;
    uv_close((uv_handle_t *)&c->hedge_timer, free_after_close);
}

/* ---- usage and the report ---- */

static void attempt_usage(const attempt *a, long *in, long *out) {
    if (a->have_usage) {
        *in = a->tokens_in;
        *out = a->tokens_out;
        return;
    }
    *in = text_tokens(a->sent);
    *out = a->content_chunks;
}

/* Usage counts every node's tokens and cost; the baseline is what one
 * monolithic call would have cost: the first prompt and all the output. */
static void fill_summary(chat *c, chat_summary *s) {
    long in = 0, out = 0;
    double cost = c->sum_cost;
    attempt *a = c->winner;
    if (a) {
        attempt_usage(a, &in, &out);
        cost += cost_usd(a->node->price, in, out);
    }
    node *n = a ? a->node : c->n_used ? c->used[c->n_used - 1] : NULL;
    long first_in = c->sum_in || !a ? c->first_in : in;
    memset(s, 0, sizeof *s);
    s->id = c->id;
    s->node = n ? n->name : NULL;
    s->model = n ? n->model : NULL;
    s->domain = c->domain ? c->domain : n ? n->domain : NULL;
    s->tokens_in = c->sum_in + in;
    s->tokens_out = c->sum_out + out;
    s->usage_estimated = c->estimated || (a && !a->have_usage);
    s->cost_usd = cost;
    s->baseline_cost_usd = cost_usd(c->w->gw->baseline, first_in, s->tokens_out);
    s->saved_usd = s->baseline_cost_usd - cost;
    s->latency_ms = (double)(clock_now_ns() - c->start_ns) / 1e6;
    s->nodes = (const node *const *)c->used;
    s->n_nodes = c->n_used;
    s->hedged = c->hedged;
    s->route_json = c->routed ? c->route.json.data : NULL;
    s->guard_score = c->routed ? c->route.guard_score : -1;
    s->degraded = c->degraded[0] ? c->degraded : NULL;
    s->flagged = c->flagged;
    s->cascade_json = c->cascade ? (c->cascade_log.data ? c->cascade_log.data : "") : NULL;
}

/* The report, appended to out. Written by hand: cJSON prints every
 * non-integer number with sprintf and checks it with sscanf, which cost
 * more than the rest of the gateway's work on a request. */
static void put_msoa_report(buf *out, const chat_summary *s) {
    buf o = *out; /* taken over, handed back at the end */
    buf_puts(&o, "{\"node\":");
    json_put_string(&o, s->node);
    buf_puts(&o, ",\"model\":");
    json_put_string(&o, s->model);
    buf_puts(&o, ",\"domain\":");
    json_put_string(&o, s->domain);
    buf_puts(&o, ",\"tokens_in\":");
    json_put_long(&o, s->tokens_in);
    buf_puts(&o, ",\"tokens_out\":");
    json_put_long(&o, s->tokens_out);
    if (s->usage_estimated) buf_puts(&o, ",\"usage_estimated\":true");
    buf_puts(&o, ",\"nodes\":[");
    for (int i = 0; i < s->n_nodes; i++) {
        if (i) buf_putc(&o, ',');
        json_put_string(&o, s->nodes[i]->name);
    }
    buf_puts(&o, "],\"failovers\":");
    json_put_long(&o, s->n_nodes - 1 - s->hedged > 0 ? s->n_nodes - 1 - s->hedged : 0);
    if (s->hedged) buf_puts(&o, ",\"hedged\":true");
    if (s->route_json) {
        buf_puts(&o, ",\"route\":");
        buf_puts(&o, s->route_json);
    }
    if (s->flagged) buf_puts(&o, ",\"guard_flagged\":true");
    if (s->cascade_json) buf_printf(&o, ",\"cascade\":[%s]", s->cascade_json);
    buf_puts(&o, s->degraded ? ",\"degraded\":true" : ",\"degraded\":false");
    if (s->degraded) {
        buf_puts(&o, ",\"degraded_reason\":");
        json_put_string(&o, s->degraded);
    }
    buf_puts(&o, ",\"cost_usd\":");
    json_put_fixed(&o, s->cost_usd, 12);
    buf_puts(&o, ",\"baseline_cost_usd\":");
    json_put_fixed(&o, s->baseline_cost_usd, 12);
    buf_puts(&o, ",\"saved_usd\":");
    json_put_fixed(&o, s->saved_usd, 12);
    buf_puts(&o, ",\"latency_ms\":");
    json_put_fixed(&o, s->latency_ms, 3);
    buf_putc(&o, '}');
    *out = o;
}

/* The report as a raw item, for answers built as trees. */
static cJSON *msoa_object(const chat_summary *s) {
    buf o = BUF_INIT;
    put_msoa_report(&o, s);
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

static const node *answering_node(const chat *c) {
    return c->winner ? c->winner->node : c->used[c->n_used - 1];
}

/* One id, one model name and one creation time for the whole answer. */
static void brand(chat *c, cJSON *obj, const char *object) {
    const node *n = answering_node(c);
    set_first(obj, "model", cJSON_CreateString(n->model));
    set_first(obj, "created", cJSON_CreateNumber((double)c->created));
    set_first(obj, "object", cJSON_CreateString(object));
    set_first(obj, "id", cJSON_CreateString(c->id));
}

static void report_error(chat *c, int status, const char *message, const char *type, const char *code,
                         int retry_after, int mid_stream) {
    if (status >= 500) log_warn("chat %s: failed with %d %s%s: %s", c->id, status, code ? code : "-",
                                mid_stream ? " mid-stream" : "", message);
    buf e = BUF_INIT;
    api_error_json(&e, message, type, code);
    chat_summary s;
    fill_summary(c, &s);
    if (s.node) metrics_upstream_error(s.node, code);
    c->sink->on_error(c->ud, &s, status, e.data, e.len, retry_after, mid_stream);
    buf_free(&e);
}

/* brand, for an answer written as text: its opening and first members. */
static void put_brand(const chat *c, buf *out, const char *object) {
    buf_puts(out, "{\"id\":");
    json_put_string(out, c->id);
    buf_puts(out, ",\"object\":");
    json_put_string(out, object);
    buf_puts(out, ",\"created\":");
    json_put_long(out, c->created);
    buf_puts(out, ",\"model\":");
    json_put_string(out, answering_node(c)->model);
}

static void take_usage(attempt *a, const cJSON *obj) {
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(obj, "usage");
    if (!cJSON_IsObject(usage)) return;
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    if (!cJSON_IsNumber(pt) || !cJSON_IsNumber(ct)) return;
    a->tokens_in = (long)pt->valuedouble;
    a->tokens_out = (long)ct->valuedouble;
    a->have_usage = 1;
}

/* take_usage, from a whole answer read into a tape. */
static void take_answer_usage(attempt *a, const json_doc *answer) {
    int usage = json_get(answer, 0, "usage");
    double in, out;
    if (!json_number(answer, json_get(answer, usage, "prompt_tokens"), &in) ||
        !json_number(answer, json_get(answer, usage, "completion_tokens"), &out))
        return;
    a->tokens_in = (long)in;
    a->tokens_out = (long)out;
    a->have_usage = 1;
}

/* ---- attempts ---- */

static const dispatch_callbacks attempt_events;

static void unlink_attempt(chat *c, attempt *a) {
    for (int i = 0; i < 2; i++)
        if (c->live[i] == a) c->live[i] = NULL;
}

/* An attempt's health goes into its node's breaker. verdict: 1 success,
 * 0 failure, -1 neither (cancelled: a hedge that lost, a client gone). */
static void judge(attempt *a, int verdict) {
    uint64_t now = clock_now_ms_u64();
    if (verdict > 0 && a->judged) return;
    if (verdict > 0) breaker_success(&a->node->breaker, now);
    else if (verdict == 0) breaker_failure(&a->node->breaker, now);
    else breaker_release(&a->node->breaker, now);
}

/* An attempt that did not answer is over: its node's share goes into the
 * sums, since usage counts every node's tokens. */
static void end_attempt(chat *c, attempt *a, int verdict) {
    judge(a, verdict);
    if (a->first_ns) node_stream_end(a->node);
    unlink_attempt(c, a);
    long in, out;
    attempt_usage(a, &in, &out);
    double cost = cost_usd(a->node->price, in, out);
    metrics_tokens(a->node->name, (uint64_t)in, (uint64_t)out);
    metrics_cost(a->node->name, cost, 0, 0);
    if (!c->sum_in) c->first_in = in;
    c->sum_in += in;
    c->sum_out += out;
    c->sum_cost += cost;
    c->estimated |= !a->have_usage;
    free(a);
}

static void cancel_attempt(chat *c, attempt *a) {
    if (a->d) dispatch_cancel(a->d);
    a->d = NULL;
    end_attempt(c, a, -1);
}

static uint64_t remaining_ms(const chat *c) {
    uint64_t now = clock_now_ns();
    return now >= c->deadline_ns ? 0 : (c->deadline_ns - now) / 1000000u;
}

/* Whether n serves what the request asks for: the named model (a node's
 * model or its name), or anything for `auto`. */
static int serves(const chat *c, const node *n) {
    return !c->model || !strcmp(n->model, c->model) || !strcmp(n->name, c->model);
}

static int tries_on(const chat *c, const node *n) {
    int k = 0;
    for (int i = 0; i < c->n_used; i++) k += c->used[i] == n;
    return k;
}

/* The next node of the plan whose breaker admits a request now. */
static node *next_node(chat *c) {
    uint64_t now = clock_now_ms_u64();
    while (c->next_in_plan < c->n_plan) {
        node *n = c->plan[c->next_in_plan++];
        /* a cut stream is not continued on a node that went silent since the plan was made */
        if (tries_on(c, n) >= MAX_TRIES_PER_NODE || (c->started && node_silent(n, now))) continue;
        if (breaker_allow(&n->breaker, now)) return n;
    }
    return NULL;
}

/* Sends the request (or its continuation) to n. */
static int start_attempt(chat *c, node *n) {
    const msoa_config *cfg = &c->w->gw->cfg;
    uint64_t left = remaining_ms(c);
    unsigned total = cfg->upstream_timeout_ms && cfg->upstream_timeout_ms < left ? cfg->upstream_timeout_ms : (unsigned)left;
    dispatch_timeouts t = {cfg->upstream_connect_timeout_ms, total ? total : 1, cfg->upstream_stall_ms};
    attempt *a = xcalloc(1, sizeof *a);
    a->c = c;
    a->node = n;
    a->start_ns = clock_now_ns();
    const buf *req = c->continuation.len ? &c->continuation : &c->request;
    a->sent = req;
    json_tok space[REQUEST_TOKENS];
    json_doc cont;
    json_doc_init(&cont, space, REQUEST_TOKENS);
    if (req == &c->continuation && json_parse(&cont, req->data, req->len) < 0) cont.n = 0;
    /* a cascade's answers are checked whole; only the last step streams */
    a->stream = c->stream && !(c->cascade && c->next_in_plan < c->n_plan);
    if (c->n_used < MAX_ATTEMPTS) c->used[c->n_used++] = n;
    c->live[c->live[0] ? 1 : 0] = a;
    a->d = dispatch_start(c->w->client, &c->w->loop, n, req == &c->continuation ? &cont : &c->doc, a->stream, &t,
                          &attempt_events, a);
    json_doc_free(&cont);
    if (!a->d) {
        unlink_attempt(c, a);
        breaker_release(&n->breaker, clock_now_ms_u64());
        free(a);
        return -1;
    }
    return 0;
}

/* ---- hedging ---- */

static void on_hedge_timer(uv_timer_t *t) {
    chat *c = t->data;
    if (c->winner || c->live[1] || !c->live[0]) return;
    if (c->n_used >= c->w->gw->cfg.max_attempts || !budget_try_withdraw(&c->w->gw->retries)) return;
    node *n = next_node(c);
    if (!n) return;
    log_debug("chat %s: hedging on node %s", c->id, n->name);
    c->hedged = 1;
    start_attempt(c, n);
}

/* Hedge when the first node is slower to its first token than its p95. */
static void arm_hedge(chat *c) {
    if (!c->w->gw->cfg.hedging || c->cascade || c->next_in_plan >= c->n_plan) return;
    uint64_t after_us = latency_hedge_after_us(&c->live[0]->node->latency, HEDGE_MIN_SAMPLES, 0);
    if (!after_us) return;
    uv_timer_start(&c->hedge_timer, on_hedge_timer, (after_us + 999) / 1000, 0);
}

/* The first attempt to show an answer wins; the other is cancelled. */
static int claim(chat *c, attempt *a) {
    if (c->winner) return c->winner == a;
    c->winner = a;
    uv_timer_stop(&c->hedge_timer);
    for (int i = 0; i < 2; i++)
        if (c->live[i] && c->live[i] != a) cancel_attempt(c, c->live[i]);
    return 1;
}

/* ---- streams ---- */

static void emit_chunk(chat *c, cJSON *chunk) {
    buf text = BUF_INIT;
    json_write(&text, chunk);
    c->sink->on_chunk(c->ud, text.data, text.len);
    buf_free(&text);
    if (!c->paused && c->sink->backlog(c->ud) > BACKLOG_HIGH && c->winner && c->winner->d) {
        c->paused = 1;
        dispatch_pause(c->winner->d, 1);
    }
}

static void remember_delta(chat *c, attempt *a, const cJSON *choice) {
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(delta, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
    const cJSON *finish = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    if (cJSON_IsString(role) && !c->role) c->role = xstrdup(role->valuestring);
    if (cJSON_IsString(content) && *content->valuestring) {
        buf_puts(&c->content, content->valuestring);
        a->content_chunks++;
    }
    if (cJSON_IsString(finish)) {
        free(c->finish_reason);
        c->finish_reason = xstrdup(finish->valuestring);
    }
}

static void first_chunk(chat *c, attempt *a) {
    uint64_t now = clock_now_ns();
    a->first_ns = now;
    /* A node that answers is healthy: a half-open circuit closes now, not
     * when a long stream ends, so others need not wait for it. */
    judge(a, 1);
    a->judged = 1;
    latency_record_ttft(&a->node->latency, now / 1000000u, (now - a->start_ns) / 1000);
    node_stream_start(a->node, now / 1000000u);
    a->last_ns = now;
    if (c->started) return;
    c->started = 1;
    metrics_first_chunk((double)(now - c->start_ns) / 1e9);
    if (c->sink->on_stream_start) {
        chat_summary s;
        fill_summary(c, &s);
        c->sink->on_stream_start(c->ud, &s);
    }
}

static void on_attempt_chunk(void *ud, cJSON *chunk) {
    attempt *a = ud;
    chat *c = a->c;
    if (!claim(c, a)) {
        cJSON_Delete(chunk);
        return;
    }
    if (!a->first_ns) {
        first_chunk(c, a);
    } else {
        uint64_t now = clock_now_ns();
        node_stream_chunk(a->node, now / 1000000u, (now - a->last_ns) / 1000);
        a->last_ns = now;
    }
    take_usage(a, chunk);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *choice = cJSON_GetArrayItem(choices, 0);
    if (!choice) { /* the usage chunk: sent at the end, if asked for */
        cJSON_Delete(chunk);
        return;
    }
    /* A node continuing a cut stream starts with its own role delta: the
     * client has had one already. */
    if (c->role) cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItemCaseSensitive(choice, "delta"), "role");
    remember_delta(c, a, choice);
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

static void put_usage(buf *out, const chat_summary *s) {
    buf_puts(out, "{\"prompt_tokens\":");
    json_put_long(out, s->tokens_in);
    buf_puts(out, ",\"completion_tokens\":");
    json_put_long(out, s->tokens_out);
    buf_puts(out, ",\"total_tokens\":");
    json_put_long(out, s->tokens_in + s->tokens_out);
    buf_putc(out, '}');
}

static void add_usage(cJSON *obj, const chat_summary *s) {
    buf u = BUF_INIT;
    put_usage(&u, s);
    cJSON_DeleteItemFromObjectCaseSensitive(obj, "usage");
    cJSON_AddItemToObject(obj, "usage", cJSON_CreateRaw(u.data));
    buf_free(&u);
}

/* A node's answer passed on as it came, but for what msoa says itself: its
 * id, object, creation time and model first, usage counting every node's
 * tokens, and the msoa report last. */
static void relay_answer(const chat *c, const json_doc *answer, const chat_summary *s, buf *out) {
    static const char *const ours[] = {"id", "object", "created", "model", "usage", "msoa"};
    buf_reserve(out, answer->len + 512);
    put_brand(c, out, "chat.completion");
    for (int k = json_member_next(answer, 0, -1); k >= 0; k = json_member_next(answer, 0, k)) {
        int mine = 0;
        for (size_t i = 0; i < sizeof ours / sizeof *ours && !mine; i++) mine = json_str_eq(answer, k, ours[i]);
        if (mine) continue;
        buf_putc(out, ',');
        buf_append(out, json_raw(answer, k), answer->tok[k].len);
        buf_putc(out, ':');
        buf_append(out, json_raw(answer, k + 1), answer->tok[k + 1].len);
    }
    buf_puts(out, ",\"usage\":");
    put_usage(out, s);
    buf_puts(out, ",\"msoa\":");
    put_msoa_report(out, s);
    buf_putc(out, '}');
}

/* The ledger step: today the metrics; receipts come with the ledger. The
 * winner's tokens are counted here, the other nodes' as their attempts
 * ended. */
static void account(chat *c, const chat_summary *s) {
    long in, out;
    attempt_usage(c->winner, &in, &out);
    metrics_tokens(s->node, (uint64_t)in, (uint64_t)out);
    metrics_cost(s->node, s->cost_usd - c->sum_cost, s->baseline_cost_usd, s->saved_usd);
    metrics_upstream(s->node, s->latency_ms / 1e3);
    log_debug("chat %s node=%s in=%ld out=%ld cost=%.8f latency=%.3fms", s->id, s->node, s->tokens_in,
              s->tokens_out, s->cost_usd, s->latency_ms);
}

/* The answer, complete in c->answer. */
static void finish(chat *c, const chat_summary *s) {
    attempt *a = c->winner;
    uint64_t now = clock_now_ns();
    latency_record_done(&a->node->latency, now / 1000000u, a->first_ns ? (a->first_ns - a->start_ns) / 1000 : 0,
                        (now - a->start_ns) / 1000, (uint64_t)(s->tokens_out - c->sum_out));
    account(c, s);
    c->sink->on_finish(c->ud, s, c->answer.data, c->answer.len);
    judge(a, 1);
    if (a->first_ns) node_stream_end(a->node);
    unlink_attempt(c, a);
    free(a);
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
    cJSON_AddItemToObject(completion, "msoa", msoa_object(&s));
    json_write(&c->answer, completion);
    cJSON_Delete(completion);
    finish(c, &s);
}

/* ---- cascades ---- */

static const char *answer_text(const cJSON *response) {
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(response, "choices"), 0);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(choice, "message"), "content");
    return cJSON_IsString(content) ? content->valuestring : "";
}

/* The checks an answer must pass to be accepted without escalation: the
 * arithmetic recomputed, fenced code syntax-checked, JSON against
 * response_format, and the mean token log-probability. The first failure
 * wins; checks that do not apply say so. */
static validate_result check_answer(chat *c, const cJSON *response, const char **check) {
    const char *answer = answer_text(response);
    router_text rt;
    router_text_read(c, &rt);
    const char *user = router_user(&rt);
    validate_result results[4];
    const char *names[4];
    int n = 0;
    results[n] = validate_math(user ? user : "", answer);
    names[n++] = "math";
    router_text_free(&rt);
    results[n] = validate_code(answer);
    names[n++] = "code";
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(request_tree(c), "response_format");
    if (format) {
        results[n] = validate_json(answer, strlen(answer), format);
        names[n++] = "json";
    }
    double floor_lp = c->w->gw->cfg.cascade_logprob_floor;
    if (floor_lp > 0) {
        results[n] = validate_logprob(response, -floor_lp);
        names[n++] = "logprob";
    }
    int pass = -1;
    for (int i = 0; i < n; i++) {
        if (results[i].verdict == VALIDATE_FAIL) {
            *check = names[i];
            return results[i];
        }
        if (results[i].verdict == VALIDATE_PASS && pass < 0) pass = i;
    }
    *check = pass < 0 ? "none" : names[pass];
    return results[pass < 0 ? 0 : pass];
}

static void log_step(chat *c, const node *n, const char *check, const char *verdict, const char *message) {
    buf *l = &c->cascade_log;
    if (l->len) buf_putc(l, ',');
    buf_puts(l, "{\"node\":");
    json_put_string(l, n->name);
    buf_puts(l, ",\"check\":");
    json_put_string(l, check);
    buf_puts(l, ",\"verdict\":");
    json_put_string(l, verdict);
    if (message && *message) {
        buf_puts(l, ",\"message\":");
        json_put_string(l, message);
    }
    buf_putc(l, '}');
}

/* A cheap step answered: 1 when it was escalated to the next node. */
static int cascade_step(chat *c, attempt *a, const cJSON *response) {
    const char *check = "none";
    validate_result r = check_answer(c, response, &check);
    if (r.verdict != VALIDATE_FAIL) {
        log_step(c, a->node, check, r.verdict == VALIDATE_PASS ? "accepted" : "accepted (no check applies)", r.message);
        return 0;
    }
    node *next = next_node(c);
    if (!next) {
        log_step(c, a->node, check, "accepted (no node to escalate to)", r.message);
        return 0;
    }
    log_step(c, a->node, check, "escalated", r.message);
    log_info("chat %s: cascade: %s's answer failed the %s check (%s); escalating to %s", c->id, a->node->name,
             check, r.message, next->name);
    c->winner = NULL;
    end_attempt(c, a, 1);
    if (start_attempt(c, next) < 0) {
        report_error(c, 502, "the cascade could not escalate to the next node", "upstream_error", "cascade_failed",
                     0, 0);
        chat_free(c);
    }
    return 1;
}

/* A client that asked for a stream gets the checked answer as one. */
static void stream_whole(chat *c, attempt *a, cJSON *response) {
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(response, "choices"), 0);
    const cJSON *finish_reason = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    cJSON *chunk = cJSON_CreateObject();
    cJSON *choices = cJSON_AddArrayToObject(chunk, "choices");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *delta = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddStringToObject(delta, "role", "assistant");
    cJSON_AddStringToObject(delta, "content", answer_text(response));
    cJSON_AddNullToObject(ch, "finish_reason");
    cJSON_AddItemToArray(choices, ch);
    on_attempt_chunk(a, chunk);
    cJSON *end = cJSON_CreateObject();
    choices = cJSON_AddArrayToObject(end, "choices");
    ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddStringToObject(ch, "finish_reason", cJSON_IsString(finish_reason) ? finish_reason->valuestring : "stop");
    cJSON_AddItemToArray(choices, ch);
    on_attempt_chunk(a, end);
    cJSON_Delete(response);
    finish_stream(c);
}

static void on_attempt_done(void *ud, const json_doc *answer) {
    attempt *a = ud;
    chat *c = a->c;
    a->d = NULL;
    if (!claim(c, a)) return; /* cannot happen: a loser is cancelled */
    if (answer) take_answer_usage(a, answer);
    if (c->cascade && !a->stream) {
        /* the checks read a tree; a cascade's answer is worth building one */
        cJSON *response = cJSON_ParseWithLength(answer->text, answer->len);
        if (response && c->next_in_plan < c->n_plan && cascade_step(c, a, response)) {
            cJSON_Delete(response);
            return;
        }
        if (c->stream) {
            stream_whole(c, a, response);
            return;
        }
        cJSON_Delete(response);
    }
    if (c->stream) {
        finish_stream(c);
        return;
    }
    chat_summary s;
    fill_summary(c, &s);
    relay_answer(c, answer, &s, &c->answer);
    finish(c, &s);
}

/* ---- failures ---- */

/* Failures another node might not have: it is down, broken, overloaded or
 * slow. A 4xx other than 429 says the request itself is wrong. */
static int worth_another_node(const dispatch_error *e) { return e->status >= 500 || e->status == 429; }

/* What the next node is sent when the client already has part of the
 * answer: the conversation plus that part as the assistant's message, which
 * OpenAI-compatible servers continue (vLLM needs continue_final_message). */
static void build_continuation(chat *c) {
    buf_clear(&c->continuation);
    const cJSON *request = request_tree(c);
    if (!request) return; /* the request itself goes again */
    cJSON *cont = cJSON_Duplicate(request, 1);
    cJSON *messages = cJSON_GetObjectItemCaseSensitive(cont, "messages");
    cJSON *partial = cJSON_CreateObject();
    cJSON_AddStringToObject(partial, "role", "assistant");
    cJSON_AddStringToObject(partial, "content", c->content.data ? c->content.data : "");
    cJSON_AddItemToArray(messages, partial);
    cJSON_AddTrueToObject(cont, "continue_final_message");
    cJSON_AddFalseToObject(cont, "add_generation_prompt");
    json_write(&c->continuation, cont);
    cJSON_Delete(cont);
}

/* A cut stream's text is owed: when the plan is used up, any other node
 * serving the same model (or, for `auto`, in the same pool) that answers
 * probes takes it, whatever its circuit says; the least busy first. */
static node *rescue_node(chat *c, const node *failed) {
    node_registry *reg = &c->w->gw->nodes;
    node *best = NULL;
    for (int i = 0; i < reg->n; i++) {
        node *n = &reg->nodes[i];
        int same = !strcmp(n->model, failed->model) || (c->routed && !strcmp(n->domain, failed->domain));
        if (n == failed || !same || atomic_load(&n->reachable) == 0 || tries_on(c, n) >= MAX_TRIES_PER_NODE ||
            node_silent(n, clock_now_ms_u64()))
            continue;
        if (!best || atomic_load(&n->inflight) < atomic_load(&best->inflight)) best = n;
    }
    return best;
}

static void fill_plan(chat *c);

/* The node to go on with now, its circuit's admission taken, or NULL: the
 * plan's next; while waiting, the plan made again from the nodes' health
 * now; for a cut stream, else any node of its model that answers probes. */
static node *pick_node(chat *c) {
    node *n = next_node(c);
    if (!n && c->wait_start_ns) {
        fill_plan(c);
        n = next_node(c);
    }
    if (!n && c->started && c->failed && (n = rescue_node(c, c->failed)))
        breaker_allow(&n->breaker, clock_now_ms_u64());
    return n;
}

/* Sends the request, or a cut stream's continuation, to n. */
static int go_on(chat *c, node *n) {
    c->winner = NULL; /* the next node must win again */
    c->paused = 0;
    c->wait_start_ns = 0;
    if (c->started) build_continuation(c);
    if (start_attempt(c, n) < 0) return -1;
    if (c->n_used == 1) arm_hedge(c);
    return 0;
}

/* Whether a node the request may still try could take it soon. For a
 * request not answered yet, only a node that is up, as far as probes and
 * traffic tell, whose circuit will let a request through again (a probe
 * that reaches it half-opens it): when every node is down, 503 at once is
 * the better answer. A cut stream's text is owed: any node of its model
 * may come back (a restarted process, seen by the next probe). */
static int node_expected(const chat *c) {
    const node_registry *reg = &c->w->gw->nodes;
    for (int i = 0; i < reg->n; i++) {
        const node *n = &reg->nodes[i];
        if (serves(c, n) && tries_on(c, n) < MAX_TRIES_PER_NODE && (c->started || atomic_load(&n->reachable) != 0))
            return 1;
    }
    return 0;
}

static void on_wait_timer(uv_timer_t *t);

/* The request cannot go on now: no node takes it, or a retry finds the
 * retry budget empty. While a node that could serve it may come, it waits,
 * bounded by its deadline and --upstream-wait-ms, instead of failing:
 * polling with jittered backoff (10 ms doubling to 200 ms), as a circuit
 * reopens and the budget refills without telling anyone. A retry that
 * waits for the budget keeps the extra load within the budget's rate.
 * 0 when it waits. */
static int wait_for_node(chat *c) {
    uint64_t now = clock_now_ns();
    if (!c->wait_start_ns) {
        c->wait_start_ns = now;
        c->waits = 0;
    }
    uint64_t waited_ms = (now - c->wait_start_ns) / 1000000u, left = remaining_ms(c);
    unsigned limit = c->w->gw->cfg.upstream_wait_ms;
    const char *what = c->owes_token ? "the retry budget" : "a node";
    if (waited_ms >= limit || left == 0 || !node_expected(c)) {
        if (c->waits) log_info("chat %s: waited %llu ms for %s, in vain", c->id, (unsigned long long)waited_ms, what);
        return -1;
    }
    uint32_t rnd = (uint32_t)((now >> 3) * 2654435761u);
    uint64_t delay = 10 + backoff_ms(c->waits++, 10, 200, rnd);
    if (delay > left) delay = left;
    if (delay > limit - waited_ms) delay = limit - waited_ms;
    if (c->waits == 1) log_info("chat %s: waiting for %s", c->id, what);
    uv_timer_start(&c->hedge_timer, on_wait_timer, delay, 0);
    return 0;
}

/* Nothing more can be tried: the last node's error, the deadline, or 503
 * naming what is unavailable. */
static void give_up(chat *c) {
    if (remaining_ms(c) == 0 && (!c->last_error.status || c->last_error.status == 504))
        report_error(c, 504, "the request's deadline passed before a node answered", "upstream_error",
                     "deadline_exceeded", 0, c->started);
    else if (c->last_error.status)
        report_error(c, c->last_error.status, c->last_error.message, c->last_error.type, c->last_error.code,
                     c->last_error.retry_after_s, c->last_error.mid_stream || c->started);
    else {
        char msg[400];
        snprintf(msg, sizeof msg, "no healthy node can serve this request: %s",
                 c->unavailable[0] ? c->unavailable : "every circuit is open");
        report_error(c, 503, msg, "service_unavailable", "no_healthy_node", 5, c->started);
    }
    chat_free(c);
}

/* Goes on now if it may — a retry first takes a token of the retry budget
 * (once), then any try needs a node — else waits. 0 when it went on or
 * waits. */
static int proceed(chat *c) {
    if (c->owes_token) budget_refill(&c->w->gw->retries, clock_now_ms_u64());
    if (c->owes_token && budget_try_withdraw(&c->w->gw->retries)) c->owes_token = 0;
    node *n = c->owes_token ? NULL : pick_node(c);
    if (n) {
        if (c->failed)
            log_info("chat %s: failing over from node %s to %s%s", c->id, c->failed->name, n->name,
                     c->started ? " mid-stream" : "");
        if (go_on(c, n) == 0) return 0;
    }
    return wait_for_node(c);
}

/* A backoff before a retry ended, or a wait: go on, wait more or give up. */
static void on_wait_timer(uv_timer_t *t) {
    chat *c = t->data;
    if (proceed(c) != 0) give_up(c);
}

/* Goes on after a failed attempt; 0 when another node was started, or
 * will be. Before any chunk, the next try waits a jittered moment (full
 * jitter, 5 ms doubling to 100 ms), so a burst of failures is not echoed
 * as a burst of retries, and it draws on the retry budget; a cut stream
 * goes on at once, as its client waits mid-answer, and adds no load (its
 * text is owed anyway). */
static int fail_over(chat *c, node *from) {
    const msoa_config *cfg = &c->w->gw->cfg;
    int attempts = c->started ? MAX_ATTEMPTS : cfg->max_attempts;
    const char *why = c->n_used >= attempts ? "attempts used up" : remaining_ms(c) == 0 ? "deadline passed" : NULL;
    if (why) {
        log_info("chat %s: no failover from node %s: %s", c->id, from->name, why);
        return -1;
    }
    c->failed = from;
    if (c->started) return proceed(c);
    c->owes_token = 1;
    uint32_t rnd = (uint32_t)((clock_now_ns() >> 3) * 2654435761u);
    uv_timer_start(&c->hedge_timer, on_wait_timer, backoff_ms((unsigned)c->n_used - 1, 5, 100, rnd), 0);
    return 0;
}

static void on_attempt_error(void *ud, const dispatch_error *e) {
    attempt *a = ud;
    chat *c = a->c;
    a->d = NULL;
    int worth = worth_another_node(e);
    log_warn("chat %s: %s", c->id, e->message);
    node *failed = a->node;
    if (c->winner == a) c->winner = NULL;
    end_attempt(c, a, worth ? 0 : 1);
    /* while hedging, the other attempt may still answer */
    if (c->live[0] || c->live[1]) return;
    /* a cut stream's error is what cut it, not a later node's refusal to go on */
    if (e->mid_stream || !c->last_error.mid_stream) c->last_error = *e;
    if (worth && fail_over(c, failed) == 0) return;
    give_up(c);
}

static const dispatch_callbacks attempt_events = {on_attempt_chunk, on_attempt_done, on_attempt_error};

/* ---- planning ---- */

/* Checks what the request asks for and, for `auto`, runs the guard and the
 * router: sets c->model to `model` (which lives in c->model_name;
 * NULL for `auto`) and c->domain. Returns 0, or an
 * HTTP status with code and message when nothing could ever serve it. */
static int route(chat *c, const char *model, const char **code, char *msg, size_t cap) {
    gateway *gw = c->w->gw;
    node_registry *reg = &gw->nodes;
    int is_auto = !model || !*model || !strcmp(model, "auto");
    if (reg->n == 0) {
        *code = "no_nodes";
        snprintf(msg, cap, "no nodes are configured; start msoa with --node NAME=URL");
        return 503;
    }
    if (!is_auto) {
        if (!node_registry_has_model(reg, model)) {
            *code = "model_not_found";
            snprintf(msg, cap, "The model '%.200s' does not exist; GET /v1/models lists the models served", model);
            return 404;
        }
        c->model = model;
        return 0;
    }
    router_text rt;
    router_text_read(c, &rt);
    c->domain = PLAN_GENERAL;
    int classified = gateway_classify(gw, router_sys(&rt), rt.sys.len, router_user(&rt), rt.user.len, &c->route);
    router_text_free(&rt);
    if (classified == 0) {
        c->routed = 1;
        if (c->route.unsafe && gw->guard_action == GUARD_REFUSE) {
            *code = "content_policy";
            snprintf(msg, cap, "the request was refused by msoa's guard (unsafe score %.2f)", c->route.guard_score);
            return 400;
        }
        c->flagged = c->route.unsafe && gw->guard_action == GUARD_FLAG;
        if (c->route.unsafe && gw->guard_action == GUARD_ROUTE) c->domain = "safety";
        else if (c->route.confidence >= gw->cfg.router_min_confidence) c->domain = c->route.domain;
    }
    return 0;
}

/* A request waiting for a node tries only nodes seen reachable: it waits
 * for a probe to see the others back rather than spend attempts on
 * refused connections. */
static void keep_reachable(chat *c) {
    int k = 0;
    for (int i = 0; i < c->n_plan; i++)
        if (atomic_load(&c->plan[i]->reachable) != 0) c->plan[k++] = c->plan[i];
    c->n_plan = k;
}

/* Fills c->plan from the nodes' health now: for a named model, the nodes
 * serving it; for `auto`, the domain's cascade or the pools in the
 * planner's order. Run again when a request waited for a node. When the
 * plan is empty, c->unavailable says why. */
static void fill_plan(chat *c) {
    gateway *gw = c->w->gw;
    node_registry *reg = &gw->nodes;
    c->n_plan = c->next_in_plan = 0;
    c->degraded[0] = 0;
    c->unavailable[0] = 0;
    const cascade_policy *cp = c->model ? NULL : gateway_cascade(gw, c->domain);
    if (cp) {
        uint64_t now_ms = clock_now_ms_u64();
        for (int i = 0; i < cp->n; i++)
            if (atomic_load(&cp->nodes[i]->reachable) != 0 && breaker_state(&cp->nodes[i]->breaker, now_ms) != BREAKER_OPEN)
                c->plan[c->n_plan++] = cp->nodes[i];
        c->cascade = c->n_plan > 0;
        if (c->cascade) {
            cJSON *request = request_tree(c);
            if (c->w->gw->cfg.cascade_logprob_floor > 0 && request) {
                cJSON_DeleteItemFromObjectCaseSensitive(request, "logprobs");
                cJSON_AddTrueToObject(request, "logprobs");
                buf text = BUF_INIT;
                json_write(&text, request);
                json_doc doc;
                json_doc_init(&doc, NULL, 0);
                if (json_parse(&doc, text.data, text.len) == 0) {
                    buf_free(&c->request);
                    c->request = text;
                    set_request(c, &doc);
                } else {
                    buf_free(&text);
                }
                json_doc_free(&doc);
            }
            return;
        }
    }
    plan_candidate cands[MAX_PLAN];
    node *of[MAX_PLAN];
    int n = 0;
    uint64_t now = clock_now_ms_u64();
    for (int i = 0; i < reg->n && n < MAX_PLAN; i++) {
        node *nd = &reg->nodes[i];
        if (!serves(c, nd)) continue;
        plan_candidate *pc = &cands[n];
        memset(pc, 0, sizeof *pc);
        pc->name = nd->name;
        /* a named model is one pool whatever the nodes' domains */
        pc->domain = c->model ? PLAN_GENERAL : nd->domain;
        pc->price_in = nd->price.in;
        pc->price_out = nd->price.out;
        pc->inflight = atomic_load(&nd->inflight);
        pc->breaker_allows = breaker_state(&nd->breaker, now) != BREAKER_OPEN;
        /* a silent node (a stopped process?) gets no new work while others can take it */
        pc->reachable = atomic_load(&nd->reachable) != 0 && !node_silent(nd, now);
        of[n++] = nd;
    }
    plan_request pr;
    memset(&pr, 0, sizeof pr);
    pr.domain = c->domain;
    pr.ms_per_usd = PLAN_MS_PER_USD;
    pr.terse = 1;
    /* what orders several nodes; one needs no ordering (a quantile and the
     * request's tokens cost a few percent of a proxied request) */
    for (int i = 0; i < n && n > 1; i++) {
        cands[i].speed_tps = latency_speed(&of[i]->latency);
        cands[i].ttft_p95_ms = (double)latency_ttft_quantile(&of[i]->latency, 0.95) / 1e3;
    }
    if (n > 1) pr.tokens_in = (double)text_tokens(&c->request);
    plan_entry entries[MAX_PLAN];
    plan_summary sum;
    plan_nodes(cands, n, &pr, entries, &sum);
    for (int i = 0; i < sum.n; i++) c->plan[c->n_plan++] = of[entries[i].index];
    /* Nothing healthy: nodes only thought unreachable (a probe may be stale)
     * are still tried before giving up; open circuits are not. */
    for (int i = 0; i < n && !sum.n; i++)
        if (cands[i].breaker_allows && !cands[i].reachable) c->plan[c->n_plan++] = of[i];
    if (c->n_plan && !sum.n) snprintf(c->degraded, sizeof c->degraded, "%.250s; trying nodes not seen reachable", sum.reason);
    if (!c->model && sum.degraded) snprintf(c->degraded, sizeof c->degraded, "%s", sum.reason);
    if (!c->n_plan) snprintf(c->unavailable, sizeof c->unavailable, "%s", sum.reason[0] ? sum.reason : "all are down");
    if (c->wait_start_ns) keep_reachable(c);
}

/* ---- multi-part requests ---- */

/* The merged answer: each part's answer under its number; usage, cost and
 * savings summed; every part's route and node in msoa.parts. */
static void merge_parts(chat *c) {
    struct parts *ps = c->parts;
    int ok = 0;
    long in = 0, out = 0;
    double cost = 0, baseline = 0;
    buf content = BUF_INIT, report = BUF_INIT;
    buf_puts(&report, "{\"node\":\"multiple\",\"domain\":\"multiple\",\"parts\":[");
    for (int i = 0; i < ps->n; i++) {
        part *pt = &ps->p[i];
        ok += pt->ok;
        in += pt->tokens_in;
        out += pt->tokens_out;
        cost += pt->cost;
        baseline += pt->baseline;
        buf_printf(&content, "%s%d. %s", i ? "\n\n" : "", i + 1, pt->ok ? pt->answer.data : "(this part failed)");
        if (i) buf_putc(&report, ',');
        buf_puts(&report, "{\"part\":");
        json_put_string(&report, pt->question);
        buf_puts(&report, ",\"ok\":");
        buf_puts(&report, pt->ok ? "true" : "false");
        buf_puts(&report, ",\"node\":");
        json_put_string(&report, pt->node);
        buf_puts(&report, ",\"domain\":");
        json_put_string(&report, pt->domain);
        buf_printf(&report, ",\"tokens_in\":%ld,\"tokens_out\":%ld,\"cost_usd\":", pt->tokens_in, pt->tokens_out);
        json_put_fixed(&report, pt->cost, 12);
        if (pt->route.len) {
            buf_puts(&report, ",\"route\":");
            buf_puts(&report, pt->route.data);
        }
        if (!pt->ok) {
            buf_puts(&report, ",\"error\":");
            json_put_string(&report, pt->answer.data ? pt->answer.data : "");
        }
        buf_putc(&report, '}');
    }
    buf_printf(&report, "],\"tokens_in\":%ld,\"tokens_out\":%ld,\"cost_usd\":", in, out);
    json_put_fixed(&report, cost, 12);
    buf_puts(&report, ",\"baseline_cost_usd\":");
    json_put_fixed(&report, baseline, 12);
    buf_puts(&report, ",\"saved_usd\":");
    json_put_fixed(&report, baseline - cost, 12);
    buf_puts(&report, ",\"latency_ms\":");
    json_put_fixed(&report, (double)(clock_now_ns() - c->start_ns) / 1e6, 3);
    buf_putc(&report, '}');

    chat_summary s;
    memset(&s, 0, sizeof s);
    s.id = c->id;
    s.node = "multiple";
    s.model = "multiple";
    s.domain = "multiple";
    s.tokens_in = in;
    s.tokens_out = out;
    s.cost_usd = cost;
    s.baseline_cost_usd = baseline;
    s.saved_usd = baseline - cost;
    s.latency_ms = (double)(clock_now_ns() - c->start_ns) / 1e6;
    s.guard_score = -1;
    if (!ok) {
        report_error(c, 502, ps->p[0].answer.data ? ps->p[0].answer.data : "every part failed", "upstream_error",
                     "all_parts_failed", 0, 0);
    } else {
        cJSON *completion = cJSON_CreateObject();
        cJSON_AddStringToObject(completion, "id", c->id);
        cJSON_AddStringToObject(completion, "object", c->stream ? "chat.completion.chunk" : "chat.completion");
        cJSON_AddNumberToObject(completion, "created", (double)c->created);
        cJSON_AddStringToObject(completion, "model", "multiple");
        cJSON *choices = cJSON_AddArrayToObject(completion, "choices");
        cJSON *choice = cJSON_CreateObject();
        cJSON_AddNumberToObject(choice, "index", 0);
        cJSON *msg = cJSON_AddObjectToObject(choice, c->stream ? "delta" : "message");
        cJSON_AddStringToObject(msg, "role", "assistant");
        cJSON_AddStringToObject(msg, "content", content.data ? content.data : "");
        cJSON_AddStringToObject(choice, "finish_reason", "stop");
        cJSON_AddItemToArray(choices, choice);
        add_usage(completion, &s);
        cJSON_AddItemToObject(completion, "msoa", cJSON_CreateRaw(report.data));
        buf text = BUF_INIT;
        json_write(&text, completion);
        if (c->stream) { /* the merged answer as one chunk */
            if (c->sink->on_stream_start) c->sink->on_stream_start(c->ud, &s);
            c->sink->on_chunk(c->ud, text.data, text.len);
        }
        c->sink->on_finish(c->ud, &s, text.data, text.len);
        buf_free(&text);
        cJSON_Delete(completion);
    }
    buf_free(&content);
    buf_free(&report);
    chat_free(c);
}

static void part_done(part *pt) {
    chat *c = pt->parent;
    pt->child = NULL;
    if (++c->parts->done == c->parts->n && !c->parts->starting) merge_parts(c);
}

static void keep(char **dst, const char *s) {
    free(*dst);
    *dst = s ? xstrdup(s) : NULL;
}

static void part_finish(void *ud, const chat_summary *s, const char *json, size_t len) {
    part *pt = ud;
    cJSON *j = cJSON_ParseWithLength(json, len);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(choice, "message"), "content");
    buf_puts(&pt->answer, cJSON_IsString(content) ? content->valuestring : "");
    cJSON_Delete(j);
    pt->ok = 1;
    keep(&pt->node, s->node);
    keep(&pt->domain, s->domain);
    pt->tokens_in = s->tokens_in;
    pt->tokens_out = s->tokens_out;
    pt->cost = s->cost_usd;
    pt->baseline = s->baseline_cost_usd;
    if (s->route_json) buf_puts(&pt->route, s->route_json);
    part_done(pt);
}

static void part_error(void *ud, const chat_summary *s, int status, const char *error_json, size_t len,
                       int retry_after_s, int mid_stream) {
    (void)status;
    (void)retry_after_s;
    (void)mid_stream;
    part *pt = ud;
    cJSON *j = cJSON_ParseWithLength(error_json, len);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "message");
    buf_puts(&pt->answer, cJSON_IsString(m) ? m->valuestring : "failed");
    cJSON_Delete(j);
    keep(&pt->node, s->node);
    keep(&pt->domain, s->domain);
    part_done(pt);
}

static const chat_sink part_sink = {NULL, NULL, NULL, part_finish, part_error};

/* One child request per part: the system messages and the part as the
 * user's message, with the parent's other fields; each routed on its own. */
static cJSON *part_request(const cJSON *request, const char *question) {
    cJSON *req = cJSON_Duplicate(request, 1);
    cJSON_DeleteItemFromObjectCaseSensitive(req, "msoa");
    cJSON_DeleteItemFromObjectCaseSensitive(req, "stream");
    cJSON_DeleteItemFromObjectCaseSensitive(req, "stream_options");
    cJSON *messages = cJSON_DetachItemFromObjectCaseSensitive(req, "messages");
    cJSON *kept = cJSON_AddArrayToObject(req, "messages");
    cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && (!strcmp(role->valuestring, "system") || !strcmp(role->valuestring, "developer")))
            cJSON_AddItemToArray(kept, cJSON_Duplicate(m, 1));
    }
    cJSON_Delete(messages);
    cJSON *user = cJSON_CreateObject();
    cJSON_AddStringToObject(user, "role", "user");
    cJSON_AddStringToObject(user, "content", question);
    cJSON_AddItemToArray(kept, user);
    return req;
}

/* Starts the parts; 1 when they all ended already (c is then gone). */
static int start_parts(chat *c, char **questions, int n, const chat_options *opts) {
    struct parts *ps = xcalloc(1, sizeof *ps);
    ps->p = xcalloc((size_t)n, sizeof *ps->p);
    ps->n = n;
    ps->starting = 1;
    c->parts = ps;
    for (int i = 0; i < n; i++) {
        part *pt = &ps->p[i];
        pt->parent = c;
        pt->index = i;
        pt->question = questions[i];
        const cJSON *request = request_tree(c);
        pt->child = request ? chat_start_tree(c->w, part_request(request, questions[i]), opts, &part_sink, pt) : NULL;
        if (!pt->child && !request) {
            buf_puts(&pt->answer, "the request could not be split");
            part_done(pt);
        }
    }
    free(questions);
    ps->starting = 0;
    if (ps->done < ps->n) return 0;
    merge_parts(c);
    return 1;
}

/* ---- start ---- */

/* v in hex, at least `width` digits; returns the end. */
static char *put_hex(char *p, unsigned long v, int width) {
    char d[16];
    int n = 0;
    do d[n++] = "0123456789abcdef"[v & 15];
    while ((v >>= 4) || n < width);
    while (n) *p++ = d[--n];
    return p;
}

/* "chatcmpl-" and 12 + 2 + 8 (or more) hex digits: unique per process and
 * worker, random enough to not collide across restarts; by hand, as
 * snprintf cost a few percent of a proxied request. */
static void new_id(worker *w, char out[40]) {
    static _Atomic unsigned long boot;
    unsigned long b = atomic_load(&boot);
    if (!b) {
        b = (unsigned long)clock_now_ns() ^ ((unsigned long)getpid() << 32);
        atomic_store(&boot, b);
    }
    memcpy(out, "chatcmpl-", 9);
    char *p = put_hex(out + 9, b & 0xffffffffffffUL, 12);
    p = put_hex(p, (unsigned long)(w->index & 0xff), 2);
    p = put_hex(p, ++w->next_id, 8);
    *p = '\0';
}

chat *chat_start(worker *w, const json_doc *request, const chat_options *opts, const chat_sink *sink, void *ud) {
    chat *c = chat_alloc(w);
    c->w = w;
    c->sink = sink;
    c->ud = ud;
    set_request(c, request);
    c->start_ns = clock_now_ns();
    unsigned timeout = opts && opts->timeout_ms ? opts->timeout_ms : w->gw->cfg.upstream_timeout_ms;
    c->deadline_ns = c->start_ns + (uint64_t)(timeout ? timeout : 600000) * 1000000u;
    c->created = (long)clock_unix_s();
    new_id(w, c->id);
    uv_timer_init(&w->loop, &c->hedge_timer);
    c->hedge_timer.data = c;
    budget_deposit(&w->gw->retries);

    char msg[512];
    const char *problem = request->n ? chat_request_check(request, msg, sizeof msg) : "the request is not valid JSON";
    if (problem) {
        report_error(c, 400, problem, "invalid_request_error", "invalid_request", 0, 0);
        chat_free(c);
        return NULL;
    }
    c->stream = chat_request_true(request, 0, "stream");
    c->include_usage = chat_request_true(request, json_get(request, 0, "stream_options"), "include_usage");
    char **questions;
    int n_parts = chat_request_split(request, &questions);
    if (n_parts) return start_parts(c, questions, n_parts, opts) ? NULL : c;
    int model = json_get(request, 0, "model"), named = json_type_of(request, model) == JSON_STRING;
    if (named) json_str_decode(request, model, &c->model_name);
    const char *code = NULL;
    int status = route(c, named ? (c->model_name.data ? c->model_name.data : "") : NULL, &code, msg, sizeof msg);
    if (status) {
        report_error(c, status, msg, status == 503 ? "service_unavailable" : "invalid_request_error", code,
                     status == 503 ? 5 : 0, 0);
        chat_free(c);
        return NULL;
    }
    fill_plan(c);
    node *first = next_node(c);
    if ((first && go_on(c, first) == 0) || wait_for_node(c) == 0) return c;
    give_up(c);
    return NULL;
}

chat *chat_start_tree(worker *w, cJSON *body, const chat_options *opts, const chat_sink *sink, void *ud) {
    buf text = BUF_INIT;
    json_write(&text, body);
    cJSON_Delete(body);
    json_tok space[REQUEST_TOKENS];
    json_doc d;
    json_doc_init(&d, space, REQUEST_TOKENS);
    if (json_parse(&d, text.data ? text.data : "", text.len) < 0) d.n = 0;
    chat *c = chat_start(w, &d, opts, sink, ud);
    json_doc_free(&d);
    buf_free(&text);
    return c;
}

void chat_cancel(chat *c) {
    for (int i = 0; i < 2; i++)
        if (c->live[i]) cancel_attempt(c, c->live[i]);
    chat_free(c);
}

void chat_resume(chat *c) {
    /* parts are answered whole: nothing is streamed from a node */
    if (!c->paused || !c->winner || !c->winner->d) return;
    c->paused = 0;
    dispatch_pause(c->winner->d, 0);
}
