/* cmd_quantize: see cmd_quantize.h. A thin shell over quantize_file: parses
 * the arguments, names each tensor left in its type on stderr, and reports
 * the sizes before and after. */
#include "cli/cmd_quantize.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "base/clock.h"
#include "engine/quantize.h"

static const char quantize_help[] =
    "usage: msoa quantize IN.gguf OUT.gguf --type q4_0|q8_0|q4_k|q6_k|q5_k|q5_0|q5_1|q4_1|f16|bf16\n"
    "\n"
    "Writes a copy of a GGUF model with its weight matrices converted to the\n"
    "given type (metadata copied, general.file_type set). Matrices whose rows\n"
    "are not a multiple of the type's block (32, or 256 for the k-quants) and\n"
    "1-D tensors (norms, biases) keep their type; each such matrix is named\n"
    "on stderr.\n";

static const char *const allowed[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "f16", "bf16", "f32"};

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int cmd_quantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *type = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { fputs(quantize_help, stdout); return 0; }
        if (!strcmp(argv[i], "--type") && i + 1 < argc) type = argv[++i];
        else if (argv[i][0] != '-' && !in) in = argv[i];
        else if (argv[i][0] != '-' && !out) out = argv[i];
        else { fprintf(stderr, "msoa quantize: unexpected argument '%s'\n%s", argv[i], quantize_help); return 2; }
    }
    if (!in || !out || !type) { fputs(quantize_help, stderr); return 2; }
    int t = -1;
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++)
        if (!strcasecmp(type, allowed[i])) t = qtype_from_name(allowed[i]);
    if (t < 0) {
        fprintf(stderr, "msoa quantize: unknown --type '%s'\n%s", type, quantize_help);
        return 2;
    }
    char err[512];
    uint64_t t0 = clock_now_ns();
    if (quantize_file(in, out, (qtype)t, stderr, err, sizeof err) < 0) {
        fprintf(stderr, "msoa quantize: %s\n", err);
        return 1;
    }
    fprintf(stderr, "msoa quantize: %s (%.1f MB) -> %s (%.1f MB, %s) in %.2f s\n", in, (double)file_size(in) / 1e6,
            out, (double)file_size(out) / 1e6, qtype_name((uint32_t)t), (double)(clock_now_ns() - t0) / 1e9);
    return 0;
}
