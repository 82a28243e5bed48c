/* it_cli: the msoa command's user-facing text and exit codes: help, an
 * unknown command, bad flags, and the hint when no node is configured. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itlib.h"
#include "testlib.h"

/* Runs msoa with args (a shell fragment) and captures stdout+stderr. */
static int run(const char *args, buf *out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", it_bin("msoa"), args);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) buf_append(out, tmp, n);
    int status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_help(void) {
    buf out = BUF_INIT;
    CHECK_EQ_INT(run("--help", &out), 0);
    CHECK_CONTAINS(out.data, "usage: msoa COMMAND");
    CHECK_CONTAINS(out.data, "  up ");
    buf_clear(&out);
    CHECK_EQ_INT(run("up --help", &out), 0);
    CHECK_CONTAINS(out.data, "usage: msoa up");
    CHECK_CONTAINS(out.data, "--node NAME=URL");
    CHECK_CONTAINS(out.data, "--max-body");
    buf_clear(&out);
    CHECK_EQ_INT(run("", &out), 2);
    CHECK_CONTAINS(out.data, "usage: msoa COMMAND");
    buf_free(&out);
}

static void test_errors(void) {
    buf out = BUF_INIT;
    CHECK_EQ_INT(run("frobnicate", &out), 2);
    CHECK_CONTAINS(out.data, "unknown command 'frobnicate'");
    buf_clear(&out);
    CHECK_EQ_INT(run("up --no-such-flag", &out), 2);
    CHECK_CONTAINS(out.data, "--no-such-flag");
    buf_clear(&out);
    CHECK_EQ_INT(run("up --node 'bad spec'", &out), 2);
    CHECK_CONTAINS(out.data, "--node");
    buf_clear(&out);
    CHECK_EQ_INT(run("up --node a=http://127.0.0.1:1,price_in=abc", &out), 2);
    CHECK_CONTAINS(out.data, "price_in");
    CHECK_CONTAINS(out.data, "abc");
    buf_clear(&out);
    CHECK_EQ_INT(run("up --listen 127.0.0.1:99999", &out), 2);
    CHECK_CONTAINS(out.data, "--listen");
    buf_clear(&out);
    CHECK_EQ_INT(run("up --model-dir /nonexistent-msoa-models", &out), 2);
    CHECK_CONTAINS(out.data, "cannot read '/nonexistent-msoa-models'");
    buf_free(&out);
}

static void test_no_nodes_hint(void) {
    /* With no node, msoa says how to add one; it still serves /health. */
    char path[4096], empty_dir[] = "/tmp/msoa-it-cli-XXXXXX";
    snprintf(path, sizeof path, "%s", it_bin("msoa"));
    CHECK(mkdtemp(empty_dir) != NULL);
    char *argv[] = {path, "up", "--listen", "127.0.0.1:0", "--model-dir", empty_dir, NULL};
    it_proc p;
    CHECK_EQ_INT(it_start(&p, argv), 0);
    if (!p.pid) return;
    it_response r;
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}";
    CHECK_EQ_INT(it_http(p.port, "POST", "/v1/chat/completions", NULL, body, strlen(body), 3000, &r), 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK_CONTAINS(r.body.data, "--node NAME=URL");
    it_response_free(&r);
    it_stop(&p, 15);
    rmdir(empty_dir);
}

int main(void) {
    TEST(test_help);
    TEST(test_errors);
    TEST(test_no_nodes_hint);
    return test_done();
}
