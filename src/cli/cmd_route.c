/* cmd_route: see cmd_route.h.
 *
 *   msoa route [--json] [--explain] [--model FILE] [--system TEXT] TEXT...
 *   msoa route --jsonl [--explain] [--model FILE] < lines of {"text": ..., "system": ...}
 *
 * The model is --model, else $MSOA_ROUTER_MODEL, else models/router.msoa
 * in the current directory or beside the binary (../models). */
#include "cli/cmd_route.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "route/router.h"

static const char usage[] =
    "usage: msoa route [--json] [--explain] [--model FILE] [--system TEXT] TEXT...\n"
    "       msoa route --jsonl [--explain] [--model FILE]   (lines of {\"text\": ...} on stdin)\n";

/* The default model: the repository's models/ seen from the working
 * directory, or from the directory of the running binary. */
static route_model *open_model(const char *flag, char **err) {
    if (flag) return route_model_load(flag, err);
    const char *env = getenv("MSOA_ROUTER_MODEL");
    if (env && *env) return route_model_load(env, err);
    if (access("models/router.msoa", R_OK) == 0) return route_model_load("models/router.msoa", err);
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            buf p = BUF_INIT;
            buf_printf(&p, "%s/../models/router.msoa", exe);
            route_model *m = access(p.data, R_OK) == 0 ? route_model_load(p.data, err) : NULL;
            buf_free(&p);
            if (m || *err) return m;
        }
    }
    buf e = BUF_INIT;
    buf_puts(&e, "no model: give --model FILE or set MSOA_ROUTER_MODEL (train one with `msoa router train`)");
    *err = buf_detach(&e);
    return NULL;
}

static void print_human(const route_model *m, const route_decision *d) {
    printf("domain: %s (%.2f)  ", d->domain_name, d->probs[d->domain]);
    for (int i = 0; i < d->n_classes; i++) printf(" %s %.2f", route_model_class_name(m, i), d->probs[i]);
    printf("\n");
    if (d->has_guard)
        printf("guard: %s (score %.4f, threshold %.4f)\n", d->unsafe ? "UNSAFE" : "safe", d->guard_score,
               route_model_guard_threshold(m));
    for (int pass = 0; pass < 2; pass++) {
        const route_feature *f = pass ? d->guard_top : d->top;
        int n = pass ? d->n_guard_top : d->n_top;
        if (!n) continue;
        printf("%s:", pass ? "why (guard)" : "why");
        for (int i = 0; i < n; i++) printf(" %s %+.2f", f[i].name, f[i].weight);
        printf("\n");
    }
}

/* Each input line is one request; a bad line gets {"error": ...} so the
 * output stays line-aligned with the input. */
static int run_jsonl(const route_model *m, unsigned flags) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int bad = 0;
    buf out = BUF_INIT;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (line[strspn(line, " \t\r\n")] == '\0') continue;
        cJSON *o = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
        const cJSON *sys = cJSON_GetObjectItemCaseSensitive(o, "system");
        buf_clear(&out);
        if (!cJSON_IsString(text)) {
            buf_puts(&out, "{\"error\":\"expected an object with a string \\\"text\\\"\"}");
            bad = 1;
        } else {
            route_decision d;
            const char *s = cJSON_IsString(sys) ? sys->valuestring : NULL;
            route_classify(m, s, s ? strlen(s) : 0, text->valuestring, strlen(text->valuestring), flags, &d);
            route_decision_json(m, &d, &out);
        }
        cJSON_Delete(o);
        buf_putc(&out, '\n');
        if (fwrite(out.data, 1, out.len, stdout) != out.len) {
            bad = 1;
            break;
        }
    }
    free(line);
    buf_free(&out);
    return bad;
}

int cmd_route(int argc, char **argv) {
    int json = 0, jsonl = 0, rc = 0;
    unsigned flags = 0;
    const char *model = NULL, *system = NULL;
    buf text = BUF_INIT;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--jsonl") == 0) jsonl = 1;
        else if (strcmp(a, "--explain") == 0) flags |= ROUTE_EXPLAIN;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            buf_free(&text);
            return 0;
        }
        else if ((strcmp(a, "--model") == 0 || strcmp(a, "--system") == 0) && i + 1 < argc)
            *(a[2] == 'm' ? &model : &system) = argv[++i];
        else if (a[0] == '-' && a[1] == '-' && a[2]) {
            fprintf(stderr, "msoa route: unknown option %s\n%s", a, usage);
            buf_free(&text);
            return 2;
        } else {
            if (text.len) buf_putc(&text, ' ');
            buf_puts(&text, a);
        }
    }
    if (jsonl == (text.len > 0)) {
        fputs(usage, stderr);
        buf_free(&text);
        return 2;
    }
    char *err = NULL;
    route_model *m = open_model(model, &err);
    if (!m) {
        fprintf(stderr, "msoa route: %s\n", err);
        free(err);
        buf_free(&text);
        return 1;
    }
    if (jsonl) {
        rc = run_jsonl(m, flags);
    } else {
        route_decision d;
        if (!json) flags |= ROUTE_EXPLAIN;
        route_classify(m, system, system ? strlen(system) : 0, text.data, text.len, flags, &d);
        if (json) {
            buf out = BUF_INIT;
            route_decision_json(m, &d, &out);
            puts(out.data);
            buf_free(&out);
        } else {
            print_human(m, &d);
        }
    }
    route_model_free(m);
    buf_free(&text);
    return rc;
}
