/* tokenizer: text <-> token ids, built from a GGUF file's tokenizer metadata.
 *
 * Two families, chosen by tokenizer.ggml.model:
 *   "llama"  SentencePiece-style BPE: merges chosen by token score, spaces
 *            written as U+2581, a space prefixed to the text, unknown
 *            characters spelled as byte tokens <0xXX>.
 *   "gpt2"   byte-level BPE: the text is split by a pre-tokenizer regex
 *            (tokenizer.ggml.pre picks GPT-2, Llama 3 or Qwen2 rules), each
 *            byte mapped to a printable character, then merged by the rank
 *            of tokenizer.ggml.merges.
 * Both reproduce llama.cpp's tokenisation exactly (tested on its vectors).
 *
 * The tokenizer copies what it needs: the gguf handle may be closed after
 * tokenizer_load. A loaded tokenizer is read-only, so one can serve many
 * threads at once. */
#ifndef MSOA_ENGINE_TOKENIZER_H
#define MSOA_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "engine/gguf.h"

typedef struct tokenizer tokenizer;

enum tok_model { TOK_SPM, TOK_BPE };

/* Token types, as stored in tokenizer.ggml.token_type. */
enum tok_type {
    TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3,
    TOKT_USER = 4, TOKT_UNUSED = 5, TOKT_BYTE = 6,
};

/* tokenizer_encode flags */
#define TOK_ADD_SPECIAL 1    /* add BOS/EOS as the model's add_bos/add_eos say */
#define TOK_PARSE_SPECIAL 2  /* text like "<|im_start|>" becomes its control token */

/* tokenizer_piece / tokenizer_decode flags */
#define TOK_RENDER_SPECIAL 1 /* control tokens as their text (default: nothing) */
#define TOK_STRIP_SPACE 2    /* drop the space the SPM prefix put before the first word */

tokenizer *tokenizer_load(const gguf *g, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);

enum tok_model tokenizer_model(const tokenizer *t);
const char *tokenizer_model_name(const tokenizer *t);  /* "llama" or "gpt2" */
const char *tokenizer_pre_name(const tokenizer *t);    /* BPE pre-tokenizer: "gpt-2", "llama3", "qwen2" */
int tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t);             /* -1 if the model has none */
int32_t tokenizer_eos(const tokenizer *t);
int tokenizer_add_bos(const tokenizer *t);
int tokenizer_add_eos(const tokenizer *t);
/* End of generation: EOS, EOT, or a control token such as <|im_end|>. */
int tokenizer_is_eog(const tokenizer *t, int32_t id);
int tokenizer_token_type(const tokenizer *t, int32_t id);   /* 0 if out of range */
const char *tokenizer_token_text(const tokenizer *t, int32_t id); /* raw vocabulary text, NULL if out of range */
int32_t tokenizer_find(const tokenizer *t, const char *text);  /* exact vocabulary entry, -1 if none */

/* Encodes len bytes of text. Sets *ids to a malloc'ed array (caller frees)
 * and returns the number of ids. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids);

/* Appends the bytes of one token (possibly part of a UTF-8 character:
 * byte tokens are single bytes). Out-of-range ids append nothing. */
void tokenizer_piece(const tokenizer *t, int32_t id, unsigned flags, buf *out);
/* Appends the text of a token sequence. */
void tokenizer_decode(const tokenizer *t, const int32_t *ids, int n, unsigned flags, buf *out);

/* Incremental decoding for streaming: tokens go in one at a time, and only
 * whole UTF-8 characters come out (a character spelled by several byte
 * tokens is held until complete; bytes that can never form one are passed
 * through). TOK_STRIP_SPACE applies to the first text produced. */
typedef struct tok_stream {
    const tokenizer *t;
    unsigned flags;
    int started;
    buf held;
} tok_stream;

void tok_stream_init(tok_stream *s, const tokenizer *t, unsigned flags);
void tok_stream_push(tok_stream *s, int32_t id, buf *out);
void tok_stream_flush(tok_stream *s, buf *out);   /* emits whatever is held */
void tok_stream_free(tok_stream *s);

#endif
