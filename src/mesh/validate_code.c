/* validate_code: fenced code blocks in an answer pass a lexical check for
 * their language; see validate.h.
 *
 * Lexical, not a parser: it catches what a cut-off or careless answer
 * breaks (a string or comment left open, brackets that do not pair, Python
 * indentation that cannot parse) and misses everything grammatical. That
 * is the right trade for a cascade: no false alarms on valid code, and
 * each block costs one linear pass. JSON blocks are simply parsed. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "mesh/validate.h"

#define MAX_NEST 256
#define MAX_LEVELS 100

typedef enum { LANG_NONE, LANG_PYTHON, LANG_JS, LANG_C, LANG_JSON } lang_id;

static lang_id lang_of(const char *name) {
    static const struct {
        const char *name;
        lang_id id;
    } langs[] = {
        {"python", LANG_PYTHON}, {"py", LANG_PYTHON}, {"python3", LANG_PYTHON}, {"py3", LANG_PYTHON},
        {"javascript", LANG_JS}, {"js", LANG_JS},     {"mjs", LANG_JS},         {"cjs", LANG_JS},
        {"node", LANG_JS},       {"typescript", LANG_JS}, {"ts", LANG_JS},      {"c", LANG_C},
        {"h", LANG_C},           {"json", LANG_JSON},
    };
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++)
        if (strcmp(name, langs[i].name) == 0) return langs[i].id;
    return LANG_NONE;
}

/* ---- shared lexer state ---- */

typedef struct lexer {
    const char *s;
    size_t n, i;
    int line;
    struct {
        char ch; /* ( [ {, or T: a ${ in a JS template literal */
        int line;
    } open[MAX_NEST];
    int depth;
    char err[200];
} lexer;

static int lex_error(lexer *lx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lex_error(lexer *lx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lx->err, sizeof lx->err, fmt, ap);
    va_end(ap);
    return -1;
}

static int push(lexer *lx, char ch) {
    if (lx->depth == MAX_NEST) return lex_error(lx, "line %d: brackets nested deeper than %d", lx->line, MAX_NEST);
    lx->open[lx->depth].ch = ch;
    lx->open[lx->depth].line = lx->line;
    lx->depth++;
    return 0;
}

static char closer(char open) {
    return open == '(' ? ')' : open == '[' ? ']' : '}';
}

/* A closing bracket at lx->i. */
static int pop(lexer *lx, char ch) {
    if (!lx->depth) return lex_error(lx, "line %d: '%c' closes nothing", lx->line, ch);
    char open = lx->open[lx->depth - 1].ch;
    if (closer(open) != ch)
        return lex_error(lx, "line %d: '%c' does not match '%c' opened on line %d", lx->line, ch,
                         open == 'T' ? '{' : open, lx->open[lx->depth - 1].line);
    lx->depth--;
    return 0;
}

static int unclosed(lexer *lx) {
    if (!lx->depth) return 0;
    char what[3] = {lx->open[lx->depth - 1].ch, 0, 0};
    if (what[0] == 'T') memcpy(what, "${", 3);
    return lex_error(lx, "'%s' opened on line %d is not closed", what, lx->open[lx->depth - 1].line);
}

/* A '...' or "..." string (or C character) from lx->i; a backslash escapes
 * the next character, newline included; a bare newline ends it badly. */
static int quoted(lexer *lx) {
    char q = lx->s[lx->i++];
    int start = lx->line;
    while (lx->i < lx->n && lx->s[lx->i] != q) {
        char c = lx->s[lx->i++];
        if (c == '\n') return lex_error(lx, "line %d: string is not closed", start);
        if (c == '\\' && lx->i < lx->n && lx->s[lx->i++] == '\n') lx->line++;
    }
    if (lx->i >= lx->n) return lex_error(lx, "line %d: string is not closed", start);
    lx->i++;
    return 0;
}

static int is_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           (unsigned char)c >= 0x80;
}

/* ---- C and JavaScript ---- */

/* Template literal text from lx->i up to its end or to a "${". */
static int template_text(lexer *lx, int start) {
    while (lx->i < lx->n) {
        char c = lx->s[lx->i++];
        if (c == '`') return 0;
        if (c == '\n') lx->line++;
        if (c == '\\' && lx->i < lx->n && lx->s[lx->i++] == '\n') lx->line++;
        if (c == '$' && lx->i < lx->n && lx->s[lx->i] == '{') {
            lx->i++;
            return push(lx, 'T');
        }
    }
    return lex_error(lx, "line %d: template literal is not closed", start);
}

/* Whether a '/' after this token starts a regular expression, not a
 * division: after an operator or opening punctuation, or a keyword. */
static int regex_may_follow(char prev, const char *word) {
    if (prev == 0 || strchr("(,=:[!&|?{};+-*%<>~^", prev)) return 1;
    static const char *const kws[] = {"return", "typeof", "instanceof", "in", "of", "new", "delete",
                                      "void", "throw", "case", "do", "else", "yield", "await"};
    if (prev == 'a')
        for (size_t k = 0; k < sizeof kws / sizeof kws[0]; k++)
            if (strcmp(word, kws[k]) == 0) return 1;
    return 0;
}

static int regex_literal(lexer *lx) {
    int in_class = 0;
    lx->i++;
    while (lx->i < lx->n) {
        char c = lx->s[lx->i++];
        if (c == '\n') break;
        if (c == '\\' && lx->i < lx->n && lx->s[lx->i] != '\n')
            lx->i++;
        else if (c == '[')
            in_class = 1;
        else if (c == ']')
            in_class = 0;
        else if (c == '/' && !in_class)
            return 0;
    }
    return lex_error(lx, "line %d: regular expression is not closed", lx->line);
}

static int block_comment(lexer *lx) {
    int start = lx->line;
    for (lx->i += 2; lx->i + 1 < lx->n; lx->i++) {
        if (lx->s[lx->i] == '\n') lx->line++;
        if (lx->s[lx->i] == '*' && lx->s[lx->i + 1] == '/') {
            lx->i += 2;
            return 0;
        }
    }
    return lex_error(lx, "line %d: comment is not closed", start);
}

static int check_clike(lexer *lx, int js) {
    char prev = 0; /* the last token: 'a' for a word, number or string, else its character */
    char word[16] = "";
    while (lx->i < lx->n) {
        char c = lx->s[lx->i], next = lx->i + 1 < lx->n ? lx->s[lx->i + 1] : 0;
        int r = 0;
        if (c == '\n') {
            lx->line++;
            lx->i++;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
            lx->i++;
        } else if (c == '/' && next == '/') {
            while (lx->i < lx->n && lx->s[lx->i] != '\n') lx->i++;
        } else if (c == '/' && next == '*') {
            r = block_comment(lx);
        } else if (c == '"' || c == '\'') {
            r = quoted(lx);
            prev = 'a', word[0] = 0;
        } else if (js && c == '`') {
            int start = lx->line;
            lx->i++;
            r = template_text(lx, start);
            prev = 'a', word[0] = 0;
        } else if (js && c == '/' && regex_may_follow(prev, word)) {
            r = regex_literal(lx);
            prev = 'a', word[0] = 0;
        } else if (c == '(' || c == '[' || c == '{') {
            r = push(lx, c);
            lx->i++;
            prev = c;
        } else if (c == ')' || c == ']' || c == '}') {
            if (js && c == '}' && lx->depth && lx->open[lx->depth - 1].ch == 'T') {
                /* the end of a ${...}: back into the template's text */
                lx->depth--;
                lx->i++;
                r = template_text(lx, lx->line);
                prev = 'a', word[0] = 0;
            } else {
                r = pop(lx, c);
                lx->i++;
                prev = c;
            }
        } else if (is_word_char(c)) {
            size_t w = 0;
            while (lx->i < lx->n && is_word_char(lx->s[lx->i])) {
                if (w + 1 < sizeof word) word[w++] = lx->s[lx->i];
                lx->i++;
            }
            word[w] = 0;
            prev = 'a';
        } else {
            lx->i++;
            prev = c;
        }
        if (r) return r;
    }
    return unclosed(lx);
}

/* ---- Python ---- */

typedef struct pystate {
    int levels[MAX_LEVELS], nlev; /* indentation widths; levels[0] is the block's base */
    int tabs, spaces;             /* seen in any indentation so far */
    int expect_indent;            /* the last logical line ended with ':' */
    int colon_line;
} pystate;

/* The indentation of a logical line starting at lx->i. */
static int py_indent(lexer *lx, pystate *ps) {
    size_t j = lx->i;
    int tabs = 0, spaces = 0;
    for (; j < lx->n && (lx->s[j] == ' ' || lx->s[j] == '\t' || lx->s[j] == '\f'); j++)
        lx->s[j] == '\t' ? tabs++ : spaces++;
    if (j == lx->n || lx->s[j] == '\n' || lx->s[j] == '\r' || lx->s[j] == '#') return 0; /* blank or comment */
    lx->i = j;
    ps->tabs |= tabs > 0;
    ps->spaces |= spaces > 0;
    if (ps->tabs && ps->spaces) return lex_error(lx, "line %d: tabs and spaces mixed in indentation", lx->line);
    int width = tabs + spaces;
    int top = ps->nlev ? ps->levels[ps->nlev - 1] : -1;
    int expect = ps->expect_indent;
    ps->expect_indent = 0;
    if (!ps->nlev || width > top) {
        if (ps->nlev && !expect) return lex_error(lx, "line %d: unexpected indent", lx->line);
        if (ps->nlev == MAX_LEVELS) return lex_error(lx, "line %d: indented too deeply", lx->line);
        ps->levels[ps->nlev++] = width;
        return 0;
    }
    if (expect) return lex_error(lx, "line %d: expected an indented block after line %d", lx->line, ps->colon_line);
    while (ps->nlev > 1 && width < ps->levels[ps->nlev - 1]) ps->nlev--;
    if (width != ps->levels[ps->nlev - 1])
        return lex_error(lx, "line %d: unindent does not match any outer indentation level", lx->line);
    return 0;
}

/* A string from lx->i, after any prefix letters: '...', "...", or
 * triple-quoted across lines. */
static int py_string(lexer *lx) {
    char q = lx->s[lx->i];
    if (lx->i + 2 < lx->n && lx->s[lx->i + 1] == q && lx->s[lx->i + 2] == q) {
        int start = lx->line;
        for (lx->i += 3; lx->i < lx->n; lx->i++) {
            char c = lx->s[lx->i];
            if (c == '\n') lx->line++;
            if (c == '\\' && lx->i + 1 < lx->n) {
                if (lx->s[++lx->i] == '\n') lx->line++;
            } else if (c == q && lx->i + 2 < lx->n && lx->s[lx->i + 1] == q && lx->s[lx->i + 2] == q) {
                lx->i += 3;
                return 0;
            }
        }
        return lex_error(lx, "line %d: triple-quoted string is not closed", start);
    }
    return quoted(lx);
}

static int check_python(lexer *lx) {
    pystate ps = {0};
    int line_start = 1, continued = 0, code = 0; /* code: the logical line has tokens */
    char last = 0;                                 /* its last significant character */
    while (lx->i < lx->n) {
        if (line_start) {
            /* a line inside brackets or after a backslash continues a logical line: no indentation */
            if (!lx->depth && !continued && py_indent(lx, &ps)) return -1;
            line_start = continued = 0;
        }
        if (lx->i >= lx->n) break;
        char c = lx->s[lx->i];
        int r = 0;
        if (c == '\n') {
            if (!lx->depth && code) {
                ps.expect_indent = last == ':';
                ps.colon_line = lx->line;
                code = 0;
            }
            line_start = 1;
            lx->line++;
            lx->i++;
        } else if (c == '#') {
            while (lx->i < lx->n && lx->s[lx->i] != '\n') lx->i++;
        } else if (c == '\\') {
            size_t k = lx->i + 1;
            if (k < lx->n && lx->s[k] == '\r') k++;
            if (k >= lx->n || lx->s[k] != '\n')
                return lex_error(lx, "line %d: a line continuation must end its line", lx->line);
            lx->i = k + 1;
            lx->line++;
            continued = line_start = 1;
        } else if (c == '"' || c == '\'') {
            r = py_string(lx);
            last = 'a', code = 1;
        } else if (c == '(' || c == '[' || c == '{') {
            r = push(lx, c);
            lx->i++;
            last = c, code = 1;
        } else if (c == ')' || c == ']' || c == '}') {
            r = pop(lx, c);
            lx->i++;
            last = c, code = 1;
        } else {
            if (c != ' ' && c != '\t' && c != '\r' && c != '\f') last = c, code = 1;
            lx->i++;
        }
        if (r) return r;
    }
    if (unclosed(lx)) return -1;
    if (continued) return lex_error(lx, "line %d: the code ends in a line continuation", lx->line);
    if ((code && last == ':') || ps.expect_indent)
        return lex_error(lx, "line %d: expected an indented block", code ? lx->line : ps.colon_line);
    return 0;
}

/* ---- blocks and fences ---- */

validate_result validate_code_block(const char *lang, const char *code, size_t len) {
    lang_id id = lang_of(lang);
    if (id == LANG_NONE) return validate_resultf(VALIDATE_NOT_APPLICABLE, "%.40s is not a language we check", lang);
    if (id == LANG_JSON) {
        cJSON *v;
        validate_result r = validate_json_parse(code, len, &v);
        cJSON_Delete(v);
        return r.verdict == VALIDATE_PASS ? validate_resultf(VALIDATE_PASS, "json parses") : r;
    }
    lexer lx = {.s = code, .n = len, .line = 1};
    int r = id == LANG_PYTHON ? check_python(&lx) : check_clike(&lx, id == LANG_JS);
    if (r) return validate_resultf(VALIDATE_FAIL, "%s", lx.err);
    return validate_resultf(VALIDATE_PASS, "%.40s passes the lexical check", lang);
}

typedef struct fence {
    char ch;       /* ` or ~ */
    size_t len;    /* 3 or more */
    size_t indent; /* whitespace before it, removed from the block's lines */
    char lang[24]; /* the info string's first word, lower case; "" if none */
} fence;

static size_t leading_blanks(const char *s, size_t n) {
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
    return i;
}

/* Whether the line opens a fence. */
static int fence_open(const char *s, size_t n, fence *f) {
    size_t i = leading_blanks(s, n), k = i;
    if (i == n || (s[i] != '`' && s[i] != '~')) return 0;
    while (k < n && s[k] == s[i]) k++;
    if (k - i < 3) return 0;
    f->ch = s[i];
    f->len = k - i;
    f->indent = i;
    if (f->ch == '`' && memchr(s + k, '`', n - k)) return 0; /* inline code, not a fence */
    k += leading_blanks(s + k, n - k);
    size_t w = 0;
    for (; k < n && s[k] != ' ' && s[k] != '\t' && s[k] != '\r' && s[k] != '{'; k++) {
        if (w + 1 >= sizeof f->lang) return 1; /* too long to be a language we know: lang stays "" */
        char c = s[k];
        f->lang[w++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        f->lang[w] = 0;
    }
    return 1;
}

static int fence_close(const char *s, size_t n, const fence *f) {
    size_t i = leading_blanks(s, n), k = i;
    while (k < n && s[k] == f->ch) k++;
    if (k - i < f->len) return 0;
    while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\r')) k++;
    return k == n;
}

validate_result validate_code(const char *answer) {
    buf code = BUF_INIT, langs = BUF_INIT;
    fence f = {0};
    int in_block = 0, blocks = 0, checked = 0;
    validate_result r = {VALIDATE_NOT_APPLICABLE, ""};
    for (const char *p = answer; p && *p && r.verdict != VALIDATE_FAIL;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (!in_block) {
            memset(&f, 0, sizeof f);
            if (fence_open(p, n, &f)) {
                in_block = 1;
                blocks++;
                buf_clear(&code);
            }
        } else if (fence_close(p, n, &f)) {
            in_block = 0;
            validate_result b = validate_code_block(f.lang, code.data ? code.data : "", code.len);
            if (b.verdict == VALIDATE_FAIL)
                r = validate_resultf(VALIDATE_FAIL, "code block %d (%s): %s", blocks, f.lang, b.message);
            if (b.verdict == VALIDATE_PASS) {
                checked++;
                buf_printf(&langs, "%s%s", langs.len ? ", " : "", f.lang);
            }
        } else {
            size_t strip = leading_blanks(p, n < f.indent ? n : f.indent);
            buf_append(&code, p + strip, n - strip);
            buf_putc(&code, '\n');
        }
        p = nl ? nl + 1 : p + n;
    }
    if (r.verdict != VALIDATE_FAIL && in_block && lang_of(f.lang) != LANG_NONE)
        r = validate_resultf(VALIDATE_FAIL, "code block %d (%s) is not closed: the answer was cut off", blocks, f.lang);
    else if (r.verdict != VALIDATE_FAIL && checked)
        r = validate_resultf(VALIDATE_PASS, "%d code block%s pass%s the lexical check (%s)", checked, checked == 1 ? "" : "s",
                             checked == 1 ? "es" : "", langs.data);
    else if (r.verdict != VALIDATE_FAIL)
        r = validate_resultf(VALIDATE_NOT_APPLICABLE, "no code block in a language we check");
    buf_free(&code);
    buf_free(&langs);
    return r;
}
