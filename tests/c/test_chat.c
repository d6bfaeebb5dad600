// Tests for tokenizer/chat: golden renders from Python jinja2 (tests/fixtures/chat/
// golden.jsonl, made by gen_golden.py), the template loader, error messages, limits against
// hostile templates, and concurrent rendering.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tokenizer/chat.h"

#define QWEN_DIR "../shared/models/qwen-tokenizer"
#define FIX "tests/fixtures/chat"

static char *template_source(const char *name) {
    char err[PG_ERR_LEN];
    struct chat_template_info info;
    const char *override = NULL;
    if (!strcmp(name, "qwen2.5")) override = QWEN_DIR "/qwen2.5-chat-template.jinja";
    else if (!strcmp(name, "llama3.1")) override = FIX "/llama3.1-chat-template.jinja";
    else if (!strcmp(name, "smollm2")) override = FIX "/smollm2-chat-template.jinja";
    else if (strcmp(name, "qwen3")) {
        char path[256];
        snprintf(path, sizeof path, FIX "/extra/%s.jinja", name);
        if (strchr(name, '{') || strchr(name, '\n') || !pg_file_exists(path)) return strdup(name); // inline
        override = path;
        if (chat_template_load(NULL, override, &info, err)) return NULL;
        char *s = strdup(info.source);
        chat_template_info_free(&info);
        return s;
    }
    if (chat_template_load(override ? NULL : QWEN_DIR, override, &info, err)) {
        print_error("%s\n", err);
        return NULL;
    }
    char *s = strdup(info.source);
    chat_template_info_free(&info);
    return s;
}

static void test_golden(void **state) {
    (void)state;
    FILE *f = fopen(FIX "/golden.jsonl", "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    int n = 0, rendered = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *c = json_loads(line, 0, &je);
        assert_non_null(c);
        char *src = template_source(json_string_value(json_object_get(c, "template")));
        assert_non_null(src);
        char err[PG_ERR_LEN] = "", *out = NULL;
        struct chat_template *t = chat_template_parse(src, err);
        json_t *tools = json_object_get(c, "tools"), *bos = json_object_get(c, "bos_token"),
               *eos = json_object_get(c, "eos_token");
        struct chat_render_args a = {
            .messages = json_object_get(c, "messages"),
            .tools = json_is_null(tools) ? NULL : tools,
            .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
            .bos_token = json_string_value(bos), .eos_token = json_string_value(eos),
            .extra = json_object_get(c, "kwargs"),
        };
        int rc = t ? chat_template_render(t, &a, &out, err) : -1;
        json_t *exp = json_object_get(c, "expected");
        if (exp) {
            if (rc || strcmp(out, json_string_value(exp)))
                print_error("case %d (%.60s): %s\n  got: %.300s\n  exp: %.300s\n", n, src, err,
                            out ? out : "", json_string_value(exp));
            assert_int_equal(rc, 0);
            assert_string_equal(out, json_string_value(exp));
            rendered++;
        } else {
            if (rc == 0) print_error("case %d should fail: %.80s\n", n, src);
            assert_int_equal(rc, -1);
            assert_true(strlen(err) > 0);
        }
        free(out);
        chat_template_free(t);
        free(src);
        json_decref(c);
        n++;
    }
    free(line);
    fclose(f);
    assert_true(n >= 100);
    assert_true(rendered >= 80);
}

// Renders src with one user message; returns rc, output/err in the given buffers.
static int render1(const char *src, char **out, char *err) {
    *out = NULL;
    struct chat_template *t = chat_template_parse(src, err);
    if (!t) return -1;
    json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
    struct chat_render_args a = {.messages = msgs};
    int rc = chat_template_render(t, &a, out, err);
    json_decref(msgs);
    chat_template_free(t);
    return rc;
}

static void test_errors(void **state) {
    (void)state;
    char err[PG_ERR_LEN], *out;
    assert_int_equal(render1("a\n{{ raise_exception('Only user and assistant roles') }}", &out, err), -1);
    assert_string_equal(err, "Only user and assistant roles");
    assert_int_equal(render1("x\ny\n{% if true %}\n{% endfor %}", &out, err), -1);
    assert_non_null(strstr(err, "syntax error at line 4"));
    assert_int_equal(render1("{{ 'a' +  }}", &out, err), -1);
    assert_non_null(strstr(err, "line 1"));
    assert_int_equal(render1("\n\n{{ messages[0].content.nope() }}", &out, err), -1);
    assert_non_null(strstr(err, "line 3"));
    assert_int_equal(render1("{{ foo.bar }}", &out, err), -1);
    assert_non_null(strstr(err, "'foo' is undefined"));
    assert_int_equal(render1("{{ 'unterminated }}", &out, err), -1);
    assert_int_equal(render1("{# never closed", &out, err), -1);
    assert_int_equal(render1("{{ \"\\xZZ\" }}", &out, err), -1);
    assert_null(chat_template_parse("\xff\xfe", err));
    // an undefined variable renders as empty, like jinja2's default Undefined
    assert_int_equal(render1("[{{ nothing }}]", &out, err), 0);
    assert_string_equal(out, "[]");
    free(out);
}

static void test_limits(void **state) {
    (void)state;
    char err[PG_ERR_LEN], *out;
    // deep nesting is a syntax error, not a stack overflow
    size_t n = 100000;
    char *deep = malloc(2 * n + 64);
    strcpy(deep, "{{ ");
    memset(deep + 3, '(', n);
    strcpy(deep + 3 + n, "1 }}"); // unbalanced
    assert_int_equal(render1(deep, &out, err), -1);
    strcpy(deep + 3 + n, "1");
    memset(deep + 4 + n, ')', n);
    strcpy(deep + 4 + 2 * n, " }}");
    assert_int_equal(render1(deep, &out, err), -1);
    assert_non_null(strstr(err, "too deep"));
    for (size_t i = 0; i < n / 16; i++) memcpy(deep + 16 * i, "{% if true %}   ", 16);
    strcpy(deep + n, "x");
    assert_int_equal(render1(deep, &out, err), -1);
    assert_non_null(strstr(err, "too deep"));
    strcpy(deep, "{{ ");
    for (size_t i = 0; i < n / 4; i++) memcpy(deep + 3 + 4 * i, "not ", 4);
    strcpy(deep + 3 + n, "1 }}");
    assert_int_equal(render1(deep, &out, err), -1);
    free(deep);
    // unbounded recursion in a macro
    assert_int_equal(render1("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", &out, err), -1);
    assert_non_null(strstr(err, "too deep"));
    // billions of iterations stop at the step budget
    assert_int_equal(render1("{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}"
                             "{% endfor %}{% endfor %}{% endfor %}", &out, err), -1);
    assert_non_null(strstr(err, "steps"));
    assert_int_equal(render1("{{ range(1000000000) }}", &out, err), -1);
    // huge strings
    assert_int_equal(render1("{{ 'x' * 1000000000 }}", &out, err), -1);
    // shared nested data: printing, tojson and comparing must stay bounded
    const char *dag = "{% set ns = namespace(a=[1], b=[1]) %}{% for i in range(60) %}"
                      "{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}";
    char src[512];
    snprintf(src, sizeof src, "%s{{ ns.a }}", dag);
    assert_int_equal(render1(src, &out, err), -1);
    assert_non_null(strstr(err, "too long"));
    snprintf(src, sizeof src, "%s{{ ns.a == ns.a }}{{ ns.a == ns.b }}", dag);
    assert_int_equal(render1(src, &out, err), 0); // identity shortcut, then the comparison budget
    free(out);
    assert_int_equal(render1("{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}"
                             "{% endfor %}", &out, err), -1);
    assert_non_null(strstr(err, "list too long"));
    assert_int_equal(render1("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
                             "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}", &out, err), -1);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_loader(void **state) {
    (void)state;
    char err[PG_ERR_LEN], dir[] = "/tmp/pagoda-chat-XXXXXX", path[512];
    struct chat_template_info info;
    assert_non_null(mkdtemp(dir));
    // no template at all
    assert_int_equal(chat_template_load(dir, NULL, &info, err), -1);
    assert_non_null(strstr(err, "no chat template"));
    // list of named templates: "default" wins; bos/eos as {content} objects and strings
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    write_file(path, "{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, \"eos_token\": \"</s>\","
                     "\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
                     "{\"name\": \"default\", \"template\": \"D{{ bos_token }}\"}]}");
    assert_int_equal(chat_template_load(dir, NULL, &info, err), 0);
    assert_string_equal(info.source, "D{{ bos_token }}");
    assert_string_equal(info.bos_token, "<s>");
    assert_string_equal(info.eos_token, "</s>");
    chat_template_info_free(&info);
    // chat_template.jinja takes precedence over tokenizer_config.json
    char jpath[512];
    snprintf(jpath, sizeof jpath, "%s/chat_template.jinja", dir);
    write_file(jpath, "J{{ messages | length }}");
    assert_int_equal(chat_template_load(dir, NULL, &info, err), 0);
    assert_string_equal(info.source, "J{{ messages | length }}");
    assert_string_equal(info.bos_token, "<s>");
    chat_template_info_free(&info);
    // override: inline text, then a file path, then a missing path
    assert_int_equal(chat_template_load(dir, "{{ 'inline' }}", &info, err), 0);
    assert_string_equal(info.source, "{{ 'inline' }}");
    chat_template_info_free(&info);
    assert_int_equal(chat_template_load(NULL, jpath, &info, err), 0);
    assert_string_equal(info.source, "J{{ messages | length }}");
    assert_null(info.eos_token);
    chat_template_info_free(&info);
    assert_int_equal(chat_template_load(dir, "/nonexistent/template.jinja", &info, err), -1);
    // malformed tokenizer_config.json
    write_file(path, "{\"chat_template\": ");
    assert_int_equal(chat_template_load(dir, NULL, &info, err), -1);
    assert_non_null(strstr(err, "invalid JSON"));
    unlink(path);
    unlink(jpath);
    rmdir(dir);
    // the shared Qwen tokenizer: Qwen3 template, eos <|im_end|>, no bos
    assert_int_equal(chat_template_load(QWEN_DIR, NULL, &info, err), 0);
    assert_non_null(strstr(info.source, "enable_thinking"));
    assert_string_equal(info.eos_token, "<|im_end|>");
    assert_null(info.bos_token);
    chat_template_info_free(&info);
}

struct thread_arg {
    const struct chat_template *t;
    json_t *msgs;
    const char *expected;
    int ok;
};

static void *render_thread(void *p) {
    struct thread_arg *a = p;
    for (int i = 0; i < 200; i++) {
        char err[PG_ERR_LEN], *out = NULL;
        struct chat_render_args ra = {.messages = a->msgs, .add_generation_prompt = true};
        if (chat_template_render(a->t, &ra, &out, err) == 0 && !strcmp(out, a->expected)) a->ok++;
        free(out);
    }
    return NULL;
}

static void test_concurrent(void **state) {
    (void)state;
    char err[PG_ERR_LEN], *src = template_source("qwen3"), *expected = NULL;
    struct chat_template *t = chat_template_parse(src, err);
    assert_non_null(t);
    json_t *msgs = json_loads("[{\"role\":\"system\",\"content\":\"你好\"},{\"role\":\"user\",\"content\":\"x\"},"
                              "{\"role\":\"assistant\",\"content\":\"<think>a</think>b\"},"
                              "{\"role\":\"user\",\"content\":\"y\"}]", 0, NULL);
    struct chat_render_args ra = {.messages = msgs, .add_generation_prompt = true};
    assert_int_equal(chat_template_render(t, &ra, &expected, err), 0);
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){t, msgs, expected, 0};
        pthread_create(&th[i], NULL, render_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].ok, 200);
    }
    free(expected);
    json_decref(msgs);
    chat_template_free(t);
    free(src);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),  cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),  cmocka_unit_test(test_loader),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
