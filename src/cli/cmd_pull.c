/* cmd_pull: see cmd_pull.h. Parses the arguments and hands them to
 * pull_model; progress and notes go to stderr so that stdout carries only
 * the path, for `msoa run $(msoa pull URL) -p ...`. */
#include "cli/cmd_pull.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/pull.h"

static const char pull_help[] =
    "usage: msoa pull URL [--sha256 HEX] [--dir DIR] [--name FILE]\n"
    "\n"
    "Downloads a GGUF model into the model directory and prints its path.\n"
    "An interrupted download is resumed by running the same command again.\n"
    "The file is kept only if it opens as a GGUF model (and matches --sha256).\n"
    "\n"
    "  --sha256 HEX   expected SHA-256 of the file (64 hex digits)\n"
    "  --dir DIR      where to put it (default $MSOA_MODEL_DIR, else\n"
    "                 $XDG_CACHE_HOME/msoa/models, else ~/.cache/msoa/models)\n"
    "  --name FILE    file name (default: the last part of the URL's path)\n";

int cmd_pull(int argc, char **argv) {
    pull_opts o = {.log = stderr};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(pull_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--sha256") && i + 1 < argc) o.sha256 = argv[++i];
        else if (!strcmp(a, "--dir") && i + 1 < argc) o.dir = argv[++i];
        else if (!strcmp(a, "--name") && i + 1 < argc) o.name = argv[++i];
        else if (a[0] != '-' && !o.url) o.url = a;
        else {
            fprintf(stderr, "msoa pull: unexpected argument '%s'\n%s", a, pull_help);
            return 2;
        }
    }
    if (!o.url) {
        fputs(pull_help, stderr);
        return 2;
    }
    if (o.sha256 && !pull_sha256_valid(o.sha256)) {
        fprintf(stderr, "msoa pull: bad --sha256 '%s': want 64 hex digits\n", o.sha256);
        return 2;
    }
    char path[PATH_MAX], err[1024];
    if (pull_model(&o, path, sizeof path, err, sizeof err) < 0) {
        fprintf(stderr, "msoa pull: %s\n", err);
        return 1;
    }
    printf("%s\n", path);
    return 0;
}
