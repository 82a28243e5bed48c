/* dataset: see dataset.h. Every format loader turns a file into records
 * (text, label) and hands them to one sink, so the label mapping of the
 * shared data lives in a single table below. */
#include "route/dataset.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/xalloc.h"
#include "route/gunzip.h"

/* ---- the dataset ---- */

void dataset_init(route_dataset *d) { memset(d, 0, sizeof *d); }

void dataset_free(route_dataset *d) {
    for (int i = 0; i < d->n; i++) free(d->ex[i].text);
    for (int i = 0; i < d->n_labels; i++) free(d->labels[i]);
    for (int i = 0; i < d->n_sources; i++) free(d->sources[i]);
    free(d->ex);
    free(d->labels);
    free(d->label_guard);
    free(d->sources);
    free(d->seen);
    memset(d, 0, sizeof *d);
}

static int find_name(char **names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

int label_is_guard(const char *name) {
    return strcasecmp(name, "harmful") == 0 || strcasecmp(name, "jailbreak") == 0 ||
           strcasecmp(name, "unsafe") == 0;
}

int dataset_label(route_dataset *d, const char *name) {
    int i = find_name(d->labels, d->n_labels, name);
    if (i >= 0) return i;
    d->labels = xrealloc(d->labels, sizeof(char *) * (size_t)(d->n_labels + 1));
    d->label_guard = xrealloc(d->label_guard, sizeof(int) * (size_t)(d->n_labels + 1));
    d->labels[d->n_labels] = xstrdup(name);
    d->label_guard[d->n_labels] = label_is_guard(name);
    return d->n_labels++;
}

int dataset_source(route_dataset *d, const char *name) {
    int i = find_name(d->sources, d->n_sources, name);
    if (i >= 0) return i;
    d->sources = xrealloc(d->sources, sizeof(char *) * (size_t)(d->n_sources + 1));
    d->sources[d->n_sources] = xstrdup(name);
    return d->n_sources++;
}

static uint64_t hash_text(const char *s, int source) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(source + 1) * 0x9e3779b97f4a7c15ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ? h : 1;
}

/* Inserts h into the open-addressing set; returns 0 if it was there. */
static int seen_insert(route_dataset *d, uint64_t h) {
    if (2 * (d->seen_n + 1) > d->seen_cap) {
        size_t cap = d->seen_cap ? d->seen_cap * 2 : 1024;
        uint64_t *old = d->seen;
        size_t oldcap = d->seen_cap;
        d->seen = xcalloc(cap, sizeof *d->seen);
        d->seen_cap = cap;
        d->seen_n = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i]) seen_insert(d, old[i]);
        free(old);
    }
    size_t i = h & (d->seen_cap - 1);
    while (d->seen[i]) {
        if (d->seen[i] == h) return 0;
        i = (i + 1) & (d->seen_cap - 1);
    }
    d->seen[i] = h;
    d->seen_n++;
    return 1;
}

/* Texts are trimmed of surrounding white space; duplicates inside one
 * source (the shared data repeats AdvBench rows) would weigh twice. */
void dataset_add(route_dataset *d, const char *text, int label, int source) {
    while (*text == ' ' || *text == '\n' || *text == '\t' || *text == '\r') text++;
    size_t len = strlen(text);
    while (len && (text[len - 1] == ' ' || text[len - 1] == '\n' || text[len - 1] == '\t' ||
                   text[len - 1] == '\r'))
        len--;
    if (!len) return;
    char *t = xstrndup(text, len);
    if (!seen_insert(d, hash_text(t, source))) {
        free(t);
        return;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 1024;
        d->ex = xrealloc(d->ex, sizeof *d->ex * (size_t)d->cap);
    }
    d->ex[d->n++] = (route_example){t, label, source, -1};
}

/* Chat phrasing, for every example. */
static const char *const chat_wrappers[][2] = {
    {"Can you help me with this? ", ""},
    {"Please ", ""},
    {"I need your help. ", ""},
    {"", " Thanks!"},
    {"Hi! ", ""},
    {"You are a helpful assistant. ", ""},
    {"Could you answer this for me: ", ""},
    {"", " Please explain your answer."},
    {"Hey, quick question. ", ""},
    {"I need you to do this for me: ", ""},
    {"", "\nCan you do that?"},
    {"My friend asked me this and I want your take. ", ""},
};

/* The imperative forms of harmful-request data sets ("Write a tutorial",
 * "Develop a strategy", "Give step-by-step instructions"), put around
 * benign content only: the verbs must not be what the guard learns. */
static const char *const task_wrappers[][2] = {
    {"Write a detailed answer to the following. ", ""},
    {"Create a step-by-step guide for this problem: ", ""},
    {"Develop a strategy to solve this: ", ""},
    {"Provide detailed instructions for answering this: ", ""},
    {"Give step-by-step instructions to work this out: ", ""},
    {"Write a tutorial that explains how to solve: ", ""},
    {"Generate a response to: ", ""},
    {"Outline a plan for answering this question: ", ""},
    {"Explain how to do the following: ", ""},
    {"Describe in detail how to approach this: ", ""},
};

#define N_CHAT (sizeof chat_wrappers / sizeof *chat_wrappers)
#define N_TASK (sizeof task_wrappers / sizeof *task_wrappers)

void dataset_augment(route_dataset *d, uint64_t seed) {
    int n = d->n;
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    buf t = BUF_INIT;
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int harmful = d->label_guard[d->ex[i].label];
        size_t pick = (size_t)(s % (harmful ? N_CHAT : N_CHAT + N_TASK));
        const char *const *w = pick < N_CHAT ? chat_wrappers[pick] : task_wrappers[pick - N_CHAT];
        buf_clear(&t);
        buf_printf(&t, "%s%s%s", w[0], d->ex[i].text, w[1]);
        int before = d->n;
        dataset_add(d, t.data, d->ex[i].label, d->ex[i].source);
        if (d->n > before) d->ex[d->n - 1].aug_of = i;
    }
    buf_free(&t);
}

/* ---- records from files ---- */

/* Where a loader sends records. fields: candidate names of the text field,
 * '|'-separated, first present wins. label_field: per-record label (user
 * files) or NULL to use label for every record. */
typedef struct sink {
    route_dataset *d;
    int source;
    const char *fields;
    const char *label_field;
    const char *label;
    int added;
} sink;

static void sink_put(sink *k, const char *text, const char *label) {
    if (!text) return;
    if (!label) label = k->label;
    if (!label || !*label) return;
    int before = k->d->n;
    dataset_add(k->d, text, dataset_label(k->d, label), k->source);
    k->added += k->d->n - before;
}

/* Copies the next '|'-separated name of *spec into out; 0 at the end. */
static int next_field(const char **spec, char *out, size_t cap) {
    const char *s = *spec;
    if (!*s) return 0;
    size_t n = strcspn(s, "|");
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
    *spec = s[n] ? s + n + 1 : s + n;
    return 1;
}

/* The text of a JSON record: a string, or the first present field of an
 * object. Self-instruct tasks carry their input in instances[0].input; a
 * request is instruction plus that input, so it is appended. */
static void json_record(sink *k, const cJSON *item) {
    if (cJSON_IsString(item)) {
        sink_put(k, item->valuestring, NULL);
        return;
    }
    if (!cJSON_IsObject(item)) return;
    const char *spec = k->fields;
    char name[64];
    const cJSON *f = NULL;
    while (!f && next_field(&spec, name, sizeof name)) {
        f = cJSON_GetObjectItemCaseSensitive(item, name);
        if (!cJSON_IsString(f)) f = NULL;
    }
    if (!f) return;
    const char *label = NULL;
    if (k->label_field) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(item, k->label_field);
        if (!cJSON_IsString(l)) return;
        label = l->valuestring;
    }
    const cJSON *inst = cJSON_GetObjectItemCaseSensitive(item, "instances");
    const cJSON *in0 = cJSON_IsArray(inst) ? cJSON_GetArrayItem(inst, 0) : NULL;
    const cJSON *input = in0 ? cJSON_GetObjectItemCaseSensitive(in0, "input") : NULL;
    if (cJSON_IsString(input) && input->valuestring[0]) {
        buf t = BUF_INIT;
        buf_printf(&t, "%s\n%s", f->valuestring, input->valuestring);
        sink_put(k, t.data, label);
        buf_free(&t);
    } else {
        sink_put(k, f->valuestring, label);
    }
}

/* A .json file: an array of records, or an object whose "examples" array
 * holds them (BIG-Bench-Hard). */
static int load_json(sink *k, const char *text) {
    cJSON *root = cJSON_Parse(text);
    if (!root) return -1;
    const cJSON *arr = cJSON_IsArray(root) ? root : cJSON_GetObjectItemCaseSensitive(root, "examples");
    int rc = cJSON_IsArray(arr) ? 0 : -1;
    const cJSON *it;
    if (rc == 0) cJSON_ArrayForEach(it, arr) json_record(k, it);
    cJSON_Delete(root);
    return rc;
}

/* JSON Lines; a line that does not parse is an error, blank lines are not. */
static int load_jsonl(sink *k, char *text) {
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        if (line[strspn(line, " \t\r")]) {
            cJSON *o = cJSON_Parse(line);
            if (!o) return -1;
            json_record(k, o);
            cJSON_Delete(o);
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

static int load_lines(sink *k, char *text) {
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = '\0';
        sink_put(k, line, NULL);
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

/* Reads one RFC 4180 field at *p (quoted fields may hold commas, newlines
 * and doubled quotes) into out; returns the delimiter that ended it:
 * ',' , '\n' or '\0'. */
static char csv_field(const char **p, buf *out) {
    const char *s = *p;
    buf_clear(out);
    if (*s == '"') {
        for (s++; *s; s++) {
            if (*s == '"') {
                if (s[1] == '"') { buf_putc(out, '"'); s++; continue; }
                s++;
                break;
            }
            buf_putc(out, *s);
        }
        while (*s && *s != ',' && *s != '\n') s++;   /* junk after the quote */
    } else {
        size_t n = strcspn(s, ",\n");
        size_t m = n;
        if (m && s[m - 1] == '\r') m--;
        buf_append(out, s, m);
        s += n;
    }
    char end = *s;
    if (end) s++;
    *p = s;
    return end ? end : '\0';
}

#define CSV_MAX_COLS 64

/* A CSV file with a header row: the text column is the first of k->fields
 * present; the label column (user files) is k->label_field. */
static int load_csv(sink *k, const char *text) {
    buf cell = BUF_INIT, label = BUF_INIT, body = BUF_INIT;
    char *header[CSV_MAX_COLS];
    int ncols = 0, rc = 0;
    const char *p = text;
    char end;
    do {
        end = csv_field(&p, &cell);
        if (ncols < CSV_MAX_COLS) header[ncols++] = xstrdup(cell.data ? cell.data : "");
    } while (end == ',');
    int tcol = -1, lcol = -1;
    const char *spec = k->fields;
    char name[64];
    while (tcol < 0 && next_field(&spec, name, sizeof name))
        for (int i = 0; i < ncols; i++)
            if (strcmp(header[i], name) == 0) tcol = i;
    if (k->label_field)
        for (int i = 0; i < ncols; i++)
            if (strcmp(header[i], k->label_field) == 0) lcol = i;
    if (tcol < 0 || (k->label_field && lcol < 0)) rc = -1;
    while (rc == 0 && *p) {
        int col = 0;
        buf_clear(&body);
        buf_clear(&label);
        do {
            end = csv_field(&p, &cell);
            if (col == tcol) buf_append(&body, cell.data, cell.len);
            if (col == lcol) buf_append(&label, cell.data, cell.len);
            col++;
        } while (end == ',');
        if (col > tcol && body.len) sink_put(k, body.data, lcol >= 0 ? label.data : NULL);
    }
    for (int i = 0; i < ncols; i++) free(header[i]);
    buf_free(&cell);
    buf_free(&label);
    buf_free(&body);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Reads path (gunzipping .gz) and runs the loader its extension names. */
static int load_file(sink *k, const char *path, char **err) {
    buf text = BUF_INIT;
    int rc;
    if (read_file_maybe_gz(path, &text)) {
        rc = -1;
    } else {
        char *t = text.data ? text.data : (char *)"";
        if (ends_with(path, ".jsonl") || ends_with(path, ".jsonl.gz")) rc = load_jsonl(k, t);
        else if (ends_with(path, ".json") || ends_with(path, ".json.gz")) rc = load_json(k, t);
        else if (ends_with(path, ".csv") || ends_with(path, ".csv.gz")) rc = load_csv(k, t);
        else if (ends_with(path, ".txt")) rc = load_lines(k, t);
        else rc = -1;
    }
    buf_free(&text);
    if (rc && err) {
        buf m = BUF_INIT;
        buf_printf(&m, "%s: cannot read or parse (expected .json, .jsonl[.gz], .csv or .txt)", path);
        *err = buf_detach(&m);
    }
    return rc;
}

/* ---- the shared data: label mapping of data/README.md ---- */

/* MMLU subject (in the RouteLLM file name) -> label. */
static const char *mmlu_label(const char *file) {
    static const char *const map[][2] = {
        {"mathematics", "math"}, {"statistics", "math"}, {"abstract_algebra", "math"},
        {"computer_science", "code"}, {"machine_learning", "code"},
        {"formal_logic", "reasoning"}, {"logical_fallacies", "reasoning"},
        {"philosophy", "language"}, {"world_religions", "language"}, {"sociology", "language"},
        {"marketing", "language"}, {"geography", "language"}, {"global_facts", "language"},
        {"computer_security", "language"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strstr(file, map[i][0])) return map[i][1];
    return NULL;
}

static const char *bbh_label(const char *file) {
    return strstr(file, "multistep_arithmetic") ? "math" : "reasoning";
}

static const struct shared_source {
    const char *dir;
    const char *fields;
    const char *label;                     /* NULL: by file */
    const char *(*label_of)(const char *file);
} shared_sources[] = {
    {"grade-school-math", "question", "math", NULL},
    {"BiRM", "question", "math", NULL},
    {"human-eval", "prompt", "code", NULL},
    {"OckBench", "text", "code", NULL},
    {"BIG-Bench-Hard", "input", NULL, bbh_label},
    {"self-instruct", "instruction", "language", NULL},
    {"RouteLLM", "prompt", NULL, mmlu_label},
    {"refusal_direction", "instruction|goal|Behavior", "harmful", NULL},
    {"PocoGCG", "goal|target", "harmful", NULL},
    {"Self-Reminder-Data", "prompt", "jailbreak", NULL},
};

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The data files of dir, sorted so that loading order (and so training
 * with a seed) does not depend on the file system. */
static char **list_data_files(const char *dir, int *n) {
    DIR *dh = opendir(dir);
    char **names = NULL;
    *n = 0;
    if (!dh) return NULL;
    struct dirent *e;
    while ((e = readdir(dh))) {
        const char *f = e->d_name;
        if (!(ends_with(f, ".json") || ends_with(f, ".jsonl") || ends_with(f, ".gz") ||
              ends_with(f, ".csv") || ends_with(f, ".txt")))
            continue;
        names = xrealloc(names, sizeof(char *) * (size_t)(*n + 1));
        names[(*n)++] = xstrdup(f);
    }
    closedir(dh);
    if (*n) qsort(names, (size_t)*n, sizeof *names, cmp_str);
    return names;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static int load_shared(route_dataset *d, const char *root, char **err) {
    int rc = 0;
    /* fixed label order: the four domains of the gateway come first */
    static const char *const order[] = {"code", "math", "reasoning", "language", "harmful", "jailbreak"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) dataset_label(d, order[i]);
    for (size_t s = 0; s < sizeof shared_sources / sizeof shared_sources[0] && rc == 0; s++) {
        const struct shared_source *src = &shared_sources[s];
        buf dir = BUF_INIT;
        buf_printf(&dir, "%s/router/%s", root, src->dir);
        int n;
        char **files = list_data_files(dir.data, &n);
        sink k = {d, dataset_source(d, src->dir), src->fields, NULL, NULL, 0};
        for (int i = 0; i < n && rc == 0; i++) {
            k.label = src->label ? src->label : src->label_of(files[i]);
            if (!k.label) continue;
            buf path = BUF_INIT;
            buf_printf(&path, "%s/%s", dir.data, files[i]);
            rc = load_file(&k, path.data, err);
            buf_free(&path);
        }
        if (rc == 0 && k.added == 0) {
            buf m = BUF_INIT;
            buf_printf(&m, "%s: no examples found", dir.data);
            *err = buf_detach(&m);
            rc = -1;
        }
        free_names(files, n);
        buf_free(&dir);
    }
    return rc;
}

/* ---- user files ---- */

int dataset_load_user_file(route_dataset *d, const char *path, char **err) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char name[256];
    snprintf(name, sizeof name, "%s", base);
    char *dot = strchr(name, '.');
    if (dot && dot != name) *dot = '\0';
    sink k = {d, dataset_source(d, name), "text", "label", NULL, 0};
    if (load_file(&k, path, err)) return -1;
    if (k.added == 0) {
        buf m = BUF_INIT;
        buf_printf(&m, "%s: no {\"text\", \"label\"} records", path);
        *err = buf_detach(&m);
        return -1;
    }
    return 0;
}

static int load_path(route_dataset *d, const char *path, char **err);

int dataset_load(route_dataset *d, const char *path, char **err) {
    int rc = load_path(d, path, err);
    d->n_main_sources = d->n_sources;
    return rc;
}

static int load_path(route_dataset *d, const char *path, char **err) {
    struct stat st;
    if (stat(path, &st) != 0) {
        buf m = BUF_INIT;
        buf_printf(&m, "%s: no such file or directory", path);
        *err = buf_detach(&m);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) return dataset_load_user_file(d, path, err);
    buf sub = BUF_INIT;
    buf_printf(&sub, "%s/router", path);
    int shared = stat(sub.data, &st) == 0 && S_ISDIR(st.st_mode);
    buf_free(&sub);
    if (shared) return load_shared(d, path, err);
    int n, rc = 0;
    char **files = list_data_files(path, &n);
    for (int i = 0; i < n && rc == 0; i++) {
        buf p = BUF_INIT;
        buf_printf(&p, "%s/%s", path, files[i]);
        rc = dataset_load_user_file(d, p.data, err);
        buf_free(&p);
    }
    free_names(files, n);
    if (rc == 0 && d->n == 0) {
        buf m = BUF_INIT;
        buf_printf(&m, "%s: no data files (*.jsonl, *.jsonl.gz, *.json, *.csv)", path);
        *err = buf_detach(&m);
        rc = -1;
    }
    return rc;
}
