/* chat_request: what msoa itself reads in an OpenAI chat request: the
 * fields it relies on (checked, with a message naming the bad one), the
 * texts the router reads, and a token estimate for nodes that report no
 * usage. Everything else in the request goes to the node untouched. */
#ifndef MSOA_CHAT_REQUEST_H
#define MSOA_CHAT_REQUEST_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* NULL when the request is usable, else a message (static, or in msg). */
const char *chat_request_check(const cJSON *body, char *msg, size_t cap);
/* The system prompt (first system/developer message) and the last user
 * message, as the router reads them; NULL/0 when absent. */
void chat_request_router_input(const cJSON *request, const char **sys, size_t *sys_len, const char **user,
                               size_t *user_len);
/* A request that asks for it ("msoa": {"split": true}) and whose last user
 * message is a list of two or more items ("1. ...", "2) ...", "- ...") is
 * answered part by part. Returns the number of parts (>= 2) and sets *parts
 * to malloc'd texts (caller frees each and the array), else 0. */
int chat_request_split(const cJSON *request, char ***parts);
/* ~4 characters a token, what tokenizers average on English text. */
long chat_request_estimate_tokens(const cJSON *request);

#endif
