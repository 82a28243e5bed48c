/* sse: Server-Sent Events, both ways.
 *
 * Writing: one event is "data: <payload>\n\n" (payload without newlines, as
 * JSON is). Reading: an incremental parser for the text/event-stream an
 * upstream sends, fed bytes as they arrive in pieces of any size; it calls
 * back once per complete event with its joined data lines (comments, event:
 * and id: fields are skipped; CRLF, CR and LF line ends are accepted). */
#ifndef MSOA_SSE_H
#define MSOA_SSE_H

#include <stddef.h>

#include "base/buf.h"

void sse_write_data(buf *out, const char *payload, size_t len);

typedef void (*sse_event_fn)(const char *data, size_t len, void *ud);

typedef struct sse_parser {
    buf line;       /* partial line */
    buf data;       /* data lines of the current event */
    int have_data;
    int last_cr;    /* previous byte was CR: skip a following LF */
    size_t max_event; /* events larger than this are an error (default 4 MiB) */
} sse_parser;

void sse_parser_init(sse_parser *p);
/* Returns 0, or -1 when an event exceeds max_event (the stream is corrupt). */
int sse_parser_feed(sse_parser *p, const char *data, size_t len, sse_event_fn fn, void *ud);
void sse_parser_free(sse_parser *p);

#endif
