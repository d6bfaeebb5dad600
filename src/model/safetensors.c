// safetensors reader: 8-byte little-endian header length, JSON header, data section.
// Files are memory-mapped read-only; tensors are borrowed pointers into the mapping.
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u << 20) // the format's own limit on the header size

struct st_shard {
    char *path;
    void *map;
    size_t size;
};

struct st_file {
    struct st_shard *shards;
    int n_shards;
    struct st_tensor *tensors; // sorted by name
    int n_tensors;
};

static int parse_st_dtype(const char *s, enum pg_dtype *out) {
    static const struct { const char *name; enum pg_dtype t; } tab[] = {
        {"F32", PG_F32}, {"F16", PG_F16}, {"BF16", PG_BF16}, {"I32", PG_I32}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].name)) { *out = tab[i].t; return 0; }
    return -1;
}

void st_free_tensors(struct st_tensor *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
}

// Validates one header entry and fills *t (data is an offset from `data`).
static int parse_entry(const char *name, json_t *v, const void *data, size_t data_len,
                       const char *file, struct st_tensor *t, char *err) {
    json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
           *off = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(sh) || !json_is_array(off) ||
        json_array_size(off) != 2) {
        pg_seterr(err, "%s: tensor '%.200s': header entry needs dtype, shape and data_offsets[2]",
                  file, name);
        return -1;
    }
    if (parse_st_dtype(json_string_value(dt), &t->dtype)) {
        pg_seterr(err, "%s: tensor '%.200s': dtype %.20s is not supported (F32, F16, BF16, I32)",
                  file, name, json_string_value(dt));
        return -1;
    }
    size_t nd = json_array_size(sh);
    if (nd > 4) {
        pg_seterr(err, "%s: tensor '%.200s': %zu dimensions (at most 4 supported)", file, name, nd);
        return -1;
    }
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(sh, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1ll << 40)) {
            pg_seterr(err, "%s: tensor '%.200s': shape[%zu] is not a valid dimension", file, name, i);
            return -1;
        }
        t->shape[i] = json_integer_value(d);
        if (t->shape[i] && numel > (UINT64_MAX >> 24) / (uint64_t)t->shape[i]) {
            pg_seterr(err, "%s: tensor '%.200s': shape is too large", file, name);
            return -1;
        }
        numel *= (uint64_t)t->shape[i];
    }
    json_t *b = json_array_get(off, 0), *e = json_array_get(off, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b)) {
        pg_seterr(err, "%s: tensor '%.200s': invalid data_offsets", file, name);
        return -1;
    }
    uint64_t ob = (uint64_t)json_integer_value(b), oe = (uint64_t)json_integer_value(e);
    if (oe > data_len) {
        pg_seterr(err, "%s: tensor '%.200s': data ends at byte %llu but the file's data section has "
                  "%zu bytes (truncated file?)", file, name, (unsigned long long)oe, data_len);
        return -1;
    }
    uint64_t want = numel * pg_dtype_size(t->dtype);
    if (oe - ob != want) {
        pg_seterr(err, "%s: tensor '%.200s': shape needs %llu bytes but data_offsets span %llu",
                  file, name, (unsigned long long)want, (unsigned long long)(oe - ob));
        return -1;
    }
    t->name = pg_strdup(name);
    t->data = (const char *)data + ob;
    t->nbytes = (size_t)want;
    t->file = file;
    return 0;
}

int st_parse_header(const char *json, size_t json_len, const void *data, size_t data_len,
                    const char *file, struct st_tensor **out, int *n_out, char *err) {
    *out = NULL;
    *n_out = 0;
    json_error_t je;
    json_t *root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) {
        pg_seterr(err, "%s: corrupt safetensors header (invalid JSON at byte %d: %s)", file,
                  je.position, je.text);
        return -1;
    }
    if (!json_is_object(root)) {
        pg_seterr(err, "%s: corrupt safetensors header (not a JSON object)", file);
        json_decref(root);
        return -1;
    }
    size_t cap = json_object_size(root);
    struct st_tensor *t = pg_calloc(cap ? cap : 1, sizeof *t);
    int n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) continue;
        if (parse_entry(key, v, data, data_len, file, &t[n], err)) {
            st_free_tensors(t, n);
            json_decref(root);
            return -1;
        }
        n++;
    }
    json_decref(root);
    *out = t;
    *n_out = n;
    return 0;
}

static int cmp_tensor(const void *a, const void *b) {
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

// Maps one file into f->shards[f->n_shards] and appends its tensors.
static int map_shard(struct st_file *f, const char *path, char *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        pg_seterr(err, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        pg_seterr(err, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        pg_seterr(err, "%s: truncated safetensors file (%zu bytes, no header)", path, size);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        pg_seterr(err, "%s: mmap failed: %s", path, strerror(errno));
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | ((const uint8_t *)map)[i];
    if (hlen > ST_MAX_HEADER || hlen > size - 8) {
        pg_seterr(err, "%s: corrupt or truncated safetensors file (header length %llu, file size %zu)",
                  path, (unsigned long long)hlen, size);
        munmap(map, size);
        return -1;
    }
    struct st_shard *sh = &f->shards[f->n_shards];
    sh->path = pg_strdup(path);
    sh->map = map;
    sh->size = size;
    f->n_shards++;
    struct st_tensor *t;
    int n;
    const char *data = (const char *)map + 8 + hlen;
    if (st_parse_header((const char *)map + 8, hlen, data, size - 8 - hlen, sh->path, &t, &n, err))
        return -1;
    f->tensors = pg_realloc(f->tensors, (size_t)(f->n_tensors + n) * sizeof *t);
    memcpy(f->tensors + f->n_tensors, t, (size_t)n * sizeof *t);
    f->n_tensors += n;
    free(t);
    return 0;
}

static int finish(struct st_file *f, char *err) {
    qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    for (int i = 1; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, f->tensors[i - 1].name)) {
            pg_seterr(err, "%s: tensor '%.200s' appears twice (also in %s)", f->tensors[i].file,
                      f->tensors[i].name, f->tensors[i - 1].file);
            return -1;
        }
    return 0;
}

struct st_file *st_open(const char *path, char *err) {
    struct st_file *f = pg_calloc(1, sizeof *f);
    f->shards = pg_calloc(1, sizeof *f->shards);
    if (map_shard(f, path, err) || finish(f, err)) {
        st_close(f);
        return NULL;
    }
    return f;
}

// model.safetensors.index.json: {"weight_map": {tensor: shard file}}.
static struct st_file *open_index(const char *dir, const char *ipath, char *err) {
    char *text = pg_read_file(ipath, NULL, err);
    if (!text) return NULL;
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    free(text);
    json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        pg_seterr(err, "%s: %s", ipath, root ? "no 'weight_map' object" : je.text);
        json_decref(root);
        return NULL;
    }
    struct st_file *f = pg_calloc(1, sizeof *f);
    f->shards = pg_calloc(json_object_size(wm) + 1, sizeof *f->shards);
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        const char *shard = json_string_value(v);
        if (!shard || strchr(shard, '/') || !strcmp(shard, "..")) {
            pg_seterr(err, "%s: tensor '%.200s': invalid shard file name", ipath, key);
            goto fail;
        }
        char *p = pg_path_join(dir, shard);
        bool seen = false;
        for (int i = 0; i < f->n_shards && !seen; i++) seen = !strcmp(f->shards[i].path, p);
        int rc = seen ? 0 : map_shard(f, p, err);
        free(p);
        if (rc) goto fail;
    }
    if (finish(f, err)) goto fail;
    json_object_foreach(wm, key, v) {
        if (!st_find(f, key)) {
            pg_seterr(err, "%s: tensor '%.200s' is listed for %s but not found there", ipath, key,
                      json_string_value(v));
            goto fail;
        }
    }
    json_decref(root);
    return f;
fail:
    json_decref(root);
    st_close(f);
    return NULL;
}

struct st_file *st_open_dir(const char *dir, char *err) {
    char *p = pg_path_join(dir, "model.safetensors");
    struct st_file *f = NULL;
    if (pg_file_exists(p)) {
        f = st_open(p, err);
    } else {
        char *ip = pg_path_join(dir, "model.safetensors.index.json");
        if (pg_file_exists(ip)) f = open_index(dir, ip, err);
        else pg_seterr(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
        free(ip);
    }
    free(p);
    return f;
}

void st_close(struct st_file *f) {
    if (!f) return;
    st_free_tensors(f->tensors, f->n_tensors);
    for (int i = 0; i < f->n_shards; i++) {
        munmap(f->shards[i].map, f->shards[i].size);
        free(f->shards[i].path);
    }
    free(f->shards);
    free(f);
}

const struct st_tensor *st_find(const struct st_file *f, const char *name) {
    struct st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof key, cmp_tensor);
}

int st_count(const struct st_file *f) { return f->n_tensors; }

const struct st_tensor *st_get(const struct st_file *f, int i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}
