// GGUF (llama.cpp / ggml model files, versions 2 and 3): parser, ggml block dequantization,
// and the importer that turns a qwen2/llama GGUF into a `struct model_weights`.
//
// Format (ggml docs/gguf.md): "GGUF", u32 version, u64 tensor count, u64 metadata count, the
// metadata key/values (string = u64 length + bytes; arrays = u32 element type + u64 count +
// elements), the tensor infos (name, u32 n_dims, u64 ne[n_dims] fastest-varying first, u32 ggml
// type, u64 offset into the data section), then the data section, aligned to
// general.alignment (32 when absent). A tensor with ne = [in, out] is the row-major
// Hugging Face matrix [out, in].
#pragma once
#include "model/weights.h"

// Metadata value types.
enum gguf_vtype {
    GGUF_U8 = 0, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL,
    GGUF_STR, GGUF_ARR, GGUF_U64, GGUF_I64, GGUF_F64, GGUF_VTYPE_COUNT
};

// ggml tensor types this importer reads (ggml.h enum ggml_type values).
enum ggml_type_id {
    GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3, GGML_T_Q5_0 = 6,
    GGML_T_Q5_1 = 7, GGML_T_Q8_0 = 8, GGML_T_Q4_K = 12, GGML_T_Q5_K = 13, GGML_T_Q6_K = 14,
    GGML_T_BF16 = 30
};

struct gguf_str { const char *p; uint64_t n; };  // borrowed from the file, NOT NUL-terminated

struct gguf_kv {
    struct gguf_str key;
    enum gguf_vtype type;
    union { uint64_t u; int64_t i; double f; bool b; } v; // scalar (ints widened, floats as double)
    struct gguf_str str;            // GGUF_STR
    enum gguf_vtype arr_type;       // GGUF_ARR: element type (never GGUF_ARR: nested refused)
    uint64_t arr_n;
    const void *arr_data;           // GGUF_ARR of scalars: borrowed little-endian elements
    struct gguf_str *arr_str;       // GGUF_ARR of strings: [arr_n], owned by the gguf_file
};

struct gguf_tensor {
    struct gguf_str name;
    int n_dims;
    int64_t ne[4];                  // ne[0] fastest; unused dims are 1
    uint32_t type;                  // enum ggml_type_id (any value; unknown types fail on use)
    uint64_t offset;                // relative to the data section
    const void *data;               // borrowed pointer into the mapping
    uint64_t nbytes;                // 0 for an unsupported type (data then unchecked)
};

struct gguf_file;

// Maps and parses a .gguf file. NULL + err (naming the file and the problem) on a missing,
// truncated or malformed file.
struct gguf_file *gguf_open(const char *path, char *err);
// Parses a GGUF image held in memory (borrowed; must outlive the result). For the fuzz target.
struct gguf_file *gguf_parse(const void *buf, size_t len, const char *name, char *err);
void gguf_close(struct gguf_file *f);

uint32_t gguf_version(const struct gguf_file *f);
int gguf_n_kv(const struct gguf_file *f);
const struct gguf_kv *gguf_kv_at(const struct gguf_file *f, int i);
const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key); // NULL if absent
int gguf_n_tensors(const struct gguf_file *f);
const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *f, int i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f, const char *name);

// Typed metadata getters: 0 on success, -1 (err set) when the key is absent or of another type.
// gguf_get_int accepts every integer type and bool; gguf_get_float also accepts integers.
int gguf_get_int(const struct gguf_file *f, const char *key, int64_t *out, char *err);
int gguf_get_float(const struct gguf_file *f, const char *key, double *out, char *err);
// A malloc'd NUL-terminated copy of a string value, or NULL (err set). Caller frees.
char *gguf_get_str(const struct gguf_file *f, const char *key, char *err);

// Block geometry of a ggml type: elements per block and bytes per block; -1 when unsupported.
int ggml_type_block(uint32_t type, int *block_elems, int *block_bytes);
const char *ggml_type_name(uint32_t type); // "Q4_K", ..., or "type<N>"
// Dequantizes n elements (a whole number of blocks) of `type` at src into dst, exactly as
// ggml's dequantize_row_* (float arithmetic, same operation order). -1 + err if unsupported.
int ggml_dequant(uint32_t type, const void *src, float *dst, int64_t n, char *err);

// Imports a qwen2 or llama GGUF: hyperparameters from metadata, every tensor dequantized into
// owned dense buffers (matrices in `wdtype`: PG_F32 or PG_BF16; norms and biases F32), the
// llama converter's Q/K row permutation undone (Pagoda applies rotate-half RoPE).
// Shapes are checked against the metadata; a mismatch names tensor, expected and actual.
// The returned model is freed with model_free and holds no reference to the file.
struct model_weights *model_load_gguf_ex(const char *path, enum pg_dtype wdtype, char *err);
// requant: Q4_0, Q5_0 and Q8_0 layer linears are kept quantized in weights.h's GPTQ form
// (4-bit zero 8 / 8-bit zero 16 / 8-bit zero 128, group 32, fp16 scales), which represents
// them exactly; other types (and lm_head) are dequantized to `wdtype` as above.
struct model_weights *model_load_gguf_opts(const char *path, enum pg_dtype wdtype, bool requant, char *err);
// The default: BF16 dense matrices, requant off (measured on the 0.5B model: requant loads
// slower, the CPU backend repacks GPTQ again at init, and decode was not clearly faster).
struct model_weights *model_load_gguf(const char *path, char *err);

// Opens a model from a path: a .gguf file, a directory holding exactly one .gguf file (and no
// config.json), or a Hugging Face directory (model_load). NULL + err otherwise.
struct model_weights *model_open(const char *path, char *err);
// The GGUF file model_open would read for `path` (malloc'd), or NULL when path is not a GGUF
// model (a Hugging Face directory, or nothing). For callers that also need its tokenizer.
char *model_gguf_path(const char *path);

// The tokenizer in a GGUF file's metadata: tokenizer.ggml.model "gpt2" (byte-level BPE),
// tokens, merges, token_type (control -> special added token, user-defined -> added token),
// bos/eos ids, tokenizer.ggml.pre mapped to its pre-tokenizer (qwen2, llama-bpe, smollm, gpt2,
// ...) and tokenizer.chat_template. NULL + err on a missing or unsupported tokenizer.
// Caller frees with tok_free. (Implemented in gguf_tok.c on top of tok_new_bpe.)
struct tokenizer;
struct tokenizer *tok_load_gguf(const char *path, char *err);
// The tokenizer that goes with model_open(path): the GGUF's own (tok_load_gguf) for a GGUF
// path, else tok_load(path). NULL + err on failure. Caller frees with tok_free.
struct tokenizer *model_open_tokenizer(const char *path, char *err);
