/* test_base_config: defaults, each source (file, environment, flags), their
 * precedence, node specs, and the message of every kind of refusal. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "testlib.h"

static const char *const vars[] = {
    "MSOA_CONFIG", "MSOA_LISTEN", "MSOA_WORKERS", "MSOA_NODES", "MSOA_MAX_BODY", "MSOA_MAX_HEADER",
    "MSOA_MAX_CONNECTIONS", "MSOA_IDLE_TIMEOUT_MS", "MSOA_REQUEST_TIMEOUT_MS", "MSOA_UPSTREAM_CONNECT_TIMEOUT_MS",
    "MSOA_UPSTREAM_TIMEOUT_MS", "MSOA_UPSTREAM_STALL_MS", "MSOA_UPSTREAM_WAIT_MS", "MSOA_NODE_MAX_CONNECTIONS", "MSOA_BASELINE_PRICE_IN", "MSOA_BASELINE_PRICE_OUT",
    "MSOA_BASELINE_MODEL", "MSOA_MODEL_DIR",
};

static void clear_env(void) {
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) unsetenv(vars[i]);
}

/* A config file with `text`, in a static path. */
static const char *write_file(const char *text) {
    static char path[64];
    strcpy(path, "/tmp/msoa-config-test-XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    size_t n = strlen(text);
    CHECK(write(fd, text, n) == (ssize_t)n);
    close(fd);
    return path;
}

/* Loads `text` as a file over defaults; returns the error or NULL (static). */
static char *file_error(const char *text) {
    static char *last;
    free(last);
    last = NULL;
    msoa_config c;
    config_defaults(&c);
    const char *path = write_file(text);
    if (config_load_file(&c, path, &last) == 0) CHECK(last == NULL);
    else CHECK(last != NULL);
    unlink(path);
    config_free(&c);
    return last;
}

static char *args_error_v(int argc, char **argv) {
    static char *last;
    free(last);
    last = NULL;
    msoa_config c;
    config_defaults(&c);
    int rc = config_apply_args(&c, argc, argv, &last);
    CHECK(rc == 0 ? last == NULL : last != NULL);
    config_free(&c);
    return last;
}

/* One flag with its value, as "--flag value". */
static char *flag_error(const char *flag, const char *value) {
    char *argv[] = {(char *)flag, (char *)value};
    return args_error_v(value ? 2 : 1, argv);
}

static char *node_error(const char *spec) {
    static char *last;
    free(last);
    last = NULL;
    node_spec n;
    if (config_parse_node(spec, &n, &last) == 0) {
        CHECK(last == NULL);
        free(n.name);
        free(n.url);
        free(n.model);
        free(n.domain);
        free(n.api_key);
    }
    return last;
}

static void defaults(void) {
    clear_env();
    msoa_config c;
    config_defaults(&c);
    CHECK_STR(c.listen_host, "127.0.0.1");
    CHECK_EQ_INT(c.listen_port, 8080);
    CHECK_EQ_INT(c.workers, sysconf(_SC_NPROCESSORS_ONLN));
    CHECK_EQ_INT(c.max_body, 1 << 20);
    CHECK_EQ_INT(c.max_header, 16 << 10);
    CHECK_EQ_INT(c.max_connections, 10000);
    CHECK_EQ_INT(c.idle_timeout_ms, 60000);
    CHECK_EQ_INT(c.request_timeout_ms, 30000);
    CHECK_EQ_INT(c.upstream_connect_timeout_ms, 5000);
    CHECK_EQ_INT(c.upstream_timeout_ms, 600000);
    CHECK_EQ_INT(c.upstream_stall_ms, 60000);
    CHECK_EQ_INT(c.upstream_wait_ms, 10000);
    CHECK_EQ_INT(c.node_max_connections, 256);
    CHECK(c.baseline_price_in == 3 && c.baseline_price_out == 10);
    CHECK_STR(c.baseline_model, "gpt-4.1");
    CHECK(c.model_dir == NULL);
    CHECK(c.nodes == NULL && c.n_nodes == 0);
    config_free(&c);
    /* nothing set anywhere: config_load gives the defaults */
    char *err = NULL;
    CHECK_EQ_INT(config_load(&c, 0, NULL, &err), 0);
    CHECK(err == NULL);
    CHECK_EQ_INT(c.listen_port, 8080);
    config_free(&c);
}

static const char full_file[] =
    "{\n"
    "  \"listen\": \"0.0.0.0:9000\",\n"
    "  \"workers\": 3,\n"
    "  \"max_body\": \"2m\",\n"
    "  \"max_header\": 8192,\n"
    "  \"max_connections\": 500,\n"
    "  \"idle_timeout_ms\": 1000,\n"
    "  \"request_timeout_ms\": 2000,\n"
    "  \"upstream_connect_timeout_ms\": 3000,\n"
    "  \"upstream_timeout_ms\": 4000,\n"
    "  \"upstream_stall_ms\": 5000,\n"
    "  \"node_max_connections\": 16,\n"
    "  \"baseline\": {\"price_in\": 2.5, \"price_out\": 12, \"model\": \"gpt-x\"},\n"
    "  \"model_dir\": \"/models\",\n"
    "  \"nodes\": [\n"
    "    {\"name\": \"coder\", \"url\": \"http://127.0.0.1:8081/v1\", \"model\": \"qwen\", \"domain\": \"code\",\n"
    "     \"api_key\": \"sk-1\", \"price_in\": 0.1, \"price_out\": \"0.2\", \"max_conns\": 4},\n"
    "    \"gen=https://api.example.com/v1,domain=general\"\n"
    "  ]\n"
    "}\n";

static void file_sets_everything(void) {
    clear_env();
    msoa_config c;
    config_defaults(&c);
    const char *path = write_file(full_file);
    char *err = NULL;
    CHECK_EQ_INT(config_load_file(&c, path, &err), 0);
    if (err) fprintf(stderr, "  %s\n", err);
    unlink(path);
    CHECK_STR(c.listen_host, "0.0.0.0");
    CHECK_EQ_INT(c.listen_port, 9000);
    CHECK_EQ_INT(c.workers, 3);
    CHECK_EQ_INT(c.max_body, 2 << 20);
    CHECK_EQ_INT(c.max_header, 8192);
    CHECK_EQ_INT(c.max_connections, 500);
    CHECK_EQ_INT(c.idle_timeout_ms, 1000);
    CHECK_EQ_INT(c.request_timeout_ms, 2000);
    CHECK_EQ_INT(c.upstream_connect_timeout_ms, 3000);
    CHECK_EQ_INT(c.upstream_timeout_ms, 4000);
    CHECK_EQ_INT(c.upstream_stall_ms, 5000);
    CHECK_EQ_INT(c.node_max_connections, 16);
    CHECK(c.baseline_price_in == 2.5 && c.baseline_price_out == 12);
    CHECK_STR(c.baseline_model, "gpt-x");
    CHECK_STR(c.model_dir, "/models");
    CHECK_EQ_INT(c.n_nodes, 2);
    if (c.n_nodes == 2) {
        CHECK_STR(c.nodes[0].name, "coder");
        CHECK_STR(c.nodes[0].url, "http://127.0.0.1:8081/v1");
        CHECK_STR(c.nodes[0].model, "qwen");
        CHECK_STR(c.nodes[0].domain, "code");
        CHECK_STR(c.nodes[0].api_key, "sk-1");
        CHECK(c.nodes[0].price_in == 0.1 && c.nodes[0].price_out == 0.2);
        CHECK_EQ_INT(c.nodes[0].max_conns, 4);
        CHECK_STR(c.nodes[1].name, "gen");
        CHECK_EQ_INT(c.nodes[1].max_conns, 0);
        CHECK(c.nodes[1].domain == NULL); /* general */
        CHECK(c.nodes[1].model == NULL && c.nodes[1].api_key == NULL);
        CHECK(c.nodes[1].price_in == 0 && c.nodes[1].price_out == 0);
    }
    config_free(&c);
}

static void file_errors(void) {
    clear_env();
    msoa_config c;
    config_defaults(&c);
    char *err = NULL;
    CHECK_EQ_INT(config_load_file(&c, "/nonexistent/msoa.json", &err), -1);
    CHECK_STR(err, "cannot open config file /nonexistent/msoa.json: No such file or directory");
    free(err);
    config_free(&c);

    CHECK_CONTAINS(file_error("{\n\"workers\": 2,\n\"listen\": }"), "invalid JSON near line 3");
    CHECK_CONTAINS(file_error("{} {}"), "invalid JSON near line 1");
    CHECK_CONTAINS(file_error(""), "invalid JSON");
    CHECK_CONTAINS(file_error("[1]"), "must hold a JSON object");
    CHECK_CONTAINS(file_error("{\"listn\": \"a:1\"}"), "unknown key 'listn'");
    CHECK_CONTAINS(file_error("{\"workers\": true}"), "workers must be a number or a string");
    CHECK_CONTAINS(file_error("{\"model_dir\": 5}"), "model_dir must be a string");
    CHECK_CONTAINS(file_error("{\"workers\": 0}"), ": workers: must be a whole number from 1 to 1024, got '0'");
    CHECK_CONTAINS(file_error("{\"workers\": 2.5}"), "got '2.5'");
    CHECK_CONTAINS(file_error("{\"max_body\": \"1t\"}"), "max_body: must be a size in bytes");
    CHECK_CONTAINS(file_error("{\"listen\": \"localhost\"}"), "listen: must be HOST:PORT");
    CHECK_CONTAINS(file_error("{\"baseline\": 3}"), "baseline must be an object");
    CHECK_CONTAINS(file_error("{\"baseline\": {\"price_in\": -1}}"), "baseline.price_in: must be a number >= 0, got '-1'");
    CHECK_CONTAINS(file_error("{\"baseline\": {\"cost\": 1}}"), "unknown key 'baseline.cost'");
    CHECK_CONTAINS(file_error("{\"baseline.price_in\": 1}"), "unknown key 'baseline.price_in'");
    CHECK_CONTAINS(file_error("{\"nodes\": {}}"), "nodes must be an array");
    CHECK_CONTAINS(file_error("{\"nodes\": [3]}"), "nodes[0]: must be an object");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\", \"url\": \"http://h\"}, {\"name\": \"b\", \"url\": \"http://h\", "
                              "\"price_in\": \"abc\"}]}"),
                   "nodes[1]: price_in must be a number >= 0, got 'abc'");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\"}]}"), "nodes[0]: node 'a' needs a url");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"url\": \"http://h\"}]}"), "nodes[0]: a node needs a name");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\", \"url\": \"http://h\"}, \"a=http://g\"]}"),
                   "nodes[1]: node name 'a' is used twice");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\", \"url\": \"http://h\", \"weight\": 1}]}"),
                   "unknown node attribute 'weight'");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\", \"url\": \"http://h\", \"model\": 1}]}"),
                   "model must be a string");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\", \"url\": \"http://h\", \"price_out\": true}]}"),
                   "price_out must be a number");
    CHECK_CONTAINS(file_error("{\"nodes\": [{\"name\": \"a\", \"url\": \"http://h\", \"name\": \"b\"}]}"),
                   "name given twice");
    CHECK(file_error("{\"nodes\": []}") == NULL);
}

static void environment(void) {
    clear_env();
    setenv("MSOA_LISTEN", "[::1]:7000", 1);
    setenv("MSOA_WORKERS", "5", 1);
    setenv("MSOA_MAX_BODY", "64k", 1);
    setenv("MSOA_MAX_HEADER", "4096", 1);
    setenv("MSOA_MAX_CONNECTIONS", "77", 1);
    setenv("MSOA_IDLE_TIMEOUT_MS", "11", 1);
    setenv("MSOA_REQUEST_TIMEOUT_MS", "12", 1);
    setenv("MSOA_UPSTREAM_CONNECT_TIMEOUT_MS", "13", 1);
    setenv("MSOA_UPSTREAM_TIMEOUT_MS", "14", 1);
    setenv("MSOA_UPSTREAM_STALL_MS", "15", 1);
    setenv("MSOA_BASELINE_PRICE_IN", "1.25", 1);
    setenv("MSOA_BASELINE_PRICE_OUT", "5", 1);
    setenv("MSOA_BASELINE_MODEL", "claude", 1);
    setenv("MSOA_MODEL_DIR", "/m", 1);
    setenv("MSOA_NODES", " a=http://127.0.0.1:1/v1,price_in=1 ; b=/models/x.gguf,domain=math;", 1);
    msoa_config c;
    config_defaults(&c);
    char *err = NULL;
    CHECK_EQ_INT(config_apply_env(&c, &err), 0);
    if (err) fprintf(stderr, "  %s\n", err);
    CHECK_STR(c.listen_host, "::1");
    CHECK_EQ_INT(c.listen_port, 7000);
    CHECK_EQ_INT(c.workers, 5);
    CHECK_EQ_INT(c.max_body, 65536);
    CHECK_EQ_INT(c.max_header, 4096);
    CHECK_EQ_INT(c.max_connections, 77);
    CHECK_EQ_INT(c.idle_timeout_ms, 11);
    CHECK_EQ_INT(c.request_timeout_ms, 12);
    CHECK_EQ_INT(c.upstream_connect_timeout_ms, 13);
    CHECK_EQ_INT(c.upstream_timeout_ms, 14);
    CHECK_EQ_INT(c.upstream_stall_ms, 15);
    CHECK(c.baseline_price_in == 1.25 && c.baseline_price_out == 5);
    CHECK_STR(c.baseline_model, "claude");
    CHECK_STR(c.model_dir, "/m");
    CHECK_EQ_INT(c.n_nodes, 2);
    if (c.n_nodes == 2) {
        CHECK_STR(c.nodes[0].name, "a");
        CHECK(c.nodes[0].price_in == 1);
        CHECK_STR(c.nodes[1].url, "/models/x.gguf");
        CHECK_STR(c.nodes[1].domain, "math");
    }
    config_free(&c);
    clear_env();
}

static void environment_errors(void) {
    clear_env();
    msoa_config c;
    char *err = NULL;
    config_defaults(&c);
    setenv("MSOA_WORKERS", "", 1); /* empty: unset */
    CHECK_EQ_INT(config_apply_env(&c, &err), 0);
    setenv("MSOA_WORKERS", "four", 1);
    CHECK_EQ_INT(config_apply_env(&c, &err), -1);
    CHECK_STR(err, "MSOA_WORKERS: must be a whole number from 1 to 1024, got 'four'");
    free(err);
    clear_env();
    setenv("MSOA_NODES", "a=http://h;a=http://g", 1);
    CHECK_EQ_INT(config_apply_env(&c, &err), -1);
    CHECK_STR(err, "MSOA_NODES: node name 'a' is used twice");
    free(err);
    setenv("MSOA_NODES", "a=http://h,price_out=-2", 1);
    CHECK_EQ_INT(config_apply_env(&c, &err), -1);
    CHECK_STR(err, "MSOA_NODES: price_out must be a number >= 0, got '-2'");
    free(err);
    CHECK_EQ_INT(c.n_nodes, 0); /* a refused list changes nothing */
    clear_env();
    setenv("MSOA_UPSTREAM_TIMEOUT_MS", "0", 1);
    CHECK_EQ_INT(config_apply_env(&c, &err), -1);
    CHECK_CONTAINS(err, "MSOA_UPSTREAM_TIMEOUT_MS: must be a whole number of milliseconds");
    free(err);
    config_free(&c);
    clear_env();
}

static void flags(void) {
    clear_env();
    char *argv[] = {"--listen=127.0.0.2:0", "--workers", "2", "--max-body=1m", "--max-header", "2k",
                    "--max-connections=9", "--idle-timeout-ms", "21", "--request-timeout-ms=22",
                    "--upstream-connect-timeout-ms", "23", "--upstream-timeout-ms=24", "--upstream-stall-ms", "25",
                    "--upstream-wait-ms=26", "--node-max-connections=0", "--baseline-price-in=0.5", "--baseline-price-out", "0.75", "--baseline-model=m",
                    "--model-dir", "/d", "--node", "x=http://h:1,model=mx,api_key=k=v", "--node=y=https://[::1]:443/v1",
                    "--config", "ignored-here.json"};
    msoa_config c;
    config_defaults(&c);
    char *err = NULL;
    CHECK_EQ_INT(config_apply_args(&c, sizeof argv / sizeof argv[0], argv, &err), 0);
    if (err) fprintf(stderr, "  %s\n", err);
    CHECK_STR(c.listen_host, "127.0.0.2");
    CHECK_EQ_INT(c.listen_port, 0);
    CHECK_EQ_INT(c.workers, 2);
    CHECK_EQ_INT(c.max_body, 1 << 20);
    CHECK_EQ_INT(c.max_header, 2048);
    CHECK_EQ_INT(c.max_connections, 9);
    CHECK_EQ_INT(c.idle_timeout_ms, 21);
    CHECK_EQ_INT(c.request_timeout_ms, 22);
    CHECK_EQ_INT(c.upstream_connect_timeout_ms, 23);
    CHECK_EQ_INT(c.upstream_timeout_ms, 24);
    CHECK_EQ_INT(c.upstream_stall_ms, 25);
    CHECK_EQ_INT(c.upstream_wait_ms, 26);
    CHECK_EQ_INT(c.node_max_connections, 0);
    CHECK(c.baseline_price_in == 0.5 && c.baseline_price_out == 0.75);
    CHECK_STR(c.baseline_model, "m");
    CHECK_STR(c.model_dir, "/d");
    CHECK_EQ_INT(c.n_nodes, 2);
    if (c.n_nodes == 2) {
        CHECK_STR(c.nodes[0].model, "mx");
        CHECK_STR(c.nodes[0].api_key, "k=v");
        CHECK_STR(c.nodes[1].url, "https://[::1]:443/v1");
    }
    config_free(&c);
}

static void flag_errors(void) {
    CHECK_STR(flag_error("--node", "a=http://h,price_in=abc"), "--node: price_in must be a number >= 0, got 'abc'");
    CHECK_STR(flag_error("--nodes", "x"), "unknown flag '--nodes'");
    CHECK_STR(flag_error("--workers", NULL), "--workers needs a value");
    CHECK_STR(flag_error("--workers=", NULL), "--workers needs a value");
    CHECK_STR(flag_error("up", NULL), "unexpected argument 'up'");
    CHECK_STR(flag_error("-w", "2"), "unexpected argument '-w'");
    CHECK_STR(flag_error("--workers", "2x"), "--workers: must be a whole number from 1 to 1024, got '2x'");
    CHECK_STR(flag_error("--workers", "-1"), "--workers: must be a whole number from 1 to 1024, got '-1'");
    CHECK_STR(flag_error("--workers", "1025"), "--workers: must be a whole number from 1 to 1024, got '1025'");
    CHECK_STR(flag_error("--workers", " 2"), "--workers: must be a whole number from 1 to 1024, got ' 2'");
    CHECK_STR(flag_error("--max-connections", "99999999999999999999"),
              "--max-connections: must be a whole number from 1 to 10000000, got '99999999999999999999'");
    const char *sizes[] = {"0", "1t", "1mm", "k", "1.5m", "-1", "5g", "99999999999999999g"};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        CHECK_CONTAINS(flag_error("--max-body", sizes[i]), "--max-body: must be a size in bytes from 1 to 4g");
    CHECK(flag_error("--max-body", "4g") == NULL);
    CHECK(flag_error("--max-header", "1K") == NULL);
    CHECK_CONTAINS(flag_error("--idle-timeout-ms", "0"), "--idle-timeout-ms: must be a whole number of milliseconds");
    CHECK_CONTAINS(flag_error("--request-timeout-ms", "10ms"), "got '10ms'");
    const char *prices[] = {"-1", "abc", "inf", "nan", "1e999", "0x10", "1,5", "1.2.3"};
    for (size_t i = 0; i < sizeof prices / sizeof prices[0]; i++)
        CHECK_CONTAINS(flag_error("--baseline-price-in", prices[i]), "--baseline-price-in: must be a number >= 0, got '");
    CHECK(flag_error("--baseline-price-out", "0") == NULL);
    CHECK(flag_error("--baseline-price-out", "2.5e-1") == NULL);
    const char *listens[] = {"localhost", ":80", "h:", "h:65536", "h:-1", "h:8x", "::1:80", "[::1]80", "[]:80", "a b:80"};
    for (size_t i = 0; i < sizeof listens / sizeof listens[0]; i++)
        CHECK_CONTAINS(flag_error("--listen", listens[i]), "--listen: must be HOST:PORT with a port from 0 to 65535");
    CHECK(flag_error("--listen", "h:65535") == NULL);
    CHECK(flag_error("--listen", "[::]:0") == NULL);
    CHECK_CONTAINS(flag_error("--model-dir", "a\nb"), "--model-dir: must be a non-empty string");
    char *dup[] = {"--node", "a=http://h", "--node", "a=http://g"};
    CHECK_STR(args_error_v(4, dup), "--node: node name 'a' is used twice");
}

static void node_specs(void) {
    node_spec n;
    char *err = NULL;
    CHECK_EQ_INT(config_parse_node("n-1.x_y=http://10.0.0.1:8080/v1,model=m,domain=reasoning,price_in=0.5,"
                                   "price_out=1e-1,api_key=sk",
                                   &n, &err),
                 0);
    CHECK_STR(n.name, "n-1.x_y");
    CHECK_STR(n.url, "http://10.0.0.1:8080/v1");
    CHECK_STR(n.model, "m");
    CHECK_STR(n.domain, "reasoning");
    CHECK_STR(n.api_key, "sk");
    CHECK(n.price_in == 0.5 && fabs(n.price_out - 0.1) < 1e-12);
    free(n.name);
    free(n.url);
    free(n.model);
    free(n.domain);
    free(n.api_key);

    const char *good[] = {"a=http://h", "a=HTTPS://h/v1", "a=http://h:1", "a=http://h:65535/x?y#z", "a=./m/q4.gguf",
                          "a=http://[::1]", "a=http://h,domain=code", "a=http://h,domain=math",
                          "a=http://h,domain=language", "a=http://h,domain=general"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) CHECK(node_error(good[i]) == NULL);

    CHECK_CONTAINS(node_error("justaname"), "a node is NAME=URL");
    CHECK_CONTAINS(node_error("=http://h"), "name must be 1 to 64 of A-Z a-z 0-9 . _ -, got ''");
    CHECK_CONTAINS(node_error("a b=http://h"), "got 'a b'");
    CHECK_CONTAINS(node_error("a/b=http://h"), "got 'a/b'");
    char long_name[100];
    memset(long_name, 'n', 65);
    strcpy(long_name + 65, "=http://h");
    CHECK_CONTAINS(node_error(long_name), "name must be 1 to 64");
    const char *urls[] = {"a=", "a=ftp://h", "a=http://", "a=http:///v1", "a=http://:80", "a=http://h:0", "a=http://h:65536",
                          "a=http://h:8x", "a=http://h:", "a=model.bin", "a=.gguf", "a=http://[]:80", "a=http://[::1]x"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++)
        CHECK_CONTAINS(node_error(urls[i]), "url must be http://HOST[:PORT][/PATH]");
    CHECK_STR(node_error("a=http://h,domain=poetry"),
              "domain must be one of code, math, reasoning, language, general, got 'poetry'");
    CHECK_STR(node_error("a=http://h,price_in=abc"), "price_in must be a number >= 0, got 'abc'");
    CHECK_STR(node_error("a=http://h,price_out=-0.1"), "price_out must be a number >= 0, got '-0.1'");
    CHECK_CONTAINS(node_error("a=http://h,price_in=nan"), "price_in must be a number >= 0");
    CHECK_CONTAINS(node_error("a=http://h,weight=3"), "unknown node attribute 'weight'");
    CHECK_STR(node_error("a=http://h,model"), "node option 'model' is not KEY=VALUE");
    CHECK_STR(node_error("a=http://h,model=x,model=y"), "model given twice");
    CHECK_STR(node_error("a=http://h,price_in=1,price_in=2"), "price_in given twice");
    CHECK_STR(node_error("a=http://h,domain=code,domain=math"), "domain given twice");
    CHECK_CONTAINS(node_error("a=http://h,max_conns=x"), "max_conns must be a whole number from 0 (no cap)");
    CHECK_CONTAINS(node_error("a=http://h,max_conns=-1"), "max_conns must be a whole number");
    CHECK_CONTAINS(node_error("a=http://h,max_conns=1000001"), "max_conns must be a whole number");
    CHECK_CONTAINS(node_error("a=http://h,max_conns="), "max_conns must be a whole number");
    CHECK_STR(node_error("a=http://h,max_conns=1,max_conns=2"), "max_conns given twice");
    CHECK_EQ_INT(config_parse_node("a=http://h,max_conns=8", &n, &err), 0);
    CHECK_EQ_INT(n.max_conns, 8);
    free(n.name);
    free(n.url);
    CHECK_EQ_INT(config_parse_node("a=http://h,max_conns=0", &n, &err), 0);
    CHECK_EQ_INT(n.max_conns, -1); /* 0 given: no cap, not the default */
    free(n.name);
    free(n.url);
    CHECK_EQ_INT(config_parse_node("a=http://h", &n, &err), 0);
    CHECK_EQ_INT(n.max_conns, 0); /* the default */
    free(n.name);
    free(n.url);
    CHECK_STR(node_error("a=http://h,url=http://g"), "url given twice");
    CHECK_CONTAINS(node_error("a=http://h,model="), "model must be non-empty");
    CHECK_CONTAINS(node_error("a=http://h,api_key=x\r\nEvil: 1"), "api_key must be non-empty, without control characters");

    msoa_config c;
    config_defaults(&c);
    CHECK_EQ_INT(config_add_node(&c, "a=http://h", &err), 0);
    CHECK_EQ_INT(config_add_node(&c, "b=http://h", &err), 0);
    CHECK_EQ_INT(config_add_node(&c, "a=http://g", &err), -1);
    CHECK_STR(err, "node name 'a' is used twice");
    free(err);
    CHECK_EQ_INT(c.n_nodes, 2);
    config_free(&c);
}

/* file < environment < flags, for a setting and for the node list */
static void precedence(void) {
    clear_env();
    const char *path = write_file("{\"workers\": 2, \"max_body\": 100, \"listen\": \"f:1\", "
                                  "\"nodes\": [{\"name\": \"file\", \"url\": \"http://f\"}]}");
    setenv("MSOA_CONFIG", path, 1);
    msoa_config c;
    char *err = NULL;
    CHECK_EQ_INT(config_load(&c, 0, NULL, &err), 0);
    CHECK_EQ_INT(c.workers, 2);
    CHECK_EQ_INT(c.n_nodes, 1);
    if (c.n_nodes == 1) CHECK_STR(c.nodes[0].name, "file");
    config_free(&c);

    setenv("MSOA_WORKERS", "3", 1);
    setenv("MSOA_LISTEN", "e:2", 1);
    setenv("MSOA_NODES", "env1=http://e;env2=http://e", 1);
    CHECK_EQ_INT(config_load(&c, 0, NULL, &err), 0);
    CHECK_EQ_INT(c.workers, 3);
    CHECK_EQ_INT(c.max_body, 100); /* the file's, untouched */
    CHECK_STR(c.listen_host, "e");
    CHECK_EQ_INT(c.n_nodes, 2);
    if (c.n_nodes == 2) CHECK_STR(c.nodes[1].name, "env2");
    config_free(&c);

    char *argv[] = {"--workers=4", "--node", "flag=http://x"};
    CHECK_EQ_INT(config_load(&c, 3, argv, &err), 0);
    CHECK_EQ_INT(c.workers, 4);
    CHECK_STR(c.listen_host, "e");
    CHECK_EQ_INT(c.n_nodes, 1);
    if (c.n_nodes == 1) CHECK_STR(c.nodes[0].name, "flag");
    config_free(&c);

    /* flags without --node keep the environment's nodes */
    char *argv2[] = {"--workers", "4"};
    CHECK_EQ_INT(config_load(&c, 2, argv2, &err), 0);
    CHECK_EQ_INT(c.n_nodes, 2);
    config_free(&c);
    unlink(path);
    clear_env();
}

static void config_flag_beats_variable(void) {
    clear_env();
    const char *p = write_file("{\"workers\": 7}");
    char flag_path[64];
    strcpy(flag_path, p);
    setenv("MSOA_CONFIG", "/nonexistent/env.json", 1);
    msoa_config c;
    char *err = NULL;
    char *argv[] = {"--config", flag_path};
    CHECK_EQ_INT(config_load(&c, 2, argv, &err), 0);
    CHECK_EQ_INT(c.workers, 7);
    config_free(&c);
    char eq[96];
    snprintf(eq, sizeof eq, "--config=%s", flag_path);
    char *argv2[] = {eq};
    CHECK_EQ_INT(config_load(&c, 1, argv2, &err), 0);
    CHECK_EQ_INT(c.workers, 7);
    config_free(&c);
    /* without the flag the variable names the file: a missing one is an error */
    CHECK_EQ_INT(config_load(&c, 0, NULL, &err), -1);
    CHECK_CONTAINS(err, "cannot open config file /nonexistent/env.json");
    free(err);
    config_free(&c);
    /* errors of every source come out of config_load */
    char *bad[] = {"--config", flag_path, "--bogus"};
    CHECK_EQ_INT(config_load(&c, 3, bad, &err), -1);
    CHECK_STR(err, "unknown flag '--bogus'");
    free(err);
    config_free(&c);
    unlink(flag_path);
    clear_env();
}

int main(void) {
    TEST(defaults);
    TEST(file_sets_everything);
    TEST(file_errors);
    TEST(environment);
    TEST(environment_errors);
    TEST(flags);
    TEST(flag_errors);
    TEST(node_specs);
    TEST(precedence);
    TEST(config_flag_beats_variable);
    file_error("{}");
    args_error_v(0, NULL);
    node_error("a=http://h");
    return test_done();
}
