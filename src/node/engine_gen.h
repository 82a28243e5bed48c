/* engine_gen: one chat completion generated on one llama context, step by
 * step, written out as OpenAI objects.
 *
 * A step is a prefill chunk or one token, so the node's generation thread
 * can interleave several of these (one per slot) and check for cancellation
 * between steps. Streaming output follows an OpenAI server: a first chunk
 * with delta {role: "assistant"}, content chunks carrying only whole UTF-8
 * characters, a chunk with finish_reason, then a usage chunk with empty
 * choices. Non-streaming output is one chat.completion with usage.
 *
 * Counting: prompt_tokens are the template-rendered prompt's tokens (BOS
 * included); completion_tokens every token sampled, including the
 * end-of-generation token that ends an answer (as llama.cpp's server counts:
 * it was computed). Stop strings: the text is held back while it could be
 * the start of one; the stop string and what follows it are never sent, nor
 * are log-probabilities of tokens whose text was not sent. */
#ifndef MSOA_NODE_ENGINE_GEN_H
#define MSOA_NODE_ENGINE_GEN_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "engine/llama.h"
#include "engine/tokenizer.h"
#include "node/engine_request.h"

typedef struct engine_gen engine_gen;

/* Receives each streaming chunk (ownership passes). */
typedef void (*engine_emit_fn)(void *ud, cJSON *chunk);

typedef struct engine_gen_opts {
    const tokenizer *tk;
    llama_ctx *ctx;             /* rewound here; used by this generation only */
    int n_vocab;                /* the model's logits */
    const engine_request *rq;   /* must outlive the generation */
    int stream;
    const char *id, *model;     /* written into every object */
    engine_emit_fn emit;        /* streaming only */
    void *ud;
} engine_gen_opts;

engine_gen *engine_gen_new(const engine_gen_opts *o);
/* 0: more to do; 1: finished (everything emitted; non-streaming: see
 * engine_gen_response); -1: the forward pass failed, message in err. */
int engine_gen_step(engine_gen *g, char *err, size_t errlen);
/* Non-streaming, once finished: the chat.completion (caller owns). */
cJSON *engine_gen_response(engine_gen *g);
int engine_gen_chunks(const engine_gen *g);   /* streaming chunks emitted so far */
void engine_gen_free(engine_gen *g);

#endif
