/* cmd_run: see cmd_run.h. Loads the model, encodes the prompt (with BOS when
 * the model wants it), runs it in one batch, then samples and prints one
 * token at a time until -n tokens, an end-of-generation token or the end of
 * the context. The text goes to stdout, unbuffered per token; speeds go to
 * stderr so that stdout is exactly prompt + continuation. */
#include "cli/cmd_run.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/clock.h"
#include "engine/llama.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

static const char run_help[] =
    "usage: msoa run MODEL.gguf -p PROMPT [-n N] [--temp T] [--seed S] [--threads K]\n"
    "\n"
    "Generates a continuation of PROMPT with the built-in engine and writes the\n"
    "prompt followed by the generated text to stdout as it is produced; prefill\n"
    "and decode speeds go to stderr.\n"
    "\n"
    "  -p, --prompt PROMPT  text to continue (required)\n"
    "  -n N                 tokens to generate (default 128)\n"
    "  --temp T             sampling temperature; 0 = greedy (default 0.8)\n"
    "  --seed S             random seed (default: from the clock)\n"
    "  --threads K          threads (default: number of CPUs)\n"
    "  --ctx C              context size (default: prompt + N, at most the model's)\n";

typedef struct run_opts {
    const char *model, *prompt;
    long n_gen, threads, n_ctx;
    double temp;
    unsigned long long seed;
    int have_seed;
} run_opts;

/* Parses a number into *out; 0 on success. */
static int num(const char *flag, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s ? s : "", &end);
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "msoa run: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* 0: run; 1: help printed; -1: bad usage (message printed). */
static int parse(int argc, char **argv, run_opts *o) {
    *o = (run_opts){.n_gen = 128, .temp = 0.8, .threads = sysconf(_SC_NPROCESSORS_ONLN)};
    if (o->threads < 1) o->threads = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        double x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(run_help, stdout); return 1; }
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            if (!v) break;
            o->prompt = v;
        } else if (!strcmp(a, "-n")) {
            if (num(a, v, 0, 1e7, &x) < 0) return -1;
            o->n_gen = (long)x;
        } else if (!strcmp(a, "--temp")) {
            if (num(a, v, 0, 100, &x) < 0) return -1;
            o->temp = x;
        } else if (!strcmp(a, "--seed")) {
            if (num(a, v, 0, 1.8e19, &x) < 0) return -1;
            o->seed = strtoull(v, NULL, 10);
            o->have_seed = 1;
        } else if (!strcmp(a, "--threads")) {
            if (num(a, v, 1, 256, &x) < 0) return -1;
            o->threads = (long)x;
        } else if (!strcmp(a, "--ctx")) {
            if (num(a, v, 1, 1 << 20, &x) < 0) return -1;
            o->n_ctx = (long)x;
        } else if (a[0] == '-' || o->model) {
            fprintf(stderr, "msoa run: unexpected argument '%s'\n%s", a, run_help);
            return -1;
        } else {
            o->model = a;
            continue;
        }
        i++;   /* the flag's value */
    }
    if (!o->model || !o->prompt) {
        fprintf(stderr, "msoa run: %s\n%s", o->model ? "-p PROMPT is required" : "MODEL.gguf is required", run_help);
        return -1;
    }
    return 0;
}

static void write_piece(const tokenizer *tk, int32_t id) {
    buf piece = BUF_INIT;
    tokenizer_piece(tk, id, 0, &piece);
    fwrite(piece.data ? piece.data : "", 1, piece.len, stdout);
    fflush(stdout);
    buf_free(&piece);
}

static void report(const char *what, int n, uint64_t ns) {
    double ms = (double)ns / 1e6;
    fprintf(stderr, "%s: %d tokens in %.1f ms (%.2f tok/s)\n", what, n, ms, ms > 0 ? n * 1000.0 / ms : 0.0);
}

/* Generates after the prompt ids; returns the number of tokens generated. */
static int generate(const run_opts *o, const llama_model *m, const tokenizer *tk, llama_ctx *c,
                    const int32_t *ids, int n_ids) {
    sampler_params sp = sampler_defaults();
    sp.temperature = (float)o->temp;
    sp.seed = o->have_seed ? o->seed : SAMPLER_SEED_RANDOM;
    sampler *s = sampler_new(&sp, llama_model_hparams(m)->n_vocab);
    for (int i = 0; i < n_ids; i++) sampler_accept(s, ids[i]);

    uint64_t t0 = clock_now_ns();
    const float *logits = llama_forward(c, ids, n_ids);
    report("prefill", n_ids, clock_now_ns() - t0);
    int n = 0;
    t0 = clock_now_ns();
    while (logits && n < o->n_gen) {
        int32_t id = sampler_sample(s, logits);
        if (tokenizer_is_eog(tk, id)) break;
        sampler_accept(s, id);
        write_piece(tk, id);
        n++;
        if (llama_ctx_pos(c) >= llama_ctx_size(c)) break;   /* context full */
        logits = n < o->n_gen ? llama_forward(c, &id, 1) : NULL;
    }
    uint64_t dt = clock_now_ns() - t0;
    printf("\n");
    report("decode", n, dt);
    sampler_free(s);
    return n;
}

int cmd_run(int argc, char **argv) {
    run_opts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc > 0 ? 0 : 2;
    char err[512];
    uint64_t t0 = clock_now_ns();
    llama_model *m = llama_load(o.model, err, sizeof err);
    if (!m) { fprintf(stderr, "msoa run: %s\n", err); return 1; }
    tokenizer *tk = tokenizer_load(llama_gguf(m), err, sizeof err);
    if (!tk) { fprintf(stderr, "msoa run: %s\n", err); llama_free(m); return 1; }
    fprintf(stderr, "loaded %s in %.1f ms (%s, %d layers, dim %d, %.1f MB of weights, %ld threads)\n", o.model,
            (double)(clock_now_ns() - t0) / 1e6, llama_model_hparams(m)->arch, llama_model_hparams(m)->n_layers,
            llama_model_hparams(m)->dim, (double)llama_weight_bytes(m) / 1e6, o.threads);

    int32_t *ids = NULL;
    int n_ids = tokenizer_encode(tk, o.prompt, strlen(o.prompt), TOK_ADD_SPECIAL, &ids);
    long max_ctx = llama_model_hparams(m)->n_ctx_train;
    long n_ctx = o.n_ctx ? o.n_ctx : n_ids + o.n_gen + 1;
    if (n_ctx > max_ctx && !o.n_ctx) n_ctx = max_ctx;
    rc = 1;
    if (n_ids < 1 || n_ids >= n_ctx) {
        fprintf(stderr, "msoa run: the prompt (%d tokens) does not fit a context of %ld\n", n_ids, n_ctx);
    } else {
        llama_ctx *c = llama_ctx_new(m, (int)n_ctx, (int)o.threads);
        if (!c) {
            fprintf(stderr, "msoa run: cannot start %ld threads\n", o.threads);
        } else {
            fputs(o.prompt, stdout);
            fflush(stdout);
            generate(&o, m, tk, c, ids, n_ids);
            llama_ctx_free(c);
            rc = 0;
        }
    }
    free(ids);
    tokenizer_free(tk);
    llama_free(m);
    return rc;
}
