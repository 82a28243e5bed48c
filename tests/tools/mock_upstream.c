/* mock_upstream: a fake OpenAI-compatible server for integration tests and
 * as the "direct" baseline of the gateway benchmark.
 *
 * Built on msoa's own http_server, one libuv loop per worker (SO_REUSEPORT).
 * Answers are deterministic: N chunks "tok0 " .. "tok<N-1> ", prompt_tokens =
 * words in the request's messages, and the reply echoes the start of the last
 * user message and the requested model so tests can see what arrived. One
 * process serves every test: the request header x-mock-fail, or the body's
 * "mock_fail" field, picks a failure (refuse, status:NNN, reset-after:K,
 * stall-after:K, slow:MS (every chunk), late:MS (the first token), bad-json,
 * bad-sse, exit-after:K); with several
 * mocks, "mock_fail_node" names the one (--name) that acts it out. A request
 * whose last message is the assistant's partial answer is continued from
 * the "tokN" it already holds, as a failover target must. GET /debug/last
 * returns the last request received. All delays are loop timers. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "net/http_server.h"
#include "net/sse.h"

#define BACKLOG_HIGH (256u << 10)
#define ECHO_BYTES 20

static struct {
    const char *host;
    int port;
    const char *model;
    int chunks;
    unsigned chunk_delay_ms;
    unsigned first_delay_ms;
    int workers;
    const char *name;  /* --name: a body's "mock_fail_node" picks the mock that fails */
} opt = {"127.0.0.1", 0, "mock-model", 8, 0, 0, 1, ""};

/* --- /debug/last, shared by all workers ---------------------------------- */

static pthread_mutex_t last_mu = PTHREAD_MUTEX_INITIALIZER;
static char *last_json; /* {"method","path","headers":{...},"body"} */

static void record_request(const http_request *req) {
    cJSON *o = cJSON_CreateObject(), *h = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", req->method);
    cJSON_AddStringToObject(o, "path", req->path);
    for (int i = 0; i < req->n_headers; i++) cJSON_AddStringToObject(h, req->headers[i].name, req->headers[i].value);
    cJSON_AddItemToObject(o, "headers", h);
    char *body = xstrndup(req->body ? req->body : "", req->body_len);
    cJSON_AddStringToObject(o, "body", body);
    free(body);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    pthread_mutex_lock(&last_mu);
    free(last_json);
    last_json = text;
    pthread_mutex_unlock(&last_mu);
}

static void serve_last(http_exchange *x) {
    pthread_mutex_lock(&last_mu);
    const char *j = last_json ? last_json : "{}";
    http_respond(x, 200, "application/json", j, strlen(j));
    pthread_mutex_unlock(&last_mu);
}

/* --- the request, as the mock understands it ------------------------------ */

enum fail_kind { FAIL_NONE, FAIL_REFUSE, FAIL_STATUS, FAIL_RESET, FAIL_STALL, FAIL_EXIT, FAIL_BAD_JSON, FAIL_BAD_SSE };

typedef struct fail_spec {
    enum fail_kind kind;
    int arg;             /* status, or K chunks */
    unsigned slow_ms;    /* slow:MS, 0 if absent */
    unsigned late_ms;    /* late:MS: the first token this late, 0 if absent */
} fail_spec;

static fail_spec parse_fail(const char *v) {
    fail_spec f = {FAIL_NONE, 0, 0, 0};
    if (!v) return f;
    if (!strcmp(v, "refuse")) f.kind = FAIL_REFUSE;
    else if (!strcmp(v, "bad-json")) f.kind = FAIL_BAD_JSON;
    else if (!strcmp(v, "bad-sse")) f.kind = FAIL_BAD_SSE;
    else if (!strncmp(v, "status:", 7)) { f.kind = FAIL_STATUS; f.arg = atoi(v + 7); }
    else if (!strncmp(v, "reset-after:", 12)) { f.kind = FAIL_RESET; f.arg = atoi(v + 12); }
    else if (!strncmp(v, "stall-after:", 12)) { f.kind = FAIL_STALL; f.arg = atoi(v + 12); }
    else if (!strncmp(v, "exit-after:", 11)) { f.kind = FAIL_EXIT; f.arg = atoi(v + 11); }
    else if (!strncmp(v, "slow:", 5)) f.slow_ms = (unsigned)atoi(v + 5);
    else if (!strncmp(v, "late:", 5)) f.late_ms = (unsigned)atoi(v + 5);
    return f;
}

static int count_words(const char *s) {
    int n = 0, in_word = 0;
    for (; *s; s++) {
        int space = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r';
        if (!space && !in_word) n++;
        in_word = !space;
    }
    return n;
}

/* Words of a message's content: a string, or an array of {type:text,text}. */
static int content_words(const cJSON *content) {
    if (cJSON_IsString(content)) return count_words(content->valuestring);
    int n = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(t)) n += count_words(t->valuestring);
    }
    return n;
}

/* A JSON string literal (with quotes) of the first n bytes of s, cut at a
 * UTF-8 character boundary. */
static char *json_quote(const char *s, size_t n) {
    size_t len = strlen(s);
    if (len > n) {
        len = n;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
    char *cut = xstrndup(s, len);
    cJSON *str = cJSON_CreateString(cut);
    char *q = cJSON_PrintUnformatted(str);
    cJSON_Delete(str);
    free(cut);
    if (!q) abort();
    return q;
}

typedef struct chat {
    http_exchange *x;
    uv_timer_t timer;
    buf out;
    char id[48];
    long created;
    char *model_q;    /* JSON-quoted model */
    char *echo_q;     /* JSON-quoted "echo(<first words>) " */
    int stream, include_usage;
    int prompt_tokens;
    int first;        /* index of the first chunk: > 0 when continuing an answer */
    int continuing;   /* the last message is the assistant's partial answer */
    int next;         /* index of the next chunk to write */
    int finished;
    fail_spec fail;
    unsigned delay_ms;
} chat;

static unsigned long next_id(void) {
    static _Atomic unsigned long n;
    return ++n;
}

/* Fills c from the parsed request body; returns an error message or NULL. */
static const char *parse_chat(chat *c, const cJSON *j) {
    if (!cJSON_IsObject(j)) return "request body is not a JSON object";
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!cJSON_IsArray(msgs)) return "'messages' must be an array";
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const char *m = cJSON_IsString(model) && *model->valuestring ? model->valuestring : opt.model;
    c->model_q = json_quote(m, strlen(m));
    c->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    c->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    const char *last_user = "";
    const cJSON *msg;
    cJSON_ArrayForEach(msg, msgs) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
        c->prompt_tokens += content_words(content);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (cJSON_IsString(role) && !strcmp(role->valuestring, "user") && cJSON_IsString(content))
            last_user = content->valuestring;
        /* A final assistant message is an answer to continue: its "tokN"
         * words were already said, so the answer goes on from there. */
        c->continuing = cJSON_IsString(role) && !strcmp(role->valuestring, "assistant") && cJSON_IsString(content);
        c->first = 0;
        if (c->continuing)
            for (const char *t = content->valuestring; (t = strstr(t, "tok")); t += 3) c->first++;
    }
    if (c->first > opt.chunks) c->first = opt.chunks;
    c->next = c->first;
    char *echo = json_quote(last_user, ECHO_BYTES);
    buf b = BUF_INIT; /* "text" becomes "echo(text) " */
    buf_printf(&b, "\"echo(%.*s) \"", (int)(strlen(echo) - 2), echo + 1);
    free(echo);
    c->echo_q = buf_detach(&b);
    return NULL;
}

static void chat_free_cb(uv_handle_t *h) {
    chat *c = h->data;
    buf_free(&c->out);
    free(c->model_q);
    free(c->echo_q);
    free(c);
}

/* The exchange is finished (or must not be touched again): free c once its
 * timer has closed. */
static void chat_release(chat *c) {
    c->finished = 1;
    uv_close((uv_handle_t *)&c->timer, chat_free_cb);
}

static void respond_error(http_exchange *x, int status, const char *message, const char *type) {
    buf b = BUF_INIT;
    char *m = json_quote(message, strlen(message));
    buf_printf(&b, "{\"error\":{\"message\":%s,\"type\":\"%s\",\"param\":null,\"code\":\"mock_%d\"}}", m, type,
               status);
    free(m);
    http_respond(x, status, "application/json", b.data, b.len);
    buf_free(&b);
}

static void respond_status(http_exchange *x, int status) {
    char msg[64];
    snprintf(msg, sizeof msg, "mock failure: status %d", status);
    if (status == 429) http_add_header(x, "Retry-After", "1");
    const char *type = status == 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";
    respond_error(x, status, msg, type);
}

/* Content of chunk i: the echo comes first, in chunk 0. */
static void put_content(chat *c, buf *b, int i) {
    if (i == 0 && !c->continuing) {
        size_t n = strlen(c->echo_q);
        buf_append(b, c->echo_q, n - 1); /* without the closing quote */
        buf_printf(b, "tok%d \"", i);
    } else {
        buf_printf(b, "\"tok%d \"", i);
    }
}

static void write_event(chat *c, buf *json) {
    buf_clear(&c->out);
    sse_write_data(&c->out, json->data, json->len);
    http_stream_write(c->x, c->out.data, c->out.len);
    buf_clear(json);
}

static void chunk_head(chat *c, buf *b) {
    buf_printf(b, "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%ld,\"model\":%s,", c->id, c->created,
               c->model_q);
}

static void write_chunk(chat *c, int i) {
    buf b = BUF_INIT;
    chunk_head(c, &b);
    buf_puts(&b, "\"choices\":[{\"index\":0,\"delta\":{");
    if (i == c->first) buf_puts(&b, "\"role\":\"assistant\",");
    buf_puts(&b, "\"content\":");
    put_content(c, &b, i);
    buf_puts(&b, "},\"finish_reason\":null}]}");
    write_event(c, &b);
    buf_free(&b);
}

static void write_tail(chat *c) {
    buf b = BUF_INIT;
    chunk_head(c, &b);
    buf_puts(&b, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}");
    write_event(c, &b);
    if (c->include_usage) {
        chunk_head(c, &b);
        buf_printf(&b, "\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}",
                   c->prompt_tokens, opt.chunks - c->first, c->prompt_tokens + opt.chunks - c->first);
        write_event(c, &b);
    }
    buf_free(&b);
    http_stream_write(c->x, "data: [DONE]\n\n", 14);
}

/* Ends the exchange as a dead upstream would: the connection goes away
 * without a response, or in the middle of one. */
static void drop_connection(http_exchange *x) { http_exchange_abort(x); }

static void stream_finish(chat *c) {
    if (c->finished) return;
    http_stream_end(c->x);
    chat_release(c);
}

static void on_tick(uv_timer_t *t);

/* Writes chunks until the end, a failure point, a delay or back-pressure. */
static void pump(chat *c) {
    while (!c->finished) {
        if (http_exchange_aborted(c->x)) {
            stream_finish(c);
            return;
        }
        int fail_here = c->next == c->fail.arg;
        if (fail_here && c->fail.kind == FAIL_STALL) return; /* on_abort finishes */
        if (fail_here && (c->fail.kind == FAIL_EXIT || c->fail.kind == FAIL_RESET)) {
            /* The K chunks must reach the client first: they may still be
             * queued (or held back while the handler runs). */
            if (http_stream_backlog(c->x) > 0) {
                uv_timer_start(&c->timer, on_tick, 1, 0);
                return;
            }
            if (c->fail.kind == FAIL_EXIT) _exit(1);
            drop_connection(c->x);
            chat_release(c);
            return;
        }
        if (c->next == opt.chunks) {
            write_tail(c);
            stream_finish(c);
            return;
        }
        if (http_stream_backlog(c->x) > BACKLOG_HIGH) return; /* on_drain resumes */
        write_chunk(c, c->next++);
        if (c->delay_ms && !c->finished) {
            uv_timer_start(&c->timer, on_tick, c->delay_ms, 0);
            return;
        }
    }
}

static void on_tick(uv_timer_t *t) { pump(t->data); }

static void on_drain(void *ud) {
    chat *c = ud;
    if (!c->finished && !uv_is_active((uv_handle_t *)&c->timer)) pump(c);
}

static void on_abort(void *ud) {
    chat *c = ud;
    if (c->finished) return;
    uv_timer_stop(&c->timer);
    if (c->stream) http_stream_end(c->x);
    else http_respond(c->x, 499, "text/plain", "", 0);
    chat_release(c);
}

static void respond_whole(uv_timer_t *t) {
    chat *c = t->data;
    if (c->fail.kind == FAIL_STALL) return; /* never answer; on_abort finishes */
    if (c->fail.kind == FAIL_EXIT) _exit(1);
    if (c->fail.kind == FAIL_RESET) {
        drop_connection(c->x);
        chat_release(c);
        return;
    }
    buf b = BUF_INIT;
    buf_printf(&b, "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%ld,\"model\":%s,", c->id, c->created,
               c->model_q);
    buf_puts(&b, "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (c->continuing) buf_putc(&b, '"');
    else buf_append(&b, c->echo_q, strlen(c->echo_q) - 1);
    for (int i = c->first; i < opt.chunks; i++) buf_printf(&b, "tok%d ", i);
    buf_printf(&b, "\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
                   "\"total_tokens\":%d}}",
               c->prompt_tokens, opt.chunks - c->first, c->prompt_tokens + opt.chunks - c->first);
    http_respond(c->x, 200, "application/json", b.data, b.len);
    buf_free(&b);
    chat_release(c);
}

/* The failure to act out: header x-mock-fail, else the body's "mock_fail"
 * field (which a gateway forwards like any other field). */
static fail_spec request_fail(const http_request *req, const cJSON *j) {
    const char *h = http_request_header(req, "x-mock-fail");
    if (h) return parse_fail(h);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "mock_fail");
    const cJSON *who = cJSON_GetObjectItemCaseSensitive(j, "mock_fail_node");
    if (cJSON_IsString(who) && strcmp(who->valuestring, opt.name) != 0) return parse_fail(NULL);
    return parse_fail(cJSON_IsString(f) ? f->valuestring : NULL);
}

/* Failures decided before any answer; returns 1 when the exchange is done. */
static int act_immediate_failure(http_exchange *x, const fail_spec *f) {
    switch (f->kind) {
    case FAIL_REFUSE:
        drop_connection(x);
        return 1;
    case FAIL_STATUS:
        respond_status(x, f->arg);
        return 1;
    case FAIL_BAD_JSON: {
        const char *bad = "{\"id\":\"chatcmpl-bad\",\"object\":\"chat.completion\",\"choices\":[{";
        http_respond(x, 200, "application/json", bad, strlen(bad));
        return 1;
    }
    case FAIL_BAD_SSE: {
        const char *bad = "data: {this is not json\n\ndata: [[[\"\n\n: only a comment\n\ndata: \x01\x02\n\n";
        http_stream_start(x, 200, "text/event-stream");
        http_stream_write(x, bad, strlen(bad));
        http_stream_end(x);
        return 1;
    }
    default:
        return 0;
    }
}

static void serve_chat(http_exchange *x, const http_request *req) {
    cJSON *j = cJSON_ParseWithLength(req->body, req->body_len);
    fail_spec f = request_fail(req, j);
    if (act_immediate_failure(x, &f)) {
        cJSON_Delete(j);
        return;
    }
    chat *c = xcalloc(1, sizeof *c);
    const char *err = parse_chat(c, j);
    cJSON_Delete(j);
    if (err) {
        respond_error(x, 400, err, "invalid_request_error");
        free(c->model_q);
        free(c->echo_q);
        free(c);
        return;
    }
    c->x = x;
    c->fail = f;
    snprintf(c->id, sizeof c->id, "chatcmpl-mock-%lu", next_id());
    c->created = (long)time(NULL);
    c->delay_ms = f.slow_ms ? f.slow_ms : opt.chunk_delay_ms;
    uv_timer_init(http_exchange_loop(x), &c->timer);
    c->timer.data = c;
    http_exchange_on(x, on_drain, on_abort, c);
    if (!c->stream) {
        /* the same total time a stream would take */
        uint64_t first = f.late_ms ? f.late_ms : opt.first_delay_ms;
        uint64_t total = first + (uint64_t)c->delay_ms * (uint64_t)opt.chunks;
        if (total) uv_timer_start(&c->timer, respond_whole, total, 0);
        else respond_whole(&c->timer);
        return;
    }
    http_stream_start(x, 200, "text/event-stream");
    unsigned first = f.late_ms ? f.late_ms : opt.first_delay_ms;
    if (first) uv_timer_start(&c->timer, on_tick, first, 0);
    else pump(c);
}

static void serve_models(http_exchange *x) {
    buf b = BUF_INIT;
    char *m = json_quote(opt.model, strlen(opt.model));
    buf_printf(&b, "{\"object\":\"list\",\"data\":[{\"id\":%s,\"object\":\"model\",\"created\":%ld,\"owned_by\":\"mock\"}]}",
               m, (long)time(NULL));
    free(m);
    http_respond(x, 200, "application/json", b.data, b.len);
    buf_free(&b);
}

static void on_request(http_exchange *x, const http_request *req, void *ud) {
    (void)ud;
    int get = !strcmp(req->method, "GET"), post = !strcmp(req->method, "POST");
    if (!strcmp(req->path, "/debug/last")) {
        serve_last(x);
        return;
    }
    if (!strcmp(req->path, "/health")) {
        const char *ok = "{\"status\":\"ok\"}";
        http_respond(x, 200, "application/json", ok, strlen(ok));
        return;
    }
    record_request(req);
    if (!strcmp(req->path, "/v1/models") && get) serve_models(x);
    else if (!strcmp(req->path, "/v1/chat/completions") && post) serve_chat(x, req);
    else respond_error(x, 404, "no such endpoint", "invalid_request_error");
}

/* --- workers -------------------------------------------------------------- */

typedef struct mock_worker {
    uv_loop_t loop;
    http_server *server;
    uv_thread_t thread;
} mock_worker;

static int worker_listen(mock_worker *w, int port) {
    uv_loop_init(&w->loop);
    w->server = http_server_new(&w->loop, NULL, on_request, NULL);
    if (!w->server) return -1;
    int rc = http_server_listen(w->server, opt.host, port, opt.workers > 1);
    if (rc < 0) {
        fprintf(stderr, "mock_upstream: listen %s:%d: %s\n", opt.host, port, uv_strerror(rc));
        return -1;
    }
    return http_server_port(w->server);
}

static void worker_run(void *arg) {
    mock_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

static void usage(void) {
    fprintf(stderr, "usage: mock_upstream --port P [--host H] [--model NAME] [--chunks N] [--chunk-delay-ms D]\n"
                    "                     [--first-token-delay-ms D] [--workers N] [--name NAME]\n");
    exit(2);
}

static void parse_args(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--model")) opt.model = v;
        else if (!strcmp(a, "--chunks")) opt.chunks = atoi(v);
        else if (!strcmp(a, "--chunk-delay-ms")) opt.chunk_delay_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--first-token-delay-ms")) opt.first_delay_ms = (unsigned)atoi(v);
        else if (!strcmp(a, "--workers")) opt.workers = atoi(v);
        else if (!strcmp(a, "--name")) opt.name = v;
        else usage();
    }
    if (opt.chunks < 0 || opt.workers < 1 || opt.port < 0) usage();
}

int main(int argc, char **argv) {
    parse_args(argc, argv);
    /* A client that gave up closed its connection: writing to it must fail
     * the write, not kill the server (as it did when the chaos benchmark
     * resumed a stopped mock whose clients had all left). */
    signal(SIGPIPE, SIG_IGN);
    mock_worker *w = xcalloc((size_t)opt.workers, sizeof *w);
    int port = worker_listen(&w[0], opt.port);
    if (port <= 0) return 1;
    for (int i = 1; i < opt.workers; i++) {
        if (worker_listen(&w[i], port) < 0) return 1;
        if (uv_thread_create(&w[i].thread, worker_run, &w[i])) return 1;
    }
    printf("listening %d\n", port);
    fflush(stdout);
    worker_run(&w[0]);
    return 0;
}
