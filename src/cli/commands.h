// Subcommands of the `pagoda` binary. Each lives in its own cli/cmd_*.c and returns the
// process exit code. argv[0] is the subcommand name.
#pragma once

int cmd_generate(int argc, char **argv);      // cli/cmd_generate.c
int cmd_serve(int argc, char **argv);         // cli/cmd_serve.c
int cmd_tokenize(int argc, char **argv);      // cli/cmd_tokenize.c
int cmd_detokenize(int argc, char **argv);    // cli/cmd_tokenize.c
int cmd_chat_template(int argc, char **argv); // cli/cmd_chat_template.c
int cmd_make_model(int argc, char **argv);    // cli/cmd_make_model.c
int cmd_bench(int argc, char **argv);         // cli/cmd_bench.c
int cmd_eval(int argc, char **argv);          // cli/cmd_eval.c
