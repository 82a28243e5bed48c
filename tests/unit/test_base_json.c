/* Tests for json_put_string: escapes, control characters, UTF-8 passed on. */
#include <math.h>

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

/* json_write prints what cJSON_PrintUnformatted prints. */
static void test_write_matches_cjson(void) {
    static const char *docs[] = {
        "{\"id\":\"x\",\"n\":0,\"neg\":-12,\"big\":1795740755,\"f\":0.5,\"t\":true,\"f2\":false,\"z\":null}",
        "[1,2,[3,[]],{},\"a\\\"b\\n\"]",
        "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf\u00e9 \\u0001\"},\"finish_reason\":null}]}",
        "{\"x\":1e300,\"y\":-0.25,\"w\":123456789012}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        cJSON *j = cJSON_Parse(docs[i]);
        CHECK(j != NULL);
        char *want = cJSON_PrintUnformatted(j);
        buf got = BUF_INIT;
        json_write(&got, j);
        cJSON *back = cJSON_Parse(got.data);
        CHECK(cJSON_Compare(j, back, 1));
        if (i != 3) CHECK_STR(got.data, want); /* cJSON writes 1e300 as 1e+300 */
        cJSON_Delete(back);
        cJSON_free(want);
        buf_free(&got);
        cJSON_Delete(j);
    }
    cJSON *nan = cJSON_CreateNumber(NAN);
    buf b = BUF_INIT;
    json_write(&b, nan);
    CHECK_STR(b.data, "null");
    buf_free(&b);
    cJSON_Delete(nan);
}

static const char *fixed(double d, int decimals) {
    static buf b;
    buf_clear(&b);
    json_put_fixed(&b, d, decimals);
    return b.data;
}

static void test_fixed(void) {
    CHECK_STR(fixed(0, 12), "0");
    CHECK_STR(fixed(3, 12), "3");
    CHECK_STR(fixed(0.00000068, 12), "0.00000068");
    CHECK_STR(fixed(0.000122, 12), "0.000122");
    CHECK_STR(fixed(-0.0001213, 12), "-0.0001213");
    CHECK_STR(fixed(41.2345678, 3), "41.235");
    CHECK_STR(fixed(1e-15, 12), "0");
    CHECK_STR(fixed(-1e-15, 12), "0");
    CHECK_STR(fixed(12.5, 0), "13");
    CHECK_STR(fixed(1e20, 3), "1e+20");
    CHECK_STR(fixed(NAN, 3), "null");
    /* what it writes parses back to the value at that precision */
    double v = 0.000123456789012;
    cJSON *j = cJSON_Parse(fixed(v, 12));
    CHECK(j && fabs(j->valuedouble - v) < 1e-12);
    cJSON_Delete(j);
}

/* json_put_decimal writes what printf's %.*f writes: the same text for
 * costs as they come (prices times token counts), and elsewhere at most
 * one unit apart in the last place. */
static void test_decimal_matches_printf(void) {
    char want[64];
    buf b = BUF_INIT;
    static const double edge[] = {0, -0.0, 1, -1, 0.5, 1e-11, -1e-12, 123456.789, 1e20, INFINITY, NAN};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++) {
        buf_clear(&b);
        json_put_decimal(&b, edge[i], 10);
        snprintf(want, sizeof want, "%.10f", edge[i]);
        CHECK_STR(b.data, want);
    }
    buf_clear(&b);
    json_put_decimal(&b, 2.5, 0);
    CHECK_STR(b.data, "3"); /* rounded half away from zero; printf rounds to even */
    int differ = 0;
    for (long tokens = 0; tokens < 20000; tokens += 7) {
        for (int p = 0; p < 4; p++) {
            static const double price[] = {3.0, 10.0, 0.15, 0.6};
            double cost = (double)tokens * price[p] / 1e6;
            buf_clear(&b);
            json_put_decimal(&b, cost, 10);
            snprintf(want, sizeof want, "%.10f", cost);
            differ += strcmp(b.data, want) != 0;
        }
    }
    CHECK_EQ_INT(differ, 0);
    buf_free(&b);
}

int main(void) {
    TEST(test_strings);
    TEST(test_fixed);
    TEST(test_decimal_matches_printf);
    TEST(test_write_matches_cjson);
    return test_done();
}
