/* testlib: see testlib.h. */
#include "testlib.h"

#include <stdlib.h>

int test_checks_failed;
int test_cases_passed, test_cases_failed;

void test_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "  FAIL %s:%d: %s\n", file, line, what);
    test_checks_failed++;
}

void test_run(const char *name, void (*fn)(void)) {
    test_checks_failed = 0;
    fn();
    if (test_checks_failed) {
        test_cases_failed++;
        fprintf(stderr, "FAIL %s\n", name);
    } else {
        test_cases_passed++;
        fprintf(stderr, "ok   %s\n", name);
    }
}

int test_done(void) {
    printf("%d passed, %d failed\n", test_cases_passed, test_cases_failed);
    return test_cases_failed ? 1 : 0;
}

static const char *path_under(const char *env, const char *fallback, const char *rel) {
    static char buf[4096];
    const char *dir = getenv(env);
    snprintf(buf, sizeof buf, "%s/%s", dir && *dir ? dir : fallback, rel);
    return buf;
}

const char *test_shared_path(const char *rel) { return path_under("MSOA_SHARED", "../shared", rel); }
const char *test_source_path(const char *rel) { return path_under("MSOA_SOURCE", ".", rel); }
