/* tokenizer_bpe: byte-level BPE ("gpt2" tokenizers: GPT-2, Llama 3, Qwen2...).
 *
 * Encoding has three steps:
 *  1. pre-tokenisation splits the text into words with the model's regex,
 *     implemented by hand below. GPT-2's is
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     and Llama 3's (Qwen2's is the same with \p{N} instead of \p{N}{1,3})
 *       (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *       | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *     The text is handled as code points; malformed UTF-8 becomes U+FFFD.
 *  2. every byte of a word is mapped to a printable character (GPT-2's
 *     byte-to-unicode table: printable Latin-1 bytes map to themselves,
 *     the others to U+0100 onwards, in order);
 *  3. adjacent symbols are merged by the rank of the pair in
 *     tokenizer.ggml.merges, lowest rank first. */
#include "engine/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

void bpe_init_bytes(tokenizer *t) {
    int next = 256;
    memset(t->cp_byte, 0xff, sizeof t->cp_byte);
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        t->byte_cp[b] = (uint16_t)(printable ? b : next++);
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

void bpe_unmap(const tokenizer *t, const char *s, size_t len, buf *out) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = tok_utf8_decode(s + i, len - i, &cp);
        if (cp < sizeof t->cp_byte / sizeof t->cp_byte[0] && t->cp_byte[cp] >= 0) buf_putc(out, (char)t->cp_byte[cp]);
        else buf_append(out, s + i, n);   /* not a mapped byte: keep the character */
        i += n;
    }
}

/* ---- pre-tokenisation ---- */

/* The code points of the text being split; positions past `end` read as
 * nothing (class NONE), as a regex sees the end of its input. */
typedef struct splitter {
    const uint32_t *cp;
    size_t end, prev_end;
    size_t *cuts;      /* word end positions */
    size_t n_cuts, cap_cuts;
} splitter;

static uint32_t cp_at(const splitter *sp, size_t i) { return i < sp->end ? sp->cp[i] : 0; }
static int cls_at(const splitter *sp, size_t i) { return i < sp->end ? tok_ucd_class(sp->cp[i]) : UC_NONE; }

/* Ends the current word at `end` (empty words are dropped); returns its length. */
static size_t cut(splitter *sp, size_t end) {
    size_t len = end - sp->prev_end;
    if (len) {
        if (sp->n_cuts == sp->cap_cuts) {
            sp->cap_cuts = sp->cap_cuts ? sp->cap_cuts * 2 : 64;
            sp->cuts = xrealloc(sp->cuts, sp->cap_cuts * sizeof *sp->cuts);
        }
        sp->cuts[sp->n_cuts++] = end;
    }
    sp->prev_end = end;
    return len;
}

static uint32_t ascii_lower(uint32_t c, int fold) { return fold && c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 's 't 're 've 'm 'll 'd at pos: the match length, or 0. */
static size_t contraction(const splitter *sp, size_t pos, int fold) {
    if (cp_at(sp, pos) != '\'' || pos + 1 >= sp->end) return 0;
    uint32_t a = ascii_lower(cp_at(sp, pos + 1), fold);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= sp->end) return 0;
    uint32_t b = ascii_lower(cp_at(sp, pos + 2), fold);
    return (a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l') ? 3 : 0;
}

/* \s+(?!\S) then \s+ at pos (ws = length of the whitespace run there):
 * a run followed by a non-space leaves its last character to that word. */
static size_t whitespace_end(const splitter *sp, size_t pos, size_t ws) {
    if (ws > 1 && cls_at(sp, pos + ws) != UC_NONE) return pos + ws - 1;
    return ws > 0 ? pos + ws : pos + 1;
}

static size_t run_of(const splitter *sp, size_t pos, int cls) {
    while (cls_at(sp, pos) == cls) pos++;
    return pos;
}

static void split_gpt2(splitter *sp, size_t pos) {
    while (pos < sp->end) {
        size_t c = contraction(sp, pos, 0);
        if (c) {
            pos += cut(sp, pos + c);
            continue;
        }
        uint32_t cp = cp_at(sp, pos);
        int cls = cls_at(sp, pos);
        int cls2 = cp == ' ' ? cls_at(sp, pos + 1) : cls;   /* class after an optional space */
        if (cls2 == UC_LETTER || cls2 == UC_NUMBER || cls2 == UC_OTHER) {
            pos = run_of(sp, pos + (cp == ' '), cls2);
            cut(sp, pos);
            continue;
        }
        size_t ws = run_of(sp, pos, UC_WHITESPACE) - pos;
        pos = whitespace_end(sp, pos, ws);
        cut(sp, pos);
    }
}

static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

static void split_llama3(splitter *sp, size_t pos, size_t max_digits) {
    while (pos < sp->end) {
        size_t c = contraction(sp, pos, 1);
        if (c) {
            pos += cut(sp, pos + c);
            continue;
        }
        uint32_t cp = cp_at(sp, pos);
        int cls = cls_at(sp, pos);
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!is_crlf(cp) && cls != UC_NUMBER && (cls == UC_LETTER || cls_at(sp, pos + 1) == UC_LETTER)) {
            pos = run_of(sp, pos + 1, UC_LETTER);
            cut(sp, pos);
            continue;
        }
        /* \p{N}{1,max} */
        if (cls == UC_NUMBER) {
            size_t start = pos;
            while (cls_at(sp, pos) == UC_NUMBER)
                if (++pos - start >= max_digits) {
                    cut(sp, pos);
                    start = pos;
                }
            cut(sp, pos);
            continue;
        }
        /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
        int cls2 = cp == ' ' ? cls_at(sp, pos + 1) : cls;
        if (cls2 != UC_WHITESPACE && cls2 != UC_LETTER && cls2 != UC_NUMBER && cls != UC_NONE) {
            pos = run_of(sp, pos + (cp == ' '), UC_OTHER);
            while (is_crlf(cp_at(sp, pos))) pos++;
            cut(sp, pos);
            continue;
        }
        /* \s*[\r\n]+ then \s+(?!\S) then \s+ */
        size_t ws = 0, last_crlf = 0;
        for (; cls_at(sp, pos + ws) == UC_WHITESPACE; ws++)
            if (is_crlf(cp_at(sp, pos + ws))) last_crlf = pos + ws + 1;
        pos = last_crlf ? last_crlf : whitespace_end(sp, pos, ws);
        cut(sp, pos);
    }
}

size_t *bpe_pre_tokenize(const tokenizer *t, const uint32_t *cp, size_t n, size_t *n_words) {
    splitter sp = {.cp = cp, .end = n};
    switch (t->pre) {
    case PRE_GPT2: split_gpt2(&sp, 0); break;
    case PRE_LLAMA3: split_llama3(&sp, 0, 3); break;
    case PRE_QWEN2: split_llama3(&sp, 0, 1); break;
    case PRE_DIGITS_GPT2:
        /* every digit is a chunk of its own; GPT-2 rules split the rest */
        for (size_t i = 0; i < n;) {
            size_t j = i + 1;
            if (tok_ucd_class(cp[i]) != UC_NUMBER)
                while (j < n && tok_ucd_class(cp[j]) != UC_NUMBER) j++;
            sp.end = j;
            split_gpt2(&sp, i);
            i = j;
        }
        break;
    }
    *n_words = sp.n_cuts;
    return sp.cuts;
}

/* ---- merging ---- */

static int bpe_pair(const tokenizer *t, const char *s, size_t left_len, size_t right_len, double *prio) {
    char small[256];
    size_t n = left_len + right_len + 1;
    char *key = n <= sizeof small ? small : xmalloc(n);
    memcpy(key, s, left_len);
    key[left_len] = ' ';
    memcpy(key + left_len + 1, s + left_len, right_len);
    int32_t rank = tok_map_get(&t->merges, key, n);
    if (key != small) free(key);
    if (rank < 0) return 0;
    *prio = -(double)rank;
    return 1;
}

static void bpe_word(const tokenizer *t, const char *w, size_t len, tok_vec *out) {
    int32_t whole = t->ignore_merges ? tok_map_get(&t->vocab, w, len) : -1;
    if (whole >= 0) {
        tok_vec_push(out, whole);
        return;
    }
    int n;
    tok_sym *sym = tok_merge(t, w, len, bpe_pair, &n);
    for (int i = n ? 0 : -1; i >= 0; i = sym[i].next) {
        int32_t id = tok_map_get(&t->vocab, sym[i].s, sym[i].n);
        if (id >= 0) {
            tok_vec_push(out, id);
            continue;
        }
        /* no such token: fall back to the single bytes that are tokens */
        for (size_t j = 0; j < sym[i].n; j++) {
            int32_t b = tok_map_get(&t->vocab, sym[i].s + j, 1);
            if (b >= 0) tok_vec_push(out, b);
        }
    }
    free(sym);
}

void bpe_encode(const tokenizer *t, const char *text, size_t len, tok_vec *out) {
    uint32_t *cp = xmalloc((len ? len : 1) * sizeof *cp);
    size_t n = 0;
    for (size_t i = 0; i < len; n++) i += tok_utf8_decode(text + i, len - i, &cp[n]);
    size_t n_words;
    size_t *ends = bpe_pre_tokenize(t, cp, n, &n_words);
    buf word = BUF_INIT;
    size_t start = 0;
    for (size_t w = 0; w < n_words; w++) {
        buf_clear(&word);
        for (size_t i = start; i < ends[w]; i++) {
            char raw[4], mapped[4];
            size_t rn = tok_utf8_encode(cp[i], raw);
            for (size_t k = 0; k < rn; k++) buf_append(&word, mapped, tok_utf8_encode(t->byte_cp[(unsigned char)raw[k]], mapped));
        }
        bpe_word(t, word.data, word.len, out);
        start = ends[w];
    }
    buf_free(&word);
    free(ends);
    free(cp);
}
