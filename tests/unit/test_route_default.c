/* test_route_default: the committed default model (models/router.msoa) is
 * what `msoa router train --data ../shared/data --extra
 * models/data/<each of extras[]> --seed 1` builds (models/README.md): a
 * rebuild reaches the recorded leave-one-source-out accuracy and guard
 * recall and decides like the committed file. Skipped (passes) when
 * ../shared/data is absent. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "route/dataset.h"
#include "route/model.h"
#include "route/router.h"
#include "route/train.h"
#include "testlib.h"

/* Recorded by `msoa router eval` (the same data, seed 1) when the default
 * model was built (see models/README.md): the mean accuracy over the
 * shared sources (the extra files left out) and the guard's recall on the
 * harmful sources, out of source. */
#define RECORDED_LOSO_MEAN 0.860f
#define RECORDED_GUARD_RECALL 0.865f   /* mean over the harmful sources of ../shared/data */
#define TOLERANCE 0.01f

static const char *const extras[] = {"benign-chat", "jailbreak-ours", "reasoning-ours", "math-ours", "code-ours",
                                     "language-ours", "harmful-ours"};

static int have(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_rebuild_matches_recorded(void) {
    char data[4096], emb[4096], model[4096], extra[4096];
    snprintf(data, sizeof data, "%s", test_shared_path("data"));
    snprintf(emb, sizeof emb, "%s", test_shared_path("data/embeddings/glove-100d-30k.txt.gz"));
    snprintf(model, sizeof model, "%s", test_source_path("models/router.msoa"));
    if (!have(data) || !have(emb)) {
        fprintf(stderr, "  skip: no shared data at %s\n", data);
        return;
    }
    route_dataset d;
    char *err = NULL;
    dataset_init(&d);
    CHECK_EQ_INT(dataset_load(&d, data, &err), 0);
    for (size_t i = 0; i < sizeof extras / sizeof *extras; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/data/%s.jsonl", extras[i]);
        snprintf(extra, sizeof extra, "%s", test_source_path(rel));
        CHECK_EQ_INT(dataset_load_user_file(&d, extra, &err), 0);
    }
    route_train_opts o;
    route_train_defaults(&o);
    o.seed = 1;
    o.embeddings = emb;
    dataset_augment(&d, o.seed);
    route_trainer *t = route_trainer_new(&d, &o, &err);
    CHECK(t != NULL);
    route_eval r;
    CHECK(t && route_trainer_eval(t, 0, &r, NULL, &err) == 0);
    float recall = 0;
    int harmful = 0;
    for (int s = 0; s < d.n_main_sources; s++)
        if (r.guard_harmful[s]) recall += r.guard_rate[s], harmful++;
    recall = harmful ? recall / (float)harmful : 0;
    fprintf(stderr, "  leave-one-source-out mean accuracy %.3f (recorded %.3f), guard recall %.3f (recorded %.3f)\n",
            r.mean_accuracy_main, RECORDED_LOSO_MEAN, recall, RECORDED_GUARD_RECALL);
    CHECK(fabsf(r.mean_accuracy_main - RECORDED_LOSO_MEAN) <= TOLERANCE);
    CHECK(fabsf(recall - RECORDED_GUARD_RECALL) <= 2 * TOLERANCE);

    route_model *fresh = t ? route_trainer_fit(t, NULL, &err) : NULL;
    route_model *shipped = route_model_load(model, &err);
    CHECK(fresh && shipped);
    if (fresh && shipped) {
        CHECK(route_model_max_bytes(shipped) <= 4096);
        route_model_set_guard_threshold(fresh, route_model_guard_threshold(shipped));
        int same = 0, same_guard = 0, n = 0;
        for (int i = 0; i < d.n; i++) {
            if (d.ex[i].aug_of >= 0) continue;
            route_decision a, b;
            size_t len = strlen(d.ex[i].text);
            route_classify(fresh, NULL, 0, d.ex[i].text, len, 0, &a);
            route_classify(shipped, NULL, 0, d.ex[i].text, len, 0, &b);
            same += a.domain == b.domain;
            same_guard += a.unsafe == b.unsafe;
            n++;
        }
        fprintf(stderr, "  rebuilt vs committed: %d/%d same domain, %d/%d same guard flag\n", same, n,
                same_guard, n);
        CHECK(same * 100 >= n * 99);
        CHECK(same_guard * 100 >= n * 99);
    }
    free(err);
    route_model_free(fresh);
    route_model_free(shipped);
    route_trainer_free(t);
    dataset_free(&d);
}

int main(void) {
    TEST(test_rebuild_matches_recorded);
    return test_done();
}
