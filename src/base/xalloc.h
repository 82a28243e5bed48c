/* xalloc: allocation that never returns NULL.
 *
 * Out of memory is not a condition msoa can recover from request by request,
 * so it prints one line and aborts instead of threading NULL checks through
 * every path. Limits (body size, connections...) keep real use bounded. */
#ifndef MSOA_XALLOC_H
#define MSOA_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
/* Zeroed memory of n bytes starting on an align boundary (a power of two,
 * at least sizeof(void *)); freed with free(). */
void *xcalloc_aligned(size_t n, size_t align);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
