/* Streaming GGUF writer (see gguf.h). */
#include "core/checked.h"
#include "ml/formats/gguf.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALIGN 32
#define CHUNK_ELEMS ((size_t)1 << 20) /* a multiple of every block size */

typedef struct out {
    sd_context *ctx;
    const char *path;
    FILE *f;
    uint64_t pos;
    sd_status st;
} out;

static void put(out *o, const void *p, size_t n)
{
    if (o->st || n == 0)
        return;
    if (fwrite(p, 1, n, o->f) != n)
        o->st = sd_set_error(o->ctx, SD_ERR_IO, "%s: write failed: %s", o->path, strerror(errno));
    o->pos += n;
}

static void put_u32(out *o, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put(o, b, 4);
}

static void put_u64(out *o, uint64_t v)
{
    put_u32(o, (uint32_t)v);
    put_u32(o, (uint32_t)(v >> 32));
}

static void put_str(out *o, const char *s)
{
    put_u64(o, strlen(s));
    put(o, s, strlen(s));
}

static void pad(out *o)
{
    static const unsigned char zero[ALIGN] = {0};
    put(o, zero, (size_t)((ALIGN - o->pos % ALIGN) % ALIGN));
}

/* Bytes of entry e in the file; false (message on ctx) for an entry the writer cannot store. */
static bool entry_bytes(sd_context *ctx, const char *path, const sd_gguf_entry *e, size_t *nbytes)
{
    size_t be, bb, numel = 1;
    bool ok = e->name && *e->name && e->ndim >= 1 && e->ndim <= SD_GGUF_MAX_DIMS &&
              sd_ggml_type_block(e->type, &be, &bb) && sd_ggml_quantize(e->type, NULL, NULL, 0);
    for (int d = 0; ok && d < e->ndim; d++)
        ok = e->shape[d] >= 1 && sd_mul_size(numel, (size_t)e->shape[d], &numel);
    ok = ok && e->shape[e->ndim - 1] % (int64_t)be == 0 && sd_mul_size(numel / be, bb, nbytes);
    if (!ok)
        sd_set_error(ctx, SD_ERR_INVALID, "%s: tensor '%s': shape or type the GGUF writer cannot store", path,
                     e->name ? e->name : "");
    return ok;
}

static void write_header(out *o, const char *arch, int file_type, const sd_gguf_entry *entries, size_t n,
                         const size_t *nbytes)
{
    put(o, "GGUF", 4);
    put_u32(o, 3);
    put_u64(o, n);
    put_u64(o, file_type >= 0 ? 3 : 1);
    put_str(o, "general.architecture");
    put_u32(o, SD_GGUF_STRING);
    put_str(o, arch);
    if (file_type >= 0) {
        put_str(o, "general.quantization_version");
        put_u32(o, SD_GGUF_U32);
        put_u32(o, 2);
        put_str(o, "general.file_type");
        put_u32(o, SD_GGUF_U32);
        put_u32(o, (uint32_t)file_type);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const sd_gguf_entry *e = &entries[i];
        put_str(o, e->name);
        put_u32(o, (uint32_t)e->ndim);
        for (int d = e->ndim - 1; d >= 0; d--)
            put_u64(o, (uint64_t)e->shape[d]);
        put_u32(o, (uint32_t)e->type);
        put_u64(o, offset);
        offset += (nbytes[i] + ALIGN - 1) / ALIGN * ALIGN;
    }
    pad(o);
}

static sd_status write_data(out *o, const sd_gguf_entry *e, size_t index, size_t nbytes, float *x, unsigned char *q,
                            sd_gguf_fill_fn fill, void *user)
{
    size_t be, bb;
    sd_ggml_type_block(e->type, &be, &bb);
    size_t numel = nbytes / bb * be;
    for (size_t first = 0; !o->st && first < numel; first += CHUNK_ELEMS) {
        size_t k = numel - first < CHUNK_ELEMS ? numel - first : CHUNK_ELEMS;
        if ((o->st = fill(user, index, first, k, x)))
            break;
        sd_ggml_quantize(e->type, x, q, k);
        put(o, q, k / be * bb);
    }
    pad(o);
    return o->st;
}

sd_status sd_gguf_write(sd_context *ctx, const char *path, const char *arch, int file_type,
                        const sd_gguf_entry *entries, size_t n, sd_gguf_fill_fn fill, void *user)
{
    out o = {ctx, path, NULL, 0, SD_OK};
    size_t *nbytes = calloc(n ? n : 1, sizeof *nbytes);
    float *x = malloc(CHUNK_ELEMS * sizeof *x);
    unsigned char *q = malloc(CHUNK_ELEMS * sizeof(float));
    char *tmp = NULL;
    if (!nbytes || !x || !q) {
        o.st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if (!entry_bytes(ctx, path, &entries[i], &nbytes[i])) {
            o.st = SD_ERR_INVALID;
            goto done;
        }
    if (!(tmp = sd_strfmt("%s.tmpXXXXXX", path))) {
        o.st = sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int fd = mkstemp(tmp);
    if (fd < 0 || fchmod(fd, 0644) != 0 || !(o.f = fdopen(fd, "wb"))) {
        o.st = sd_set_error(ctx, SD_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        if (fd < 0) {
            free(tmp);
            tmp = NULL;
        }
        goto done;
    }
    write_header(&o, arch, file_type, entries, n, nbytes);
    for (size_t i = 0; !o.st && i < n; i++)
        write_data(&o, &entries[i], i, nbytes[i], x, q, fill, user);
    int rc = fclose(o.f);
    o.f = NULL;
    if (!o.st && (rc != 0 || rename(tmp, path) != 0))
        o.st = sd_set_error(ctx, SD_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (!o.st) {
        free(tmp);
        tmp = NULL;
    }
done:
    if (o.f)
        fclose(o.f);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(nbytes);
    free(x);
    free(q);
    return o.st;
}
