/* quantize: writing GGUF v3 files, and the file quantiser built on it.
 *
 * gguf.h only reads; two things here write: `msoa quantize` (a model in
 * another tensor type, metadata copied) and the benchmark's random-weight
 * model generator. The writer streams: the header and tensor table are
 * written first from declared shapes, then each tensor's data in order, so
 * a multi-gigabyte model never has to be held in memory. */
#ifndef MSOA_ENGINE_QUANTIZE_H
#define MSOA_ENGINE_QUANTIZE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/gguf.h"
#include "engine/quant.h"

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);

/* Metadata, in the order given; setting a key again replaces its value. */
void gguf_writer_set_str(gguf_writer *w, const char *key, const char *val);
void gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t val);
void gguf_writer_set_f32(gguf_writer *w, const char *key, float val);
/* Arrays of strings (n entries) and of f32 / i32 values. */
void gguf_writer_set_str_arr(gguf_writer *w, const char *key, const char *const *vals, size_t n);
void gguf_writer_set_f32_arr(gguf_writer *w, const char *key, const float *vals, size_t n);
void gguf_writer_set_i32_arr(gguf_writer *w, const char *key, const int32_t *vals, size_t n);
/* Copies a value as read by gguf.h (any type, arrays included). */
void gguf_writer_set_value(gguf_writer *w, const char *key, const gguf_value *v);

/* Declares the next tensor (ne[0] is the row length). Returns its index. */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne);

/* Writing: begin (header, metadata, tensor table), then exactly the bytes of
 * each declared tensor in order (any number of calls per tensor; padding is
 * added between tensors), then finish. Each returns 0 or -1 with err set. */
int gguf_writer_begin(gguf_writer *w, FILE *f, char *err, size_t errlen);
int gguf_writer_write(gguf_writer *w, const void *data, size_t n, char *err, size_t errlen);
int gguf_writer_finish(gguf_writer *w, char *err, size_t errlen);

/* Quantises a model file: 2-D tensors whose rows are a multiple of the
 * type's block become `type` (from whatever type they had, if this engine
 * can read it); 1-D tensors and the rest are copied unchanged, each such
 * matrix named on `log` (may be NULL). Metadata is copied, with
 * general.file_type set. Returns 0, or -1 with err set. */
int quantize_file(const char *in_path, const char *out_path, qtype type, FILE *log, char *err, size_t errlen);

#endif
