/* gguf_fuzz: libFuzzer target for the GGUF reader and what is built on its
 * metadata (tokenizer, chat template detection).
 *
 * Any input must either be rejected with a message or yield a handle whose
 * every value, string and tensor byte can be read without leaving the
 * input (ASan checks). Walking everything after a successful open is what
 * makes the validation claims of gguf.h testable; a tokenizer built from
 * hostile metadata must load or refuse, and then encode and decode. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

static unsigned walk_value(const gguf_value *v) {
    unsigned h = v->type;
    if (v->type == GGUF_VT_STR) return h + (unsigned)strlen(v->str.s) + (unsigned)v->str.len;
    if (v->type != GGUF_VT_ARR) return h;
    for (uint64_t i = 0; i < v->arr.n; i++) {
        int64_t x;
        float f;
        if (v->arr.items) h += walk_value(&v->arr.items[i]);
        else if (gguf_arr_i64(v, i, &x) == 0) h += (unsigned)x;
        else if (gguf_arr_f32(v, i, &f) == 0) h += f > 0;
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    gguf *g = gguf_open_mem(data, size, err, sizeof err);
    if (!g) return 0;
    unsigned h = 0;
    for (int i = 0; i < gguf_n_kv(g); i++) {
        h += walk_value(gguf_kv_value(g, i));
        h += gguf_get(g, gguf_kv_key(g, i)) == gguf_kv_value(g, i);
    }
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        const unsigned char *p = t->data;
        if (t->nbytes) h += p[0] + p[t->nbytes - 1];
        h += gguf_find_tensor(g, t->name) == t;
    }
    tokenizer *t = tokenizer_load(g, err, sizeof err);
    if (t) {
        static const char text[] = "Hello  world 123 <s>\xff\n\t'll";
        int32_t *ids;
        int n = tokenizer_encode(t, text, sizeof text - 1, TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &ids);
        buf out = BUF_INIT;
        tokenizer_decode(t, ids, n, TOK_RENDER_SPECIAL, &out);
        h += (unsigned)out.len;
        buf_free(&out);
        free(ids);
        tokenizer_free(t);
    }
    h += (unsigned)chat_family_from_gguf(g, err, sizeof err);
    gguf_close(g);
    return (int)(h & 0);
}
