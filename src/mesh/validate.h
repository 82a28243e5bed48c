/* validate: cheap checks on a model's answer, for cascades.
 *
 * A cascade tries a cheap model first and keeps its answer only when a
 * check passes; otherwise it escalates to a bigger model. Each check here
 * looks at the answer alone (and the question or request where needed),
 * with no I/O and no model, and says PASS, FAIL, or NOT_APPLICABLE (the
 * check has nothing to say about this answer: the cascade policy decides
 * what that means), with a message for the `msoa` object and logs.
 *
 *   math     the question is pure arithmetic: recompute it exactly and
 *            compare with the last number in the answer
 *   code     fenced code blocks in a language we know pass a lexical check
 *   json     the answer is valid against the request's response_format
 *   logprob  the mean token log-probability is at or above a threshold
 *
 * All functions are reentrant: no global state (cJSON's parse error pointer
 * is not used). */
#ifndef MSOA_VALIDATE_H
#define MSOA_VALIDATE_H

#include <stddef.h>

#include <cjson/cJSON.h>

typedef enum { VALIDATE_NOT_APPLICABLE, VALIDATE_PASS, VALIDATE_FAIL } validate_verdict;

typedef struct validate_result {
    validate_verdict verdict;
    char message[256];
} validate_result;

/* "not_applicable", "pass", "fail" */
const char *validate_verdict_name(validate_verdict v);
/* A result with a printf-formatted message (truncated to fit). */
validate_result validate_resultf(validate_verdict v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* --- math (validate_math.c) ---
 * The question is pure arithmetic when, apart from a few filler words
 * ("what is", "compute", "calculate", "evaluate", "please", ...) and
 * punctuation around it, it is one expression with at least one binary
 * operator: numbers (decimals, thousands separators "1,234"), + - * / ^ and
 * ** (also × ÷ − ·, and the words plus, minus, times, "multiplied by",
 * "divided by"), unary minus, parentheses, and a number directly followed by
 * "(" multiplying. It is evaluated exactly, as a fraction of 128-bit
 * integers; ^ binds tighter than unary minus (-2^2 = -4) and is right
 * associative, and its exponent must be an integer. Division by zero, a
 * non-integer exponent or overflow make the check NOT_APPLICABLE.
 *
 * The answer's final number is the last one in it (inside the last
 * \boxed{...} when there is one): an integer, decimal or fraction ("1/2",
 * "\frac{1}{2}"), with optional sign and thousands separators. It passes
 * when it equals the exact value (0.5 = 1/2, 391.0 = 391), or when the
 * value has no exact decimal form in as many places as the answer gives and
 * the answer has at least 2 decimals and is one of the two numbers with
 * that many places around the value (1/3 as 0.33 or 0.34; 0.333). No number: FAIL. */
validate_result validate_math(const char *question, const char *answer);
/* Evaluates expression text with the rules above; 1 and the exact value
 * ("391", "-7/2") in out, or 0 and why not in out. */
int validate_math_eval(const char *expr, size_t len, char *out, size_t cap);

/* --- code (validate_code.c) ---
 * Every fenced block (``` or ~~~, CommonMark rules) whose info string names
 * a language we check: python (py, python3), javascript (js, mjs, cjs,
 * node, typescript, ts; not jsx/tsx, whose text may hold any quote), c (h),
 * json. A lexical check, not a parser: strings,
 * comments and brackets must be well formed and balanced (JS: template
 * literals with ${} and regular expression literals; C: character
 * literals), and for Python the indentation must be consistent: no tabs and
 * spaces mixed in one block, an indent only after a line ending in ':',
 * such a line followed by an indent, a dedent back to an earlier level
 * (the first line's indentation is the block's base). JSON blocks are fully
 * parsed (cJSON). A block left open at the end of the answer fails (the
 * answer was cut off). FAIL names the block and the line; PASS when every
 * checked block passes; NOT_APPLICABLE when there is none. */
validate_result validate_code(const char *answer);
/* The lexical check of one block; lang as in a fence ("python", "js"...).
 * NOT_APPLICABLE for a language we do not check. */
validate_result validate_code_block(const char *lang, const char *code, size_t len);

/* --- json (validate_json.c) ---
 * response_format {"type":"json_object"}: the whole answer (surrounding
 * whitespace aside; no ``` fences) must be a JSON object.
 * {"type":"json_schema","json_schema":{"schema":{...}}}: it must be JSON
 * valid against the schema, in this subset of JSON Schema: type (string or
 * array; "integer" is a number with no fraction), enum, const, properties,
 * required, additionalProperties (bool or schema; not checked when
 * patternProperties is present), minProperties/maxProperties, items (schema,
 * or array of schemas per position), prefixItems, minItems/maxItems,
 * minimum/maximum, exclusiveMinimum/exclusiveMaximum (number or draft-4
 * boolean), multipleOf, minLength/maxLength (in code points), allOf,
 * anyOf, oneOf, not, boolean schemas, and $ref to "#..." JSON pointers in
 * the same schema ($defs, definitions). Not supported, ignored: pattern,
 * patternProperties, format, uniqueItems, dependencies, if/then/else,
 * remote $ref. FAIL names the path of the first violation:
 * "$.items[2].price: expected number, got string". Any other or no
 * response_format: NOT_APPLICABLE. */
validate_result validate_json(const char *answer, size_t len, const cJSON *response_format);
/* Parses text as exactly one JSON value (whitespace around it allowed):
 * PASS and *value (the caller deletes it), or FAIL naming the line and
 * column where it stops being JSON and *value NULL. */
validate_result validate_json_parse(const char *text, size_t len, cJSON **value);
/* The schema check alone. A schema nested (or $ref'd) deeper than 64
 * levels gives NOT_APPLICABLE. */
validate_result validate_json_schema(const cJSON *instance, const cJSON *schema);

/* --- logprob (validate.c) ---
 * The mean of choices[0].logprobs.content[].logprob of a chat completion
 * (or of content[].logprob when given the logprobs object itself): PASS at
 * or above threshold, FAIL below, NOT_APPLICABLE without logprobs. */
validate_result validate_logprob(const cJSON *completion, double threshold);

#endif
