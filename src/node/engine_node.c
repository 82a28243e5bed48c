/* engine_node: see engine_node.h.
 *
 * Threads and ownership. A call (ecall) is touched by two threads: the loop
 * it was started on (delivery, pause, cancel) and the generation thread
 * (while it is queued or in a slot). Each holds a reference; the last one
 * frees it. The engine mutex guards the queue, the slots' occupants and the
 * count of live calls; a call's own mutex guards its event list and whether
 * its async handle is still open, so the generation thread never signals a
 * handle the loop has closed. Only the generation thread changes a slot's
 * occupant or runs a slot's context. */
#include "node/engine_node.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/xalloc.h"
#include "engine/chat_template.h"
#include "engine/llama.h"
#include "engine/threadpool.h"
#include "engine/tokenizer.h"
#include "node/engine_gen.h"
#include "node/engine_request.h"

typedef struct engine_node engine_node;

enum ev_kind { EV_CHUNK, EV_DONE, EV_ERROR };

typedef struct ev_item {
    enum ev_kind kind;
    cJSON *obj;             /* chunk, or the non-streaming response */
    dispatch_error err;
    struct ev_item *next;
} ev_item;

typedef struct ecall {
    engine_node *en;
    uv_async_t async;
    dispatch_events ev;
    void *ud;
    int stream;
    engine_request rq;
    char id[48];
    atomic_int refs;
    atomic_int cancelled;
    atomic_int paused;
    /* under mu */
    pthread_mutex_t mu;
    ev_item *head, *tail;
    int closed;             /* the async handle is closing: post nothing more */
    /* loop thread only */
    int ended;              /* a final event was delivered, or cancelled */
    int held;               /* paused: events wait in the list */
    /* under the engine's mu */
    int live;               /* counted in en->n_live */
    int queued;
    struct ecall *next;     /* in the queue */
} ecall;

typedef struct slot {
    llama_ctx *ctx;
    ecall *call;            /* occupant, or NULL */
    engine_gen *gen;        /* made on the occupant's first step */
    int done;               /* the occupant got its final event */
} slot;

struct engine_node {
    llama_model *m;
    tokenizer *tk;
    int family;             /* chat template, or -1: plain concatenation */
    int n_ctx, n_vocab;
    char *model;
    slot *slots;
    int n_slots, max_queue;
    threadpool *tp;         /* the slots' contexts share it: one steps at a time */
    pthread_mutex_t mu;
    pthread_cond_t wake;
    ecall *q_head, *q_tail;
    int n_live;             /* admitted calls not yet ended or cancelled */
    int stop;
    pthread_t thread;
    atomic_ulong next_id;
};

/* ---- calls and their events ---- */

static void call_unref(ecall *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    ev_item *it = c->head;
    while (it) {
        ev_item *next = it->next;
        cJSON_Delete(it->obj);
        free(it);
        it = next;
    }
    engine_request_free(&c->rq);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Queues an event for the call's loop; dropped if the loop closed the call. */
static void post(ecall *c, enum ev_kind kind, cJSON *obj, const dispatch_error *err) {
    ev_item *it = xcalloc(1, sizeof *it);
    it->kind = kind;
    it->obj = obj;
    if (err) it->err = *err;
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        cJSON_Delete(obj);
        free(it);
        return;
    }
    if (c->tail) c->tail->next = it;
    else c->head = it;
    c->tail = it;
    uv_async_send(&c->async);
    pthread_mutex_unlock(&c->mu);
}

static void post_error(ecall *c, int status, const char *type, const char *code, int mid_stream, const char *msg) {
    dispatch_error e;
    memset(&e, 0, sizeof e);
    e.status = status;
    e.type = type;
    e.code = code;
    e.mid_stream = mid_stream;
    e.retry_after_s = status == 503 ? 1 : 0;
    snprintf(e.message, sizeof e.message, "%s", msg);
    post(c, EV_ERROR, NULL, &e);
}

static void on_closed(uv_handle_t *h) { call_unref(h->data); }

/* Loop thread: no event is delivered or posted after this. */
static void close_call(ecall *c) {
    c->ended = 1;
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    pthread_mutex_unlock(&c->mu);
    uv_close((uv_handle_t *)&c->async, on_closed);
}

/* Loop thread: puts undelivered events back in front of the list. */
static void hold_back(ecall *c, ev_item *first) {
    ev_item *last = first;
    while (last->next) last = last->next;
    pthread_mutex_lock(&c->mu);
    last->next = c->head;
    if (!c->head) c->tail = last;
    c->head = first;
    pthread_mutex_unlock(&c->mu);
}

/* Loop thread: delivers what the generation thread posted. A callback may
 * pause the call (the rest waits) or cancel it (the rest is dropped). */
static void on_events(uv_async_t *a) {
    ecall *c = a->data;
    pthread_mutex_lock(&c->mu);
    ev_item *it = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (it) {
        if (c->held && !c->ended) {
            hold_back(c, it);
            return;
        }
        ev_item *next = it->next;
        if (c->ended) {
            cJSON_Delete(it->obj);
        } else if (it->kind == EV_CHUNK) {
            c->ev.on_chunk(c->ud, it->obj);
        } else {
            close_call(c);   /* the handle closes later; c stays valid until then */
            if (it->kind == EV_DONE) c->ev.on_done(c->ud, it->obj);
            else c->ev.on_error(c->ud, &it->err);
        }
        free(it);
        it = next;
    }
}

/* Under en->mu: the call no longer counts against the node's capacity. */
static void unlive(engine_node *en, ecall *c) {
    if (!c->live) return;
    c->live = 0;
    en->n_live--;
}

/* ---- the backend interface (loop thread) ---- */

/* Takes a call in if the node has room: queued, and the generation thread
 * moves it to the first free slot. */
static int admit(engine_node *en, ecall *c) {
    pthread_mutex_lock(&en->mu);
    int ok = en->n_live < en->n_slots + en->max_queue && !en->stop;
    if (ok) {
        en->n_live++;
        c->live = c->queued = 1;
        atomic_fetch_add(&c->refs, 1);
        if (en->q_tail) en->q_tail->next = c;
        else en->q_head = c;
        en->q_tail = c;
        pthread_cond_signal(&en->wake);
    }
    pthread_mutex_unlock(&en->mu);
    return ok;
}

static void *engine_start(void *state, uv_loop_t *loop, const cJSON *request, int stream,
                          const dispatch_events *ev, void *ud) {
    engine_node *en = state;
    ecall *c = xcalloc(1, sizeof *c);
    if (uv_async_init(loop, &c->async, on_events) != 0) {
        free(c);
        return NULL;
    }
    c->en = en;
    c->async.data = c;
    c->ev = *ev;
    c->ud = ud;
    c->stream = stream;
    atomic_init(&c->refs, 1);
    atomic_init(&c->cancelled, 0);
    atomic_init(&c->paused, 0);
    pthread_mutex_init(&c->mu, NULL);
    snprintf(c->id, sizeof c->id, "chatcmpl-engine-%lu", atomic_fetch_add(&en->next_id, 1));
    dispatch_error e;
    if (engine_request_parse(request, en->tk, en->family, en->n_ctx, &c->rq, &e) < 0) {
        post(c, EV_ERROR, NULL, &e);
    } else if (!admit(en, c)) {
        char msg[160];
        snprintf(msg, sizeof msg, "node is busy: all %d slots and %d queue places are taken; retry shortly",
                 en->n_slots, en->max_queue);
        post_error(c, 503, "service_unavailable", "node_busy", 0, msg);
    }
    return c;
}

/* Back-pressure is exact: no callback between pause and unpause, and the
 * slot stops generating after the step under way. */
static void engine_pause(void *call, int paused) {
    ecall *c = call;
    engine_node *en = c->en;
    c->held = paused;
    if (!paused) uv_async_send(&c->async);   /* deliver what waited */
    pthread_mutex_lock(&en->mu);   /* the generation thread checks under it: no lost wakeup */
    atomic_store(&c->paused, paused);
    if (!paused) pthread_cond_signal(&en->wake);
    pthread_mutex_unlock(&en->mu);
}

static void engine_cancel(void *call) {
    ecall *c = call;
    engine_node *en = c->en;
    int drop_queue_ref = 0;
    pthread_mutex_lock(&en->mu);
    atomic_store(&c->cancelled, 1);
    unlive(en, c);   /* its place is free for the next request at once */
    if (c->queued) {
        ecall **p = &en->q_head, *prev = NULL;
        while (*p != c) {
            prev = *p;
            p = &(*p)->next;
        }
        *p = c->next;
        if (en->q_tail == c) en->q_tail = prev;
        c->queued = 0;
        drop_queue_ref = 1;
    }
    pthread_cond_signal(&en->wake);   /* a paused slot is reclaimed too */
    pthread_mutex_unlock(&en->mu);
    if (drop_queue_ref) call_unref(c);
    close_call(c);
}

static const node_backend engine_backend = {engine_start, engine_pause, engine_cancel};

/* ---- the generation thread ---- */

static void emit_chunk(void *ud, cJSON *chunk) { post(ud, EV_CHUNK, chunk, NULL); }

/* Runs one step of the slot's call; sets s->done when it has ended. */
static void step(engine_node *en, slot *s) {
    ecall *c = s->call;
    if (!s->gen) {
        engine_gen_opts o = {
            .tk = en->tk, .ctx = s->ctx, .n_vocab = en->n_vocab, .rq = &c->rq, .stream = c->stream,
            .id = c->id, .model = en->model, .emit = emit_chunk, .ud = c,
        };
        s->gen = engine_gen_new(&o);
    }
    char err[256];
    int r = engine_gen_step(s->gen, err, sizeof err);
    if (r == 0) return;
    s->done = 1;
    /* before the final event: the client may send its next request at once */
    pthread_mutex_lock(&en->mu);
    unlive(en, c);
    pthread_mutex_unlock(&en->mu);
    if (r > 0) {
        post(c, EV_DONE, engine_gen_response(s->gen), NULL);
    } else {
        log_error("engine node %s: %s", en->model, err);
        post_error(c, 500, "server_error", "engine_failed", engine_gen_chunks(s->gen) > 0, err);
    }
}

/* Under en->mu: empties a slot whose call ended or was cancelled. */
static void release(engine_node *en, slot *s) {
    ecall *c = s->call;
    unlive(en, c);
    engine_gen_free(s->gen);
    s->gen = NULL;
    s->call = NULL;
    s->done = 0;
    call_unref(c);
}

/* Under en->mu: frees finished or cancelled slots, fills free ones from the
 * queue, and lists the slots to step. */
static int schedule(engine_node *en, slot **run) {
    int n = 0;
    for (int i = 0; i < en->n_slots; i++) {
        slot *s = &en->slots[i];
        if (s->call && (s->done || atomic_load(&s->call->cancelled))) release(en, s);
        if (!s->call && en->q_head) {
            s->call = en->q_head;
            en->q_head = s->call->next;
            if (!en->q_head) en->q_tail = NULL;
            s->call->next = NULL;
            s->call->queued = 0;
        }
        if (s->call && !atomic_load(&s->call->paused)) run[n++] = s;
    }
    return n;
}

static void *generation_main(void *arg) {
    engine_node *en = arg;
    slot **run = xcalloc((size_t)en->n_slots, sizeof *run);
    pthread_mutex_lock(&en->mu);
    while (!en->stop) {
        int n = schedule(en, run);
        if (!n) {
            pthread_cond_wait(&en->wake, &en->mu);
            continue;
        }
        pthread_mutex_unlock(&en->mu);
        for (int i = 0; i < n; i++)
            if (!atomic_load(&run[i]->call->cancelled)) step(en, run[i]);
        pthread_mutex_lock(&en->mu);
    }
    pthread_mutex_unlock(&en->mu);
    free(run);
    return NULL;
}

/* ---- attach / detach ---- */

static void engine_free(engine_node *en) {
    for (int i = 0; en->slots && i < en->n_slots; i++) llama_ctx_free(en->slots[i].ctx);
    free(en->slots);
    tp_destroy(en->tp);
    tokenizer_free(en->tk);
    llama_free(en->m);
    free(en->model);
    pthread_cond_destroy(&en->wake);
    pthread_mutex_destroy(&en->mu);
    free(en);
}

static int attach_fail(engine_node *en, char **err, const char *path, const char *why) {
    buf m = BUF_INIT;
    buf_printf(&m, "%s: %s", path, why);
    *err = buf_detach(&m);
    engine_free(en);
    return -1;
}

int engine_node_attach(node *n, const char *gguf_path, int n_threads, int max_slots, int max_queue, char **err) {
    *err = NULL;
    engine_node *en = xcalloc(1, sizeof *en);
    pthread_mutex_init(&en->mu, NULL);
    pthread_cond_init(&en->wake, NULL);
    atomic_init(&en->next_id, 1);
    en->n_slots = max_slots < 1 ? 1 : max_slots;
    en->max_queue = max_queue < 0 ? 0 : max_queue;
    en->model = xstrdup(n->model ? n->model : n->name);
    char msg[512];
    if (!(en->m = llama_load(gguf_path, msg, sizeof msg))) return attach_fail(en, err, gguf_path, msg);
    if (!(en->tk = tokenizer_load(llama_gguf(en->m), msg, sizeof msg)))
        return attach_fail(en, err, gguf_path, msg);
    en->family = chat_family_from_gguf(llama_gguf(en->m), msg, sizeof msg);
    if (en->family < 0)   /* a base model, or a template msoa does not know */
        log_info("engine node %s: no usable chat template (%s): prompts are the messages' text joined by newlines",
                 n->name, msg);
    en->n_vocab = llama_model_hparams(en->m)->n_vocab;
    if (!(en->tp = tp_create(n_threads))) return attach_fail(en, err, gguf_path, "cannot start the engine's threads");
    en->slots = xcalloc((size_t)en->n_slots, sizeof *en->slots);
    for (int i = 0; i < en->n_slots; i++) en->slots[i].ctx = llama_ctx_new_shared(en->m, 0, en->tp);
    en->n_ctx = llama_ctx_size(en->slots[0].ctx);
    if (pthread_create(&en->thread, NULL, generation_main, en) != 0)
        return attach_fail(en, err, gguf_path, "cannot start the generation thread");
    n->backend = &engine_backend;
    n->backend_state = en;
    atomic_store(&n->reachable, 1);
    log_info("engine node %s: %s, context %d, %d slots, queue %d, template %s", n->name, gguf_path, en->n_ctx,
             en->n_slots, en->max_queue, en->family >= 0 ? chat_family_name(en->family) : "none (plain)");
    return 0;
}

/* A call the engine still holds at detach: told so, if its loop listens. */
static void abandon(ecall *c) {
    if (!atomic_load(&c->cancelled))
        post_error(c, 503, "service_unavailable", "node_stopped", 0, "the node was stopped");
    call_unref(c);
}

void engine_node_detach(node *n) {
    if (n->backend != &engine_backend) return;
    engine_node *en = n->backend_state;
    pthread_mutex_lock(&en->mu);
    en->stop = 1;
    pthread_cond_signal(&en->wake);
    pthread_mutex_unlock(&en->mu);
    pthread_join(en->thread, NULL);
    for (int i = 0; i < en->n_slots; i++) {
        slot *s = &en->slots[i];
        engine_gen_free(s->gen);
        if (s->call && !s->done) abandon(s->call);
        else if (s->call) call_unref(s->call);
    }
    while (en->q_head) {
        ecall *c = en->q_head;
        en->q_head = c->next;
        abandon(c);
    }
    engine_free(en);
    n->backend = NULL;
    n->backend_state = NULL;
    atomic_store(&n->reachable, 0);
}
