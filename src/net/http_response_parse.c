/* http_response_parse: incremental HTTP/1.x response parser; see
 * http_response_parse.h.
 *
 * Framing follows RFC 9112 section 6.3: no body for 1xx/204/304 and HEAD,
 * then Transfer-Encoding: chunked, then Content-Length, else the body runs
 * to the close of the connection. Lenient where clients usually are (bare
 * LF line ends, missing reason phrase), strict where a mistake would
 * mis-frame the body (conflicting lengths, unknown transfer codings). */
#include "net/http_response_parse.h"

#include <string.h>
#include <strings.h>

#include "net/http_fields.h"

enum { RS_HEAD, RS_LENGTH, RS_CHUNKED, RS_CLOSE, RS_DONE, RS_ERROR };

void http_resp_init(http_resp_parser *p, int head_request) {
    buf head = p->head;
    memset(p, 0, sizeof *p);
    p->head = head;
    buf_clear(&p->head);
    p->head_request = head_request;
    p->state = RS_HEAD;
}

void http_resp_free(http_resp_parser *p) { buf_free(&p->head); }

/* Forgets an interim head (or a blank line) to read the next one. */
static void reset_head(http_resp_parser *p) {
    buf_clear(&p->head);
    p->line_start = p->lead = 0;
    p->status = p->version_minor = 0;
    p->conn_close = p->conn_keep_alive = p->chunked = p->has_length = 0;
    p->content_length = 0;
}

static enum http_resp_event fail(http_resp_parser *p, const char *msg) {
    p->state = RS_ERROR;
    p->error = msg;
    return HTTP_RESP_ERROR;
}

static int is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* "HTTP/1.x NNN[ reason]" at line[0..n). */
static int parse_status_line(http_resp_parser *p, const char *line, size_t n) {
    if (n < 12 || memcmp(line, "HTTP/", 5) != 0 || !is_digit(line[5]) || line[6] != '.' ||
        !is_digit(line[7]) || line[8] != ' ' || !is_digit(line[9]) || !is_digit(line[10]) ||
        !is_digit(line[11]) || (n > 12 && line[12] != ' ')) {
        fail(p, "malformed status line");
        return -1;
    }
    if (line[5] != '1') {
        fail(p, "unsupported HTTP version (only HTTP/1.x is)");
        return -1;
    }
    p->version_minor = line[7] - '0';
    p->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (p->status < 100) {
        fail(p, "malformed status code");
        return -1;
    }
    return 0;
}

static void parse_connection(http_resp_parser *p, const char *v) {
    unsigned bits = http_connection_tokens(v);
    if (bits & HTTP_CONN_CLOSE) p->conn_close = 1;
    if (bits & HTTP_CONN_KEEP_ALIVE) p->conn_keep_alive = 1;
}

static int parse_content_length(http_resp_parser *p, const char *v) {
    uint64_t n;
    const char *bad = http_content_length(v, &n);
    if (bad || (p->has_length && n != p->content_length)) {
        fail(p, bad ? bad : "conflicting Content-Length headers");
        return -1;
    }
    p->has_length = 1;
    p->content_length = n;
    return 0;
}

/* Headers that frame the body or decide whether the connection is kept. */
static int header_semantics(http_resp_parser *p, const char *name, size_t nlen, const char *v) {
    switch (nlen) {
    case 10:
        if (!strncasecmp(name, "connection", 10)) parse_connection(p, v);
        return 0;
    case 14:
        return strncasecmp(name, "content-length", 14) ? 0 : parse_content_length(p, v);
    case 17:
        if (strncasecmp(name, "transfer-encoding", 17)) return 0;
        if (strcasecmp(v, "chunked") != 0 || p->chunked) {
            fail(p, "unsupported Transfer-Encoding (only chunked is)");
            return -1;
        }
        p->chunked = 1;
        return 0;
    default:
        return 0;
    }
}

/* A header line at h[start..end) (line end excluded) is rewritten as
 * "name\0value\0" at h[*w..]: never longer than the line, so in place. */
static int parse_header_line(http_resp_parser *p, size_t start, size_t end, size_t *w) {
    char *h = p->head.data;
    if (h[start] == ' ' || h[start] == '\t') {
        fail(p, "obsolete header line folding");
        return -1;
    }
    size_t colon = start;
    while (colon < end && h[colon] != ':') {
        unsigned char ch = (unsigned char)h[colon];
        if (ch <= ' ' || ch == 0x7f) {
            fail(p, "malformed header field name");
            return -1;
        }
        colon++;
    }
    if (colon == start || colon == end) {
        fail(p, "malformed header line");
        return -1;
    }
    size_t v = colon + 1;
    while (v < end && (h[v] == ' ' || h[v] == '\t')) v++;
    while (end > v && (h[end - 1] == ' ' || h[end - 1] == '\t')) end--;
    if (memchr(h + v, '\0', end - v)) {
        fail(p, "NUL byte in a header value");
        return -1;
    }
    size_t name = *w, nlen = colon - start;
    memmove(h + *w, h + start, nlen);
    *w += nlen;
    h[(*w)++] = '\0';
    size_t value = *w;
    memmove(h + *w, h + v, end - v);
    *w += end - v;
    h[(*w)++] = '\0';
    return header_semantics(p, h + name, nlen, h + value);
}

/* Decides how the body comes once the final head is in. */
static void frame_body(http_resp_parser *p) {
    p->keep_alive = p->version_minor >= 1 ? !p->conn_close : p->conn_keep_alive && !p->conn_close;
    if (p->chunked && p->has_length) p->keep_alive = 0; /* RFC 9112 6.3: a smuggling sign */
    if (p->head_request || p->status == 204 || p->status == 304) {
        p->state = RS_DONE;
    } else if (p->chunked) {
        http_chunked_init(&p->ch, SIZE_MAX, HTTP_RESP_MAX_HEAD);
        p->state = RS_CHUNKED;
    } else if (p->has_length) {
        p->remaining = p->content_length;
        p->state = p->remaining ? RS_LENGTH : RS_DONE;
    } else {
        p->keep_alive = 0;
        p->state = RS_CLOSE;
    }
}

/* The line ending at h[nl] ('\n'), without its line end. */
static size_t line_end(const char *h, size_t start, size_t nl) {
    return nl > start && h[nl - 1] == '\r' ? nl - 1 : nl;
}

/* The blank line ended a head in p->head (from p->lead): parse it in
 * place. Returns HEAD for a final head, MORE for an interim (1xx) one, or
 * ERROR. */
static enum http_resp_event head_complete(http_resp_parser *p) {
    char *h = p->head.data;
    size_t len = p->head.len, w = 0, line = p->lead;
    size_t nl = (size_t)((char *)memchr(h + line, '\n', len - line) - h);
    if (parse_status_line(p, h + line, line_end(h, line, nl) - line) < 0) return HTTP_RESP_ERROR;
    for (line = nl + 1; line < len; line = nl + 1) {
        nl = (size_t)((char *)memchr(h + line, '\n', len - line) - h);
        size_t end = line_end(h, line, nl);
        if (end > line && parse_header_line(p, line, end, &w) < 0) return HTTP_RESP_ERROR;
    }
    if (p->status < 200) {
        if (p->status == 101) return fail(p, "unexpected 101 Switching Protocols");
        reset_head(p);
        return HTTP_RESP_MORE;
    }
    p->head.len = w;
    h[w] = '\0';
    p->have_head = 1;
    frame_body(p);
    return HTTP_RESP_HEAD;
}

/* The byte at offset `at` of the head so far followed by data (at base). */
static char head_byte(const http_resp_parser *p, const char *data, size_t base, size_t at) {
    return at < base ? p->head.data[at] : data[at - base];
}

/* Takes head bytes up to the blank line that ends the head (or all of
 * data) with one copy; lines are only located here, parsed once complete. */
static enum http_resp_event feed_head_once(http_resp_parser *p, const char *data, size_t len, size_t *consumed) {
    size_t base = p->head.len, take = len, i = 0;
    int complete = 0;
    *consumed = 0;
    while (!complete) {
        const char *nl = memchr(data + i, '\n', len - i);
        if (!nl) break;
        i = (size_t)(nl - data) + 1;
        size_t n = base + i - 1 - p->line_start;
        int blank = n == 0 || (n == 1 && head_byte(p, data, base, p->line_start) == '\r');
        if (blank && p->line_start == p->lead) {
            p->lead = base + i; /* a stray blank line before the status line */
        } else if (blank) {
            take = i;
            complete = 1;
        }
        p->line_start = base + i;
    }
    if (base + take > HTTP_RESP_MAX_HEAD) return fail(p, "response head larger than 64 KB");
    buf_append(&p->head, data, take);
    *consumed = take;
    /* Not even the start of a status line: no need to wait for its end. */
    size_t have = p->head.len - p->lead;
    const char *s = p->head.data + p->lead;
    if (have && s[0] != '\r' && memcmp(s, "HTTP/", have < 5 ? have : 5) != 0) return fail(p, "not an HTTP response");
    return complete ? head_complete(p) : HTTP_RESP_MORE;
}

static enum http_resp_event feed_head(http_resp_parser *p, const char *data, size_t len, size_t *consumed) {
    size_t done = 0, used;
    enum http_resp_event ev;
    do { /* again after an interim head, on the bytes that followed it */
        ev = feed_head_once(p, data + done, len - done, &used);
        done += used;
    } while (ev == HTTP_RESP_MORE && done < len);
    *consumed = done;
    return ev;
}

static enum http_resp_event feed_chunked(http_resp_parser *p, char *data, size_t len, size_t *consumed,
                                         char **body, size_t *body_len) {
    size_t made = 0;
    const char *err = NULL;
    int rc = http_chunked_feed(&p->ch, data, len, data, consumed, &made, &err);
    if (rc == HTTP_PARSE_DONE) {
        p->state = RS_DONE;
    } else if (rc != HTTP_PARSE_MORE) {
        p->state = RS_ERROR; /* the bytes before the error are still reported */
        p->error = err;
    }
    if (made) {
        *body = data;
        *body_len = made;
        return HTTP_RESP_BODY;
    }
    if (p->state == RS_ERROR) return HTTP_RESP_ERROR;
    return p->state == RS_DONE ? HTTP_RESP_DONE : HTTP_RESP_MORE;
}

static enum http_resp_event feed_body(http_resp_parser *p, char *data, size_t len, size_t *consumed,
                                      char **body, size_t *body_len) {
    switch (p->state) {
    case RS_CHUNKED:
        return feed_chunked(p, data, len, consumed, body, body_len);
    case RS_LENGTH:
        if (len > p->remaining) len = (size_t)p->remaining;
        p->remaining -= len;
        if (!p->remaining) p->state = RS_DONE;
        break;
    case RS_CLOSE:
        break;
    case RS_DONE:
        return HTTP_RESP_DONE;
    default:
        return HTTP_RESP_ERROR;
    }
    *consumed = len;
    if (!len) return HTTP_RESP_MORE;
    *body = data;
    *body_len = len;
    return HTTP_RESP_BODY;
}

enum http_resp_event http_resp_feed(http_resp_parser *p, char *data, size_t len, size_t *consumed,
                                    char **body, size_t *body_len) {
    enum http_resp_event ev;
    *consumed = 0;
    *body_len = 0;
    if (p->state == RS_HEAD) ev = feed_head(p, data, len, consumed);
    else ev = feed_body(p, data, len, consumed, body, body_len);
    p->bytes_in += *consumed;
    p->body_bytes += *body_len;
    return ev;
}

int http_resp_eof(const http_resp_parser *p) { return p->state == RS_CLOSE || p->state == RS_DONE; }

int http_resp_head_done(const http_resp_parser *p) { return p->have_head; }

const char *http_header_pairs_find(const char *pairs, size_t len, const char *name) {
    const char *p = pairs, *end = pairs + len;
    while (p && p < end) {
        const char *v = p + strlen(p) + 1;
        if (!strcasecmp(p, name)) return v;
        p = v + strlen(v) + 1;
    }
    return NULL;
}

const char *http_resp_header(const http_resp_parser *p, const char *name) {
    if (!http_resp_head_done(p)) return NULL;
    return http_header_pairs_find(p->head.data, p->head.len, name);
}
