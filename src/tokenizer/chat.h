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
