/* A restricted unpickler for torch checkpoints (.ckpt, .pt, .pth, .bin written by torch.save):
 * the zip format (ARCHIVE/data.pkl with the tensors' storages in ARCHIVE/data/KEY, stored
 * uncompressed by torch.save, or deflated by a re-packing zip tool) and the legacy format of torch before 1.6 (pickles, then the storages' bytes).
 *
 * Nothing in the file is ever executed: the pickle is read by a small interpreter of pickle's
 * opcodes (protocols 0 to 5) that builds plain values, and the only globals it accepts are
 * those state dicts need (collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
 * _rebuild_parameter, the torch.*Storage types, numpy scalars and dtypes, _codecs.encode,
 * builtins.set/frozenset/slice, and pytorch_lightning's ModelCheckpoint callback state as an
 * opaque object). Any other global is refused with "forbidden global MODULE.NAME". Sizes,
 * nesting, memo and stack are bounded; errors are one line naming the file. */
#ifndef SD_ML_PICKLE_H
#define SD_ML_PICKLE_H

#include "core/context.h"
#include "ml/formats/safetensors.h"

#define SD_PICKLE_MAX_DEPTH 256     /* nested containers */
#define SD_PICKLE_MAX_TENSORS 100000
#define SD_PICKLE_MAX_BYTES (64 << 20) /* a pickle, a zip's central directory */

/* A tensor found in the pickle: its dotted key path in nested dicts ("model.x.weight"),
 * dtype, shape, the storage it views (key), the element offset into it and its strides (in
 * elements, not negative; strided when they are not those of a contiguous layout). */
typedef struct sd_pickle_tensor {
    char *name;
    sd_st_dtype dtype;
    int ndim;
    int64_t shape[SD_ST_MAX_DIMS];
    int64_t stride[SD_ST_MAX_DIMS];
    bool strided;
    char *storage;     /* the storage's key ("0", "1", ...) */
    int64_t offset;    /* in elements */
    int64_t storage_numel;
} sd_pickle_tensor;

typedef struct sd_pickle_tensors {
    sd_pickle_tensor *items;
    size_t n;
} sd_pickle_tensors;

/* Interprets a pickle (data, len) under the allowlist and lists the tensors reachable through
 * dicts from its root. source names the file in messages. SD_ERR_PARSE (malformed, truncated),
 * SD_ERR_INVALID ("forbidden global MODULE.NAME"), SD_ERR_LIMIT,
 * SD_ERR_NOMEM. */
sd_status sd_pickle_read(sd_context *ctx, const char *source, const unsigned char *data, size_t len,
                         sd_pickle_tensors *out);
void sd_pickle_tensors_free(sd_pickle_tensors *t);

/* How sd_torch_parse reads the file: n bytes at file offset at into dst (an error set on the
 * context when it fails or the file changed); size is the file's size. */
typedef struct sd_torch_reader {
    sd_status (*read)(void *user, uint64_t at, void *dst, size_t n);
    void *user;
    uint64_t size;
} sd_torch_reader;

/* Reads a torch checkpoint through r: the zip format, whose entries are stored (as torch.save
 * writes them) or deflated (checked against their size and CRC-32; other methods are refused
 * naming the method), or the legacy format (every storage must be viewed by a tensor of the
 * state dict, which gives its element size). Only the pickles and the zip's directory are read
 * here (each at most SD_PICKLE_MAX_BYTES); the data of a contiguous tensor in a stored entry is
 * not. *tensors (malloc'd, *n of them, names malloc'd) view the state dict (the root's
 * "state_dict", "params_ema" or "params" when it has one, else the root), each with the file
 * offset of its data, checked (with its strides) to lie inside its storage. A tensor in a
 * deflated entry, or a strided view, is materialised here into a contiguous buffer (its mem,
 * malloc'd, owned by the caller). sd_safetensors_open calls this for files that start like a
 * zip or a pickle. */
sd_status sd_torch_parse(sd_context *ctx, const char *path, const sd_torch_reader *r, sd_st_tensor **tensors,
                         size_t *n);

#endif
