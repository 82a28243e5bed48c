/* json_tape: a validating JSON reader that builds no tree.
 *
 * cJSON turns a document into one allocation per value and per string, and
 * freeing it costs as much again; on a proxied request, parsing the node's
 * answer that way and printing it back was the largest part of the
 * gateway's work. Here a document is read once into a tape: one 16-byte
 * token per value (and per object key) pointing into the text, in document
 * order, each container's token saying where its contents end so a reader
 * can step over it. The text is not copied or changed; strings are decoded
 * only when asked for, and a value can be passed on as the bytes it was.
 *
 * The reader is strict RFC 8259: any value at the top (only whitespace
 * around it), no leading zeros, no trailing commas, no control characters
 * in strings, only the escapes of the RFC, valid UTF-8 (RFC 3629) in
 * strings, and at most JSON_MAX_DEPTH nested containers. Escaped UTF-16
 * surrogates are taken as the RFC's grammar allows; an unpaired one decodes
 * to U+FFFD. The tape lives in the caller's array, moved to the heap only
 * when a document needs more tokens than it holds. */
#ifndef MSOA_JSON_TAPE_H
#define MSOA_JSON_TAPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/buf.h"

#define JSON_MAX_DEPTH 1000

enum json_type { JSON_OBJECT = 1, JSON_ARRAY, JSON_STRING, JSON_NUMBER, JSON_TRUE, JSON_FALSE, JSON_NULL };

typedef struct json_tok {
    uint32_t start;   /* offset of the value's first byte */
    uint32_t len;     /* its bytes, a string's quotes included */
    uint32_t end;     /* index of the first token after it and its contents */
    uint8_t type;     /* enum json_type */
    uint8_t escaped;  /* a string with a backslash in it */
} json_tok;

typedef struct json_doc {
    const char *text;
    size_t len;
    json_tok *tok;
    uint32_t n, cap;
    int heap;           /* tok was allocated here */
    const char *error;  /* why the text was refused (static) */
    size_t error_at;    /* and at which byte */
} json_doc;

/* A document whose tape starts in space[0..cap) (cap may be 0). */
void json_doc_init(json_doc *d, json_tok *space, uint32_t cap);
/* d->error when a whole value was read but more than blanks follows it:
 * callers that report this case in their own words compare with it. */
#define JSON_ERROR_TRAILING "data after the value"

/* Reads text[0..len) into the tape: 0, or -1 with d->error and d->error_at
 * set. A doc can read several texts in turn; tokens point into the last. */
int json_parse(json_doc *d, const char *text, size_t len);
void json_doc_free(json_doc *d);
/* Makes dst (initialised, empty) the tape of src over `text`, a copy of
 * src's text elsewhere: no second read of it. */
void json_doc_copy(json_doc *dst, const json_doc *src, const char *text);

/* The value of `key` in object token `obj` (the first if repeated), or -1
 * when obj is -1, not an object, or has no such key. */
int json_get(const json_doc *d, int obj, const char *key);
/* The key token of object `obj`'s first member (key -1) or of the member
 * after key `key`; its value is the token after it. -1 when there is none
 * or obj is not an object. */
static inline int json_member_next(const json_doc *d, int obj, int key) {
    if (obj < 0 || d->tok[obj].type != JSON_OBJECT) return -1;
    uint32_t k = key < 0 ? (uint32_t)obj + 1 : d->tok[key + 1].end;
    return k < d->tok[obj].end ? (int)k : -1;
}
/* The i-th element of array token `arr`, or -1. */
int json_at(const json_doc *d, int arr, int i);
/* The type of token t, or 0 when t is -1. */
static inline int json_type_of(const json_doc *d, int t) { return t < 0 ? 0 : d->tok[t].type; }
/* The raw bytes of token t (a string with its quotes and escapes). */
static inline const char *json_raw(const json_doc *d, int t) { return d->text + d->tok[t].start; }
/* Whether string token t decodes to exactly s. Inline: relaying an answer
 * or a request compares every key with a few names, mostly literals whose
 * length the compiler knows; escaped strings take the slow path. */
int json_str_eq_escaped(const json_doc *d, int t, const char *s);
static inline int json_str_eq(const json_doc *d, int t, const char *s) {
    if (t < 0 || d->tok[t].type != JSON_STRING) return 0;
    const json_tok *k = &d->tok[t];
    if (k->escaped) return json_str_eq_escaped(d, t, s);
    size_t n = strlen(s);
    return k->len == n + 2 && !memcmp(d->text + k->start + 1, s, n);
}
/* Appends string token t, decoded, to out. */
void json_str_decode(const json_doc *d, int t, buf *out);
/* Number token t as a double; 0 when t is not a number. */
int json_number(const json_doc *d, int t, double *out);

#endif
