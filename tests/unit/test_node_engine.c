/* test_node_engine: the built-in engine served as a node backend.
 *
 * A uv loop runs here and stories260K (a real 260K-parameter Llama) is
 * attached to a node built by hand; calls go through the backend interface
 * exactly as dispatch.c makes them. Greedy answers are checked against
 * llama.cpp's golden continuations (../shared/models/golden: "<s> " + prompt
 * + 96 tokens), which the stories model reproduces with the plain prompt
 * fallback (it has no chat template). Also: streaming shape and order, exact
 * usage, max_tokens, stop strings, logprobs, concurrent requests through
 * slots and the queue, cancellation, pause, 503 when full, 400s. */
#include "testlib.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "engine/chat_template.h"
#include "engine/llama.h"
#include "engine/tokenizer.h"
#include "node/engine_node.h"
#include "node/engine_request.h"

static const char *const prompts[4] = {
    "Once upon a time", "Lily wanted to", "The cat sat on the", "Tom and his dog went to the park. They",
};

static uv_loop_t loop;
static char model_path[512];

/* ---- one call's outcome ---- */

typedef struct result {
    node *n;
    void *call;
    int stream;
    int in_start;             /* set while start() runs: no callback may come then */
    int early_callback;
    buf content;
    int chunks, role_chunks, content_chunks, finish_chunks, usage_chunks;
    int order_bad;            /* role first, contents, finish, usage last */
    char finish[16];
    long prompt_tokens, completion_tokens, total_tokens;
    int lp_entries, lp_bad;   /* logprob entries, and malformed ones */
    int done, failed;
    int after_end;            /* callbacks after done, error or cancel */
    dispatch_error err;
    int cancel_at;            /* cancel on this content chunk (0: never) */
    int cancelled;
    struct result *follow;    /* started from inside the cancelling callback */
    const cJSON *follow_req;
    int pause_at;             /* pause on this chunk (0: never) */
    int chunks_when_paused;
} result;

static void start(result *r, node *n, const cJSON *req, int stream);

static void take_usage(result *r, const cJSON *o) {
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(o, "usage");
    r->prompt_tokens = (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens"));
    r->completion_tokens = (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(u, "completion_tokens"));
    r->total_tokens = (long)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(u, "total_tokens"));
}

/* Each entry: token string, logprob <= 0, bytes, top_logprobs sorted with
 * the greedy choice first. */
static void take_logprobs(result *r, const cJSON *choice) {
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(choice, "logprobs");
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(lp, "content")) {
        const cJSON *lpv = cJSON_GetObjectItemCaseSensitive(e, "logprob");
        const cJSON *top = cJSON_GetObjectItemCaseSensitive(e, "top_logprobs");
        const cJSON *top0 = cJSON_GetArrayItem(top, 0);
        r->lp_entries++;
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "token")) || !cJSON_IsNumber(lpv) ||
            lpv->valuedouble > 0 || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(e, "bytes")) ||
            cJSON_GetArraySize(top) != 3 ||
            strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(top0, "token")),
                   cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "token"))) ||
            cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(top0, "logprob")) != lpv->valuedouble)
            r->lp_bad++;
    }
}

static void on_chunk(void *ud, cJSON *chunk) {
    result *r = ud;
    if (r->in_start) r->early_callback = 1;
    if (r->done || r->failed || r->cancelled) r->after_end++;
    r->chunks++;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chunk, "choices");
    const cJSON *choice = cJSON_GetArrayItem(choices, 0);
    int first = r->chunks == 1;
    if (!choice) {
        r->usage_chunks++;
        if (!r->finish_chunks) r->order_bad++;
        take_usage(r, chunk);
    } else {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(delta, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        const cJSON *finish = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
        if (r->usage_chunks || r->finish_chunks) r->order_bad++;
        if (cJSON_IsString(role)) {
            r->role_chunks++;
            if (!first || strcmp(role->valuestring, "assistant")) r->order_bad++;
        } else if (first) {
            r->order_bad++;
        }
        if (cJSON_IsString(content) && *content->valuestring) {
            r->content_chunks++;
            buf_puts(&r->content, content->valuestring);
        }
        if (cJSON_IsString(finish)) {
            r->finish_chunks++;
            snprintf(r->finish, sizeof r->finish, "%s", finish->valuestring);
        }
        take_logprobs(r, choice);
    }
    cJSON_Delete(chunk);
    if (r->pause_at && r->chunks == r->pause_at) {
        r->n->backend->pause(r->call, 1);
        r->chunks_when_paused = r->chunks;
    }
    if (r->cancel_at && r->content_chunks == r->cancel_at && !r->cancelled) {
        r->cancelled = 1;
        r->n->backend->cancel(r->call);
        if (r->follow) start(r->follow, r->n, r->follow_req, 0);
    }
}

static void on_done(void *ud, cJSON *response) {
    result *r = ud;
    if (r->in_start) r->early_callback = 1;
    if (r->done || r->failed || r->cancelled) r->after_end++;
    r->done = 1;
    if (!response) return;
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(response, "choices"), 0);
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    buf_puts(&r->content, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(msg, "content")));
    const char *finish = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"));
    snprintf(r->finish, sizeof r->finish, "%s", finish ? finish : "");
    if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(response, "object")), "chat.completion"))
        r->order_bad++;
    take_usage(r, response);
    take_logprobs(r, choice);
    cJSON_Delete(response);
}

static void on_error(void *ud, const dispatch_error *e) {
    result *r = ud;
    if (r->in_start) r->early_callback = 1;
    if (r->done || r->failed || r->cancelled) r->after_end++;
    r->failed = 1;
    r->err = *e;
}

static const dispatch_events events = {on_chunk, on_done, on_error};

static void start(result *r, node *n, const cJSON *req, int stream) {
    r->n = n;
    r->stream = stream;
    r->in_start = 1;
    r->call = n->backend->start(n->backend_state, &loop, req, stream, &events, r);
    r->in_start = 0;
    CHECK(r->call != NULL);
}

static void result_free(result *r) { buf_free(&r->content); }

/* ---- helpers ---- */

static cJSON *request(const char *prompt, int max_tokens) {
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", "stories");
    cJSON *msgs = cJSON_AddArrayToObject(req, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", prompt);
    cJSON_AddItemToArray(msgs, m);
    cJSON_AddNumberToObject(req, "temperature", 0);
    if (max_tokens) cJSON_AddNumberToObject(req, "max_tokens", max_tokens);
    return req;
}

static int attach_threads(node *n, int threads, int slots, int queue) {
    memset(n, 0, sizeof *n);
    n->name = "stories";
    n->model = "stories260K";
    char *err = NULL;
    int rc = engine_node_attach(n, model_path, threads, slots, queue, &err);
    if (rc < 0) fprintf(stderr, "  attach: %s\n", err);
    free(err);
    CHECK_EQ_INT(rc, 0);
    CHECK(atomic_load(&n->reachable));
    return rc;
}

static int attach(node *n, int slots, int queue) { return attach_threads(n, 1, slots, queue); }

/* The golden continuation of prompt p: after "<s> " + prompt, without the
 * newline llama-simple ends with. */
static char *golden(int p) {
    char rel[128];
    snprintf(rel, sizeof rel, "models/golden/stories260K.p%d.txt", p + 1);
    FILE *f = fopen(test_shared_path(rel), "rb");
    if (!f) return xstrdup("(no golden file)");
    buf b = BUF_INIT;
    char tmp[4096];
    size_t k;
    while ((k = fread(tmp, 1, sizeof tmp, f)) > 0) buf_append(&b, tmp, k);
    fclose(f);
    if (b.len && b.data[b.len - 1] == '\n') b.data[--b.len] = 0;
    size_t skip = strlen("<s> ") + strlen(prompts[p]);
    char *out = xstrdup(b.len >= skip ? b.data + skip : "");
    buf_free(&b);
    return out;
}

static int prompt_tokens(const char *prompt) {
    char err[256];
    llama_model *m = llama_load(model_path, err, sizeof err);
    tokenizer *tk = m ? tokenizer_load(llama_gguf(m), err, sizeof err) : NULL;
    int32_t *ids = NULL;
    int n = tk ? tokenizer_encode(tk, prompt, strlen(prompt), TOK_ADD_SPECIAL, &ids) : -1;
    free(ids);
    tokenizer_free(tk);
    llama_free(m);
    return n;
}

/* One call, run to its end. */
static void run_one(node *n, const cJSON *req, int stream, result *r) {
    start(r, n, req, stream);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(!r->early_callback);
    CHECK_EQ_INT(r->after_end, 0);
}

/* ---- cases ---- */

static void test_golden_non_streaming(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    cJSON *req = request(prompts[0], 96);
    result r = {0};
    run_one(&n, req, 0, &r);
    char *want = golden(0);
    CHECK(r.done);
    CHECK_STR(r.content.data, want);
    CHECK_STR(r.finish, "length");
    CHECK_EQ_INT(r.prompt_tokens, prompt_tokens(prompts[0]));
    CHECK_EQ_INT(r.completion_tokens, 96);
    CHECK_EQ_INT(r.total_tokens, r.prompt_tokens + 96);
    CHECK_EQ_INT(r.order_bad, 0);
    CHECK_EQ_INT(r.lp_entries, 0);
    free(want);
    result_free(&r);
    cJSON_Delete(req);
    engine_node_detach(&n);
    CHECK(n.backend == NULL);
}

static void test_streaming_matches(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    cJSON *req = request(prompts[0], 96);
    result r = {0};
    run_one(&n, req, 1, &r);
    char *want = golden(0);
    CHECK(r.done);
    CHECK_STR(r.content.data, want);
    CHECK_EQ_INT(r.order_bad, 0);
    CHECK_EQ_INT(r.role_chunks, 1);
    CHECK(r.content_chunks > 10);
    CHECK_EQ_INT(r.finish_chunks, 1);
    CHECK_EQ_INT(r.usage_chunks, 1);
    CHECK_STR(r.finish, "length");
    CHECK_EQ_INT(r.prompt_tokens, prompt_tokens(prompts[0]));
    CHECK_EQ_INT(r.completion_tokens, 96);
    CHECK_EQ_INT(r.total_tokens, r.prompt_tokens + 96);
    free(want);
    result_free(&r);
    cJSON_Delete(req);
    engine_node_detach(&n);
}

static void test_max_tokens_length(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    cJSON *req = request(prompts[1], 7);
    for (int stream = 0; stream < 2; stream++) {
        result r = {0};
        run_one(&n, req, stream, &r);
        char *want = golden(1);
        CHECK_STR(r.finish, "length");
        CHECK_EQ_INT(r.completion_tokens, 7);
        CHECK(r.content.len > 0 && !strncmp(want, r.content.data, r.content.len));
        CHECK(r.content.len < strlen(want));
        free(want);
        result_free(&r);
    }
    cJSON_Delete(req);
    engine_node_detach(&n);
}

/* Golden p1: ", there was a little girl named Lily. She loved ..." */
static void test_stop_strings(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    struct { const char *stop; const char *want; const char *finish; } cases[] = {
        {"girl", ", there was a little ", "stop"},
        {"named Lily", ", there was a little girl ", "stop"},   /* spans tokens, held back until it is sure */
        {",", "", "stop"},                                      /* the very first token */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int stream = 0; stream < 2; stream++) {
            cJSON *req = request(prompts[0], 40);
            cJSON *stop = cJSON_AddArrayToObject(req, "stop");
            cJSON_AddItemToArray(stop, cJSON_CreateString("never appears"));
            cJSON_AddItemToArray(stop, cJSON_CreateString(cases[i].stop));
            result r = {0};
            run_one(&n, req, stream, &r);
            CHECK_STR(r.content.data ? r.content.data : "", cases[i].want);
            CHECK_STR(r.finish, cases[i].finish);
            CHECK(r.completion_tokens < 40);
            CHECK_EQ_INT(r.order_bad, 0);
            result_free(&r);
            cJSON_Delete(req);
        }
    }
    /* A prefix of the stop string ("Lily") is held, then released when the
     * text goes another way ("Lily."). */
    cJSON *req = request(prompts[0], 20);
    cJSON_AddStringToObject(req, "stop", "Lily!");
    result r = {0};
    run_one(&n, req, 1, &r);
    char *want = golden(0);
    CHECK(r.content.len > strlen(", there was a little girl named Lily."));
    CHECK(!strncmp(want, r.content.data, r.content.len));
    CHECK_STR(r.finish, "length");
    CHECK_EQ_INT(r.completion_tokens, 20);
    free(want);
    result_free(&r);
    cJSON_Delete(req);
    engine_node_detach(&n);
}

static void test_logprobs(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    cJSON *req = request(prompts[2], 24);
    cJSON_AddTrueToObject(req, "logprobs");
    cJSON_AddNumberToObject(req, "top_logprobs", 3);
    for (int stream = 0; stream < 2; stream++) {
        result r = {0};
        run_one(&n, req, stream, &r);
        CHECK(r.done);
        CHECK_EQ_INT(r.lp_entries, 24);   /* ended by length: one entry per token */
        CHECK_EQ_INT(r.lp_bad, 0);
        result_free(&r);
    }
    cJSON_Delete(req);
    engine_node_detach(&n);
}

/* Two slots (two threads each) and a queue of two: four requests at once,
 * two streamed, all equal to llama.cpp's sequential greedy answers. */
static void test_concurrent(void) {
    node n;
    if (attach_threads(&n, 2, 2, 2) < 0) return;
    cJSON *reqs[4];
    result r[4];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 4; i++) {
        reqs[i] = request(prompts[i], 96);
        start(&r[i], &n, reqs[i], i % 2);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 4; i++) {
        char *want = golden(i);
        CHECK(r[i].done);
        CHECK_STR(r[i].content.data, want);
        CHECK_EQ_INT(r[i].completion_tokens, 96);
        CHECK_EQ_INT(r[i].prompt_tokens, prompt_tokens(prompts[i]));
        CHECK_EQ_INT(r[i].after_end, 0);
        free(want);
        result_free(&r[i]);
        cJSON_Delete(reqs[i]);
    }
    engine_node_detach(&n);
}

/* One slot, no queue: cancelling mid-stream frees the place at once — a
 * request started right after (inside the same callback) is served. */
static void test_cancel(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    cJSON *req = request(prompts[0], 96);
    result follow = {0};
    result r = {0};
    r.cancel_at = 3;
    r.follow = &follow;
    r.follow_req = req;
    start(&r, &n, req, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(r.cancelled);
    CHECK_EQ_INT(r.content_chunks, 3);
    CHECK_EQ_INT(r.after_end, 0);
    CHECK(!r.done && !r.failed);
    char *want = golden(0);
    CHECK(follow.done);
    CHECK_STR(follow.content.data, want);
    /* and once more after the loop went idle */
    result again = {0};
    run_one(&n, req, 0, &again);
    CHECK_STR(again.content.data, want);
    free(want);
    result_free(&r);
    result_free(&follow);
    result_free(&again);
    cJSON_Delete(req);
    engine_node_detach(&n);
}

/* Paused after the first content chunk: no callback at all until unpaused;
 * then the stream completes unchanged. */
static void unpause(uv_timer_t *t) {
    result *r = t->data;
    CHECK_EQ_INT(r->chunks, r->chunks_when_paused);
    CHECK(!r->done);
    r->n->backend->pause(r->call, 0);
    uv_close((uv_handle_t *)t, NULL);
}

static void test_pause(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    cJSON *req = request(prompts[0], 96);
    result r = {0};
    r.pause_at = 2;
    start(&r, &n, req, 1);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &r;
    uv_timer_start(&t, unpause, 100, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    char *want = golden(0);
    CHECK(r.done);
    CHECK_STR(r.content.data, want);
    free(want);
    result_free(&r);
    cJSON_Delete(req);
    engine_node_detach(&n);
}

static void test_busy(void) {
    node n;
    if (attach(&n, 1, 1) < 0) return;
    cJSON *req = request(prompts[0], 30);
    /* The first asks for 400 tokens, so it holds the slot far longer than
     * the microseconds between the three starts, however fast the model. */
    cJSON *long_req = request(prompts[0], 400);
    result r[3];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 3; i++) start(&r[i], &n, i == 0 ? long_req : req, 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    cJSON_Delete(long_req);
    CHECK(r[0].done && r[1].done);
    CHECK(r[2].failed);
    CHECK(!r[2].early_callback);
    CHECK_EQ_INT(r[2].err.status, 503);
    CHECK_STR(r[2].err.code, "node_busy");
    CHECK_STR(r[2].err.type, "service_unavailable");
    CHECK_EQ_INT(r[2].err.retry_after_s, 1);
    CHECK_EQ_INT(r[2].chunks, 0);
    for (int i = 0; i < 3; i++) result_free(&r[i]);
    cJSON_Delete(req);
    engine_node_detach(&n);
}

static void expect_400(node *n, cJSON *req, const char *code, const char *needle) {
    result r = {0};
    run_one(n, req, 1, &r);
    CHECK(r.failed);
    CHECK_EQ_INT(r.err.status, 400);
    CHECK_STR(r.err.code, code);
    CHECK_CONTAINS(r.err.message, needle);
    CHECK_EQ_INT(r.chunks, 0);
    result_free(&r);
    cJSON_Delete(req);
}

static void test_errors(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    buf long_prompt = BUF_INIT;
    for (int i = 0; i < 1000; i++) buf_puts(&long_prompt, "Once upon a time ");
    expect_400(&n, request(long_prompt.data, 0), "context_length_exceeded", "maximum context length");
    buf_free(&long_prompt);
    struct { const char *field; const char *json; } bad[] = {
        {"temperature", "3"}, {"top_p", "0"}, {"top_k", "1.5"}, {"min_p", "-1"},
        {"presence_penalty", "\"x\""}, {"seed", "0.5"}, {"max_tokens", "0"}, {"n", "2"},
        {"stop", "[1]"}, {"logprobs", "1"}, {"top_logprobs", "3"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *req = request(prompts[0], 5);
        cJSON_DeleteItemFromObject(req, bad[i].field);
        cJSON_AddItemToObject(req, bad[i].field, cJSON_Parse(bad[i].json));
        expect_400(&n, req, "invalid_parameter_value", bad[i].field);
    }
    cJSON *req = request(prompts[0], 5);
    cJSON_DeleteItemFromObject(req, "messages");
    expect_400(&n, req, "invalid_parameter_value", "messages");
    /* the node still serves after all that */
    req = request(prompts[0], 5);
    result r = {0};
    run_one(&n, req, 0, &r);
    CHECK(r.done);
    result_free(&r);
    cJSON_Delete(req);
    engine_node_detach(&n);
}

/* Sampling with a seed is reproducible; a different seed goes elsewhere. */
static void test_seeded_sampling(void) {
    node n;
    if (attach(&n, 1, 0) < 0) return;
    char *text[3];
    for (int i = 0; i < 3; i++) {
        cJSON *req = request(prompts[3], 40);
        cJSON_ReplaceItemInObject(req, "temperature", cJSON_CreateNumber(1.0));
        cJSON_AddNumberToObject(req, "seed", i < 2 ? 42 : 7);
        cJSON_AddNumberToObject(req, "top_k", 0);
        cJSON_AddNumberToObject(req, "top_p", 1);
        cJSON_AddNumberToObject(req, "min_p", 0);
        result r = {0};
        run_one(&n, req, i == 1, &r);
        CHECK(r.done);
        text[i] = buf_detach(&r.content);
        cJSON_Delete(req);
    }
    CHECK_STR(text[0], text[1]);
    CHECK(strcmp(text[0], text[2]) != 0);
    for (int i = 0; i < 3; i++) free(text[i]);
    engine_node_detach(&n);
}

static void test_attach_errors(void) {
    node n;
    memset(&n, 0, sizeof n);
    n.name = "x";
    char *err = NULL;
    CHECK_EQ_INT(engine_node_attach(&n, "/nonexistent/model.gguf", 1, 1, 0, &err), -1);
    CHECK_CONTAINS(err, "/nonexistent/model.gguf");
    CHECK(n.backend == NULL);
    free(err);
}

/* The prompt of a model with a template: rendered by its family (developer
 * read as system, text parts joined), control tokens parsed; without one,
 * contents joined by newlines. Checked on llama.cpp's SPM vocabulary file. */
static int32_t *encode(const tokenizer *tk, const char *text, unsigned flags, int *n) {
    int32_t *ids = NULL;
    *n = tokenizer_encode(tk, text, strlen(text), flags, &ids);
    return ids;
}

static void test_request_prompt(void) {
    char err[256];
    gguf *g = gguf_open(test_shared_path("models/vocab/ggml-vocab-llama-spm.gguf"), err, sizeof err);
    tokenizer *tk = g ? tokenizer_load(g, err, sizeof err) : NULL;
    CHECK(tk != NULL);
    if (!tk) { gguf_close(g); return; }
    cJSON *req = cJSON_Parse("{\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                             "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
                             "{\"type\":\"text\",\"text\":\"there\"}]}],\"max_tokens\":1000}");
    chat_msg msgs[2] = {{"system", "Be brief."}, {"user", "Hi there"}};
    buf text = BUF_INIT;
    CHECK_EQ_INT(chat_render(CHAT_LLAMA2, msgs, 2, 1, &text, err, sizeof err), 0);
    int n;
    int32_t *want = encode(tk, text.data, TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &n);
    engine_request r;
    dispatch_error e;
    CHECK_EQ_INT(engine_request_parse(req, tk, CHAT_LLAMA2, 64, &r, &e), 0);
    CHECK_EQ_INT(r.n_prompt, n);
    CHECK(r.prompt && !memcmp(r.prompt, want, (size_t)n * sizeof *want));
    CHECK_EQ_INT(r.max_tokens, 64 - n);   /* capped at the context */
    engine_request_free(&r);
    free(want);
    want = encode(tk, "Be brief.\nHi there", TOK_ADD_SPECIAL, &n);
    CHECK_EQ_INT(engine_request_parse(req, tk, -1, 64, &r, &e), 0);
    CHECK_EQ_INT(r.n_prompt, n);
    CHECK(r.prompt && !memcmp(r.prompt, want, (size_t)n * sizeof *want));
    engine_request_free(&r);
    free(want);
    buf_free(&text);
    cJSON_Delete(req);
    tokenizer_free(tk);
    gguf_close(g);
}

int main(void) {
    snprintf(model_path, sizeof model_path, "%s", test_shared_path("models/stories260K.gguf"));
    uv_loop_init(&loop);
    TEST(test_golden_non_streaming);
    TEST(test_streaming_matches);
    TEST(test_max_tokens_length);
    TEST(test_stop_strings);
    TEST(test_logprobs);
    TEST(test_concurrent);
    TEST(test_cancel);
    TEST(test_pause);
    TEST(test_busy);
    TEST(test_errors);
    TEST(test_seeded_sampling);
    TEST(test_attach_errors);
    TEST(test_request_prompt);
    uv_loop_close(&loop);
    return test_done();
}
