/* Tests for the answer validators: math (exact evaluation, question
 * recognition, answer number forms), code (fences, per-language lexical
 * checks), JSON (response_format, each schema keyword, violation paths)
 * and the log-probability check. */
#include <stdlib.h>

#include "mesh/validate.h"
#include "testlib.h"

/* The exact value of an expression, or "!" and the reason. */
static const char *eval(const char *expr) {
    static char out[128];
    if (!validate_math_eval(expr, strlen(expr), out, sizeof out)) {
        static char err[130];
        snprintf(err, sizeof err, "!%s", out);
        return err;
    }
    return out;
}

static void test_math_eval(void) {
    CHECK_STR(eval("2+2"), "4");
    CHECK_STR(eval("What is 17*23?"), "391");
    CHECK_STR(eval("Compute (12+7)/2"), "19/2");
    CHECK_STR(eval("1 - 2 - 3"), "-4");          /* left associative */
    CHECK_STR(eval("2 * 3 + 4 * 5"), "26");      /* precedence */
    CHECK_STR(eval("2^3^2"), "512");             /* right associative */
    CHECK_STR(eval("-2^2"), "-4");
    CHECK_STR(eval("(-2)^2"), "4");
    CHECK_STR(eval("2^-2"), "1/4");
    CHECK_STR(eval("2**10"), "1024");
    CHECK_STR(eval("0.1 + 0.2"), "3/10");
    CHECK_STR(eval(".5 * 4"), "2");
    CHECK_STR(eval("1,000 + 2,345,678"), "2346678");
    CHECK_STR(eval("--3 - -3"), "6");
    CHECK_STR(eval("2(3+4)"), "14");
    CHECK_STR(eval("(1+2)(3+4)"), "21");
    CHECK_STR(eval("6 \xc3\xb7 4 \xc3\x97 2 \xe2\x88\x92 1"), "2"); /* 6 ÷ 4 × 2 − 1 */
    CHECK_STR(eval("what's 7 times 8"), "56");
    CHECK_STR(eval("What\xe2\x80\x99s 9 minus 10?"), "-1");
    CHECK_STR(eval("Calculate 10 divided by 4 plus 3 multiplied by 2."), "17/2");
    CHECK_STR(eval("3 x 4"), "12");
    CHECK_STR(eval("What is 2+2? Answer with just the number."), "4");
    CHECK_STR(eval("Compute 1/8 exactly, as a fraction"), "1/8");
    CHECK_STR(eval("Please evaluate: (2.5 - 0.5) / 8 ="), "1/4");
    CHECK_STR(eval("0^0"), "1");
    CHECK_STR(eval("1^100000000000000000000"), "1");
    CHECK_STR(eval("(-1)^100000000000000000001"), "-1");
    CHECK_STR(eval("170141183460469231731687303715884105727 + 0"), "170141183460469231731687303715884105727");
    /* recognised as arithmetic, but not computable */
    CHECK_STR(eval("1/0"), "!division by zero");
    CHECK_STR(eval("0^-1"), "!division by zero");
    CHECK_STR(eval("1/(2-2)"), "!division by zero");
    CHECK_STR(eval("2^0.5"), "!exponent is not an integer");
    CHECK_STR(eval("2^200"), "!numbers too large to check exactly");
    CHECK_STR(eval("170141183460469231731687303715884105727 + 1"), "!numbers too large to check exactly");
    CHECK_STR(eval("999999999999999999999999999999999999999999 * 2"), "!numbers too large to check exactly");
    CHECK_STR(eval("((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))) + 1"),
              "!expression nested too deeply");
    /* not pure arithmetic */
    CHECK_STR(eval("What is 5?"), "!not pure arithmetic");
    CHECK_STR(eval("-5"), "!not pure arithmetic");
    CHECK_STR(eval("If John has 3 apples and eats 2, how many are left?"), "!not pure arithmetic");
    CHECK_STR(eval("What is 15% of 80?"), "!not pure arithmetic");
    CHECK_STR(eval("Solve x + 2 = 5"), "!not pure arithmetic");
    CHECK_STR(eval("2 + 2 is what? And 3 + 3?"), "!not pure arithmetic");
    CHECK_STR(eval("What is 2+2 in base 3?"), "!not pure arithmetic");
    CHECK_STR(eval("f(1, 2)"), "!not pure arithmetic");
    CHECK_STR(eval("2 +"), "!not pure arithmetic");
    CHECK_STR(eval("(2 + 3"), "!not pure arithmetic");
    CHECK_STR(eval("2 + 3)"), "!not pure arithmetic");
    CHECK_STR(eval("2 3"), "!not pure arithmetic");
    CHECK_STR(eval("$2 + 2$"), "!not pure arithmetic");
    CHECK_STR(eval(""), "!not pure arithmetic");
    CHECK_STR(eval("1,2 + 3"), "!not pure arithmetic"); /* a comma that is no thousands separator */
    /* a long question is refused, not overflowed */
    char big[2000];
    size_t n = 0;
    for (int i = 0; i < 400; i++) n += (size_t)snprintf(big + n, sizeof big - n, "1+");
    snprintf(big + n, sizeof big - n, "1");
    CHECK_STR(eval(big), "!not pure arithmetic");
}

static validate_verdict math(const char *q, const char *a) {
    return validate_math(q, a).verdict;
}

static void test_math_answers(void) {
    CHECK_EQ_INT(math("What is 17*23?", "17 * 23 = 391."), VALIDATE_PASS);
    CHECK_EQ_INT(math("What is 17*23?", "The answer is 392"), VALIDATE_FAIL);
    CHECK_EQ_INT(math("What is 17*23?", "I don't know."), VALIDATE_FAIL);
    CHECK_EQ_INT(math("Tell me a joke", "391"), VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(math("1/0", "undefined"), VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(math("Compute (12+7)/2", "9.5"), VALIDATE_PASS);
    CHECK_EQ_INT(math("Compute (12+7)/2", "19/2"), VALIDATE_PASS);
    CHECK_EQ_INT(math("Compute (12+7)/2", "$\\frac{19}{2}$"), VALIDATE_PASS);
    CHECK_EQ_INT(math("Compute (12+7)/2", "9"), VALIDATE_FAIL);
    CHECK_EQ_INT(math("Compute (12+7)/2", "10"), VALIDATE_FAIL); /* integers are never approximations */
    CHECK_EQ_INT(math("1/2", "0.5"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1/2", "0.50"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1/2", "0.51"), VALIDATE_FAIL); /* 1/2 has a 2-place form: must be equal */
    CHECK_EQ_INT(math("2+2", "4.0"), VALIDATE_PASS);
    CHECK_EQ_INT(math("2+2", "**4**"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1000*1000", "1,000,000"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1000*1000", "1000000.00"), VALIDATE_PASS);
    CHECK_EQ_INT(math("3-5", "3 - 5 = -2"), VALIDATE_PASS);
    CHECK_EQ_INT(math("3-5", "3 - 5 = \xe2\x88\x92" "2"), VALIDATE_PASS);
    CHECK_EQ_INT(math("3-5", "5-2"), VALIDATE_FAIL); /* binary minus: the final number is 2 */
    CHECK_EQ_INT(math("-7/2", "(-7/2)"), VALIDATE_PASS);
    CHECK_EQ_INT(math("-7/2", "\\frac{-7}{2}"), VALIDATE_PASS);
    CHECK_EQ_INT(math("-7/2", "-\\frac{7}{2}"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1/3", "0.33"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1/3", "0.333"), VALIDATE_PASS);
    CHECK_EQ_INT(math("2/3", "0.67"), VALIDATE_PASS);
    CHECK_EQ_INT(math("2/3", "0.66"), VALIDATE_PASS); /* truncated */
    CHECK_EQ_INT(math("2/3", "0.65"), VALIDATE_FAIL);
    CHECK_EQ_INT(math("1/3", "0.3"), VALIDATE_FAIL);  /* one place is too coarse */
    CHECK_EQ_INT(math("-1/3", "-0.333"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1/3", "-0.333"), VALIDATE_FAIL);
    CHECK_EQ_INT(math("22/7", "\\boxed{3.14}"), VALIDATE_PASS); /* 3.1428...: either 2-place neighbour */
    CHECK_EQ_INT(math("22/7", "\\boxed{3.15}"), VALIDATE_PASS);
    CHECK_EQ_INT(math("22/7", "\\boxed{3.13}"), VALIDATE_FAIL);
    CHECK_EQ_INT(math("5*5", "The result, \\boxed{25}, is checked by 5+5+5+5+5."), VALIDATE_PASS);
    CHECK_EQ_INT(math("5*5", "x2 = 25 and v3"), VALIDATE_PASS); /* numbers glued to words are not numbers */
    CHECK_EQ_INT(math("5*5", "2.5e1"), VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(math("5*5", "25/0"), VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(math("5*5", "99999999999999999999999999999999999999999"), VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(math("1/3", "0.33333333333333333333333333333333333333333"), VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(math("1/7", "1/7"), VALIDATE_PASS);
    CHECK_EQ_INT(math("1/7", "2/14"), VALIDATE_PASS);
    CHECK_EQ_INT(math(NULL, "1"), VALIDATE_NOT_APPLICABLE);
    validate_result r = validate_math("What is 17*23?", "It is 392.");
    CHECK_STR(r.message, "answer 392 but the exact value is 391");
    r = validate_math("Compute (12+7)/2", "= 9.5");
    CHECK_STR(r.message, "answer 9.5 equals 19/2");
    r = validate_math("1/3", "about 0.333");
    CHECK_STR(r.message, "answer 0.333 approximates 1/3");
    CHECK_STR(validate_verdict_name(r.verdict), "pass");
}

/* The verdict of an instance against a schema; the message in last_msg. */
static char last_msg[256];
static validate_verdict schema_check(const char *instance, const char *schema) {
    cJSON *i = cJSON_Parse(instance), *s = cJSON_Parse(schema);
    if (!i || !s) {
        fprintf(stderr, "bad test JSON: %s / %s\n", instance, schema);
        abort();
    }
    validate_result r = validate_json_schema(i, s);
    snprintf(last_msg, sizeof last_msg, "%s", r.message);
    cJSON_Delete(i);
    cJSON_Delete(s);
    return r.verdict;
}

#define PASSES(inst, schema) CHECK_EQ_INT(schema_check(inst, schema), VALIDATE_PASS)
#define FAILS(inst, schema, msg) do { CHECK_EQ_INT(schema_check(inst, schema), VALIDATE_FAIL); \
    CHECK_STR(last_msg, msg); } while (0)

static void test_schema_types(void) {
    PASSES("1", "{\"type\":\"integer\"}");
    PASSES("1.0", "{\"type\":\"integer\"}");
    FAILS("1.5", "{\"type\":\"integer\"}", "$: expected integer, got number");
    PASSES("1.5", "{\"type\":\"number\"}");
    PASSES("7", "{\"type\":\"number\"}");
    FAILS("\"7\"", "{\"type\":\"number\"}", "$: expected number, got string");
    PASSES("null", "{\"type\":[\"string\",\"null\"]}");
    FAILS("true", "{\"type\":[\"string\",\"null\"]}", "$: expected string or null, got boolean");
    FAILS("[]", "{\"type\":\"object\"}", "$: expected object, got array");
    FAILS("{}", "{\"type\":\"array\"}", "$: expected array, got object");
    PASSES("false", "{\"type\":\"boolean\"}");
    PASSES("\"anything\"", "{}");
    PASSES("\"anything\"", "true");
    FAILS("1", "false", "$: no value is allowed here");
    PASSES("\"y\"", "{\"type\":\"string\",\"pattern\":\"^x$\",\"format\":\"date\"}"); /* ignored */
    CHECK_EQ_INT(schema_check("1", "{\"type\":\"frobnicate\"}"), VALIDATE_NOT_APPLICABLE);
    CHECK_STR(last_msg, "$: unknown type in schema");
    CHECK_EQ_INT(schema_check("1", "{\"type\":[\"string\",3]}"), VALIDATE_NOT_APPLICABLE);
    PASSES("1", "{\"type\":[]}");
}

static void test_schema_values(void) {
    PASSES("\"red\"", "{\"enum\":[\"red\",\"green\",null]}");
    PASSES("null", "{\"enum\":[\"red\",\"green\",null]}");
    FAILS("\"blue\"", "{\"enum\":[\"red\",\"green\"]}", "$: value is not one of the enum values");
    PASSES("{\"a\":[1,2]}", "{\"const\":{\"a\":[1,2]}}");
    FAILS("{\"a\":[2,1]}", "{\"const\":{\"a\":[1,2]}}", "$: value is not the const value");
    PASSES("5", "{\"minimum\":5,\"maximum\":5}");
    FAILS("4", "{\"minimum\":5}", "$: 4 is less than minimum 5");
    FAILS("6.5", "{\"maximum\":5}", "$: 6.5 is greater than maximum 5");
    FAILS("5", "{\"exclusiveMinimum\":5}", "$: 5 is not greater than exclusiveMinimum 5");
    FAILS("5", "{\"exclusiveMaximum\":5}", "$: 5 is not less than exclusiveMaximum 5");
    PASSES("5.01", "{\"exclusiveMinimum\":5}");
    FAILS("5", "{\"minimum\":5,\"exclusiveMinimum\":true}", "$: 5 is not greater than exclusive minimum 5");
    FAILS("5", "{\"maximum\":5,\"exclusiveMaximum\":true}", "$: 5 is not less than exclusive maximum 5");
    PASSES("0.3", "{\"multipleOf\":0.1}");
    FAILS("7", "{\"multipleOf\":2}", "$: 7 is not a multiple of 2");
    PASSES("\"x\"", "{\"minimum\":5}"); /* number keywords ignore strings */
    PASSES("\"h\xc3\xa9llo\"", "{\"minLength\":5,\"maxLength\":5}"); /* code points, not bytes */
    FAILS("\"hi\"", "{\"minLength\":3}", "$: string of 2 characters is shorter than minLength 3");
    FAILS("\"hello\"", "{\"maxLength\":4}", "$: string of 5 characters is longer than maxLength 4");
}

static void test_schema_arrays(void) {
    const char *s = "{\"type\":\"array\",\"items\":{\"type\":\"number\"},\"minItems\":1,\"maxItems\":3}";
    PASSES("[1,2,3]", s);
    FAILS("[]", s, "$: array of 0 items has fewer than minItems 1");
    FAILS("[1,2,3,4]", s, "$: array of 4 items has more than maxItems 3");
    FAILS("[1,\"2\"]", s, "$[1]: expected number, got string");
    const char *tuple = "{\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],\"items\":false}";
    PASSES("[\"a\",1]", tuple);
    PASSES("[\"a\"]", tuple);
    FAILS("[1]", tuple, "$[0]: expected string, got integer");
    FAILS("[\"a\",1,2]", tuple, "$[2]: no value is allowed here");
    PASSES("[\"a\",1,{}]", "{\"items\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}"); /* draft-4 tuple */
    FAILS("[\"a\",\"b\"]", "{\"items\":[{\"type\":\"string\"},{\"type\":\"integer\"}]}",
          "$[1]: expected integer, got string");
}

static void test_schema_objects(void) {
    const char *s = "{\"type\":\"object\",\"properties\":{\"items\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
                    "\"properties\":{\"price\":{\"type\":\"number\"}},\"required\":[\"price\"]}}},"
                    "\"required\":[\"items\"],\"additionalProperties\":false}";
    PASSES("{\"items\":[{\"price\":1},{\"price\":2.5,\"x\":1}]}", s);
    FAILS("{\"items\":[{\"price\":1},{\"price\":2},{\"price\":\"3\"}]}", s, "$.items[2].price: expected number, got string");
    FAILS("{\"items\":[{\"cost\":1}]}", s, "$.items[0]: missing required property 'price'");
    FAILS("{}", s, "$: missing required property 'items'");
    FAILS("{\"items\":[],\"odd key\":1}", s, "$[\"odd key\"]: property not allowed (additionalProperties is false)");
    const char *typed_extra = "{\"properties\":{\"a\":{}},\"additionalProperties\":{\"type\":\"string\"}}";
    PASSES("{\"a\":1,\"b\":\"x\"}", typed_extra);
    FAILS("{\"a\":1,\"b\":2}", typed_extra, "$.b: expected string, got integer");
    PASSES("{\"zz\":1}", "{\"additionalProperties\":false,\"patternProperties\":{\"^z\":{}}}"); /* not checked */
    PASSES("{\"zz\":1}", "{\"additionalProperties\":true}");
    FAILS("{}", "{\"minProperties\":1}", "$: object of 0 properties has fewer than minProperties 1");
    FAILS("{\"a\":1,\"b\":2}", "{\"maxProperties\":1}", "$: object of 2 properties has more than maxProperties 1");
}

static void test_schema_combinators_and_refs(void) {
    const char *nullable = "{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"null\"}]}";
    PASSES("null", nullable);
    FAILS("1", nullable, "$: matches none of the anyOf schemas");
    const char *one = "{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}";
    PASSES("-1", one);
    PASSES("0.5", one);
    FAILS("1", one, "$: matches 2 of the oneOf schemas, not exactly one");
    FAILS("-0.5", one, "$: matches 0 of the oneOf schemas, not exactly one");
    FAILS("3", "{\"allOf\":[{\"minimum\":0},{\"maximum\":2}]}", "$: 3 is greater than maximum 2");
    FAILS("\"x\"", "{\"not\":{\"type\":\"string\"}}", "$: matches the schema under 'not'");
    PASSES("1", "{\"not\":{\"type\":\"string\"}}");
    const char *refs = "{\"$defs\":{\"item\":{\"type\":\"object\",\"required\":[\"n\"]},\"a/b~\":{\"type\":\"string\"}},"
                       "\"type\":\"object\",\"properties\":{\"list\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/item\"}},"
                       "\"odd\":{\"$ref\":\"#/$defs/a~1b~0\"},\"first\":{\"$ref\":\"#/properties/list/items\"}}}";
    PASSES("{\"list\":[{\"n\":1}],\"odd\":\"s\"}", refs);
    FAILS("{\"list\":[{\"n\":1},{}]}", refs, "$.list[1]: missing required property 'n'");
    FAILS("{\"odd\":1}", refs, "$.odd: expected string, got integer");
    FAILS("{\"first\":{}}", refs, "$.first: missing required property 'n'");
    /* a recursive tree schema */
    const char *tree = "{\"type\":\"object\",\"properties\":{\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}}}}";
    PASSES("{\"kids\":[{\"kids\":[]},{}]}", tree);
    FAILS("{\"kids\":[{\"kids\":[1]}]}", tree, "$.kids[0].kids[0]: expected object, got integer");
    CHECK_EQ_INT(schema_check("1", "{\"$ref\":\"#/nowhere\"}"), VALIDATE_NOT_APPLICABLE);
    CHECK_STR(last_msg, "$: cannot resolve $ref '#/nowhere'");
    CHECK_EQ_INT(schema_check("1", "{\"$ref\":\"#\"}"), VALIDATE_NOT_APPLICABLE); /* a loop */
    CHECK_STR(last_msg, "$: schema nested deeper than 64 levels");
    CHECK_EQ_INT(schema_check("1", "{\"$ref\":\"other.json#/x\"}"), VALIDATE_NOT_APPLICABLE);
    PASSES("[1]", "{\"items\":{\"$ref\":\"#/definitions/0\"},\"definitions\":[{\"type\":\"integer\"}]}");
}

static validate_result json_answer(const char *answer, const char *rf) {
    cJSON *f = cJSON_Parse(rf);
    validate_result r = validate_json(answer, strlen(answer), f);
    cJSON_Delete(f);
    return r;
}

static void test_response_format(void) {
    const char *obj = "{\"type\":\"json_object\"}";
    CHECK_EQ_INT(json_answer(" {\"a\":1}\n", obj).verdict, VALIDATE_PASS);
    validate_result r = json_answer("[1]", obj);
    CHECK_EQ_INT(r.verdict, VALIDATE_FAIL);
    CHECK_STR(r.message, "$: expected object, got array");
    r = json_answer("```json\n{\"a\":1}\n```", obj);
    CHECK_EQ_INT(r.verdict, VALIDATE_FAIL);
    CHECK_STR(r.message, "not valid JSON at line 1, column 1");
    r = json_answer("{\"a\":1,\n \"b\": }", obj);
    CHECK_EQ_INT(r.verdict, VALIDATE_FAIL);
    CHECK_STR(r.message, "not valid JSON at line 2, column 7");
    r = json_answer("{\"a\":1} trailing", obj);
    CHECK_STR(r.message, "text after the JSON value at line 1, column 9");
    CHECK_EQ_INT(json_answer("", obj).verdict, VALIDATE_FAIL);
    const char *sch = "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"strict\":true,\"schema\":"
                      "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},\"required\":[\"n\"]}}}";
    CHECK_EQ_INT(json_answer("{\"n\":3}", sch).verdict, VALIDATE_PASS);
    r = json_answer("{\"n\":\"3\"}", sch);
    CHECK_EQ_INT(r.verdict, VALIDATE_FAIL);
    CHECK_STR(r.message, "$.n: expected integer, got string");
    CHECK_EQ_INT(json_answer("[]", "{\"type\":\"json_schema\",\"json_schema\":{}}").verdict, VALIDATE_PASS);
    CHECK_EQ_INT(json_answer("[", "{\"type\":\"json_schema\",\"json_schema\":{}}").verdict, VALIDATE_FAIL);
    CHECK_EQ_INT(json_answer("hello", "{\"type\":\"text\"}").verdict, VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(validate_json("hello", 5, NULL).verdict, VALIDATE_NOT_APPLICABLE);
    /* the length is respected: no reading past it */
    cJSON *f = cJSON_Parse(obj);
    CHECK_EQ_INT(validate_json("{}garbage", 2, f).verdict, VALIDATE_PASS);
    cJSON_Delete(f);
}

static validate_result logprob(const char *json, double threshold) {
    cJSON *j = cJSON_Parse(json);
    validate_result r = validate_logprob(j, threshold);
    cJSON_Delete(j);
    return r;
}

static void test_logprob(void) {
    const char *c = "{\"choices\":[{\"message\":{\"content\":\"hi\"},\"logprobs\":{\"content\":["
                    "{\"token\":\"a\",\"logprob\":-0.1},{\"token\":\"b\",\"logprob\":-0.5},{\"token\":\"c\"}]}}]}";
    validate_result r = logprob(c, -0.3);
    CHECK_EQ_INT(r.verdict, VALIDATE_PASS);
    CHECK_STR(r.message, "mean token logprob -0.3000 over 2 tokens >= threshold -0.3000");
    CHECK_EQ_INT(logprob(c, -0.29).verdict, VALIDATE_FAIL);
    CHECK_EQ_INT(logprob("{\"content\":[{\"logprob\":-2}]}", -1).verdict, VALIDATE_FAIL); /* the logprobs object */
    CHECK_EQ_INT(logprob("{\"choices\":[{\"logprobs\":null}]}", -1).verdict, VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(logprob("{\"choices\":[{\"logprobs\":{\"content\":[]}}]}", -1).verdict, VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(logprob("{\"choices\":[]}", -1).verdict, VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(validate_logprob(NULL, -1).verdict, VALIDATE_NOT_APPLICABLE);
}

/* The lexical check of one block: "" when it passes, else the message. */
static const char *block(const char *lang, const char *code) {
    static validate_result r;
    r = validate_code_block(lang, code, strlen(code));
    if (r.verdict == VALIDATE_NOT_APPLICABLE) return "n/a";
    return r.verdict == VALIDATE_PASS ? "" : r.message;
}

static void test_code_python(void) {
    CHECK_STR(block("python", "def f(x):\n    if x:\n        return [1,\n  2]\n    return {'a': (1, 2)}\n"), "");
    CHECK_STR(block("py", "s = '''multi\nline ( ['''\nt = \"esc \\\" (\" # comment (\nu = r'\\d+'\n"), "");
    CHECK_STR(block("python3", "x = 1 + \\\n      2\nif x:\n\n    # comment at any indent\n  # here too\n    pass\n"), "");
    CHECK_STR(block("python", "class A:\n\tdef f(self):\n\t\tpass\n\nclass B:\n\tpass"), "");
    CHECK_STR(block("python", "    x = 1\n    y = 2\n"), ""); /* indented as a whole: the base */
    CHECK_STR(block("python", "if a and \\\n        b:\n    pass\n"), ""); /* a continued header */
    CHECK_STR(block("python", "if x:  # why\n    y = {\n'k': 1,\n}\nelse:\n    pass\n"), "");
    CHECK_STR(block("python", "print((1, 2)\n"), "'(' opened on line 1 is not closed");
    CHECK_STR(block("python", "x = [1, 2)\n"), "line 1: ')' does not match '[' opened on line 1");
    CHECK_STR(block("python", "x = 1)\n"), "line 1: ')' closes nothing");
    CHECK_STR(block("python", "s = 'abc\nt = 1\n"), "line 1: string is not closed");
    CHECK_STR(block("python", "x = 1\ns = \"\"\"abc\n\n"), "line 2: triple-quoted string is not closed");
    CHECK_STR(block("python", "if x:\n    a = 1\n\tb = 2\n"), "line 3: tabs and spaces mixed in indentation");
    CHECK_STR(block("python", "x = 1\n    y = 2\n"), "line 2: unexpected indent");
    CHECK_STR(block("python", "if x:\ny = 2\n"), "line 2: expected an indented block after line 1");
    CHECK_STR(block("python", "if x:\n        a = 1\n    b = 2\n"), "line 3: unindent does not match any outer indentation level");
    CHECK_STR(block("python", "    x = 1\ny = 2\n"), "line 2: unindent does not match any outer indentation level");
    CHECK_STR(block("python", "def f():\n"), "line 1: expected an indented block");
    CHECK_STR(block("python", "def f():\n\n# nothing\n"), "line 1: expected an indented block");
    CHECK_STR(block("python", "x = 1 \\ 2\n"), "line 1: a line continuation must end its line");
    CHECK_STR(block("python", "x = 1 + \\"), "line 1: a line continuation must end its line");
    CHECK_STR(block("python", "x = (1 +\n"), "'(' opened on line 1 is not closed");
    CHECK_STR(block("python", ""), "");
}

static void test_code_js_c(void) {
    CHECK_STR(block("js", "const f = (a) => { return a.map(x => x * 2); };\n// ) comment\n/* ( */\n"), "");
    CHECK_STR(block("javascript", "const s = `a ${b + `nested ${c}`} d`;\nconst t = `x\n(y`;\n"), "");
    CHECK_STR(block("js", "const r = /[)\\]/(]+/g.test(s);\nif (/a\\/b/.test(x)) y = a / b / c;\n"), "");
    CHECK_STR(block("js", "function f() { return /}/.source; }\n"), "");
    CHECK_STR(block("ts", "function id<T>(x: T): T { return x; }\n"), "");
    CHECK_STR(block("js", "let x = {a: [1, 2};\n"), "line 1: '}' does not match '[' opened on line 1");
    CHECK_STR(block("js", "let s = \"abc;\nlet t;\n"), "line 1: string is not closed");
    CHECK_STR(block("js", "let s = `abc ${x\n"), "'${' opened on line 1 is not closed");
    CHECK_STR(block("js", "let s = `abc\n"), "line 1: template literal is not closed");
    CHECK_STR(block("js", "let r = /abc\n"), "line 1: regular expression is not closed");
    CHECK_STR(block("js", "f(); /* never\nclosed\n"), "line 1: comment is not closed");
    CHECK_STR(block("c", "#include <stdio.h>\nint main(void) {\n  char c = '}';\n  printf(\"%d)\\n\", c);\n  return 0;\n}\n"), "");
    CHECK_STR(block("c", "int a = 4 / 2; /* { */ int b = (a) / 2;\n"), "");
    CHECK_STR(block("c", "#define S \"a\\\n b\"\n"), ""); /* continued string */
    CHECK_STR(block("c", "int main(void) {\n  return 0;\n"), "'{' opened on line 1 is not closed");
    CHECK_STR(block("c", "char c = 'x;\n"), "line 1: string is not closed");
    /* a regex is JavaScript only: in C the slash is division */
    CHECK_STR(block("c", "x = (a) / b; y = c / (d);\n"), "");
    char deep[600];
    memset(deep, '(', 300);
    deep[300] = 0;
    CHECK_STR(block("c", deep), "line 1: brackets nested deeper than 256");
}

static void test_code_json_and_langs(void) {
    CHECK_STR(block("json", "{\"a\": [1, 2, {\"b\": null}]}\n"), "");
    CHECK_STR(block("json", "{\"a\": 1,\n \"b\": }\n"), "not valid JSON at line 2, column 7");
    CHECK_STR(block("json", "{} {}\n"), "text after the JSON value at line 1, column 4");
    CHECK_STR(block("json", "// comment\n{}"), "not valid JSON at line 1, column 1");
    CHECK_STR(block("rust", "fn main() {"), "n/a");
    CHECK_STR(block("jsx", "<p>Don't</p>"), "n/a");
    CHECK_STR(block("", "(("), "n/a");
}

static void test_code_fences(void) {
    validate_result r = validate_code("Here:\n```python\ndef f():\n    return 1\n```\nand\n~~~c\nint x;\n~~~\n");
    CHECK_EQ_INT(r.verdict, VALIDATE_PASS);
    CHECK_STR(r.message, "2 code blocks pass the lexical check (python, c)");
    r = validate_code("```js\nok();\n```\n\n```Python\nif x:\ny\n```\n");
    CHECK_EQ_INT(r.verdict, VALIDATE_FAIL);
    CHECK_STR(r.message, "code block 2 (python): line 2: expected an indented block after line 1");
    CHECK_EQ_INT(validate_code("no code here").verdict, VALIDATE_NOT_APPLICABLE);
    CHECK_EQ_INT(validate_code("```\nplain (\n```\n```rust\nfn x() {\n```").verdict, VALIDATE_NOT_APPLICABLE);
    r = validate_code("```python\ndef f():\n    return [1,");
    CHECK_EQ_INT(r.verdict, VALIDATE_FAIL);
    CHECK_STR(r.message, "code block 1 (python) is not closed: the answer was cut off");
    CHECK_EQ_INT(validate_code("```text\nunclosed (").verdict, VALIDATE_NOT_APPLICABLE);
    /* fences in a list item: the fence's indentation is removed from its lines */
    r = validate_code("1. Do this:\n   ```python\n   if x:\n       y = 1\n   ```\n");
    CHECK_EQ_INT(r.verdict, VALIDATE_PASS);
    /* a longer fence holds a shorter one; closing needs at least as many */
    r = validate_code("````markdown\n```python\nif x:\n```\n````\n```json\n[1]\n```\n");
    CHECK_EQ_INT(r.verdict, VALIDATE_PASS);
    CHECK_STR(r.message, "1 code block passes the lexical check (json)");
    /* inline triple backticks are not a fence */
    CHECK_EQ_INT(validate_code("use ```python x``` inline").verdict, VALIDATE_NOT_APPLICABLE);
    /* CRLF lines, info string with attributes */
    CHECK_EQ_INT(validate_code("```c {.numberLines}\r\nint x;\r\n```\r\n").verdict, VALIDATE_PASS);
    CHECK_EQ_INT(validate_code("```json\r\n[1,\r\n```\r\n").verdict, VALIDATE_FAIL);
    CHECK_EQ_INT(validate_code(NULL).verdict, VALIDATE_NOT_APPLICABLE);
}

int main(void) {
    TEST(test_math_eval);
    TEST(test_math_answers);
    TEST(test_schema_types);
    TEST(test_schema_values);
    TEST(test_schema_arrays);
    TEST(test_schema_objects);
    TEST(test_schema_combinators_and_refs);
    TEST(test_response_format);
    TEST(test_logprob);
    TEST(test_code_python);
    TEST(test_code_js_c);
    TEST(test_code_json_and_langs);
    TEST(test_code_fences);
    return test_done();
}
