// pagoda: an LLM inference server. `pagoda <command> --help` for each command's flags.
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

#define PAGODA_VERSION "0.1.0"

struct command {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
};

static const struct command commands[] = {
    {"serve", cmd_serve, "serve a model over the OpenAI-compatible HTTP API"},
    {"generate", cmd_generate, "generate offline from a prompt, token ids or a JSONL batch"},
    {"tokenize", cmd_tokenize, "print the token ids of a text as a JSON array"},
    {"detokenize", cmd_detokenize, "print the text of comma-separated token ids"},
    {"chat-template", cmd_chat_template, "render a model's chat template for a message list"},
    {"make-model", cmd_make_model, "write a random-weight checkpoint of any Qwen2.5 size"},
    {"bench", cmd_bench, "benchmarks (latency, throughput)"},
    {"eval", cmd_eval, "the customer-service evaluation"},
};

static void usage(FILE *f) {
    fprintf(f, "pagoda %s\nusage: pagoda <command> [flags]\n\ncommands:\n", PAGODA_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pagoda %s\n", PAGODA_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "pagoda: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
