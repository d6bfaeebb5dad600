// Fuzzes the request path: body bytes -> JSON -> api_request_parse (chat and completions) and api_structured_parse ->
// length check; and the hermes tool-call parser on the same bytes split at a fuzzed point.
// First byte: bit 0 picks chat/completions, the rest is the split point.
#include <stdlib.h>
#include <string.h>

#include "server/api.h"
#include "server/respond.h"
#include "server/toolcall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    enum api_kind kind = data[0] & 1 ? API_COMPLETION : API_CHAT;
    size_t split = data[0] >> 1;
    data++, size--;
    struct api_limits lim = {.model_name = "m", .max_model_len = 64, .vocab = 300, .max_n = 4,
                             .max_prompts = 4, .gen = {.temperature = 1, .top_p = 1, .top_k = -1,
                                                       .repetition_penalty = 1, .do_sample = true}};
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    if (body) {
        struct api_request r;
        struct api_error e;
        if (api_request_parse(&r, kind, body, &lim, &e) == 0) {
            api_check_length(&r, (int)(size % 80), &lim, &e);
            if (r.tools) free(api_tool_schema(r.tools, TOOLS_REQUIRED, NULL, &e));
        } else {
            json_decref(api_error_json(&e));
        }
        api_request_free(&r);
        if (api_structured_parse(&r, body, &lim, &e) != 0) json_decref(api_error_json(&e));
        api_request_free(&r);
        json_decref(body);
    }
    struct hermes h;
    hermes_init(&h);
    char *content = NULL;
    size_t clen = 0;
    json_t *calls = json_array();
    if (split > size) split = size;
    hermes_feed(&h, (const char *)data, split, &content, &clen, calls);
    hermes_feed(&h, (const char *)data + split, size - split, &content, &clen, calls);
    hermes_finish(&h, &content, &clen, calls);
    json_decref(resp_text(content, clen));
    tool_forced_parse((const char *)data, size, NULL, calls);
    free(content);
    hermes_free(&h);
    json_decref(calls);
    return 0;
}
