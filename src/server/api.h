// OpenAI API requests: parsing and validation of a request body (jansson) into a
// gen_request plus what the server needs to render the prompt and shape the response;
// OpenAI's error object. Pure code (no I/O, no engine, no tokenizer): unit-tested and fuzzed.
#pragma once
#include <jansson.h>

#include "engine/engine.h"
#include "grammar/grammar.h"
#include "model/config.h"

// An error answered to the client as {"error": {"message", "type", "param", "code"}}.
struct api_error {
    int status;               // HTTP status (400, 401, 404, 405, 413, 500, 503)
    char message[PG_ERR_LEN];
    char param[64];           // the offending field, or "" (JSON null)
    int retry_after;          // seconds, for 503 (0: no header)
};
void api_error_set(struct api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
// 400 for the first key of the object `body` that is not in the NULL-terminated `allowed`:
// "unknown field 'k'", followed by " (why)" when why is given. Returns 0 or -1.
int api_check_fields(json_t *body, const char *const *allowed, const char *why, struct api_error *e);
// The error JSON body (caller decrefs). type/code follow OpenAI's by status.
json_t *api_error_json(const struct api_error *e);

enum api_kind { API_CHAT = 0, API_COMPLETION };
enum tool_mode { TOOLS_NONE = 0, TOOLS_AUTO, TOOLS_REQUIRED, TOOLS_NAMED };

// What a request may ask for, from the server's configuration.
struct api_limits {
    const char *model_name;          // --served-model-name (requests naming another: 404)
    int max_model_len;
    int vocab;                       // token ids (stop_token_ids, logit_bias) must be below it
    int max_n;                       // most parallel samples (n)
    int max_prompts;                 // most prompts in one /v1/completions batch
    struct gen_defaults gen;         // the model's generation_config defaults
};

// One prompt of a completion request: text or token ids.
struct api_prompt {
    const char *text;                // borrowed from the body, or NULL
    size_t text_len;
    int32_t *ids;                    // owned, when the prompt was given as token ids
    int n_ids;
};

struct api_request {
    enum api_kind kind;
    json_t *body;                    // the parsed body (a reference is held)
    const char *model;               // borrowed from body (NULL: the served model)
    // chat
    json_t *messages;                // owned: normalized (content as strings, tool-call
                                     // arguments parsed to objects), ready for the template
    json_t *tools;                   // borrowed from body, or NULL (also NULL for tool_choice none)
    enum tool_mode tool_mode;
    const char *tool_name;           // TOOLS_NAMED: the forced function (borrowed)
    bool add_generation_prompt;      // default true
    json_t *template_kwargs;         // chat_template_kwargs (borrowed), or NULL
    // completions
    struct api_prompt *prompts;      // owned [n_prompts]
    int n_prompts;
    bool echo;
    // both
    struct gen_request gen;          // validated; stop strings borrowed from body, token
                                     // arrays owned; prompt/on_output/user left for the caller
    bool max_tokens_given;
    bool logprobs;                   // return logprobs
    int top_logprobs;                // alternatives per token (chat top_logprobs / completion logprobs)
    bool stream, include_usage, continuous_usage;
    const char *user;
    // structured outputs (also set by tool_choice required/named)
    bool has_grammar;
    enum grammar_kind grammar_kind;
    char *grammar_spec;              // owned, NUL-terminated
    size_t grammar_spec_len;
    const char *whitespace_pattern;  // borrowed, or NULL
    char grammar_param[64];          // the field the constraint came from (for errors)
};

// Parses and validates body (an object) for kind. On failure returns -1 with e set (400 for
// malformed or out-of-range fields, naming the field; 404 for another model) and leaves req
// freeable. Never aborts on any input.
// Parses the body of POST /v1/structured_outputs/warmup: only "model" and the structured-output
// fields (guided_*, structured_outputs, response_format), exactly one constraint. -1 with e set.
int api_structured_parse(struct api_request *req, json_t *body, const struct api_limits *lim,
                         struct api_error *e);

int api_request_parse(struct api_request *req, enum api_kind kind, json_t *body,
                      const struct api_limits *lim, struct api_error *e);
void api_request_free(struct api_request *req);

// Checks prompt length + max_tokens against max_model_len and fills gen.max_tokens when the
// client gave none. Returns 0, or -1 with a 400 naming the numbers.
int api_check_length(struct api_request *req, int n_prompt, const struct api_limits *lim,
                     struct api_error *e);

// Builds the JSON Schema that forces a tool call (tool_choice required: an array of
// {name, arguments}; named: the function's parameters). Returns a malloc'd string or NULL + e.
char *api_tool_schema(json_t *tools, enum tool_mode mode, const char *name, struct api_error *e);
