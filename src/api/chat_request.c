/* chat_request: see chat_request.h. */
#include "api/chat_request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"


static const char *valid_roles[] = {"system", "developer", "user", "assistant", "tool", "function"};

static int role_is_valid(const char *r) {
    for (size_t i = 0; i < sizeof valid_roles / sizeof *valid_roles; i++)
        if (!strcmp(r, valid_roles[i])) return 1;
    return 0;
}

/* Checks what msoa itself relies on; the node checks the rest. Returns NULL
 * or a message naming the offending field. */
const char *chat_request_check(const cJSON *body, char *msg, size_t cap) {
    if (!cJSON_IsObject(body)) return "the request body must be a JSON object";
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    if (model && !cJSON_IsString(model) && !cJSON_IsNull(model)) return "'model' must be a string";
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!messages) return "'messages' is required";
    if (!cJSON_IsArray(messages)) return "'messages' must be an array";
    if (cJSON_GetArraySize(messages) == 0) return "'messages' must not be empty";
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m)) {
            snprintf(msg, cap, "'messages[%d]' must be an object", i);
            return msg;
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) {
            snprintf(msg, cap, "'messages[%d].role' must be a string", i);
            return msg;
        }
        if (!role_is_valid(role->valuestring)) {
            snprintf(msg, cap, "'messages[%d].role' must be one of system, developer, user, assistant, tool; got '%.40s'",
                     i, role->valuestring);
            return msg;
        }
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (content && !cJSON_IsString(content) && !cJSON_IsArray(content) && !cJSON_IsNull(content)) {
            snprintf(msg, cap, "'messages[%d].content' must be a string, an array of parts or null", i);
            return msg;
        }
        i++;
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream)) return "'stream' must be a boolean";
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    if (so && !cJSON_IsObject(so) && !cJSON_IsNull(so)) return "'stream_options' must be an object";
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    if (mt && !cJSON_IsNull(mt) && (!cJSON_IsNumber(mt) || mt->valuedouble < 1 || mt->valuedouble != floor(mt->valuedouble)))
        return "'max_tokens' must be an integer >= 1";
    const cJSON *ours = cJSON_GetObjectItemCaseSensitive(body, "msoa");
    if (ours && !cJSON_IsObject(ours)) return "'msoa' must be an object (e.g. {\"split\": true})";
    const cJSON *split = cJSON_GetObjectItemCaseSensitive(ours, "split");
    if (split && !cJSON_IsBool(split)) return "'msoa.split' must be a boolean";
    const cJSON *temp = cJSON_GetObjectItemCaseSensitive(body, "temperature");
    if (temp && !cJSON_IsNull(temp) && (!cJSON_IsNumber(temp) || temp->valuedouble < 0 || temp->valuedouble > 2))
        return "'temperature' must be a number between 0 and 2";
    return NULL;
}

/* A message's text: its string content, or its first text part. */
static const char *message_text(const cJSON *m, size_t *len) {
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsArray(content)) {
        const cJSON *part;
        cJSON_ArrayForEach(part, content) {
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(text)) {
                content = text;
                break;
            }
        }
    }
    if (!cJSON_IsString(content)) return NULL;
    *len = strlen(content->valuestring);
    return content->valuestring;
}

/* What the router reads: the system prompt and the last user message. */
void chat_request_router_input(const cJSON *request, const char **sys, size_t *sys_len, const char **user,
                         size_t *user_len) {
    *sys = *user = NULL;
    *sys_len = *user_len = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(request, "messages")) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) continue;
        const char *r = role->valuestring;
        size_t len = 0;
        const char *text = message_text(m, &len);
        if (!text) continue;
        if ((!strcmp(r, "system") || !strcmp(r, "developer")) && !*sys) {
            *sys = text;
            *sys_len = len;
        } else if (!strcmp(r, "user")) {
            *user = text;
            *user_len = len;
        }
    }
}

/* Length of a list marker at the start of a line ("12. ", "3) ", "- "),
 * leading blanks included, or 0. */
static size_t list_marker(const char *line) {
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '-' || *p == '*') return p[1] == ' ' ? (size_t)(p + 2 - line) : 0;
    const char *d = p;
    while (*p >= '0' && *p <= '9') p++;
    if (p == d || p - d > 3 || (*p != '.' && *p != ')') || p[1] != ' ') return 0;
    return (size_t)(p + 2 - line);
}

int chat_request_split(const cJSON *request, char ***parts) {
    *parts = NULL;
    const cJSON *ours = cJSON_GetObjectItemCaseSensitive(request, "msoa");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ours, "split"))) return 0;
    const char *sys, *user;
    size_t sys_len, user_len;
    chat_request_router_input(request, &sys, &sys_len, &user, &user_len);
    if (!user) return 0;
    /* each marked line starts a part; unmarked lines continue the last one */
    int n = 0, cap = 0;
    char **out = NULL;
    for (const char *line = user; *line;) {
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
    if (n >= 2) {
        *parts = out;
        return n;
    }
    for (int i = 0; i < n; i++) free(out[i]);
    free(out);
    return 0;
}

long chat_request_estimate_tokens(const cJSON *request) {
    size_t chars = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(request, "messages")) {
        size_t len = 0;
        if (message_text(m, &len)) chars += len;
    }
    return (long)(chars + 3) / 4;
}
