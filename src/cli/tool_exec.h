// Runs one of the repository's Python client tools (tools/*.py: the load generator and the
// evaluation harness, which talk to a server over HTTP and are never in the serving path).
#pragma once

// Replaces the process with `python3 <repo>/tools/<script> argv[0..argc)`. The repository is
// found from $PAGODA_HOME or from the binary's location (build*/pagoda -> ..). Returns an
// exit code only on failure.
int tool_exec(const char *script, int argc, char **argv);
