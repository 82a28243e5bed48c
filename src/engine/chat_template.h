/* chat_template: turning a list of chat messages into the prompt text a
 * model was fine-tuned on.
 *
 * GGUF files carry their template as Jinja source (tokenizer.chat_template).
 * Rather than embed a Jinja engine, msoa recognises the common families by
 * their marker strings and renders each family with hand-written code:
 *   chatml   <|im_start|>role\n...<|im_end|>\n          (Qwen, SmolLM, ...)
 *   llama2   [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]
 *   llama3   <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
 *   mistral  [INST] ... [/INST]...</s>                   (no <<SYS>> block)
 *   zephyr   <|role|>\n...</s>\n
 *   phi3     <|role|>\n...<|end|>\n
 *   gemma    <start_of_turn>role\n...<end_of_turn>\n
 * A template with none of the markers is an error naming it; callers may
 * then choose a family explicitly by name.
 *
 * The rendered text does not include the BOS token: encode it with
 * TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL so that the tokenizer adds BOS as the
 * model wants and turns the markers into their control tokens. */
#ifndef MSOA_ENGINE_CHAT_TEMPLATE_H
#define MSOA_ENGINE_CHAT_TEMPLATE_H

#include <stddef.h>

#include "base/buf.h"
#include "engine/gguf.h"

enum chat_family {
    CHAT_CHATML, CHAT_LLAMA2, CHAT_LLAMA3, CHAT_MISTRAL, CHAT_ZEPHYR, CHAT_PHI3, CHAT_GEMMA,
    CHAT_FAMILY_COUNT
};

typedef struct chat_msg {
    const char *role;      /* "system", "user", "assistant" (chatml/llama3 accept any) */
    const char *content;   /* NULL is empty */
} chat_msg;

const char *chat_family_name(int family);          /* "chatml"...; NULL if out of range */
int chat_family_by_name(const char *name);         /* -1 if unknown */
/* The family whose markers the Jinja text contains, or -1. */
int chat_family_detect(const char *tmpl);
/* The family of a model file's tokenizer.chat_template; -1 with a message
 * when the file has no template or an unrecognised one. */
int chat_family_from_gguf(const gguf *g, char *err, size_t errlen);

/* Appends the prompt for msgs; with add_generation_prompt, also the header
 * that opens the assistant's turn. Returns 0, or -1 with a message (unknown
 * family, a role the family cannot express). */
int chat_render(int family, const chat_msg *msgs, int n, int add_generation_prompt, buf *out, char *err,
                size_t errlen);

#endif
