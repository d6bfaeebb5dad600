// safetensors reader: single file or sharded (model.safetensors.index.json), memory-mapped.
#pragma once
#include "util/common.h"

struct st_tensor {
    char *name;
    enum pg_dtype dtype;   // F32, F16, BF16, I32 (others are refused at load)
    int ndim;
    int64_t shape[4];
    const void *data;      // borrowed pointer into the mapping; valid until st_close
    size_t nbytes;
    const char *file;      // the shard it came from (for error messages)
};

struct st_file; // one or more mapped shards plus a name index

// Opens model.safetensors or model.safetensors.index.json (and its shards) under dir.
// Returns NULL with err set (naming the file) on a missing, truncated or corrupt file.
struct st_file *st_open_dir(const char *dir, char *err);
// Opens one .safetensors file.
struct st_file *st_open(const char *path, char *err);
void st_close(struct st_file *f);

// Looks up a tensor by name; NULL when absent.
const struct st_tensor *st_find(const struct st_file *f, const char *name);
int st_count(const struct st_file *f);
const struct st_tensor *st_get(const struct st_file *f, int i);

// Parses a safetensors header (the JSON after the 8-byte length) against a data section of
// data_len bytes, validating offsets, dtypes and shapes. Used by st_open and the fuzz target.
// On success *out/*n_out are malloc'd tensors whose data pointers are offsets from `data`.
int st_parse_header(const char *json, size_t json_len, const void *data, size_t data_len,
                    const char *file, struct st_tensor **out, int *n_out, char *err);
void st_free_tensors(struct st_tensor *t, int n);
