/* threadpool: see threadpool.h.
 *
 * One 64-bit word, `state`, holds the step: its generation (high 32 bits),
 * a CLOSED bit set by the caller when its own part is over, and the count
 * of workers inside the step (low bits). A worker joins with a
 * compare-and-swap that succeeds only while the step it saw is still open,
 * so after closing, the caller waits for exactly the workers that joined;
 * the task and its argument are read only after joining, when the caller
 * can no longer replace them.
 *
 * Sleeping is made race-free with the usual pairing of sequentially
 * consistent atomics: a side that is about to sleep announces it
 * (n_sleeping / main_sleeping) under the mutex before its final check, and
 * the other side checks that announcement after its own store, so at least
 * one of them sees the other and nobody sleeps through a wake-up. */
#include "engine/threadpool.h"

#include "base/xalloc.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Spinning before sleeping: about 25 microseconds on the development VM
 * (measured), longer than the gap between the steps of one token, shorter
 * than any human-visible pause.
 * Every YIELD_EVERY rounds the spinner yields the CPU, so that on a machine
 * with more runnable threads than cores the thread being waited for can
 * run instead of the one waiting. */
#define SPIN_ITERS 2000
#define YIELD_EVERY 64

#define GEN_SHIFT 32
#define CLOSED ((uint64_t)1 << 31)
#define COUNT_MASK (CLOSED - 1)

struct threadpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* workers wait here for a new generation */
    pthread_cond_t done;      /* the caller waits here for the joined workers */
    _Atomic uint64_t state;
    atomic_int n_sleeping;
    atomic_int main_sleeping;
    atomic_int quit;
    atomic_int caller_cpu;    /* where tp_run last ran, or -1 (see leave_caller_cpu) */
    int move_off;             /* workers move off the caller's CPU */
    tp_task task;             /* written by the caller between steps only */
    void *arg;
};

typedef struct { threadpool *tp; int ith; } worker_arg;

static uint32_t generation(uint64_t state) { return (uint32_t)(state >> GEN_SHIFT); }

/* A worker found on the CPU the caller runs on moves to the others. Why:
 * a worker woken by the caller is placed on the caller's CPU, and once
 * there it spins between steps, always runnable and "cache hot", so the
 * load balancer leaves it. With the machine's other CPU busy with another
 * program, a worker of a 2-thread pool then joined 6 of 1200 steps (it ran
 * only when the caller was preempted); kept off the caller's CPU, 800 to
 * 1100. One system call when it happens, none otherwise; the caller's own
 * placement is not touched. */
static void leave_caller_cpu(threadpool *tp) {
    if (!tp) return;   /* the caller itself */
    int caller = atomic_load_explicit(&tp->caller_cpu, memory_order_relaxed);
    if (!tp->move_off || caller < 0 || sched_getcpu() != caller) return;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) < 2) return;
    CPU_CLR(caller, &set);
    sched_setaffinity(0, sizeof set, &set);   /* best effort: placement only */
}

static inline void cpu_relax(threadpool *tp, int i) {
    if (i % YIELD_EVERY == YIELD_EVERY - 1) {
        leave_caller_cpu(tp);
        sched_yield();
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Returns once the generation differs from seen, or the pool quits. */
static void wait_generation(threadpool *tp, uint32_t seen) {
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (generation(atomic_load(&tp->state)) != seen || atomic_load(&tp->quit)) return;
        cpu_relax(tp, i);
    }
    pthread_mutex_lock(&tp->mu);
    atomic_fetch_add(&tp->n_sleeping, 1);
    while (generation(atomic_load(&tp->state)) == seen && !atomic_load(&tp->quit))
        pthread_cond_wait(&tp->wake, &tp->mu);
    atomic_fetch_sub(&tp->n_sleeping, 1);
    pthread_mutex_unlock(&tp->mu);
    leave_caller_cpu(tp);
}

/* Joins the step of generation gen if it is still open. */
static int join(threadpool *tp, uint32_t gen) {
    uint64_t s = atomic_load(&tp->state);
    while (generation(s) == gen && !(s & CLOSED))
        if (atomic_compare_exchange_weak(&tp->state, &s, s + 1)) return 1;
    return 0;
}

static void leave(threadpool *tp) {
    uint64_t before = atomic_fetch_sub(&tp->state, 1);
    if ((before & COUNT_MASK) == 1 && (before & CLOSED) && atomic_load(&tp->main_sleeping)) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_signal(&tp->done);
        pthread_mutex_unlock(&tp->mu);
    }
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    threadpool *tp = wa->tp;
    int ith = wa->ith;
    free(wa);
    uint32_t seen = 0;
    for (;;) {
        wait_generation(tp, seen);
        if (atomic_load(&tp->quit)) return NULL;
        seen = generation(atomic_load(&tp->state));
        if (!join(tp, seen)) continue;   /* finished without us */
        tp->task(tp->arg, ith, tp->n);
        leave(tp);
    }
}

threadpool *tp_create(int n_threads) {
    threadpool *tp = xcalloc(1, sizeof *tp);
    tp->n = n_threads < 1 ? 1 : n_threads;
    tp->threads = xcalloc((size_t)tp->n, sizeof *tp->threads);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    pthread_cond_init(&tp->done, NULL);
    atomic_init(&tp->state, CLOSED);   /* generation 0, nothing to join */
    atomic_init(&tp->n_sleeping, 0);
    atomic_init(&tp->main_sleeping, 0);
    atomic_init(&tp->quit, 0);
    atomic_init(&tp->caller_cpu, -1);
    /* more workers than CPUs: sharing them is unavoidable */
    const char *env = getenv("MSOA_PIN_THREADS");
    tp->move_off = !(env && !strcmp(env, "0")) && tp->n <= sysconf(_SC_NPROCESSORS_ONLN);
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
    if (tp->move_off) {
        int cpu = sched_getcpu();   /* vDSO: no system call */
        if (cpu != atomic_load_explicit(&tp->caller_cpu, memory_order_relaxed))
            atomic_store_explicit(&tp->caller_cpu, cpu, memory_order_relaxed);
    }
    /* the previous step is closed and empty: only the generation is left */
    uint32_t gen = generation(atomic_load(&tp->state)) + 1;
    atomic_store(&tp->state, (uint64_t)gen << GEN_SHIFT);
    if (atomic_load(&tp->n_sleeping) > 0) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_broadcast(&tp->wake);
        pthread_mutex_unlock(&tp->mu);
    }
    task(arg, 0, tp->n);
    if (!(atomic_fetch_or(&tp->state, CLOSED) & COUNT_MASK)) return;
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (!(atomic_load(&tp->state) & COUNT_MASK)) return;
        cpu_relax(NULL, i);
    }
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->main_sleeping, 1);
    while (atomic_load(&tp->state) & COUNT_MASK) pthread_cond_wait(&tp->done, &tp->mu);
    atomic_store(&tp->main_sleeping, 0);
    pthread_mutex_unlock(&tp->mu);
}

void tp_wait_until(_Atomic unsigned *v, unsigned want) {
    for (int i = 0; atomic_load_explicit(v, memory_order_acquire) != want; i++) cpu_relax(NULL, i);
}

int tp_claim(atomic_long *next, long n, long run, long *lo, long *hi) {
    long at = atomic_fetch_add(next, run);
    if (at >= n) return 0;
    *lo = at;
    *hi = at + run < n ? at + run : n;
    return 1;
}

void tp_ranges_init(tp_ranges *s, long n, int parts) {
    if (parts > TP_RANGES_MAX) parts = TP_RANGES_MAX;
    if (parts > n) parts = n > 0 ? (int)n : 1;
    s->parts = parts < 1 ? 1 : parts;
    for (int p = 0; p < s->parts; p++) {
        unsigned long long lo = (unsigned long long)(n * p / s->parts), hi = (unsigned long long)(n * (p + 1) / s->parts);
        atomic_init(&s->r[p].lohi, lo << 32 | hi);
    }
}

/* Takes up to run items, and at most half of what is left (rounded up),
 * from the front (own range) or the back of range p. Why half: near the
 * end of a step the runs shrink, so the threads run out of work at about
 * the same time; with whole runs to the end, a thread that took the last
 * one left the others waiting for it (110M Q4_0 decode, 2 threads: the
 * worker finished the output layer's step ~5.7 us before the caller,
 * ~1 us with halving). */
static int take(tp_ranges *s, int p, int front, long run, long *lo, long *hi) {
    unsigned long long v = atomic_load(&s->r[p].lohi);
    for (;;) {
        long l = (long)(v >> 32), h = (long)(v & 0xffffffffu);
        if (l >= h) return 0;
        if (run > (h - l + 1) / 2) run = (h - l + 1) / 2;
        if (front) h = l + run < h ? l + run : h;
        else l = h - run > l ? h - run : l;
        unsigned long long next = front ? (unsigned long long)h << 32 | (v & 0xffffffffu)
                                        : (v & ~0xffffffffull) | (unsigned long long)l;
        if (atomic_compare_exchange_weak(&s->r[p].lohi, &v, next)) {
            *lo = l;
            *hi = h;
            return 1;
        }
    }
}

int tp_ranges_claim(tp_ranges *s, int ith, long run, long *lo, long *hi) {
    int own = ith % s->parts;
    if (take(s, own, 1, run, lo, hi)) return 1;
    for (int k = 1; k < s->parts; k++)
        if (take(s, (own + k) % s->parts, 0, run, lo, hi)) return 1;
    return 0;
}
