// libFuzzer target for the chat-template interpreter: the input is split at the first NUL
// byte into template source and a JSON messages array (both attacker-controlled here;
// in production the template comes from the model and the messages from HTTP requests).
// Parsing and rendering must never crash, leak, hang or overflow the stack.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *src = malloc(tlen + 1);
    memcpy(src, data, tlen);
    src[tlen] = 0;
    char err[PG_ERR_LEN];
    struct chat_template *t = chat_template_parse(src, err);
    if (t) {
        json_t *msgs = NULL;
        if (nul) msgs = json_loadb((const char *)nul + 1, size - tlen - 1, 0, NULL);
        if (!json_is_array(msgs)) {
            json_decref(msgs);
            msgs = json_loads("[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"u\"},"
                              "{\"role\":\"assistant\",\"content\":\"a\",\"tool_calls\":[{\"function\":"
                              "{\"name\":\"f\",\"arguments\":{\"x\":1}}}]},{\"role\":\"tool\",\"content\":\"r\"}]",
                              0, NULL);
        }
        json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]", 0, NULL);
        struct chat_render_args a = {.messages = msgs, .tools = tools, .add_generation_prompt = true,
                                     .bos_token = "<s>", .eos_token = "</s>"};
        char *out = NULL;
        if (chat_template_render(t, &a, &out, err) == 0) free(out);
        json_decref(tools);
        json_decref(msgs);
        chat_template_free(t);
    }
    free(src);
    return 0;
}
