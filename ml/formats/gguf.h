/* GGUF files (ggml's container, as written by ComfyUI-GGUF's converter, stable-diffusion.cpp
 * and llama.cpp): strict reading and host dequantisation to f32.
 *
 * Layout (little-endian): "GGUF", u32 version (2 or 3), u64 tensor count, u64 metadata count;
 * the metadata key/values (string key, u32 value type, value; arrays are u32 element type, u64
 * count, elements); the tensor infos (string name, u32 n_dims, u64 ne[n_dims] innermost first,
 * u32 ggml type, u64 offset relative to the data section); padding to the alignment
 * (general.alignment, default 32); the data section. Strings are u64 length + bytes.
 *
 * Validation on open (docs/models.md "GGUF"): every length, count and offset is checked against
 * the bytes that remain before it is used (core/checked.h arithmetic); keys and tensor names are
 * unique and hold no NUL; arrays of arrays are refused; general.alignment is a power of two;
 * at most SD_GGUF_MAX_DIMS dimensions, the innermost a multiple of the type's block size; only
 * the types below (others: "unknown GGUF type N" naming the tensor); the tensors, in info order,
 * tile the data section (each starts at the previous end rounded up to the alignment) and end
 * inside the file, with at most the alignment padding after the last. A
 * comfy.gguf.orig_shape.<name> array (ComfyUI-GGUF) replaces the torch shape and must hold the
 * same number of elements. Errors are one line naming the file and, where there is one, the
 * key or tensor.
 *
 * As with safetensors (safetensors.h), the file is opened with sd_file_open (core/files.h) and
 * kept open; the header (metadata and tensor infos, at most SD_GGUF_MAX_HEADER bytes) is read into
 * memory and tensor data with pread when asked for, never memory-mapped: a file truncated or
 * rewritten while in use is an I/O error naming it, checked after every read, not a SIGBUS. */
#ifndef SD_ML_GGUF_H
#define SD_ML_GGUF_H

#include "core/context.h"
#include "ml/formats/safetensors.h"
#include <stdbool.h>
#include <stdint.h>

#define SD_GGUF_MAX_DIMS 4       /* ggml's GGML_MAX_DIMS */
#define SD_GGUF_MAX_SHAPE SD_ST_MAX_DIMS /* an orig_shape override may have more */
#define SD_GGUF_MAX_STRING (64u * 1024u * 1024u)
#define SD_GGUF_MAX_HEADER SD_ST_MAX_HEADER /* bytes of metadata and tensor infos */

/* ggml tensor types this reader accepts (values as in files). */
typedef enum sd_ggml_type {
    SD_GGML_F32 = 0,
    SD_GGML_F16 = 1,
    SD_GGML_Q4_0 = 2,
    SD_GGML_Q4_1 = 3,
    SD_GGML_Q5_0 = 6,
    SD_GGML_Q5_1 = 7,
    SD_GGML_Q8_0 = 8,
    SD_GGML_Q4_K = 12,
    SD_GGML_Q5_K = 13,
    SD_GGML_Q6_K = 14,
    SD_GGML_BF16 = 30
} sd_ggml_type;

/* "Q4_0", ...; "?" for a type not listed above. */
const char *sd_ggml_type_name(sd_ggml_type type);
/* Elements per block (1 for F32/F16/BF16, 32, or 256 for the K types) and bytes per block;
 * false for a type not listed above. */
bool sd_ggml_type_block(sd_ggml_type type, size_t *block_elems, size_t *block_bytes);

/* Dequantises n elements (a multiple of the block size) of type from src (n / block * bytes
 * bytes, any alignment) into dst, as ggml's reference dequantizers (and the gguf Python
 * package's) do, bit for bit. false for an unknown type or an n that is not whole blocks. */
bool sd_ggml_dequantize(sd_ggml_type type, const void *src, float *dst, size_t n);
/* Quantises n elements (whole blocks) of src into dst (n / block * bytes bytes) as ggml's reference
 * quantizers (quantize_row_*_ref) and the gguf Python package's quantize() do, bit for bit:
 * F32, F16 (round to nearest even), BF16 (ditto), Q8_0 (d = amax / 127, q = round(x / d)) and
 * Q4_0 (d = the value of largest magnitude / -8, q = min(15, trunc(x / d + 8.5)), element j in
 * the low nibble of byte j, 16 + j in the high one). false for another type or partial blocks. */
bool sd_ggml_quantize(sd_ggml_type type, const float *src, void *dst, size_t n);

/* Metadata value types (values as in files). */
typedef enum sd_gguf_vtype {
    SD_GGUF_U8 = 0, SD_GGUF_I8 = 1, SD_GGUF_U16 = 2, SD_GGUF_I16 = 3, SD_GGUF_U32 = 4, SD_GGUF_I32 = 5,
    SD_GGUF_F32 = 6, SD_GGUF_BOOL = 7, SD_GGUF_STRING = 8, SD_GGUF_ARRAY = 9, SD_GGUF_U64 = 10,
    SD_GGUF_I64 = 11, SD_GGUF_F64 = 12
} sd_gguf_vtype;

typedef struct sd_gguf_kv {
    const char *key;       /* owned by the file handle */
    sd_gguf_vtype type;
    sd_gguf_vtype elem;    /* arrays: the element type (never ARRAY) */
    uint64_t count;        /* arrays: the number of elements; 1 otherwise */
    const unsigned char *data; /* the value's bytes in the handle's copy of the header (strings: after their length) */
    size_t size;           /* their length */
} sd_gguf_kv;

typedef struct sd_gguf_tensor {
    const char *name;      /* owned by the file handle */
    sd_ggml_type type;
    int n_dims;
    int64_t ne[SD_GGUF_MAX_DIMS]; /* ggml order: ne[0] innermost */
    int ndim;                     /* torch order: the reversed ne, or comfy.gguf.orig_shape.<name> */
    int64_t shape[SD_GGUF_MAX_SHAPE];
    size_t numel;
    size_t nbytes;
    uint64_t offset;       /* in the data section */
    uint64_t file_offset;  /* in the file: the data section's start + offset; a multiple of the alignment */
} sd_gguf_tensor;

typedef struct sd_gguf sd_gguf;

/* Opens and validates path. On success *out owns the open file (close with sd_gguf_close).
 * Errors: SD_ERR_IO (cannot open or read, not a regular file, refused by the read guard of
 * core/files.h), SD_ERR_PARSE (malformed or truncated), SD_ERR_INVALID (unknown type, bad shape
 * or alignment; a file a running node did not declare), SD_ERR_LIMIT (metadata and tensor infos
 * over SD_GGUF_MAX_HEADER bytes), SD_ERR_NOMEM; *out stays NULL. */
sd_status sd_gguf_open(sd_context *ctx, const char *path, sd_gguf **out);
void sd_gguf_close(sd_gguf *g); /* NULL-safe */

const char *sd_gguf_path(const sd_gguf *g);
uint32_t sd_gguf_version(const sd_gguf *g);
size_t sd_gguf_alignment(const sd_gguf *g);

/* Metadata in file order; index < count. */
size_t sd_gguf_kv_count(const sd_gguf *g);
const sd_gguf_kv *sd_gguf_kv_at(const sd_gguf *g, size_t index);
/* The key/value called key, or NULL. */
const sd_gguf_kv *sd_gguf_find_kv(const sd_gguf *g, const char *key);
/* A scalar integer (any of the 8 integer types, or BOOL) in *out; false for another type. */
bool sd_gguf_kv_int(const sd_gguf_kv *kv, int64_t *out);
/* Element i (< count) of an integer array in *out; false for another element type. */
bool sd_gguf_kv_array_int(const sd_gguf_kv *kv, uint64_t i, int64_t *out);
/* A scalar float (F32, F64) in *out; false otherwise. */
bool sd_gguf_kv_float(const sd_gguf_kv *kv, double *out);
/* A STRING value: its bytes (not NUL-terminated) and length; NULL for another type. */
const char *sd_gguf_kv_string(const sd_gguf_kv *kv, size_t *len);
/* Element i (< count) of a string array; NULL for another element type. O(1). */
const char *sd_gguf_kv_array_string(const sd_gguf_kv *kv, uint64_t i, size_t *len);

/* Tensors in info (= data) order; index < count. */
size_t sd_gguf_count(const sd_gguf *g);
const sd_gguf_tensor *sd_gguf_at(const sd_gguf *g, size_t index);
/* The tensor called name, or NULL. */
const sd_gguf_tensor *sd_gguf_find(const sd_gguf *g, const char *name);

/* Dequantises tensor t into dst, which holds exactly t->numel elements (n must equal
 * t->numel). SD_ERR_INVALID naming the file and tensor for a wrong n; SD_ERR_IO naming the file
 * when it was truncated or changed since it was opened. */
sd_status sd_gguf_read_f32(sd_context *ctx, const sd_gguf *g, const sd_gguf_tensor *t, float *dst, size_t n);

/* The tensors of g as a safetensors handle (ml/formats/safetensors.h sd_safetensors_view), so
 * that family detection and layout inspection read GGUF files as they read safetensors: names,
 * torch shapes, file offsets, and dtype F32/F16/BF16 (readable with sd_safetensors_read_f32/_f16/
 * _f32_range) or SD_ST_GGML for block-quantised tensors (their blocks readable with
 * sd_safetensors_read_raw). The view reads through its own duplicate of g's open file, with the
 * same change detection; it may outlive g. */
sd_status sd_gguf_tensor_view(sd_context *ctx, const sd_gguf *g, sd_safetensors **out);

/* ---- Writing (ml/formats/gguf_write.c) ---- */

typedef struct sd_gguf_entry {
    const char *name;
    sd_ggml_type type;                /* one sd_ggml_quantize takes */
    int ndim;                         /* 1..SD_GGUF_MAX_DIMS */
    int64_t shape[SD_GGUF_MAX_DIMS];  /* torch order; the innermost a multiple of the type's block */
} sd_gguf_entry;

/* Writes elements [first, first + n) of entry `index` (row-major, torch order) as f32 into dst.
 * Called for each entry in order, in consecutive chunks of whole blocks. */
typedef sd_status (*sd_gguf_fill_fn)(void *user, size_t index, size_t first, size_t n, float *dst);

/* Writes a GGUF v3 file (alignment 32) holding general.architecture = arch and, when
 * file_type >= 0, general.quantization_version 2 and general.file_type file_type (llama.cpp's
 * LLAMA_FTYPE: 2 Q4_0, 7 Q8_0, as its quantizer writes them), then the entries quantised from
 * what fill gives (sd_ggml_quantize). Streams: memory is one chunk of about 4 MiB whatever the
 * tensor sizes, so a 12B model is written without holding it. Through a temporary file in the
 * same directory renamed into place: a failed write leaves no file. Errors: SD_ERR_INVALID (bad
 * entry, naming it), SD_ERR_IO naming the path, SD_ERR_NOMEM, or what fill returned. */
sd_status sd_gguf_write(sd_context *ctx, const char *path, const char *arch, int file_type,
                        const sd_gguf_entry *entries, size_t n, sd_gguf_fill_fn fill, void *user);

#endif
