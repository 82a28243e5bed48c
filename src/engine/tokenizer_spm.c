/* tokenizer_spm: SentencePiece-style BPE ("llama" tokenizers).
 *
 * Starting from single UTF-8 characters, the adjacent pair whose
 * concatenation is a vocabulary token with the highest score is merged,
 * repeatedly. Characters that end up as no token at all are spelled with
 * byte tokens <0xXX> (byte fallback). The caller has already replaced
 * spaces by U+2581 and added the leading one. */
#include "engine/tokenizer_impl.h"

#include <stdlib.h>

static int spm_pair(const tokenizer *t, const char *s, size_t left_len, size_t right_len, double *prio) {
    int32_t id = tok_map_get(&t->vocab, s, left_len + right_len);
    if (id < 0) return 0;
    *prio = t->score[id];
    return 1;
}

void spm_encode(const tokenizer *t, const char *text, size_t len, tok_vec *out) {
    int n;
    tok_sym *sym = tok_merge(t, text, len, spm_pair, &n);
    /* every merged symbol is a token by construction; only single
     * characters can be missing from the vocabulary */
    for (int i = n ? 0 : -1; i >= 0; i = sym[i].next) {
        int32_t id = tok_map_get(&t->vocab, sym[i].s, sym[i].n);
        if (id >= 0) {
            tok_vec_push(out, id);
            continue;
        }
        for (size_t j = 0; j < sym[i].n; j++) {
            int32_t b = t->byte_token[(unsigned char)sym[i].s[j]];
            if (b >= 0) tok_vec_push(out, b); /* no byte token and no <unk>: nothing to say */
        }
    }
    free(sym);
}
