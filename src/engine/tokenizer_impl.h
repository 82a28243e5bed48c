/* tokenizer_impl: what tokenizer.c, tokenizer_spm.c, tokenizer_bpe.c and
 * tokenizer_unicode.c share and nobody else needs: the tokenizer struct,
 * the string -> id map, the id vector and the merge loop common to both
 * BPE flavours. */
#ifndef MSOA_ENGINE_TOKENIZER_IMPL_H
#define MSOA_ENGINE_TOKENIZER_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

/* Open-addressing map from byte strings (owned elsewhere) to ids. */
typedef struct tok_map_entry {
    const char *s;
    uint32_t len;
    int32_t val;
} tok_map_entry;

typedef struct tok_map {
    tok_map_entry *e;
    uint32_t mask;
} tok_map;

void tok_map_init(tok_map *m, size_t n);
void tok_map_free(tok_map *m);
void tok_map_put(tok_map *m, const char *s, size_t len, int32_t val);   /* last put wins */
int32_t tok_map_get(const tok_map *m, const char *s, size_t len);       /* -1 if absent */

typedef struct tok_vec {
    int32_t *v;
    int n, cap;
} tok_vec;

void tok_vec_push(tok_vec *v, int32_t id);

/* BPE pre-tokenizers; PRE_DIGITS_GPT2 splits off every digit first, then applies GPT-2 rules. */
enum tok_pre { PRE_GPT2, PRE_LLAMA3, PRE_QWEN2, PRE_DIGITS_GPT2 };

struct tokenizer {
    enum tok_model model;
    enum tok_pre pre;
    int n_vocab;
    const char **text;        /* NUL-terminated, in `strings` */
    uint32_t *len;
    float *score;
    unsigned char *type;      /* enum tok_type */
    char *strings;
    tok_map vocab;
    tok_map merges;           /* "left right" -> rank */
    char *merge_strings;
    int32_t bos, eos, unk, eot, eom;
    int add_bos, add_eos, add_space_prefix, ignore_merges;
    int32_t *special;         /* control/user/unknown ids, longest text first */
    int n_special;
    int32_t byte_token[256];  /* SPM: <0xXX>; BPE: the token of the byte's mapped character */
    uint16_t byte_cp[256];    /* BPE: byte -> printable code point */
    int16_t cp_byte[324];     /* BPE: the reverse, -1 if not a mapped code point */
};

/* One piece of text being merged; merged pieces have n == 0. */
typedef struct tok_sym {
    const char *s;
    size_t n;
    int prev, next;
} tok_sym;

/* Priority of merging symbols left and right, higher first; returns 0 if
 * the pair cannot merge. */
typedef int (*tok_pair_fn)(const tokenizer *t, const char *s, size_t left_len, size_t right_len, double *prio);

/* Splits text into UTF-8 characters and merges adjacent pairs by priority
 * (ties: leftmost first) until none can merge. Returns the symbol array
 * (caller frees); the live symbols are chained from index 0 by next. */
tok_sym *tok_merge(const tokenizer *t, const char *text, size_t len, tok_pair_fn pair, int *n_syms);

void spm_encode(const tokenizer *t, const char *text, size_t len, tok_vec *out);
void bpe_encode(const tokenizer *t, const char *text, size_t len, tok_vec *out);
void bpe_init_bytes(tokenizer *t);
/* Splits code points cp[0..n) into words by t->pre; returns the word end
 * positions (malloc'ed, *n_words of them). */
size_t *bpe_pre_tokenize(const tokenizer *t, const uint32_t *cp, size_t n, size_t *n_words);
/* Appends the bytes a BPE token stands for (its characters mapped back). */
void bpe_unmap(const tokenizer *t, const char *s, size_t len, buf *out);

/* Unicode support (tokenizer_unicode.c). */
enum { UC_NONE = 0, UC_WHITESPACE = 1, UC_LETTER = 2, UC_NUMBER = 3, UC_OTHER = 4 };
int tok_ucd_class(uint32_t cp);
size_t tok_utf8_len(unsigned char lead);
size_t tok_utf8_decode(const char *s, size_t len, uint32_t *cp);
size_t tok_utf8_encode(uint32_t cp, char out[4]);

#endif
