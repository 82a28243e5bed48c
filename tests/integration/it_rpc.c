/* it_rpc: JSON-RPC 2.0 end to end, over POST /rpc and over a WebSocket at
 * /rpc: every method, batches, notifications, errors, streamed chunks as
 * notifications, several calls in flight on one socket, and a bad frame. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itgw.h"
#include "testlib.h"

static itgw g;

static cJSON *rpc_post(const char *text, int *status) {
    it_response r;
    cJSON *j = NULL;
    *status = 0;
    if (itgw_post(&g, "/rpc", text, &r) == 0) {
        *status = r.status;
        j = it_json(&r);
    }
    it_response_free(&r);
    return j;
}

static int error_code(const cJSON *resp) {
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(resp, "error"), "code");
    return cJSON_IsNumber(code) ? code->valueint : 0;
}

static void test_methods_over_http(void) {
    int status;
    cJSON *j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"mesh.health\"}", &status);
    CHECK_EQ_INT(status, 200);
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(res, "status")->valuestring, "ok");
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(j, "id")->valueint, 1);
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":\"n\",\"method\":\"mesh.nodes\"}", &status);
    res = cJSON_GetObjectItemCaseSensitive(j, "result");
    CHECK_EQ_INT(cJSON_GetArraySize(res), 1);
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 0), "name")->valuestring, "m1");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res, 0), "reachable")));
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"models.list\"}", &status);
    res = cJSON_GetObjectItemCaseSensitive(j, "result");
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(res, "data")), 2);
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"chat.complete\",\"params\":"
                 "{\"model\":\"mock-small\",\"messages\":[{\"role\":\"user\",\"content\":\"rpc hello\"}]}}", &status);
    res = cJSON_GetObjectItemCaseSensitive(j, "result");
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(res, "object")->valuestring, "chat.completion");
    CHECK_STR(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(res, "msoa"), "node")->valuestring, "m1");
    cJSON_Delete(j);
}

static void test_errors_over_http(void) {
    int status;
    cJSON *j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"no.such\"}", &status);
    CHECK_EQ_INT(error_code(j), -32601);
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"method\":\"foobar,\"params\":\"bar\",\"baz]", &status);
    CHECK_EQ_INT(error_code(j), -32700);
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "id")));
    cJSON_Delete(j);

    j = rpc_post("[]", &status);
    CHECK(cJSON_IsObject(j));
    CHECK_EQ_INT(error_code(j), -32600);
    cJSON_Delete(j);

    j = rpc_post("[1,2,3]", &status);
    CHECK_EQ_INT(cJSON_GetArraySize(j), 3);
    CHECK_EQ_INT(error_code(cJSON_GetArrayItem(j, 2)), -32600);
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"chat.complete\",\"params\":[1]}", &status);
    CHECK_EQ_INT(error_code(j), -32602);
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"chat.complete\",\"params\":{\"messages\":[]}}", &status);
    CHECK_EQ_INT(error_code(j), -32602);
    CHECK_CONTAINS(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "error"), "message")->valuestring,
                   "messages");
    cJSON_Delete(j);

    j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"chat.complete\",\"params\":"
                 "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}", &status);
    CHECK_EQ_INT(error_code(j), -32602);
    cJSON_Delete(j);
}

static void test_batch_and_notifications_over_http(void) {
    int status;
    cJSON *j = rpc_post("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"mesh.health\"},"
                        "{\"jsonrpc\":\"2.0\",\"method\":\"mesh.health\"},"
                        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"chat.complete\",\"params\":"
                        "{\"messages\":[{\"role\":\"user\",\"content\":\"batch\"}]}}]", &status);
    CHECK_EQ_INT(cJSON_GetArraySize(j), 2);
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, 0), "id")->valueint, 1);
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, 1), "id")->valueint, 2);
    CHECK(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, 1), "result") != NULL);
    cJSON_Delete(j);

    it_response r;
    const char *notes = "[{\"jsonrpc\":\"2.0\",\"method\":\"mesh.health\"},{\"jsonrpc\":\"2.0\",\"method\":\"x\"}]";
    CHECK_EQ_INT(itgw_post(&g, "/rpc", notes, &r), 0);
    CHECK_EQ_INT(r.status, 204);
    CHECK_EQ_INT(r.body.len, 0);
    it_response_free(&r);
    /* a notification whose method answers later still gets 204 at once */
    const char *slow_note = "{\"jsonrpc\":\"2.0\",\"method\":\"chat.complete\",\"params\":"
                            "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}}";
    CHECK_EQ_INT(itgw_post(&g, "/rpc", slow_note, &r), 0);
    CHECK_EQ_INT(r.status, 204);
    it_response_free(&r);
}

static cJSON *ws_next(int fd) {
    buf payload = BUF_INIT;
    int op = it_ws_recv(fd, 10000, &payload);
    cJSON *j = op == 1 ? cJSON_Parse(payload.data) : NULL;
    buf_free(&payload);
    return j;
}

static void test_websocket_stream(void) {
    int fd = it_ws_connect(g.msoa.port, "/rpc", 5000);
    CHECK(fd >= 0);
    if (fd < 0) return;
    const char *a = "{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"chat.complete\",\"params\":"
                    "{\"model\":\"mock-small\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"one\"}]}}";
    const char *b = "{\"jsonrpc\":\"2.0\",\"id\":\"b\",\"method\":\"chat.complete\",\"params\":"
                    "{\"model\":\"mock-small\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"two\"}]}}";
    CHECK_EQ_INT(it_ws_send(fd, 1, a, strlen(a)), 0);
    CHECK_EQ_INT(it_ws_send(fd, 1, b, strlen(b)), 0);
    int chunks_a = 0, chunks_b = 0, results = 0;
    while (results < 2) {
        cJSON *j = ws_next(fd);
        CHECK(j != NULL);
        if (!j) break;
        const cJSON *method = cJSON_GetObjectItemCaseSensitive(j, "method");
        if (cJSON_IsString(method)) {
            CHECK_STR(method->valuestring, "chat.chunk");
            const cJSON *params = cJSON_GetObjectItemCaseSensitive(j, "params");
            const char *id = cJSON_GetObjectItemCaseSensitive(params, "id")->valuestring;
            CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(params, "chunk")));
            if (!strcmp(id, "a")) chunks_a++;
            else if (!strcmp(id, "b")) chunks_b++;
            else CHECK(!"chunk for an unknown id");
        } else {
            const char *id = cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring;
            const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "result");
            CHECK_STR(cJSON_GetObjectItemCaseSensitive(res, "object")->valuestring, "chat.completion");
            /* every chunk of a call arrives before its result */
            CHECK(!strcmp(id, "a") ? chunks_a >= 6 : chunks_b >= 6);
            results++;
        }
        cJSON_Delete(j);
    }
    CHECK_EQ_INT(results, 2);

    /* notifications get nothing; the next request still gets its answer */
    const char *note = "{\"jsonrpc\":\"2.0\",\"method\":\"mesh.health\"}";
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"mesh.health\"}";
    it_ws_send(fd, 1, note, strlen(note));
    it_ws_send(fd, 1, req, strlen(req));
    cJSON *j = ws_next(fd);
    CHECK_EQ_INT(cJSON_GetObjectItemCaseSensitive(j, "id") ? cJSON_GetObjectItemCaseSensitive(j, "id")->valueint : -1, 9);
    cJSON_Delete(j);

    /* ping is answered with pong carrying the same payload */
    it_ws_send(fd, 9, "pp", 2);
    buf payload = BUF_INIT;
    CHECK_EQ_INT(it_ws_recv(fd, 5000, &payload), 10);
    CHECK_STR(payload.data, "pp");

    /* the close handshake */
    it_ws_send(fd, 8, "\x03\xe8", 2);
    CHECK_EQ_INT(it_ws_recv(fd, 5000, &payload), 8);
    buf_free(&payload);
    close(fd);
}

static void test_websocket_bad_frame(void) {
    int fd = it_ws_connect(g.msoa.port, "/rpc", 5000);
    CHECK(fd >= 0);
    if (fd < 0) return;
    /* an unmasked client frame is a protocol error: close 1002 */
    const char frame[] = "\x81\x02hi";
    CHECK_EQ_INT(send(fd, frame, 4, 0), 4);
    buf payload = BUF_INIT;
    CHECK_EQ_INT(it_ws_recv(fd, 5000, &payload), 8);
    CHECK(payload.len >= 2 && (((unsigned char)payload.data[0] << 8) | (unsigned char)payload.data[1]) == 1002);
    buf_free(&payload);
    close(fd);
    /* and the server goes on serving */
    int status;
    cJSON *j = rpc_post("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"mesh.health\"}", &status);
    CHECK_EQ_INT(status, 200);
    cJSON_Delete(j);
}

int main(void) {
    if (itgw_start(&g, NULL) < 0) return 1;
    TEST(test_methods_over_http);
    TEST(test_errors_over_http);
    TEST(test_batch_and_notifications_over_http);
    TEST(test_websocket_stream);
    TEST(test_websocket_bad_frame);
    itgw_stop(&g);
    return test_done();
}
