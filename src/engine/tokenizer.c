/* tokenizer: see tokenizer.h. Loading from GGUF metadata, special-token
 * splitting, the merge loop both BPE flavours share, and decoding. The
 * flavour-specific parts live in tokenizer_spm.c and tokenizer_bpe.c. */
#include "engine/tokenizer_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

/* ---- string -> id map ---- */

static uint32_t hash_bytes(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

void tok_map_init(tok_map *m, size_t n) {
    uint32_t cap = 16;
    while (cap < n * 2) cap *= 2;
    m->e = xcalloc(cap, sizeof *m->e);
    m->mask = cap - 1;
}

void tok_map_free(tok_map *m) {
    free(m->e);
    m->e = NULL;
}

static tok_map_entry *map_slot(const tok_map *m, const char *s, size_t len) {
    uint32_t h = hash_bytes(s, len) & m->mask;
    for (;;) {
        tok_map_entry *e = &m->e[h];
        if (!e->s || (e->len == len && memcmp(e->s, s, len) == 0)) return e;
        h = (h + 1) & m->mask;
    }
}

void tok_map_put(tok_map *m, const char *s, size_t len, int32_t val) {
    tok_map_entry *e = map_slot(m, s, len);
    e->s = s;
    e->len = (uint32_t)len;
    e->val = val;
}

int32_t tok_map_get(const tok_map *m, const char *s, size_t len) {
    if (!m->e) return -1;
    const tok_map_entry *e = map_slot(m, s, len);
    return e->s ? e->val : -1;
}

void tok_vec_push(tok_vec *v, int32_t id) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->v = xrealloc(v->v, (size_t)v->cap * sizeof *v->v);
    }
    v->v[v->n++] = id;
}

/* ---- the merge loop ---- */

typedef struct bigram {
    int left, right;
    double prio;
    size_t size;
} bigram;

typedef struct heap {
    bigram *a;
    size_t n, cap;
} heap;

/* a before b: higher priority, then further left */
static int before(const bigram *a, const bigram *b) {
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static void heap_push(heap *h, bigram b) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->a = xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    while (i > 0 && before(&b, &h->a[(i - 1) / 2])) {
        h->a[i] = h->a[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->a[i] = b;
}

static bigram heap_pop(heap *h) {
    bigram top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->a[c + 1], &h->a[c])) c++;
        if (!before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    h->a[i] = last;
    return top;
}

static void try_pair(const tokenizer *t, tok_sym *sym, int left, int right, tok_pair_fn pair, heap *h) {
    double prio;
    if (left < 0 || right < 0) return;
    if (!pair(t, sym[left].s, sym[left].n, sym[right].n, &prio)) return;
    heap_push(h, (bigram){left, right, prio, sym[left].n + sym[right].n});
}

tok_sym *tok_merge(const tokenizer *t, const char *text, size_t len, tok_pair_fn pair, int *n_syms) {
    tok_sym *sym = xmalloc((len ? len : 1) * sizeof *sym);
    int n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t cl = tok_utf8_len((unsigned char)text[off]);
        if (cl > len - off) cl = len - off;
        sym[n] = (tok_sym){text + off, cl, n - 1, off + cl == len ? -1 : n + 1};
        off += cl;
    }
    heap h = {0};
    for (int i = 1; i < n; i++) try_pair(t, sym, i - 1, i, pair, &h);
    while (h.n) {
        bigram b = heap_pop(&h);
        tok_sym *l = &sym[b.left], *r = &sym[b.right];
        /* symbols only grow, so an unchanged total size means an unchanged pair */
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = b.left;
        try_pair(t, sym, l->prev, b.left, pair, &h);
        try_pair(t, sym, b.left, l->next, pair, &h);
    }
    free(h.a);
    *n_syms = n;
    return sym;
}

/* ---- loading ---- */

static tokenizer *load_fail(tokenizer *t, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static tokenizer *load_fail(tokenizer *t, char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        int n = snprintf(err, errlen, "tokenizer: ");
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    tokenizer_free(t);
    return NULL;
}

/* A token id from metadata, or -1 when absent or not a valid id. */
static int32_t meta_id(const gguf *g, const char *key, int n_vocab, int32_t dflt) {
    uint32_t v;
    if (gguf_get_u32(g, key, &v) < 0) return dflt;
    return v < (uint32_t)n_vocab ? (int32_t)v : -1;
}

static int meta_flag(const gguf *g, const char *key, int dflt) {
    int v;
    return gguf_get_bool(g, key, &v) == 0 ? v : dflt;
}

static const struct pre_name {
    const char *name;
    enum tok_pre pre;
    int ignore_merges;
} pre_names[] = {
    {"default", PRE_GPT2, 0},   {"gpt-2", PRE_GPT2, 0},       {"gpt2", PRE_GPT2, 0},
    {"llama3", PRE_LLAMA3, 1},  {"llama-v3", PRE_LLAMA3, 1},  {"llama-bpe", PRE_LLAMA3, 1},
    {"smaug-bpe", PRE_LLAMA3, 0}, {"falcon3", PRE_LLAMA3, 1}, {"pixtral", PRE_LLAMA3, 1},
    {"qwen2", PRE_QWEN2, 0},    {"deepseek-r1-qwen", PRE_QWEN2, 0},
    {"smollm", PRE_DIGITS_GPT2, 0}, {"starcoder", PRE_DIGITS_GPT2, 0}, {"refact", PRE_DIGITS_GPT2, 0},
};

static const char *const pre_display[] = {"gpt-2", "llama3", "qwen2", "smollm"};

/* Copies the vocabulary strings into one block and indexes them. */
static const char *load_vocab(tokenizer *t, const gguf_value *tokens) {
    size_t total = 0;
    for (uint64_t i = 0; i < tokens->arr.n; i++) total += tokens->arr.items[i].str.len + 1;
    t->strings = xmalloc(total ? total : 1);
    t->text = xmalloc((size_t)t->n_vocab * sizeof *t->text);
    t->len = xmalloc((size_t)t->n_vocab * sizeof *t->len);
    tok_map_init(&t->vocab, (size_t)t->n_vocab);
    char *p = t->strings;
    for (int i = 0; i < t->n_vocab; i++) {
        const gguf_value *s = &tokens->arr.items[i];
        if (s->str.len > UINT32_MAX / 2) return "token text too long";
        memcpy(p, s->str.s, s->str.len + 1);
        t->text[i] = p;
        t->len[i] = (uint32_t)s->str.len;
        tok_map_put(&t->vocab, p, s->str.len, i);
        p += s->str.len + 1;
    }
    return NULL;
}

static const char *load_scores_types(tokenizer *t, const gguf *g) {
    t->score = xcalloc((size_t)t->n_vocab, sizeof *t->score);
    t->type = xmalloc((size_t)t->n_vocab);
    memset(t->type, TOKT_NORMAL, (size_t)t->n_vocab);
    const gguf_value *scores = gguf_get_arr(g, "tokenizer.ggml.scores", -1);
    if (scores) {
        if (scores->arr.n != (uint64_t)t->n_vocab) return "tokenizer.ggml.scores length differs from the vocabulary";
        for (int i = 0; i < t->n_vocab; i++)
            if (gguf_arr_f32(scores, (uint64_t)i, &t->score[i]) < 0) return "tokenizer.ggml.scores is not numeric";
    }
    const gguf_value *types = gguf_get_arr(g, "tokenizer.ggml.token_type", -1);
    if (types) {
        if (types->arr.n != (uint64_t)t->n_vocab) return "tokenizer.ggml.token_type length differs from the vocabulary";
        for (int i = 0; i < t->n_vocab; i++) {
            int64_t v;
            if (gguf_arr_i64(types, (uint64_t)i, &v) < 0) return "tokenizer.ggml.token_type is not an integer array";
            t->type[i] = v >= TOKT_NORMAL && v <= TOKT_BYTE ? (unsigned char)v : TOKT_NORMAL;
        }
    }
    return NULL;
}

static const char *load_merges(tokenizer *t, const gguf *g) {
    const gguf_value *m = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_VT_STR);
    if (!m) return "gpt2 tokenizer without tokenizer.ggml.merges";
    size_t total = 0;
    for (uint64_t i = 0; i < m->arr.n; i++) total += m->arr.items[i].str.len + 1;
    t->merge_strings = xmalloc(total ? total : 1);
    tok_map_init(&t->merges, m->arr.n);
    char *p = t->merge_strings;
    for (uint64_t i = 0; i < m->arr.n && i < INT32_MAX; i++) {
        const gguf_value *s = &m->arr.items[i];
        memcpy(p, s->str.s, s->str.len + 1);
        /* "left right", split at the first space after the first byte */
        if (s->str.len < 3 || !memchr(p + 1, ' ', s->str.len - 1)) return "malformed entry in tokenizer.ggml.merges";
        tok_map_put(&t->merges, p, s->str.len, (int32_t)i);
        p += s->str.len + 1;
    }
    return NULL;
}

static int by_length_desc(const void *a, const void *b, void *ctx) {
    const tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static void index_specials(tokenizer *t) {
    t->special = xmalloc((size_t)t->n_vocab * sizeof *t->special);
    for (int i = 0; i < t->n_vocab; i++) {
        int ty = t->type[i];
        if ((ty == TOKT_CONTROL || ty == TOKT_USER || ty == TOKT_UNKNOWN) && t->len[i] > 0) t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, by_length_desc, t);
}

static void index_bytes(tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id = tok_map_get(&t->vocab, name, 6);
        if (id < 0) id = tok_map_get(&t->vocab, (const char[]){(char)b}, 1);
        t->byte_token[b] = id >= 0 ? id : t->unk;
    }
}

tokenizer *tokenizer_load(const gguf *g, char *err, size_t errlen) {
    const char *model = gguf_get_str(g, "tokenizer.ggml.model");
    if (!model) return load_fail(NULL, err, errlen, "no tokenizer.ggml.model in the file");
    tokenizer *t = xcalloc(1, sizeof *t);
    if (strcmp(model, "llama") == 0) t->model = TOK_SPM;
    else if (strcmp(model, "gpt2") == 0) t->model = TOK_BPE;
    else return load_fail(t, err, errlen, "unsupported tokenizer model '%s' (known: llama, gpt2)", model);
    const gguf_value *tokens = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VT_STR);
    if (!tokens || tokens->arr.n == 0 || tokens->arr.n > (1u << 24))
        return load_fail(t, err, errlen, "tokenizer.ggml.tokens missing, empty or too large");
    t->n_vocab = (int)tokens->arr.n;
    const char *why = load_vocab(t, tokens);
    if (!why) why = load_scores_types(t, g);
    if (!why && t->model == TOK_BPE) why = load_merges(t, g);
    if (why) return load_fail(t, err, errlen, "%s", why);
    if (t->model == TOK_BPE) {
        const char *pre = gguf_get_str(g, "tokenizer.ggml.pre");
        size_t i = 0, n = sizeof pre_names / sizeof pre_names[0];
        while (pre && i < n && strcmp(pre, pre_names[i].name) != 0) i++;
        if (i == n) return load_fail(t, err, errlen, "unknown pre-tokenizer '%s'", pre);
        t->pre = pre ? pre_names[i].pre : PRE_GPT2;
        t->ignore_merges = pre ? pre_names[i].ignore_merges : 0;
        bpe_init_bytes(t);
    }
    int spm = t->model == TOK_SPM;
    t->unk = meta_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, spm ? 0 : -1);
    t->bos = meta_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, spm ? 1 : -1);
    t->eos = meta_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, spm ? 2 : -1);
    t->eot = meta_id(g, "tokenizer.ggml.eot_token_id", t->n_vocab, -1);
    t->eom = meta_id(g, "tokenizer.ggml.eom_token_id", t->n_vocab, -1);
    t->add_bos = meta_flag(g, "tokenizer.ggml.add_bos_token", spm || t->pre == PRE_LLAMA3) && t->bos >= 0;
    t->add_eos = meta_flag(g, "tokenizer.ggml.add_eos_token", 0) && t->eos >= 0;
    t->add_space_prefix = meta_flag(g, "tokenizer.ggml.add_space_prefix", spm);
    if (spm) index_bytes(t);
    index_specials(t);
    return t;
}

void tokenizer_free(tokenizer *t) {
    if (!t) return;
    tok_map_free(&t->vocab);
    tok_map_free(&t->merges);
    free(t->text);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->strings);
    free(t->merge_strings);
    free(t->special);
    free(t);
}

/* ---- queries ---- */

enum tok_model tokenizer_model(const tokenizer *t) { return t->model; }
const char *tokenizer_model_name(const tokenizer *t) { return t->model == TOK_SPM ? "llama" : "gpt2"; }
const char *tokenizer_pre_name(const tokenizer *t) { return t->model == TOK_BPE ? pre_display[t->pre] : "none"; }
int tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
int tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
int tokenizer_add_eos(const tokenizer *t) { return t->add_eos; }

int tokenizer_token_type(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

const char *tokenizer_token_text(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->text[id] : NULL;
}

int32_t tokenizer_find(const tokenizer *t, const char *text) { return tok_map_get(&t->vocab, text, strlen(text)); }

int tokenizer_is_eog(const tokenizer *t, int32_t id) {
    static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                            "<|endoftext|>", "<|eom_id|>", "</s>"};
    if (id < 0 || id >= t->n_vocab) return 0;
    if (id == t->eos || id == t->eot || id == t->eom) return 1;
    if (t->type[id] != TOKT_CONTROL) return 0;
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++)
        if (strcmp(t->text[id], eog_texts[i]) == 0) return 1;
    return 0;
}

/* ---- encoding ---- */

/* The special token starting at s (longest first), or -1. Control and
 * unknown tokens count only when parse_special; user-defined ones always. */
static int32_t special_at(const tokenizer *t, const char *s, size_t len, int parse_special) {
    for (int i = 0; i < t->n_special; i++) {
        int32_t id = t->special[i];
        if (t->len[id] > len || (!parse_special && t->type[id] != TOKT_USER)) continue;
        if (memcmp(t->text[id], s, t->len[id]) == 0) return id;
    }
    return -1;
}

/* SPM writes spaces as U+2581 and, like SentencePiece, starts a run of
 * text (at the start or after a special token) with one. */
static void encode_raw(const tokenizer *t, const char *s, size_t len, int after_special, tok_vec *out) {
    if (t->model == TOK_BPE) {
        bpe_encode(t, s, len, out);
        return;
    }
    buf esc = BUF_INIT;
    if (t->add_space_prefix && after_special) buf_puts(&esc, "\xe2\x96\x81");
    for (size_t i = 0; i < len; i++) {
        if (s[i] == ' ') buf_puts(&esc, "\xe2\x96\x81");
        else buf_putc(&esc, s[i]);
    }
    spm_encode(t, esc.data, esc.len, out);
    buf_free(&esc);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, unsigned flags, int32_t **ids) {
    tok_vec out = {0};
    int parse_special = (flags & TOK_PARSE_SPECIAL) != 0;
    if ((flags & TOK_ADD_SPECIAL) && t->add_bos) tok_vec_push(&out, t->bos);
    size_t start = 0;
    int after_special = 1;
    for (size_t pos = 0; pos < len;) {
        int32_t id = t->n_special ? special_at(t, text + pos, len - pos, parse_special) : -1;
        if (id < 0) {
            pos++;
            continue;
        }
        if (pos > start) encode_raw(t, text + start, pos - start, after_special, &out);
        tok_vec_push(&out, id);
        after_special = 1;
        pos += t->len[id];
        start = pos;
    }
    if (len > start) encode_raw(t, text + start, len - start, after_special, &out);
    if ((flags & TOK_ADD_SPECIAL) && t->add_eos) tok_vec_push(&out, t->eos);
    if (!out.v) out.v = xmalloc(sizeof *out.v);
    *ids = out.v;
    return out.n;
}

/* ---- decoding ---- */

static void spm_unescape(const char *s, size_t len, buf *out) {
    for (size_t i = 0; i < len; i++) {
        if (i + 2 < len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            buf_putc(out, ' ');
            i += 2;
        } else {
            buf_putc(out, s[i]);
        }
    }
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

void tokenizer_piece(const tokenizer *t, int32_t id, unsigned flags, buf *out) {
    if (id < 0 || id >= t->n_vocab) return;
    const char *s = t->text[id];
    size_t len = t->len[id];
    switch (t->type[id]) {
    case TOKT_CONTROL:
        if (flags & TOK_RENDER_SPECIAL) buf_append(out, s, len);
        return;
    case TOKT_USER: buf_append(out, s, len); return;
    case TOKT_UNUSED: return;
    case TOKT_UNKNOWN:
        if (t->model == TOK_SPM) buf_puts(out, "\xe2\x96\x85");
        return;
    case TOKT_BYTE:
        if (len == 6 && memcmp(s, "<0x", 3) == 0 && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            buf_putc(out, (char)(hexval(s[3]) * 16 + hexval(s[4])));
            return;
        }
        break;
    default: break;
    }
    if (t->model == TOK_SPM) spm_unescape(s, len, out);
    else bpe_unmap(t, s, len, out);
}

void tokenizer_decode(const tokenizer *t, const int32_t *ids, int n, unsigned flags, buf *out) {
    int strip = (flags & TOK_STRIP_SPACE) != 0;
    for (int i = 0; i < n; i++) {
        size_t before = out->len;
        tokenizer_piece(t, ids[i], flags, out);
        if (strip && out->len > before) {
            if (out->data[before] == ' ') {
                memmove(out->data + before, out->data + before + 1, out->len - before);
                out->len--;
            }
            strip = 0;
        }
    }
}

/* ---- streaming ---- */

void tok_stream_init(tok_stream *s, const tokenizer *t, unsigned flags) {
    s->t = t;
    s->flags = flags;
    s->started = 0;
    s->held = (buf)BUF_INIT;
}

/* Length of the tail of b that starts a UTF-8 character still missing
 * bytes (0 if the text ends on a character boundary or in junk). */
static size_t incomplete_tail(const char *b, size_t len) {
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)b[len - back];
        if ((c & 0xc0) == 0x80) continue;              /* continuation: look further back */
        size_t need = c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

static void stream_emit(tok_stream *s, buf *out, size_t n) {
    const char *p = s->held.data;
    if (!n) return;
    if (!s->started && (s->flags & TOK_STRIP_SPACE) && *p == ' ') {
        p++;
        n--;
    }
    s->started = 1;
    buf_append(out, p, n);
}

void tok_stream_push(tok_stream *s, int32_t id, buf *out) {
    tokenizer_piece(s->t, id, s->flags, &s->held);
    size_t keep = incomplete_tail(s->held.data, s->held.len);
    stream_emit(s, out, s->held.len - keep);
    buf_consume(&s->held, s->held.len - keep);
}

void tok_stream_flush(tok_stream *s, buf *out) {
    stream_emit(s, out, s->held.len);
    buf_clear(&s->held);
}

void tok_stream_free(tok_stream *s) { buf_free(&s->held); }
