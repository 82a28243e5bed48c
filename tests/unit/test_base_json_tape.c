/* Tests for json_tape: the RFC 8259 grammar (every input of up to five
 * bytes over JSON's punctuation against an independent recursive reader),
 * UTF-8 and escapes in strings, the depth limit, the tape's layout, key and
 * index lookup, decoding, and a tape that outgrows the caller's array. */
#include <math.h>
#include <stdlib.h>

#include "base/json_tape.h"
#include "testlib.h"

static int parses(const char *text) {
    json_tok space[8];
    json_doc d;
    json_doc_init(&d, space, 8);
    int rc = json_parse(&d, text, strlen(text));
    json_doc_free(&d);
    return rc == 0;
}

/* ---- an independent reader, recursive, for the grammar only ---- */

typedef struct ref {
    const char *p, *e;
    int depth;
} ref;

static void ref_ws(ref *r) {
    while (r->p < r->e && strchr(" \t\r\n", *r->p) && *r->p) r->p++;
}

static int ref_value(ref *r);

static int ref_string(ref *r) {
    if (r->p == r->e || *r->p != '"') return 0;
    for (r->p++; r->p < r->e; r->p++) {
        unsigned char c = (unsigned char)*r->p;
        if (c == '"') {
            r->p++;
            return 1;
        }
        if (c < 0x20 || c >= 0x80) return 0; /* the alphabet below is ASCII */
        if (c == '\\') {
            if (++r->p == r->e || !strchr("\"\\/bfnrtu", *r->p) || !*r->p) return 0;
            if (*r->p == 'u') return 0; /* its four hex digits do not fit in five bytes */
        }
    }
    return 0;
}

static int ref_digits(ref *r) {
    const char *s = r->p;
    while (r->p < r->e && *r->p >= '0' && *r->p <= '9') r->p++;
    return r->p > s;
}

static int ref_number(ref *r) {
    if (r->p < r->e && *r->p == '-') r->p++;
    if (r->p < r->e && *r->p == '0') r->p++;
    else if (r->p == r->e || *r->p < '1' || *r->p > '9' || !ref_digits(r)) return 0;
    if (r->p < r->e && *r->p == '.' && (++r->p, !ref_digits(r))) return 0;
    if (r->p < r->e && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->e && (*r->p == '+' || *r->p == '-')) r->p++;
        if (!ref_digits(r)) return 0;
    }
    return 1;
}

static int ref_word(ref *r, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(r->e - r->p) < n || memcmp(r->p, w, n)) return 0;
    r->p += n;
    return 1;
}

static int ref_container(ref *r, char close, int object) {
    r->p++;
    ref_ws(r);
    if (r->p < r->e && *r->p == close) {
        r->p++;
        return 1;
    }
    for (;;) {
        ref_ws(r);
        if (object) {
            if (!ref_string(r)) return 0;
            ref_ws(r);
            if (r->p == r->e || *r->p++ != ':') return 0;
        }
        if (!ref_value(r)) return 0;
        ref_ws(r);
        if (r->p == r->e) return 0;
        char c = *r->p++;
        if (c == close) return 1;
        if (c != ',') return 0;
    }
}

static int ref_value(ref *r) {
    ref_ws(r);
    if (r->p == r->e) return 0;
    switch (*r->p) {
    case '{': return ref_container(r, '}', 1);
    case '[': return ref_container(r, ']', 0);
    case '"': return ref_string(r);
    case 't': return ref_word(r, "true");
    case 'f': return ref_word(r, "false");
    case 'n': return ref_word(r, "null");
    default: return ref_number(r);
    }
}

static int ref_valid(const char *s, size_t n) {
    ref r = {s, s + n, 0};
    if (!ref_value(&r)) return 0;
    ref_ws(&r);
    return r.p == r.e;
}

/* Every text of up to 5 bytes over an alphabet that reaches every rule. */
static void test_grammar_exhaustive(void) {
    static const char alphabet[] = "{}[],:\"01-.e \\ant";
    const size_t k = sizeof alphabet - 1;
    char text[8];
    int disagreements = 0;
    long valid = 0;
    json_tok space[4];
    for (size_t len = 0; len <= 5; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++) total *= k;
        for (size_t code = 0; code < total; code++) {
            size_t c = code;
            for (size_t i = 0; i < len; i++, c /= k) text[i] = alphabet[c % k];
            json_doc d;
            json_doc_init(&d, space, 4);
            int ours = json_parse(&d, text, len) == 0;
            json_doc_free(&d);
            int want = ref_valid(text, len);
            valid += want;
            if (ours != want && disagreements++ < 5) {
                char m[64];
                snprintf(m, sizeof m, "'%.*s': tape %d, reference %d", (int)len, text, ours, want);
                test_fail(__FILE__, __LINE__, m);
            }
        }
    }
    CHECK_EQ_INT(disagreements, 0);
    CHECK(valid > 1000); /* the alphabet does reach valid documents */
}

static void test_valid_and_invalid(void) {
    static const char *good[] = {
        "0", "-0", "1.5e-3", "-12.0E+2", "1E2", "\"\"", "true", "false", "null", " [ ] ", "{}",
        "{\"a\":[1,{\"b\":null}],\"c\":\"x\"}", "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"]",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "\"\\ud800\"", "\t\r\n1\t\r\n",
    };
    static const char *bad[] = {
        "", " ", "01", "-", "1.", ".5", "1e", "1e+", "+1", "0x1", "[1,]", "{\"a\":1,}", "[,1]", "{,}",
        "{\"a\"}", "{\"a\" 1}", "{1:2}", "[1 2]", "\"abc", "\"a\\x\"", "\"\\u12g4\"", "\"\\u12\"",
        "\"tab\there\"", "tru", "nul", "True", "[1]]", "{}{}", "1 2", "NaN", "Infinity", "[",
        "\"\xc3\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"", "\"\x80\"",
        "'a'", "[1,2", "{\"a\":}", "\"\x7f\x01\"",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (!parses(good[i])) test_fail(__FILE__, __LINE__, good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (parses(bad[i])) test_fail(__FILE__, __LINE__, bad[i]);
    /* a NUL byte is a control character inside a string and junk outside */
    json_doc d;
    json_doc_init(&d, NULL, 0);
    CHECK(json_parse(&d, "\"a\0b\"", 5) < 0);
    CHECK(json_parse(&d, "1\0", 2) < 0);
    CHECK_EQ_INT(d.error_at, 1);
    CHECK_STR(d.error, "data after the value");
    json_doc_free(&d);
}

static void test_error_position(void) {
    json_doc d;
    json_doc_init(&d, NULL, 0);
    CHECK(json_parse(&d, "{\"a\":[1,2,x]}", 13) < 0);
    CHECK_EQ_INT(d.error_at, 10);
    CHECK(json_parse(&d, "[\"ok\", \"\xc3(\"]", 12) < 0);
    CHECK_EQ_INT(d.error_at, 8);
    CHECK_STR(d.error, "invalid UTF-8 in a string");
    json_doc_free(&d);
}

static void test_depth_limit(void) {
    char *deep = malloc(2 * JSON_MAX_DEPTH + 4);
    for (int i = 0; i < JSON_MAX_DEPTH; i++) {
        deep[i] = '[';
        deep[JSON_MAX_DEPTH + i] = ']';
    }
    deep[2 * JSON_MAX_DEPTH] = '\0';
    CHECK(parses(deep));
    /* one more level */
    memmove(deep + 1, deep, 2 * JSON_MAX_DEPTH + 1);
    deep[0] = '[';
    strcat(deep, "]");
    CHECK(!parses(deep));
    free(deep);
}

static void test_tape_layout(void) {
    const char *text = "{\"a\":[1,{\"b\":null}],\"c\":\"x\",\"d\":{}}";
    json_tok space[4]; /* smaller than the document: the tape moves to the heap */
    json_doc d;
    json_doc_init(&d, space, 4);
    CHECK_EQ_INT(json_parse(&d, text, strlen(text)), 0);
    CHECK(d.heap);
    /* { "a" [ 1 { "b" null } "c" "x" "d" {} */
    CHECK_EQ_INT(d.n, 11);
    static const int types[] = {JSON_OBJECT, JSON_STRING, JSON_ARRAY,  JSON_NUMBER, JSON_OBJECT, JSON_STRING,
                                JSON_NULL,   JSON_STRING, JSON_STRING, JSON_STRING, JSON_OBJECT};
    static const int ends[] = {11, 2, 7, 4, 7, 6, 7, 8, 9, 10, 11};
    for (int i = 0; i < 11; i++) {
        CHECK_EQ_INT(d.tok[i].type, types[i]);
        CHECK_EQ_INT(d.tok[i].end, ends[i]);
    }
    CHECK_EQ_INT(d.tok[0].len, strlen(text));
    int a = json_get(&d, 0, "a");
    CHECK_EQ_INT(a, 2);
    CHECK(!memcmp(json_raw(&d, a), "[1,{\"b\":null}]", d.tok[a].len));
    CHECK_EQ_INT(d.tok[a].len, 14);
    CHECK_EQ_INT(json_at(&d, a, 0), 3);
    CHECK_EQ_INT(json_at(&d, a, 1), 4);
    CHECK_EQ_INT(json_at(&d, a, 2), -1);
    CHECK_EQ_INT(json_at(&d, 0, 0), -1); /* not an array */
    CHECK_EQ_INT(json_type_of(&d, json_get(&d, json_at(&d, a, 1), "b")), JSON_NULL);
    CHECK(json_str_eq(&d, json_get(&d, 0, "c"), "x"));
    CHECK_EQ_INT(json_get(&d, 0, "d"), 10);
    CHECK_EQ_INT(json_get(&d, 0, "e"), -1);
    CHECK_EQ_INT(json_get(&d, a, "a"), -1); /* not an object */
    CHECK_EQ_INT(json_get(&d, -1, "a"), -1);
    CHECK_EQ_INT(json_type_of(&d, -1), 0);
    json_doc_free(&d);
    CHECK(!d.heap);
}

static void test_keys_and_strings(void) {
    const char *text = "{\"k\\u0065y\":1,\"key\":2,\"\":3,\"s\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\\udc00x\"}";
    json_doc d;
    json_doc_init(&d, NULL, 0);
    CHECK_EQ_INT(json_parse(&d, text, strlen(text)), 0);
    double v;
    CHECK(json_number(&d, json_get(&d, 0, "key"), &v));
    CHECK(v == 1); /* the first "key", written with an escape */
    CHECK(json_number(&d, json_get(&d, 0, ""), &v));
    CHECK(v == 3);
    int s = json_get(&d, 0, "s");
    buf b = BUF_INIT;
    json_str_decode(&d, s, &b);
    CHECK_STR(b.data, "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80\xef\xbf\xbdx");
    CHECK(json_str_eq(&d, s, b.data));
    CHECK(!json_str_eq(&d, s, "a"));
    CHECK(!json_str_eq(&d, json_get(&d, 0, "key"), "2")); /* a number is no string */
    buf_free(&b);
    json_doc_free(&d);
}

static void test_members(void) {
    const char *text = "{\"a\":[1,{\"x\":2}],\"b\":{},\"c\":\"s\"}";
    json_doc d;
    json_doc_init(&d, NULL, 0);
    CHECK_EQ_INT(json_parse(&d, text, strlen(text)), 0);
    const char *keys[] = {"a", "b", "c"};
    int n = 0;
    for (int k = json_member_next(&d, 0, -1); k >= 0; k = json_member_next(&d, 0, k), n++) {
        CHECK(n < 3 && json_str_eq(&d, k, keys[n]));   /* nested members are stepped over */
        CHECK_EQ_INT(k + 1, json_get(&d, 0, keys[n < 3 ? n : 0]));
    }
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(json_member_next(&d, json_get(&d, 0, "b"), -1), -1);   /* empty object */
    CHECK_EQ_INT(json_member_next(&d, json_get(&d, 0, "a"), -1), -1);   /* not an object */
    CHECK_EQ_INT(json_member_next(&d, -1, -1), -1);
    json_doc_free(&d);
}

static void test_numbers(void) {
    const char *text = "[0,-0,12345678901234567890,1.25e2,-3.5E-1,-42,999999999999999,9999999999999999,1e400]";
    json_doc d;
    json_doc_init(&d, NULL, 0);
    CHECK_EQ_INT(json_parse(&d, text, strlen(text)), 0);
    static const double want[] = {0, 0, 12345678901234567890.0, 125, -0.35, -42, 999999999999999.0,
                                  9999999999999999.0};
    double v;
    for (int i = 0; i < 8; i++) {
        CHECK(json_number(&d, json_at(&d, 0, i), &v));
        CHECK(v == want[i]);
    }
    CHECK(json_number(&d, json_at(&d, 0, 1), &v));
    CHECK(signbit(v)); /* -0 as strtod reads it */
    CHECK(json_number(&d, json_at(&d, 0, 8), &v));
    CHECK(isinf(v));
    CHECK(!json_number(&d, 0, &v));
    CHECK(v == 0);
    json_doc_free(&d);
}

/* One doc reads several texts in turn, its heap tape reused. */
static void test_reuse(void) {
    json_doc d;
    json_doc_init(&d, NULL, 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(json_parse(&d, "[1,2,3]", 7), 0);
        CHECK_EQ_INT(d.n, 4);
        CHECK(json_parse(&d, "[1,", 3) < 0);
        CHECK_EQ_INT(json_parse(&d, "\"x\"", 3), 0);
        CHECK_EQ_INT(d.n, 1);
    }
    json_doc_free(&d);
}

/* A copied tape reads the same document over a copy of its text: on the
 * caller's space when it fits, else on the heap. */
static void test_copy(void) {
    const char *text = "{\"a\":[1,2,{\"b\":\"x\\ny\"}],\"c\":null}";
    json_doc src;
    json_doc_init(&src, NULL, 0);
    CHECK_EQ_INT(json_parse(&src, text, strlen(text)), 0);
    char *copy = strdup(text);
    json_tok small[2], big[16];
    json_doc dst[2];
    json_doc_init(&dst[0], small, 2);
    json_doc_init(&dst[1], big, 16);
    for (int i = 0; i < 2; i++) {
        json_doc_copy(&dst[i], &src, copy);
        CHECK_EQ_INT(dst[i].n, src.n);
        CHECK_EQ_INT(dst[i].heap, i == 0);
        CHECK(dst[i].text == copy);
        int b = json_get(&dst[i], json_at(&dst[i], json_get(&dst[i], 0, "a"), 2), "b");
        CHECK(json_str_eq(&dst[i], b, "x\ny"));
        CHECK_EQ_INT(json_type_of(&dst[i], json_get(&dst[i], 0, "c")), JSON_NULL);
        json_doc_free(&dst[i]);
    }
    free(copy);
    json_doc_free(&src);
}

int main(void) {
    TEST(test_grammar_exhaustive);
    TEST(test_valid_and_invalid);
    TEST(test_error_position);
    TEST(test_depth_limit);
    TEST(test_tape_layout);
    TEST(test_keys_and_strings);
    TEST(test_members);
    TEST(test_numbers);
    TEST(test_reuse);
    TEST(test_copy);
    return test_done();
}
