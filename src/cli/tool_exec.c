#include "cli/tool_exec.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/common.h"

static int find_tool(const char *script, char *out, size_t n) {
    const char *home = getenv("PAGODA_HOME");
    if (home) {
        snprintf(out, n, "%s/tools/%s", home, script);
        return pg_file_exists(out) ? 0 : -1;
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return -1;
    exe[len] = 0;
    // build/pagoda, build-cuda/pagoda, .devbundle/bin/pagoda: walk up to three levels
    for (int up = 1; up <= 3; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash) break;
        *slash = 0;
        snprintf(out, n, "%s/tools/%s", exe, script);
        if (pg_file_exists(out)) return 0;
    }
    return -1;
}

int tool_exec(const char *script, int argc, char **argv) {
    char path[PATH_MAX + 64];
    if (find_tool(script, path, sizeof path) != 0) {
        fprintf(stderr, "pagoda: cannot find tools/%s (set PAGODA_HOME to the repository)\n", script);
        return 2;
    }
    char **args = pg_calloc((size_t)argc + 3, sizeof *args);
    args[0] = "python3";
    args[1] = path;
    for (int i = 0; i < argc; i++) args[i + 2] = argv[i];
    execvp("python3", args);
    perror("pagoda: python3");
    free(args);
    return 2;
}
