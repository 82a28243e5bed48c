/* test_engine_template: chat template detection and the text each family
 * renders, including the errors for unknown templates and roles. */
#include "engine/chat_template.h"

#include <stdint.h>

#include "testlib.h"

static const chat_msg convo[] = {
    {"system", "Be brief."},
    {"user", "Hi"},
    {"assistant", "Hello!"},
    {"user", "Sky colour?"},
};

static void expect_render(int family, int gen, const char *want) {
    buf out = BUF_INIT;
    char err[256] = "";
    CHECK_EQ_INT(chat_render(family, convo, 4, gen, &out, err, sizeof err), 0);
    CHECK_STR(out.data, want);
    buf_free(&out);
}

static void test_render(void) {
    expect_render(CHAT_CHATML, 1,
                  "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nSky colour?<|im_end|>\n"
                  "<|im_start|>assistant\n");
    expect_render(CHAT_LLAMA3, 1,
                  "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nSky colour?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(CHAT_LLAMA2, 1,
                  "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Sky colour? [/INST]");
    expect_render(CHAT_MISTRAL, 1, "[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Sky colour? [/INST]");
    expect_render(CHAT_ZEPHYR, 1,
                  "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nSky colour?</s>\n"
                  "<|assistant|>\n");
    expect_render(CHAT_PHI3, 0,
                  "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
                  "<|user|>\nSky colour?<|end|>\n");
    expect_render(CHAT_GEMMA, 1,
                  "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
                  "<start_of_turn>user\nSky colour?<end_of_turn>\n<start_of_turn>model\n");
}

static void test_render_edges(void) {
    buf out = BUF_INIT;
    char err[256] = "";
    chat_msg tool[] = {{"user", "x"}, {"tool", "42"}};
    CHECK_EQ_INT(chat_render(CHAT_LLAMA2, tool, 2, 1, &out, err, sizeof err), -1);
    CHECK_CONTAINS(err, "llama2 cannot express role 'tool'");
    CHECK_EQ_INT(chat_render(CHAT_CHATML, tool, 2, 0, &out, err, sizeof err), 0);   /* chatml names any role */
    CHECK_STR(out.data, "<|im_start|>user\nx<|im_end|>\n<|im_start|>tool\n42<|im_end|>\n");
    buf_clear(&out);
    chat_msg bad[] = {{NULL, "x"}};
    CHECK_EQ_INT(chat_render(CHAT_CHATML, bad, 1, 0, &out, err, sizeof err), -1);
    CHECK_CONTAINS(err, "no role");
    CHECK_EQ_INT(chat_render(99, convo, 1, 0, &out, err, sizeof err), -1);
    CHECK_CONTAINS(err, "unknown family 99");
    chat_msg null_content[] = {{"user", NULL}};
    CHECK_EQ_INT(chat_render(CHAT_LLAMA3, null_content, 1, 0, &out, err, sizeof err), 0);
    CHECK_STR(out.data, "<|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>");
    buf_free(&out);
}

static void test_detect(void) {
    CHECK_EQ_INT(chat_family_detect("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}"), CHAT_CHATML);
    CHECK_EQ_INT(chat_family_detect("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"), CHAT_LLAMA3);
    CHECK_EQ_INT(chat_family_detect("{{ bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>' }}"), CHAT_LLAMA2);
    CHECK_EQ_INT(chat_family_detect("{{ '[INST] ' + message['content'] + ' [/INST]' }}"), CHAT_MISTRAL);
    CHECK_EQ_INT(chat_family_detect("{{ '<|user|>\\n' + c + eos_token }}{{ '<|assistant|>' }}"), CHAT_ZEPHYR);
    CHECK_EQ_INT(chat_family_detect("{{'<|user|>\\n' + c + '<|end|>\\n'}}{{'<|assistant|>\\n'}}"), CHAT_PHI3);
    CHECK_EQ_INT(chat_family_detect("{{ '<start_of_turn>' + role + '\\n' }}"), CHAT_GEMMA);
    CHECK_EQ_INT(chat_family_detect("{{ 'Human: ' + content }}"), -1);
    CHECK_EQ_INT(chat_family_by_name("chatml"), CHAT_CHATML);
    CHECK_EQ_INT(chat_family_by_name("llama-3"), CHAT_LLAMA3);
    CHECK_EQ_INT(chat_family_by_name("vicuna"), -1);
    CHECK_STR(chat_family_name(CHAT_GEMMA), "gemma");
    CHECK(chat_family_name(CHAT_FAMILY_COUNT) == NULL);
}

/* A GGUF holding one string key, tokenizer.chat_template = tmpl. */
static gguf *template_file(buf *b, const char *tmpl) {
    static const char key[] = "tokenizer.chat_template";
    uint32_t version = 3, type = GGUF_VT_STR;
    uint64_t n_tensors = 0, n_kv = 1, klen = sizeof key - 1, vlen = strlen(tmpl);
    buf_clear(b);
    buf_append(b, "GGUF", 4);
    buf_append(b, &version, 4);
    buf_append(b, &n_tensors, 8);
    buf_append(b, &n_kv, 8);
    buf_append(b, &klen, 8);
    buf_append(b, key, klen);
    buf_append(b, &type, 4);
    buf_append(b, &vlen, 8);
    buf_append(b, tmpl, vlen);
    return gguf_open_mem(b->data, b->len, NULL, 0);
}

static void test_from_gguf(void) {
    char err[512];
    buf b = BUF_INIT;
    gguf *g = template_file(&b, "{% for message in messages %}<|im_start|>{{ message.role }}{% endfor %}");
    CHECK(g != NULL);
    if (g) CHECK_EQ_INT(chat_family_from_gguf(g, err, sizeof err), CHAT_CHATML);
    gguf_close(g);
    g = template_file(&b, "{% for message in messages %}\n### Human: {{ message.content }}{% endfor %}");
    CHECK(g != NULL);
    if (g) {
        CHECK_EQ_INT(chat_family_from_gguf(g, err, sizeof err), -1);
        CHECK_CONTAINS(err, "chat template: unrecognised template \"{% for message in messages %} ### Human:");
        CHECK_CONTAINS(err, "choose a family by name");
    }
    gguf_close(g);
    buf_free(&b);
    g = gguf_open(test_shared_path("models/stories260K.gguf"), err, sizeof err);
    CHECK(g != NULL);
    if (g) {
        CHECK_EQ_INT(chat_family_from_gguf(g, err, sizeof err), -1);
        CHECK_CONTAINS(err, "no tokenizer.chat_template");
    }
    gguf_close(g);
}

int main(void) {
    TEST(test_render);
    TEST(test_render_edges);
    TEST(test_detect);
    TEST(test_from_gguf);
    return test_done();
}
