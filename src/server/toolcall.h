// Hermes-style tool calls (Qwen2.5): the model writes `<tool_call>\n{"name": ..., "arguments":
// {...}}\n</tool_call>` blocks. The parser takes the output text in arbitrary pieces (as
// streamed) and splits it into plain content and completed calls, holding back only a suffix
// that could still begin a `<tool_call>` tag, so concatenating every content piece and every
// call reproduces the output exactly once: nothing lost, nothing duplicated.
#pragma once
#include <jansson.h>

#include "util/common.h"

struct hermes {
    char *buf;          // text held back (a possible tag prefix, or an open call's body)
    size_t len, cap;
    bool in_call;       // inside <tool_call> ... awaiting </tool_call>
    int n_calls;        // calls emitted so far
};

void hermes_init(struct hermes *h);
void hermes_free(struct hermes *h);
// Feeds text. Appends plain content to *content (malloc'd/grown; *content_len updated) and
// appends each completed call as {"name": str, "arguments": str (JSON text)} to calls.
// A block whose body is not a JSON object with a string "name" is returned as content.
void hermes_feed(struct hermes *h, const char *text, size_t len, char **content,
                 size_t *content_len, json_t *calls);
// End of output: releases whatever is held back (an unclosed call is parsed if complete JSON,
// else returned as content).
void hermes_finish(struct hermes *h, char **content, size_t *content_len, json_t *calls);

// Converts a forced tool call's output (tool_choice required: a JSON array of {name,
// arguments}; named: the arguments object) into calls as above. Returns 0 or -1.
int tool_forced_parse(const char *text, size_t len, const char *named, json_t *calls);
