/* test_api_metrics: the Prometheus exposition, line by line (an empty
 * registry exactly; samples, escaping, cumulative buckets), every line
 * against the 0.0.4 grammar, exact sums from two recording threads, and
 * the "_other" series once a family is full. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/metrics.h"
#include "testlib.h"

static char *render(void) {
    buf b = BUF_INIT;
    metrics_render(&b, 3, 1);
    return buf_detach(&b);
}

/* The value on the line "<key> <value>", or NAN if there is no such line. */
static double value_of(const char *text, const char *key) {
    size_t n = strlen(key);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        if (!strncmp(line, key, n) && line[n] == ' ') return strtod(line + n + 1, NULL);
        if (!end) break;
        line = end + 1;
    }
    return NAN;
}

static int count_prefix(const char *text, const char *prefix) {
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        n += !strncmp(line, prefix, len);
    return n;
}

/* ---- the text format's grammar, for every line we emit ---- */

static const char *metric_name(const char *p) {
    if (!(*p == '_' || *p == ':' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) return NULL;
    while (*p == '_' || *p == ':' || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))
        p++;
    return p;
}

static const char *labels(const char *p) {
    if (*p != '{') return p;
    p++;
    while (*p != '}') {
        p = metric_name(p);
        if (!p || *p++ != '=' || *p++ != '"') return NULL;
        while (*p != '"') {
            if (!*p || *p == '\n') return NULL;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n') return NULL;
                p++;
            }
            p++;
        }
        p++;
        if (*p == ',') p++;
        else if (*p != '}') return NULL;
    }
    return p + 1;
}

static int valid_value(const char *v, size_t len) {
    if ((len == 4 && (!strncmp(v, "+Inf", 4) || !strncmp(v, "-Inf", 4))) || (len == 3 && !strncmp(v, "NaN", 3)))
        return 1;
    char *end;
    strtod(v, &end);
    return len > 0 && end == v + len;
}

static int valid_line(const char *line, size_t len) {
    char l[1024];
    if (len >= sizeof l) return 0;
    memcpy(l, line, len);
    l[len] = '\0';
    if (!strncmp(l, "# HELP ", 7)) return metric_name(l + 7) && *metric_name(l + 7) == ' ';
    if (!strncmp(l, "# TYPE ", 7)) {
        const char *p = metric_name(l + 7);
        return p && (!strcmp(p, " counter") || !strcmp(p, " gauge") || !strcmp(p, " histogram"));
    }
    const char *p = metric_name(l);
    if (!p || !(p = labels(p)) || *p != ' ') return 0;
    return valid_value(p + 1, strlen(p + 1));
}

/* Every line valid, the text ends in a newline, each TYPE right after its HELP. */
static void check_format(const char *text) {
    CHECK(*text && text[strlen(text) - 1] == '\n');
    const char *prev = "";
    size_t prev_len = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (!valid_line(line, len)) {
            char m[300];
            snprintf(m, sizeof m, "invalid exposition line: %.*s", (int)(len < 200 ? len : 200), line);
            test_fail(__FILE__, __LINE__, m);
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            const char *name = line + 7;
            size_t n = (size_t)(strchr(name, ' ') - name);
            CHECK(prev_len > 7 + n && !strncmp(prev, "# HELP ", 7) && !strncmp(prev + 7, name, n));
        }
        prev = line;
        prev_len = len;
        if (!end) break;
        line = end + 1;
    }
}

static void expect_lines(const char *text, const char *const *want, size_t n) {
    const char *line = text;
    for (size_t i = 0; i < n; i++) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (strlen(want[i]) != len || strncmp(line, want[i], len) != 0) {
            char m[400];
            snprintf(m, sizeof m, "line %zu: got '%.*s', want '%s'", i + 1, (int)(len < 150 ? len : 150), line, want[i]);
            test_fail(__FILE__, __LINE__, m);
        }
        if (!end) {
            CHECK_EQ_INT(i + 1, n);
            return;
        }
        line = end + 1;
    }
    CHECK(*line == '\0');
}

static void empty_registry(void) {
    metrics_init();
    char *t = render();
    static const char *const want[] = {
        "# HELP msoa_time_to_first_chunk_seconds Time from request to the first streamed chunk.",
        "# TYPE msoa_time_to_first_chunk_seconds histogram",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.0005\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.001\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.0025\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.005\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.01\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.025\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.05\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.1\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.25\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"0.5\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"1\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"2.5\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"5\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"10\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"30\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"60\"} 0",
        "msoa_time_to_first_chunk_seconds_bucket{le=\"+Inf\"} 0",
        "msoa_time_to_first_chunk_seconds_sum 0",
        "msoa_time_to_first_chunk_seconds_count 0",
        "# HELP msoa_baseline_cost_usd_total USD the same requests would have cost at the baseline model.",
        "# TYPE msoa_baseline_cost_usd_total counter",
        "msoa_baseline_cost_usd_total 0",
        "# HELP msoa_saved_usd_total USD saved against the baseline model.",
        "# TYPE msoa_saved_usd_total counter",
        "msoa_saved_usd_total 0",
        "# HELP msoa_open_connections Client connections open now.",
        "# TYPE msoa_open_connections gauge",
        "msoa_open_connections 3",
        "# HELP msoa_open_streams Streamed responses in progress now.",
        "# TYPE msoa_open_streams gauge",
        "msoa_open_streams 1",
    };
    expect_lines(t, want, sizeof want / sizeof want[0]);
    check_format(t);
    free(t);
}

static void requests_and_durations(void) {
    metrics_init();
    metrics_request("chat", 200, "a", 0.003);
    metrics_request("chat", 200, "a", 0.0005); /* on a bound: counts as <= it */
    metrics_request("chat", 502, NULL, 70);
    metrics_request("rpc", 400, NULL, -1); /* a clock step: counted as 0 */
    metrics_request("rpc", 400, NULL, NAN);
    char *t = render();
    check_format(t);
    const char *family = "# HELP msoa_requests_total Requests answered, by route, HTTP status and node.\n"
                         "# TYPE msoa_requests_total counter\n"
                         "msoa_requests_total{route=\"chat\",status=\"200\",node=\"a\"} 2\n"
                         "msoa_requests_total{route=\"chat\",status=\"502\",node=\"\"} 1\n"
                         "msoa_requests_total{route=\"rpc\",status=\"400\",node=\"\"} 2\n"
                         "# HELP msoa_request_duration_seconds ";
    CHECK_CONTAINS(t, family);
    CHECK(value_of(t, "msoa_request_duration_seconds_bucket{route=\"chat\",le=\"0.0005\"}") == 1);
    CHECK(value_of(t, "msoa_request_duration_seconds_bucket{route=\"chat\",le=\"0.0025\"}") == 1);
    CHECK(value_of(t, "msoa_request_duration_seconds_bucket{route=\"chat\",le=\"0.005\"}") == 2);
    CHECK(value_of(t, "msoa_request_duration_seconds_bucket{route=\"chat\",le=\"60\"}") == 2);
    CHECK(value_of(t, "msoa_request_duration_seconds_bucket{route=\"chat\",le=\"+Inf\"}") == 3);
    CHECK(value_of(t, "msoa_request_duration_seconds_count{route=\"chat\"}") == 3);
    CHECK(fabs(value_of(t, "msoa_request_duration_seconds_sum{route=\"chat\"}") - 70.0035) < 1e-9);
    CHECK(value_of(t, "msoa_request_duration_seconds_bucket{route=\"rpc\",le=\"0.0005\"}") == 1);
    CHECK(value_of(t, "msoa_request_duration_seconds_count{route=\"rpc\"}") == 1);
    CHECK(value_of(t, "msoa_request_duration_seconds_sum{route=\"rpc\"}") == 0);
    CHECK_EQ_INT(count_prefix(t, "msoa_request_duration_seconds_bucket{route=\"chat\""), 17);
    free(t);
}

static void other_families(void) {
    metrics_init();
    metrics_first_chunk(0.2);
    metrics_upstream("a", 1.5);
    metrics_upstream_error("a", "timeout");
    metrics_upstream_error("a", "timeout");
    metrics_upstream_error(NULL, NULL);
    metrics_tokens("a", 10, 32);
    metrics_tokens("a", 5, 0);
    metrics_cost("a", 0.25, 1.0, 0.75);
    metrics_cost("a", 2.0, 1.0, -1.0); /* dearer than the baseline: saved stays */
    metrics_cost("a", NAN, INFINITY, -0.0);
    char *t = render();
    check_format(t);
    CHECK(value_of(t, "msoa_time_to_first_chunk_seconds_bucket{le=\"0.1\"}") == 0);
    CHECK(value_of(t, "msoa_time_to_first_chunk_seconds_bucket{le=\"0.25\"}") == 1);
    CHECK(value_of(t, "msoa_time_to_first_chunk_seconds_count") == 1);
    CHECK(value_of(t, "msoa_upstream_duration_seconds_bucket{node=\"a\",le=\"2.5\"}") == 1);
    CHECK(value_of(t, "msoa_upstream_duration_seconds_sum{node=\"a\"}") == 1.5);
    CHECK(value_of(t, "msoa_upstream_errors_total{node=\"a\",kind=\"timeout\"}") == 2);
    CHECK(value_of(t, "msoa_upstream_errors_total{node=\"\",kind=\"\"}") == 1);
    CHECK_CONTAINS(t, "msoa_tokens_total{node=\"a\",direction=\"in\"} 15\n");
    CHECK_CONTAINS(t, "msoa_tokens_total{node=\"a\",direction=\"out\"} 32\n");
    CHECK_CONTAINS(t, "msoa_cost_usd_total{node=\"a\"} 2.25\n");
    CHECK_CONTAINS(t, "\nmsoa_baseline_cost_usd_total 2\n");
    CHECK_CONTAINS(t, "\nmsoa_saved_usd_total 0.75\n");
    CHECK_CONTAINS(t, "# TYPE msoa_tokens_total counter\n");
    CHECK_CONTAINS(t, "# TYPE msoa_upstream_duration_seconds histogram\n");
    free(t);
}

static void label_escaping(void) {
    metrics_init();
    metrics_upstream_error("we\"ird\\name\nx", "k");
    metrics_cost("a", 0.1, 0, 0);
    char *t = render();
    check_format(t);
    const char *escaped = "msoa_upstream_errors_total{node=\"we\\\"ird\\\\name\\nx\",kind=\"k\"} 1\n";
    CHECK_CONTAINS(t, escaped);
    CHECK_CONTAINS(t, "msoa_cost_usd_total{node=\"a\"} 0.1\n"); /* shortest form, not 0.10000000000000001 */
    free(t);
}

/* ---- two threads at once ---- */

#define ROUNDS 50000

static void *hammer(void *arg) {
    int id = *(int *)arg;
    char node[16];
    for (int i = 0; i < ROUNDS; i++) {
        snprintf(node, sizeof node, "n%d", i % 10);
        metrics_request("rpc", 200, node, 0.001 * (i % 3));
        metrics_tokens("t", 1, 2);
        metrics_cost("c", 0.5, 1, 0.5);
        /* new label combinations appear in both threads at the same time */
        if (i < 300) {
            snprintf(node, sizeof node, "e%d", i);
            metrics_upstream_error(node, id ? "reset" : "timeout");
            metrics_upstream_error(node, "both");
        }
    }
    return NULL;
}

static void concurrent_updates_sum_exactly(void) {
    metrics_init();
    pthread_t th[2];
    int ids[2] = {0, 1};
    for (int i = 0; i < 2; i++) CHECK_EQ_INT(pthread_create(&th[i], NULL, hammer, &ids[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    char *t = render();
    check_format(t);
    CHECK_EQ_INT(count_prefix(t, "msoa_requests_total{"), 10);
    for (int n = 0; n < 10; n++) {
        char key[96];
        snprintf(key, sizeof key, "msoa_requests_total{route=\"rpc\",status=\"200\",node=\"n%d\"}", n);
        CHECK(value_of(t, key) == 2 * ROUNDS / 10);
    }
    CHECK(value_of(t, "msoa_request_duration_seconds_count{route=\"rpc\"}") == 2 * ROUNDS);
    CHECK(value_of(t, "msoa_tokens_total{node=\"t\",direction=\"in\"}") == 2 * ROUNDS);
    CHECK(value_of(t, "msoa_tokens_total{node=\"t\",direction=\"out\"}") == 4 * ROUNDS);
    CHECK(value_of(t, "msoa_cost_usd_total{node=\"c\"}") == ROUNDS);
    CHECK(value_of(t, "msoa_baseline_cost_usd_total") == 2 * ROUNDS);
    CHECK(value_of(t, "msoa_saved_usd_total") == ROUNDS);
    CHECK_EQ_INT(count_prefix(t, "msoa_upstream_errors_total{"), 900);
    CHECK(value_of(t, "msoa_upstream_errors_total{node=\"e7\",kind=\"both\"}") == 2);
    CHECK(value_of(t, "msoa_upstream_errors_total{node=\"e7\",kind=\"reset\"}") == 1);
    free(t);
}

static void full_family_counts_as_other(void) {
    metrics_init();
    char node[16];
    for (int i = 0; i < METRICS_MAX_SERIES + 44; i++) {
        snprintf(node, sizeof node, "n%d", i);
        metrics_tokens(node, 1, 0); /* two series per node */
    }
    metrics_tokens("n0", 1, 0); /* an existing one still counts as itself */
    char *t = render();
    check_format(t);
    CHECK_EQ_INT(count_prefix(t, "msoa_tokens_total{"), METRICS_MAX_SERIES);
    CHECK(value_of(t, "msoa_tokens_total{node=\"n0\",direction=\"in\"}") == 2);
    /* the real series hold nodes n0 to n510 (in and out) and n511's "in";
     * the "in" tokens of n512 and later went to _other (their "out" is 0) */
    CHECK(value_of(t, "msoa_tokens_total{node=\"_other\",direction=\"_other\"}") ==
          (METRICS_MAX_SERIES + 44) - METRICS_MAX_SERIES / 2);
    free(t);
    metrics_init(); /* and empties it again */
    t = render();
    CHECK_EQ_INT(count_prefix(t, "msoa_tokens_total"), 0);
    free(t);
}

int main(void) {
    TEST(empty_registry);
    TEST(requests_and_durations);
    TEST(other_families);
    TEST(label_escaping);
    TEST(concurrent_updates_sum_exactly);
    TEST(full_family_counts_as_other);
    metrics_init();
    return test_done();
}
