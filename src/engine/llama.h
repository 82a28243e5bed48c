/* llama: a Llama-family transformer read from a GGUF file, and its forward
 * pass with a KV cache.
 *
 * One model (the weights, mmap'ed through gguf.h; Q4_0 matrices are also
 * repacked into an interleaved copy by the first product that uses them,
 * unless MSOA_REPACK=0, see llama.c) can be shared by any number of
 * contexts; a context holds one sequence's KV cache,
 * scratch buffers and a thread pool, and is used by one thread at a time.
 * The hyper-parameters come from the file's metadata, so the same code runs
 * Llama 2/3, Mistral, TinyLlama, SmolLM ("llama" architecture: RoPE on
 * adjacent pairs) and Qwen2 (RoPE on halves, biases on Q/K/V).
 *
 * Threads: a context made with llama_ctx_new owns a pool of n_threads (the
 * caller's thread is one of them; llama_forward returns when all are done).
 * Several contexts (one per concurrent request) can share one pool with
 * llama_ctx_new_shared, as long as their forward calls take turns.
 *
 * Typical use (a node's generation loop):
 *   llama_model *m = llama_load("model.gguf", err, sizeof err);
 *   llama_ctx *c = llama_ctx_new(m, 4096, 2);         // context, threads
 *   const float *logits = llama_forward(c, prompt_ids, n_prompt);  // prefill
 *   for (;;) { int t = sample(logits); ...; logits = llama_forward(c, &t, 1); }
 *   llama_ctx_free(c); llama_free(m);
 * Tokenizer and sampler are separate (tokenizer.h, sampler.h) and read the
 * same gguf handle (llama_gguf). */
#ifndef MSOA_ENGINE_LLAMA_H
#define MSOA_ENGINE_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct llama_hparams {
    char arch[32];         /* general.architecture */
    int n_vocab;
    int dim;               /* embedding length */
    int n_layers;
    int n_heads, n_kv_heads, head_dim;
    int ffn_dim;
    int n_ctx_train;       /* context length the model was trained for */
    float rms_eps;
    int rope_neox;         /* 1: rotate (i, i + rope_dim/2); 0: adjacent pairs */
    int rope_dim;          /* leading dimensions of a head that are rotated */
    float rope_base;       /* frequency base */
    float rope_freq_scale; /* 1 / linear scaling factor */
    int tied_output;       /* output projection reuses token_embd */
} llama_hparams;

typedef struct llama_model llama_model;
typedef struct llama_ctx llama_ctx;

/* Opens, validates and maps a GGUF file: every tensor the architecture needs
 * must be present with the right shape and a supported type. On error
 * returns NULL with a one-line message in err. Loading maps the file and
 * reads only the small norm vectors, so it takes milliseconds. */
llama_model *llama_load(const char *path, char *err, size_t errlen);
/* The same over an already opened gguf; the model takes ownership of g
 * (closed by llama_free, or here on error). */
llama_model *llama_load_gguf(gguf *g, char *err, size_t errlen);
void llama_free(llama_model *m);

/* Maps every page of the file now (MADV_POPULATE_READ, or reading one byte
 * per page) so that the first request does not pay for page faults; reads
 * the file from disk if it is not cached. Optional, can run on another
 * thread while the model already serves. Returns 0, or -1 if the file is
 * not memory-mapped. */
int llama_prefault(const llama_model *m);

const llama_hparams *llama_model_hparams(const llama_model *m);
const gguf *llama_gguf(const llama_model *m);      /* for the tokenizer */
size_t llama_weight_bytes(const llama_model *m);  /* bytes read per token */
/* Calls f for each range of memory a token reads its matrices from: the
 * mapped file's, or the repacked copy of a Q4_0 matrix made by the first
 * product with it (see llama.c). */
void llama_weight_ranges(const llama_model *m, void (*f)(void *arg, const void *p, size_t n), void *arg);

/* A context for up to n_ctx positions (0: the model's training length,
 * capped at 4096; rounded up to a multiple of 32), with n_threads threads
 * (< 1: 1). The KV cache is F16: 4 * n_layers * n_ctx * n_kv_heads *
 * head_dim bytes. NULL if a thread cannot be started. */
llama_ctx *llama_ctx_new(const llama_model *m, int n_ctx, int n_threads);
/* The same on a thread pool shared with other contexts (threadpool.h; it
 * must outlive them). The pool runs one step at a time, so the contexts'
 * llama_forward calls must not overlap: e.g. one inference thread per
 * model taking turns between the requests (slots) it serves. */
struct threadpool;
llama_ctx *llama_ctx_new_shared(const llama_model *m, int n_ctx, struct threadpool *tp);
void llama_ctx_free(llama_ctx *c);
int llama_ctx_size(const llama_ctx *c);   /* n_ctx */
int llama_ctx_pos(const llama_ctx *c);    /* tokens already in the cache */
/* Forgets everything from position pos on (0: start a new sequence; a
 * larger value keeps a shared prompt prefix). pos > llama_ctx_pos is -1. */
int llama_ctx_rewind(llama_ctx *c, int pos);

/* Runs n tokens (a prompt chunk or one generated token) at the current
 * position, appends them to the KV cache and returns the n_vocab logits of
 * the last one (owned by the context, valid until the next call). NULL if
 * n < 1, a token id is out of range or the context would overflow (nothing
 * is changed then). */
const float *llama_forward(llama_ctx *c, const int32_t *tokens, int n);

#endif
