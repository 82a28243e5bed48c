/* engine_request: an OpenAI chat request turned into what the built-in
 * engine runs — prompt token ids and generation settings.
 *
 * Parsing happens on the gateway's loop thread when the call starts, so a bad
 * request is answered at once without taking a slot. Every field the engine
 * uses is checked and a wrong value is a 400 naming the field; fields the
 * engine has no use for (tools, response_format, ...) are ignored, as other
 * OpenAI-compatible servers do.
 *
 * The prompt: messages rendered with the model's chat template family, then
 * tokenized with BOS and control tokens parsed. A model without a template
 * (family < 0, e.g. the stories260K test model, a base model) gets the plain
 * concatenation of the message contents joined by "\n", so one user message
 * is exactly its content — a completion-style prompt. */
#ifndef MSOA_NODE_ENGINE_REQUEST_H
#define MSOA_NODE_ENGINE_REQUEST_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "mesh/dispatch_events.h"

#define ENGINE_MAX_STOP 16          /* OpenAI allows 4; llama.cpp servers more */
#define ENGINE_MAX_TOP_LOGPROBS 20  /* OpenAI's limit */

typedef struct engine_request {
    int32_t *prompt;        /* malloc'ed token ids, BOS included */
    int n_prompt;
    sampler_params sp;      /* llama.cpp server defaults, overridden by the request */
    int max_tokens;         /* tokens to generate at most, already capped at the context */
    char *stop[ENGINE_MAX_STOP];
    int n_stop;
    int logprobs;           /* report per-token log-probabilities */
    int top_logprobs;       /* alternatives per token, 0..ENGINE_MAX_TOP_LOGPROBS */
} engine_request;

/* Fills r from the request for a model with context n_ctx. Returns 0, or -1
 * with e set (status 400; code "context_length_exceeded" when the prompt does
 * not fit, else "invalid_request_error"-type codes naming the field); r then
 * holds nothing to free. */
int engine_request_parse(const cJSON *req, const tokenizer *tk, int family, int n_ctx, engine_request *r,
                         dispatch_error *e);
void engine_request_free(engine_request *r);

#endif
