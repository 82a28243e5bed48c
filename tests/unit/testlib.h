/* testlib: the smallest test harness that does the job.
 *
 * A test program is a main() calling TEST(fn) for each case. CHECK records
 * a failure with file:line and carries on, so one run shows every broken
 * expectation; test_done() prints "N passed, N failed" and returns the exit
 * code. ctest runs each program and prints the overall summary. */
#ifndef MSOA_TESTLIB_H
#define MSOA_TESTLIB_H

#include <stdio.h>
#include <string.h>

extern int test_checks_failed;   /* failures inside the current case */
extern int test_cases_passed, test_cases_failed;

void test_fail(const char *file, int line, const char *what);
void test_run(const char *name, void (*fn)(void));
int test_done(void);
/* Path of a file under ../shared (env MSOA_SHARED), in a static buffer. */
const char *test_shared_path(const char *rel);
/* Path of a file under the source tree (env MSOA_SOURCE), static buffer. */
const char *test_source_path(const char *rel);

#define TEST(fn) test_run(#fn, fn)
#define CHECK(cond) do { if (!(cond)) test_fail(__FILE__, __LINE__, #cond); } while (0)
#define CHECK_EQ_INT(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) { char m_[800]; snprintf(m_, sizeof m_, "%.300s == %.300s (%lld != %lld)", #a, #b, a_, b_); \
    test_fail(__FILE__, __LINE__, m_); } } while (0)
#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) { char m_[1200]; \
    snprintf(m_, sizeof m_, "%.300s == %.300s (\"%.200s\" != \"%.200s\")", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    test_fail(__FILE__, __LINE__, m_); } } while (0)
#define CHECK_CONTAINS(hay, needle) do { const char *h_ = (hay), *n_ = (needle); \
    if (!h_ || !strstr(h_, n_)) { char m_[1200]; \
    snprintf(m_, sizeof m_, "%.300s contains %.300s (\"%.300s\")", #hay, #needle, h_ ? h_ : "(null)"); \
    test_fail(__FILE__, __LINE__, m_); } } while (0)

#endif
