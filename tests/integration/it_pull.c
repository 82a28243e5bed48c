/* it_pull: `msoa pull` against tests/tools/file_server serving a copy of
 * stories260K.gguf: a whole download with its checksum, an interrupted one
 * resumed with a Range request, a server that will not resume, a .part that
 * is already whole (416), and each failure a user can meet (HTTP 404, a
 * wrong checksum, a file that is not GGUF, connection refused, disk full,
 * bad URL) with its message and what it leaves on disk. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itlib.h"
#include "testlib.h"

#define CUT_AT 300000

static char tmp[] = "/tmp/msoa-it-pull-XXXXXX";
static char fixture[4300];   /* the served model */
static char fixture_sha[65];
static buf fixture_bytes;
static int port;

static int read_all(const char *path, buf *out) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) buf_append(out, chunk, n);
    fclose(f);
    return 0;
}

static int write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static void sha256_hex(const buf *b, char out[65]) {
    unsigned char d[32];
    unsigned n = 0;
    if (!EVP_Digest(b->data, b->len, d, &n, EVP_sha256(), NULL)) abort();
    for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* A fresh, empty directory under tmp. */
static const char *dir_for(const char *name) {
    static char d[4200];
    snprintf(d, sizeof d, "%s/%s", tmp, name);
    mkdir(d, 0755);
    return d;
}

/* Runs `ENV msoa pull ARGS` (shell fragments); stdout and stderr apart. */
static int pull(const char *env, const char *args, buf *out, buf *err) {
    char cmd[9000], o[4300], e[4300];
    snprintf(o, sizeof o, "%s/stdout", tmp);
    snprintf(e, sizeof e, "%s/stderr", tmp);
    snprintf(cmd, sizeof cmd, "%s '%s' pull %s >'%s' 2>'%s'", env ? env : "", it_bin("msoa"), args, o, e);
    int status = system(cmd);
    buf_clear(out);
    buf_clear(err);
    buf_puts(out, "");
    buf_puts(err, "");
    read_all(o, out);
    read_all(e, err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int file_equals_fixture(const char *path) {
    buf b = BUF_INIT;
    int same = read_all(path, &b) == 0 && b.len == fixture_bytes.len && !memcmp(b.data, fixture_bytes.data, b.len);
    buf_free(&b);
    return same;
}

/* What the server was asked, one line per file request. */
static void server_log(buf *out) {
    it_response r;
    buf_clear(out);
    if (it_http(port, "GET", "/debug/log", NULL, NULL, 0, 3000, &r) == 0) buf_append(out, r.body.data, r.body.len);
    buf_puts(out, "");
    it_response_free(&r);
}

static void arm_cut(long n) {
    char path[64];
    it_response r;
    snprintf(path, sizeof path, "/debug/cut?%ld", n);
    CHECK_EQ_INT(it_http(port, "POST", path, NULL, "", 0, 3000, &r), 0);
    it_response_free(&r);
}

static void test_full_download(void) {
    const char *d = dir_for("full");
    char args[9000], expect[4400], path[4300];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf --dir '%s' --sha256 %s", port, d, fixture_sha);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 0);
    snprintf(path, sizeof path, "%s/model.gguf", d);
    snprintf(expect, sizeof expect, "%s\n", path);
    CHECK_STR(out.data, expect);
    CHECK(file_equals_fixture(path));
    CHECK_CONTAINS(err.data, "100%");  /* progress, a line per 10% when not a terminal */
    CHECK_CONTAINS(err.data, "as expected");
    snprintf(path, sizeof path, "%s/model.gguf.part", d);
    CHECK_EQ_INT(file_size(path), -1);
    /* Pulling again finds it and downloads nothing. */
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 0);
    CHECK_STR(out.data, expect);
    CHECK_CONTAINS(err.data, "already here");
    buf_free(&out);
    buf_free(&err);
}

static void test_interrupted_then_resumed(void) {
    const char *d = dir_for("resume");
    char args[9000], path[4300], part[4300], range[64];
    buf out = BUF_INIT, err = BUF_INIT, log = BUF_INIT;
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf --dir '%s' --sha256 %s", port, d, fixture_sha);
    snprintf(path, sizeof path, "%s/model.gguf", d);
    snprintf(part, sizeof part, "%s/model.gguf.part", d);
    arm_cut(CUT_AT);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_STR(out.data, "");
    CHECK_CONTAINS(err.data, "download interrupted");
    CHECK_CONTAINS(err.data, "run the same command again to resume");
    CHECK_EQ_INT(file_size(part), CUT_AT);
    CHECK_EQ_INT(file_size(path), -1);

    CHECK_EQ_INT(pull(NULL, args, &out, &err), 0);
    CHECK_CONTAINS(err.data, "resuming");
    CHECK(file_equals_fixture(path));
    CHECK_EQ_INT(file_size(part), -1);
    server_log(&log);
    snprintf(range, sizeof range, "/model.gguf range=bytes=%d-\n", CUT_AT);
    CHECK_CONTAINS(log.data, range);
    buf_free(&out);
    buf_free(&err);
    buf_free(&log);
}

/* A server without Range support answers 200: the .part is started over,
 * and the checksum still covers the right bytes. */
static void test_server_without_ranges(void) {
    const char *d = dir_for("norange");
    char args[9000], path[4300], part[4300];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(part, sizeof part, "%s/model.gguf.part", d);
    CHECK_EQ_INT(write_all(part, fixture_bytes.data, 5000), 0);
    snprintf(args, sizeof args, "http://127.0.0.1:%d/norange/model.gguf --dir '%s' --sha256 %s", port, d, fixture_sha);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 0);
    CHECK_CONTAINS(err.data, "starting over");
    snprintf(path, sizeof path, "%s/model.gguf", d);
    CHECK(file_equals_fixture(path));
    buf_free(&out);
    buf_free(&err);
}

/* A .part that already holds the whole file gets 416 and is kept; one
 * longer than the file gets 416 too and is downloaded again. */
static void test_range_not_satisfiable(void) {
    const char *d = dir_for("r416");
    char args[9000], path[4300], part[4300], range[64];
    buf out = BUF_INIT, err = BUF_INIT, log = BUF_INIT;
    snprintf(part, sizeof part, "%s/model.gguf.part", d);
    snprintf(path, sizeof path, "%s/model.gguf", d);
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf --dir '%s' --sha256 %s", port, d, fixture_sha);
    CHECK_EQ_INT(write_all(part, fixture_bytes.data, fixture_bytes.len), 0);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 0);
    CHECK(file_equals_fixture(path));
    server_log(&log);
    snprintf(range, sizeof range, "range=bytes=%zu-\n", fixture_bytes.len);
    CHECK_CONTAINS(log.data, range);

    unlink(path);
    buf longer = BUF_INIT;
    buf_append(&longer, fixture_bytes.data, fixture_bytes.len);
    buf_append(&longer, "trailing junk", 13);
    CHECK_EQ_INT(write_all(part, longer.data, longer.len), 0);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 0);
    CHECK_CONTAINS(err.data, "starting over");
    CHECK(file_equals_fixture(path));
    buf_free(&longer);
    buf_free(&out);
    buf_free(&err);
    buf_free(&log);
}

static void test_wrong_checksum(void) {
    const char *d = dir_for("badsum");
    char args[9000], path[4300], wrong[65];
    buf out = BUF_INIT, err = BUF_INIT;
    memset(wrong, 'a', 64);
    wrong[64] = '\0';
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf --dir '%s' --sha256 %s", port, d, wrong);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_STR(out.data, "");
    CHECK_CONTAINS(err.data, "checksum mismatch");
    CHECK_CONTAINS(err.data, wrong);
    CHECK_CONTAINS(err.data, fixture_sha);
    snprintf(path, sizeof path, "%s/model.gguf", d);
    CHECK_EQ_INT(file_size(path), -1);
    snprintf(path, sizeof path, "%s/model.gguf.part", d);
    CHECK_EQ_INT(file_size(path), -1);
    buf_free(&out);
    buf_free(&err);
}

static void test_http_404(void) {
    const char *d = dir_for("missing");
    char args[9000], path[4300];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(args, sizeof args, "http://127.0.0.1:%d/nothere.gguf --dir '%s'", port, d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "HTTP 404 Not Found");
    snprintf(path, sizeof path, "%s/nothere.gguf.part", d);
    CHECK_EQ_INT(file_size(path), -1);
    buf_free(&out);
    buf_free(&err);
}

static void test_not_gguf(void) {
    const char *d = dir_for("notgguf");
    char args[9000], path[4300];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(args, sizeof args, "http://127.0.0.1:%d/page.gguf --dir '%s'", port, d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "not a GGUF model");
    CHECK_CONTAINS(err.data, "<html>");
    snprintf(path, sizeof path, "%s/page.gguf", d);
    CHECK_EQ_INT(file_size(path), -1);
    /* A GGUF header with the rest missing: the engine's reader says why. */
    snprintf(args, sizeof args, "http://127.0.0.1:%d/truncated.gguf --dir '%s'", port, d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "not a valid GGUF model: gguf:");
    snprintf(path, sizeof path, "%s/truncated.gguf.part", d);
    CHECK_EQ_INT(file_size(path), -1);
    buf_free(&out);
    buf_free(&err);
}

static void test_connection_and_url_errors(void) {
    const char *d = dir_for("errors");
    char args[9000];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf --dir '%s'", it_closed_port(), d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "cannot connect");
    CHECK_CONTAINS(err.data, "Connection refused");
    snprintf(args, sizeof args, "ftp://127.0.0.1:%d/model.gguf --dir '%s'", port, d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "bad URL");
    snprintf(args, sizeof args, "http://127.0.0.1:%d/ --dir '%s'", port, d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "--name");
    CHECK_EQ_INT(pull(NULL, "http://127.0.0.1:1/m.gguf --sha256 xyz", &out, &err), 2);
    CHECK_CONTAINS(err.data, "64 hex digits");
    CHECK_EQ_INT(pull(NULL, "", &out, &err), 2);
    CHECK_CONTAINS(err.data, "usage: msoa pull URL");
    CHECK_EQ_INT(pull(NULL, "--help", &out, &err), 0);
    CHECK_CONTAINS(out.data, "--sha256");
    buf_free(&out);
    buf_free(&err);
}

/* /dev/full in place of the .part: every write fails with ENOSPC. */
static void test_disk_full(void) {
    if (access("/dev/full", W_OK) != 0) return;
    const char *d = dir_for("full-disk");
    char args[9000], part[4300];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(part, sizeof part, "%s/model.gguf.part", d);
    CHECK_EQ_INT(symlink("/dev/full", part), 0);
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf --dir '%s'", port, d);
    CHECK_EQ_INT(pull(NULL, args, &out, &err), 1);
    CHECK_CONTAINS(err.data, "disk full");
    buf_free(&out);
    buf_free(&err);
}

/* Without --dir: $MSOA_MODEL_DIR, else $XDG_CACHE_HOME/msoa/models. */
static void test_default_directory(void) {
    char env[9000], args[200], expect[4300];
    buf out = BUF_INIT, err = BUF_INIT;
    snprintf(args, sizeof args, "http://127.0.0.1:%d/model.gguf", port);
    snprintf(env, sizeof env, "MSOA_MODEL_DIR='%s/env-dir'", tmp);
    CHECK_EQ_INT(pull(env, args, &out, &err), 0);
    snprintf(expect, sizeof expect, "%s/env-dir/model.gguf\n", tmp);
    CHECK_STR(out.data, expect);
    snprintf(env, sizeof env, "env -u MSOA_MODEL_DIR XDG_CACHE_HOME='%s/xdg'", tmp);
    CHECK_EQ_INT(pull(env, args, &out, &err), 0);
    snprintf(expect, sizeof expect, "%s/xdg/msoa/models/model.gguf\n", tmp);
    CHECK_STR(out.data, expect);
    buf_free(&out);
    buf_free(&err);
}

/* The served directory: the model, an HTML page and a cut-off GGUF. */
static int make_fixtures(const char *srv) {
    char path[4300];
    static const char page[] = "<html>no model here</html>\n";
    if (mkdir(srv, 0755) < 0 || read_all(test_shared_path("models/stories260K.gguf"), &fixture_bytes) < 0) return -1;
    sha256_hex(&fixture_bytes, fixture_sha);
    snprintf(fixture, sizeof fixture, "%s/model.gguf", srv);
    snprintf(path, sizeof path, "%s/page.gguf", srv);
    if (write_all(fixture, fixture_bytes.data, fixture_bytes.len) < 0 || write_all(path, page, sizeof page - 1) < 0) return -1;
    snprintf(path, sizeof path, "%s/truncated.gguf", srv);
    return write_all(path, fixture_bytes.data, 4096);
}

int main(void) {
    char srv[4200], cmd[4300];
    if (!mkdtemp(tmp)) return 1;
    snprintf(srv, sizeof srv, "%s/srv", tmp);
    if (make_fixtures(srv) < 0) {
        fprintf(stderr, "it_pull: cannot set up fixtures in %s\n", tmp);
        return 1;
    }
    char server_path[4200];
    snprintf(server_path, sizeof server_path, "%s", it_bin("file_server"));
    char *argv[] = {server_path, "--root", srv, NULL};
    it_proc server;
    if (it_start(&server, argv) < 0) {
        fprintf(stderr, "it_pull: file_server did not start\n");
        return 1;
    }
    port = server.port;
    TEST(test_full_download);
    TEST(test_interrupted_then_resumed);
    TEST(test_server_without_ranges);
    TEST(test_range_not_satisfiable);
    TEST(test_wrong_checksum);
    TEST(test_http_404);
    TEST(test_not_gguf);
    TEST(test_connection_and_url_errors);
    TEST(test_disk_full);
    TEST(test_default_directory);
    it_stop(&server, 15);
    buf_free(&fixture_bytes);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "it_pull: could not remove %s\n", tmp);
    return test_done();
}
