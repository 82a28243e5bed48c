/* engine_request: see engine_request.h. */
#include "node/engine_request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "engine/chat_template.h"

static int bad(dispatch_error *e, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int bad(dispatch_error *e, const char *code, const char *fmt, ...) {
    memset(e, 0, sizeof *e);
    e->status = 400;
    e->type = "invalid_request_error";
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* A field given as null counts as absent, as OpenAI treats it. */
static const cJSON *field(const cJSON *req, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(req, name);
    return cJSON_IsNull(f) ? NULL : f;
}

/* Reads an optional number in [lo, hi] (an integer if integral is set) into
 * *out. 0: absent or read; -1: invalid, with e naming the field. */
static int number(const cJSON *req, const char *name, double lo, double hi, int integral, double *out,
                  dispatch_error *e) {
    const cJSON *f = field(req, name);
    if (!f) return 0;
    double v = cJSON_IsNumber(f) ? f->valuedouble : NAN;
    if (!(v >= lo && v <= hi) || (integral && v != floor(v)))
        return bad(e, "invalid_parameter_value", "'%s' must be %s between %g and %g", name,
                   integral ? "an integer" : "a number", lo, hi);
    *out = v;
    return 0;
}

static int sampling(const cJSON *req, engine_request *r, dispatch_error *e) {
    double v;
    sampler_params *sp = &r->sp;
    v = sp->temperature;
    if (number(req, "temperature", 0, 2, 0, &v, e) < 0) return -1;
    sp->temperature = (float)v;
    v = sp->top_p;
    if (number(req, "top_p", 0, 1, 0, &v, e) < 0) return -1;
    if (v <= 0) return bad(e, "invalid_parameter_value", "'top_p' must be greater than 0 and at most 1");
    sp->top_p = (float)v;
    v = sp->top_k;
    if (number(req, "top_k", 0, 1e9, 1, &v, e) < 0) return -1;
    sp->top_k = (int)v;
    v = sp->min_p;
    if (number(req, "min_p", 0, 1, 0, &v, e) < 0) return -1;
    sp->min_p = (float)v;
    v = 0;
    if (number(req, "presence_penalty", -2, 2, 0, &v, e) < 0) return -1;
    sp->presence_penalty = (float)v;
    v = 0;
    if (number(req, "frequency_penalty", -2, 2, 0, &v, e) < 0) return -1;
    sp->frequency_penalty = (float)v;
    v = 0;
    /* about 2^63: integers beyond that are not exact in a double anyway */
    if (number(req, "seed", -9.2e18, 9.2e18, 1, &v, e) < 0) return -1;
    if (field(req, "seed")) sp->seed = (uint64_t)(int64_t)v;
    return 0;
}

static int stops(const cJSON *req, engine_request *r, dispatch_error *e) {
    const cJSON *f = field(req, "stop");
    if (!f) return 0;
    if (cJSON_IsString(f)) {
        if (!*f->valuestring) return bad(e, "invalid_parameter_value", "'stop' must not be empty");
        r->stop[r->n_stop++] = xstrdup(f->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) > ENGINE_MAX_STOP)
        return bad(e, "invalid_parameter_value", "'stop' must be a string or an array of at most %d strings",
                   ENGINE_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, f) {
        if (!cJSON_IsString(s) || !*s->valuestring)
            return bad(e, "invalid_parameter_value", "'stop[%d]' must be a non-empty string", r->n_stop);
        r->stop[r->n_stop++] = xstrdup(s->valuestring);
    }
    return 0;
}

static int output_options(const cJSON *req, engine_request *r, dispatch_error *e) {
    double v = 1;
    if (number(req, "n", 1, 1, 1, &v, e) < 0)
        return bad(e, "invalid_parameter_value", "'n' must be 1: this node generates one choice");
    const cJSON *lp = field(req, "logprobs");
    if (lp && !cJSON_IsBool(lp)) return bad(e, "invalid_parameter_value", "'logprobs' must be a boolean");
    r->logprobs = cJSON_IsTrue(lp);
    v = 0;
    if (number(req, "top_logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, 1, &v, e) < 0) return -1;
    if (field(req, "top_logprobs") && !r->logprobs)
        return bad(e, "invalid_parameter_value", "'top_logprobs' needs 'logprobs' set to true");
    r->top_logprobs = (int)v;
    v = 0;
    if (number(req, "max_completion_tokens", 1, 1e9, 1, &v, e) < 0) return -1;
    if (number(req, "max_tokens", 1, 1e9, 1, &v, e) < 0) return -1;
    r->max_tokens = (int)v;
    return 0;
}

/* The text of a message's content: a string, null, or an array of text parts. */
static int content_text(const cJSON *content, int i, buf *out, dispatch_error *e) {
    if (!content || cJSON_IsNull(content)) return 0;
    if (cJSON_IsString(content)) {
        buf_puts(out, content->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(content))
        return bad(e, "invalid_parameter_value", "'messages[%d].content' must be a string, an array of parts or null", i);
    int j = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return bad(e, "invalid_parameter_value", "'messages[%d].content[%d]': this node accepts only text parts", i, j);
        buf_puts(out, text->valuestring);
        j++;
    }
    return 0;
}

/* Renders the messages into the prompt text. */
static int render(const cJSON *req, int family, buf *prompt, dispatch_error *e) {
    const cJSON *messages = field(req, "messages");
    int n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0)
        return bad(e, "invalid_parameter_value", "'messages' must be a non-empty array");
    chat_msg *msgs = xcalloc((size_t)n, sizeof *msgs);
    buf *texts = xcalloc((size_t)n, sizeof *texts);
    int rc = 0, i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            rc = bad(e, "invalid_parameter_value", "'messages[%d].role' must be a string", i);
            break;
        }
        if ((rc = content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), i, &texts[i], e)) < 0) break;
        /* "developer" is OpenAI's newer name for the system role */
        msgs[i].role = strcmp(role->valuestring, "developer") ? role->valuestring : "system";
        msgs[i].content = texts[i].data ? texts[i].data : "";
        i++;
    }
    if (rc == 0 && family >= 0) {
        char err[256];
        if (chat_render(family, msgs, n, 1, prompt, err, sizeof err) < 0)
            rc = bad(e, "invalid_parameter_value", "'messages': %s", err);
    } else if (rc == 0) {
        for (int k = 0; k < n; k++) {
            if (k) buf_putc(prompt, '\n');
            buf_puts(prompt, msgs[k].content);
        }
    }
    for (int k = 0; k < n; k++) buf_free(&texts[k]);
    free(texts);
    free(msgs);
    return rc;
}

static int tokenize(const cJSON *req, const tokenizer *tk, int family, int n_ctx, engine_request *r,
                    dispatch_error *e) {
    buf text = BUF_INIT;
    if (render(req, family, &text, e) < 0) {
        buf_free(&text);
        return -1;
    }
    unsigned flags = TOK_ADD_SPECIAL | (family >= 0 ? TOK_PARSE_SPECIAL : 0);
    r->n_prompt = tokenizer_encode(tk, text.data ? text.data : "", text.len, flags, &r->prompt);
    buf_free(&text);
    if (r->n_prompt < 1) return bad(e, "invalid_parameter_value", "'messages' give an empty prompt");
    if (r->n_prompt >= n_ctx)
        return bad(e, "context_length_exceeded",
                   "This model's maximum context length is %d tokens, but the messages take %d tokens "
                   "and leave no room for an answer; shorten the messages",
                   n_ctx, r->n_prompt);
    int room = n_ctx - r->n_prompt;
    if (r->max_tokens == 0 || r->max_tokens > room) r->max_tokens = room;
    return 0;
}

int engine_request_parse(const cJSON *req, const tokenizer *tk, int family, int n_ctx, engine_request *r,
                         dispatch_error *e) {
    memset(r, 0, sizeof *r);
    r->sp = sampler_defaults();
    if (!cJSON_IsObject(req)) return bad(e, "invalid_parameter_value", "the request must be a JSON object");
    if (sampling(req, r, e) < 0 || stops(req, r, e) < 0 || output_options(req, r, e) < 0 ||
        tokenize(req, tk, family, n_ctx, r, e) < 0) {
        engine_request_free(r);
        return -1;
    }
    return 0;
}

void engine_request_free(engine_request *r) {
    free(r->prompt);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
