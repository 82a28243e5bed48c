/* http_fields: header values that the request parser (http_parse.c) and the
 * response parser (http_response_parse.c) read the same way. */
#ifndef MSOA_HTTP_FIELDS_H
#define MSOA_HTTP_FIELDS_H

#include <stdint.h>

enum { HTTP_CONN_CLOSE = 1, HTTP_CONN_KEEP_ALIVE = 2, HTTP_CONN_UPGRADE = 4 };

/* The comma-separated tokens of a Connection value, as HTTP_CONN_* bits. */
unsigned http_connection_tokens(const char *v);
/* A Content-Length value: NULL with *out set, or what is wrong with it. */
const char *http_content_length(const char *v, uint64_t *out);

#endif
