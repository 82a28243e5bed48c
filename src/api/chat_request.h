/* chat_request: what msoa itself reads in an OpenAI chat request: the
 * fields it relies on (checked, with a message naming the bad one), the
 * texts the router reads, and a token estimate for nodes that report no
 * usage. Everything else in the request goes to the node untouched.
 *
 * The request is read from a JSON tape (base/json_tape.h), not a cJSON
 * tree: on a proxied request, building and freeing the client's request
 * as a tree, to read a few fields and print it again for the node, cost
 * more than the rest of the gateway's user time on it. */
#ifndef MSOA_CHAT_REQUEST_H
#define MSOA_CHAT_REQUEST_H

#include <stddef.h>

#include "base/buf.h"
#include "base/json_tape.h"

/* NULL when the request (the document's top value) is usable, else a
 * message (static, or in msg). */
const char *chat_request_check(const json_doc *d, char *msg, size_t cap);
/* The system prompt (first system/developer message) and the last user
 * message, as the router reads them, decoded into sys and user (appended);
 * *has_sys / *has_user say whether there was one. */
void chat_request_router_input(const json_doc *d, buf *sys, int *has_sys, buf *user, int *has_user);
/* A request that asks for it ("msoa": {"split": true}) and whose last user
 * message is a list of two or more items ("1. ...", "2) ...", "- ...") is
 * answered part by part. Returns the number of parts (>= 2) and sets *parts
 * to malloc'd texts (caller frees each and the array), else 0. */
int chat_request_split(const json_doc *d, char ***parts);
/* ~4 characters a token, what tokenizers average on English text. */
long chat_request_estimate_tokens(const json_doc *d);
/* Whether the request's `key` is true (stream, ...); obj is an object token. */
int chat_request_true(const json_doc *d, int obj, const char *key);

#endif
