/* config: see config.h.
 *
 * Every scalar setting is one row of `settings`: its file key, environment
 * variable and flag, what kind of value it takes and where it lives in
 * msoa_config. All three sources turn their value into text and go through
 * the same parser, so a value means the same thing and is refused with the
 * same words wherever it comes from; only the prefix of the message (file
 * key, variable or flag) differs. Nodes are the one list: see the header. */
#include "base/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/xalloc.h"

#define MAX_CONFIG_FILE (16u << 20)
#define MAX_SIZE_SETTING (1ull << 32)
#define MAX_MS_SETTING INT_MAX
#define MAX_NAME 64

typedef enum { K_LISTEN, K_INT, K_MS, K_SIZE, K_PRICE, K_STR } kind;

typedef struct setting {
    const char *key;  /* in the file; "baseline.x" is x inside "baseline" (so "router.x") */
    const char *env;
    const char *flag; /* without the leading "--" */
    kind kind;
    size_t off;
    long long min, max; /* K_INT only */
} setting;

#define AT(field) offsetof(msoa_config, field)

static const setting settings[] = {
    {"listen", "MSOA_LISTEN", "listen", K_LISTEN, 0, 0, 0},
    {"workers", "MSOA_WORKERS", "workers", K_INT, AT(workers), 1, 1024},
    {"max_body", "MSOA_MAX_BODY", "max-body", K_SIZE, AT(max_body), 0, 0},
    {"max_header", "MSOA_MAX_HEADER", "max-header", K_SIZE, AT(max_header), 0, 0},
    {"max_connections", "MSOA_MAX_CONNECTIONS", "max-connections", K_INT, AT(max_connections), 1, 10000000},
    {"idle_timeout_ms", "MSOA_IDLE_TIMEOUT_MS", "idle-timeout-ms", K_MS, AT(idle_timeout_ms), 0, 0},
    {"request_timeout_ms", "MSOA_REQUEST_TIMEOUT_MS", "request-timeout-ms", K_MS, AT(request_timeout_ms), 0, 0},
    {"upstream_connect_timeout_ms", "MSOA_UPSTREAM_CONNECT_TIMEOUT_MS", "upstream-connect-timeout-ms", K_MS,
     AT(upstream_connect_timeout_ms), 0, 0},
    {"upstream_timeout_ms", "MSOA_UPSTREAM_TIMEOUT_MS", "upstream-timeout-ms", K_MS, AT(upstream_timeout_ms), 0, 0},
    {"upstream_stall_ms", "MSOA_UPSTREAM_STALL_MS", "upstream-stall-ms", K_MS, AT(upstream_stall_ms), 0, 0},
    {"upstream_wait_ms", "MSOA_UPSTREAM_WAIT_MS", "upstream-wait-ms", K_MS, AT(upstream_wait_ms), 0, 0},
    {"baseline.price_in", "MSOA_BASELINE_PRICE_IN", "baseline-price-in", K_PRICE, AT(baseline_price_in), 0, 0},
    {"baseline.price_out", "MSOA_BASELINE_PRICE_OUT", "baseline-price-out", K_PRICE, AT(baseline_price_out), 0, 0},
    {"baseline.model", "MSOA_BASELINE_MODEL", "baseline-model", K_STR, AT(baseline_model), 0, 0},
    {"model_dir", "MSOA_MODEL_DIR", "model-dir", K_STR, AT(model_dir), 0, 0},
    {"router.model", "MSOA_ROUTER_MODEL", "router-model", K_STR, AT(router_model), 0, 0},
    {"router.min_confidence", "MSOA_ROUTER_MIN_CONFIDENCE", "router-min-confidence", K_PRICE,
     AT(router_min_confidence), 0, 0},
    {"router.guard_action", "MSOA_GUARD_ACTION", "guard-action", K_STR, AT(guard_action), 0, 0},
    {"hedging", "MSOA_HEDGING", "hedging", K_INT, AT(hedging), 0, 1},
    {"max_attempts", "MSOA_MAX_ATTEMPTS", "max-attempts", K_INT, AT(max_attempts), 1, 8},
    {"node_max_connections", "MSOA_NODE_MAX_CONNECTIONS", "node-max-connections", K_INT, AT(node_max_connections), 0,
     MAX_NODE_CONNS},
    {"circuit_breaker", "MSOA_CIRCUIT_BREAKER", "circuit-breaker", K_INT, AT(circuit_breaker), 0, 1},
    {"probe_interval_ms", "MSOA_PROBE_INTERVAL_MS", "probe-interval-ms", K_MS, AT(probe_interval_ms), 0, 0},
    {"cascades", "MSOA_CASCADES", "cascades", K_STR, AT(cascades), 0, 0},
    {"cascade_logprob_floor", "MSOA_CASCADE_LOGPROB_FLOOR", "cascade-logprob-floor", K_PRICE,
     AT(cascade_logprob_floor), 0, 0},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

static int fail(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **err, const char *fmt, ...) {
    buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    *err = buf_detach(&b);
    return -1;
}

/* Puts "prefix: " in front of *err; returns -1 for the caller to pass on. */
static int prefix_err(char **err, const char *prefix) {
    char *inner = *err;
    fail(err, "%s: %s", prefix, inner);
    free(inner);
    return -1;
}

/* ------------------------------------------------------------------ */
/* Values                                                             */

/* Digits only (no sign, space or suffix), as an unsigned number. */
static int parse_digits(const char *s, size_t len, unsigned long long *out) {
    if (len == 0 || len > 19) return -1;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_price(const char *s, double *out) {
    if (!*s || strspn(s, "0123456789.eE+-") != strlen(s)) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v) || v < 0) return -1;
    *out = v;
    return 0;
}

/* "1048576", "1024k", "1m", "1g" */
static int parse_size(const char *s, unsigned long long *out) {
    size_t len = strlen(s);
    unsigned long long mult = 1;
    if (len > 0) {
        switch (s[len - 1]) {
        case 'k': case 'K': mult = 1ull << 10; len--; break;
        case 'm': case 'M': mult = 1ull << 20; len--; break;
        case 'g': case 'G': mult = 1ull << 30; len--; break;
        default: break;
        }
    }
    unsigned long long v;
    if (parse_digits(s, len, &v) < 0 || v == 0 || v > MAX_SIZE_SETTING / mult) return -1;
    *out = v * mult;
    return 0;
}

static int parse_port(const char *s, size_t len, int min, int *out) {
    unsigned long long v;
    if (parse_digits(s, len, &v) < 0 || v < (unsigned long long)min || v > 65535) return -1;
    *out = (int)v;
    return 0;
}

/* Bytes that must never reach a header, a log line or a URL. */
static int has_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

/* "host:port", "[v6::addr]:port"; port 0 asks for any free port. */
static int parse_listen(const char *s, char **host, int *port) {
    const char *colon, *h = s, *h_end;
    if (*s == '[') {
        h = s + 1;
        h_end = strchr(h, ']');
        if (!h_end || h_end[1] != ':') return -1;
        colon = h_end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s))) return -1;
        h_end = colon;
    }
    if (h_end == h || has_control(s) || memchr(h, ' ', (size_t)(h_end - h))) return -1;
    if (parse_port(colon + 1, strlen(colon + 1), 0, port) < 0) return -1;
    free(*host);
    *host = xstrndup(h, (size_t)(h_end - h));
    return 0;
}

/* Applies one setting given as text. The message names the value only;
 * callers put the source in front. */
static int set_value(msoa_config *c, const setting *st, const char *v, char **err) {
    char *field = (char *)c + st->off;
    unsigned long long n;
    double d;
    switch (st->kind) {
    case K_LISTEN:
        if (parse_listen(v, &c->listen_host, &c->listen_port) < 0)
            return fail(err, "must be HOST:PORT with a port from 0 to 65535, got '%.200s'", v);
        return 0;
    case K_INT:
        if (parse_digits(v, strlen(v), &n) < 0 || (long long)n < st->min || (long long)n > st->max)
            return fail(err, "must be a whole number from %lld to %lld, got '%.200s'", st->min, st->max, v);
        *(int *)field = (int)n;
        return 0;
    case K_MS:
        if (parse_digits(v, strlen(v), &n) < 0 || n < 1 || n > MAX_MS_SETTING)
            return fail(err, "must be a whole number of milliseconds from 1 to %d, got '%.200s'", MAX_MS_SETTING, v);
        *(unsigned *)field = (unsigned)n;
        return 0;
    case K_SIZE:
        if (parse_size(v, &n) < 0)
            return fail(err, "must be a size in bytes from 1 to 4g (suffix k, m or g allowed), got '%.200s'", v);
        *(size_t *)field = (size_t)n;
        return 0;
    case K_PRICE:
        if (parse_price(v, &d) < 0) return fail(err, "must be a number >= 0, got '%.200s'", v);
        *(double *)field = d;
        return 0;
    case K_STR:
        if (!*v || has_control(v)) return fail(err, "must be a non-empty string without control characters, got '%.200s'", v);
        free(*(char **)field);
        *(char **)field = xstrdup(v);
        return 0;
    }
    return fail(err, "unknown setting kind");
}

/* ------------------------------------------------------------------ */
/* Nodes                                                              */

static const char *const domains[] = {"code", "math", "reasoning", "language", "general"};

static int valid_name(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n <= MAX_NAME &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

/* http(s)://host[:port][/path] with a port from 1 to 65535, or a .gguf path. */
static int valid_url(const char *s) {
    if (has_control(s) || strchr(s, ' ')) return 0;
    const char *rest;
    if (!strncasecmp(s, "http://", 7)) rest = s + 7;
    else if (!strncasecmp(s, "https://", 8)) rest = s + 8;
    else return ends_with(s, ".gguf");
    size_t auth = strcspn(rest, "/?#");
    const char *port = NULL;
    if (rest[0] == '[') {
        const char *close = memchr(rest, ']', auth);
        if (!close || close == rest + 1) return 0;
        if (close + 1 < rest + auth) {
            if (close[1] != ':') return 0;
            port = close + 2;
        }
    } else {
        port = memchr(rest, ':', auth);
        if (port == rest) return 0;
        if (port) port++;
    }
    if (auth == 0) return 0;
    int p;
    return !port || parse_port(port, (size_t)(rest + auth - port), 1, &p) == 0;
}

static void node_free(node_spec *n) {
    free(n->name);
    free(n->url);
    free(n->model);
    free(n->domain);
    free(n->api_key);
    memset(n, 0, sizeof *n);
}

static int set_text(char **field, const char *key, const char *v, char **err) {
    if (*field) return fail(err, "%s given twice", key);
    if (!*v || has_control(v)) return fail(err, "%s must be non-empty, without control characters, got '%.200s'", key, v);
    *field = xstrdup(v);
    return 0;
}

/* Attributes that cannot be told "given twice" by a non-NULL field. */
enum { SEEN_PRICE_IN = 1, SEEN_PRICE_OUT = 2, SEEN_DOMAIN = 4, SEEN_MAX_CONNS = 8 };

/* One attribute of a node, from a spec (key=value) or a file object. */
static int node_set(node_spec *n, int *seen, const char *key, const char *v, char **err) {
    if (!strcmp(key, "name")) {
        if (!valid_name(v)) return fail(err, "name must be 1 to %d of A-Z a-z 0-9 . _ -, got '%.200s'", MAX_NAME, v);
        return set_text(&n->name, key, v, err);
    }
    if (!strcmp(key, "url")) {
        if (!valid_url(v))
            return fail(err, "url must be http://HOST[:PORT][/PATH] or https://... (port 1 to 65535) "
                             "or a path ending in .gguf, got '%.200s'", v);
        return set_text(&n->url, key, v, err);
    }
    if (!strcmp(key, "model")) return set_text(&n->model, key, v, err);
    if (!strcmp(key, "api_key")) return set_text(&n->api_key, key, v, err);
    if (!strcmp(key, "domain")) {
        size_t i = 0;
        while (i < sizeof domains / sizeof domains[0] && strcmp(v, domains[i])) i++;
        if (i == sizeof domains / sizeof domains[0])
            return fail(err, "domain must be one of code, math, reasoning, language, general, got '%.200s'", v);
        if (*seen & SEEN_DOMAIN) return fail(err, "domain given twice");
        *seen |= SEEN_DOMAIN;
        n->domain = strcmp(v, "general") ? xstrdup(v) : NULL; /* NULL means general */
        return 0;
    }
    if (!strcmp(key, "max_conns")) {
        char *end;
        long v_conns = strtol(v, &end, 10);
        if (!*v || *end || v_conns < 0 || v_conns > MAX_NODE_CONNS)
            return fail(err, "max_conns must be a whole number from 0 (no cap) to %d, got '%.200s'", MAX_NODE_CONNS, v);
        if (*seen & SEEN_MAX_CONNS) return fail(err, "max_conns given twice");
        *seen |= SEEN_MAX_CONNS;
        n->max_conns = v_conns ? (int)v_conns : -1;
        return 0;
    }
    int bit = !strcmp(key, "price_in") ? SEEN_PRICE_IN : !strcmp(key, "price_out") ? SEEN_PRICE_OUT : 0;
    if (!bit)
        return fail(err, "unknown node attribute '%.100s' (name, url, model, domain, api_key, price_in, price_out, "
                         "max_conns)", key);
    if (*seen & bit) return fail(err, "%s given twice", key);
    *seen |= bit;
    if (parse_price(v, bit == SEEN_PRICE_IN ? &n->price_in : &n->price_out) < 0)
        return fail(err, "%s must be a number >= 0, got '%.200s'", key, v);
    return 0;
}

static int node_complete(node_spec *n, char **err) {
    if (!n->name) return fail(err, "a node needs a name");
    if (!n->url) return fail(err, "node '%s' needs a url", n->name);
    return 0;
}

int config_parse_node(const char *text, node_spec *out, char **err) {
    memset(out, 0, sizeof *out);
    *err = NULL;
    int seen = 0, rc = 0;
    char *copy = xstrdup(text);
    char *eq = strchr(copy, '=');
    if (!eq) {
        rc = fail(err, "a node is NAME=URL[,model=M][,domain=D][,price_in=X][,price_out=Y][,api_key=K][,max_conns=N], got '%.200s'", text);
        goto done;
    }
    *eq = '\0';
    char *save = NULL, *url = strtok_r(eq + 1, ",", &save);
    if ((rc = node_set(out, &seen, "name", copy, err)) < 0) goto done;
    if ((rc = node_set(out, &seen, "url", url ? url : "", err)) < 0) goto done;
    for (char *opt; (opt = strtok_r(NULL, ",", &save));) {
        char *v = strchr(opt, '=');
        if (!v) {
            rc = fail(err, "node option '%.100s' is not KEY=VALUE", opt);
            goto done;
        }
        *v++ = '\0';
        if ((rc = node_set(out, &seen, opt, v, err)) < 0) goto done;
    }
done:
    free(copy);
    if (rc < 0) node_free(out);
    return rc;
}

typedef struct node_list {
    node_spec *v;
    int n;
} node_list;

/* Takes *n (and frees it if it is refused). */
static int list_take(node_list *l, node_spec *n, char **err) {
    for (int i = 0; i < l->n; i++) {
        if (!strcmp(l->v[i].name, n->name)) {
            fail(err, "node name '%s' is used twice", n->name);
            node_free(n);
            return -1;
        }
    }
    l->v = xrealloc(l->v, (size_t)(l->n + 1) * sizeof *l->v);
    l->v[l->n++] = *n;
    return 0;
}

static void list_free(node_list *l) {
    for (int i = 0; i < l->n; i++) node_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int list_add_spec(node_list *l, const char *text, char **err) {
    node_spec n;
    if (config_parse_node(text, &n, err) < 0) return -1;
    return list_take(l, &n, err);
}

/* The nodes of the next source replace the ones before (see config.h). */
static void replace_nodes(msoa_config *c, node_list *l) {
    node_list old = {c->nodes, c->n_nodes};
    list_free(&old);
    c->nodes = l->v;
    c->n_nodes = l->n;
}

int config_add_node(msoa_config *c, const char *text, char **err) {
    node_list l = {c->nodes, c->n_nodes};
    *err = NULL;
    int rc = list_add_spec(&l, text, err);
    c->nodes = l.v;
    c->n_nodes = l.n;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Defaults                                                           */

void config_defaults(msoa_config *c) {
    memset(c, 0, sizeof *c);
    c->listen_host = xstrdup("127.0.0.1");
    c->listen_port = 8080;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = cpus < 1 ? 1 : cpus > 1024 ? 1024 : (int)cpus;
    c->max_body = 1u << 20;
    c->max_header = 16u << 10;
    c->max_connections = 10000;
    c->idle_timeout_ms = 60000;
    c->request_timeout_ms = 30000;
    c->upstream_connect_timeout_ms = 5000;
    c->upstream_timeout_ms = 600000;
    c->upstream_stall_ms = 60000;
    c->upstream_wait_ms = 10000;
    c->baseline_price_in = 3;
    c->baseline_price_out = 10;
    c->baseline_model = xstrdup("gpt-4.1");
    c->router_min_confidence = 0.5;
    c->hedging = 1;
    c->max_attempts = 3;
    c->node_max_connections = 256;
    c->circuit_breaker = 1;
    c->probe_interval_ms = 2000;
    c->guard_action = xstrdup("refuse");
}

void config_free(msoa_config *c) {
    free(c->listen_host);
    free(c->baseline_model);
    free(c->model_dir);
    free(c->router_model);
    free(c->guard_action);
    free(c->cascades);
    node_list l = {c->nodes, c->n_nodes};
    list_free(&l);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ */
/* File                                                               */

static const setting *setting_by_key(const char *key) {
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (!strcmp(settings[i].key, key)) return &settings[i];
    return NULL;
}

/* A JSON scalar as the text the parsers take: strings as they are, numbers
 * written out (integers without exponent). NULL for other types. */
static const char *json_text(const cJSON *j, char *tmp, size_t n) {
    if (cJSON_IsString(j)) return j->valuestring;
    if (!cJSON_IsNumber(j)) return NULL;
    double v = j->valuedouble;
    if (v == floor(v) && fabs(v) < 1e15) snprintf(tmp, n, "%.0f", v);
    else snprintf(tmp, n, "%.17g", v);
    return tmp;
}

static int file_setting(msoa_config *c, const char *path, const char *key, const cJSON *val, char **err) {
    const setting *st = setting_by_key(key);
    if (!st) return fail(err, "%s: unknown key '%.100s'", path, key);
    char tmp[64];
    const char *text = st->kind == K_STR ? cJSON_GetStringValue(val) : json_text(val, tmp, sizeof tmp);
    if (!text) return fail(err, "%s: %s must be a %s", path, key, st->kind == K_STR ? "string" : "number or a string");
    if (set_value(c, st, text, err) < 0) {
        char where[300];
        snprintf(where, sizeof where, "%s: %s", path, key);
        return prefix_err(err, where);
    }
    return 0;
}

/* "baseline": {...} and "router": {...}: their members are the settings
 * "baseline.x" and "router.x". */
static int file_section(msoa_config *c, const char *path, const cJSON *obj, char **err) {
    if (!cJSON_IsObject(obj)) return fail(err, "%s: %s must be an object", path, obj->string);
    const cJSON *m;
    cJSON_ArrayForEach(m, obj) {
        char key[128];
        snprintf(key, sizeof key, "%s.%.100s", obj->string, m->string);
        if (file_setting(c, path, key, m, err) < 0) return -1;
    }
    return 0;
}

static int is_text_attr(const char *key) {
    static const char *const text_attrs[] = {"name", "url", "model", "domain", "api_key"};
    for (size_t i = 0; i < sizeof text_attrs / sizeof text_attrs[0]; i++)
        if (!strcmp(key, text_attrs[i])) return 1;
    return 0;
}

static int file_node(node_list *l, const cJSON *obj, char **err) {
    if (cJSON_IsString(obj)) return list_add_spec(l, obj->valuestring, err);
    if (!cJSON_IsObject(obj)) return fail(err, "must be an object or a NAME=URL,... string");
    node_spec n = {0};
    int seen = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, obj) {
        char tmp[64];
        const char *text = json_text(m, tmp, sizeof tmp);
        int is_price = !strcmp(m->string, "price_in") || !strcmp(m->string, "price_out");
        int is_text = is_text_attr(m->string);
        if ((is_price && !text) || (is_text && !cJSON_IsString(m))) {
            node_free(&n);
            return fail(err, "%.100s must be a %s", m->string, is_price ? "number" : "string");
        }
        if (node_set(&n, &seen, m->string, text ? text : "", err) < 0) {
            node_free(&n);
            return -1;
        }
    }
    if (node_complete(&n, err) < 0) {
        node_free(&n);
        return -1;
    }
    return list_take(l, &n, err);
}

static int file_nodes(msoa_config *c, const char *path, const cJSON *arr, char **err) {
    if (!cJSON_IsArray(arr)) return fail(err, "%s: nodes must be an array", path);
    node_list l = {0};
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, arr) {
        if (file_node(&l, m, err) < 0) {
            char where[300];
            snprintf(where, sizeof where, "%s: nodes[%d]", path, i);
            list_free(&l);
            return prefix_err(err, where);
        }
        i++;
    }
    replace_nodes(c, &l);
    return 0;
}

static char *read_file(const char *path, size_t *len, char **err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fail(err, "cannot open config file %s: %s", path, strerror(errno));
        return NULL;
    }
    buf b = BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && b.len <= MAX_CONFIG_FILE) buf_append(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    if (bad || b.len > MAX_CONFIG_FILE) {
        if (bad) fail(err, "cannot read config file %s", path);
        else fail(err, "config file %s is over %u bytes", path, MAX_CONFIG_FILE);
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data ? buf_detach(&b) : xstrdup("");
}

static int line_of(const char *text, const char *at) {
    int line = 1;
    for (const char *p = text; p < at; p++) line += *p == '\n';
    return line;
}

int config_load_file(msoa_config *c, const char *path, char **err) {
    *err = NULL;
    size_t len = 0;
    char *text = read_file(path, &len, err);
    if (!text) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (root) end += strspn(end, " \t\r\n");
    int rc = 0;
    if (!root || end != text + len) {
        const char *at = root ? end : cJSON_GetErrorPtr();
        rc = fail(err, "%s: invalid JSON near line %d", path, at ? line_of(text, at) : 1);
    } else if (!cJSON_IsObject(root)) {
        rc = fail(err, "%s: must hold a JSON object", path);
    } else {
        const cJSON *m;
        cJSON_ArrayForEach(m, root) {
            if (!strcmp(m->string, "nodes")) rc = file_nodes(c, path, m, err);
            else if (!strcmp(m->string, "baseline") || !strcmp(m->string, "router")) rc = file_section(c, path, m, err);
            else if (strchr(m->string, '.')) rc = fail(err, "%s: unknown key '%.100s'", path, m->string);
            else rc = file_setting(c, path, m->string, m, err);
            if (rc < 0) break;
        }
    }
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Environment                                                        */

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL; /* set but empty counts as unset */
}

static int env_nodes(msoa_config *c, const char *v, char **err) {
    node_list l = {0};
    char *copy = xstrdup(v), *save = NULL;
    int rc = 0;
    for (char *spec = strtok_r(copy, ";", &save); spec && rc == 0; spec = strtok_r(NULL, ";", &save)) {
        spec += strspn(spec, " \t\n");
        size_t n = strlen(spec);
        while (n > 0 && strchr(" \t\n", spec[n - 1])) spec[--n] = '\0';
        if (n) rc = list_add_spec(&l, spec, err);
    }
    free(copy);
    if (rc < 0) {
        list_free(&l);
        return prefix_err(err, "MSOA_NODES");
    }
    replace_nodes(c, &l);
    return 0;
}

int config_apply_env(msoa_config *c, char **err) {
    *err = NULL;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = env(settings[i].env);
        if (v && set_value(c, &settings[i], v, err) < 0) return prefix_err(err, settings[i].env);
    }
    const char *nodes = env("MSOA_NODES");
    return nodes ? env_nodes(c, nodes, err) : 0;
}

/* ------------------------------------------------------------------ */
/* Flags                                                              */

static const setting *setting_by_flag(const char *flag) {
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (!strcmp(settings[i].flag, flag)) return &settings[i];
    return NULL;
}

/* Reads the flag at argv[*i] ("--name value" or "--name=value"), advancing
 * *i past it. name is written into `name` (without "--"). */
static int next_flag(int argc, char **argv, int *i, char *name, size_t name_size, const char **value, char **err) {
    const char *a = argv[*i];
    if (strncmp(a, "--", 2) != 0 || !a[2]) return fail(err, "unexpected argument '%.200s'", a);
    const char *eq = strchr(a, '=');
    size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    if (n >= name_size) return fail(err, "unknown flag '%.100s'", a);
    memcpy(name, a + 2, n);
    name[n] = '\0';
    if (!setting_by_flag(name) && strcmp(name, "node") && strcmp(name, "config"))
        return fail(err, "unknown flag '--%s'", name);
    if (eq) {
        *value = eq + 1;
    } else if (*i + 1 < argc) {
        *value = argv[++*i];
    } else {
        return fail(err, "--%s needs a value", name);
    }
    ++*i;
    if (!**value) return fail(err, "--%s needs a value", name);
    return 0;
}

int config_apply_args(msoa_config *c, int argc, char **argv, char **err) {
    *err = NULL;
    node_list nodes = {0};
    int rc = 0;
    for (int i = 0; i < argc && rc == 0;) {
        char name[64], flag[80];
        const char *v;
        if ((rc = next_flag(argc, argv, &i, name, sizeof name, &v, err)) < 0) break;
        if (!strcmp(name, "config")) continue; /* read by config_load, before the environment */
        if (!strcmp(name, "node")) rc = list_add_spec(&nodes, v, err);
        else rc = set_value(c, setting_by_flag(name), v, err);
        snprintf(flag, sizeof flag, "--%s", name);
        if (rc < 0) prefix_err(err, flag);
    }
    if (rc < 0) list_free(&nodes);
    else if (nodes.n) replace_nodes(c, &nodes);
    return rc;
}

/* The last --config of the flags, else MSOA_CONFIG, else NULL. A bad flag
 * stops the search; config_apply_args reports it. */
static const char *config_path(int argc, char **argv) {
    const char *path = env("MSOA_CONFIG");
    char *err = NULL;
    for (int i = 0; i < argc;) {
        char name[64];
        const char *v;
        if (next_flag(argc, argv, &i, name, sizeof name, &v, &err) < 0) break;
        if (!strcmp(name, "config")) path = v;
    }
    free(err);
    return path;
}

int config_load(msoa_config *c, int argc, char **argv, char **err) {
    config_defaults(c);
    *err = NULL;
    const char *path = config_path(argc, argv);
    if (path && config_load_file(c, path, err) < 0) return -1;
    if (config_apply_env(c, err) < 0) return -1;
    return config_apply_args(c, argc, argv, err);
}
