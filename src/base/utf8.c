/* utf8: see utf8.h. */
#include "base/utf8.h"

size_t utf8_sequence_len(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    if (len == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    unsigned min_second = 0x80, max_second = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) min_second = 0xA0;      /* overlong */
        if (c == 0xED) max_second = 0x9F;      /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) min_second = 0x90;      /* overlong */
        if (c == 0xF4) max_second = 0x8F;      /* above U+10FFFF */
    } else return 0;
    if (n > len) return 0;
    if (s[1] < min_second || s[1] > max_second) return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[k] & 0xC0) != 0x80) return 0;
    return n;
}

size_t utf8_check(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        /* fast path over ASCII, which is nearly all JSON */
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_sequence_len(text + i, len - i);
        if (!n) return i;
        i += n;
    }
    return len;
}
