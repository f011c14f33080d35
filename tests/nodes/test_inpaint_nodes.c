/* Inpainting nodes through the scheduler on tiny random models:
 * - VAEEncodeForInpaint against tests/reference/make_inpaint_goldens.py (a torch transcription of
 *   ComfyUI's definition with diffusers' AutoencoderKL), with a 20x24 mask on a 44x52 image
 *   (resized bilinearly and centre-cropped as ComfyUI); noise mask exact, latent within 1e-4 (fp32 weights)
 *   (sdflow's VAE encode of this 40x48 image is 7e-4 from torch's; see test_vae_tiled.c);
 * - InpaintModelConditioning's concat_latent_image / concat_mask / noise mask, and that they reach
 *   a 9-channel UNet through the KSampler (and change nothing for a 4-channel one), and keep a
 *   ControlNet applied before;
 * - SetLatentNoiseMask: after a KSampler the latent is bit-identical where the mask is 0;
 * - ImageCompositeMasked through SaveImage's 8-bit PNG: bit-identical where the mask is 0;
 *   LatentCompositeMasked placement; bad inputs with exact messages;
 * - graphs/inpaint.xml, inpaint-model.xml and outpaint.xml end to end. */
#include "test.h"
#include "support/golden.h"
#include "support/png_fixture.h"
#include "core/png.h"
#include "core/run.h"
#include "ml/adapters/control_eval.h"
#include "ml/adapters/controlnet.h"
#include "ml/families/sd1_layout.h"
#include "nodes/bilinear.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static sd_context *ctx;
static char *vae_path, *ckpt_path, *ckpt9_path, *img_path, *mask_path, *out_dir;
static unsigned char *img_u8;

#define IW 52
#define IH 44
#define MW 24
#define MH 20

/* An RGB PNG in the scratch dir from w*h*3 bytes (or w*h grey bytes repeated when grey). */
static char *write_rgb(const char *name, const unsigned char *px, uint32_t w, uint32_t h, bool grey)
{
    unsigned char *rgb = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        rgb[i] = grey ? px[i / 3] : px[i];
    fixture fx = {.w = w, .h = h, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = rgb};
    char *path = write_fixture(name, &fx);
    free(rgb);
    return path;
}

static bool setup(void)
{
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_allow_absolute_paths(ctx, true); /* test files are named by absolute path */
    sd_context_set_cache_path(ctx, NULL);
    out_dir = test_path(test_scratch_dir(), "out");
    CHECK_EQ_INT(sd_context_set_dir(ctx, SD_DIR_OUTPUT, out_dir), SD_OK);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_unet = cfg.has_clip = false;
    cfg.vae_prefix = "";
    vae_path = test_path(test_scratch_dir(), "vae.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, vae_path, &cfg, SD_ST_F32, 5), SD_OK);
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    ckpt_path = test_path(test_scratch_dir(), "tiny.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, ckpt_path, &cfg, SD_ST_F32, 1), SD_OK);
    cfg.unet.in_channels = 9;
    ckpt9_path = test_path(test_scratch_dir(), "tiny-inpainting.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, ckpt9_path, &cfg, SD_ST_F32, 2), SD_OK);
    img_u8 = test_read_golden("inpaint_image.u8", IW * IH * 3);
    unsigned char *mask = test_read_golden("inpaint_mask.u8", MW * MH);
    if (!img_u8 || !mask)
        return false;
    img_path = write_rgb("inpaint.png", img_u8, IW, IH, false);
    mask_path = write_rgb("mask.png", mask, MW, MH, true);
    free(mask);
    return true;
}

static void add(sd_graph *g, const char *type, const char *id)
{
    CHECK_EQ_INT(sd_graph_add_node(g, type, id, NULL), SD_OK);
}
static void set(sd_graph *g, const char *id, const char *input, const char *text)
{
    CHECK_EQ_INT(sd_graph_set_input(g, id, input, text), SD_OK);
}
static void link(sd_graph *g, const char *from, const char *output, const char *to, const char *input)
{
    CHECK_EQ_INT(sd_graph_connect(g, from, output, to, input), SD_OK);
}

/* VAELoader "vae", LoadImage "img" and LoadImageMask "mask" (the 20x24 mask, red channel). */
static sd_graph *base_graph(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    add(g, "VAELoader", "vae");
    set(g, "vae", "vae_name", vae_path);
    set(g, "vae", "weight_dtype", "fp32"); /* golden comparisons: fp16 storage alone is ~7e-4 */
    add(g, "LoadImage", "img");
    set(g, "img", "image", img_path);
    add(g, "LoadImageMask", "mask");
    set(g, "mask", "image", mask_path);
    set(g, "mask", "channel", "red");
    return g;
}

static sd_result *run(sd_graph *g, const char **outs, size_t n, sd_status want)
{
    sd_run_options opt = {.outputs = outs, .n_outputs = n, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    CHECK_MSG(st == want, "run: status %d, want %d: %s", st, want, sd_context_errmsg(ctx));
    return res;
}

static const sd_tensor *tensor(const sd_result *res, const char *id, const char *output, const char *name)
{
    const sd_value *v = res ? sd_result_value(res, id, output) : NULL;
    const sd_tensor *t = v ? sd_value_tensor(v, name) : NULL;
    CHECK_MSG(t != NULL, "%s.%s has no tensor '%s'", id, output, name);
    return t;
}

static bool shape_is(const sd_tensor *t, int nd, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t want[4] = {a, b, c, d};
    if (!t || t->ndim != nd)
        return false;
    for (int i = 0; i < nd; i++)
        if (t->shape[i] != want[i])
            return false;
    return true;
}

static void test_encode_for_inpaint_golden(void)
{
    sd_graph *g = base_graph();
    add(g, "VAEEncodeForInpaint", "enc");
    link(g, "img", "IMAGE", "enc", "pixels");
    link(g, "vae", "VAE", "enc", "vae");
    link(g, "mask", "MASK", "enc", "mask");
    add(g, "VAEEncodeForInpaint", "enc0");
    link(g, "img", "IMAGE", "enc0", "pixels");
    link(g, "vae", "VAE", "enc0", "vae");
    link(g, "mask", "MASK", "enc0", "mask");
    set(g, "enc0", "grow_mask_by", "0");
    const char *outs[] = {"enc", "enc0"};
    sd_result *res = run(g, outs, 2, SD_OK);
    const sd_tensor *lat = tensor(res, "enc", "LATENT", "samples"), *nm = tensor(res, "enc", "LATENT", "noise_mask");
    const sd_tensor *nm0 = tensor(res, "enc0", "LATENT", "noise_mask");
    float *want_lat = test_read_golden("inpaint_latent.f32", 4 * 5 * 6 * 4);
    float *want_nm = test_read_golden("inpaint_noise_mask.f32", 40 * 48 * 4);
    float *resized = test_read_golden("inpaint_mask_resized.f32", 40 * 48 * 4);
    CHECK(shape_is(lat, 4, 1, 4, 5, 6) && shape_is(nm, 4, 1, 1, 40, 48) && shape_is(nm0, 4, 1, 1, 40, 48));
    if (shape_is(lat, 4, 1, 4, 5, 6) && want_lat) {
        double d = test_max_abs_diff(lat->data, want_lat, 4 * 5 * 6);
        printf("  VAEEncodeForInpaint latent: max abs diff %.3g vs torch/diffusers\n", d);
        CHECK_MSG(d <= 1e-4, "latent differs by %g", d);
    }
    if (shape_is(nm, 4, 1, 1, 40, 48) && want_nm && shape_is(nm0, 4, 1, 1, 40, 48) && resized) {
        int ones = 0, grown = 0;
        for (int i = 0; i < 40 * 48; i++) {
            CHECK_MSG(nm->data[i] == want_nm[i], "noise mask %d: %g, want %g", i, nm->data[i], want_nm[i]);
            CHECK_MSG(nm0->data[i] == rintf(resized[i]), "grow 0: %d: %g", i, nm0->data[i]);
            ones += nm0->data[i] == 1.0f;
            grown += nm->data[i] == 1.0f;
        }
        CHECK_MSG(ones > 50 && grown > ones, "mask: %d pixels, grown %d", ones, grown);
    }
    free(want_lat);
    free(want_nm);
    free(resized);
    sd_result_free(res);
    sd_graph_free(g);
}

/* CheckpointLoaderSimple "ckpt" (path) with CLIPTextEncode "pos" and "neg". */
static void add_checkpoint(sd_graph *g, const char *path)
{
    add(g, "CheckpointLoaderSimple", "ckpt");
    set(g, "ckpt", "ckpt_name", path);
    set(g, "ckpt", "weight_dtype", "fp32"); /* golden comparisons: fp16 storage alone is ~7e-4 */
    add(g, "CLIPTextEncode", "pos");
    link(g, "ckpt", "CLIP", "pos", "clip");
    set(g, "pos", "text", "a cat");
    add(g, "CLIPTextEncode", "neg");
    link(g, "ckpt", "CLIP", "neg", "clip");
    set(g, "neg", "text", "blurry");
}

static void test_inpaint_model_conditioning(void)
{
    sd_graph *g = base_graph();
    add_checkpoint(g, ckpt_path);
    add(g, "InpaintModelConditioning", "imc");
    link(g, "pos", "CONDITIONING", "imc", "positive");
    link(g, "neg", "CONDITIONING", "imc", "negative");
    link(g, "vae", "VAE", "imc", "vae");
    link(g, "img", "IMAGE", "imc", "pixels");
    link(g, "mask", "MASK", "imc", "mask");
    add(g, "VAEEncode", "plain");
    link(g, "img", "IMAGE", "plain", "pixels");
    link(g, "vae", "VAE", "plain", "vae");
    const char *outs[] = {"imc", "plain"};
    sd_result *res = run(g, outs, 2, SD_OK);
    float *want_lat = test_read_golden("inpaint_latent.f32", 4 * 5 * 6 * 4);
    float *resized = test_read_golden("inpaint_mask_resized.f32", 40 * 48 * 4);
    const char *sides[] = {"positive", "negative"};
    for (int s = 0; s < 2; s++) {
        const sd_tensor *cl = tensor(res, "imc", sides[s], "concat_latent_image.0");
        const sd_tensor *cm = tensor(res, "imc", sides[s], "concat_mask.0");
        CHECK(tensor(res, "imc", sides[s], "cond.0") != NULL);
        if (shape_is(cl, 4, 1, 4, 5, 6) && want_lat)
            CHECK(test_max_abs_diff(cl->data, want_lat, 4 * 5 * 6) <= 1e-4);
        if (shape_is(cm, 4, 1, 1, 40, 48) && resized)
            CHECK(test_max_abs_diff(cm->data, resized, 40 * 48) <= 1e-6);
        CHECK(shape_is(cl, 4, 1, 4, 5, 6) && shape_is(cm, 4, 1, 1, 40, 48));
    }
    const sd_tensor *lat = tensor(res, "imc", "latent", "samples"), *plain = tensor(res, "plain", "LATENT", "samples");
    const sd_tensor *nm = tensor(res, "imc", "latent", "noise_mask");
    CHECK(shape_is(lat, 4, 1, 4, 5, 6) && shape_is(plain, 4, 1, 4, 5, 6) && shape_is(nm, 4, 1, 1, 40, 48));
    if (shape_is(lat, 4, 1, 4, 5, 6) && shape_is(plain, 4, 1, 4, 5, 6))
        CHECK(memcmp(lat->data, plain->data, 4 * 5 * 6 * sizeof(float)) == 0);
    if (shape_is(nm, 4, 1, 1, 40, 48) && resized)
        CHECK(test_max_abs_diff(nm->data, resized, 40 * 48) <= 1e-6);
    sd_result_free(res);
    /* noise_mask false: no noise mask on the latent. */
    set(g, "imc", "noise_mask", "false");
    const char *one[] = {"imc"};
    res = run(g, one, 1, SD_OK);
    const sd_value *v = res ? sd_result_value(res, "imc", "latent") : NULL;
    CHECK(v && sd_value_tensor(v, "samples") && !sd_value_tensor(v, "noise_mask"));
    sd_result_free(res);
    free(want_lat);
    free(resized);
    sd_graph_free(g);
}

/* A 64x64 image encoded with the checkpoint's VAE; noise mask 8x8 (latent size) with ones in
 * the square x 2..5, y 3..6; KSampler 2 steps: bit-identical outside, changed inside. */
static void test_noise_mask_keeps_latent(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    add_checkpoint(g, ckpt_path);
    add(g, "LoadImage", "img");
    set(g, "img", "image", img_path);
    add(g, "ImageScale", "big");
    link(g, "img", "IMAGE", "big", "image");
    set(g, "big", "width", "64");
    set(g, "big", "height", "64");
    add(g, "VAEEncode", "enc");
    link(g, "big", "IMAGE", "enc", "pixels");
    link(g, "ckpt", "VAE", "enc", "vae");
    add(g, "SolidMask", "bg");
    set(g, "bg", "value", "0");
    set(g, "bg", "width", "8");
    set(g, "bg", "height", "8");
    add(g, "SolidMask", "fg");
    set(g, "fg", "width", "4");
    set(g, "fg", "height", "4");
    add(g, "MaskComposite", "m");
    link(g, "bg", "MASK", "m", "destination");
    link(g, "fg", "MASK", "m", "source");
    set(g, "m", "x", "2");
    set(g, "m", "y", "3");
    set(g, "m", "operation", "add");
    add(g, "SetLatentNoiseMask", "snm");
    link(g, "enc", "LATENT", "snm", "samples");
    link(g, "m", "MASK", "snm", "mask");
    add(g, "KSampler", "ks");
    link(g, "ckpt", "MODEL", "ks", "model");
    link(g, "pos", "CONDITIONING", "ks", "positive");
    link(g, "neg", "CONDITIONING", "ks", "negative");
    link(g, "snm", "LATENT", "ks", "latent_image");
    set(g, "ks", "steps", "2");
    set(g, "ks", "seed", "3");
    const char *outs[] = {"enc", "ks", "snm"};
    sd_result *res = run(g, outs, 3, SD_OK);
    const sd_tensor *in = tensor(res, "enc", "LATENT", "samples"), *out = tensor(res, "ks", "LATENT", "samples");
    const sd_tensor *nm = tensor(res, "snm", "LATENT", "noise_mask");
    CHECK(shape_is(nm, 4, 1, 1, 8, 8));
    if (shape_is(in, 4, 1, 4, 8, 8) && shape_is(out, 4, 1, 4, 8, 8)) {
        int same_out = 0, changed_in = 0;
        for (int c = 0; c < 4; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++) {
                    int i = (c * 8 + y) * 8 + x;
                    bool inside = x >= 2 && x < 6 && y >= 3 && y < 7;
                    if (!inside)
                        same_out += memcmp(&in->data[i], &out->data[i], sizeof(float)) == 0;
                    else
                        changed_in += in->data[i] != out->data[i];
                }
        CHECK_EQ_INT(same_out, 4 * (64 - 16));
        CHECK_EQ_INT(changed_in, 4 * 16);
    }
    sd_result_free(res);
    sd_graph_free(g);
}

/* ImageCompositeMasked of the inverted image onto the image through the 20x24 mask (resized to
 * 44x52), saved as an 8-bit PNG and read back: where the resized mask is 0 the pixels are the
 * input's bytes, where it is 1 the inverted ones. */
static void test_composite_bit_identical(void)
{
    sd_graph *g = base_graph();
    add(g, "ImageInvert", "inv");
    link(g, "img", "IMAGE", "inv", "image");
    add(g, "ImageCompositeMasked", "paste");
    link(g, "img", "IMAGE", "paste", "destination");
    link(g, "inv", "IMAGE", "paste", "source");
    link(g, "mask", "MASK", "paste", "mask");
    add(g, "SaveImage", "save");
    link(g, "paste", "IMAGE", "save", "images");
    set(g, "save", "filename_prefix", "composite");
    const char *outs[] = {"save", "mask"};
    sd_result *res = run(g, outs, 2, SD_OK);
    const sd_tensor *m = tensor(res, "mask", "MASK", "mask");
    char *png = test_path(out_dir, "composite_00001_.png");
    sd_image im = {0};
    CHECK_EQ_INT(sd_png_read(ctx, png, NULL, &im), SD_OK);
    float resized[IH * IW];
    if (shape_is(m, 3, 1, MH, MW, 0) && im.data && im.width == IW && im.height == IH && im.channels == 3) {
        sd_bilinear_resize(m->data, MH, MW, 1, resized, IH, IW);
        int zero = 0, one = 0, bad = 0;
        for (int i = 0; i < IH * IW; i++)
            for (int k = 0; k < 3; k++) {
                int got = (int)lrintf(im.data[i * 3 + k] * 255.0f), orig = img_u8[i * 3 + k];
                if (resized[i] == 0.0f) {
                    zero += k == 0;
                    bad += got != orig;
                } else if (resized[i] == 1.0f) {
                    one += k == 0;
                    bad += got != 255 - orig && got != 254 - orig; /* 1 - v, truncated to 8 bits */
                }
            }
        CHECK_EQ_INT(bad, 0);
        CHECK_MSG(zero > IH * IW / 2 && one > 20, "mask 0 at %d pixels, 1 at %d", zero, one);
    }
    sd_image_clear(&im);
    free(png);
    sd_result_free(res);
    sd_graph_free(g);
}

/* LatentCompositeMasked: x 8, y 16 (pixels) puts the source at latent (1, 2); no mask: the
 * source replaces, the rest is the destination; source batch 1 cycles over a batch of 2. */
static void test_latent_composite(void)
{
    sd_graph *g = base_graph();
    add(g, "EmptyLatentImage", "dst");
    set(g, "dst", "width", "64");
    set(g, "dst", "height", "64");
    set(g, "dst", "batch_size", "2");
    add(g, "VAEEncode", "src");
    link(g, "img", "IMAGE", "src", "pixels");
    link(g, "vae", "VAE", "src", "vae");
    add(g, "LatentCompositeMasked", "lc");
    link(g, "dst", "LATENT", "lc", "destination");
    link(g, "src", "LATENT", "lc", "source");
    set(g, "lc", "x", "8");
    set(g, "lc", "y", "16");
    const char *outs[] = {"lc", "src"};
    sd_result *res = run(g, outs, 2, SD_OK);
    const sd_tensor *o = tensor(res, "lc", "LATENT", "samples"), *s = tensor(res, "src", "LATENT", "samples");
    if (shape_is(o, 4, 2, 4, 8, 8) && shape_is(s, 4, 1, 4, 5, 6)) {
        int bad = 0;
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 4; c++)
                for (int y = 0; y < 8; y++)
                    for (int x = 0; x < 8; x++) {
                        bool in = x >= 1 && x < 7 && y >= 2 && y < 7;
                        float want = in ? s->data[(c * 5 + y - 2) * 6 + x - 1] : 0.0f;
                        bad += o->data[((b * 4 + c) * 8 + y) * 8 + x] != want;
                    }
        CHECK_EQ_INT(bad, 0);
    } else {
        CHECK_MSG(false, "latent shapes");
    }
    sd_result_free(res);
    sd_graph_free(g);
}

/* The KSampler (1 step) on InpaintModelConditioning's outputs for a 64x64 version of the image
 * with the 20x24 mask or an all-zero one (noise_mask false), or with the plain conditionings
 * and VAEEncode's latent; returns the output latent (malloc'd 4x8x8). */
static float *sample_with_conditioning(const char *ckpt, bool solid_zero_mask, bool plain)
{
    sd_graph *g = base_graph();
    add_checkpoint(g, ckpt);
    add(g, "ImageScale", "big");
    link(g, "img", "IMAGE", "big", "image");
    set(g, "big", "width", "64");
    set(g, "big", "height", "64");
    add(g, "SolidMask", "zero");
    set(g, "zero", "value", "0");
    set(g, "zero", "width", "8");
    set(g, "zero", "height", "8");
    add(g, "InpaintModelConditioning", "imc");
    link(g, "pos", "CONDITIONING", "imc", "positive");
    link(g, "neg", "CONDITIONING", "imc", "negative");
    link(g, "vae", "VAE", "imc", "vae");
    link(g, "big", "IMAGE", "imc", "pixels");
    link(g, solid_zero_mask ? "zero" : "mask", "MASK", "imc", "mask");
    set(g, "imc", "noise_mask", "false");
    add(g, "VAEEncode", "enc");
    link(g, "big", "IMAGE", "enc", "pixels");
    link(g, "vae", "VAE", "enc", "vae");
    add(g, "KSampler", "ks");
    link(g, "ckpt", "MODEL", "ks", "model");
    link(g, plain ? "pos" : "imc", plain ? "CONDITIONING" : "positive", "ks", "positive");
    link(g, plain ? "neg" : "imc", plain ? "CONDITIONING" : "negative", "ks", "negative");
    link(g, plain ? "enc" : "imc", plain ? "LATENT" : "latent", "ks", "latent_image");
    set(g, "ks", "steps", "1");
    const char *outs[] = {"ks"};
    sd_result *res = run(g, outs, 1, SD_OK);
    const sd_tensor *t = tensor(res, "ks", "LATENT", "samples");
    float *out = NULL;
    if (shape_is(t, 4, 1, 4, 8, 8)) {
        out = malloc(4 * 8 * 8 * sizeof *out);
        memcpy(out, t->data, 4 * 8 * 8 * sizeof *out);
    }
    sd_result_free(res);
    sd_graph_free(g);
    return out;
}

/* A 9-channel UNet sees InpaintModelConditioning's mask and image (another mask, another
 * result); a 4-channel one ignores them (bit-identical to plain conditioning). */
static void test_concat_reaches_unet(void)
{
    float *a = sample_with_conditioning(ckpt9_path, false, false);
    float *b = sample_with_conditioning(ckpt9_path, true, false);
    CHECK(a && b && memcmp(a, b, 4 * 8 * 8 * sizeof *a) != 0);
    float *c = sample_with_conditioning(ckpt_path, false, false), *d = sample_with_conditioning(ckpt_path, false, true);
    CHECK(c && d && memcmp(c, d, 4 * 8 * 8 * sizeof *c) == 0);
    free(a);
    free(b);
    free(c);
    free(d);
}

/* A ControlNet applied before InpaintModelConditioning stays on its output conditioning, next to
 * the inpainting tensors. */
static void test_controlnet_kept(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    char *cn = test_path(test_scratch_dir(), "controlnet.safetensors");
    CHECK_EQ_INT(sd_controlnet_write_random(ctx, cn, &cfg.unet, false, SD_ST_F32, 4), SD_OK);
    sd_graph *g = base_graph();
    add_checkpoint(g, ckpt9_path);
    add(g, "ControlNetLoader", "cnl");
    set(g, "cnl", "control_net_name", cn);
    add(g, "ControlNetApply", "cna");
    link(g, "pos", "CONDITIONING", "cna", "conditioning");
    link(g, "cnl", "CONTROL_NET", "cna", "control_net");
    link(g, "img", "IMAGE", "cna", "image");
    add(g, "InpaintModelConditioning", "imc");
    link(g, "cna", "CONDITIONING", "imc", "positive");
    link(g, "neg", "CONDITIONING", "imc", "negative");
    link(g, "vae", "VAE", "imc", "vae");
    link(g, "img", "IMAGE", "imc", "pixels");
    link(g, "mask", "MASK", "imc", "mask");
    const char *outs[] = {"imc"};
    sd_result *res = run(g, outs, 1, SD_OK);
    const sd_value *pos = res ? sd_result_value(res, "imc", "positive") : NULL;
    CHECK(pos && sd_cond_control(pos, 0, NULL) != NULL);
    CHECK(pos && sd_value_tensor(pos, "concat_latent_image.0") && sd_value_tensor(pos, "concat_mask.0"));
    sd_result_free(res);
    sd_graph_free(g);
    free(cn);
}

/* Node-level errors with exact messages, and a resized source. */
static void test_bad_inputs(void)
{
    /* A mask batch of 2 against a batch of 1: SD_ERR_INVALID naming both. */
    sd_graph *g = base_graph();
    add(g, "EmptyLatentImage", "two");
    set(g, "two", "width", "16");
    set(g, "two", "height", "16");
    set(g, "two", "batch_size", "2");
    add(g, "VAEDecode", "dec");
    link(g, "two", "LATENT", "dec", "samples");
    link(g, "vae", "VAE", "dec", "vae");
    add(g, "ImageToMask", "m2");
    link(g, "dec", "IMAGE", "m2", "image");
    add(g, "VAEEncodeForInpaint", "enc");
    link(g, "img", "IMAGE", "enc", "pixels");
    link(g, "vae", "VAE", "enc", "vae");
    link(g, "m2", "MASK", "enc", "mask");
    const char *enc[] = {"enc"};
    sd_result *res = run(g, enc, 1, SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx),
                       "node 'enc' (VAEEncodeForInpaint): the mask batch of 2 does not match the image batch of 1");
    sd_result_free(res);
    sd_graph_free(g);
    /* An image smaller than the VAE's 8x8 grid. */
    g = base_graph();
    add(g, "ImageCrop", "tiny");
    link(g, "img", "IMAGE", "tiny", "image");
    set(g, "tiny", "width", "7");
    set(g, "tiny", "height", "7");
    add(g, "VAEEncodeForInpaint", "enc");
    link(g, "tiny", "IMAGE", "enc", "pixels");
    link(g, "vae", "VAE", "enc", "vae");
    link(g, "mask", "MASK", "enc", "mask");
    res = run(g, enc, 1, SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "node 'enc' (VAEEncodeForInpaint): image 7x7 is smaller than 8x8");
    sd_result_free(res);
    sd_graph_free(g);
    /* resize_source: a 24x20 source fills the 52x44 destination. */
    g = base_graph();
    add(g, "MaskToImage", "mi");
    link(g, "mask", "MASK", "mi", "mask");
    add(g, "ImageCompositeMasked", "paste");
    link(g, "img", "IMAGE", "paste", "destination");
    link(g, "mi", "IMAGE", "paste", "source");
    set(g, "paste", "resize_source", "true");
    const char *paste[] = {"paste"};
    res = run(g, paste, 1, SD_OK);
    const sd_tensor *t = tensor(res, "paste", "IMAGE", "image");
    CHECK(shape_is(t, 4, 1, IH, IW, 3));
    if (shape_is(t, 4, 1, IH, IW, 3))
        CHECK(t->data[0] == 0.0f && t->data[3 * (IH * IW - 1)] == 0.0f); /* corners of the mask are 0 */
    sd_result_free(res);
    sd_graph_free(g);
}

/* The stock graphs end to end with tiny checkpoints, 1 step; inpaint.xml's opaque pixels come
 * back bit-identical. */
static void run_stock(const char *name, const char *ckpt, const char *image, const char *prefix)
{
    char rel[64];
    snprintf(rel, sizeof rel, "graphs/%s", name);
    char *path = test_path(test_source_dir(), rel);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(ctx, path, &g), SD_OK);
    if (g) {
        CHECK_EQ_INT(sd_graph_set_param(g, "checkpoint", ckpt), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "image", image), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "steps", "1"), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "prefix", prefix), SD_OK);
        sd_result *res = run(g, NULL, 0, SD_OK);
        char file[64];
        snprintf(file, sizeof file, "%s_00001_.png", prefix);
        char *png = test_path(out_dir, file);
        CHECK_MSG(test_file_exists(png), "%s did not write %s", name, file);
        free(png);
        sd_result_free(res);
        sd_graph_free(g);
    }
    free(path);
}

static void test_stock_graphs(void)
{
    /* A 64x64 RGBA image (the inpainting image's top-left corner) with a transparent disc. */
    unsigned char px[64 * 64 * 4];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) {
            unsigned char *p = px + (y * 64 + x) * 4;
            for (int k = 0; k < 3; k++)
                p[k] = img_u8[((y % IH) * IW + (x % IW)) * 3 + k];
            p[3] = (x - 36) * (x - 36) + (y - 28) * (y - 28) < 14 * 14 ? 0 : 255;
        }
    fixture fx = {.w = 64, .h = 64, .depth = 8, .ctype = PNG_COLOR_TYPE_RGBA, .pixels = px};
    char *rgba = write_fixture("stock.png", &fx);
    run_stock("inpaint.xml", ckpt_path, rgba, "stock-inpaint");
    run_stock("inpaint-model.xml", ckpt9_path, rgba, "stock-inpaint-model");
    run_stock("outpaint.xml", ckpt_path, rgba, "stock-outpaint");
    /* Opaque pixels of the input are the output's, byte for byte. */
    sd_image in = {0}, out = {0};
    char *png = test_path(out_dir, "stock-inpaint_00001_.png");
    CHECK_EQ_INT(sd_png_read(ctx, rgba, NULL, &in), SD_OK);
    CHECK_EQ_INT(sd_png_read(ctx, png, NULL, &out), SD_OK);
    if (in.data && out.data && in.channels == 4 && out.channels == 3 && in.width == out.width &&
        in.height == out.height) {
        size_t n = (size_t)in.width * in.height, opaque = 0, bad = 0, changed = 0;
        for (size_t i = 0; i < n; i++) {
            bool same = true;
            for (int k = 0; k < 3; k++)
                same &= lrintf(in.data[i * 4 + k] * 255.0f) == lrintf(out.data[i * 3 + k] * 255.0f);
            if (in.data[i * 4 + 3] == 1.0f) {
                opaque++;
                bad += !same;
            } else {
                changed += !same;
            }
        }
        CHECK_EQ_INT(bad, 0);
        CHECK_MSG(opaque > n / 2 && changed > 200, "opaque %zu, changed %zu", opaque, changed);
    } else {
        CHECK_MSG(false, "stock inpaint: unexpected images");
    }
    sd_image_clear(&in);
    sd_image_clear(&out);
    free(png);
    free(rgba);
}

int main(void)
{
    if (!setup())
        return test_summary("test_inpaint_nodes");
    RUN(test_encode_for_inpaint_golden);
    RUN(test_inpaint_model_conditioning);
    RUN(test_noise_mask_keeps_latent);
    RUN(test_concat_reaches_unet);
    RUN(test_controlnet_kept);
    RUN(test_composite_bit_identical);
    RUN(test_latent_composite);
    RUN(test_bad_inputs);
    RUN(test_stock_graphs);
    sd_context_free(ctx);
    free(vae_path);
    free(ckpt_path);
    free(ckpt9_path);
    free(img_path);
    free(mask_path);
    free(out_dir);
    free(img_u8);
    return test_summary("test_inpaint_nodes");
}
