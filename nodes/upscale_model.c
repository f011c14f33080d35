/* UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's nodes of the same names, from
 * comfy_extras/nodes_upscale_model.py) for ESRGAN / Real-ESRGAN RRDBNet files (ml/upscale/esrgan.h).
 * The loader opens and checks the file; the network and its weights come to the device when an
 * image is first upscaled. Upscaling is tiled as ComfyUI's: 512-pixel tiles overlapping by 32
 * with feathered blending, the tile halved (down to 128) when the device runs out of memory, the
 * result clamped to [0, 1]. */
#include "ml/upscale/esrgan.h"
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <stdlib.h>

#define TILE 512
#define TILE_MIN 128
#define OVERLAP 32

/* The UPSCALE_MODEL handle: the open file, its architecture, and the network once created. */
typedef struct upscale_model {
    sd_safetensors *st;
    sd_esrgan_config cfg;
    sd_esrgan *net; /* NULL until first use */
} upscale_model;

static void model_free(void *p)
{
    upscale_model *m = p;
    if (!m)
        return;
    sd_esrgan_free(m->net);
    sd_safetensors_close(m->st);
    free(m);
}

static sd_status run_loader(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    upscale_model *m = calloc(1, sizeof *m);
    if (!m)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "model_name"), &m->st);
    if (!st)
        st = sd_esrgan_inspect(ctx, m->st, &m->cfg);
    if (st) {
        model_free(m);
        return sd_node_op_fail(r, st);
    }
    sd_value *v = sd_value_handle(SD_TYPE_UPSCALE_MODEL, m, model_free); /* frees m on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc loader_in[] = {
    SD_IN_FILE_NAME("model_name", "upscale_models",
                    "ESRGAN / Real-ESRGAN RRDBNet .safetensors in models/upscale_models"
                    " (an absolute path needs --allow-absolute-paths)"),
};
static const sd_output_desc loader_out[] = {
    SD_OUT("UPSCALE_MODEL", SD_TYPE_UPSCALE_MODEL, "the upscale network (weights upload on first use)"),
};
const sd_node_desc sd_node_UpscaleModelLoader = {
    .name = "UpscaleModelLoader", .version = 1, .category = "loaders",
    .doc = "Opens an ESRGAN/Real-ESRGAN upscale model (new, old or BSRGAN key layout; x1, x2, x4, x8).",
    .inputs = loader_in, .n_inputs = SD_COUNT(loader_in),
    .outputs = loader_out, .n_outputs = SD_COUNT(loader_out), .run = run_loader,
};

typedef struct progress_state {
    sd_node_run *r;
    int64_t image, images;
} progress_state;

static sd_status on_tile(void *user, int done, int total)
{
    const progress_state *p = user;
    return sd_run_progress(p->r, (int)(p->image * total + done), (int)(p->images * total));
}

static sd_status run_upscale(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    const sd_value *mv = sd_run_value(r, "upscale_model");
    upscale_model *m = mv ? mv->handle : NULL;
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    if (!m || !img)
        return m ? SD_ERR_INVALID : sd_run_error(r, SD_ERR_INVALID, "input 'upscale_model' carries no model");
    int64_t b = img->shape[0], h = img->shape[1], w = img->shape[2], c = img->shape[3], s = m->cfg.scale;
    if (c != m->cfg.image_channels || m->cfg.out_nc != 3)
        return sd_run_error(r, SD_ERR_INVALID, "the upscale model maps %d to %d channels; the image has %lld",
                            m->cfg.image_channels, m->cfg.out_nc, (long long)c);
    sd_cl *cl;
    sd_status st = sd_cl_get(ctx, &cl);
    if (!st && !m->net)
        st = sd_esrgan_new(cl, m->st, SD_DTYPE_F32, &m->net);
    if (st)
        return sd_node_op_fail(r, st);
    int64_t shape[4] = {b, h * s, w * s, 3};
    sd_value *v = sd_value_new(SD_TYPE_IMAGE);
    sd_tensor *out = v ? sd_value_add_tensor(v, "image", 4, shape) : NULL;
    if (!out) {
        sd_value_unref(v);
        return sd_run_error(r, SD_ERR_LIMIT, "no memory for a %lldx%lld image", (long long)(w * s), (long long)(h * s));
    }
    int64_t tile = TILE;
    for (int64_t i = 0; !st && i < b; i++) {
        progress_state p = {r, i, b};
        int64_t before = tile;
        st = sd_esrgan_upscale_fit(m->net, img->data + (size_t)(i * h * w * c), h, w, &tile, TILE_MIN, OVERLAP, on_tile,
                                   &p, out->data + (size_t)(i * h * s * w * s * 3));
        if (!st && tile != before)
            sd_run_warn(r, "out of device memory with %lld-pixel tiles; used %lld-pixel tiles", (long long)before,
                        (long long)tile);
    }
    if (st) {
        sd_value_unref(v);
        return st == SD_ERR_INTERRUPTED ? st : sd_node_op_fail(r, st);
    }
    size_t n = (size_t)(b * h * s * w * s * 3);
    for (size_t i = 0; i < n; i++)
        out->data[i] = out->data[i] < 0.0f ? 0.0f : out->data[i] > 1.0f ? 1.0f : out->data[i];
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static const sd_input_desc upscale_in[] = {
    SD_IN_LINK("upscale_model", SD_TYPE_UPSCALE_MODEL, "from UpscaleModelLoader"),
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to upscale"),
};
static const sd_output_desc upscale_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the images at the model's scale, clamped to [0, 1]"),
};
const sd_node_desc sd_node_ImageUpscaleWithModel = {
    .name = "ImageUpscaleWithModel", .version = 1, .category = "image/upscaling",
    .doc = "Upscales images with an upscale model, in 512-pixel tiles overlapping by 32 (feathered seams).",
    .inputs = upscale_in, .n_inputs = SD_COUNT(upscale_in),
    .outputs = upscale_out, .n_outputs = SD_COUNT(upscale_out), .run = run_upscale,
};
