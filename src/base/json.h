/* json: JSON writing for hot paths, straight into a buf.
 *
 * cJSON's printer formats every number with sprintf (and checks non-integers
 * with sscanf) and grows its output with realloc; on a proxied request that
 * was the largest single cost. json_write prints the same compact text with
 * integers formatted by hand and strings escaped run by run. */
#ifndef MSOA_JSON_H
#define MSOA_JSON_H

#include "base/buf.h"

#include <cjson/cJSON.h>

/* Appends s as a JSON string literal (quotes included); NULL as null. */
void json_put_string(buf *out, const char *s);
/* Appends v in decimal. */
void json_put_long(buf *out, long v);
/* Appends d as a JSON number with at most `decimals` (<= 15) digits after
 * the point, trailing zeros dropped: exact to that precision and far cheaper
 * than printf. Beyond 1e15 in magnitude it falls back to %.17g; non-finite
 * values are written as null. */
void json_put_fixed(buf *out, double d, int decimals);
/* Appends d as printf's "%.*f" writes it (decimals <= 15): the same digits
 * but in the last place, where this rounds the scaled value once. */
void json_put_decimal(buf *out, double d, int decimals);
/* Appends item as compact JSON, as cJSON_PrintUnformatted would (numbers that
 * are whole and below 2^53 as integers, others with 17 significant digits,
 * non-finite ones as null). */
void json_write(buf *out, const cJSON *item);

#endif
