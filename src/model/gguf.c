// GGUF parser (metadata, tensor infos, alignment) over a memory-mapped file. Every length,
// count and offset is checked against the bytes that remain, so a hostile file fails with a
// message instead of reading out of bounds or allocating without limit.
#include "model/gguf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct gguf_file {
    const uint8_t *base;
    size_t len;
    void *map;          // non-NULL when we mmap'd the file
    uint32_t version;
    uint64_t alignment;
    int n_kv, n_tensors;
    struct gguf_kv *kv;
    struct gguf_tensor *tensors;
    char name[256];     // file name for messages
};

struct cur {
    const uint8_t *p;
    size_t n, o;
    const char *file;
    char *err;
};

static int need(struct cur *c, uint64_t k, const char *what) {
    if (k > c->n - c->o) {
        pg_seterr(c->err, "%s: truncated at byte %zu while reading %s", c->file, c->o, what);
        return -1;
    }
    return 0;
}

static int rd(struct cur *c, void *dst, size_t k, const char *what) {
    if (need(c, k, what)) return -1;
    memcpy(dst, c->p + c->o, k);
    c->o += k;
    return 0;
}

static int rd_str(struct cur *c, struct gguf_str *s, const char *what) {
    uint64_t n;
    if (rd(c, &n, 8, what) || need(c, n, what)) return -1;
    s->p = (const char *)c->p + c->o;
    s->n = n;
    c->o += n;
    return 0;
}

static int vtype_size(enum gguf_vtype t) {
    static const int sz[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < GGUF_VTYPE_COUNT ? sz[t] : 0;
}

static void widen(struct gguf_kv *kv, const uint8_t *p) {
    switch (kv->type) {
    case GGUF_U8: kv->v.u = p[0]; break;
    case GGUF_I8: kv->v.i = (int8_t)p[0]; break;
    case GGUF_BOOL: kv->v.b = p[0] != 0; break;
    case GGUF_U16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
    case GGUF_I16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
    case GGUF_U32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
    case GGUF_I32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
    case GGUF_F32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
    case GGUF_U64: memcpy(&kv->v.u, p, 8); break;
    case GGUF_I64: memcpy(&kv->v.i, p, 8); break;
    case GGUF_F64: memcpy(&kv->v.f, p, 8); break;
    default: break;
    }
}

static int parse_value(struct cur *c, struct gguf_kv *kv) {
    char what[96];
    snprintf(what, sizeof what, "the value of '%.*s'", (int)(kv->key.n < 60 ? kv->key.n : 60), kv->key.p);
    if (kv->type == GGUF_STR) return rd_str(c, &kv->str, what);
    if (kv->type != GGUF_ARR) {
        int sz = vtype_size(kv->type);
        if (sz == 0) {
            pg_seterr(c->err, "%s: %s has unknown type %d", c->file, what, (int)kv->type);
            return -1;
        }
        if (need(c, (uint64_t)sz, what)) return -1;
        widen(kv, c->p + c->o);
        c->o += (size_t)sz;
        return 0;
    }
    uint32_t et;
    if (rd(c, &et, 4, what) || rd(c, &kv->arr_n, 8, what)) return -1;
    kv->arr_type = (enum gguf_vtype)et;
    if (et == GGUF_STR) {
        if (kv->arr_n > (c->n - c->o) / 8) return need(c, UINT64_MAX, what);
        kv->arr_str = pg_malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *kv->arr_str);
        for (uint64_t i = 0; i < kv->arr_n; i++)
            if (rd_str(c, &kv->arr_str[i], what)) return -1;
        return 0;
    }
    int sz = vtype_size((enum gguf_vtype)et);
    if (sz == 0) {
        pg_seterr(c->err, "%s: %s is an array of unsupported type %u", c->file, what, et);
        return -1;
    }
    if (kv->arr_n > (c->n - c->o) / (uint64_t)sz) return need(c, UINT64_MAX, what);
    kv->arr_data = c->p + c->o;
    c->o += (size_t)(kv->arr_n * (uint64_t)sz);
    return 0;
}

static int parse_tensor(struct cur *c, struct gguf_tensor *t, int idx) {
    char what[64];
    snprintf(what, sizeof what, "tensor info %d", idx);
    uint32_t nd;
    if (rd_str(c, &t->name, what) || rd(c, &nd, 4, what)) return -1;
    if (nd < 1 || nd > 4) {
        pg_seterr(c->err, "%s: tensor '%.*s' has %u dimensions (1..4 supported)", c->file,
                  (int)(t->name.n < 80 ? t->name.n : 80), t->name.p, nd);
        return -1;
    }
    t->n_dims = (int)nd;
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    uint64_t total = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if (rd(c, &ne, 8, what)) return -1;
        if (ne == 0 || ne > (1ull << 40) || total > (1ull << 42) / ne) {
            pg_seterr(c->err, "%s: tensor '%.*s' has an invalid dimension %llu", c->file,
                      (int)(t->name.n < 80 ? t->name.n : 80), t->name.p, (unsigned long long)ne);
            return -1;
        }
        t->ne[d] = (int64_t)ne;
        total *= ne;
    }
    return rd(c, &t->type, 4, what) || rd(c, &t->offset, 8, what);
}

static int check_tensor(struct gguf_file *f, struct gguf_tensor *t, const uint8_t *data, size_t data_len, char *err) {
    int be, bb;
    int nm = (int)(t->name.n < 80 ? t->name.n : 80);
    if (t->offset % f->alignment) {
        pg_seterr(err, "%s: tensor '%.*s' offset %llu is not aligned to %llu", f->name, nm, t->name.p,
                  (unsigned long long)t->offset, (unsigned long long)f->alignment);
        return -1;
    }
    if (ggml_type_block(t->type, &be, &bb) != 0) return 0; // unsupported: refused on use
    if (t->ne[0] % be) {
        pg_seterr(err, "%s: tensor '%.*s' row of %lld is not a multiple of the %s block (%d)", f->name,
                  nm, t->name.p, (long long)t->ne[0], ggml_type_name(t->type), be);
        return -1;
    }
    uint64_t n = (uint64_t)t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    t->nbytes = n / (uint64_t)be * (uint64_t)bb;
    if (t->offset > data_len || t->nbytes > data_len - t->offset) {
        pg_seterr(err, "%s: tensor '%.*s' (%llu bytes at %llu) runs past the end of the data section (%zu bytes)",
                  f->name, nm, t->name.p, (unsigned long long)t->nbytes, (unsigned long long)t->offset, data_len);
        return -1;
    }
    t->data = data + t->offset;
    return 0;
}

static int parse_header(struct gguf_file *f, struct cur *c) {
    uint8_t magic[4];
    uint64_t nt, nkv;
    if (rd(c, magic, 4, "the magic") || memcmp(magic, "GGUF", 4) != 0) {
        pg_seterr(c->err, "%s: not a GGUF file (bad magic)", f->name);
        return -1;
    }
    if (rd(c, &f->version, 4, "the version")) return -1;
    if (f->version != 2 && f->version != 3) {
        pg_seterr(c->err, "%s: GGUF version %u is not supported (2 and 3 are)", f->name, f->version);
        return -1;
    }
    if (rd(c, &nt, 8, "the tensor count") || rd(c, &nkv, 8, "the metadata count")) return -1;
    // each kv takes >= 12 bytes and each tensor info >= 28: bounds the allocations below
    if (nkv > (c->n - c->o) / 12 || nt > (c->n - c->o) / 28) {
        pg_seterr(c->err, "%s: counts (%llu tensors, %llu metadata) exceed the file size", f->name,
                  (unsigned long long)nt, (unsigned long long)nkv);
        return -1;
    }
    f->kv = pg_calloc(nkv ? nkv : 1, sizeof *f->kv);
    f->tensors = pg_calloc(nt ? nt : 1, sizeof *f->tensors);
    for (uint64_t i = 0; i < nkv; i++) {
        struct gguf_kv *kv = &f->kv[i];
        uint32_t ty;
        f->n_kv = (int)i + 1;
        if (rd_str(c, &kv->key, "a metadata key") || rd(c, &ty, 4, "a metadata type")) return -1;
        kv->type = (enum gguf_vtype)ty;
        if (parse_value(c, kv)) return -1; // nested arrays fail there (element size 0)
    }
    for (uint64_t i = 0; i < nt; i++) {
        f->n_tensors = (int)i + 1;
        if (parse_tensor(c, &f->tensors[i], (int)i)) return -1;
    }
    return 0;
}

struct gguf_file *gguf_parse(const void *buf, size_t len, const char *name, char *err) {
    struct gguf_file *f = pg_calloc(1, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name ? name : "gguf");
    f->base = buf;
    f->len = len;
    struct cur c = {buf, len, 0, f->name, err};
    if (parse_header(f, &c)) goto fail;
    f->alignment = 32;
    const struct gguf_kv *al = gguf_find_kv(f, "general.alignment");
    if (al) {
        if ((al->type != GGUF_U32 && al->type != GGUF_U64) || al->v.u == 0 || (al->v.u & (al->v.u - 1)) ||
            al->v.u > 65536) {
            pg_seterr(err, "%s: general.alignment must be a power of two (u32)", f->name);
            goto fail;
        }
        f->alignment = al->v.u;
    }
    size_t start = (c.o + f->alignment - 1) / f->alignment * f->alignment;
    if (start > len) start = len; // no data section: only zero-size use is possible
    for (int i = 0; i < f->n_tensors; i++)
        if (check_tensor(f, &f->tensors[i], f->base + start, len - start, err)) goto fail;
    return f;
fail:
    gguf_close(f);
    return NULL;
}

struct gguf_file *gguf_open(const char *path, char *err) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        pg_seterr(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 24) {
        pg_seterr(err, "%s: not a GGUF file (too small or not a regular file)", path);
        close(fd);
        return NULL;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        pg_seterr(err, "%s: mmap: %s", path, strerror(errno));
        return NULL;
    }
    const char *base = strrchr(path, '/');
    struct gguf_file *f = gguf_parse(map, (size_t)st.st_size, base ? base + 1 : path, err);
    if (!f) {
        munmap(map, (size_t)st.st_size);
        return NULL;
    }
    f->map = map;
    return f;
}

void gguf_close(struct gguf_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) free(f->kv[i].arr_str);
    free(f->kv);
    free(f->tensors);
    if (f->map) munmap(f->map, f->len);
    free(f);
}

uint32_t gguf_version(const struct gguf_file *f) { return f->version; }
int gguf_n_kv(const struct gguf_file *f) { return f->n_kv; }
const struct gguf_kv *gguf_kv_at(const struct gguf_file *f, int i) { return i >= 0 && i < f->n_kv ? &f->kv[i] : NULL; }
int gguf_n_tensors(const struct gguf_file *f) { return f->n_tensors; }
const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *f, int i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

static bool str_eq(struct gguf_str s, const char *z) {
    size_t n = strlen(z);
    return s.n == n && memcmp(s.p, z, n) == 0;
}

const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key) {
    for (int i = 0; i < f->n_kv; i++)
        if (str_eq(f->kv[i].key, key)) return &f->kv[i];
    return NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (str_eq(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out, char *err) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) {
        pg_seterr(err, "%s: metadata key %s is missing", f->name, key);
        return -1;
    }
    switch (kv->type) {
    case GGUF_U8: case GGUF_U16: case GGUF_U32: *out = (int64_t)kv->v.u; return 0;
    case GGUF_U64:
        if (kv->v.u > INT64_MAX) break;
        *out = (int64_t)kv->v.u;
        return 0;
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: *out = kv->v.i; return 0;
    case GGUF_BOOL: *out = kv->v.b; return 0;
    default: break;
    }
    pg_seterr(err, "%s: metadata key %s is not an integer", f->name, key);
    return -1;
}

int gguf_get_float(const struct gguf_file *f, const char *key, double *out, char *err) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (kv && (kv->type == GGUF_F32 || kv->type == GGUF_F64)) {
        *out = kv->v.f;
        return 0;
    }
    int64_t i;
    if (gguf_get_int(f, key, &i, err)) return -1;
    *out = (double)i;
    return 0;
}

char *gguf_get_str(const struct gguf_file *f, const char *key, char *err) {
    const struct gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv || kv->type != GGUF_STR) {
        pg_seterr(err, "%s: metadata key %s is %s", f->name, key, kv ? "not a string" : "missing");
        return NULL;
    }
    char *s = pg_malloc(kv->str.n + 1);
    memcpy(s, kv->str.p, kv->str.n);
    s[kv->str.n] = 0;
    return s;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

char *model_gguf_path(const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return NULL;
    if (S_ISREG(st.st_mode)) {
        FILE *fp = fopen(path, "rb");
        char magic[4] = {0};
        bool is = fp && fread(magic, 1, 4, fp) == 4 && memcmp(magic, "GGUF", 4) == 0;
        if (fp) fclose(fp);
        return is ? pg_strdup(path) : NULL;
    }
    if (!S_ISDIR(st.st_mode)) return NULL;
    char *cfg = pg_path_join(path, "config.json");
    bool hf = pg_file_exists(cfg);
    free(cfg);
    if (hf) return NULL;
    DIR *d = opendir(path);
    if (!d) return NULL;
    char *found = NULL;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!ends_with(e->d_name, ".gguf")) continue;
        if (n++ == 0) found = pg_path_join(path, e->d_name);
    }
    closedir(d);
    if (n != 1) {
        free(found);
        return NULL;
    }
    return found;
}
