/* safetensors files: strict reading and atomic writing.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section.
 * The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
 * relative to the data section), plus an optional "__metadata__" object of strings.
 *
 * Validation on open (docs/design.md §9): N ≤ SD_ST_MAX_HEADER and inside the file; strict JSON
 * (jansson, duplicate keys rejected); every tensor's dtype known, shape non-negative with at
 * most SD_ST_MAX_DIMS dimensions, dtype size × shape == end - begin (checked arithmetic); the
 * tensors, sorted by offset, cover the data section exactly: no overlap, no gap, nothing past
 * the end and nothing after the last tensor. Tensor names are only ever compared, never used
 * as paths. Errors are one line naming the file and, where there is one, the tensor.
 *
 * The file is opened with sd_file_open (core/files.h: inside a node, only a file in its cache
 * key) and kept open; tensor data is read with pread when asked for, never memory-mapped, so a
 * file truncated or rewritten while in use is an I/O error naming it ("PATH: changed since it
 * was opened (now N bytes, was M)"), checked after every read, instead of a SIGBUS. */
#ifndef SD_ML_SAFETENSORS_H
#define SD_ML_SAFETENSORS_H

#include "core/context.h"
#include "core/half.h"
#include <stdint.h>

#define SD_ST_MAX_HEADER (100u * 1024u * 1024u)
#define SD_ST_MAX_DIMS 8

typedef enum sd_st_dtype {
    SD_ST_BOOL,
    SD_ST_U8,
    SD_ST_I8,
    SD_ST_I16,
    SD_ST_U16,
    SD_ST_I32,
    SD_ST_U32,
    SD_ST_I64,
    SD_ST_U64,
    SD_ST_F8_E4M3,
    SD_ST_F8_E5M2,
    SD_ST_F16,
    SD_ST_BF16,
    SD_ST_F32,
    SD_ST_F64,
    SD_ST_GGML /* a ggml block type, only in sd_safetensors_view handles of GGUF files (never parsed) */
} sd_st_dtype;

/* The dtype's name as written in files ("F32", "BF16", ...). */
const char *sd_st_dtype_name(sd_st_dtype dtype);
/* Bytes per element. */
size_t sd_st_dtype_size(sd_st_dtype dtype);
/* True for F16, BF16, F32, F8_E4M3 and F8_E5M2: the dtypes that weights may be stored in. */
bool sd_st_dtype_is_weight(sd_st_dtype dtype);

typedef struct sd_st_tensor {
    const char *name;     /* owned by the file handle */
    sd_st_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    uint64_t offset;      /* of its data in the file */
    int ggml_type;        /* SD_ST_GGML only: the ggml block type (ml/formats/gguf.h sd_ggml_type) */
    const unsigned char *mem; /* torch checkpoints: the data held in memory (a deflated entry, a
                                 strided view; ml/formats/pickle.h), owned by the handle; else NULL */
} sd_st_tensor;

typedef struct sd_safetensors sd_safetensors;

/* Opens and validates path. A file that starts like a PyTorch checkpoint (a zip archive or a
 * raw pickle: .ckpt, .pt, .pth, .bin) is read through the restricted unpickler
 * (ml/formats/pickle.h) instead; its tensors are read like a safetensors file's, with pread and
 * the same change checks. On success *out owns the open file (close with
 * sd_safetensors_close). Errors: SD_ERR_IO (cannot open or read, not a regular file, refused by
 * the read guard of core/files.h), SD_ERR_PARSE (malformed header or layout, a malformed
 * pickle), SD_ERR_INVALID (unknown dtype, size mismatch; a file a running node did not declare;
 * a pickle's forbidden global), SD_ERR_LIMIT (header over 100 MB), SD_ERR_NOMEM. The message is set on
 * ctx; *out stays NULL. */
sd_status sd_safetensors_open(sd_context *ctx, const char *path, sd_safetensors **out);
void sd_safetensors_close(sd_safetensors *st); /* NULL-safe */

const char *sd_safetensors_path(const sd_safetensors *st);
/* The identity the file had when opened (core/files.h). */
const struct sd_file_id *sd_safetensors_file_id(const sd_safetensors *st);
/* Tensors in data-offset order; index < count. */
size_t sd_safetensors_count(const sd_safetensors *st);
const sd_st_tensor *sd_safetensors_at(const sd_safetensors *st, size_t index);
/* The tensor called name, or NULL. */
const sd_st_tensor *sd_safetensors_find(const sd_safetensors *st, const char *name);
/* The same with a printf-style name (up to 255 bytes). */
const sd_st_tensor *sd_safetensors_findf(const sd_safetensors *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* True when some tensor name starts with prefix. */
bool sd_safetensors_has_prefix(const sd_safetensors *st, const char *prefix);
/* A "__metadata__" value, or NULL. */
const char *sd_safetensors_metadata(const sd_safetensors *st, const char *key);

/* A handle on st's tensors under other names (a key-layout conversion without copying data):
 * names[i] (copied) is the new name of the tensor from[i] (a tensor of st). The alias reads
 * through st's open file and shares its metadata; st must stay open while the alias is used;
 * closing the alias leaves st alone. SD_ERR_INVALID (naming st's file) for a duplicate new name, SD_ERR_NOMEM. */
sd_status sd_safetensors_alias(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *const *from,
                               const char *const *names, size_t n, sd_safetensors **out);

/* The same through a renaming function: map(user, name, out, size) writes the new name of each
 * tensor of st and returns true, or returns false to leave the tensor out (names up to 159
 * bytes). Errors as sd_safetensors_alias. */
sd_status sd_safetensors_alias_map(sd_context *ctx, const sd_safetensors *st,
                                   bool (*map)(void *user, const char *name, char *out, size_t size), void *user,
                                   sd_safetensors **out);

/* A handle named path on n tensors of another format's file, already open as fd with identity
 * id (sd_file_open; the handle reads through its own dup of fd, with the same change detection,
 * so the caller may close its handle first): the tensors are copied (names duplicated, offsets
 * into that file), for code that reads tensors by name and shape: family detection, layout
 * inspection, F32/F16/BF16 and raw reads. No metadata. SD_ERR_INVALID (naming path) for a
 * duplicate name, SD_ERR_IO when fd cannot be duplicated, SD_ERR_NOMEM. */
sd_status sd_safetensors_view(sd_context *ctx, const char *path, int fd, const struct sd_file_id *id,
                              const sd_st_tensor *tensors, size_t n, sd_safetensors **out);

/* Converts tensor t (F32, F16, BF16, or fp8 E4M3FN / E5M2, exactly) to f32 / IEEE f16 (round to
 * nearest even) into dst,
 * which holds exactly t->numel elements (n must equal t->numel). SD_ERR_INVALID naming the
 * file and tensor for another dtype or a wrong n. */
sd_status sd_safetensors_read_f32(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t,
                                  float *dst, size_t n);
sd_status sd_safetensors_read_f16(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t,
                                  uint16_t *dst, size_t n);
/* Elements [first, first + n) of a float tensor (any shape, row-major) as f32: a row of a
 * table without reading the rest. SD_ERR_INVALID past the tensor's end or for another dtype. */
sd_status sd_safetensors_read_f32_range(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t,
                                        size_t first, size_t n, float *dst);
/* The tensor's bytes as stored in the file (t->nbytes into dst), any dtype. */
sd_status sd_safetensors_read_raw(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, void *dst);
/* Bytes [first, first + nbytes) of the tensor as stored (a row of ggml blocks), any dtype.
 * SD_ERR_INVALID past the tensor's end. */
sd_status sd_safetensors_read_raw_range(sd_context *ctx, const sd_safetensors *st, const sd_st_tensor *t, size_t first,
                                        size_t nbytes, void *dst);
/* Every read fails with SD_ERR_IO naming the file when it was truncated or changed since it was
 * opened (size, mtime, ctime, inode or device differ). */


/* ---- Writing ---- */

typedef struct sd_st_entry {
    const char *name;
    sd_st_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
} sd_st_entry;

/* Fills dst (nbytes, the whole tensor, little-endian) with entry `index`'s data. */
typedef sd_status (*sd_st_fill_fn)(void *user, size_t index, void *dst, size_t nbytes);

/* Writes entries (in the given order, contiguous) to path through a temporary file in the same
 * directory renamed into place (mode 0644), so a failed write leaves no file. metadata: NULL or
 * {key, value, key, value, ..., NULL}. The header is padded with spaces to a multiple of 8.
 * Errors: SD_ERR_INVALID (duplicate or empty name, bad shape), SD_ERR_IO, SD_ERR_NOMEM, or
 * what fill returned. */
sd_status sd_safetensors_write(sd_context *ctx, const char *path, const sd_st_entry *entries, size_t n,
                               const char *const *metadata, sd_st_fill_fn fill, void *user);

/* The same file built in memory: *out (malloc'd, *out_len bytes) for a caller that writes it
 * itself (SaveLatent writes it without replacing a file). name stands for the file in errors.
 * Errors as sd_safetensors_write's, without SD_ERR_IO; *out stays NULL. */
sd_status sd_safetensors_encode(sd_context *ctx, const char *name, const sd_st_entry *entries, size_t n,
                                const char *const *metadata, sd_st_fill_fn fill, void *user, unsigned char **out,
                                size_t *out_len);

#endif
