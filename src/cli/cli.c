/* cli: see cli.h. Each sub-command is one function taking the arguments
 * after its name; `msoa CMD --help` prints that command's usage. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/cmd_model_info.h"
#include "cli/cmd_pull.h"
#include "cli/cmd_quantize.h"
#include "cli/cmd_route.h"
#include "cli/cmd_router.h"
#include "cli/cmd_run.h"
#include "cli/cmd_up.h"

#define MSOA_VERSION "0.1.0"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static int cmd_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("msoa %s\n", MSOA_VERSION);
    return 0;
}

static int cmd_model(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "info")) return cmd_model_info(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: msoa model info MODEL.gguf\n\nPrints a GGUF model's architecture, size, tensor types and tokenizer.\n");
        return 0;
    }
    fprintf(stderr, "usage: msoa model info MODEL.gguf\n");
    return 2;
}

static const command commands[] = {
    {"up", cmd_up, "run the gateway (and its built-in nodes)"},
    {"run", cmd_run, "generate text with a GGUF model"},
    {"model", cmd_model, "inspect a GGUF model (msoa model info FILE)"},
    {"quantize", cmd_quantize, "quantize a GGUF model (q4_0, q8_0, q4_k, q6_k)"},
    {"pull", cmd_pull, "download a GGUF model into the model cache"},
    {"route", cmd_route, "show where the router sends a text"},
    {"router", cmd_router, "train or evaluate the router and guard"},
    {"version", cmd_version, "print the version"},
};

static void usage(FILE *out) {
    fprintf(out,
            "msoa - the Model SOA mesh: routes each LLM request to the right specialist node\n"
            "\n"
            "usage: msoa COMMAND [ARGS]\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'msoa COMMAND --help' describes a command.\n");
}

int cli_main(int argc, char **argv) {
    log_init();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) return cmd_version(0, NULL);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "msoa: unknown command '%s'; 'msoa --help' lists the commands\n", name);
    return 2;
}
