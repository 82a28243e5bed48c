/* test_net_sse: the SSE writer and the incremental event-stream parser,
 * fed in every possible split, with every line-end style. */
#include <stdlib.h>
#include <string.h>

#include "net/sse.h"
#include "testlib.h"

/* Events seen, each followed by a '|' so boundaries are visible. */
typedef struct seen {
    buf text;
    int count;
} seen;

static void collect(const char *data, size_t len, void *ud) {
    seen *s = ud;
    CHECK(data[len] == '\0');
    buf_append(&s->text, data, len);
    buf_putc(&s->text, '|');
    s->count++;
}

/* Feeds `in` split once at every offset (and in single bytes) and checks
 * that every way gives `want`. */
static void check_all_splits(const char *in, const char *want, int want_count) {
    size_t n = strlen(in);
    for (size_t cut = 0; cut <= n; cut++) {
        sse_parser p;
        sse_parser_init(&p);
        seen s = {BUF_INIT, 0};
        CHECK_EQ_INT(sse_parser_feed(&p, in, cut, collect, &s), 0);
        CHECK_EQ_INT(sse_parser_feed(&p, in + cut, n - cut, collect, &s), 0);
        CHECK_STR(s.text.data ? s.text.data : "", want);
        CHECK_EQ_INT(s.count, want_count);
        buf_free(&s.text);
        sse_parser_free(&p);
    }
    sse_parser p;
    sse_parser_init(&p);
    seen s = {BUF_INIT, 0};
    for (size_t i = 0; i < n; i++) CHECK_EQ_INT(sse_parser_feed(&p, in + i, 1, collect, &s), 0);
    CHECK_STR(s.text.data ? s.text.data : "", want);
    buf_free(&s.text);
    sse_parser_free(&p);
}

static void test_write(void) {
    buf b = BUF_INIT;
    sse_write_data(&b, "{\"a\":1}", 7);
    sse_write_data(&b, "[DONE]", 6);
    CHECK_STR(b.data, "data: {\"a\":1}\n\ndata: [DONE]\n\n");
    buf_free(&b);
}

static void test_roundtrip(void) {
    buf b = BUF_INIT;
    sse_write_data(&b, "{\"x\":\"y\"}", 9);
    sse_write_data(&b, "[DONE]", 6);
    check_all_splits(b.data, "{\"x\":\"y\"}|[DONE]|", 2);
    buf_free(&b);
}

static void test_line_ends(void) {
    check_all_splits("data: a\n\ndata: b\n\n", "a|b|", 2);
    check_all_splits("data: a\r\n\r\ndata: b\r\n\r\n", "a|b|", 2);
    check_all_splits("data: a\r\rdata: b\r\r", "a|b|", 2);
    /* mixed in one stream */
    check_all_splits("data: a\r\n\ndata: b\r\rdata: c\n\r\n", "a|b|c|", 3);
}

static void test_multiline_and_fields(void) {
    check_all_splits("data: one\ndata: two\ndata:three\n\n", "one\ntwo\nthree|", 1);
    check_all_splits(": ping\n\nevent: message\nid: 7\nretry: 100\ndata: x\n\n", "x|", 1);
    /* only the first space after the colon is dropped */
    check_all_splits("data:  two spaces\n\n", " two spaces|", 1);
    /* "data" without colon is an empty data line; an empty data: still makes an event */
    check_all_splits("data\n\ndata:\n\n", "||", 2);
    /* blank lines without data make no event; an unterminated event is not delivered */
    check_all_splits("\n\n\r\n: c\n\ndata: tail", "", 0);
    /* field names are case-sensitive; "Data" is unknown */
    check_all_splits("Data: no\ndata: yes\n\n", "yes|", 1);
}

static void test_done_marker(void) {
    check_all_splits("data: {\"choices\":[]}\n\ndata: [DONE]\n\n", "{\"choices\":[]}|[DONE]|", 2);
}

static void test_oversize(void) {
    sse_parser p;
    sse_parser_init(&p);
    p.max_event = 16;
    seen s = {BUF_INIT, 0};
    CHECK_EQ_INT(sse_parser_feed(&p, "data: short\n\n", 13, collect, &s), 0);
    /* too long as one partial line */
    CHECK_EQ_INT(sse_parser_feed(&p, "data: 0123456789abcdefgh", 24, collect, &s), -1);
    sse_parser_free(&p);

    sse_parser_init(&p);
    p.max_event = 16;
    /* each line fits, their join does not */
    CHECK_EQ_INT(sse_parser_feed(&p, "data: 0123456789\n", 17, collect, &s), 0);
    CHECK_EQ_INT(sse_parser_feed(&p, "data: 0123456789\n", 17, collect, &s), -1);
    sse_parser_free(&p);

    sse_parser_init(&p);
    p.max_event = 16;
    /* too long even when fed byte by byte */
    const char *big = "data: 0123456789abcdefghij\n\n";
    int rc = 0;
    for (size_t i = 0; big[i] && rc == 0; i++) rc = sse_parser_feed(&p, big + i, 1, collect, &s);
    CHECK_EQ_INT(rc, -1);
    CHECK_EQ_INT(s.count, 1);
    CHECK_STR(s.text.data, "short|");
    buf_free(&s.text);
    sse_parser_free(&p);

    sse_parser_init(&p);
    CHECK_EQ_INT(p.max_event, 4u << 20);
    sse_parser_free(&p);
}

int main(void) {
    TEST(test_write);
    TEST(test_roundtrip);
    TEST(test_line_ends);
    TEST(test_multiline_and_fields);
    TEST(test_done_marker);
    TEST(test_oversize);
    return test_done();
}
