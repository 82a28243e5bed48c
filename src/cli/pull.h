/* pull: download a GGUF model into the model cache, resumably and verified.
 *
 * The bytes go to NAME.part in the cache directory. An interrupted download
 * keeps its .part; the next pull asks the server for the rest (Range) and
 * appends when it answers 206, or starts over when it answers 200. The
 * SHA-256 is computed while the bytes arrive (over the kept .part first, on a
 * resume), so checking it costs no second read. Only a file that matches the
 * expected hash and opens as a valid GGUF is renamed to NAME, atomically:
 * the cache never holds a half-written or unverified model under its final
 * name. Blocking (libcurl's easy interface): a CLI has nothing else to do. */
#ifndef MSOA_CLI_PULL_H
#define MSOA_CLI_PULL_H

#include <stddef.h>
#include <stdio.h>

typedef struct pull_opts {
    const char *url;     /* http:// or https:// */
    const char *dir;     /* cache directory, created if missing; NULL: pull_default_dir */
    const char *name;    /* file name in dir; NULL: the last segment of the URL's path */
    const char *sha256;  /* expected digest, 64 hex digits (any case); NULL: not checked */
    FILE *log;           /* progress and notes (stderr); NULL: quiet */
} pull_opts;

/* The cache directory: $MSOA_MODEL_DIR, else $XDG_CACHE_HOME/msoa/models,
 * else $HOME/.cache/msoa/models. Returns 0, or -1 when none can be formed. */
int pull_default_dir(char *out, size_t n);

/* 1 when s is 64 hex digits. */
int pull_sha256_valid(const char *s);

/* Downloads (or finds already downloaded) the model; on success returns 0
 * and the final path in path. On failure returns -1 and a one-line message
 * in err: the HTTP status, a connection or disk error, a checksum mismatch
 * with both digests, or what is wrong with the file. A transfer cut short
 * keeps the .part so that the same call resumes it. */
int pull_model(const pull_opts *o, char *path, size_t pathlen, char *err, size_t errlen);

#endif
