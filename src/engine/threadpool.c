/* threadpool: see threadpool.h.
 *
 * A step is published by bumping `generation`; workers that see it run the
 * task and decrement `pending`. Sleeping is made race-free with the usual
 * pairing of sequentially consistent atomics: a side that is about to sleep
 * announces it (n_sleeping / main_sleeping) under the mutex before its final
 * check, and the other side checks that announcement after its own store, so
 * at least one of them sees the other and nobody sleeps through a wake-up. */
#include "engine/threadpool.h"

#include "base/xalloc.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Spinning before sleeping: about 50-100 microseconds, longer than the gap
 * between the steps of one token, shorter than any human-visible pause.
 * Every YIELD_EVERY rounds the spinner yields the CPU, so that on a machine
 * with more runnable threads than cores the thread being waited for can
 * run instead of the one waiting. */
#define SPIN_ITERS 2000
#define YIELD_EVERY 64

struct threadpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* workers wait here for a new generation */
    pthread_cond_t done;      /* the caller waits here for pending == 0 */
    atomic_uint generation;
    atomic_int pending;
    atomic_int n_sleeping;
    atomic_int main_sleeping;
    atomic_int quit;
    tp_task task;
    void *arg;
};

typedef struct { threadpool *tp; int ith; } worker_arg;

static inline void cpu_relax(int i) {
    if (i % YIELD_EVERY == YIELD_EVERY - 1) {
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void wait_generation(threadpool *tp, unsigned seen) {
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load(&tp->generation) != seen || atomic_load(&tp->quit)) return;
        cpu_relax(i);
    }
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->n_sleeping, 1);
    while (atomic_load(&tp->generation) == seen && !atomic_load(&tp->quit))
        pthread_cond_wait(&tp->wake, &tp->mu);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    threadpool *tp = wa->tp;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        wait_generation(tp, seen);
        if (atomic_load(&tp->quit)) return NULL;
        seen = atomic_load(&tp->generation);
        tp->task(tp->arg, ith, tp->n);
        if (atomic_fetch_sub(&tp->pending, 1) == 1 && atomic_load(&tp->main_sleeping)) {
            pthread_mutex_lock(&tp->mu);
            pthread_cond_signal(&tp->done);
            pthread_mutex_unlock(&tp->mu);
        }
    }
}

threadpool *tp_create(int n_threads) {
    threadpool *tp = xcalloc(1, sizeof *tp);
    tp->n = n_threads < 1 ? 1 : n_threads;
    tp->threads = xcalloc((size_t)tp->n, sizeof *tp->threads);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    pthread_cond_init(&tp->done, NULL);
    atomic_init(&tp->generation, 0);
    atomic_init(&tp->pending, 0);
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->main_sleeping, 0);
    atomic_init(&tp->quit, 0);
    for (int i = 1; i < tp->n; i++) {
        worker_arg *wa = xmalloc(sizeof *wa);
        wa->tp = tp;
        wa->ith = i;
        if (pthread_create(&tp->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            tp->n = i;   /* destroy only what was started */
            tp_destroy(tp);
            return NULL;
        }
    }
    return tp;
}

void tp_destroy(threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->quit, 1);
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 1; i < tp->n; i++) pthread_join(tp->threads[i], NULL);
    pthread_cond_destroy(&tp->wake);
    pthread_cond_destroy(&tp->done);
    pthread_mutex_destroy(&tp->mu);
    free(tp->threads);
    free(tp);
}

int tp_size(const threadpool *tp) { return tp->n; }

void tp_run(threadpool *tp, tp_task task, void *arg) {
    if (tp->n == 1) {
        task(arg, 0, 1);
        return;
    }
    tp->task = task;
    tp->arg = arg;
    atomic_store(&tp->pending, tp->n - 1);
    atomic_fetch_add(&tp->generation, 1);
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->wake);
        pthread_mutex_unlock(&tp->mu);
    }
    task(arg, 0, tp->n);
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load(&tp->pending) == 0) return;
        cpu_relax(i);
    }
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->main_sleeping, 1);
    while (atomic_load(&tp->pending) != 0) pthread_cond_wait(&tp->done, &tp->mu);
    atomic_store(&tp->main_sleeping, 0);
    pthread_mutex_unlock(&tp->mu);
}

void tp_split(long n, int ith, int nth, long *lo, long *hi) {
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}
