// Chat templates: renders a model's Jinja chat_template (tokenizer_config.json or
// chat_template.jinja) the way Hugging Face does (trim_blocks, lstrip_blocks, tojson
// without ASCII escaping). Values are jansson JSON values.
#pragma once
#include <jansson.h>

#include "util/common.h"

struct chat_template; // a parsed template, immutable, thread-safe to render concurrently

// Parses template source. NULL + err (with line number) on a syntax error.
struct chat_template *chat_template_parse(const char *src, char *err);
void chat_template_free(struct chat_template *t);

struct chat_render_args {
    json_t *messages;            // array of {role, content, [tool_calls], [name], ...}
    json_t *tools;               // array of tool definitions, or NULL
    bool add_generation_prompt;
    const char *bos_token;       // may be NULL
    const char *eos_token;       // may be NULL
    json_t *extra;               // object of extra variables (chat_template_kwargs), or NULL
};

// Renders to a malloc'd string. A template error (incl. raise_exception) fails with err
// suitable for an HTTP 400 message.
int chat_template_render(const struct chat_template *t, const struct chat_render_args *a,
                         char **out, char *err);

// ---- loading a model's template ----
// A model's chat template source and special tokens. All strings malloc'd (NULL if absent);
// free with chat_template_info_free.
struct chat_template_info {
    char *source;    // Jinja source
    char *origin;    // where it came from: a file path, "--chat-template", ...
    char *bos_token; // from tokenizer_config.json: a string or {"content": ...}
    char *eos_token;
};

// Reads the chat template of the model (or tokenizer-only) directory `dir`:
//   override (when not NULL): a path to a template file, or else inline template text (as
//     vLLM's --chat-template: text containing '{', '}' or a newline is taken as a template);
//   else dir/chat_template.jinja, else dir/chat_template.json {"chat_template": ...}, else
//   tokenizer_config.json "chat_template" (a string, or a list of {name, template} where the
//   one named "default" is used, else the first).
// bos/eos come from dir/tokenizer_config.json when present (dir may be NULL with an override).
// Fails with err when no template can be found or a file is malformed.
int chat_template_load(const char *dir, const char *override, struct chat_template_info *out,
                       char *err);
void chat_template_info_free(struct chat_template_info *info);
