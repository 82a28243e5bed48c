/* ws_frame: WebSocket (RFC 6455) frame codec and message reader, no I/O.
 *
 * Kept apart from the server so every protocol rule (masking, lengths,
 * control frames, fragmentation, UTF-8, close codes) can be unit-tested and
 * fuzzed on plain byte buffers. The server feeds received bytes to a
 * ws_reader and acts on the events it returns; it writes frames with
 * ws_frame_head(). */
#ifndef MSOA_WS_FRAME_H
#define MSOA_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum {
    WS_OP_CONT = 0x0, WS_OP_TEXT = 0x1, WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8, WS_OP_PING = 0x9, WS_OP_PONG = 0xA
};

enum {
    WS_CLOSE_NORMAL = 1000, WS_CLOSE_GOING_AWAY = 1001, WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_NO_STATUS = 1005, WS_CLOSE_BAD_DATA = 1007, WS_CLOSE_TOO_BIG = 1009
};

#define WS_FRAME_HEAD_MAX 14

typedef struct ws_frame {
    int fin, rsv, opcode, masked;
    uint8_t mask[4];
    uint64_t len;       /* payload bytes */
    size_t head_len;    /* header bytes before the payload */
} ws_frame;

/* Reads a frame header from data[0..n). Returns 1 when complete, 0 when more
 * bytes are needed, -1 when the header is invalid whatever follows (64-bit
 * length with the top bit set). */
int ws_frame_parse(const uint8_t *data, size_t n, ws_frame *f);
/* XORs data with the mask, starting at payload offset `offset`. */
void ws_mask(uint8_t *data, size_t n, const uint8_t mask[4], uint64_t offset);
/* Writes an unmasked (server) frame header; returns its length. */
size_t ws_frame_head(uint8_t out[WS_FRAME_HEAD_MAX], int opcode, int fin, uint64_t len);
int ws_utf8_valid(const uint8_t *s, size_t n);
/* Close payload rules: a code RFC 6455 allows on the wire, reason UTF-8.
 * Returns 0 when valid, else the close code to fail with. */
int ws_close_payload_check(const uint8_t *p, size_t n);

/* Message reader: joins fragments, checks the rules, answers in events. */
enum { WS_EV_NONE, WS_EV_MESSAGE, WS_EV_PING, WS_EV_PONG, WS_EV_CLOSE, WS_EV_ERROR };

typedef struct ws_event {
    int type;
    int is_text;          /* WS_EV_MESSAGE */
    const char *data;     /* payload; valid until the next ws_reader_next */
    size_t len;
    int code;             /* WS_EV_CLOSE: peer's code (1005 if none); WS_EV_ERROR: code to close with */
    const char *reason;   /* WS_EV_ERROR: static message */
} ws_event;

typedef struct ws_reader {
    size_t max_message;
    int require_mask;     /* clients must mask (server side) */
    int frag_opcode;      /* opcode of the fragmented message being joined, 0 if none */
    buf frag;             /* fragments so far */
} ws_reader;

void ws_reader_init(ws_reader *r, size_t max_message, int require_mask);
void ws_reader_free(ws_reader *r);
/* Looks for the next event in data[0..n), unmasking payloads in place.
 * *used is the number of bytes consumed (also for WS_EV_NONE, where whole
 * fragments may have been taken in). After WS_EV_ERROR the stream is
 * broken: stop reading. */
int ws_reader_next(ws_reader *r, uint8_t *data, size_t n, size_t *used, ws_event *ev);

#endif
