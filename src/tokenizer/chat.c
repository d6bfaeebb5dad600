// Chat templates: the public API over the Jinja interpreter (jinja_*.c), and the loader
// that finds a model's template and special tokens.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/chat.h"
#include "tokenizer/jinja.h"

struct chat_template {
    struct jinja_tmpl *t;
};

struct chat_template *chat_template_parse(const char *src, char *err) {
    char e[PG_ERR_LEN] = "";
    if (!src) {
        pg_seterr(err, "chat template is empty");
        return NULL;
    }
    struct jinja_tmpl *t = jinja_parse(src, strlen(src), e);
    if (!t) {
        pg_seterr(err, "chat template syntax error at %s", e);
        return NULL;
    }
    struct chat_template *ct = pg_calloc(1, sizeof *ct);
    ct->t = t;
    return ct;
}

void chat_template_free(struct chat_template *t) {
    if (!t) return;
    jinja_free(t->t);
    free(t);
}

int chat_template_render(const struct chat_template *t, const struct chat_render_args *a,
                         char **out, char *err) {
    *out = NULL;
    if (!a->messages || !json_is_array(a->messages)) {
        pg_seterr(err, "messages must be an array");
        return -1;
    }
    json_t *vars = json_object();
    json_object_set(vars, "messages", a->messages);
    json_object_set_new(vars, "tools", a->tools ? json_incref(a->tools) : json_null());
    json_object_set_new(vars, "documents", json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(a->add_generation_prompt));
    if (a->bos_token) json_object_set_new(vars, "bos_token", json_string(a->bos_token));
    if (a->eos_token) json_object_set_new(vars, "eos_token", json_string(a->eos_token));
    if (a->extra && json_is_object(a->extra)) json_object_update(vars, a->extra);
    size_t len;
    int rc = jinja_render(t->t, vars, out, &len, err);
    json_decref(vars);
    return rc;
}

// ---- loader ----
static char *token_string(json_t *v) {
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? pg_strdup(json_string_value(v)) : NULL;
}

// Picks the template from a "chat_template" value: a string or [{name, template}, ...].
static char *pick_template(json_t *v, const char *where, char *err) {
    if (json_is_string(v)) return pg_strdup(json_string_value(v));
    if (json_is_array(v)) {
        json_t *first = NULL, *item;
        size_t i;
        json_array_foreach(v, i, item) {
            json_t *name = json_object_get(item, "name"), *tmpl = json_object_get(item, "template");
            if (!json_is_string(tmpl)) continue;
            if (!first) first = tmpl;
            if (json_is_string(name) && !strcmp(json_string_value(name), "default"))
                return pg_strdup(json_string_value(tmpl));
        }
        if (first) return pg_strdup(json_string_value(first));
    }
    pg_seterr(err, "%s: \"chat_template\" must be a string or a list of {name, template}", where);
    return NULL;
}

static json_t *load_json(const char *path, char *err) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) pg_seterr(err, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
    return j;
}

static int load_override(const char *override, struct chat_template_info *out, char *err) {
    if (pg_file_exists(override)) {
        size_t len;
        out->source = pg_read_file(override, &len, err);
        if (!out->source) return -1;
        out->origin = pg_strdup(override);
        return 0;
    }
    if (strpbrk(override, "{}\n")) {
        out->source = pg_strdup(override);
        out->origin = pg_strdup("--chat-template");
        return 0;
    }
    pg_seterr(err, "chat template file not found: %s", override);
    return -1;
}

int chat_template_load(const char *dir, const char *override, struct chat_template_info *out,
                       char *err) {
    memset(out, 0, sizeof *out);
    char *cfg_path = dir ? pg_path_join(dir, "tokenizer_config.json") : NULL;
    json_t *cfg = NULL;
    if (cfg_path && pg_file_exists(cfg_path)) {
        if (!(cfg = load_json(cfg_path, err))) goto fail;
        out->bos_token = token_string(json_object_get(cfg, "bos_token"));
        out->eos_token = token_string(json_object_get(cfg, "eos_token"));
    }
    if (override) {
        if (load_override(override, out, err)) goto fail;
    } else if (dir) {
        char *p = pg_path_join(dir, "chat_template.jinja");
        if (pg_file_exists(p)) {
            size_t len;
            out->source = pg_read_file(p, &len, err);
            out->origin = p;
            if (!out->source) goto fail;
        } else {
            free(p);
            p = pg_path_join(dir, "chat_template.json");
            if (pg_file_exists(p)) {
                json_t *j = load_json(p, err);
                out->source = j ? pick_template(json_object_get(j, "chat_template"), p, err) : NULL;
                json_decref(j);
                out->origin = p;
                if (!out->source) goto fail;
            } else if (cfg && json_object_get(cfg, "chat_template")) {
                free(p);
                out->source = pick_template(json_object_get(cfg, "chat_template"), cfg_path, err);
                out->origin = pg_strdup(cfg_path);
                if (!out->source) goto fail;
            } else {
                free(p);
                pg_seterr(err, "%s has no chat template (chat_template.jinja or \"chat_template\" in "
                               "tokenizer_config.json); pass --chat-template", dir);
                goto fail;
            }
        }
    } else {
        pg_seterr(err, "no model directory and no --chat-template given");
        goto fail;
    }
    json_decref(cfg);
    free(cfg_path);
    return 0;
fail:
    json_decref(cfg);
    free(cfg_path);
    chat_template_info_free(out);
    return -1;
}

void chat_template_info_free(struct chat_template_info *info) {
    free(info->source);
    free(info->origin);
    free(info->bos_token);
    free(info->eos_token);
    memset(info, 0, sizeof *info);
}
