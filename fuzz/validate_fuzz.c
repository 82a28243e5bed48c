/* validate_fuzz: arbitrary bytes into the answer validators.
 *
 * The first byte picks the check; the rest is split at its first NUL into
 * two texts (question and answer; schema and instance). Every result must
 * have a known verdict and a terminated message, and the math check must
 * agree with itself: whatever the evaluator computes for a question, an
 * answer of exactly that value passes. Texts are also given as exact-length
 * copies so that reads past a length are caught by ASan. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mesh/validate.h"

static void check(int ok) {
    if (!ok) abort();
}

static void check_result(validate_result r) {
    check(r.verdict == VALIDATE_PASS || r.verdict == VALIDATE_FAIL || r.verdict == VALIDATE_NOT_APPLICABLE);
    check(memchr(r.message, 0, sizeof r.message) != NULL);
}

/* An exact-length copy, for functions taking (text, len). */
static char *exact(const char *s, size_t n) {
    char *c = malloc(n ? n : 1);
    memcpy(c, s, n);
    return c;
}

static void fuzz_math(const char *q, size_t qn, const char *a) {
    check_result(validate_math(q, a));
    char *e = exact(q, qn);
    char value[128];
    if (validate_math_eval(e, qn, value, sizeof value)) {
        validate_result r = validate_math(q, value);
        check(r.verdict == VALIDATE_PASS);
    }
    free(e);
}

static void fuzz_code(const char *text, size_t n) {
    check_result(validate_code(text));
    static const char *const langs[] = {"python", "js", "c", "json"};
    char *e = exact(text, n);
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++) check_result(validate_code_block(langs[i], e, n));
    free(e);
}

static void fuzz_json(const char *schema_text, const char *inst, size_t inst_len) {
    cJSON *schema = cJSON_Parse(schema_text);
    cJSON *instance = cJSON_ParseWithLength(inst, inst_len);
    if (schema && instance) check_result(validate_json_schema(instance, schema));
    cJSON *rf = cJSON_CreateObject();
    cJSON_AddStringToObject(rf, "type", schema ? "json_schema" : "json_object");
    if (schema) cJSON_AddItemToObject(cJSON_AddObjectToObject(rf, "json_schema"), "schema", schema);
    char *e = exact(inst, inst_len);
    validate_result r = validate_json(e, inst_len, rf);
    check_result(r);
    if (!instance) check(r.verdict == VALIDATE_FAIL); /* what cJSON rejects cannot pass */
    free(e);
    cJSON_Delete(rf);
    cJSON_Delete(instance);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0] % 4;
    /* one NUL-terminated buffer holding both texts */
    char *text = malloc(size + 1);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    size_t first_len = strlen(text);
    const char *second = first_len < size - 1 ? text + first_len + 1 : text + first_len;
    size_t second_len = size - 1 - (size_t)(second - text);
    switch (mode) {
    case 0: fuzz_math(text, first_len, second); break;
    case 1: fuzz_code(text, size - 1); break;
    case 2: fuzz_json(text, second, second_len); break;
    default: {
        cJSON *j = cJSON_ParseWithLength(text, size - 1);
        check_result(validate_logprob(j, -1.0));
        cJSON_Delete(j);
    }
    }
    free(text);
    return 0;
}
