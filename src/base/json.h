/* json: the few JSON writing helpers cJSON lacks: a string escaped straight
 * into a buffer, for output built by hand on hot paths. */
#ifndef MSOA_JSON_H
#define MSOA_JSON_H

#include "base/buf.h"

/* Appends s as a JSON string literal (quotes included); NULL as null. */
void json_put_string(buf *out, const char *s);

#endif
