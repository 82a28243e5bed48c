/* chat_request: see chat_request.h. */
#include "api/chat_request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

static const char *valid_roles[] = {"system", "developer", "user", "assistant", "tool", "function"};

/* The elements of array token arr, in order: for (e = first(d, arr); e >= 0; e = next(d, arr, e)). */
static int first(const json_doc *d, int arr) {
    return arr >= 0 && d->tok[arr].type == JSON_ARRAY && d->tok[arr].end > (uint32_t)arr + 1 ? arr + 1 : -1;
}

static int next(const json_doc *d, int arr, int e) { return d->tok[e].end < d->tok[arr].end ? (int)d->tok[e].end : -1; }

static int is(const json_doc *d, int t, int type) { return json_type_of(d, t) == type; }

static int is_bool(const json_doc *d, int t) { return is(d, t, JSON_TRUE) || is(d, t, JSON_FALSE); }

int chat_request_true(const json_doc *d, int obj, const char *key) { return is(d, json_get(d, obj, key), JSON_TRUE); }

/* A role token's name, for the message (at most 40 bytes), into out. */
static void role_name(const json_doc *d, int t, char out[48]) {
    buf b = BUF_INIT;
    json_str_decode(d, t, &b);
    snprintf(out, 48, "%.40s", b.data ? b.data : "");
    buf_free(&b);
}

static int role_is_valid(const json_doc *d, int t) {
    for (size_t i = 0; i < sizeof valid_roles / sizeof *valid_roles; i++)
        if (json_str_eq(d, t, valid_roles[i])) return 1;
    return 0;
}

/* Checks what msoa itself relies on; the node checks the rest. Returns NULL
 * or a message naming the offending field. */
const char *chat_request_check(const json_doc *d, char *msg, size_t cap) {
    if (!is(d, 0, JSON_OBJECT)) return "the request body must be a JSON object";
    int model = json_get(d, 0, "model");
    if (model >= 0 && !is(d, model, JSON_STRING) && !is(d, model, JSON_NULL)) return "'model' must be a string";
    int messages = json_get(d, 0, "messages");
    if (messages < 0) return "'messages' is required";
    if (!is(d, messages, JSON_ARRAY)) return "'messages' must be an array";
    if (first(d, messages) < 0) return "'messages' must not be empty";
    int i = 0;
    for (int m = first(d, messages); m >= 0; m = next(d, messages, m), i++) {
        if (!is(d, m, JSON_OBJECT)) {
            snprintf(msg, cap, "'messages[%d]' must be an object", i);
            return msg;
        }
        int role = json_get(d, m, "role");
        if (!is(d, role, JSON_STRING)) {
            snprintf(msg, cap, "'messages[%d].role' must be a string", i);
            return msg;
        }
        if (!role_is_valid(d, role)) {
            char name[48];
            role_name(d, role, name);
            snprintf(msg, cap, "'messages[%d].role' must be one of system, developer, user, assistant, tool; got '%s'",
                     i, name);
            return msg;
        }
        int content = json_get(d, m, "content");
        if (content >= 0 && !is(d, content, JSON_STRING) && !is(d, content, JSON_ARRAY) && !is(d, content, JSON_NULL)) {
            snprintf(msg, cap, "'messages[%d].content' must be a string, an array of parts or null", i);
            return msg;
        }
    }
    int stream = json_get(d, 0, "stream");
    if (stream >= 0 && !is_bool(d, stream) && !is(d, stream, JSON_NULL)) return "'stream' must be a boolean";
    int so = json_get(d, 0, "stream_options");
    if (so >= 0 && !is(d, so, JSON_OBJECT) && !is(d, so, JSON_NULL)) return "'stream_options' must be an object";
    double v;
    int mt = json_get(d, 0, "max_tokens");
    if (mt >= 0 && !is(d, mt, JSON_NULL) && (!json_number(d, mt, &v) || v < 1 || v != floor(v)))
        return "'max_tokens' must be an integer >= 1";
    int ours = json_get(d, 0, "msoa");
    if (ours >= 0 && !is(d, ours, JSON_OBJECT)) return "'msoa' must be an object (e.g. {\"split\": true})";
    int split = json_get(d, ours, "split");
    if (split >= 0 && !is_bool(d, split)) return "'msoa.split' must be a boolean";
    int temp = json_get(d, 0, "temperature");
    if (temp >= 0 && !is(d, temp, JSON_NULL) && (!json_number(d, temp, &v) || v < 0 || v > 2))
        return "'temperature' must be a number between 0 and 2";
    return NULL;
}

/* A message's text: the token of its string content, or of its first text
 * part; -1 when it has none. */
static int message_text(const json_doc *d, int m) {
    int content = json_get(d, m, "content");
    for (int part = first(d, content); part >= 0; part = next(d, content, part)) {
        int text = json_get(d, part, "text");
        if (is(d, text, JSON_STRING)) return text;
    }
    return is(d, content, JSON_STRING) ? content : -1;
}

/* What the router reads: the system prompt and the last user message. */
void chat_request_router_input(const json_doc *d, buf *sys, int *has_sys, buf *user, int *has_user) {
    int s = -1, u = -1;
    int messages = json_get(d, 0, "messages");
    for (int m = first(d, messages); m >= 0; m = next(d, messages, m)) {
        int role = json_get(d, m, "role");
        if (!is(d, role, JSON_STRING)) continue;
        int text = message_text(d, m);
        if (text < 0) continue;
        if ((json_str_eq(d, role, "system") || json_str_eq(d, role, "developer")) && s < 0) s = text;
        else if (json_str_eq(d, role, "user")) u = text;
    }
    *has_sys = s >= 0;
    *has_user = u >= 0;
    if (s >= 0) json_str_decode(d, s, sys);
    if (u >= 0) json_str_decode(d, u, user);
}

/* Length of a list marker at the start of a line ("12. ", "3) ", "- "),
 * leading blanks included, or 0. */
static size_t list_marker(const char *line) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '-' || *p == '*') return p[1] == ' ' ? (size_t)(p + 2 - line) : 0;
    const char *dg = p;
    while (*p >= '0' && *p <= '9') p++;
    if (p == dg || p - dg > 3 || (*p != '.' && *p != ')') || p[1] != ' ') return 0;
    return (size_t)(p + 2 - line);
}

int chat_request_split(const json_doc *d, char ***parts) {
    *parts = NULL;
    if (!chat_request_true(d, json_get(d, 0, "msoa"), "split")) return 0;
    buf sys = BUF_INIT, text = BUF_INIT;
    int has_sys, has_user;
    chat_request_router_input(d, &sys, &has_sys, &text, &has_user);
    buf_free(&sys);
    /* each marked line starts a part; unmarked lines continue the last one */
    int n = 0, cap = 0;
    char **out = NULL;
    for (const char *line = text.data ? text.data : ""; *line;) {
        size_t len = strcspn(line, "\n");
        size_t mark = list_marker(line);
        if (mark && len > mark) {
            if (n == cap) out = xrealloc(out, (size_t)(cap = cap ? cap * 2 : 8) * sizeof *out);
            out[n++] = xstrndup(line + mark, len - mark);
        } else if (n && len) {
            size_t had = strlen(out[n - 1]);
            out[n - 1] = xrealloc(out[n - 1], had + len + 2);
            out[n - 1][had] = '\n';
            memcpy(out[n - 1] + had + 1, line, len);
            out[n - 1][had + 1 + len] = '\0';
        }
        line += len + (line[len] == '\n');
    }
    buf_free(&text);
    if (n >= 2) {
        *parts = out;
        return n;
    }
    for (int i = 0; i < n; i++) free(out[i]);
    free(out);
    return 0;
}

long chat_request_estimate_tokens(const json_doc *d) {
    size_t chars = 0;
    int messages = json_get(d, 0, "messages");
    for (int m = first(d, messages); m >= 0; m = next(d, messages, m)) {
        int text = message_text(d, m);
        if (text < 0) continue;
        if (!d->tok[text].escaped) {
            chars += d->tok[text].len - 2;
            continue;
        }
        buf b = BUF_INIT;
        json_str_decode(d, text, &b);
        chars += strlen(b.data ? b.data : ""); /* as a C string, as before */
        buf_free(&b);
    }
    return (long)(chars + 3) / 4;
}
