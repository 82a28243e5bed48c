/* openai: the OpenAI-compatible HTTP API: POST /v1/chat/completions (JSON or
 * SSE) and GET /v1/models, with errors in OpenAI's shape. */
#ifndef MSOA_OPENAI_H
#define MSOA_OPENAI_H

#include <cjson/cJSON.h>

#include "api/gateway.h"
#include "base/json_tape.h"

void openai_chat_completions(worker *w, http_exchange *x, const http_request *req);
void openai_models(worker *w, http_exchange *x);

/* {"object":"list","data":[{"id","object":"model","created","owned_by"}...]}:
 * "auto" and each model some node serves, once. Shared with JSON-RPC. */
cJSON *openai_model_list(const gateway *gw);

/* Reads a JSON request body into d (a tape: base/json_tape.h), checking
 * UTF-8 first. 0, or -1 with a message in err (static or in errbuf) when it
 * is not valid. */
int api_read_body(const char *body, size_t len, json_doc *d, char *errbuf, size_t cap, const char **err);

/* Answers with an OpenAI-shaped error. */
void api_respond_error(http_exchange *x, int status, const char *message, const char *type, const char *code);

#endif
