/* engine_gen: see engine_gen.h. */
#include "node/engine_gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/utf8.h"
#include "base/xalloc.h"
#include "engine/sampler.h"

/* Prompt tokens per step: long prompts are run in pieces so that the other
 * slots keep producing tokens and a cancel is seen between pieces. */
#define PREFILL_CHUNK 64

struct engine_gen {
    engine_gen_opts o;
    const engine_request *rq;
    long created;
    sampler *s;
    tok_stream ts;
    int n_fed;              /* prompt tokens already run */
    const float *logits;    /* of the last token run (owned by the context) */
    int n_gen;              /* tokens sampled */
    int chunks;             /* streaming chunks emitted */
    buf text;               /* all text generated */
    size_t sent;            /* bytes of text already emitted */
    cJSON *lp_pending;      /* logprob entries of tokens whose text is held */
    cJSON *lp_sent;         /* non-streaming: entries of the text emitted */
    const char *finish;     /* finish_reason once finished */
    sampler_logprob_entry top[ENGINE_MAX_TOP_LOGPROBS];
};

engine_gen *engine_gen_new(const engine_gen_opts *o) {
    engine_gen *g = xcalloc(1, sizeof *g);
    g->o = *o;
    g->rq = o->rq;
    g->created = (long)time(NULL);
    g->s = sampler_new(&o->rq->sp, o->n_vocab);
    for (int i = 0; i < g->rq->n_prompt; i++) sampler_accept(g->s, g->rq->prompt[i]);
    tok_stream_init(&g->ts, o->tk, 0);
    llama_ctx_rewind(o->ctx, 0);
    if (g->rq->logprobs) {
        g->lp_pending = cJSON_CreateArray();
        g->lp_sent = cJSON_CreateArray();
    }
    return g;
}

void engine_gen_free(engine_gen *g) {
    if (!g) return;
    sampler_free(g->s);
    tok_stream_free(&g->ts);
    buf_free(&g->text);
    cJSON_Delete(g->lp_pending);
    cJSON_Delete(g->lp_sent);
    free(g);
}

int engine_gen_chunks(const engine_gen *g) { return g->chunks; }

/* ---- OpenAI objects ---- */

static cJSON *object_new(const engine_gen *g, const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", g->o.id);
    cJSON_AddStringToObject(o, "object", type);
    cJSON_AddNumberToObject(o, "created", (double)g->created);
    cJSON_AddStringToObject(o, "model", g->o.model);
    return o;
}

/* A chunk with one choice; *delta receives the choice's delta object. */
static cJSON *chunk_new(const engine_gen *g, cJSON **delta, cJSON **choice) {
    cJSON *c = object_new(g, "chat.completion.chunk");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    *delta = cJSON_AddObjectToObject(ch, "delta");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(c, "choices"), ch);
    if (choice) *choice = ch;
    return c;
}

static void emit(engine_gen *g, cJSON *chunk) {
    g->chunks++;
    g->o.emit(g->o.ud, chunk);
}

static void add_usage(const engine_gen *g, cJSON *o) {
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", g->rq->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", g->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens", g->rq->n_prompt + g->n_gen);
}

/* Text for a JSON string: bytes that are not UTF-8 (a byte token left over
 * when generation ended mid-character) become U+FFFD. */
static void put_utf8(buf *out, const char *s, size_t len) {
    while (len) {
        size_t ok = utf8_check(s, len);
        buf_append(out, s, ok);
        if (ok == len) break;
        buf_puts(out, "\xEF\xBF\xBD");
        s += ok + 1;
        len -= ok + 1;
    }
}

/* token, logprob and bytes of one token, as OpenAI writes them; a token that
 * is only part of a character is named by its bytes ("bytes:\xe2\x96"). */
static cJSON *lp_item(const engine_gen *g, int32_t id, float logprob) {
    buf piece = BUF_INIT, name = BUF_INIT;
    tokenizer_piece(g->o.tk, id, 0, &piece);
    if (utf8_check(piece.data ? piece.data : "", piece.len) == piece.len) {
        buf_append(&name, piece.data ? piece.data : "", piece.len);
    } else {
        buf_puts(&name, "bytes:");
        for (size_t i = 0; i < piece.len; i++) buf_printf(&name, "\\x%02x", (unsigned char)piece.data[i]);
    }
    cJSON *it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "token", name.data ? name.data : "");
    cJSON_AddNumberToObject(it, "logprob", logprob);
    cJSON *bytes = cJSON_AddArrayToObject(it, "bytes");
    for (size_t i = 0; i < piece.len; i++) cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)piece.data[i]));
    buf_free(&piece);
    buf_free(&name);
    return it;
}

/* Log-probabilities of the token just sampled, from the raw logits. */
static void record_logprobs(engine_gen *g, int32_t id) {
    cJSON *it = lp_item(g, id, sampler_logprob(g->logits, g->o.n_vocab, id));
    cJSON *top = cJSON_AddArrayToObject(it, "top_logprobs");
    int n = sampler_top_logprobs(g->logits, g->o.n_vocab, g->rq->top_logprobs, g->top);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(top, lp_item(g, g->top[i].id, g->top[i].logprob));
    cJSON_AddItemToArray(g->lp_pending, it);
}

/* Sends text[sent, end) with the log-probabilities of its tokens. */
static void send_text(engine_gen *g, size_t end) {
    if (end <= g->sent) return;
    cJSON *entries = g->lp_pending;
    if (g->rq->logprobs) g->lp_pending = cJSON_CreateArray();
    if (g->o.stream) {
        cJSON *delta, *choice;
        cJSON *c = chunk_new(g, &delta, &choice);
        buf content = BUF_INIT;
        put_utf8(&content, g->text.data + g->sent, end - g->sent);
        cJSON_AddStringToObject(delta, "content", content.data);
        buf_free(&content);
        if (entries) {
            cJSON *lp = cJSON_AddObjectToObject(choice, "logprobs");
            cJSON_AddItemToObject(lp, "content", entries);
        } else {
            cJSON_AddNullToObject(choice, "logprobs");
        }
        cJSON_AddNullToObject(choice, "finish_reason");
        emit(g, c);
    } else if (entries) {
        cJSON *e;
        while ((e = cJSON_DetachItemViaPointer(entries, entries->child))) cJSON_AddItemToArray(g->lp_sent, e);
        cJSON_Delete(entries);
    }
    g->sent = end;
}

/* Scans the unsent text for stop strings. Returns 1 if one occurs (*end: its
 * start); else 0, and *end excludes a tail that may begin a stop string. */
static int scan_stops(const engine_gen *g, size_t *end) {
    const char *t = g->text.data ? g->text.data : "";
    size_t len = g->text.len, best = len;
    int found = 0;
    for (int i = 0; i < g->rq->n_stop; i++) {
        const char *s = g->rq->stop[i];
        const char *at = memmem(t + g->sent, len - g->sent, s, strlen(s));
        if (at && (size_t)(at - t) < best) {
            best = (size_t)(at - t);
            found = 1;
        }
    }
    if (!found) {
        for (int i = 0; i < g->rq->n_stop; i++) {
            size_t sl = strlen(g->rq->stop[i]);
            for (size_t k = sl - 1; k > 0; k--) {
                if (k <= len - g->sent && !memcmp(t + len - k, g->rq->stop[i], k)) {
                    if (len - k < best) best = len - k;
                    break;
                }
            }
        }
    }
    *end = best;
    return found;
}

static int finish(engine_gen *g, const char *reason, int stopped) {
    if (!stopped) {
        tok_stream_flush(&g->ts, &g->text);
        send_text(g, g->text.len);
    }
    g->finish = reason;
    if (!g->o.stream) return 1;
    cJSON *delta, *choice;
    cJSON *c = chunk_new(g, &delta, &choice);
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason", reason);
    emit(g, c);
    c = object_new(g, "chat.completion.chunk");
    cJSON_AddArrayToObject(c, "choices");
    add_usage(g, c);
    emit(g, c);
    return 1;
}

cJSON *engine_gen_response(engine_gen *g) {
    if (!g->finish || g->o.stream) return NULL;
    cJSON *r = object_new(g, "chat.completion");
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    buf content = BUF_INIT;
    put_utf8(&content, g->text.data ? g->text.data : "", g->sent);
    cJSON_AddStringToObject(msg, "content", content.data ? content.data : "");
    buf_free(&content);
    if (g->lp_sent) {
        cJSON *lp = cJSON_AddObjectToObject(ch, "logprobs");
        cJSON_AddItemToObject(lp, "content", g->lp_sent);
        g->lp_sent = NULL;
    } else {
        cJSON_AddNullToObject(ch, "logprobs");
    }
    cJSON_AddStringToObject(ch, "finish_reason", g->finish);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(r, "choices"), ch);
    add_usage(g, r);
    return r;
}

static int prefill(engine_gen *g, char *err, size_t errlen) {
    if (g->n_fed == 0 && g->o.stream) {
        cJSON *delta, *choice;
        cJSON *c = chunk_new(g, &delta, &choice);
        cJSON_AddStringToObject(delta, "role", "assistant");
        cJSON_AddStringToObject(delta, "content", "");
        cJSON_AddNullToObject(choice, "logprobs");
        cJSON_AddNullToObject(choice, "finish_reason");
        emit(g, c);
    }
    int n = g->rq->n_prompt - g->n_fed;
    if (n > PREFILL_CHUNK) n = PREFILL_CHUNK;
    g->logits = llama_forward(g->o.ctx, g->rq->prompt + g->n_fed, n);
    if (!g->logits) {
        snprintf(err, errlen, "the engine could not run the prompt (tokens %d..%d)", g->n_fed, g->n_fed + n);
        return -1;
    }
    g->n_fed += n;
    return 0;
}

int engine_gen_step(engine_gen *g, char *err, size_t errlen) {
    if (g->finish) return 1;
    if (g->n_fed < g->rq->n_prompt) return prefill(g, err, errlen);
    int32_t id = sampler_sample(g->s, g->logits);
    g->n_gen++;
    if (tokenizer_is_eog(g->o.tk, id)) return finish(g, "stop", 0);
    sampler_accept(g->s, id);
    if (g->rq->logprobs) record_logprobs(g, id);
    tok_stream_push(&g->ts, id, &g->text);
    size_t end;
    if (scan_stops(g, &end)) {
        send_text(g, end);
        return finish(g, "stop", 1);
    }
    send_text(g, end);
    if (g->n_gen >= g->rq->max_tokens) return finish(g, "length", 0);
    g->logits = llama_forward(g->o.ctx, &id, 1);
    if (!g->logits) {
        snprintf(err, errlen, "the engine could not run token %d at position %d", id, llama_ctx_pos(g->o.ctx));
        return -1;
    }
    return 0;
}
