/* Tests for utf8_check: RFC 3629 boundaries, overlongs, surrogates. */
#include "base/utf8.h"
#include "testlib.h"

static size_t check(const char *s) { return utf8_check(s, strlen(s)); }

static void test_valid(void) {
    CHECK_EQ_INT(check(""), 0);
    CHECK_EQ_INT(check("plain ascii"), 11);
    CHECK_EQ_INT(check("caf\xc3\xa9"), 5);                 /* U+00E9 */
    CHECK_EQ_INT(check("\xe2\x82\xac"), 3);                /* U+20AC */
    CHECK_EQ_INT(check("\xf0\x9f\x98\x80"), 4);            /* U+1F600 */
    CHECK_EQ_INT(check("\xed\x9f\xbf"), 3);                /* U+D7FF, below surrogates */
    CHECK_EQ_INT(check("\xf4\x8f\xbf\xbf"), 4);            /* U+10FFFF */
}

static void test_invalid(void) {
    CHECK_EQ_INT(check("ab\x80"), 2);                      /* lone continuation */
    CHECK_EQ_INT(check("\xc0\xaf"), 0);                    /* overlong '/' */
    CHECK_EQ_INT(check("\xe0\x80\xaf"), 0);                /* overlong */
    CHECK_EQ_INT(check("\xed\xa0\x80"), 0);                /* surrogate U+D800 */
    CHECK_EQ_INT(check("\xf4\x90\x80\x80"), 0);            /* above U+10FFFF */
    CHECK_EQ_INT(check("x\xc3"), 1);                       /* truncated */
    CHECK_EQ_INT(check("\xc3\x28"), 0);                    /* bad continuation */
    CHECK_EQ_INT(check("\xff"), 0);
    CHECK_EQ_INT(utf8_check("a\0b", 3), 3);                /* NUL is valid UTF-8 */
}

int main(void) {
    TEST(test_valid);
    TEST(test_invalid);
    return test_done();
}
