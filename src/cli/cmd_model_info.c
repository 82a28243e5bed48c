/* cmd_model_info: see cmd_model_info.h. Reads only the GGUF header and
 * metadata (the weights stay unread in the mapping), so it is instant even
 * for large files, and a damaged file gets the reader's precise message. */
#include "cli/cmd_model_info.h"

#include <stdio.h>
#include <string.h>

#include "engine/chat_template.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

static const char info_help[] =
    "usage: msoa model info MODEL.gguf\n"
    "\n"
    "Prints a GGUF model's architecture, parameter count, file size, tensor\n"
    "types, context length, shape, tokenizer and chat template family.\n";

/* 1234567 -> "1.23 M" */
static const char *human(double x, const char *unit, char *out, size_t n) {
    static const char *const prefix[] = {"", "K", "M", "G", "T"};
    int p = 0;
    while (x >= 1000 && p < 4) {
        x /= 1000;
        p++;
    }
    int len = snprintf(out, n, "%.*f %s%s", p ? 2 : 0, x, prefix[p], unit);
    if (len > 0 && (size_t)len < n && out[len - 1] == ' ') out[len - 1] = '\0';
    return out;
}

/* "<arch>.<key>" as an integer line, skipped when absent. */
static void print_arch_u32(const gguf *g, const char *arch, const char *key, const char *label) {
    char full[256];
    uint32_t v;
    snprintf(full, sizeof full, "%s.%s", arch, key);
    if (gguf_get_u32(g, full, &v) == 0) printf("%-15s %u\n", label, v);
}

static void print_tensor_types(const gguf *g) {
    int count[GGUF_DTYPE_COUNT] = {0};
    size_t bytes[GGUF_DTYPE_COUNT] = {0};
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        count[t->type]++;
        bytes[t->type] += t->nbytes;
    }
    printf("%-15s", "tensor types");
    const char *sep = " ";
    for (int ty = 0; ty < GGUF_DTYPE_COUNT; ty++) {
        char b[32];
        if (!count[ty]) continue;
        printf("%s%s x%d (%s)", sep, gguf_dtype_name(ty), count[ty], human((double)bytes[ty], "B", b, sizeof b));
        sep = ", ";
    }
    printf("%s\n", gguf_n_tensors(g) ? "" : " none");
}

static void print_tokenizer(const gguf *g) {
    char err[256];
    tokenizer *t = tokenizer_load(g, err, sizeof err);
    if (!t) {
        printf("%-15s %s\n", "tokenizer", gguf_get_str(g, "tokenizer.ggml.model") ? err : "none");
        return;
    }
    printf("%-15s %s", "tokenizer", tokenizer_model_name(t));
    if (tokenizer_model(t) == TOK_BPE) printf(" (pre-tokenizer %s)", tokenizer_pre_name(t));
    printf(", vocabulary %d", tokenizer_n_vocab(t));
    if (tokenizer_bos(t) >= 0) printf(", bos %d '%s'", tokenizer_bos(t), tokenizer_token_text(t, tokenizer_bos(t)));
    if (tokenizer_eos(t) >= 0) printf(", eos %d '%s'", tokenizer_eos(t), tokenizer_token_text(t, tokenizer_eos(t)));
    printf("\n");
    tokenizer_free(t);
    int family = chat_family_from_gguf(g, err, sizeof err);
    if (family >= 0) printf("%-15s %s\n", "chat template", chat_family_name(family));
    else printf("%-15s %s\n", "chat template", gguf_get_str(g, "tokenizer.chat_template") ? "unrecognised" : "none");
}

static void print_info(const gguf *g, const char *path) {
    char b[32];
    const char *arch = gguf_get_str(g, "general.architecture");
    const char *name = gguf_get_str(g, "general.name");
    int64_t params = 0;
    for (int i = 0; i < gguf_n_tensors(g); i++) params += gguf_tensor_at(g, i)->n_elements;
    printf("%-15s %s\n", "file", path);
    printf("%-15s %s (%zu bytes), GGUF v%u, %d tensors, %d metadata keys\n", "size",
           human((double)gguf_file_size(g), "B", b, sizeof b), gguf_file_size(g), gguf_version(g), gguf_n_tensors(g),
           gguf_n_kv(g));
    printf("%-15s %s\n", "architecture", arch ? arch : "unknown");
    if (name) printf("%-15s %s\n", "name", name);
    printf("%-15s %s (%lld)\n", "parameters", human((double)params, "", b, sizeof b), (long long)params);
    print_tensor_types(g);
    if (arch) {
        print_arch_u32(g, arch, "context_length", "context length");
        print_arch_u32(g, arch, "embedding_length", "embedding");
        print_arch_u32(g, arch, "block_count", "layers");
        print_arch_u32(g, arch, "attention.head_count", "heads");
        print_arch_u32(g, arch, "attention.head_count_kv", "kv heads");
        print_arch_u32(g, arch, "feed_forward_length", "feed-forward");
    }
    print_tokenizer(g);
}

int cmd_model_info(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(info_help, stdout);
            return 0;
        }
        if (argv[i][0] == '-' || path) {
            fprintf(stderr, "msoa model info: unexpected argument '%s'\n%s", argv[i], info_help);
            return 2;
        }
        path = argv[i];
    }
    if (!path) {
        fputs(info_help, stderr);
        return 2;
    }
    char err[512];
    gguf *g = gguf_open(path, err, sizeof err);
    if (!g) {
        fprintf(stderr, "msoa model info: %s\n", err);
        return 1;
    }
    print_info(g, path);
    gguf_close(g);
    return 0;
}
