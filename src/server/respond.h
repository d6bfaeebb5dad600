// OpenAI response pieces: text as JSON strings, logprobs in the chat and completions
// shapes, usage, finish reasons, tool calls, SSE frames. Pure helpers (unit-tested).
#pragma once
#include <jansson.h>

#include "engine/engine.h"

typedef const char *(*token_bytes_fn)(void *ctx, int32_t id, size_t *len);

// A JSON string of s[0..n): invalid UTF-8 bytes become U+FFFD. Never NULL.
json_t *resp_text(const char *s, size_t n);
// Appends n tokens' entries to a chat logprobs "content" array:
// {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]} (top_k alternatives).
void resp_chat_logprobs(json_t *content, const struct sample_output *lp, int n, int top_k,
                        token_bytes_fn tb, void *ctx);
// Appends to a completions logprobs object {tokens, token_logprobs, top_logprobs, text_offset};
// *offset advances by each token's byte length.
void resp_completion_logprobs(json_t *obj, const struct sample_output *lp, int n, int top_k,
                              token_bytes_fn tb, void *ctx, size_t *offset);
json_t *resp_completion_logprobs_new(void);
json_t *resp_usage(int prompt_tokens, int completion_tokens, int cached_tokens);
// "stop", "length", "abort", "error"; tool_calls: "tool_calls" for a stop with calls.
const char *resp_finish(enum finish_reason r, bool tool_calls);
// {"id": "call_...", "type": "function", "function": {"name", "arguments"}} (+ "index" when
// index >= 0, for stream deltas). call: {"name", "arguments"} from the tool-call parser.
json_t *resp_tool_call(json_t *call, int index, uint64_t id_seed);
// Appends "data: <json>\n\n" to *buf (malloc'd, grown).
void resp_sse(char **buf, size_t *len, size_t *cap, json_t *j);
void resp_sse_raw(char **buf, size_t *len, size_t *cap, const char *s);
