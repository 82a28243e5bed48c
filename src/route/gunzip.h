/* gunzip: decompress a whole .gz file into memory.
 *
 * The router reads a few gzip files (GloVe vectors, HumanEval) once at
 * training time. A small inflate written from RFC 1951/1952 saves a link
 * dependency for that; it is not meant to be fast or streaming. */
#ifndef MSOA_ROUTE_GUNZIP_H
#define MSOA_ROUTE_GUNZIP_H

#include "base/buf.h"

/* Appends the decompressed members of the gzip data to out.
 * Returns 0, or -1 on malformed input (out then holds a partial result). */
int gunzip_mem(const unsigned char *in, size_t len, buf *out);

/* Reads path whole; if it starts with the gzip magic, decompresses it.
 * Returns 0, or -1 with errno-style failure logged by the caller. */
int read_file_maybe_gz(const char *path, buf *out);

#endif
