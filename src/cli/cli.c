/* cli: see cli.h. Each sub-command is one function taking the arguments
 * after its name; `msoa CMD --help` prints that command's usage. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"
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

static const command commands[] = {
    {"up", cmd_up, "run the gateway (and its built-in nodes)"},
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
