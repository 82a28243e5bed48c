/* test_engine_tokenizer: SPM and byte-level BPE tokenizers against
 * llama.cpp's test vectors (models/vocab/NAME.inp and .out: texts separated by
 * "\n__ggml_vocab_test__\n", one line of expected ids per text, no BOS),
 * decoding round trips, special tokens and the tiny stories model. */
#include "engine/tokenizer.h"
#include "engine/tokenizer_impl.h"

#include <stdlib.h>

#include "base/buf.h"
#include "base/utf8.h"
#include "testlib.h"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    buf b = BUF_INIT;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    return b.data ? buf_detach(&b) : calloc(1, 1);
}

static tokenizer *load(const char *rel, gguf **gp) {
    char err[256];
    gguf *g = gguf_open(test_shared_path(rel), err, sizeof err);
    if (!g) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    tokenizer *t = tokenizer_load(g, err, sizeof err);
    if (!t) fprintf(stderr, "%s\n", err);
    if (gp) *gp = g;
    else gguf_close(g);
    return t;
}

/* Runs every vector of models/vocab/<name>; returns the number of texts. */
static int check_vectors(const char *name, int strip_space) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/vocab/%s", name);
    tokenizer *t = load(rel, NULL);
    CHECK(t != NULL);
    if (!t) return 0;
    size_t in_len, out_len;
    snprintf(rel, sizeof rel, "models/vocab/%s.inp", name);
    char *in = slurp(test_shared_path(rel), &in_len);
    snprintf(rel, sizeof rel, "models/vocab/%s.out", name);
    char *out = slurp(test_shared_path(rel), &out_len);
    CHECK(in && out);
    if (!in || !out) {
        tokenizer_free(t);
        free(in);
        free(out);
        return 0;
    }
    static const char sep[] = "\n__ggml_vocab_test__\n";
    int texts = 0, matched = 0, roundtrips = 0;
    char *ip = in, *op = out;
    for (char *end; (end = strstr(ip, sep)) != NULL; ip = end + sizeof sep - 1, texts++) {
        char *eol = strchr(op, '\n');
        if (!eol) break;
        *eol = '\0';
        int32_t *ids;
        int n = tokenizer_encode(t, ip, (size_t)(end - ip), 0, &ids);
        buf got = BUF_INIT;
        for (int i = 0; i < n; i++) buf_printf(&got, " %d", ids[i]);
        if (strcmp(got.data ? got.data : "", op) == 0) matched++;
        else fprintf(stderr, "  %s text %d:\n    want%s\n    got %s\n", name, texts, op, got.data ? got.data : "");
        buf text = BUF_INIT;
        tokenizer_decode(t, ids, n, strip_space ? TOK_STRIP_SPACE : 0, &text);
        if (text.len == (size_t)(end - ip) && (text.len == 0 || memcmp(text.data, ip, text.len) == 0)) roundtrips++;
        else fprintf(stderr, "  %s text %d does not decode back\n", name, texts);
        buf_free(&text);
        buf_free(&got);
        free(ids);
        op = eol + 1;
    }
    fprintf(stderr, "  %s: %d of %d texts match, %d decode back\n", name, matched, texts, roundtrips);
    CHECK_EQ_INT(texts, 46);
    CHECK_EQ_INT(matched, texts);
    CHECK_EQ_INT(roundtrips, texts);
    free(in);
    free(out);
    tokenizer_free(t);
    return texts;
}

static void test_spm_vectors(void) { check_vectors("ggml-vocab-llama-spm.gguf", 1); }
static void test_gpt2_vectors(void) { check_vectors("ggml-vocab-gpt-2.gguf", 0); }

/* Pre-tokenizer word splits; the expected splits come from running the
 * real regexes (Python's regex module) on the same texts. */
static void test_pre_tokenizers(void) {
    static const struct {
        enum tok_pre pre;
        const char *text, *words;
    } cases[] = {
        {PRE_GPT2, "I'M here 'S 'll 12345 x\r\n\r\n  y\n\n z",
         "I|'|M| here| '|S| '|ll| 12345| x|\r\n\r\n | y|\n\n| z"},
        {PRE_GPT2, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82,\xd0\xbc\xd0\xb8\xd1\x80  !! 3\xc2\xbd ..\n\nok",
         "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82|,|\xd0\xbc\xd0\xb8\xd1\x80| | !!| 3\xc2\xbd| ..|\n|\n|ok"},
        {PRE_LLAMA3, "I'M here 'S 'll 12345 x\r\n\r\n  y\n\n z",
         "I|'M| here| '|S| '|ll| |123|45| x|\r\n\r\n| | y|\n\n| z"},
        {PRE_LLAMA3, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82,\xd0\xbc\xd0\xb8\xd1\x80  !! 3\xc2\xbd ..\n\nok",
         "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82|,\xd0\xbc\xd0\xb8\xd1\x80| | !!| |3\xc2\xbd| ..\n\n|ok"},
        {PRE_QWEN2, "I'M here 'S 'll 12345 x\r\n\r\n  y\n\n z",
         "I|'M| here| '|S| '|ll| |1|2|3|4|5| x|\r\n\r\n| | y|\n\n| z"},
        {PRE_QWEN2, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82,\xd0\xbc\xd0\xb8\xd1\x80  !! 3\xc2\xbd ..\n\nok",
         "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82|,\xd0\xbc\xd0\xb8\xd1\x80| | !!| |3|\xc2\xbd| ..\n\n|ok"},
        {PRE_DIGITS_GPT2, "I'M here 'S 'll 12345 x\r\n\r\n  y\n\n z",
         "I|'|M| here| '|S| '|ll| |1|2|3|4|5| x|\r\n\r\n | y|\n\n| z"},
        {PRE_DIGITS_GPT2, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82,\xd0\xbc\xd0\xb8\xd1\x80  !! 3\xc2\xbd ..\n\nok",
         "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82|,|\xd0\xbc\xd0\xb8\xd1\x80| | !!| |3|\xc2\xbd| ..|\n|\n|ok"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tokenizer t;
        memset(&t, 0, sizeof t);
        t.pre = cases[c].pre;
        size_t len = strlen(cases[c].text), n = 0, n_words;
        uint32_t *cp = malloc(len * sizeof *cp);
        for (size_t i = 0; i < len; n++) i += tok_utf8_decode(cases[c].text + i, len - i, &cp[n]);
        size_t *ends = bpe_pre_tokenize(&t, cp, n, &n_words);
        buf got = BUF_INIT;
        for (size_t w = 0, start = 0; w < n_words; start = ends[w++]) {
            if (w) buf_putc(&got, '|');
            for (size_t i = start; i < ends[w]; i++) {
                char u[4];
                buf_append(&got, u, tok_utf8_encode(cp[i], u));
            }
        }
        CHECK_STR(got.data, cases[c].words);
        buf_free(&got);
        free(ends);
        free(cp);
    }
}

static int encode_str(const tokenizer *t, const char *s, unsigned flags, int32_t **ids) {
    return tokenizer_encode(t, s, strlen(s), flags, ids);
}

static void test_spm_special(void) {
    tokenizer *t = load("models/vocab/ggml-vocab-llama-spm.gguf", NULL);
    CHECK(t != NULL);
    if (!t) return;
    CHECK_STR(tokenizer_model_name(t), "llama");
    CHECK_EQ_INT(tokenizer_n_vocab(t), 32000);
    CHECK_EQ_INT(tokenizer_bos(t), 1);
    CHECK_EQ_INT(tokenizer_eos(t), 2);
    CHECK(tokenizer_add_bos(t));
    CHECK(tokenizer_is_eog(t, 2));
    CHECK(!tokenizer_is_eog(t, 15043));
    int32_t *ids;
    int n = encode_str(t, "Hello world", TOK_ADD_SPECIAL, &ids);
    CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186);
    free(ids);
    n = encode_str(t, "", TOK_ADD_SPECIAL, &ids);   /* empty text: just BOS */
    CHECK(n == 1 && ids[0] == 1);
    free(ids);
    /* </s> in text is a control token only when asked; after it, a new space prefix */
    n = encode_str(t, "Hello</s>world", TOK_PARSE_SPECIAL, &ids);
    CHECK(n == 3 && ids[0] == 15043 && ids[1] == 2 && ids[2] == 3186);
    free(ids);
    n = encode_str(t, "Hello</s>", 0, &ids);
    CHECK(n > 2 && ids[1] != 2);
    free(ids);
    buf b = BUF_INIT;
    tokenizer_piece(t, 1, 0, &b);
    CHECK_EQ_INT(b.len, 0);
    tokenizer_piece(t, 1, TOK_RENDER_SPECIAL, &b);
    CHECK_STR(b.data, "<s>");
    buf_clear(&b);
    tokenizer_piece(t, 15043, 0, &b);
    CHECK_STR(b.data, " Hello");
    buf_clear(&b);
    tokenizer_piece(t, 13, 0, &b);   /* <0x0A> */
    CHECK_STR(b.data, "\n");
    buf_clear(&b);
    tokenizer_piece(t, 99999, 0, &b);
    CHECK_EQ_INT(b.len, 0);
    CHECK_EQ_INT(tokenizer_find(t, "<0x0A>"), 13);
    CHECK_EQ_INT(tokenizer_find(t, "no such token at all"), -1);
    buf_free(&b);
    tokenizer_free(t);
}

static void test_gpt2_special(void) {
    tokenizer *t = load("models/vocab/ggml-vocab-gpt-2.gguf", NULL);
    CHECK(t != NULL);
    if (!t) return;
    CHECK_STR(tokenizer_model_name(t), "gpt2");
    CHECK_STR(tokenizer_pre_name(t), "gpt-2");
    CHECK(!tokenizer_add_bos(t));
    int32_t *ids;
    int n = encode_str(t, "Hi<|endoftext|>", TOK_PARSE_SPECIAL | TOK_ADD_SPECIAL, &ids);
    CHECK(n == 2 && ids[1] == 50256);
    free(ids);
    n = encode_str(t, "Hi<|endoftext|>", 0, &ids);
    CHECK(n > 2);
    free(ids);
    CHECK(tokenizer_is_eog(t, 50256));
    buf b = BUF_INIT;
    int32_t seq[] = {15496, 11, 995, 0, 50256};   /* "Hello, world!" + <|endoftext|> */
    tokenizer_decode(t, seq, 5, 0, &b);
    CHECK_STR(b.data, "Hello, world!");
    buf_clear(&b);
    tokenizer_decode(t, seq, 5, TOK_RENDER_SPECIAL, &b);
    CHECK_STR(b.data, "Hello, world!<|endoftext|>");
    /* malformed UTF-8 is tokenised as U+FFFD, like llama.cpp */
    n = tokenizer_encode(t, "a\xff", 2, 0, &ids);
    buf_clear(&b);
    tokenizer_decode(t, ids, n, 0, &b);
    CHECK_STR(b.data, "a\xef\xbf\xbd");
    free(ids);
    buf_free(&b);
    tokenizer_free(t);
}

static void test_stories_model(void) {
    gguf *g = NULL;
    tokenizer *t = load("models/stories260K.gguf", &g);
    CHECK(t != NULL);
    if (!t) {
        gguf_close(g);
        return;
    }
    gguf_close(g);   /* the tokenizer must not depend on the file staying open */
    CHECK_EQ_INT(tokenizer_n_vocab(t), 512);
    int32_t *ids;
    int n = encode_str(t, "Once upon a time", TOK_ADD_SPECIAL, &ids);
    CHECK(n >= 2 && ids[0] == 1);
    buf b = BUF_INIT;
    tokenizer_decode(t, ids + 1, n - 1, TOK_STRIP_SPACE, &b);
    CHECK_STR(b.data, "Once upon a time");
    free(ids);
    /* characters outside the 512-token vocabulary come back through byte tokens */
    n = encode_str(t, "Zoë 🙂", 0, &ids);
    buf_clear(&b);
    tokenizer_decode(t, ids, n, TOK_STRIP_SPACE, &b);
    CHECK_STR(b.data, "Zoë 🙂");
    free(ids);
    buf_free(&b);
    tokenizer_free(t);
}

/* Streaming output is whole characters at every step and adds up to the text. */
static void test_stream(void) {
    tokenizer *t = load("models/stories260K.gguf", NULL);
    CHECK(t != NULL);
    if (!t) return;
    static const char text[] = "Zo\xc3\xab \xf0\x9f\x99\x82 ok";
    int32_t *ids;
    int n = tokenizer_encode(t, text, sizeof text - 1, 0, &ids);
    int byte_tokens = 0, silent = 0;
    tok_stream st;
    tok_stream_init(&st, t, TOK_STRIP_SPACE);
    buf all = BUF_INIT, chunk = BUF_INIT;
    for (int i = 0; i < n; i++) {
        buf_clear(&chunk);
        tok_stream_push(&st, ids[i], &chunk);
        byte_tokens += tokenizer_token_type(t, ids[i]) == TOKT_BYTE;
        silent += chunk.len == 0;
        CHECK(utf8_check(chunk.data ? chunk.data : "", chunk.len) == chunk.len);
        buf_append(&all, chunk.data ? chunk.data : "", chunk.len);
    }
    tok_stream_flush(&st, &all);
    CHECK_STR(all.data, text);
    CHECK(byte_tokens >= 4);   /* the emoji at least is spelled in bytes */
    CHECK(silent >= 3);        /* ... and held back until complete */
    /* a truncated character is still emitted by flush */
    tok_stream_free(&st);
    tok_stream_init(&st, t, 0);
    buf_clear(&all);
    tok_stream_push(&st, tokenizer_find(t, "<0xF0>"), &all);
    CHECK_EQ_INT(all.len, 0);
    tok_stream_flush(&st, &all);
    CHECK(all.len == 1 && (unsigned char)all.data[0] == 0xf0);
    tok_stream_free(&st);
    buf_free(&all);
    buf_free(&chunk);
    free(ids);
    tokenizer_free(t);
}

static void test_load_errors(void) {
    char err[256];
    static const unsigned char empty[24] = {'G', 'G', 'U', 'F', 3};   /* valid GGUF, no metadata */
    gguf *e = gguf_open_mem(empty, sizeof empty, err, sizeof err);
    CHECK(e != NULL);
    if (!e) return;
    CHECK(tokenizer_load(e, err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "tokenizer: no tokenizer.ggml.model");
    gguf_close(e);
}

int main(void) {
    TEST(test_spm_vectors);
    TEST(test_gpt2_vectors);
    TEST(test_pre_tokenizers);
    TEST(test_spm_special);
    TEST(test_gpt2_special);
    TEST(test_stories_model);
    TEST(test_stream);
    TEST(test_load_errors);
    return test_done();
}
