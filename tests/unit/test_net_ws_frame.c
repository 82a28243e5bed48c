/* Tests for the WebSocket frame codec and message reader: header lengths,
 * masking, fragmentation, control frames, UTF-8 and every protocol error. */
#include "net/ws_frame.h"

#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a client frame; masked unless mask is NULL. Raw header fields
 * let tests build invalid frames. */
static void frame(buf *b, int b0, const void *payload, size_t len, const uint8_t *mask) {
    uint8_t h[WS_FRAME_HEAD_MAX];
    size_t hl = ws_frame_head(h, b0 & 0x0f, 0, len);
    h[0] = (uint8_t)b0;
    if (mask) h[1] |= 0x80;
    buf_append(b, h, hl);
    if (mask) buf_append(b, mask, 4);
    size_t at = b->len;
    buf_append(b, payload, len);
    if (mask) ws_mask((uint8_t *)b->data + at, len, mask, 0);
}

/* Runs the reader over b from the start; returns the first event that is
 * not WS_EV_NONE (or NONE) and how many bytes it used. */
static int next(ws_reader *r, buf *b, size_t *off, ws_event *ev) {
    size_t used;
    int t = ws_reader_next(r, (uint8_t *)b->data + *off, b->len - *off, &used, ev);
    *off += used;
    return t;
}

static int first_error(int b0, const void *payload, size_t len, const uint8_t *mask, size_t max) {
    ws_reader r;
    ws_reader_init(&r, max, 1);
    buf b = BUF_INIT;
    frame(&b, b0, payload, len, mask);
    size_t off = 0;
    ws_event ev;
    int t = next(&r, &b, &off, &ev);
    buf_free(&b);
    ws_reader_free(&r);
    return t == WS_EV_ERROR ? ev.code : 0;
}

static void test_header_lengths(void) {
    uint64_t lens[] = {0, 125, 126, 65535, 65536, (uint64_t)1 << 40};
    size_t want_hl[] = {2, 2, 4, 4, 10, 10};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        uint8_t h[WS_FRAME_HEAD_MAX];
        size_t hl = ws_frame_head(h, WS_OP_BINARY, 1, lens[i]);
        CHECK_EQ_INT(hl, want_hl[i]);
        ws_frame f;
        CHECK_EQ_INT(ws_frame_parse(h, hl - 1, &f), 0);
        CHECK_EQ_INT(ws_frame_parse(h, hl, &f), 1);
        CHECK_EQ_INT(f.len, lens[i]);
        CHECK_EQ_INT(f.fin, 1);
        CHECK_EQ_INT(f.masked, 0);
        CHECK_EQ_INT(f.opcode, WS_OP_BINARY);
        CHECK_EQ_INT(f.head_len, hl);
    }
    uint8_t top[10] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1};
    ws_frame f;
    CHECK_EQ_INT(ws_frame_parse(top, sizeof top, &f), -1);
}

static void test_mask_offsets(void) {
    uint8_t a[37], b[37];
    for (int i = 0; i < 37; i++) a[i] = b[i] = (uint8_t)(i * 7);
    ws_mask(a, 37, MASK, 0);
    ws_mask(b, 5, MASK, 0);
    ws_mask(b + 5, 32, MASK, 5);
    CHECK(memcmp(a, b, 37) == 0);
    CHECK_EQ_INT(a[1], (uint8_t)(7 ^ MASK[1]));
    ws_mask(a, 37, MASK, 0);
    CHECK_EQ_INT(a[36], (uint8_t)(36 * 7));
}

static void test_messages_of_every_size(void) {
    size_t sizes[] = {0, 1, 125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        char *text = malloc(n + 1);
        for (size_t k = 0; k < n; k++) text[k] = (char)('a' + k % 26);
        ws_reader r;
        ws_reader_init(&r, 1 << 20, 1);
        buf b = BUF_INIT;
        frame(&b, 0x80 | WS_OP_TEXT, text, n, MASK);
        size_t off = 0;
        ws_event ev;
        CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_MESSAGE);
        CHECK_EQ_INT(ev.is_text, 1);
        CHECK_EQ_INT(ev.len, n);
        CHECK(n == 0 || memcmp(ev.data, text, n) == 0);
        CHECK_EQ_INT(off, b.len);
        buf_free(&b);
        ws_reader_free(&r);
        free(text);
    }
}

static void test_fragments_with_ping_between(void) {
    ws_reader r;
    ws_reader_init(&r, 1024, 1);
    buf b = BUF_INIT;
    frame(&b, WS_OP_TEXT, "Hel", 3, MASK);
    frame(&b, 0x80 | WS_OP_PING, "p!", 2, MASK);
    frame(&b, WS_OP_CONT, "lo, ", 4, MASK);
    frame(&b, 0x80 | WS_OP_CONT, "w\xc3\xb6rld", 6, MASK);
    frame(&b, 0x80 | WS_OP_BINARY, "\xff\x00", 2, MASK);
    size_t off = 0;
    ws_event ev;
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_PING);
    CHECK_EQ_INT(ev.len, 2);
    CHECK(memcmp(ev.data, "p!", 2) == 0);
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_MESSAGE);
    CHECK_EQ_INT(ev.len, 13);
    CHECK(memcmp(ev.data, "Hello, w\xc3\xb6rld", 13) == 0);
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_MESSAGE);
    CHECK_EQ_INT(ev.is_text, 0);
    CHECK_EQ_INT(ev.len, 2);
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_NONE);
    CHECK_EQ_INT(off, b.len);
    buf_free(&b);
    ws_reader_free(&r);
}

static void test_byte_by_byte(void) {
    ws_reader r;
    ws_reader_init(&r, 1024, 1);
    buf all = BUF_INIT;
    frame(&all, WS_OP_TEXT, "ab", 2, MASK);
    frame(&all, 0x80 | WS_OP_CONT, "cd", 2, MASK);
    /* The receiver keeps unconsumed bytes and appends new ones, like the server. */
    buf pending = BUF_INIT;
    int messages = 0;
    for (size_t i = 0; i < all.len; i++) {
        buf_append(&pending, all.data + i, 1);
        ws_event ev;
        size_t used;
        int t = ws_reader_next(&r, (uint8_t *)pending.data, pending.len, &used, &ev);
        if (t == WS_EV_MESSAGE) {
            messages++;
            CHECK_EQ_INT(i, all.len - 1);
            CHECK_EQ_INT(ev.len, 4);
            CHECK(memcmp(ev.data, "abcd", 4) == 0);
        } else {
            CHECK_EQ_INT(t, WS_EV_NONE);
        }
        buf_consume(&pending, used);
    }
    CHECK_EQ_INT(messages, 1);
    CHECK_EQ_INT(pending.len, 0);
    buf_free(&pending);
    buf_free(&all);
    ws_reader_free(&r);
}

static void test_close_frames(void) {
    ws_reader r;
    ws_reader_init(&r, 1024, 1);
    buf b = BUF_INIT;
    frame(&b, 0x80 | WS_OP_CLOSE, "\x03\xe8" "bye", 5, MASK);
    frame(&b, 0x80 | WS_OP_CLOSE, "", 0, MASK);
    size_t off = 0;
    ws_event ev;
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_CLOSE);
    CHECK_EQ_INT(ev.code, 1000);
    CHECK_EQ_INT(ev.len, 3);
    CHECK(memcmp(ev.data, "bye", 3) == 0);
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_CLOSE);
    CHECK_EQ_INT(ev.code, WS_CLOSE_NO_STATUS);
    buf_free(&b);
    ws_reader_free(&r);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_CLOSE, "\x03", 1, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_CLOSE, "\x03\xed", 2, MASK, 1024), WS_CLOSE_PROTOCOL);  /* 1005 */
    CHECK_EQ_INT(first_error(0x80 | WS_OP_CLOSE, "\x03\xe8\xc0\x80", 4, MASK, 1024), WS_CLOSE_BAD_DATA);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_CLOSE, "\x0f\xa0", 2, MASK, 1024), 0);  /* 4000 */
}

static void test_protocol_errors(void) {
    char big[200] = {0};
    CHECK_EQ_INT(first_error(0x80 | WS_OP_TEXT, "hi", 2, NULL, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0xc0 | WS_OP_TEXT, "hi", 2, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x90 | WS_OP_TEXT, "hi", 2, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x83, "hi", 2, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x8b, "hi", 2, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_PING, big, 126, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(WS_OP_PING, "x", 1, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_CONT, "x", 1, MASK, 1024), WS_CLOSE_PROTOCOL);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_BINARY, big, 200, MASK, 199), WS_CLOSE_TOO_BIG);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_BINARY, big, 199, MASK, 199), 0);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_TEXT, "\xc3\x28", 2, MASK, 1024), WS_CLOSE_BAD_DATA);
    CHECK_EQ_INT(first_error(0x80 | WS_OP_PING, big, 125, MASK, 1024), 0);

    /* Fragmented: new message inside one, and the joined size limit. */
    ws_reader r;
    ws_reader_init(&r, 100, 1);
    buf b = BUF_INIT;
    frame(&b, WS_OP_TEXT, big, 60, MASK);
    frame(&b, WS_OP_CONT, big, 41, MASK);
    size_t off = 0;
    ws_event ev;
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, WS_CLOSE_TOO_BIG);
    buf_free(&b);
    ws_reader_free(&r);
    ws_reader_init(&r, 100, 1);
    frame(&b, WS_OP_TEXT, "a", 1, MASK);
    frame(&b, 0x80 | WS_OP_TEXT, "b", 1, MASK);
    off = 0;
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, WS_CLOSE_PROTOCOL);
    buf_free(&b);
    ws_reader_free(&r);
    /* Invalid UTF-8 split across fragments is caught on the joined text. */
    ws_reader_init(&r, 100, 1);
    frame(&b, WS_OP_TEXT, "\xe2\x82", 2, MASK);
    frame(&b, 0x80 | WS_OP_CONT, "x", 1, MASK);
    off = 0;
    CHECK_EQ_INT(next(&r, &b, &off, &ev), WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, WS_CLOSE_BAD_DATA);
    buf_free(&b);
    ws_reader_free(&r);
}

static void test_utf8(void) {
    const char *good[] = {"", "plain", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
    const char *bad[] = {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80",
                         "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xe2\x82", "\xff"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK(ws_utf8_valid((const uint8_t *)good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(!ws_utf8_valid((const uint8_t *)bad[i], strlen(bad[i])));
}

int main(void) {
    TEST(test_header_lengths);
    TEST(test_mask_offsets);
    TEST(test_messages_of_every_size);
    TEST(test_fragments_with_ping_between);
    TEST(test_byte_by_byte);
    TEST(test_close_frames);
    TEST(test_protocol_errors);
    TEST(test_utf8);
    return test_done();
}
