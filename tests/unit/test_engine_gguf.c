/* test_engine_gguf: the GGUF reader on the real model files and on
 * hand-built files, valid and corrupted (truncated at every byte, hostile
 * counts and lengths, bad offsets, unknown types, duplicates), and
 * gguf_release on a mapped file and on a caller's buffer. */
#include "engine/gguf.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/buf.h"
#include "testlib.h"

/* ---- a tiny GGUF writer for test files ---- */

static void put_u32(buf *b, uint32_t x) { buf_append(b, &x, 4); }
static void put_u64(buf *b, uint64_t x) { buf_append(b, &x, 8); }
static void put_str(buf *b, const char *s) { put_u64(b, strlen(s)); buf_puts(b, s); }
static void put_key(buf *b, const char *key, uint32_t type) { put_str(b, key); put_u32(b, type); }

static void put_header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    buf_append(b, "GGUF", 4);
    put_u32(b, version);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void put_tensor(buf *b, const char *name, int n_dims, const uint64_t *ne, uint32_t type, uint64_t off) {
    put_str(b, name);
    put_u32(b, (uint32_t)n_dims);
    for (int i = 0; i < n_dims; i++) put_u64(b, ne[i]);
    put_u32(b, type);
    put_u64(b, off);
}

static void pad_to(buf *b, size_t align) {
    while (b->len % align) buf_putc(b, 0);
}

/* A valid file using every value type: 11 keys, two tensors (F32 4x2 and Q8_0 64x1). */
static void build_sample(buf *b) {
    put_header(b, 3, 2, 11);
    put_key(b, "general.architecture", GGUF_VT_STR); put_str(b, "llama");
    put_key(b, "a.u8", GGUF_VT_U8); buf_putc(b, (char)200);
    put_key(b, "a.i8", GGUF_VT_I8); buf_putc(b, (char)-5);
    put_key(b, "a.u16", GGUF_VT_U16); { uint16_t x = 60000; buf_append(b, &x, 2); }
    put_key(b, "a.i32", GGUF_VT_I32); { int32_t x = -7; buf_append(b, &x, 4); }
    put_key(b, "a.u64", GGUF_VT_U64); put_u64(b, 5000000000ull);
    put_key(b, "a.f32", GGUF_VT_F32); { float x = 1.5f; buf_append(b, &x, 4); }
    put_key(b, "a.f64", GGUF_VT_F64); { double x = -2.25; buf_append(b, &x, 8); }
    put_key(b, "a.bool", GGUF_VT_BOOL); buf_putc(b, 1);
    put_key(b, "a.strs", GGUF_VT_ARR); put_u32(b, GGUF_VT_STR); put_u64(b, 3);
    put_str(b, "x"); put_str(b, ""); put_str(b, "hello");
    put_key(b, "a.nested", GGUF_VT_ARR); put_u32(b, GGUF_VT_ARR); put_u64(b, 2);
    put_u32(b, GGUF_VT_I16); put_u64(b, 2); { int16_t x[2] = {-1, 300}; buf_append(b, x, 4); }
    put_u32(b, GGUF_VT_F32); put_u64(b, 1); { float x = 0.25f; buf_append(b, &x, 4); }
    uint64_t ne1[2] = {4, 2}, ne2[1] = {64};
    put_tensor(b, "w.f32", 2, ne1, GGUF_F32, 0);
    put_tensor(b, "w.q8", 1, ne2, GGUF_Q8_0, 32);
    pad_to(b, 32);
    for (int i = 0; i < 8; i++) { float x = (float)i; buf_append(b, &x, 4); }
    for (int i = 0; i < 2 * 34; i++) buf_putc(b, (char)i);
}

static gguf *open_buf(const buf *b, char *err, size_t errlen) {
    return gguf_open_mem(b->data, b->len, err, errlen);
}

static void test_sample_file(void) {
    buf b = BUF_INIT;
    char err[256];
    build_sample(&b);
    gguf *g = open_buf(&b, err, sizeof err);
    CHECK(g != NULL);
    if (!g) { fprintf(stderr, "%s\n", err); buf_free(&b); return; }
    CHECK_EQ_INT(gguf_version(g), 3);
    CHECK_EQ_INT(gguf_n_kv(g), 11);
    CHECK_EQ_INT(gguf_alignment(g), 32);
    CHECK_STR(gguf_get_str(g, "general.architecture"), "llama");
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f;
    double d;
    int bl;
    CHECK(gguf_get_u32(g, "a.u8", &u32) == 0 && u32 == 200);
    CHECK(gguf_get_u32(g, "a.u16", &u32) == 0 && u32 == 60000);
    CHECK(gguf_get_i64(g, "a.i8", &i64) == 0 && i64 == -5);
    CHECK(gguf_get_u32(g, "a.i8", &u32) == -1);          /* negative does not fit */
    CHECK(gguf_get_u32(g, "a.u64", &u32) == -1);         /* > 2^32 does not fit */
    CHECK(gguf_get_u64(g, "a.u64", &u64) == 0 && u64 == 5000000000ull);
    CHECK(gguf_get_i64(g, "a.i32", &i64) == 0 && i64 == -7);
    CHECK(gguf_get_f32(g, "a.f32", &f) == 0 && f == 1.5f);
    CHECK(gguf_get_f64(g, "a.f64", &d) == 0 && d == -2.25);
    CHECK(gguf_get_f32(g, "a.u8", &f) == 0 && f == 200.0f);
    CHECK(gguf_get_bool(g, "a.bool", &bl) == 0 && bl == 1);
    CHECK(gguf_get_bool(g, "a.u8", &bl) == -1);
    CHECK(gguf_get_u32(g, "missing", &u32) == -1);
    CHECK(gguf_get_str(g, "a.u8") == NULL);
    CHECK(gguf_get_arr(g, "a.strs", GGUF_VT_I32) == NULL);
    const gguf_value *strs = gguf_get_arr(g, "a.strs", GGUF_VT_STR);
    CHECK(strs && strs->arr.n == 3);
    if (strs) {
        uint64_t len = 99;
        CHECK_STR(gguf_arr_str(strs, 0, NULL), "x");
        CHECK_STR(gguf_arr_str(strs, 1, &len), "");
        CHECK_EQ_INT(len, 0);
        CHECK_STR(gguf_arr_str(strs, 2, &len), "hello");
        CHECK_EQ_INT(len, 5);
        CHECK(gguf_arr_str(strs, 3, NULL) == NULL);
        CHECK(gguf_arr_i64(strs, 0, &i64) == -1);
    }
    const gguf_value *nested = gguf_get_arr(g, "a.nested", GGUF_VT_ARR);
    CHECK(nested && nested->arr.n == 2);
    if (nested) {
        CHECK(gguf_arr_i64(&nested->arr.items[0], 1, &i64) == 0 && i64 == 300);
        CHECK(gguf_arr_i64(&nested->arr.items[0], 0, &i64) == 0 && i64 == -1);
        CHECK(gguf_arr_f32(&nested->arr.items[1], 0, &f) == 0 && f == 0.25f);
        CHECK(gguf_arr_f32(&nested->arr.items[1], 1, &f) == -1);
    }
    CHECK_EQ_INT(gguf_n_tensors(g), 2);
    const gguf_tensor *t = gguf_find_tensor(g, "w.f32");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->type, GGUF_F32);
        CHECK_EQ_INT(t->n_dims, 2);
        CHECK_EQ_INT(t->ne[0], 4);
        CHECK_EQ_INT(t->ne[1], 2);
        CHECK_EQ_INT(t->ne[2], 1);
        CHECK_EQ_INT(t->n_elements, 8);
        CHECK_EQ_INT(t->nbytes, 32);
        CHECK_EQ_INT(t->offset, gguf_data_offset(g));
        CHECK(((const float *)t->data)[7] == 7.0f);
    }
    t = gguf_find_tensor(g, "w.q8");
    CHECK(t && t->type == GGUF_Q8_0 && t->nbytes == 68 && ((const unsigned char *)t->data)[67] == 67);
    CHECK(gguf_find_tensor(g, "w.nope") == NULL);
    CHECK_EQ_INT(gguf_data_offset(g) + 32 + 68, b.len);
    gguf_close(g);
    buf_free(&b);
}

/* Every proper prefix of a valid file must be rejected cleanly (ASan watches reads). */
static void test_truncated_everywhere(void) {
    buf b = BUF_INIT;
    char err[256];
    build_sample(&b);
    int rejected = 0;
    for (size_t n = 0; n < b.len; n++) {
        char *copy = malloc(n ? n : 1);   /* exact-size copy so overreads are caught */
        memcpy(copy, b.data, n);
        gguf *g = gguf_open_mem(copy, n, err, sizeof err);
        if (!g && strncmp(err, "gguf: ", 6) == 0) rejected++;
        gguf_close(g);
        free(copy);
    }
    CHECK_EQ_INT(rejected, b.len);
    buf_free(&b);
}

/* Opens the buffer and expects failure with a message containing want. */
static void expect_error(const buf *b, const char *want) {
    char err[512] = "";
    gguf *g = open_buf(b, err, sizeof err);
    CHECK(g == NULL);
    CHECK_CONTAINS(err, want);
    gguf_close(g);
}

static void test_bad_headers(void) {
    buf b = BUF_INIT;
    buf_append(&b, "GGUX", 4); put_u32(&b, 3); put_u64(&b, 0); put_u64(&b, 0);
    expect_error(&b, "bad magic");
    buf_clear(&b);
    put_header(&b, 1, 0, 0);
    expect_error(&b, "version 1");
    buf_clear(&b);
    put_header(&b, 3u << 24, 0, 0);
    expect_error(&b, "big-endian");
    buf_clear(&b);
    put_header(&b, 3, 0, 1000000);
    expect_error(&b, "metadata count 1000000 impossible");
    buf_clear(&b);
    put_header(&b, 3, UINT64_MAX, 0);
    expect_error(&b, "implausible counts");
    buf_clear(&b);
    put_header(&b, 2, 0, 0);   /* version 2 and an empty file are fine */
    char err[256];
    gguf *g = open_buf(&b, err, sizeof err);
    CHECK(g != NULL && gguf_n_kv(g) == 0 && gguf_n_tensors(g) == 0);
    gguf_close(g);
    buf_free(&b);
}

static void test_bad_metadata(void) {
    buf b = BUF_INIT;
    put_header(&b, 3, 0, 1);
    put_u64(&b, UINT64_MAX - 3); buf_puts(&b, "key and some more bytes");
    expect_error(&b, "key length");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_key(&b, "s", GGUF_VT_STR); put_u64(&b, 1ull << 40); buf_puts(&b, "abc");
    expect_error(&b, "key 's': string length 1099511627776");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);   /* element count * size overflows 64 bits */
    put_key(&b, "a", GGUF_VT_ARR); put_u32(&b, GGUF_VT_U64); put_u64(&b, (UINT64_MAX / 8) + 2);
    expect_error(&b, "key 'a': array of");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_key(&b, "a", GGUF_VT_ARR); put_u32(&b, GGUF_VT_STR); put_u64(&b, 1ull << 60);
    expect_error(&b, "beyond end of file");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_key(&b, "a", GGUF_VT_ARR); put_u32(&b, 13); put_u64(&b, 0);
    expect_error(&b, "array of unknown value type 13");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_key(&b, "t", 42); put_u64(&b, 0);
    expect_error(&b, "key 't': unknown value type 42");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_key(&b, "b", GGUF_VT_BOOL); buf_putc(&b, 7);
    expect_error(&b, "bool value 7");
    buf_clear(&b);
    put_header(&b, 3, 0, 2);
    put_key(&b, "k", GGUF_VT_U8); buf_putc(&b, 1);
    put_key(&b, "k", GGUF_VT_U8); buf_putc(&b, 2);
    expect_error(&b, "key 'k': duplicate key");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);   /* arrays nested 20 deep */
    put_key(&b, "deep", GGUF_VT_ARR);
    for (int i = 0; i < 20; i++) { put_u32(&b, GGUF_VT_ARR); put_u64(&b, 1); }
    expect_error(&b, "nested deeper");
    buf_clear(&b);
    put_header(&b, 3, 0, 1);
    put_key(&b, "general.alignment", GGUF_VT_U32); put_u32(&b, 48);
    expect_error(&b, "general.alignment");
    buf_free(&b);
}

/* One-tensor file: header, the given tensor info, padding, `data` bytes of data. */
static void one_tensor(buf *b, const char *name, int n_dims, const uint64_t *ne, uint32_t type, uint64_t off,
                       size_t data) {
    buf_clear(b);
    put_header(b, 3, 1, 0);
    put_tensor(b, name, n_dims, ne, type, off);
    pad_to(b, 32);
    for (size_t i = 0; i < data; i++) buf_putc(b, 0);
}

static void test_bad_tensors(void) {
    buf b = BUF_INIT;
    char err[256];
    uint64_t ne[4] = {64, 2, 1, 1};
    one_tensor(&b, "ok", 2, ne, GGUF_F32, 0, 512);
    gguf *g = open_buf(&b, err, sizeof err);
    CHECK(g != NULL);
    gguf_close(g);
    one_tensor(&b, "blk.0.attn_q.weight", 2, ne, GGUF_F32, 0, 511);
    expect_error(&b, "gguf: tensor 'blk.0.attn_q.weight': data [96, 608) beyond end of file (size 607)");
    one_tensor(&b, "t", 2, ne, GGUF_F32, 16, 600);
    expect_error(&b, "tensor 't': data offset 16 is not a multiple of the alignment 32");
    one_tensor(&b, "t", 2, ne, GGUF_F32, UINT64_MAX - 31, 600);
    expect_error(&b, "beyond end of file");
    one_tensor(&b, "t", 2, ne, 31, 0, 600);
    expect_error(&b, "tensor 't': unknown tensor type 31");
    uint64_t five[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, "t", 5, five, GGUF_F32, 0, 600);
    expect_error(&b, "5 dimensions");
    uint64_t big[4] = {1ull << 32, 1ull << 32, 1, 1};
    one_tensor(&b, "t", 2, big, GGUF_F32, 0, 600);
    expect_error(&b, "dimensions overflow");
    uint64_t huge[2] = {1ull << 31, 1ull << 31};   /* 2^62 elements: fits int64, bytes do not fit */
    one_tensor(&b, "t", 2, huge, GGUF_F32, 0, 600);
    expect_error(&b, "tensor 't'");
    uint64_t odd[2] = {48, 1};
    one_tensor(&b, "t", 2, odd, GGUF_Q4_0, 0, 600);
    expect_error(&b, "row length 48 is not a multiple of the Q4_0 block size 32");
    buf_clear(&b);
    put_header(&b, 3, 2, 0);
    put_tensor(&b, "dup", 2, ne, GGUF_F32, 0);
    put_tensor(&b, "dup", 2, ne, GGUF_F32, 512);
    expect_error(&b, "tensor 'dup': duplicate tensor name");
    buf_free(&b);
}

static void test_type_table(void) {
    CHECK_STR(gguf_dtype_name(GGUF_Q4_K), "Q4_K");
    CHECK_EQ_INT(gguf_dtype_block(GGUF_Q4_0), 32);
    CHECK_EQ_INT(gguf_dtype_size(GGUF_Q4_0), 18);
    CHECK_EQ_INT(gguf_dtype_size(GGUF_Q8_0), 34);
    CHECK_EQ_INT(gguf_dtype_size(GGUF_Q4_K), 144);
    CHECK_EQ_INT(gguf_dtype_size(GGUF_Q5_K), 176);
    CHECK_EQ_INT(gguf_dtype_size(GGUF_Q6_K), 210);
    CHECK_EQ_INT(gguf_dtype_size(GGUF_BF16), 2);
    CHECK_EQ_INT(gguf_row_bytes(GGUF_Q6_K, 4096), 16 * 210);
    CHECK(gguf_dtype_name(4) == NULL);
    CHECK(gguf_dtype_name(-1) == NULL);
    CHECK(gguf_dtype_name(1000) == NULL);
}

static void test_real_model(void) {
    char err[512];
    gguf *g = gguf_open(test_shared_path("models/stories260K.gguf"), err, sizeof err);
    CHECK(g != NULL);
    if (!g) { fprintf(stderr, "%s\n", err); return; }
    CHECK_STR(gguf_get_str(g, "general.architecture"), "llama");
    uint32_t x;
    CHECK(gguf_get_u32(g, "llama.embedding_length", &x) == 0 && x == 64);
    CHECK(gguf_get_u32(g, "llama.block_count", &x) == 0 && x == 5);
    CHECK(gguf_get_u32(g, "llama.attention.head_count_kv", &x) == 0 && x == 4);
    float eps;
    CHECK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps) == 0 && eps > 0.9e-5f && eps < 1.1e-5f);
    const gguf_value *tok = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_VT_STR);
    CHECK(tok && tok->arr.n == 512);
    CHECK_EQ_INT(gguf_n_tensors(g), 48);
    const gguf_tensor *t = gguf_find_tensor(g, "blk.4.ffn_down.weight");
    CHECK(t && t->type == GGUF_F32 && t->ne[0] == 172 && t->ne[1] == 64 && t->nbytes == 172 * 64 * 4);
    size_t total = 0;
    for (int i = 0; i < gguf_n_tensors(g); i++) total += gguf_tensor_at(g, i)->nbytes;
    CHECK(gguf_data_offset(g) + total <= gguf_file_size(g));
    gguf_close(g);

    g = gguf_open(test_shared_path("models/stories260K-Q4_0-mixed.gguf"), err, sizeof err);
    CHECK(g != NULL);
    if (!g) return;
    int q4 = 0;
    for (int i = 0; i < gguf_n_tensors(g); i++) q4 += gguf_tensor_at(g, i)->type == GGUF_Q4_0;
    CHECK_EQ_INT(q4, 32);
    t = gguf_find_tensor(g, "token_embd.weight");
    CHECK(t && t->type == GGUF_Q4_0 && t->nbytes == 512 * 2 * 18);
    gguf_close(g);

    g = gguf_open(test_shared_path("models/vocab/ggml-vocab-gpt-2.gguf"), err, sizeof err);
    CHECK(g && gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_VT_STR) != NULL);
    gguf_close(g);

    CHECK(gguf_open(test_shared_path("models/no-such-file.gguf"), err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "no-such-file.gguf");
    CHECK(gguf_open(test_shared_path("models/README.md"), err, sizeof err) == NULL);
    CHECK_CONTAINS(err, "README.md: not a GGUF file (bad magic)");
}

/* Whether the page holding p is in this process's page tables (Linux's
 * /proc/self/pagemap, bit 63); -1 where that cannot be read. */
static int page_mapped(const void *p) {
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) return -1;
    uint64_t v = 0;
    off_t at = (off_t)((uintptr_t)p / (uintptr_t)sysconf(_SC_PAGESIZE) * sizeof v);
    ssize_t n = pread(fd, &v, sizeof v, at);
    close(fd);
    return n == (ssize_t)sizeof v ? (int)(v >> 63) : -1;
}

/* Released pages leave the mapping and read back the same; a caller's
 * buffer is never touched (MADV_DONTNEED would zero anonymous memory). */
static void test_release(void) {
    char err[512];
    gguf *g = gguf_open(test_shared_path("models/stories260K.gguf"), err, sizeof err);
    CHECK(g != NULL);
    if (!g) { fprintf(stderr, "%s\n", err); return; }
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");   /* 128 KiB of F32 */
    CHECK(t && t->nbytes == 512 * 64 * 4);
    if (!t) { gguf_close(g); return; }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uint8_t *copy = malloc(t->nbytes);
    memcpy(copy, t->data, t->nbytes);   /* maps every page of it */
    const uint8_t *mid = (const uint8_t *)t->data + t->nbytes / 2;
    CHECK(page_mapped(mid) != 0);
    size_t dropped = gguf_release(g, t->data, t->nbytes);
    CHECK(dropped + 2 * page >= t->nbytes && dropped <= t->nbytes && dropped % page == 0);
    CHECK(page_mapped(mid) != 1);
    CHECK(memcmp(copy, t->data, t->nbytes) == 0);   /* read again from the file */
    CHECK(gguf_release(g, copy, t->nbytes) == 0);   /* not part of the file */
    CHECK(gguf_release(g, (const uint8_t *)t->data + 1, page) == 0);   /* no whole page inside */
    gguf_close(g);
    free(copy);
    buf b = BUF_INIT;
    build_sample(&b);
    g = open_buf(&b, err, sizeof err);
    CHECK(g != NULL);
    if (g) {
        copy = malloc(b.len);
        memcpy(copy, b.data, b.len);
        CHECK(gguf_release(g, b.data, b.len) == 0);
        CHECK(memcmp(copy, b.data, b.len) == 0);
        free(copy);
        gguf_close(g);
    }
    buf_free(&b);
}

int main(void) {
    TEST(test_sample_file);
    TEST(test_truncated_everywhere);
    TEST(test_bad_headers);
    TEST(test_bad_metadata);
    TEST(test_bad_tensors);
    TEST(test_type_table);
    TEST(test_real_model);
    TEST(test_release);
    return test_done();
}
