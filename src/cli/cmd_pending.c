// Commands whose implementation has not landed in this build yet. Each is a weak symbol:
// the real cmd_*.c file overrides it. Delete an entry once its command exists.
#include <stdio.h>

#include "cli/commands.h"

__attribute__((unused)) static int pending(const char *name) { // unused once all have landed
    fprintf(stderr, "pagoda: '%s' is not available in this build yet\n", name);
    return 2;
}

#define PENDING(fn, name) \
    __attribute__((weak)) int fn(int argc, char **argv) { (void)argc; (void)argv; return pending(name); }

