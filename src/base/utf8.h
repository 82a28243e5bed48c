/* utf8: validation of UTF-8 text (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF). Request bodies are checked before JSON parsing
 * because cJSON passes invalid bytes through to upstreams and clients. */
#ifndef MSOA_UTF8_H
#define MSOA_UTF8_H

#include <stddef.h>

/* Length (1-4) of the valid sequence starting at s[0], or 0 when the bytes
 * there (at most len of them) are not one. */
size_t utf8_sequence_len(const char *s, size_t len);
/* Returns the offset of the first invalid byte, or len when all is valid. */
size_t utf8_check(const char *s, size_t len);

#endif
