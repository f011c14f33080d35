/* Image file input and output for the image nodes (see nodes/image_io.h). */
#include "nodes/image_io.h"
#include "core/checked.h"
#include "core/fileio.h"
#include "core/png.h"
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A value holding one zeroed tensor; NULL with the error set on failure. */
static sd_value *new_tensor_value(sd_context *ctx, sd_type type, const char *name, int ndim,
                                  const int64_t *shape, sd_tensor **t)
{
    sd_value *v = sd_value_new(type);
    if (!v || !(*t = sd_value_add_tensor(v, name, ndim, shape))) {
        sd_value_unref(v);
        sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for the %s", type == SD_TYPE_MASK ? "mask" : "image");
        return NULL;
    }
    return v;
}

sd_status sd_load_image(sd_context *ctx, const char *path, sd_value **image, sd_value **mask)
{
    *image = *mask = NULL;
    sd_image img;
    sd_status st = sd_png_read(ctx, path, NULL, &img);
    if (st)
        return st;
    size_t n = (size_t)img.width * img.height; /* bounded by the pixel budget */
    int c = img.channels;
    bool has_alpha = (c == 2 || c == 4) && !img.alpha_from_key;
    int64_t ishape[4] = {1, img.height, img.width, 3};
    int64_t mshape[3] = {1, has_alpha ? img.height : 64, has_alpha ? img.width : 64};
    sd_tensor *it, *mt;
    sd_value *iv = new_tensor_value(ctx, SD_TYPE_IMAGE, "image", 4, ishape, &it);
    sd_value *mv = iv ? new_tensor_value(ctx, SD_TYPE_MASK, "mask", 3, mshape, &mt) : NULL;
    if (!mv) {
        sd_value_unref(iv);
        st = SD_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const float *px = img.data + i * (size_t)c;
        float *out = it->data + i * 3;
        if (c <= 2) {
            out[0] = out[1] = out[2] = px[0];
        } else {
            out[0] = px[0];
            out[1] = px[1];
            out[2] = px[2];
        }
        if (has_alpha)
            mt->data[i] = 1.0f - px[c - 1];
    }
    *image = iv;
    *mask = mv;
done:
    sd_image_clear(&img);
    return st;
}

sd_status sd_load_image_mask(sd_context *ctx, const char *path, const char *channel, sd_value **mask)
{
    *mask = NULL;
    static const char *const names[] = {"red", "green", "blue", "alpha"};
    int which = -1;
    for (int k = 0; k < 4; k++)
        if (strcmp(channel, names[k]) == 0)
            which = k;
    if (which < 0)
        return sd_set_error(ctx, SD_ERR_INVALID, "unknown channel '%s' (alpha, red, green, blue)", channel);
    sd_image img;
    sd_status st = sd_png_read(ctx, path, NULL, &img);
    if (st)
        return st;
    int c = img.channels;
    /* Where the channel lives in a pixel; -1: the file has no alpha (opaque). */
    int src = which == 3 ? (c == 2 || c == 4 ? c - 1 : -1) : (c <= 2 ? 0 : which);
    int64_t shape[3] = {1, img.height, img.width};
    sd_tensor *t;
    sd_value *v = new_tensor_value(ctx, SD_TYPE_MASK, "mask", 3, shape, &t);
    if (!v) {
        st = SD_ERR_NOMEM;
        goto done;
    }
    size_t n = (size_t)img.width * img.height;
    for (size_t i = 0; i < n; i++) {
        float x = src < 0 ? 1.0f : img.data[i * (size_t)c + (size_t)src];
        t->data[i] = which == 3 ? 1.0f - x : x;
    }
    *mask = v;
done:
    sd_image_clear(&img);
    return st;
}

/* One more than the highest N among files named <base>_<N>_... in dir (1 when none). */
static sd_status next_counter(sd_context *ctx, const char *dir, const char *base, unsigned *counter)
{
    DIR *d = opendir(dir);
    if (!d)
        return sd_set_error(ctx, SD_ERR_IO, "cannot list %s: %s", dir, strerror(errno));
    size_t blen = strlen(base);
    unsigned max = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) != 0 || name[blen] != '_')
            continue;
        const char *q = name + blen + 1;
        unsigned n = 0;
        int digits = 0;
        for (; *q >= '0' && *q <= '9' && digits < 9; q++, digits++)
            n = n * 10 + (unsigned)(*q - '0');
        if (digits > 0 && *q == '_' && n > max)
            max = n;
    }
    closedir(d);
    *counter = max + 1;
    return SD_OK;
}

/* Splits the prefix into its subfolder (may be "") and base name, refusing escapes. */
static sd_status split_prefix(sd_context *ctx, const char *prefix, char **sub, char **base)
{
    *sub = *base = NULL;
    const char *slash = strrchr(prefix, '/');
    const char *b = slash ? slash + 1 : prefix;
    bool bad = prefix[0] == '/' || *b == '\0' || strcmp(b, ".") == 0;
    for (const char *s = prefix; !bad;) {
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        bad = n == 2 && s[0] == '.' && s[1] == '.';
        if (!e)
            break;
        s = e + 1;
    }
    if (bad)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "filename_prefix '%s' must be a relative name without '..' components", prefix);
    *sub = slash ? strndup(prefix, (size_t)(slash - prefix)) : sd_strdup("");
    *base = sd_strdup(b);
    if (!*sub || !*base) {
        free(*sub);
        free(*base);
        *sub = *base = NULL;
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    return SD_OK;
}

/* Encodes image b of t with its provenance texts. */
static sd_status encode_one(sd_context *ctx, const sd_save_request *req, const sd_tensor *t, int64_t b,
                            unsigned char **png, size_t *len)
{
    size_t per_image = (size_t)t->shape[1] * (size_t)t->shape[2] * (size_t)t->shape[3];
    sd_image img = {.width = (uint32_t)t->shape[2], .height = (uint32_t)t->shape[1],
                    .channels = (int)t->shape[3], .bit_depth = 8, .data = t->data + (size_t)b * per_image};
    char engine[64], batch[32];
    snprintf(engine, sizeof engine, "sdflow %s", sd_version());
    snprintf(batch, sizeof batch, "%" PRId64, b);
    sd_png_text texts[5];
    size_t n = 0;
    if (req->workflow_xml)
        texts[n++] = (sd_png_text){SD_PNG_KEY_WORKFLOW, req->workflow_xml};
    texts[n++] = (sd_png_text){SD_PNG_KEY_ENGINE, engine};
    if (req->provenance_json)
        texts[n++] = (sd_png_text){SD_PNG_KEY_PROVENANCE, req->provenance_json};
    if (req->node_id)
        texts[n++] = (sd_png_text){SD_PNG_KEY_NODE, req->node_id};
    texts[n++] = (sd_png_text){SD_PNG_KEY_BATCH, batch};
    return sd_png_encode(ctx, &img, texts, n, req->compression, png, len);
}

sd_status sd_save_images(sd_context *ctx, const sd_save_request *req, const sd_value *images,
                         sd_saved_fn saved, void *user)
{
    const sd_tensor *t = sd_value_tensor(images, "image");
    if (!t || t->ndim != 4 || (t->shape[3] != 3 && t->shape[3] != 4) || t->shape[0] < 1 ||
        t->shape[1] < 1 || t->shape[1] > SD_PNG_MAX_SIDE || t->shape[2] < 1 || t->shape[2] > SD_PNG_MAX_SIDE)
        return sd_set_error(ctx, SD_ERR_INVALID,
                            "IMAGE must be [batch, height, width, 3 or 4] with sides of 1 to %u pixels",
                            SD_PNG_MAX_SIDE);
    char *sub = NULL, *base = NULL, *dir = NULL, *path = NULL;
    unsigned char *png = NULL;
    size_t len = 0;
    sd_status st = split_prefix(ctx, req->prefix, &sub, &base);
    if (st)
        return st;
    dir = *sub ? sd_strfmt("%s/%s", req->dir, sub) : sd_strdup(req->dir);
    if (!dir) {
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    unsigned counter = 1;
    if ((st = sd_make_dirs(ctx, dir)) || (st = next_counter(ctx, dir, base, &counter)))
        goto done;
    for (int64_t b = 0; b < t->shape[0]; b++) {
        free(png);
        png = NULL;
        if ((st = encode_one(ctx, req, t, b, &png, &len)))
            goto done;
        /* Another writer may take a name between the scan and the write: skip to the next. */
        bool existed = true;
        for (int tries = 0; existed && tries < 1000; tries++, counter++) {
            free(path);
            if (!(path = sd_strfmt("%s/%s_%05u_.png", dir, base, counter))) {
                st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
                goto done;
            }
            st = sd_file_write_atomic(ctx, path, png, len, true, &existed);
            if (st && !existed)
                goto done;
        }
        if (st)
            goto done;
        if (saved && (st = saved(user, path)))
            goto done;
    }
done:
    free(png);
    free(path);
    free(dir);
    free(sub);
    free(base);
    return st;
}
