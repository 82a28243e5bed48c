/* features: one pass over a request's text that yields everything the
 * router and the guard look at.
 *
 * Words (lower-cased runs of letters, digits, '_' and UTF-8 bytes) are
 * hashed as they are read and looked up once in the model's vocabulary,
 * which gives the word's row in the embedding/projection table, its
 * weight (rare words count more) and its lexicon flags (code keyword, math
 * word...). Character-level signs of code and mathematics are counted in
 * the same pass. Nothing is allocated: the caller owns the state. */
#ifndef MSOA_ROUTE_FEATURES_H
#define MSOA_ROUTE_FEATURES_H

#include <stddef.h>
#include <stdint.h>

/* Hand-made dense features; see feat_hand_names for what each is. */
enum { FEAT_HAND_N = 27 };
extern const char *const feat_hand_names[FEAT_HAND_N];
/* The class a feature is a sign of ("code", "math", "unsafe") or NULL.
 * Training lets a sign feature count only for its class, and only in its
 * favour: a feature seen rarely in training (indentation when no code
 * source has any) cannot then be learnt backwards. */
extern const char *const feat_hand_sign[FEAT_HAND_N];

/* Lexicon flags of a vocabulary entry. */
enum {
    LEX_CODE = 1,      /* programming keyword or code word */
    LEX_MATH = 2,      /* mathematics word */
    LEX_ROLE = 4,      /* role-play / instruction-override word (guard) */
    LEX_HARM = 8,      /* word of a harmful topic (set by training: seeds and neighbours) */
    LEX_ASK = 16,      /* imperative that opens a request ("write", "explain"...) */
    LEX_HOW = 32,      /* "how", which with LEX_AUX after it asks for a method */
    LEX_AUX = 64,      /* "to", "can", "do"... after "how" */
    LEX_GUIDE = 128,   /* a request for a method: "instructions", "tutorial", "steps"... */
    LEX_ACT = 256,     /* a harmful act asked for ("steal", "hack"...) or its cover ("undetected") */
    LEX_PAIR = 512,    /* ends a two-word phrase of a lexicon: look the pair up too... */
    LEX_JUDGE = 1024,  /* asks to judge a given text ("classify", "whether"...) (guard) */
    LEX_AIM = 2048,    /* whom a harm is aimed at, or its spreading ("people", "promotes") (guard) */
    LEX_META = 4096,   /* talk about the assistant's own answers ("respond", "mode"...) (guard) */
    LEX_PAIR_START = 8192,   /* ...when the word before starts one */
    LEX_NAMED = 16384, /* a harm that is a name ("Sarin"): counted however capitalised */
};

/* The guard's memory (model.h FEATS_MEM): the high 16 bits of an entry's
 * flags hold a learnt raise of the guard's logit, in 1/ROUTE_MEM_SCALE
 * steps, for a word or (keyed by the bigram hash, its words marked
 * LEX_PAIR_START and LEX_PAIR) a pair of words. The scanner sums them as it
 * reads the flags: no probe of its own. Lexicon flags stay below. */
#define LEX_MEM_SHIFT 16
#define LEX_MEM_MAX 0xffffu
static inline uint32_t lex_mem(uint32_t flags) { return flags >> LEX_MEM_SHIFT; }

typedef struct vocab_entry {
    uint64_t key;      /* word hash; 0 = empty slot */
    int32_t row;       /* row in the embedding table, -1: none */
    uint32_t flags;
} vocab_entry;

/* Open-addressing hash table from word hash to entry. */
typedef struct route_vocab {
    vocab_entry *slots;
    uint32_t mask;     /* capacity - 1, capacity a power of two */
    uint32_t n;
    float *row_weight; /* per row: how much the word counts in the mean */
    int32_t n_rows;
} route_vocab;

uint64_t feat_hash_word(const char *w, size_t len);   /* lower-cases ASCII */
void vocab_init(route_vocab *v, uint32_t capacity_hint);
void vocab_free(route_vocab *v);
/* Adds (or updates) a word; returns its entry. */
vocab_entry *vocab_put(route_vocab *v, uint64_t key, int32_t row, uint32_t flags);
const vocab_entry *vocab_get(const route_vocab *v, uint64_t key);
/* Adds the built-in lexicons (flags) to v. */
void vocab_add_lexicons(route_vocab *v);

/* Called for each word: its text, entry (NULL if unknown), the word hash
 * and the hash of the bigram it ends (0 for the first word of a text). */
typedef void (*feat_word_fn)(void *ctx, const char *w, size_t len, const vocab_entry *e,
                             uint64_t h, uint64_t bigram);

typedef struct feat_state {
    const route_vocab *vocab;
    feat_word_fn on_word;
    void *ctx;
    uint32_t bytes, words, lines, indented, digits, ops, brackets, latex, codepunct,
        code_words, math_words, role_words, numbers, idents, upper, letters, qmarks, word_chars,
        harm_words, harm_acts, requests, options, judging, aims, metas;
    uint32_t mem;      /* the memory of the words and pairs read (lex_mem) */
    int after_how;     /* the previous word was "how" */
    int sentence;      /* the next word starts a sentence (its capital is no name's) */
    int pair_start;    /* the previous word starts a two-word phrase */
} feat_state;

void feat_begin(feat_state *s, const route_vocab *v, feat_word_fn fn, void *ctx);
/* Feeds one text (system prompt, user message); may be called repeatedly. */
void feat_feed(feat_state *s, const char *text, size_t len);
void feat_end(const feat_state *s, float hand[FEAT_HAND_N]);

#endif
