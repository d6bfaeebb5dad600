// pagoda chat-template: renders a model's chat template for a message list.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "tokenizer/chat.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: pagoda chat-template --model DIR --messages FILE.json [--tools FILE.json]\n"
            "                            [--add-generation-prompt] [--chat-template FILE|TEXT]\n"
            "                            [--kwargs JSON|FILE.json]\n"
            "       pagoda chat-template --batch CASES.jsonl\n\n"
            "Prints the rendered prompt (exactly, no trailing newline added).\n"
            "  --messages        a JSON array of messages, or an object with \"messages\" (and\n"
            "                    optionally \"tools\")\n"
            "  --kwargs          extra template variables (chat_template_kwargs), e.g.\n"
            "                    '{\"enable_thinking\": false}'\n"
            "  --batch           testing aid: each line is {\"template\", \"messages\", [\"tools\"],\n"
            "                    [\"add_generation_prompt\"], [\"bos_token\"], [\"eos_token\"],\n"
            "                    [\"kwargs\"]}; prints one line per case: {\"ok\": text} or\n"
            "                    {\"error\": message}\n");
}

static json_t *load_json_arg(const char *arg, char *err) {
    json_error_t je;
    json_t *j = arg[0] == '{' || arg[0] == '[' ? json_loads(arg, 0, &je) : json_load_file(arg, 0, &je);
    if (!j) snprintf(err, PG_ERR_LEN, "%s: invalid JSON at line %d: %s", arg, je.line, je.text);
    return j;
}

static json_t *render_case(json_t *c) {
    char err[PG_ERR_LEN] = "";
    json_t *tmpl = json_object_get(c, "template");
    if (!json_is_string(tmpl)) return json_pack("{ss}", "error", "case has no \"template\" string");
    struct chat_template *t = chat_template_parse(json_string_value(tmpl), err);
    if (!t) return json_pack("{ss}", "error", err);
    json_t *bos = json_object_get(c, "bos_token"), *eos = json_object_get(c, "eos_token");
    struct chat_render_args a = {
        .messages = json_object_get(c, "messages"),
        .tools = json_is_null(json_object_get(c, "tools")) ? NULL : json_object_get(c, "tools"),
        .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
        .bos_token = json_is_string(bos) ? json_string_value(bos) : NULL,
        .eos_token = json_is_string(eos) ? json_string_value(eos) : NULL,
        .extra = json_object_get(c, "kwargs"),
    };
    char *out = NULL;
    json_t *r = chat_template_render(t, &a, &out, err) ? json_pack("{ss}", "error", err)
                                                        : json_pack("{ss}", "ok", out);
    free(out);
    chat_template_free(t);
    return r;
}

static int run_batch(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "pagoda chat-template: cannot open %s\n", path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_error_t je;
        json_t *c = json_loadb(line, (size_t)n, 0, &je), *r;
        r = c ? render_case(c) : json_pack("{ss}", "error", "invalid JSON case");
        char *s = json_dumps(r, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(r);
        json_decref(c);
    }
    free(line);
    fclose(f);
    return 0;
}

int cmd_chat_template(int argc, char **argv) {
    const char *model = NULL, *messages = NULL, *tools = NULL, *override = NULL, *kwargs = NULL;
    bool gen = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--add-generation-prompt")) { gen = true; continue; }
        if (!strcmp(a, "--batch") && v) return run_batch(v);
        const char **dst = !strcmp(a, "--model") ? &model : !strcmp(a, "--messages") ? &messages
                         : !strcmp(a, "--tools") ? &tools : !strcmp(a, "--chat-template") ? &override
                         : !strcmp(a, "--kwargs") ? &kwargs : NULL;
        if (!dst || !v) {
            fprintf(stderr, "pagoda chat-template: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        *dst = v;
        i++;
    }
    if ((!model && !override) || !messages) { usage(stderr); return 2; }
    char err[PG_ERR_LEN] = "";
    int rc = 1;
    struct chat_template_info info = {0};
    struct chat_template *t = NULL;
    json_t *msgs = NULL, *tl = NULL, *kw = NULL;
    char *out = NULL;
    if (!(msgs = load_json_arg(messages, err))) goto done;
    if (json_is_object(msgs)) { // {"messages": [...], "tools": [...]}
        json_t *m = json_incref(json_object_get(msgs, "messages"));
        tl = json_incref(json_object_get(msgs, "tools"));
        json_decref(msgs);
        msgs = m;
    }
    if (tools) {
        json_decref(tl);
        if (!(tl = load_json_arg(tools, err))) goto done;
    }
    if (kwargs && !(kw = load_json_arg(kwargs, err))) goto done;
    if (chat_template_load(model, override, &info, err)) goto done;
    if (!(t = chat_template_parse(info.source, err))) goto done;
    struct chat_render_args a = {.messages = msgs, .tools = json_is_null(tl) ? NULL : tl,
                                 .add_generation_prompt = gen, .bos_token = info.bos_token,
                                 .eos_token = info.eos_token, .extra = kw};
    if (chat_template_render(t, &a, &out, err)) goto done;
    fputs(out, stdout);
    rc = 0;
done:
    if (rc) fprintf(stderr, "pagoda chat-template: %s\n", err);
    free(out);
    chat_template_free(t);
    chat_template_info_free(&info);
    json_decref(msgs);
    json_decref(tl);
    json_decref(kw);
    return rc;
}
