// pagoda eval cs [flags]: the customer-service evaluation (tools/eval_cs.py) against any
// OpenAI-compatible endpoint.
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/tool_exec.h"

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "cs") != 0) {
        fprintf(stderr, "usage: pagoda eval cs --base-url URL --model NAME [--embed-base-url URL] "
                        "[--concurrency N] [--threshold 0.85] ... (pagoda eval cs --help)\n");
        return 2;
    }
    return tool_exec("eval_cs.py", argc - 2, argv + 2);
}
