/* cli: see cli.h. Placeholder until the gateway lands. */
#include "cli/cli.h"

#include <stdio.h>

int cli_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "msoa: not built yet\n");
    return 1;
}
