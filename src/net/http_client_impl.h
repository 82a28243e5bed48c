/* http_client_impl: the two implementations behind http_client.h, for
 * http_client.c (the front end) only.
 *
 * hconn (http_conn.c) is our own HTTP/1.1 client for plain http:// URLs;
 * hcurl (http_client_curl.c) is libcurl, for https:// and for whatever
 * hconn does not handle. Both hand out their own call structs as
 * http_call *, each starting with an http_call_tag so the front end knows
 * which implementation a call belongs to. Both get options the front end
 * has already checked (URL scheme, on_done, body). */
#ifndef MSOA_HTTP_CLIENT_IMPL_H
#define MSOA_HTTP_CLIENT_IMPL_H

#include "net/http_client.h"

typedef struct http_call_tag {
    int via_curl;
} http_call_tag;

typedef struct hconn_client hconn_client;

hconn_client *hconn_client_new(uv_loop_t *loop);
void hconn_client_free(hconn_client *cl);
/* NULL with *unsupported set: a URL hconn leaves to curl (e.g. with user
 * info); NULL without: invalid options. */
http_call *hconn_start(hconn_client *cl, const http_call_opts *opts, int *unsupported);
void hconn_pause(http_call *c, int paused);
void hconn_cancel(http_call *c);
const char *hconn_header(const http_call *c, const char *name);

typedef struct hcurl_client hcurl_client;

hcurl_client *hcurl_client_new(uv_loop_t *loop);
void hcurl_client_free(hcurl_client *cl);
http_call *hcurl_start(hcurl_client *cl, const http_call_opts *opts);
void hcurl_pause(http_call *c, int paused);
void hcurl_cancel(http_call *c);
const char *hcurl_header(const http_call *c, const char *name);

#endif
