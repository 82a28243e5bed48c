/* chat_template: see chat_template.h. One small renderer per family, each
 * writing the layout of the family's reference template. */
#include "engine/chat_template.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const family_names[CHAT_FAMILY_COUNT] = {
    [CHAT_CHATML] = "chatml", [CHAT_LLAMA2] = "llama2", [CHAT_LLAMA3] = "llama3",
    [CHAT_MISTRAL] = "mistral", [CHAT_ZEPHYR] = "zephyr", [CHAT_PHI3] = "phi3", [CHAT_GEMMA] = "gemma",
};

const char *chat_family_name(int family) {
    return family >= 0 && family < CHAT_FAMILY_COUNT ? family_names[family] : NULL;
}

int chat_family_by_name(const char *name) {
    static const struct { const char *alias; int family; } aliases[] = {
        {"llama-2", CHAT_LLAMA2}, {"llama-3", CHAT_LLAMA3}, {"phi-3", CHAT_PHI3},
    };
    for (int f = 0; f < CHAT_FAMILY_COUNT; f++)
        if (strcmp(name, family_names[f]) == 0) return f;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(name, aliases[i].alias) == 0) return aliases[i].family;
    return -1;
}

/* Most specific markers first: phi3 and zephyr share <|user|>. */
int chat_family_detect(const char *t) {
    if (strstr(t, "<|im_start|>")) return CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>")) return CHAT_LLAMA3;
    if (strstr(t, "<start_of_turn>")) return CHAT_GEMMA;
    if (strstr(t, "<|assistant|>") && strstr(t, "<|end|>")) return CHAT_PHI3;
    if (strstr(t, "<|user|>") && strstr(t, "<|assistant|>")) return CHAT_ZEPHYR;
    if (strstr(t, "[INST]")) return strstr(t, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    return -1;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        int n = snprintf(err, errlen, "chat template: ");
        va_list ap;
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int chat_family_from_gguf(const gguf *g, char *err, size_t errlen) {
    const char *t = gguf_get_str(g, "tokenizer.chat_template");
    if (!t) return fail(err, errlen, "the model file has no tokenizer.chat_template; choose a family by name");
    int f = chat_family_detect(t);
    if (f < 0) {
        char head[64];
        size_t n = 0;
        for (const char *p = t; *p && n < sizeof head - 1; p++) head[n++] = *p == '\n' ? ' ' : *p;
        head[n] = '\0';
        return fail(err, errlen, "unrecognised template \"%s%s\" (known: chatml, llama2, llama3, mistral, zephyr, "
                    "phi3, gemma); choose a family by name", head, strlen(t) > n ? "..." : "");
    }
    return f;
}

/* ---- renderers ---- */

static const char *text_of(const chat_msg *m) { return m->content ? m->content : ""; }
static int is_role(const chat_msg *m, const char *role) { return strcmp(m->role, role) == 0; }

/* Trims ASCII white space, as the reference templates' trim/strip do. */
static void put_trimmed(buf *out, const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    buf_append(out, s, n);
}

/* Families whose role names are written into the text: prefix role suffix content end. */
static void render_named(const chat_msg *msgs, int n, int gen, buf *out, const char *pre, const char *mid,
                         const char *end, int trim) {
    for (int i = 0; i < n; i++) {
        buf_printf(out, "%s%s%s", pre, msgs[i].role, mid);
        if (trim) put_trimmed(out, text_of(&msgs[i]));
        else buf_puts(out, text_of(&msgs[i]));
        buf_puts(out, end);
    }
    if (gen) buf_printf(out, "%sassistant%s", pre, mid);
}

static int check_roles(int family, const chat_msg *msgs, int n, char *err, size_t errlen) {
    for (int i = 0; i < n; i++)
        if (!is_role(&msgs[i], "system") && !is_role(&msgs[i], "user") && !is_role(&msgs[i], "assistant"))
            return fail(err, errlen, "%s cannot express role '%s'", family_names[family], msgs[i].role);
    return 0;
}

/* Llama 2 chat: the system prompt opens the first user turn inside
 * <<SYS>>; every exchange is "<s>[INST] user [/INST] answer </s>" (the
 * first <s> comes from the tokenizer). */
static void render_llama2(const chat_msg *msgs, int n, buf *out) {
    int open = 0, turns = 0;
    for (int i = 0; i < n; i++) {
        const chat_msg *m = &msgs[i];
        if (!open && !is_role(m, "assistant")) {
            buf_puts(out, turns++ ? "<s>[INST] " : "[INST] ");
            open = 1;
        }
        if (is_role(m, "system")) {
            buf_puts(out, "<<SYS>>\n");
            put_trimmed(out, text_of(m));
            buf_puts(out, "\n<</SYS>>\n\n");
        } else if (is_role(m, "user")) {
            put_trimmed(out, text_of(m));
            buf_puts(out, " [/INST]");
        } else {
            buf_putc(out, ' ');
            put_trimmed(out, text_of(m));
            buf_puts(out, " </s>");
            open = 0;
        }
    }
}

/* Mistral instruct: "[INST] user [/INST]answer</s>"; no system role, so a
 * system prompt is put before the first user message. */
static void render_mistral(const chat_msg *msgs, int n, buf *out) {
    const char *system = NULL;
    for (int i = 0; i < n; i++) {
        const chat_msg *m = &msgs[i];
        if (is_role(m, "system")) {
            system = text_of(m);
        } else if (is_role(m, "user")) {
            buf_puts(out, "[INST] ");
            if (system) buf_printf(out, "%s\n\n", system);
            system = NULL;
            buf_printf(out, "%s [/INST]", text_of(m));
        } else {
            buf_printf(out, "%s</s>", text_of(m));
        }
    }
}

/* Gemma: roles user and model; a system prompt goes into the first user turn. */
static void render_gemma(const chat_msg *msgs, int n, int gen, buf *out) {
    const char *system = NULL;
    for (int i = 0; i < n; i++) {
        const chat_msg *m = &msgs[i];
        if (is_role(m, "system")) {
            system = text_of(m);
            continue;
        }
        buf_printf(out, "<start_of_turn>%s\n", is_role(m, "assistant") ? "model" : "user");
        if (system && is_role(m, "user")) {
            buf_printf(out, "%s\n\n", system);
            system = NULL;
        }
        put_trimmed(out, text_of(m));
        buf_puts(out, "<end_of_turn>\n");
    }
    if (gen) buf_puts(out, "<start_of_turn>model\n");
}

int chat_render(int family, const chat_msg *msgs, int n, int gen, buf *out, char *err, size_t errlen) {
    if (!chat_family_name(family)) return fail(err, errlen, "unknown family %d", family);
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !*msgs[i].role) return fail(err, errlen, "message %d has no role", i);
    switch (family) {
    case CHAT_CHATML: render_named(msgs, n, gen, out, "<|im_start|>", "\n", "<|im_end|>\n", 0); break;
    case CHAT_LLAMA3: render_named(msgs, n, gen, out, "<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", 1); break;
    case CHAT_ZEPHYR: render_named(msgs, n, gen, out, "<|", "|>\n", "</s>\n", 0); break;
    case CHAT_PHI3: render_named(msgs, n, gen, out, "<|", "|>\n", "<|end|>\n", 0); break;
    default:
        if (check_roles(family, msgs, n, err, errlen) < 0) return -1;
        if (family == CHAT_LLAMA2) render_llama2(msgs, n, out);
        else if (family == CHAT_MISTRAL) render_mistral(msgs, n, out);
        else render_gemma(msgs, n, gen, out);
    }
    return 0;
}
