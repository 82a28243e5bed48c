/* json_tape_fuzz: libFuzzer target for the JSON tape reader.
 *
 * The input is read from a buffer of exactly its size (ASan catches a read
 * past the end). When it is accepted, the tape must be well formed: every
 * token inside the text and inside its container, each value's raw bytes a
 * document of their own with as many tokens, every decoded string valid
 * UTF-8, and every key found again by json_get. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json_tape.h"
#include "base/utf8.h"

static void check_value(const json_doc *d, uint32_t i) {
    const json_tok *t = &d->tok[i];
    if (t->end <= i || t->end > d->n || (size_t)t->start + t->len > d->len || !t->len) abort();
    json_doc sub;
    json_doc_init(&sub, NULL, 0);
    if (json_parse(&sub, d->text + t->start, t->len) != 0 || sub.n != t->end - i) abort();
    json_doc_free(&sub);
    if (t->type == JSON_STRING) {
        buf b = BUF_INIT;
        json_str_decode(d, (int)i, &b);
        if (utf8_check(b.data ? b.data : "", b.len) != b.len) abort();
        buf_free(&b);
    }
    /* children lie inside: members are key, value pairs */
    if (t->type == JSON_OBJECT || t->type == JSON_ARRAY) {
        for (uint32_t k = i + 1; k < t->end; k = d->tok[k].end) {
            if (d->tok[k].end > t->end || d->tok[k].start < t->start) abort();
            if (t->type == JSON_OBJECT) {
                if (d->tok[k].type != JSON_STRING || k + 1 >= t->end) abort();
                k++;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n) {
    char *text = malloc(n ? n : 1);
    memcpy(text, in, n);
    json_tok space[16];
    json_doc d;
    json_doc_init(&d, space, 16);
    if (json_parse(&d, text, n) == 0) {
        for (uint32_t i = 0; i < d.n && i < 256; i++) check_value(&d, i);
        if (d.tok[0].type == JSON_OBJECT) {
            buf key = BUF_INIT;
            for (uint32_t k = 1; k < d.tok[0].end; k = d.tok[k + 1].end) {
                buf_clear(&key);
                json_str_decode(&d, (int)k, &key);
                /* keys with NUL bytes cannot be asked for by name */
                if (strlen(key.data ? key.data : "") != key.len) continue;
                int v = json_get(&d, 0, key.data ? key.data : "");
                if (v < 0 || !json_str_eq(&d, v - 1, key.data ? key.data : "")) abort();
            }
            buf_free(&key);
        }
    } else if (!d.error || d.error_at > n) {
        abort();
    }
    json_doc_free(&d);
    free(text);
    return 0;
}
