/* validate_json: an answer against the request's response_format, with a
 * practical subset of JSON Schema; see validate.h for what is supported.
 *
 * The check stops at the first violation and names where it is as a path
 * from the root ("$.items[2].price"), which is what a log reader or an
 * escalation reason needs; it does not collect every error. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "mesh/validate.h"

#define MAX_DEPTH 64

enum { V_OK, V_FAIL, V_SCHEMA }; /* V_SCHEMA: the schema, not the answer, is the problem */

typedef struct vctx {
    const cJSON *root; /* for $ref */
    buf path;
    int depth;
    char msg[240];
} vctx;

static int report(vctx *c, int kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int report(vctx *c, int kind, const char *fmt, ...) {
    int n = snprintf(c->msg, sizeof c->msg, "%s: ", c->path.data);
    if (n < 0 || (size_t)n >= sizeof c->msg) return kind;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg + n, sizeof c->msg - (size_t)n, fmt, ap);
    va_end(ap);
    return kind;
}

static int check(vctx *c, const cJSON *schema, const cJSON *inst);

static int is_identifier(const char *s) {
    if (!*s || (*s >= '0' && *s <= '9')) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
    return 1;
}

/* Extends the path by one object key; returns the length to go back to. */
static size_t push_key(vctx *c, const char *key) {
    size_t len = c->path.len;
    if (is_identifier(key)) {
        buf_printf(&c->path, ".%s", key);
    } else {
        buf_putc(&c->path, '[');
        json_put_string(&c->path, key);
        buf_putc(&c->path, ']');
    }
    return len;
}

static void pop(vctx *c, size_t len) {
    c->path.len = len;
    c->path.data[len] = 0;
}

/* Checks inst against schema one path step further down. */
static int check_key(vctx *c, const cJSON *schema, const cJSON *inst, const char *key) {
    size_t len = push_key(c, key);
    int r = check(c, schema, inst);
    pop(c, len);
    return r;
}

static int check_index(vctx *c, const cJSON *schema, const cJSON *inst, int index) {
    size_t len = c->path.len;
    buf_printf(&c->path, "[%d]", index);
    int r = check(c, schema, inst);
    pop(c, len);
    return r;
}

static int is_integer(const cJSON *v) {
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble == floor(v->valuedouble);
}

static const char *type_of(const cJSON *v) {
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNumber(v)) return is_integer(v) ? "integer" : "number";
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsArray(v)) return "array";
    return "object";
}

static int has_type(const cJSON *v, const char *type) {
    if (strcmp(type, "number") == 0) return cJSON_IsNumber(v);
    return strcmp(type, type_of(v)) == 0;
}

static const cJSON *kw(const cJSON *schema, const char *name) {
    return cJSON_GetObjectItemCaseSensitive(schema, name);
}

static int known_type(const char *t) {
    static const char *const names[] = {"null", "boolean", "integer", "number", "string", "array", "object"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(t, names[i]) == 0) return 1;
    return 0;
}

/* "type": a name or an array of names; unknown names are the schema's
 * fault, not the answer's. */
static int check_type(vctx *c, const cJSON *type, const cJSON *inst) {
    if (!type) return V_OK;
    int single = !cJSON_IsArray(type);
    buf names = BUF_INIT;
    int r = V_OK, matched = 0;
    for (const cJSON *t = single ? type : type->child; t && !matched && !r; t = single ? NULL : t->next) {
        if (!cJSON_IsString(t) || !known_type(t->valuestring))
            r = report(c, V_SCHEMA, "unknown type in schema");
        else if (has_type(inst, t->valuestring))
            matched = 1;
        else
            buf_printf(&names, "%s%s", names.len ? " or " : "", t->valuestring);
    }
    if (!r && !matched && names.len) r = report(c, V_FAIL, "expected %s, got %s", names.data, type_of(inst));
    buf_free(&names);
    return r;
}

/* "#", "#/$defs/x", "#/definitions/a~1b": RFC 6901 pointers into the root. */
static const cJSON *resolve_ref(const cJSON *root, const char *ref) {
    if (ref[0] != '#') return NULL;
    const cJSON *at = root;
    const char *p = ref + 1;
    while (*p) {
        if (*p != '/') return NULL;
        p++;
        char token[256];
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~' && (p[1] == '0' || p[1] == '1')) ch = *++p == '0' ? '~' : '/';
            if (n + 1 >= sizeof token) return NULL;
            token[n++] = ch;
        }
        token[n] = 0;
        if (cJSON_IsArray(at)) {
            char *end;
            long i = strtol(token, &end, 10);
            at = *token && !*end && i >= 0 && i <= 1000000 ? cJSON_GetArrayItem(at, (int)i) : NULL;
        } else {
            at = cJSON_GetObjectItemCaseSensitive(at, token);
        }
        if (!at) return NULL;
    }
    return at;
}

static int check_number(vctx *c, const cJSON *s, double v) {
    const cJSON *min = kw(s, "minimum"), *max = kw(s, "maximum");
    const cJSON *xmin = kw(s, "exclusiveMinimum"), *xmax = kw(s, "exclusiveMaximum"), *mult = kw(s, "multipleOf");
    if (cJSON_IsNumber(min)) {
        if (cJSON_IsTrue(xmin) && !(v > min->valuedouble))
            return report(c, V_FAIL, "%.15g is not greater than exclusive minimum %.15g", v, min->valuedouble);
        if (v < min->valuedouble) return report(c, V_FAIL, "%.15g is less than minimum %.15g", v, min->valuedouble);
    }
    if (cJSON_IsNumber(max)) {
        if (cJSON_IsTrue(xmax) && !(v < max->valuedouble))
            return report(c, V_FAIL, "%.15g is not less than exclusive maximum %.15g", v, max->valuedouble);
        if (v > max->valuedouble) return report(c, V_FAIL, "%.15g is greater than maximum %.15g", v, max->valuedouble);
    }
    if (cJSON_IsNumber(xmin) && !(v > xmin->valuedouble))
        return report(c, V_FAIL, "%.15g is not greater than exclusiveMinimum %.15g", v, xmin->valuedouble);
    if (cJSON_IsNumber(xmax) && !(v < xmax->valuedouble))
        return report(c, V_FAIL, "%.15g is not less than exclusiveMaximum %.15g", v, xmax->valuedouble);
    if (cJSON_IsNumber(mult) && mult->valuedouble > 0) {
        double q = v / mult->valuedouble;
        if (!isfinite(q) || fabs(q - nearbyint(q)) > 1e-9 * fmax(1, fabs(q)))
            return report(c, V_FAIL, "%.15g is not a multiple of %.15g", v, mult->valuedouble);
    }
    return V_OK;
}

static size_t code_points(const char *s) {
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int check_string(vctx *c, const cJSON *s, const char *v) {
    const cJSON *min = kw(s, "minLength"), *max = kw(s, "maxLength");
    double len = (double)code_points(v);
    if (cJSON_IsNumber(min) && len < min->valuedouble)
        return report(c, V_FAIL, "string of %.0f characters is shorter than minLength %.15g", len, min->valuedouble);
    if (cJSON_IsNumber(max) && len > max->valuedouble)
        return report(c, V_FAIL, "string of %.0f characters is longer than maxLength %.15g", len, max->valuedouble);
    return V_OK;
}

static int check_array(vctx *c, const cJSON *s, const cJSON *arr) {
    const cJSON *items = kw(s, "items"), *prefix = kw(s, "prefixItems");
    const cJSON *min = kw(s, "minItems"), *max = kw(s, "maxItems");
    double n = cJSON_GetArraySize(arr);
    if (cJSON_IsNumber(min) && n < min->valuedouble)
        return report(c, V_FAIL, "array of %.0f items has fewer than minItems %.15g", n, min->valuedouble);
    if (cJSON_IsNumber(max) && n > max->valuedouble)
        return report(c, V_FAIL, "array of %.0f items has more than maxItems %.15g", n, max->valuedouble);
    /* positional schemas: prefixItems (2020-12) or an items array (draft 4-7) */
    const cJSON *positional = cJSON_IsArray(prefix) ? prefix : cJSON_IsArray(items) ? items : NULL;
    const cJSON *rest = cJSON_IsArray(items) ? NULL : items;
    const cJSON *pos = positional ? positional->child : NULL, *e;
    int i = 0, r;
    cJSON_ArrayForEach(e, arr) {
        const cJSON *sch = pos ? pos : rest;
        if (pos) pos = pos->next;
        if (sch && (r = check_index(c, sch, e, i))) return r;
        i++;
    }
    return V_OK;
}

static int declared(const cJSON *props, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(props, key) != NULL;
}

static int check_object(vctx *c, const cJSON *s, const cJSON *obj) {
    const cJSON *props = kw(s, "properties"), *req = kw(s, "required"), *extra = kw(s, "additionalProperties");
    const cJSON *min = kw(s, "minProperties"), *max = kw(s, "maxProperties"), *e;
    int r;
    cJSON_ArrayForEach(e, req) {
        if (cJSON_IsString(e) && !cJSON_GetObjectItemCaseSensitive(obj, e->valuestring))
            return report(c, V_FAIL, "missing required property '%s'", e->valuestring);
    }
    double n = cJSON_GetArraySize(obj);
    if (cJSON_IsNumber(min) && n < min->valuedouble)
        return report(c, V_FAIL, "object of %.0f properties has fewer than minProperties %.15g", n, min->valuedouble);
    if (cJSON_IsNumber(max) && n > max->valuedouble)
        return report(c, V_FAIL, "object of %.0f properties has more than maxProperties %.15g", n, max->valuedouble);
    int check_extra = extra && !cJSON_IsTrue(extra) && !kw(s, "patternProperties");
    cJSON_ArrayForEach(e, obj) {
        const cJSON *p = cJSON_IsObject(props) ? cJSON_GetObjectItemCaseSensitive(props, e->string) : NULL;
        if (p) {
            if ((r = check_key(c, p, e, e->string))) return r;
        } else if (check_extra && !declared(props, e->string)) {
            if (cJSON_IsFalse(extra)) {
                size_t len = push_key(c, e->string);
                r = report(c, V_FAIL, "property not allowed (additionalProperties is false)");
                pop(c, len);
                return r;
            }
            if ((r = check_key(c, extra, e, e->string))) return r;
        }
    }
    return V_OK;
}

/* allOf, anyOf, oneOf, not. */
static int check_combinators(vctx *c, const cJSON *s, const cJSON *inst) {
    const cJSON *all = kw(s, "allOf"), *any = kw(s, "anyOf"), *one = kw(s, "oneOf"), *not = kw(s, "not"), *e;
    int r;
    cJSON_ArrayForEach(e, all) {
        if ((r = check(c, e, inst))) return r;
    }
    if (cJSON_IsArray(any) && cJSON_GetArraySize(any)) {
        int ok = 0;
        cJSON_ArrayForEach(e, any) {
            if ((r = check(c, e, inst)) == V_SCHEMA) return r;
            if (r == V_OK) {
                ok = 1;
                break;
            }
        }
        if (!ok) return report(c, V_FAIL, "matches none of the anyOf schemas");
    }
    if (cJSON_IsArray(one) && cJSON_GetArraySize(one)) {
        int matched = 0;
        cJSON_ArrayForEach(e, one) {
            if ((r = check(c, e, inst)) == V_SCHEMA) return r;
            matched += r == V_OK;
        }
        if (matched != 1) return report(c, V_FAIL, "matches %d of the oneOf schemas, not exactly one", matched);
    }
    if (not) {
        if ((r = check(c, not, inst)) == V_SCHEMA) return r;
        if (r == V_OK) return report(c, V_FAIL, "matches the schema under 'not'");
    }
    return V_OK;
}

static int check_schema(vctx *c, const cJSON *s, const cJSON *inst) {
    if (cJSON_IsBool(s)) return cJSON_IsTrue(s) ? V_OK : report(c, V_FAIL, "no value is allowed here");
    if (!cJSON_IsObject(s)) return V_OK;
    const cJSON *ref = kw(s, "$ref"), *e;
    int r;
    if (cJSON_IsString(ref)) {
        const cJSON *target = resolve_ref(c->root, ref->valuestring);
        if (!target) return report(c, V_SCHEMA, "cannot resolve $ref '%.60s'", ref->valuestring);
        if ((r = check(c, target, inst))) return r;
    }
    if ((r = check_type(c, kw(s, "type"), inst))) return r;
    const cJSON *en = kw(s, "enum"), *cn = kw(s, "const");
    if (cJSON_IsArray(en)) {
        int found = 0;
        cJSON_ArrayForEach(e, en) found |= cJSON_Compare(e, inst, 1);
        if (!found) return report(c, V_FAIL, "value is not one of the enum values");
    }
    if (cn && !cJSON_Compare(cn, inst, 1)) return report(c, V_FAIL, "value is not the const value");
    if (cJSON_IsNumber(inst) && (r = check_number(c, s, inst->valuedouble))) return r;
    if (cJSON_IsString(inst) && (r = check_string(c, s, inst->valuestring))) return r;
    if (cJSON_IsArray(inst) && (r = check_array(c, s, inst))) return r;
    if (cJSON_IsObject(inst) && (r = check_object(c, s, inst))) return r;
    return check_combinators(c, s, inst);
}

static int check(vctx *c, const cJSON *schema, const cJSON *inst) {
    if (c->depth >= MAX_DEPTH) return report(c, V_SCHEMA, "schema nested deeper than %d levels", MAX_DEPTH);
    c->depth++;
    int r = check_schema(c, schema, inst);
    c->depth--;
    return r;
}

validate_result validate_json_schema(const cJSON *instance, const cJSON *schema) {
    vctx c = {schema, BUF_INIT, 0, ""};
    buf_putc(&c.path, '$');
    int r = check(&c, schema, instance);
    buf_free(&c.path);
    if (r == V_OK) return validate_resultf(VALIDATE_PASS, "valid against the schema");
    return validate_resultf(r == V_FAIL ? VALIDATE_FAIL : VALIDATE_NOT_APPLICABLE, "%s", c.msg);
}

validate_result validate_json_parse(const char *text, size_t len, cJSON **value) {
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    int parsed = v != NULL;
    *value = NULL;
    if (v) {
        size_t i = (size_t)(end - text);
        while (i < len && text[i] && strchr(" \t\r\n", text[i])) i++;
        if (i == len) {
            *value = v;
            return validate_resultf(VALIDATE_PASS, "valid JSON");
        }
        cJSON_Delete(v);
        end = text + i;
    }
    if (!end || end < text || end > text + len) end = text + len;
    int line = 1, col = 1;
    for (const char *p = text; p < end; p++) {
        if (*p == '\n')
            line++, col = 1;
        else
            col++;
    }
    return validate_resultf(VALIDATE_FAIL, "%s at line %d, column %d", parsed ? "text after the JSON value" : "not valid JSON",
                            line, col);
}

validate_result validate_json(const char *answer, size_t len, const cJSON *response_format) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(response_format, "type");
    if (!cJSON_IsString(type)) return validate_resultf(VALIDATE_NOT_APPLICABLE, "no response_format");
    int object = strcmp(type->valuestring, "json_object") == 0;
    if (!object && strcmp(type->valuestring, "json_schema") != 0)
        return validate_resultf(VALIDATE_NOT_APPLICABLE, "response_format type '%.40s' asks for no JSON",
                                type->valuestring);
    cJSON *v;
    validate_result r = validate_json_parse(answer, len, &v);
    if (!v) return r;
    if (object) {
        r = cJSON_IsObject(v) ? validate_resultf(VALIDATE_PASS, "a JSON object")
                              : validate_resultf(VALIDATE_FAIL, "$: expected object, got %s", type_of(v));
    } else {
        const cJSON *schema = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(response_format, "json_schema"), "schema");
        r = schema ? validate_json_schema(v, schema) : validate_resultf(VALIDATE_PASS, "valid JSON (no schema given)");
    }
    cJSON_Delete(v);
    return r;
}
