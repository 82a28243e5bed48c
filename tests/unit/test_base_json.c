/* Tests for json_put_string: escapes, control characters, UTF-8 passed on. */
#include "base/json.h"
#include "testlib.h"

static const char *put(const char *s) {
    static buf b;
    buf_clear(&b);
    json_put_string(&b, s);
    return b.data;
}

static void test_strings(void) {
    CHECK_STR(put("plain"), "\"plain\"");
    CHECK_STR(put(""), "\"\"");
    CHECK_STR(put(NULL), "null");
    CHECK_STR(put("a\"b\\c"), "\"a\\\"b\\\\c\"");
    CHECK_STR(put("l1\nl2\tx\r"), "\"l1\\nl2\\tx\\r\"");
    CHECK_STR(put("\x01\x1f"), "\"\\u0001\\u001f\"");
    CHECK_STR(put("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
}

int main(void) {
    TEST(test_strings);
    return test_done();
}
