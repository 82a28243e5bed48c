/* dataset: labelled texts grouped by source, for training and evaluating
 * the router and the guard.
 *
 * Two ways in: the shared data folder (router/<source>/ with the label
 * mapping of its README, one loader per file format: json, jsonl, jsonl.gz,
 * csv, txt) or a user's own files of {"text": ..., "label": ...} lines, each
 * file one source, with any label set. Labels named harmful, jailbreak or
 * unsafe train the guard; every other label is a router class. */
#ifndef MSOA_ROUTE_DATASET_H
#define MSOA_ROUTE_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef struct route_example {
    char *text;
    int label;    /* index into labels */
    int source;   /* index into sources */
    int aug_of;   /* -1, or the example this one is a rewording of */
} route_example;

typedef struct route_dataset {
    route_example *ex;
    int n, cap;
    char **labels;      /* names, in order of first use */
    int *label_guard;   /* 1: label trains the guard (harmful/jailbreak/unsafe) */
    int n_labels;
    char **sources;
    int n_sources;
    int n_main_sources; /* sources 0..n-1 came from dataset_load (the --data folder);
                           later ones are extra files, reported apart */
    uint64_t *seen;     /* hashes of (text, source) added, to drop duplicates */
    size_t seen_cap, seen_n;
} route_dataset;

void dataset_init(route_dataset *d);
void dataset_free(route_dataset *d);
int dataset_label(route_dataset *d, const char *name);    /* finds or adds */
int dataset_source(route_dataset *d, const char *name);   /* finds or adds */
/* Adds a copy of text unless it is empty or already in this source. */
void dataset_add(route_dataset *d, const char *text, int label, int source);
int label_is_guard(const char *name);

/* Adds to every example a reworded copy, chosen with the seed: wrapped in
 * chat phrasing ("Can you help me with this? ...", "... Thanks!") or, for
 * benign rows only, in the imperative of harmful-request data sets
 * ("Develop a strategy to solve this: ..."). Most benign sources are bare
 * questions while harmful ones are requests and jailbreaks talk to "you":
 * without this the guard learns the form of a request, not its content.
 * Copies train the guard only (aug_of >= 0). */
void dataset_augment(route_dataset *d, uint64_t seed);

/* Loads path: a directory with router/ (the shared data), a directory of
 * user files (*.jsonl, *.jsonl.gz, *.json, *.csv; each a source), or one
 * such file. Returns 0, or -1 with *err (caller frees). */
int dataset_load(route_dataset *d, const char *path, char **err);

/* One file of {"text","label"} records as a source named after the file.
 * Format by extension: .jsonl(.gz), .json (array), .csv (text,label). */
int dataset_load_user_file(route_dataset *d, const char *path, char **err);

#endif
