/* jsonrpc: see jsonrpc.h.
 *
 * A received text goes through two readers. First our own strict scanner
 * (RFC 8259 grammar, UTF-8 checked, depth bounded by JSONRPC_MAX_DEPTH with
 * bounded recursion) which also notes where each request's number id is in
 * the text, so it can be echoed byte for byte: cJSON keeps numbers as doubles
 * and would turn 9007199254740993 into ...992. Only then cJSON builds the tree
 * the methods read (cJSON alone accepts "01", control characters in strings,
 * invalid UTF-8 and trailing garbage after a length-bounded parse).
 *
 * Lifetimes: a text becomes one rpc_batch (a single request is a batch of one
 * that is not sent as an array). The batch owns the parsed tree, the calls and
 * one response slot per answerable member, and counts references: one per
 * unanswered call plus one while jsonrpc_handle or session_close walks it.
 * When they reach zero the responses go out (if the session is still open)
 * and everything is freed. The session in turn is referenced by its transport
 * (until jsonrpc_session_close) and by each live batch. */
#include "api/jsonrpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/utf8.h"
#include "base/xalloc.h"

typedef struct rpc_batch rpc_batch;

struct jsonrpc_call {
    rpc_batch *batch;
    const cJSON *id;        /* NULL: notification */
    char *raw_id;           /* a number id as it was written; NULL otherwise */
    size_t slot;            /* where its response goes, if it has an id */
    int answered;
    int cancelled;
    void (*on_cancel)(void *ud);
    void *cancel_ud;
};

struct rpc_batch {
    jsonrpc_session *s;
    rpc_batch *prev, *next; /* the session's live batches */
    cJSON *doc;
    int is_array;           /* answer with an array (a batch) or one object */
    jsonrpc_call *calls;
    size_t n_calls;
    cJSON **slots;          /* responses in request order */
    size_t n_slots;
    size_t refs;
};

struct jsonrpc_session {
    const jsonrpc_method *methods;
    size_t n_methods;
    void *method_ud;
    jsonrpc_send_fn send;
    void *transport_ud;
    size_t max_batch;
    size_t pending;
    size_t awaiting;        /* pending calls with an id: answers owed */
    size_t refs;
    int closed;
    rpc_batch *batches;
};

/* cJSON reports allocation failure with NULL; like xalloc we stop there. */
static cJSON *need(cJSON *j) {
    if (!j) {
        log_error("jsonrpc: out of memory building JSON");
        abort();
    }
    return j;
}

/* ------------------------------------------------------------------ */
/* Strict scanner                                                     */

enum { SCAN_OK, SCAN_BAD, SCAN_DEEP };

typedef struct id_span {
    size_t off, len; /* len 0: no number id */
} id_span;

typedef struct scanner {
    const unsigned char *p, *start, *end;
    int request_depth;  /* depth of request objects: 1 single, 2 in a batch */
    size_t member;      /* index of the request being scanned */
    int id_seen;        /* its first "id" key was met (cJSON uses the first) */
    size_t n_members;   /* top-level array length */
    id_span *ids;       /* per member, n_ids of them, at most max_ids */
    size_t n_ids, max_ids;
} scanner;

static int scan_value(scanner *sc, int depth);

static void scan_ws(scanner *sc) {
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static int scan_literal(scanner *sc, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0) return SCAN_BAD;
    sc->p += n;
    return SCAN_OK;
}

static int scan_digits(scanner *sc) {
    const unsigned char *from = sc->p;
    while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9') sc->p++;
    return sc->p > from ? SCAN_OK : SCAN_BAD;
}

static int scan_number(scanner *sc) {
    if (*sc->p == '-') sc->p++;
    if (sc->p < sc->end && *sc->p == '0') sc->p++;
    else if (scan_digits(sc) != SCAN_OK) return SCAN_BAD;
    if (sc->p < sc->end && *sc->p == '.') {
        sc->p++;
        if (scan_digits(sc) != SCAN_OK) return SCAN_BAD;
    }
    if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E')) {
        sc->p++;
        if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-')) sc->p++;
        if (scan_digits(sc) != SCAN_OK) return SCAN_BAD;
    }
    return SCAN_OK;
}

static int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* At the opening quote; leaves p after the closing one. */
static int scan_string(scanner *sc) {
    sc->p++;
    while (sc->p < sc->end) {
        unsigned char c = *sc->p;
        if (c == '"') {
            sc->p++;
            return SCAN_OK;
        }
        if (c < 0x20) return SCAN_BAD;
        if (c == '\\') {
            if (sc->end - sc->p < 2) return SCAN_BAD;
            c = sc->p[1];
            if (c == 'u') {
                if (sc->end - sc->p < 6) return SCAN_BAD;
                for (int i = 2; i < 6; i++)
                    if (!is_hex(sc->p[i])) return SCAN_BAD;
                sc->p += 6;
            } else if (strchr("\"\\/bfnrt", c) && c) {
                sc->p += 2;
            } else return SCAN_BAD;
        } else if (c >= 0x80) {
            size_t n = utf8_sequence_len((const char *)sc->p, (size_t)(sc->end - sc->p));
            if (!n) return SCAN_BAD;
            sc->p += n;
        } else sc->p++;
    }
    return SCAN_BAD;
}

/* Remembers where a request's first "id" member is when it is a number. */
static void note_id(scanner *sc, const unsigned char *key, size_t key_len, const unsigned char *val) {
    if (sc->id_seen || key_len != 2 || memcmp(key, "id", 2) != 0) return;
    sc->id_seen = 1;
    if (sc->member >= sc->max_ids || !(*val == '-' || (*val >= '0' && *val <= '9'))) return;
    if (sc->member >= sc->n_ids) {
        size_t n = sc->member + 1;
        sc->ids = xrealloc(sc->ids, n * sizeof *sc->ids);
        memset(sc->ids + sc->n_ids, 0, (n - sc->n_ids) * sizeof *sc->ids);
        sc->n_ids = n;
    }
    sc->ids[sc->member].off = (size_t)(val - sc->start);
    sc->ids[sc->member].len = (size_t)(sc->p - val);
}

static int scan_object(scanner *sc, int depth) {
    sc->p++;
    scan_ws(sc);
    if (sc->p < sc->end && *sc->p == '}') {
        sc->p++;
        return SCAN_OK;
    }
    for (;;) {
        scan_ws(sc);
        if (sc->p >= sc->end || *sc->p != '"') return SCAN_BAD;
        const unsigned char *key = sc->p + 1;
        if (scan_string(sc) != SCAN_OK) return SCAN_BAD;
        size_t key_len = (size_t)(sc->p - 1 - key);
        scan_ws(sc);
        if (sc->p >= sc->end || *sc->p != ':') return SCAN_BAD;
        sc->p++;
        scan_ws(sc);
        const unsigned char *val = sc->p;
        int r = scan_value(sc, depth + 1);
        if (r != SCAN_OK) return r;
        if (depth == sc->request_depth) note_id(sc, key, key_len, val);
        scan_ws(sc);
        if (sc->p >= sc->end) return SCAN_BAD;
        if (*sc->p == '}') {
            sc->p++;
            return SCAN_OK;
        }
        if (*sc->p++ != ',') return SCAN_BAD;
    }
}

static int scan_array(scanner *sc, int depth) {
    sc->p++;
    scan_ws(sc);
    if (sc->p < sc->end && *sc->p == ']') {
        sc->p++;
        return SCAN_OK;
    }
    for (size_t i = 0;; i++) {
        scan_ws(sc);
        if (depth == 1) {
            sc->member = i;
            sc->id_seen = 0;
            sc->n_members = i + 1;
        }
        int r = scan_value(sc, depth + 1);
        if (r != SCAN_OK) return r;
        scan_ws(sc);
        if (sc->p >= sc->end) return SCAN_BAD;
        if (*sc->p == ']') {
            sc->p++;
            return SCAN_OK;
        }
        if (*sc->p++ != ',') return SCAN_BAD;
    }
}

/* depth: the nesting level the value has if it is an object or array. */
static int scan_value(scanner *sc, int depth) {
    if (sc->p >= sc->end) return SCAN_BAD;
    switch (*sc->p) {
    case '{':
        return depth > JSONRPC_MAX_DEPTH ? SCAN_DEEP : scan_object(sc, depth);
    case '[':
        return depth > JSONRPC_MAX_DEPTH ? SCAN_DEEP : scan_array(sc, depth);
    case '"': return scan_string(sc);
    case 't': return scan_literal(sc, "true");
    case 'f': return scan_literal(sc, "false");
    case 'n': return scan_literal(sc, "null");
    default:
        if (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9')) return scan_number(sc);
        return SCAN_BAD;
    }
}

/* Checks the whole text, noting number ids of the first max_ids requests. */
static int scan_text(scanner *sc, const char *text, size_t len) {
    sc->start = sc->p = (const unsigned char *)text;
    sc->end = sc->start + len;
    scan_ws(sc);
    sc->request_depth = sc->p < sc->end && *sc->p == '[' ? 2 : 1;
    int r = scan_value(sc, 1);
    if (r != SCAN_OK) return r;
    scan_ws(sc);
    return sc->p == sc->end ? SCAN_OK : SCAN_BAD;
}

/* ------------------------------------------------------------------ */
/* Responses                                                          */

static const char *standard_message(int code) {
    switch (code) {
    case JSONRPC_PARSE_ERROR: return "Parse error";
    case JSONRPC_INVALID_REQUEST: return "Invalid Request";
    case JSONRPC_METHOD_NOT_FOUND: return "Method not found";
    case JSONRPC_INVALID_PARAMS: return "Invalid params";
    case JSONRPC_INTERNAL_ERROR: return "Internal error";
    default: return "Server error";
    }
}

/* {"jsonrpc":"2.0", <key>: value, "id": id}; takes value and id. */
static cJSON *response(const char *key, cJSON *value, cJSON *id) {
    cJSON *r = need(cJSON_CreateObject());
    need(cJSON_AddStringToObject(r, "jsonrpc", "2.0"));
    cJSON_AddItemToObject(r, key, value);
    cJSON_AddItemToObject(r, "id", id);
    return r;
}

static cJSON *error_response(int code, const char *message, cJSON *data, cJSON *id) {
    cJSON *e = need(cJSON_CreateObject());
    need(cJSON_AddNumberToObject(e, "code", code));
    need(cJSON_AddStringToObject(e, "message", message ? message : standard_message(code)));
    if (data) cJSON_AddItemToObject(e, "data", data);
    return response("error", e, id);
}

/* The id to answer with: as received (number ids byte for byte), or null. */
static cJSON *id_for_response(const cJSON *id, const char *raw) {
    if (!id) return need(cJSON_CreateNull());
    if (raw) return need(cJSON_CreateRaw(raw));
    return need(cJSON_Duplicate(id, 1));
}

static void send_json(jsonrpc_session *s, cJSON *j) {
    char *text = cJSON_PrintUnformatted(j);
    if (!text) need(NULL);
    s->send(text, strlen(text), s->transport_ud);
    cJSON_free(text);
}

/* For errors found before any batch exists: sent at once. */
static void send_error(jsonrpc_session *s, int code, const char *message, const char *detail) {
    cJSON *data = detail ? need(cJSON_CreateString(detail)) : NULL;
    cJSON *r = error_response(code, message, data, need(cJSON_CreateNull()));
    send_json(s, r);
    cJSON_Delete(r);
}

/* ------------------------------------------------------------------ */
/* Sessions and batches                                               */

jsonrpc_session *jsonrpc_session_new(const jsonrpc_method *methods, size_t n_methods, void *method_ud,
                                     jsonrpc_send_fn send, void *transport_ud) {
    jsonrpc_session *s = xcalloc(1, sizeof *s);
    s->methods = methods;
    s->n_methods = n_methods;
    s->method_ud = method_ud;
    s->send = send;
    s->transport_ud = transport_ud;
    s->max_batch = JSONRPC_DEFAULT_MAX_BATCH;
    s->refs = 1;
    return s;
}

void jsonrpc_session_set_max_batch(jsonrpc_session *s, size_t max_batch) { s->max_batch = max_batch; }

size_t jsonrpc_session_pending(const jsonrpc_session *s) { return s->pending; }

size_t jsonrpc_session_awaiting(const jsonrpc_session *s) { return s->awaiting; }

static void session_unref(jsonrpc_session *s) {
    if (--s->refs == 0) free(s);
}

static rpc_batch *batch_new(jsonrpc_session *s, cJSON *doc, int is_array, size_t n_members) {
    rpc_batch *b = xcalloc(1, sizeof *b);
    b->s = s;
    b->doc = doc;
    b->is_array = is_array;
    b->calls = xcalloc(n_members, sizeof *b->calls);
    b->slots = xcalloc(n_members, sizeof *b->slots);
    b->refs = 1; /* the walk that fills it */
    b->next = s->batches;
    if (b->next) b->next->prev = b;
    s->batches = b;
    s->refs++;
    return b;
}

static void batch_send(rpc_batch *b) {
    if (!b->is_array) {
        send_json(b->s, b->slots[0]);
        return;
    }
    cJSON *arr = need(cJSON_CreateArray());
    for (size_t i = 0; i < b->n_slots; i++) {
        cJSON_AddItemToArray(arr, b->slots[i]);
        b->slots[i] = NULL;
    }
    send_json(b->s, arr);
    cJSON_Delete(arr);
}

static void batch_unref(rpc_batch *b) {
    if (--b->refs > 0) return;
    jsonrpc_session *s = b->s;
    /* unlinked first: the transport may close the session from inside send */
    if (b->prev) b->prev->next = b->next;
    else s->batches = b->next;
    if (b->next) b->next->prev = b->prev;
    if (!s->closed && b->n_slots > 0) batch_send(b);
    for (size_t i = 0; i < b->n_slots; i++) cJSON_Delete(b->slots[i]);
    for (size_t i = 0; i < b->n_calls; i++) free(b->calls[i].raw_id);
    free(b->slots);
    free(b->calls);
    cJSON_Delete(b->doc);
    free(b);
    session_unref(s);
}

/* Why a member is not a valid Request object, or NULL if it is. *id is set
 * to its id when that is usable in an answer, else NULL. */
static const char *request_problem(const cJSON *m, const cJSON **id) {
    *id = NULL;
    if (!cJSON_IsObject(m)) return "a request must be an object";
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(m, "id");
    if (i && !cJSON_IsString(i) && !cJSON_IsNumber(i) && !cJSON_IsNull(i))
        return "id must be a string, a number or null";
    *id = i;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "jsonrpc");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "2.0") != 0) return "jsonrpc must be exactly \"2.0\"";
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "method"))) return "method must be a string";
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(m, "params");
    if (p && !cJSON_IsObject(p) && !cJSON_IsArray(p)) return "params must be an object or an array";
    return NULL;
}

static const jsonrpc_method *find_method(const jsonrpc_session *s, const char *name) {
    for (size_t i = 0; i < s->n_methods; i++)
        if (strcmp(s->methods[i].name, name) == 0) return &s->methods[i];
    return NULL;
}

static char *raw_id_text(const scanner *sc, const char *text, size_t member) {
    if (member >= sc->n_ids || sc->ids[member].len == 0) return NULL;
    return xstrndup(text + sc->ids[member].off, sc->ids[member].len);
}

/* Validates one member and runs its method (or answers its error). */
static void dispatch(rpc_batch *b, const cJSON *m, char *raw_id) {
    jsonrpc_session *s = b->s;
    const cJSON *id;
    const char *problem = request_problem(m, &id);
    if (problem) {
        cJSON *data = need(cJSON_CreateString(problem));
        b->slots[b->n_slots++] = error_response(JSONRPC_INVALID_REQUEST, NULL, data, id_for_response(id, raw_id));
        free(raw_id);
        return;
    }
    jsonrpc_call *c = &b->calls[b->n_calls++];
    c->batch = b;
    c->id = id;
    c->raw_id = raw_id;
    if (id) c->slot = b->n_slots++;
    b->refs++;
    s->pending++;
    if (id) s->awaiting++;
    const char *name = cJSON_GetObjectItemCaseSensitive(m, "method")->valuestring;
    const jsonrpc_method *method = find_method(s, name);
    if (!method) {
        jsonrpc_error(c, JSONRPC_METHOD_NOT_FOUND, NULL, need(cJSON_CreateString(name)));
        return;
    }
    method->fn(c, cJSON_GetObjectItemCaseSensitive(m, "params"), s->method_ud);
}

/* The tree of a valid text whose size is within limits; otherwise sends the
 * one error that answers the whole text and returns NULL. */
static cJSON *parse(jsonrpc_session *s, scanner *sc, const char *text, size_t len) {
    char msg[160];
    int r = scan_text(sc, text, len);
    if (r == SCAN_DEEP) {
        snprintf(msg, sizeof msg, "Invalid Request: JSON nested deeper than %d levels", JSONRPC_MAX_DEPTH);
        send_error(s, JSONRPC_INVALID_REQUEST, msg, NULL);
        return NULL;
    }
    int is_array = sc->request_depth == 2;
    if (r == SCAN_OK && is_array && sc->n_members == 0) {
        send_error(s, JSONRPC_INVALID_REQUEST, NULL, "empty batch");
        return NULL;
    }
    if (r == SCAN_OK && is_array && sc->n_members > s->max_batch) {
        snprintf(msg, sizeof msg, "Invalid Request: batch of %zu requests is over the limit of %zu",
                 sc->n_members, s->max_batch);
        send_error(s, JSONRPC_INVALID_REQUEST, msg, NULL);
        return NULL;
    }
    cJSON *doc = NULL;
    if (r == SCAN_OK) {
        const char *end = NULL;
        doc = cJSON_ParseWithLengthOpts(text, len, &end, 0);
        /* cJSON has limits of its own (numbers over 63 characters) */
        if (doc && end != text + len) {
            cJSON_Delete(doc);
            doc = NULL;
        }
    }
    if (!doc) send_error(s, JSONRPC_PARSE_ERROR, NULL, NULL);
    return doc;
}

void jsonrpc_handle(jsonrpc_session *s, const char *text, size_t len) {
    if (s->closed) return;
    scanner sc = {.max_ids = s->max_batch ? s->max_batch : 1};
    cJSON *doc = parse(s, &sc, text, len);
    if (doc) {
        int is_array = cJSON_IsArray(doc);
        rpc_batch *b = batch_new(s, doc, is_array, is_array ? sc.n_members : 1);
        if (!is_array) {
            dispatch(b, doc, raw_id_text(&sc, text, 0));
        } else {
            size_t i = 0;
            for (const cJSON *m = doc->child; m && !s->closed; m = m->next, i++)
                dispatch(b, m, raw_id_text(&sc, text, i));
        }
        batch_unref(b);
    }
    free(sc.ids);
}

void jsonrpc_session_close(jsonrpc_session *s) {
    s->closed = 1;
    /* hold every batch so cancel callbacks that answer cannot free one
     * under the walk */
    for (rpc_batch *b = s->batches; b; b = b->next) b->refs++;
    for (rpc_batch *b = s->batches; b; b = b->next) {
        for (size_t i = 0; i < b->n_calls; i++) {
            jsonrpc_call *c = &b->calls[i];
            if (c->answered || c->cancelled) continue;
            c->cancelled = 1;
            if (c->on_cancel) c->on_cancel(c->cancel_ud);
        }
    }
    for (rpc_batch *b = s->batches, *next; b; b = next) {
        next = b->next;
        batch_unref(b);
    }
    session_unref(s);
}

/* ------------------------------------------------------------------ */
/* Inside a method                                                    */

int jsonrpc_call_is_notification(const jsonrpc_call *c) { return c->id == NULL; }

const cJSON *jsonrpc_call_id(const jsonrpc_call *c) { return c->id; }

void *jsonrpc_call_transport(const jsonrpc_call *c) { return c->batch->s->transport_ud; }

void jsonrpc_call_on_cancel(jsonrpc_call *c, void (*on_cancel)(void *ud), void *ud) {
    c->on_cancel = on_cancel;
    c->cancel_ud = ud;
    if (c->cancelled && !c->answered) on_cancel(ud);
}

int jsonrpc_call_cancelled(const jsonrpc_call *c) { return c->cancelled; }

/* Stores the response (NULL for notifications: nothing goes back) and
 * releases the call's hold on its batch. Takes `resp`. */
static void answer(jsonrpc_call *c, cJSON *resp) {
    rpc_batch *b = c->batch;
    c->answered = 1;
    b->s->pending--;
    if (c->id) b->s->awaiting--;
    if (c->id && !b->s->closed) b->slots[c->slot] = resp;
    else cJSON_Delete(resp);
    batch_unref(b);
}

static int answered_twice(jsonrpc_call *c, const char *what) {
    if (!c->answered) return 0;
    log_warn("jsonrpc: %s after the call already answered; ignored", what);
    return 1;
}

void jsonrpc_result(jsonrpc_call *c, cJSON *result) {
    if (answered_twice(c, "result")) {
        cJSON_Delete(result);
        return;
    }
    if (!c->id) {
        cJSON_Delete(result);
        answer(c, NULL);
        return;
    }
    answer(c, response("result", result ? result : need(cJSON_CreateNull()), id_for_response(c->id, c->raw_id)));
}

void jsonrpc_error(jsonrpc_call *c, int code, const char *message, cJSON *data) {
    if (answered_twice(c, "error")) {
        cJSON_Delete(data);
        return;
    }
    if (!c->id) {
        cJSON_Delete(data);
        answer(c, NULL);
        return;
    }
    answer(c, error_response(code, message, data, id_for_response(c->id, c->raw_id)));
}

void jsonrpc_notify(jsonrpc_call *c, const char *method, cJSON *params) {
    jsonrpc_session *s = c->batch->s;
    if (answered_twice(c, "notification") || s->closed) {
        cJSON_Delete(params);
        return;
    }
    cJSON *n = need(cJSON_CreateObject());
    need(cJSON_AddStringToObject(n, "jsonrpc", "2.0"));
    need(cJSON_AddStringToObject(n, "method", method));
    if (params) cJSON_AddItemToObject(n, "params", params);
    send_json(s, n);
    cJSON_Delete(n);
}
