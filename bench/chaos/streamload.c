/* streamload: keeps C streamed chat completions open against one port and
 * checks every one of them, for the chaos and hedging benchmarks.
 *
 *   streamload --port P [--model M] [--prompt TEXT] [--chunks N]
 *              [--concurrency C] (--seconds S | --requests N)
 *              [--late-every K --late-spec SPEC --late-node NAME]
 *              [--fail-log FILE]
 *
 * A stream counts as well-formed when it has status 200, every event is a
 * "data:" line holding JSON (or the final [DONE]), every chunk has the same
 * id, exactly one chunk has a finish_reason, there is no error event,
 * nothing follows [DONE], the concatenated content is the healthy
 * answer of the mock upstream ("echo(<first 20 bytes of the prompt>) tok0
 * ... tok<N-1> "), so a failover that repeats or drops a token shows, and
 * the `msoa` report is there, counts at least the answer's N tokens (every
 * node's: more after a failover) and lists one node more than failovers
 * and hedges.
 * With --late-every K, every K-th request (by sequence number) carries
 * "mock_fail": SPEC and "mock_fail_node": NAME, so the same requests are
 * slowed in every run. Latency is from sending the request to the end of
 * the stream. A slot whose request failed waits 100 ms before its next one.
 * Prints key=value lines; the first three failures of each kind (problem
 * and status) go to --fail-log.
 *
 * Uses libcurl's multi interface; traffic to 127.0.0.1 only; bounded in
 * time (every transfer times out after 60 s, new ones stop after S s). */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/xalloc.h"

#define TRANSFER_TIMEOUT_MS 60000L
#define LOGGED_PER_PROBLEM 3
/* A slot whose request failed rests this long before the next: a failing
 * gateway answers at once, and a client that retries in a tight loop would
 * measure its own loop. */
#define FAIL_PAUSE_NS 100000000ull
#define BODY_LOG_BYTES 1500

static struct {
    int port;
    const char *model, *prompt;
    int chunks, concurrency;
    double seconds;
    long requests;
    int late_every;
    const char *late_spec, *late_node;
    const char *fail_log;
} opt = {0, "mock-model", "chaos benchmark", 40, 200, 0, 0, 0, "late:500", "", NULL};

typedef struct stream {
    CURL *h;
    struct curl_slist *headers;
    char *post;
    buf body;
    long seq;
    uint64_t t0;
    uint64_t resume_ns; /* after a failure, the slot rests until then; 0: busy */
} stream;

/* what the run saw */
static struct {
    long started, completed, well_formed, failovers, hedged;
    long by_reason[16], status_of[16];
    const char *reason_name[16];
    int n_reasons;
    double *lat_ms;
    size_t n_lat, cap_lat;
    FILE *fail_log;
} run;

static char *expected;

/* Counts a problem (by kind and status); returns how often it was seen. */
static long count_reason(const char *why, long status) {
    for (int i = 0; i < run.n_reasons; i++)
        if (!strcmp(run.reason_name[i], why) && run.status_of[i] == status) return ++run.by_reason[i];
    if (run.n_reasons == 16) return LOGGED_PER_PROBLEM + 1;
    run.reason_name[run.n_reasons] = why;
    run.status_of[run.n_reasons] = status;
    return run.by_reason[run.n_reasons++] = 1;
}

/* ---- checking one stream ---- */

typedef struct verdict {
    const char *problem; /* NULL when well-formed */
    int done;            /* [DONE] arrived: the request completed */
    int failovers, hedged;
    int reported;        /* the msoa report arrived */
    long tokens_out, nodes;
} verdict;

static const char *check_chunk(const cJSON *chunk, char **id, int *finishes, buf *text, verdict *v) {
    if (!cJSON_IsObject(chunk)) return "event is not a JSON object";
    if (cJSON_GetObjectItemCaseSensitive(chunk, "error")) return "error event";
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(chunk, "id");
    if (!cJSON_IsString(cid)) return "chunk without id";
    if (!*id) *id = xstrdup(cid->valuestring);
    else if (strcmp(*id, cid->valuestring) != 0) return "two ids in one stream";
    const cJSON *report = cJSON_GetObjectItemCaseSensitive(chunk, "msoa");
    if (report) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(report, "failovers");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(report, "tokens_out");
        v->reported = 1;
        if (cJSON_IsNumber(f)) v->failovers = f->valueint;
        v->hedged = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(report, "hedged"));
        v->tokens_out = cJSON_IsNumber(t) ? (long)t->valuedouble : -1;
        v->nodes = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(report, "nodes"));
    }
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0);
    if (!choice) return NULL; /* the usage chunk */
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(choice, "delta"), "content");
    if (cJSON_IsString(content)) buf_puts(text, content->valuestring);
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"))) ++*finishes;
    return NULL;
}

/* Walks the SSE events of a whole response body. */
static void check_events(const char *body, size_t len, verdict *v) {
    char *id = NULL;
    int finishes = 0;
    buf text = BUF_INIT;
    const char *p = body, *end = body + len;
    while (p < end && !v->problem) {
        const char *sep = strstr(p, "\n\n");
        if (!sep) {
            v->problem = "stream ends inside an event";
            break;
        }
        if (v->done) {
            v->problem = "data after [DONE]";
            break;
        }
        if (*p == ':') { /* a comment: keep-alive */
            p = sep + 2;
            continue;
        }
        if (strncmp(p, "data: ", 6) != 0 || memchr(p, '\n', (size_t)(sep - p)) != NULL) {
            v->problem = "event is not one data: line";
            break;
        }
        const char *data = p + 6;
        size_t dlen = (size_t)(sep - data);
        if (dlen == 6 && !memcmp(data, "[DONE]", 6)) {
            v->done = 1;
        } else {
            cJSON *chunk = cJSON_ParseWithLength(data, dlen);
            v->problem = chunk ? check_chunk(chunk, &id, &finishes, &text, v) : "event is not JSON";
            cJSON_Delete(chunk);
        }
        p = sep + 2;
    }
    if (!v->problem && !v->done) v->problem = "no [DONE]";
    if (!v->problem && finishes != 1) v->problem = finishes ? "more than one finish_reason" : "no finish_reason";
    if (!v->problem && strcmp(text.data ? text.data : "", expected) != 0) v->problem = "text differs from the healthy answer";
    if (!v->problem && !v->reported) v->problem = "no msoa report";
    if (!v->problem && v->tokens_out < opt.chunks) v->problem = "msoa.tokens_out below the answer's tokens";
    if (!v->problem && v->nodes != 1 + v->failovers + v->hedged) v->problem = "msoa.nodes not one more than failovers and hedges";
    free(id);
    buf_free(&text);
}

static void log_failure(const stream *s, long status, const char *why, const char *curl_err) {
    size_t n = s->body.len;
    fprintf(run.fail_log, "--- request %ld: %s (status %ld%s%s), %zu bytes:\n", s->seq, why, status,
            curl_err ? ", " : "", curl_err ? curl_err : "", n);
    if (n > BODY_LOG_BYTES) {
        fwrite(s->body.data, 1, BODY_LOG_BYTES / 2, run.fail_log);
        fputs("\n[...]\n", run.fail_log);
        fwrite(s->body.data + n - BODY_LOG_BYTES / 2, 1, BODY_LOG_BYTES / 2, run.fail_log);
    } else if (n) {
        fwrite(s->body.data, 1, n, run.fail_log);
    }
    fputc('\n', run.fail_log);
    fflush(run.fail_log);
}

static void record_latency(double ms) {
    if (run.n_lat == run.cap_lat) {
        run.cap_lat = run.cap_lat ? run.cap_lat * 2 : 4096;
        run.lat_ms = xrealloc(run.lat_ms, run.cap_lat * sizeof *run.lat_ms);
    }
    run.lat_ms[run.n_lat++] = ms;
}

/* Returns 0 when the stream was well-formed. */
static int judge_stream(stream *s, CURLcode result) {
    double ms = (double)(clock_now_ns() - s->t0) / 1e6;
    long status = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
    verdict v = {0};
    if (s->body.len) check_events(s->body.data, s->body.len, &v);
    else v.problem = "empty response";
    if (result != CURLE_OK && !v.problem) v.problem = "transfer failed after [DONE]";
    if (status != 200) v.problem = "status not 200";
    if (v.done && status == 200) run.completed++;
    run.failovers += v.failovers > 0;
    run.hedged += v.hedged;
    if (!v.problem) {
        run.well_formed++;
        record_latency(ms);
        return 0;
    }
    if (result != CURLE_OK && !v.done) v.problem = "connection failed";
    if (count_reason(v.problem, status) <= LOGGED_PER_PROBLEM && run.fail_log)
        log_failure(s, status, v.problem, result != CURLE_OK ? curl_easy_strerror(result) : NULL);
    return -1;
}

/* ---- transfers ---- */

static size_t on_data(char *data, size_t size, size_t n, void *ud) {
    stream *s = ud;
    buf_append(&s->body, data, size * n);
    return size * n;
}

static char *request_body(long seq) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "model", opt.model);
    cJSON_AddTrueToObject(r, "stream");
    cJSON *msgs = cJSON_AddArrayToObject(r, "messages");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON_AddStringToObject(m, "content", opt.prompt);
    cJSON_AddItemToArray(msgs, m);
    if (opt.late_every > 0 && seq % opt.late_every == opt.late_every - 1) {
        cJSON_AddStringToObject(r, "mock_fail", opt.late_spec);
        cJSON_AddStringToObject(r, "mock_fail_node", opt.late_node);
    }
    char *text = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return text;
}

static void start_stream(CURLM *multi, stream *s, const char *url) {
    s->seq = run.started++;
    buf_clear(&s->body);
    free(s->post);
    s->post = request_body(s->seq);
    if (!s->h) {
        s->h = curl_easy_init();
        s->headers = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(s->h, CURLOPT_URL, url);
        curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->headers);
        curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, TRANSFER_TIMEOUT_MS);
        curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
    }
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->post);
    s->t0 = clock_now_ns();
    curl_multi_add_handle(multi, s->h);
}

static int more_to_start(uint64_t t_end) {
    if (opt.requests > 0) return run.started < opt.requests;
    return clock_now_ns() < t_end;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p) {
    if (!run.n_lat) return 0;
    size_t i = (size_t)(p * (double)run.n_lat);
    return run.lat_ms[i < run.n_lat ? i : run.n_lat - 1];
}

static void print_results(double elapsed_s) {
    qsort(run.lat_ms, run.n_lat, sizeof *run.lat_ms, cmp_double);
    printf("started=%ld\ncompleted=%ld\nlost=%ld\nwell_formed=%ld\nmalformed=%ld\n", run.started, run.completed,
           run.started - run.completed, run.well_formed, run.started - run.well_formed);
    printf("with_failover=%ld\nhedged=%ld\nseconds=%.1f\n", run.failovers, run.hedged, elapsed_s);
    printf("p50_ms=%.1f\np90_ms=%.1f\np99_ms=%.1f\nmax_ms=%.1f\n", pct(0.50), pct(0.90), pct(0.99),
           run.n_lat ? run.lat_ms[run.n_lat - 1] : 0.0);
    for (int i = 0; i < run.n_reasons; i++)
        printf("problem=%s (status %ld): %ld\n", run.reason_name[i], run.status_of[i], run.by_reason[i]);
}

static int parse_args(int argc, char **argv) {
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--model")) opt.model = v;
        else if (!strcmp(k, "--prompt")) opt.prompt = v;
        else if (!strcmp(k, "--chunks")) opt.chunks = atoi(v);
        else if (!strcmp(k, "--concurrency")) opt.concurrency = atoi(v);
        else if (!strcmp(k, "--seconds")) opt.seconds = atof(v);
        else if (!strcmp(k, "--requests")) opt.requests = atol(v);
        else if (!strcmp(k, "--late-every")) opt.late_every = atoi(v);
        else if (!strcmp(k, "--late-spec")) opt.late_spec = v;
        else if (!strcmp(k, "--late-node")) opt.late_node = v;
        else if (!strcmp(k, "--fail-log")) opt.fail_log = v;
        else return -1;
    }
    if (opt.port <= 0 || opt.concurrency <= 0 || opt.chunks <= 0) return -1;
    if ((opt.seconds > 0) == (opt.requests > 0)) return -1;
    return 0;
}

/* The answer a healthy mock gives: its echo holds the prompt's first 20
 * bytes (the prompts used here need no JSON escaping). */
static char *healthy_text(void) {
    buf b = BUF_INIT;
    buf_printf(&b, "echo(%.20s) ", opt.prompt);
    for (int i = 0; i < opt.chunks; i++) buf_printf(&b, "tok%d ", i);
    return buf_detach(&b);
}

int main(int argc, char **argv) {
    if (argc < 2 || (argc - 1) % 2 || parse_args(argc, argv) < 0) {
        fprintf(stderr, "usage: streamload --port P [--model M] [--prompt T] [--chunks N] [--concurrency C]\n"
                        "                  (--seconds S | --requests N) [--late-every K --late-spec SPEC\n"
                        "                  --late-node NAME] [--fail-log FILE]\n");
        return 2;
    }
    expected = healthy_text();
    if (opt.fail_log && !(run.fail_log = fopen(opt.fail_log, "w"))) {
        perror(opt.fail_log);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/chat/completions", opt.port);
    stream *streams = xcalloc((size_t)opt.concurrency, sizeof *streams);
    uint64_t t_start = clock_now_ns();
    uint64_t t_end = t_start + (uint64_t)(opt.seconds * 1e9);
    int live = 0;
    for (int i = 0; i < opt.concurrency && more_to_start(t_end); i++, live++) start_stream(multi, &streams[i], url);
    while (live > 0) {
        int running;
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            stream *s;
            CURL *h = m->easy_handle;
            CURLcode result = m->data.result;
            curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&s);
            int failed = judge_stream(s, result);
            curl_multi_remove_handle(multi, h);
            if (!more_to_start(t_end)) live--;
            else if (failed) s->resume_ns = clock_now_ns() + FAIL_PAUSE_NS;
            else start_stream(multi, s, url);
        }
        uint64_t now = clock_now_ns();
        for (int i = 0; i < opt.concurrency; i++) {
            stream *s = &streams[i];
            if (!s->resume_ns || s->resume_ns > now) continue;
            s->resume_ns = 0;
            if (more_to_start(t_end)) start_stream(multi, s, url);
            else live--;
        }
        if (live > 0) curl_multi_poll(multi, NULL, 0, 10, NULL);
    }
    print_results((double)(clock_now_ns() - t_start) / 1e9);
    for (int i = 0; i < opt.concurrency; i++) {
        if (streams[i].h) curl_easy_cleanup(streams[i].h);
        curl_slist_free_all(streams[i].headers);
        free(streams[i].post);
        buf_free(&streams[i].body);
    }
    free(streams);
    free(run.lat_ms);
    free(expected);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    if (run.fail_log) fclose(run.fail_log);
    return 0;
}
