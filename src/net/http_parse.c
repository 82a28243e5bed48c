/* http_parse: incremental HTTP/1.1 request parser; see http_parse.h.
 *
 * Strict where leniency has caused request smuggling (bare LF, obsolete line
 * folding, Content-Length together with Transfer-Encoding, conflicting
 * lengths, whitespace before the colon), tolerant where RFC 9112 asks for it
 * (empty lines before the request line, absolute-form targets). */
#include "net/http_parse.h"

#include <string.h>
#include <strings.h>

#include "net/http_fields.h"

enum { HP_HEAD, HP_BODY, HP_CHUNKED, HP_DONE };

enum {
    CK_SIZE, CK_SIZE_MORE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR, CK_DATA_LF,
    CK_TRAILER_START, CK_TRAILER_LINE, CK_TRAILER_LF, CK_END_LF, CK_DONE
};

/* RFC 9110 tchar. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
};

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* --- chunked decoder --- */

void http_chunked_init(http_chunked *c, size_t max_total, size_t max_trailer) {
    memset(c, 0, sizeof *c);
    c->state = CK_SIZE;
    c->max_total = max_total;
    c->max_trailer = max_trailer;
}

/* One framing byte (anything but chunk data). Returns MORE, DONE or an error. */
static int chunk_frame_byte(http_chunked *c, char ch, const char **err) {
    switch (c->state) {
    case CK_SIZE:
    case CK_SIZE_MORE: {
        int v = hexval(ch);
        if (v >= 0) {
            if (c->remaining >> 60) { *err = "chunk size overflows"; return 400; }
            c->remaining = c->remaining << 4 | (uint64_t)v;
            c->state = CK_SIZE_MORE;
        } else if (c->state == CK_SIZE) {
            *err = "chunk size is not hexadecimal"; return 400;
        } else if (ch == ';' || ch == ' ' || ch == '\t') {
            c->state = CK_EXT;
        } else if (ch == '\r') {
            c->state = CK_SIZE_LF;
        } else {
            *err = "invalid character after chunk size"; return 400;
        }
        if (++c->line_len > HTTP_MAX_CHUNK_LINE) { *err = "chunk size line too long"; return 400; }
        return HTTP_PARSE_MORE;
    }
    case CK_EXT:
        if (ch == '\r') c->state = CK_SIZE_LF;
        else if (ch == '\n' || ch == '\0') { *err = "invalid chunk extension"; return 400; }
        if (++c->line_len > HTTP_MAX_CHUNK_LINE) { *err = "chunk extension too long"; return 400; }
        return HTTP_PARSE_MORE;
    case CK_SIZE_LF:
        if (ch != '\n') { *err = "chunk size line not ended by CRLF"; return 400; }
        c->line_len = 0;
        if (c->remaining == 0) {
            c->state = CK_TRAILER_START;
        } else if (c->remaining > c->max_total - c->total) {
            *err = "request body is larger than the server accepts";
            return 413;
        } else {
            c->state = CK_DATA;
        }
        return HTTP_PARSE_MORE;
    case CK_DATA_CR:
        if (ch != '\r') { *err = "chunk data not followed by CRLF"; return 400; }
        c->state = CK_DATA_LF;
        return HTTP_PARSE_MORE;
    case CK_DATA_LF:
        if (ch != '\n') { *err = "chunk data not followed by CRLF"; return 400; }
        c->state = CK_SIZE;
        return HTTP_PARSE_MORE;
    case CK_TRAILER_START:
        if (ch == '\r') { c->state = CK_END_LF; return HTTP_PARSE_MORE; }
        c->state = CK_TRAILER_LINE;
        __attribute__((fallthrough));  /* the byte starts the trailer line */
    case CK_TRAILER_LINE:
        if (ch == '\r') c->state = CK_TRAILER_LF;
        else if (ch == '\n' || ch == '\0') { *err = "invalid trailer field"; return 400; }
        if (++c->trailer_len > c->max_trailer) { *err = "trailer section too large"; return 431; }
        return HTTP_PARSE_MORE;
    case CK_TRAILER_LF:
        if (ch != '\n') { *err = "trailer field not ended by CRLF"; return 400; }
        c->state = CK_TRAILER_START;
        return HTTP_PARSE_MORE;
    case CK_END_LF:
        if (ch != '\n') { *err = "chunked body not ended by CRLF"; return 400; }
        c->state = CK_DONE;
        return HTTP_PARSE_DONE;
    default:
        *err = "data after the end of the chunked body";
        return 400;
    }
}

int http_chunked_feed(http_chunked *c, const char *src, size_t n, char *dst,
                      size_t *consumed, size_t *produced, const char **err) {
    size_t i = 0, o = 0;
    int rc = HTTP_PARSE_MORE;
    if (c->state == CK_DONE) rc = HTTP_PARSE_DONE;
    while (i < n && rc == HTTP_PARSE_MORE) {
        if (c->state == CK_DATA) {
            size_t take = n - i;
            if (take > c->remaining) take = (size_t)c->remaining;
            memmove(dst + o, src + i, take);
            i += take;
            o += take;
            c->total += take;
            c->remaining -= take;
            if (c->remaining == 0) c->state = CK_DATA_CR;
        } else {
            rc = chunk_frame_byte(c, src[i++], err);
        }
    }
    *consumed = i;
    *produced = o;
    return rc;
}

/* --- request head --- */

void http_parser_init(http_parser *p, size_t max_header, size_t max_body) {
    /* Only the scalar part is reset: hoff[] is filled before it is read. */
    memset(p, 0, offsetof(http_parser, hoff));
    p->n_headers = 0;
    p->req_len = 0;
    p->error = NULL;
    p->max_header = max_header;
    p->max_body = max_body;
    p->state = HP_HEAD;
}

static int fail(http_parser *p, int status, const char *msg) {
    p->error = msg;
    return status;
}

/* "HTTP/d.d" at v[0..n). */
static int parse_version(http_parser *p, const char *v, size_t n) {
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
        v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return fail(p, 400, "malformed HTTP version in request line");
    if (v[5] != '1') return fail(p, 505, "only HTTP/1.0 and HTTP/1.1 are supported");
    p->version_minor = v[7] == '0' ? 0 : 1;
    return 0;
}

/* Target at data[off..off+n), already NUL-terminated after it. Splits path
 * and query; absolute-form ("http://host/path") keeps only the path. */
static int parse_target(http_parser *p, char *data, size_t off, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)data[off + i];
        if (ch <= 0x20 || ch == 0x7f) return fail(p, 400, "invalid character in request target");
    }
    if (n == 1 && data[off] == '*') {
        p->path_off = (uint32_t)off;
        return 0;
    }
    if (data[off] != '/') {
        char *scheme_end = memmem(data + off, n, "://", 3);
        char *slash = scheme_end ? memchr(scheme_end + 3, '/', n - (size_t)(scheme_end + 3 - (data + off))) : NULL;
        if (!slash) return fail(p, 400, "request target must be a path starting with /");
        n -= (size_t)(slash - (data + off));
        off = (size_t)(slash - data);
    }
    p->path_off = (uint32_t)off;
    char *q = memchr(data + off, '?', n);
    if (q) {
        *q = '\0';
        p->query_off = (uint32_t)(q + 1 - data);
    }
    return 0;
}

static int parse_request_line(http_parser *p, char *data, size_t start, size_t end) {
    char *line = data + start;
    size_t n = end - start;
    char *sp1 = memchr(line, ' ', n);
    if (!sp1 || sp1 == line) return fail(p, 400, "malformed request line");
    for (char *c = line; c < sp1; c++)
        if (!tchar[(unsigned char)*c]) return fail(p, 400, "invalid character in method");
    char *target = sp1 + 1;
    char *sp2 = memchr(target, ' ', (size_t)(line + n - target));
    if (!sp2 || sp2 == target) return fail(p, 400, "malformed request line");
    int rc = parse_version(p, sp2 + 1, (size_t)(line + n - sp2 - 1));
    if (rc) return rc;
    *sp1 = '\0';
    *sp2 = '\0';
    p->method_off = (uint32_t)start;
    return parse_target(p, data, (size_t)(target - data), (size_t)(sp2 - target));
}

static void parse_connection(http_parser *p, const char *v) {
    unsigned bits = http_connection_tokens(v);
    if (bits & HTTP_CONN_CLOSE) p->conn_close = 1;
    if (bits & HTTP_CONN_KEEP_ALIVE) p->conn_keep_alive = 1;
    if (bits & HTTP_CONN_UPGRADE) p->upgrade = 1;
}

static int parse_content_length(http_parser *p, const char *v) {
    uint64_t n;
    const char *bad = http_content_length(v, &n);
    if (bad) return fail(p, 400, bad);
    if (p->has_length && n != p->content_length)
        return fail(p, 400, "conflicting Content-Length headers");
    p->has_length = 1;
    p->content_length = n;
    return 0;
}

/* Headers that change how the message is framed or the connection kept. */
static int header_semantics(http_parser *p, const char *name, size_t nlen, const char *v) {
    switch (nlen) {
    case 6:
        if (memcmp(name, "expect", 6) == 0 && strcasecmp(v, "100-continue") == 0) p->expect_continue = 1;
        return 0;
    case 10:
        if (memcmp(name, "connection", 10) == 0) parse_connection(p, v);
        return 0;
    case 14:
        return memcmp(name, "content-length", 14) == 0 ? parse_content_length(p, v) : 0;
    case 17:
        if (memcmp(name, "transfer-encoding", 17) != 0) return 0;
        if (strcasecmp(v, "chunked") != 0) return fail(p, 501, "unsupported Transfer-Encoding (only chunked is)");
        if (p->chunked) return fail(p, 400, "chunked transfer-coding given twice");
        p->chunked = 1;
        return 0;
    default:
        return 0;
    }
}

static int parse_header_line(http_parser *p, char *data, size_t start, size_t end) {
    char *line = data + start;
    if (line[0] == ' ' || line[0] == '\t') return fail(p, 400, "obsolete header line folding");
    if (p->n_headers == HTTP_MAX_HEADERS) return fail(p, 431, "too many header fields");
    size_t n = end - start, i = 0;
    while (i < n && tchar[(unsigned char)line[i]]) {
        if (line[i] >= 'A' && line[i] <= 'Z') line[i] = (char)(line[i] + 32);
        i++;
    }
    if (i == 0 || i == n || line[i] != ':') return fail(p, 400, "malformed header field name");
    size_t nlen = i;
    line[i++] = '\0';
    while (i < n && (line[i] == ' ' || line[i] == '\t')) i++;
    size_t vstart = i;
    for (size_t j = i; j < n; j++) {
        unsigned char ch = (unsigned char)line[j];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return fail(p, 400, "invalid character in header value");
    }
    while (n > vstart && (line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    line[n] = '\0';
    p->hoff[p->n_headers].name = (uint32_t)start;
    p->hoff[p->n_headers].value = (uint32_t)(start + vstart);
    p->n_headers++;
    return header_semantics(p, line, nlen, line + vstart);
}

/* The blank line ended the head: decide keep-alive and how the body comes. */
static int head_complete(http_parser *p) {
    if (p->chunked && p->has_length)
        return fail(p, 400, "both Content-Length and Transfer-Encoding given");
    p->keep_alive = p->version_minor >= 1 ? !p->conn_close : p->conn_keep_alive && !p->conn_close;
    p->body_off = p->in_pos = p->head_len;
    if (p->chunked) {
        http_chunked_init(&p->ch, p->max_body, p->max_header);
        p->state = HP_CHUNKED;
    } else if (p->has_length && p->content_length > 0) {
        if (p->content_length > p->max_body) return fail(p, 413, "request body is larger than the server accepts");
        p->state = HP_BODY;
    } else {
        p->state = HP_DONE;
        p->req_len = p->head_len;
    }
    return 0;
}

/* Walks complete lines from p->scan; each line is parsed as soon as its
 * CRLF is in. */
static int parse_head(http_parser *p, char *data, size_t len) {
    while (p->scan < len) {
        char *nl = memchr(data + p->scan, '\n', len - p->scan);
        if (!nl) {
            p->scan = len;
            break;
        }
        size_t i = (size_t)(nl - data);
        p->scan = i + 1;
        if (i + 1 > p->max_header) return fail(p, 431, "request head is larger than the server accepts");
        if (i == 0 || data[i - 1] != '\r')
            return fail(p, 400, "request head lines must end with CRLF");
        size_t start = p->line_start, end = i - 1;
        p->line_start = i + 1;
        int rc;
        if (end == start) {
            if (p->path_off) {  /* never 0 once the request line is in */
                p->head_len = i + 1;
                return head_complete(p);
            }
            continue;  /* empty line before the request line: ignored */
        }
        if (!p->path_off) rc = parse_request_line(p, data, start, end);
        else rc = parse_header_line(p, data, start, end);
        if (rc) return rc;
    }
    if (len > p->max_header) return fail(p, 431, "request head is larger than the server accepts");
    return 0;
}

int http_parser_head_done(const http_parser *p) { return p->state != HP_HEAD; }

int http_parser_feed(http_parser *p, char *data, size_t len) {
    int rc;
    if (p->state == HP_HEAD) {
        rc = parse_head(p, data, len);
        if (rc) return rc;
    }
    if (p->state == HP_BODY && len - p->head_len >= p->content_length) {
        p->body_len = (size_t)p->content_length;
        p->req_len = p->head_len + p->body_len;
        p->state = HP_DONE;
    }
    if (p->state == HP_CHUNKED && p->in_pos < len) {
        size_t used, made;
        rc = http_chunked_feed(&p->ch, data + p->in_pos, len - p->in_pos,
                               data + p->body_off + p->body_len, &used, &made, &p->error);
        p->in_pos += used;
        p->body_len += made;
        if (rc == HTTP_PARSE_DONE) {
            p->req_len = p->in_pos;
            p->state = HP_DONE;
        } else if (rc) {
            return rc;
        }
    }
    return p->state == HP_DONE ? HTTP_PARSE_DONE : HTTP_PARSE_MORE;
}

void http_parser_request(const http_parser *p, char *data, http_request *req, http_header *headers) {
    for (int i = 0; i < p->n_headers; i++) {
        headers[i].name = data + p->hoff[i].name;
        headers[i].value = data + p->hoff[i].value;
    }
    data[p->body_off + p->body_len] = '\0';
    req->method = data + p->method_off;
    req->path = data + p->path_off;
    req->query = p->query_off ? data + p->query_off : "";
    req->headers = headers;
    req->n_headers = p->n_headers;
    req->body = data + p->body_off;
    req->body_len = p->body_len;
}

const char *http_request_header(const http_request *req, const char *name) {
    for (int i = 0; i < req->n_headers; i++)
        if (strcasecmp(req->headers[i].name, name) == 0) return req->headers[i].value;
    return NULL;
}
