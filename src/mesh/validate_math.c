/* validate_math: recomputes a pure-arithmetic question exactly and checks
 * the answer's final number against it; see validate.h for the rules.
 *
 * Values are fractions of 128-bit integers kept in lowest terms, every
 * operation checked for overflow, so 0.1 + 0.2 is exactly 3/10 and an
 * answer is judged against the true value, not a float's neighbour. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "mesh/validate.h"

__extension__ typedef __int128 i128;
__extension__ typedef unsigned __int128 u128;

#define I128_MAX ((i128)(~(u128)0 >> 1))
#define MAX_TOKENS 256
#define MAX_DEPTH 64

typedef struct rat {
    i128 num, den; /* den > 0, gcd(num, den) = 1, |num| and den <= I128_MAX */
} rat;

/* Why an evaluation stopped. */
typedef enum { M_OK, M_SYNTAX, M_DIVZERO, M_OVERFLOW, M_EXPONENT, M_DEEP } merr;

static const char *merr_text(merr e) {
    switch (e) {
    case M_OK: return "ok";
    case M_SYNTAX: return "not a well-formed expression";
    case M_DIVZERO: return "division by zero";
    case M_OVERFLOW: return "numbers too large to check exactly";
    case M_EXPONENT: return "exponent is not an integer";
    case M_DEEP: return "expression nested too deeply";
    }
    return "?";
}

/* ---- exact rational arithmetic ---- */

static u128 uabs(i128 v) {
    return v < 0 ? (u128)0 - (u128)v : (u128)v;
}

static u128 gcd(u128 a, u128 b) {
    while (b) {
        u128 t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Reduces num/den (den != 0) into *out; both stay within +-I128_MAX so
 * negation can never overflow. */
static merr rat_make(i128 num, i128 den, rat *out) {
    if (den == 0) return M_DIVZERO;
    if (num < -I128_MAX || den < -I128_MAX) return M_OVERFLOW;
    if (den < 0) {
        num = -num;
        den = -den;
    }
    i128 g = (i128)gcd(uabs(num), (u128)den);
    out->num = num / g;
    out->den = den / g;
    return M_OK;
}

static merr mul_i(i128 a, i128 b, i128 *out) {
    return __builtin_mul_overflow(a, b, out) ? M_OVERFLOW : M_OK;
}

static merr rat_add(rat a, rat b, rat *out) {
    i128 g = (i128)gcd((u128)a.den, (u128)b.den);
    i128 x, y, num, den;
    if (mul_i(a.num, b.den / g, &x) || mul_i(b.num, a.den / g, &y) || __builtin_add_overflow(x, y, &num) ||
        mul_i(a.den, b.den / g, &den))
        return M_OVERFLOW;
    return rat_make(num, den, out);
}

static rat rat_neg(rat a) {
    a.num = -a.num;
    return a;
}

static merr rat_mul(rat a, rat b, rat *out) {
    /* cross-reduce first so in-range results never overflow on the way */
    i128 g1 = (i128)gcd(uabs(a.num), (u128)b.den), g2 = (i128)gcd(uabs(b.num), (u128)a.den);
    i128 num, den;
    if (mul_i(a.num / g1, b.num / g2, &num) || mul_i(a.den / g2, b.den / g1, &den)) return M_OVERFLOW;
    return rat_make(num, den, out);
}

static merr rat_div(rat a, rat b, rat *out) {
    if (b.num == 0) return M_DIVZERO;
    rat inv;
    rat_make(b.den, b.num, &inv);
    return rat_mul(a, inv, out);
}

static merr rat_pow(rat base, rat exp, rat *out) {
    if (exp.den != 1) return M_EXPONENT;
    u128 k = uabs(exp.num);
    if (exp.num < 0) {
        if (base.num == 0) return M_DIVZERO;
        rat_make(base.den, base.num, &base);
    }
    rat r = {1, 1};
    merr e = M_OK;
    while (k && !e) {
        if (k & 1) e = rat_mul(r, base, &r);
        k >>= 1;
        if (k && !e) e = rat_mul(base, base, &base);
    }
    *out = r;
    return e;
}

static int rat_eq(rat a, rat b) {
    return a.num == b.num && a.den == b.den;
}

/* Decimal text of an integer. */
static void i128_text(i128 v, char *out, size_t cap) {
    char tmp[48];
    size_t n = 0;
    u128 u = uabs(v);
    do {
        tmp[n++] = (char)('0' + (int)(u % 10));
        u /= 10;
    } while (u);
    size_t o = 0;
    if (v < 0 && o + 1 < cap) out[o++] = '-';
    while (n && o + 1 < cap) out[o++] = tmp[--n];
    out[o] = 0;
}

static void rat_text(rat v, char *out, size_t cap) {
    i128_text(v.num, out, cap);
    if (v.den == 1) return;
    size_t len = strlen(out);
    if (len + 2 >= cap) return;
    out[len] = '/';
    i128_text(v.den, out + len + 1, cap - len - 1);
}

/* ---- numbers in text ---- */

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

static int is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A number at s: digits (with ",ddd" thousands groups after a first group
 * of 1-3 digits), optionally "." and digits; ".5" too. Returns the length
 * (0: no number), the value, and the count of decimals written. */
static size_t lex_number(const char *s, size_t n, rat *v, int *decimals, merr *err) {
    size_t i = 0, first_group = 0;
    i128 num = 0, den = 1;
    *err = M_OK;
    *decimals = 0;
    while (i < n && is_digit(s[i])) {
        if (mul_i(num, 10, &num) || __builtin_add_overflow(num, s[i] - '0', &num)) *err = M_OVERFLOW;
        i++;
        first_group++;
    }
    while (first_group && first_group <= 3 && i + 3 < n && s[i] == ',' && is_digit(s[i + 1]) && is_digit(s[i + 2]) &&
           is_digit(s[i + 3]) && (i + 4 >= n || !is_digit(s[i + 4]))) {
        for (size_t k = 1; k <= 3; k++)
            if (mul_i(num, 10, &num) || __builtin_add_overflow(num, s[i + k] - '0', &num)) *err = M_OVERFLOW;
        i += 4;
    }
    if (i + 1 < n && s[i] == '.' && is_digit(s[i + 1])) {
        i++;
        while (i < n && is_digit(s[i])) {
            if (mul_i(num, 10, &num) || __builtin_add_overflow(num, s[i] - '0', &num) || mul_i(den, 10, &den))
                *err = M_OVERFLOW;
            i++;
            (*decimals)++;
        }
    }
    if (i && !*err) *err = rat_make(num, den, v);
    return i;
}

/* ---- the question: tokens ---- */

typedef enum { T_NUM, T_OP, T_LP, T_RP, T_WORD, T_PUNCT } tkind;

typedef struct tok {
    tkind kind;
    char op;       /* T_OP: + - * / ^ */
    rat val;       /* T_NUM */
    char word[16]; /* T_WORD, lower case, "" when too long to be a filler */
} tok;

/* Words that may surround the expression without changing what is asked. */
static const char *const fillers[] = {
    "what", "what's", "whats", "is", "the", "value", "of", "compute", "calculate", "evaluate", "solve",
    "simplify", "find", "work", "out", "result", "answer", "please", "equals", "equal", "how", "much",
    "tell", "me", "give", "with", "just", "only", "number", "reply", "respond", "final", "exact",
    "exactly", "as", "a", "an", "fraction", "decimal",
};

static int is_filler(const char *w) {
    for (size_t i = 0; i < sizeof fillers / sizeof fillers[0]; i++)
        if (strcmp(w, fillers[i]) == 0) return 1;
    return 0;
}

/* Operators spelled as UTF-8 symbols: × ÷ − · */
static char utf8_op(const char *s, size_t n, size_t *len) {
    static const struct {
        const char *bytes;
        char op;
    } ops[] = {{"\xc3\x97", '*'}, {"\xc3\xb7", '/'}, {"\xe2\x88\x92", '-'}, {"\xc2\xb7", '*'}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t l = strlen(ops[i].bytes);
        if (l <= n && memcmp(s, ops[i].bytes, l) == 0) {
            *len = l;
            return ops[i].op;
        }
    }
    return 0;
}

/* A word: ASCII letters and apostrophes (' or U+2019). */
static size_t lex_word(const char *s, size_t n, char word[16]) {
    size_t i = 0, w = 0;
    int fits = 1;
    for (;;) {
        char c;
        size_t step = 1;
        if (i < n && is_alpha(s[i]))
            c = (char)tolower((unsigned char)s[i]);
        else if (i < n && s[i] == '\'')
            c = '\'';
        else if (i + 2 < n && memcmp(s + i, "\xe2\x80\x99", 3) == 0)
            c = '\'', step = 3;
        else
            break;
        if (w < 15)
            word[w++] = c;
        else
            fits = 0;
        i += step;
    }
    word[fits ? w : 0] = 0;
    return i;
}

static char word_op(const char *w) {
    if (strcmp(w, "plus") == 0) return '+';
    if (strcmp(w, "minus") == 0) return '-';
    if (strcmp(w, "times") == 0 || strcmp(w, "x") == 0) return '*';
    return 0;
}

/* Splits the question into tokens; 0 when it holds anything that cannot
 * be part of a pure-arithmetic question (or too many tokens). */
static int tokenize(const char *s, size_t n, tok *t, int *count, merr *err) {
    int k = 0;
    size_t i = 0;
    *err = M_OK;
    while (i < n) {
        char c = s[i];
        size_t len;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            i++;
            continue;
        }
        if (k == MAX_TOKENS) return 0;
        tok *x = &t[k];
        memset(x, 0, sizeof *x);
        int decimals;
        merr e;
        if ((len = lex_number(s + i, n - i, &x->val, &decimals, &e))) {
            if (e) {
                *err = e;
                x->val.den = 1; /* a harmless stand-in, so the structure can still be checked */
            }
            x->kind = T_NUM;
            i += len;
        } else if (c == '*' && i + 1 < n && s[i + 1] == '*') {
            x->kind = T_OP, x->op = '^', i += 2;
        } else if (c && strchr("+-*/^", c)) {
            x->kind = T_OP, x->op = c, i++;
        } else if (c == '(' || c == ')') {
            x->kind = c == '(' ? T_LP : T_RP, i++;
        } else if (c && strchr("?.:,!=", c)) {
            x->kind = T_PUNCT, i++;
        } else if ((x->op = utf8_op(s + i, n - i, &len))) {
            x->kind = T_OP, i += len;
        } else if ((len = lex_word(s + i, n - i, x->word))) {
            x->kind = T_WORD;
            i += len;
            if ((x->op = word_op(x->word))) x->kind = T_OP;
        } else {
            return 0;
        }
        k++;
    }
    /* "multiplied by", "divided by" */
    int o = 0;
    for (int j = 0; j < k; j++) {
        int by = j + 1 < k && t[j + 1].kind == T_WORD && strcmp(t[j + 1].word, "by") == 0;
        if (t[j].kind == T_WORD && by && (!strcmp(t[j].word, "multiplied") || !strcmp(t[j].word, "divided"))) {
            t[j].kind = T_OP;
            t[j].op = t[j].word[0] == 'm' ? '*' : '/';
            t[o++] = t[j++];
            continue;
        }
        t[o++] = t[j];
    }
    *count = o;
    return 1;
}

/* ---- the question: recursive descent over tokens ---- */

typedef struct parser {
    const tok *t;
    int pos, end, depth, binary_ops;
    merr err;
} parser;

static rat p_expr(parser *p);

static int at_op(parser *p, char op) {
    return p->pos < p->end && p->t[p->pos].kind == T_OP && p->t[p->pos].op == op;
}

static rat fail(parser *p, merr e) {
    if (!p->err) p->err = e;
    rat zero = {0, 1};
    return zero;
}

/* primary := number | '(' expr ')' */
static rat p_primary(parser *p) {
    if (p->pos >= p->end) return fail(p, M_SYNTAX);
    const tok *x = &p->t[p->pos];
    if (x->kind == T_NUM) {
        p->pos++;
        return x->val;
    }
    if (x->kind != T_LP) return fail(p, M_SYNTAX);
    p->pos++;
    rat v = p_expr(p);
    if (p->pos >= p->end || p->t[p->pos].kind != T_RP) return fail(p, M_SYNTAX);
    p->pos++;
    return v;
}

static rat p_unary(parser *p);

/* power := primary ('^' unary)?   (right associative, -2^2 = -(2^2)) */
static rat p_power(parser *p) {
    rat base = p_primary(p);
    if (p->err || !at_op(p, '^')) return base;
    p->pos++;
    p->binary_ops++;
    rat exp = p_unary(p), r;
    if (p->err) return base;
    merr e = rat_pow(base, exp, &r);
    return e ? fail(p, e) : r;
}

/* unary := ('-' | '+') unary | power */
static rat p_unary(parser *p) {
    if (++p->depth > MAX_DEPTH) return fail(p, M_DEEP);
    rat v;
    if (at_op(p, '-') || at_op(p, '+')) {
        int neg = at_op(p, '-');
        p->pos++;
        v = p_unary(p);
        if (neg) v = rat_neg(v);
    } else {
        v = p_power(p);
    }
    p->depth--;
    return v;
}

/* term := unary (('*' | '/' | before '(') unary)* */
static rat p_term(parser *p) {
    rat v = p_unary(p);
    while (!p->err && p->pos < p->end) {
        char op;
        if (at_op(p, '*') || at_op(p, '/'))
            op = p->t[p->pos++].op;
        else if (p->t[p->pos].kind == T_LP)
            op = '*';
        else
            break;
        p->binary_ops++;
        rat rhs = p_unary(p);
        if (p->err) break;
        merr e = op == '*' ? rat_mul(v, rhs, &v) : rat_div(v, rhs, &v);
        if (e) return fail(p, e);
    }
    return v;
}

/* expr := term (('+' | '-') term)* */
static rat p_expr(parser *p) {
    if (++p->depth > MAX_DEPTH) return fail(p, M_DEEP);
    rat v = p_term(p);
    while (!p->err && (at_op(p, '+') || at_op(p, '-'))) {
        int minus = at_op(p, '-');
        p->pos++;
        p->binary_ops++;
        rat rhs = p_term(p);
        if (p->err) break;
        merr e = rat_add(v, minus ? rat_neg(rhs) : rhs, &v);
        if (e) return fail(p, e);
    }
    p->depth--;
    return v;
}

static int is_expr_token(const tok *x) {
    return x->kind == T_NUM || x->kind == T_OP || x->kind == T_LP || x->kind == T_RP;
}

/* Evaluates the question when it is pure arithmetic. M_OK and *v, or the
 * reason; *applicable 0 when the text is not arithmetic at all. */
static merr eval_question(const char *s, size_t n, rat *v, int *applicable) {
    tok t[MAX_TOKENS];
    int k;
    merr lex_err;
    *applicable = 0;
    if (!tokenize(s, n, t, &k, &lex_err)) return M_SYNTAX;
    int first = -1, last = -1;
    for (int i = 0; i < k; i++) {
        if (is_expr_token(&t[i])) {
            if (first < 0) first = i;
            last = i;
        } else if (t[i].kind == T_WORD && !is_filler(t[i].word)) {
            return M_SYNTAX;
        }
    }
    if (first < 0) return M_SYNTAX;
    for (int i = first; i <= last; i++)
        if (!is_expr_token(&t[i])) return M_SYNTAX;
    parser p = {t, first, last + 1, 0, 0, M_OK};
    *v = p_expr(&p);
    if (!p.err && p.pos != p.end) p.err = M_SYNTAX;
    if (p.err == M_SYNTAX || (!p.err && !p.binary_ops)) return M_SYNTAX;
    *applicable = 1;
    return lex_err ? lex_err : p.err;
}

int validate_math_eval(const char *expr, size_t len, char *out, size_t cap) {
    rat v;
    int applicable;
    merr e = eval_question(expr, len, &v, &applicable);
    if (e) {
        snprintf(out, cap, "%s", applicable ? merr_text(e) : "not pure arithmetic");
        return 0;
    }
    rat_text(v, out, cap);
    return 1;
}

/* ---- the answer's final number ---- */

typedef struct answer_num {
    int found;
    merr err;     /* the number could not be read exactly */
    rat val;
    int decimals; /* places written, for a decimal */
    const char *text;
    size_t len;
} answer_num;

/* Whether s[i] starts a minus sign that belongs to the number after it
 * (not a binary minus): "-" or U+2212, with no operand just before. */
static size_t sign_before(const char *s, size_t start, size_t i) {
    size_t len = 0;
    if (i > start && s[i - 1] == '-')
        len = 1;
    else if (i >= start + 3 && memcmp(s + i - 3, "\xe2\x88\x92", 3) == 0)
        len = 3;
    if (!len) return 0;
    size_t j = i - len;
    if (j > start && (is_digit(s[j - 1]) || is_alpha(s[j - 1]) || s[j - 1] == ')')) return 0;
    return len;
}

/* \frac{a}{b} (also \dfrac, \tfrac) at s: its length and value, or 0. */
static size_t lex_frac(const char *s, size_t n, answer_num *a) {
    static const char *const cmds[] = {"\\frac{", "\\dfrac{", "\\tfrac{"};
    for (size_t c = 0; c < 3; c++) {
        size_t i = strlen(cmds[c]);
        if (i > n || memcmp(s, cmds[c], i) != 0) continue;
        rat num, den;
        int d1, d2;
        merr e1, e2;
        int neg = i < n && s[i] == '-';
        size_t l1 = lex_number(s + i + neg, n - i - neg, &num, &d1, &e1);
        i += neg + l1;
        if (!l1 || i + 1 >= n || s[i] != '}' || s[i + 1] != '{') return 0;
        i += 2;
        size_t l2 = lex_number(s + i, n - i, &den, &d2, &e2);
        i += l2;
        if (!l2 || i >= n || s[i] != '}') return 0;
        a->err = e1 ? e1 : e2;
        if (!a->err) a->err = rat_div(neg ? rat_neg(num) : num, den, &a->val);
        a->decimals = 0;
        return i + 1;
    }
    return 0;
}

/* The text to search: inside the last \boxed{...} when there is one. */
static void answer_span(const char *s, size_t *start, size_t *end) {
    const char *boxed = NULL;
    for (const char *p = strstr(s, "\\boxed{"); p; p = strstr(p + 1, "\\boxed{")) boxed = p;
    *start = 0;
    *end = strlen(s);
    if (!boxed) return;
    size_t i = (size_t)(boxed - s) + 7;
    int depth = 1;
    for (size_t j = i; s[j]; j++) {
        if (s[j] == '{') depth++;
        if (s[j] == '}' && --depth == 0) {
            *start = i;
            *end = j;
            return;
        }
    }
}

static answer_num final_number(const char *s) {
    answer_num last = {0};
    size_t start, end;
    answer_span(s, &start, &end);
    size_t i = start;
    while (i < end) {
        answer_num a = {0};
        size_t len = 0, sign = 0;
        if (s[i] == '\\' && (len = lex_frac(s + i, end - i, &a))) {
            sign = sign_before(s, start, i);
        } else if (is_alpha(s[i]) || s[i] == '_') {
            while (i < end && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '_')) i++; /* x2, H2O, v1 */
            continue;
        } else if ((len = lex_number(s + i, end - i, &a.val, &a.decimals, &a.err))) {
            sign = sign_before(s, start, i);
            if (i + len + 1 < end && s[i + len] == '/' && is_digit(s[i + len + 1]) && !a.decimals) {
                rat den;
                int d;
                merr e;
                size_t l2 = lex_number(s + i + len + 1, end - i - len - 1, &den, &d, &e);
                if (!a.err) a.err = e ? e : rat_div(a.val, den, &a.val);
                len += 1 + l2;
            }
            size_t k = i + len;
            if (k + 1 < end && (s[k] == 'e' || s[k] == 'E') &&
                (is_digit(s[k + 1]) || ((s[k + 1] == '-' || s[k + 1] == '+') && k + 2 < end && is_digit(s[k + 2]))))
                a.err = M_OVERFLOW; /* scientific notation: not checked */
        } else {
            i++;
            continue;
        }
        a.found = 1;
        if (sign && !a.err) a.val = rat_neg(a.val);
        a.text = s + i - sign;
        a.len = len + sign;
        last = a;
        i += len;
    }
    return last;
}

/* 1 when the answer, a decimal with d >= 2 places, stands for a value with
 * no exact d-place form and is within one unit of its last place. */
static merr approximates(const answer_num *a, rat exact, int *ok) {
    *ok = 0;
    if (a->decimals < 2) return M_OK;
    i128 q = 1;
    for (int k = 0; k < a->decimals; k++)
        if (mul_i(q, 10, &q)) return M_OVERFLOW;
    if (q % exact.den == 0) return M_OK; /* exact.den | 10^d: it must be equal */
    i128 p, x, y, diff;
    if (mul_i(a->val.num, q / a->val.den, &p) || mul_i(p, exact.den, &x) || mul_i(exact.num, q, &y) ||
        __builtin_sub_overflow(x, y, &diff))
        return M_OVERFLOW;
    *ok = uabs(diff) < (u128)exact.den;
    return M_OK;
}

validate_result validate_math(const char *question, const char *answer) {
    if (!question || !answer) return validate_resultf(VALIDATE_NOT_APPLICABLE, "no question or no answer");
    rat exact;
    int applicable;
    merr e = eval_question(question, strlen(question), &exact, &applicable);
    if (!applicable) return validate_resultf(VALIDATE_NOT_APPLICABLE, "question is not pure arithmetic");
    if (e) return validate_resultf(VALIDATE_NOT_APPLICABLE, "question: %s", merr_text(e));
    char want[96];
    rat_text(exact, want, sizeof want);
    answer_num a = final_number(answer);
    if (!a.found) return validate_resultf(VALIDATE_FAIL, "no number in the answer (expected %s)", want);
    int shown = a.len > 40 ? 40 : (int)a.len;
    if (a.err) return validate_resultf(VALIDATE_NOT_APPLICABLE, "answer's number '%.*s': %s", shown, a.text, merr_text(a.err));
    if (rat_eq(a.val, exact)) return validate_resultf(VALIDATE_PASS, "answer %.*s equals %s", shown, a.text, want);
    int close;
    e = approximates(&a, exact, &close);
    if (e) return validate_resultf(VALIDATE_NOT_APPLICABLE, "answer's number '%.*s': %s", shown, a.text, merr_text(e));
    if (close) return validate_resultf(VALIDATE_PASS, "answer %.*s approximates %s", shown, a.text, want);
    return validate_resultf(VALIDATE_FAIL, "answer %.*s but the exact value is %s", shown, a.text, want);
}
