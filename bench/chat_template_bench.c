// Chat template benchmark: parse and render time of a template over a conversation, in
// thread CPU time (the host is shared, so wall time mostly measures other jobs' load).
//   chat_template_bench TEMPLATE_FILE CASE.json REPEATS
// CASE.json: {"messages": [...], "tools": [...]|null, "bos_token", "eos_token"}.
// Prints one JSON line: {"parse_us", "render_us", "out_bytes"} (medians over REPEATS).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/chat.h"

static double cpu_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TEMPLATE_FILE CASE.json REPEATS\n", argv[0]);
        return 2;
    }
    char err[PG_ERR_LEN];
    size_t len;
    char *src = pg_read_file(argv[1], &len, err);
    json_t *c = json_load_file(argv[2], 0, NULL);
    int n = atoi(argv[3]);
    if (!src || !c || n < 1) {
        fprintf(stderr, "bad input: %s\n", err);
        return 1;
    }
    double *tp = calloc((size_t)n, sizeof *tp), *tr = calloc((size_t)n, sizeof *tr);
    size_t out_bytes = 0;
    json_t *tools = json_object_get(c, "tools");
    struct chat_render_args a = {
        .messages = json_object_get(c, "messages"), .tools = json_is_array(tools) ? tools : NULL,
        .add_generation_prompt = true, .bos_token = json_string_value(json_object_get(c, "bos_token")),
        .eos_token = json_string_value(json_object_get(c, "eos_token")),
    };
    for (int i = 0; i < n; i++) {
        double t0 = cpu_us();
        struct chat_template *t = chat_template_parse(src, err);
        double t1 = cpu_us();
        char *out = NULL;
        if (!t || chat_template_render(t, &a, &out, err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        tp[i] = t1 - t0;
        tr[i] = cpu_us() - t1;
        out_bytes = strlen(out);
        free(out);
        chat_template_free(t);
    }
    qsort(tp, (size_t)n, sizeof *tp, cmp);
    qsort(tr, (size_t)n, sizeof *tr, cmp);
    printf("{\"parse_us\": %.1f, \"render_us\": %.1f, \"out_bytes\": %zu}\n", tp[n / 2], tr[n / 2], out_bytes);
    free(tp), free(tr), free(src);
    json_decref(c);
    return 0;
}
