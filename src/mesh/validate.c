/* validate: verdicts, results, and the log-probability check; the other
 * checks live in validate_math.c, validate_code.c and validate_json.c. */
#include "mesh/validate.h"

#include <stdarg.h>
#include <stdio.h>

const char *validate_verdict_name(validate_verdict v) {
    switch (v) {
    case VALIDATE_NOT_APPLICABLE: return "not_applicable";
    case VALIDATE_PASS: return "pass";
    case VALIDATE_FAIL: return "fail";
    }
    return "?";
}

validate_result validate_resultf(validate_verdict v, const char *fmt, ...) {
    validate_result r;
    r.verdict = v;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.message, sizeof r.message, fmt, ap);
    va_end(ap);
    return r;
}

/* content[] of choices[0].logprobs, or of the logprobs object itself. */
static const cJSON *logprob_tokens(const cJSON *completion) {
    const cJSON *lp = completion;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(completion, "choices");
    if (cJSON_IsArray(choices)) lp = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(choices, 0), "logprobs");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(lp, "content");
    return cJSON_IsArray(content) ? content : NULL;
}

validate_result validate_logprob(const cJSON *completion, double threshold) {
    const cJSON *tokens = logprob_tokens(completion), *t;
    double sum = 0;
    int n = 0;
    cJSON_ArrayForEach(t, tokens) {
        const cJSON *lp = cJSON_GetObjectItemCaseSensitive(t, "logprob");
        if (!cJSON_IsNumber(lp)) continue;
        sum += lp->valuedouble;
        n++;
    }
    if (!n) return validate_resultf(VALIDATE_NOT_APPLICABLE, "no token logprobs in the answer");
    double mean = sum / n;
    return validate_resultf(mean >= threshold ? VALIDATE_PASS : VALIDATE_FAIL,
                            "mean token logprob %.4f over %d tokens %s threshold %.4f", mean, n,
                            mean >= threshold ? ">=" : "<", threshold);
}
