/* ws_frame_fuzz: libFuzzer target for the WebSocket message reader.
 *
 * The first byte sets the options (masks required or not, a small or large
 * message limit) and the receive chunk size; the rest arrives in chunks the
 * way the server buffers it: unconsumed bytes stay, new ones are appended,
 * in a buffer of exactly that size so ASan sees any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/ws_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t n) {
    if (n < 1) return 0;
    ws_reader r;
    ws_reader_init(&r, in[0] & 1 ? 64 : 1 << 16, in[0] & 2);
    size_t step = (size_t)(in[0] >> 2) + 1;
    in++;
    n--;
    uint8_t *pending = NULL;
    size_t have = 0, fed = 0;
    int broken = 0;
    while (fed < n && !broken) {
        size_t take = n - fed < step ? n - fed : step;
        pending = realloc(pending, have + take);
        memcpy(pending + have, in + fed, take);
        have += take;
        fed += take;
        for (;;) {
            size_t used;
            ws_event ev;
            int t = ws_reader_next(&r, pending, have, &used, &ev);
            if (used > have) abort();
            /* Check the event before its bytes are dropped. */
            if (t == WS_EV_MESSAGE && ev.is_text && !ws_utf8_valid((const uint8_t *)ev.data, ev.len)) abort();
            if ((t == WS_EV_PING || t == WS_EV_PONG) && ev.len > 125) abort();
            memmove(pending, pending + used, have - used);
            have -= used;
            if (t == WS_EV_ERROR) broken = 1;
            if (t == WS_EV_NONE || t == WS_EV_ERROR) break;
        }
    }
    free(pending);
    ws_reader_free(&r);
    return 0;
}
