/* bench_router: latency and throughput of route_classify (router and
 * guard together, one call) on one core, for 1 KB requests.
 *
 *   bench_router MODEL DATA_DIR [N]
 *
 * Requests are texts of the shared data glued together and cut to 1024
 * bytes (so every one is a full 1 KB), cycled. Prints p50/p99/p99.9 of
 * single calls and the calls per second of a tight loop, without and with
 * explanations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "route/dataset.h"
#include "route/router.h"

#define REQ_BYTES 1024
#define N_REQ 512

static double clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}
static double now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 1 KB requests from consecutive examples; sources are interleaved by
 * striding through the data set. */
static int make_requests(const route_dataset *d, char reqs[N_REQ][REQ_BYTES]) {
    int at = 0;
    for (int r = 0; r < N_REQ; r++) {
        buf b = BUF_INIT;
        while (b.len < REQ_BYTES) {
            buf_puts(&b, d->ex[at].text);
            buf_putc(&b, '\n');
            at = (at + 997) % d->n;
        }
        memcpy(reqs[r], b.data, REQ_BYTES);
        buf_free(&b);
    }
    return N_REQ;
}

static void run(const route_model *m, char reqs[N_REQ][REQ_BYTES], long n, unsigned flags, const char *name) {
    double *lat = malloc(sizeof(double) * (size_t)n);
    route_decision d;
    volatile float sink = 0;
    for (long i = 0; i < 2000; i++) {   /* warm caches */
        route_classify(m, NULL, 0, reqs[i % N_REQ], REQ_BYTES, flags, &d);
        sink += d.guard_score;
    }
    for (long i = 0; i < n; i++) {
        double t0 = now_ns();
        route_classify(m, NULL, 0, reqs[i % N_REQ], REQ_BYTES, flags, &d);
        lat[i] = now_ns() - t0;
        sink += d.probs[0];
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_double);
    /* throughput by the thread's CPU time: on a shared machine the wall
     * clock also counts time the core spent on other processes */
    double t0 = now_ns(), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    for (long i = 0; i < n; i++) {
        route_classify(m, NULL, 0, reqs[i % N_REQ], REQ_BYTES, flags, &d);
        sink += d.probs[0];
    }
    double secs = (now_ns() - t0) / 1e9, cpu = (clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / 1e9;
    printf("%-22s wall p50 %6.2f us  p99 %6.2f us  p99.9 %7.2f us | %7.0f/s per core-second of CPU, %7.0f/s wall\n",
           name, lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3, lat[n * 999 / 1000] / 1e3, (double)n / cpu,
           (double)n / secs);
    free(lat);
    (void)sink;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_router MODEL DATA_DIR [N]\n");
        return 2;
    }
    long n = argc > 3 ? atol(argv[3]) : 200000;
    char *err = NULL;
    route_model *m = route_model_load(argv[1], &err);
    route_dataset d;
    dataset_init(&d);
    if (!m || dataset_load(&d, argv[2], &err)) {
        fprintf(stderr, "bench_router: %s\n", err);
        return 1;
    }
    static char reqs[N_REQ][REQ_BYTES];
    make_requests(&d, reqs);
    printf("model %s, %d-byte requests, %ld calls each\n", argv[1], REQ_BYTES, n);
    run(m, reqs, n, 0, "router+guard");
    run(m, reqs, n, ROUTE_EXPLAIN, "router+guard+explain");
    route_model_free(m);
    dataset_free(&d);
    return 0;
}
