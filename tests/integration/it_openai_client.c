/* it_openai_client: the official `openai` npm client, unmodified, with its
 * baseURL set to a live msoa (tests/node/openai_client.mjs does the checks).
 * The client is installed by scripts/npm-deps; a missing client is a
 * failure, not a skip. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "itgw.h"
#include "testlib.h"

static itgw g;

static void test_openai_node_client(void) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "node %s http://127.0.0.1:%d/v1", test_source_path("tests/node/openai_client.mjs"),
             g.msoa.port);
    int status = system(cmd);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void) {
    if (itgw_start(&g, NULL) < 0) return 1;
    TEST(test_openai_node_client);
    itgw_stop(&g);
    return test_done();
}
