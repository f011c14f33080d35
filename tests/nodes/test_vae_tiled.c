/* VAEDecodeTiled / VAEEncodeTiled against tests/reference/make_inpaint_goldens.py (a torch
 * transcription of ComfyUI's tiled_scale and VAE.decode_tiled_ / encode_tiled_ with diffusers'
 * AutoencoderKL) on the tiny random VAE with fp32 weights, within 1e-4 absolute (measured
 * ~1e-5; fp16 weight storage alone would give ~1e-3), while tiling mistakes show far above it
 * (in the torch transcription, half the overlap moves pixels by 0.7, one tiling instead of three
 * by 0.6);
 * tiled against untiled decode of the same latent within the documented bound; tile_size not above overlap refused; and VAEDecode / VAEEncode falling
 * back to tiles, with a warning naming the node, under a small SDFLOW_DEVICE_MEMORY budget. */
#include "test.h"
#include "support/golden.h"
#include "support/png_fixture.h"
#include "core/run.h"
#include "ml/families/sd1_layout.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define W 128
#define H 96
#define LW (W / 8)
#define LH (H / 8)

static char *vae_path, *img_path;
static char warnings[8192];

static void capture(const char *line, void *user)
{
    (void)user;
    size_t n = strlen(warnings);
    snprintf(warnings + n, sizeof warnings - n, "%s\n", line);
}

static bool setup(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_unet = cfg.has_clip = false;
    cfg.vae_prefix = "";
    vae_path = test_path(test_scratch_dir(), "vae.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, vae_path, &cfg, SD_ST_F32, 5), SD_OK);
    sd_context_free(ctx);
    unsigned char *px = test_read_golden("tiled_image.u8", W * H * 3);
    if (!px)
        return false;
    fixture fx = {.w = W, .h = H, .depth = 8, .ctype = PNG_COLOR_TYPE_RGB, .pixels = px};
    img_path = write_fixture("tiled.png", &fx);
    free(px);
    return true;
}

static sd_context *new_context(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    sd_context_set_allow_absolute_paths(ctx, true); /* test files are named by absolute path */
    warnings[0] = 0;
    sd_context_set_log(ctx, capture, NULL);
    return ctx;
}

/* VAELoader "vae", LoadImage "img", VAEEncode "enc"; then `type` "node" on the latent (decoders)
 * or the image (encoders) with tile_size and overlap when tile > 0. */
static sd_graph *graph(sd_context *ctx, const char *type, int tile, int overlap)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "VAELoader", "vae", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "vae", "vae_name", vae_path), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "LoadImage", "img", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "img", "image", img_path), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "VAEEncode", "enc", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "enc", "pixels"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "vae", "VAE", "enc", "vae"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, type, "node", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "vae", "VAE", "node", "vae"), SD_OK);
    bool decoder = strstr(type, "Decode") != NULL;
    if (decoder)
        CHECK_EQ_INT(sd_graph_connect(g, "enc", "LATENT", "node", "samples"), SD_OK);
    else
        CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "node", "pixels"), SD_OK);
    if (tile > 0) {
        char t[16], o[16];
        snprintf(t, sizeof t, "%d", tile);
        snprintf(o, sizeof o, "%d", overlap);
        CHECK_EQ_INT(sd_graph_set_input(g, "node", "tile_size", t), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, "node", "overlap", o), SD_OK);
    }
    return g;
}

/* Runs g for "enc" and "node"; the node's output tensor (name) copied into out (n floats) and
 * the encoder's latent into lat (when not NULL). Returns the run status. */
static sd_status run(sd_context *ctx, sd_graph *g, const char *output, const char *name, float *out, size_t n,
                     float *lat)
{
    const char *outs[] = {"enc", "node"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 2, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &opt, &res);
    if (!st) {
        const sd_value *v = sd_result_value(res, "node", output);
        const sd_tensor *t = v ? sd_value_tensor(v, name) : NULL;
        size_t numel = 0;
        CHECK(t && sd_tensor_numel(t, &numel) && numel == n);
        if (t && numel == n)
            memcpy(out, t->data, n * sizeof *out);
        const sd_tensor *l = sd_value_tensor(sd_result_value(res, "enc", "LATENT"), "samples");
        if (lat && l)
            memcpy(lat, l->data, 4 * LH * LW * sizeof *lat);
    }
    sd_result_free(res);
    return st;
}

static void test_against_reference(void)
{
    sd_context *ctx = new_context();
    float *ref_lat = test_read_golden("tiled_latent.f32", 4 * LH * LW * 4);
    float *ref_dec = test_read_golden("tiled_decoded.f32", H * W * 3 * 4);
    float *ref_enc = test_read_golden("tiled_encoded.f32", 4 * LH * LW * 4);
    float *dec = malloc(H * W * 3 * sizeof *dec), lat[4 * LH * LW], enc[4 * LH * LW];
    sd_graph *g = graph(ctx, "VAEDecodeTiled", 64, 16);
    CHECK_EQ_INT(sd_graph_set_input(g, "vae", "weight_dtype", "fp32"), SD_OK); /* fp16 storage alone: ~1e-3 */
    CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", dec, H * W * 3, lat), SD_OK);
    sd_graph_free(g);
    g = graph(ctx, "VAEEncodeTiled", 64, 16);
    CHECK_EQ_INT(sd_graph_set_input(g, "vae", "weight_dtype", "fp32"), SD_OK);
    CHECK_EQ_INT(run(ctx, g, "LATENT", "samples", enc, 4 * LH * LW, NULL), SD_OK);
    sd_graph_free(g);
    if (ref_lat && ref_dec && ref_enc) {
        double dl = test_max_abs_diff(lat, ref_lat, 4 * LH * LW), dd = test_max_abs_diff(dec, ref_dec, H * W * 3);
        double de = test_max_abs_diff(enc, ref_enc, 4 * LH * LW);
        printf("  vs torch: VAEEncode %.3g, VAEDecodeTiled %.3g, VAEEncodeTiled %.3g (max abs)\n", dl, dd, de);
        CHECK_MSG(dl <= 1e-4 && dd <= 1e-4 && de <= 1e-4, "max abs diffs %g %g %g", dl, dd, de);
    }
    free(ref_lat);
    free(ref_dec);
    free(ref_enc);
    free(dec);
    sd_context_free(ctx);
}

/* Tiled (256 px tiles, overlap 64: three tilings of up to 2 tiles) against whole decode. */
static void test_tiled_vs_whole(void)
{
    sd_context *ctx = new_context();
    float *whole = malloc(H * W * 3 * sizeof *whole), *tiled = malloc(H * W * 3 * sizeof *tiled);
    sd_graph *g = graph(ctx, "VAEDecode", 0, 0);
    CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", whole, H * W * 3, NULL), SD_OK);
    sd_graph_free(g);
    g = graph(ctx, "VAEDecodeTiled", 128, 32);
    CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", tiled, H * W * 3, NULL), SD_OK);
    sd_graph_free(g);
    double sum = 0, max = 0;
    for (int i = 0; i < H * W * 3; i++) {
        double d = fabs((double)whole[i] - tiled[i]);
        sum += d;
        max = d > max ? d : max;
    }
    printf("  tiled (128 px, overlap 32) vs whole: mean abs %.4f, max abs %.4f, PSNR %.1f dB\n", sum / (H * W * 3),
           max, test_psnr(tiled, whole, H * W * 3, 1.0));
    CHECK_MSG(sum / (H * W * 3) <= 0.05 && max > 0.0, "mean abs diff %g", sum / (H * W * 3));
    free(whole);
    free(tiled);
    sd_context_free(ctx);
}

static void test_tile_not_above_overlap(void)
{
    sd_context *ctx = new_context();
    const char *types[] = {"VAEDecodeTiled", "VAEEncodeTiled"};
    for (int i = 0; i < 2; i++) {
        float out[1];
        sd_graph *g = graph(ctx, types[i], 128, 128);
        /* Literal values: a validation problem, before anything runs. */
        CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", out, 1, NULL), SD_ERR_INVALID);
        CHECK_EQ_INT(sd_context_diag_count(ctx), 1);
        CHECK_STR_EQ(sd_context_diag(ctx, 0),
                     "<api>: node 'node' input 'tile_size': 128 is not larger than overlap 128: tiles would not advance");
        /* A linked value: the node's error when it runs. */
        CHECK_EQ_INT(sd_graph_add_node(g, "PrimitiveInt", "tile", NULL), SD_OK);
        CHECK_EQ_INT(sd_graph_set_input(g, "tile", "value", "128"), SD_OK);
        CHECK_EQ_INT(sd_graph_connect(g, "tile", "INT", "node", "tile_size"), SD_OK);
        CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", out, 1, NULL), SD_ERR_INVALID);
        char want[160];
        snprintf(want, sizeof want,
                 "node 'node' (%s): tile_size 128 is not larger than overlap 128: tiles would not advance", types[i]);
        CHECK_STR_EQ(sd_context_errmsg(ctx), want);
        sd_graph_free(g);
    }
    float out[1];
    sd_graph *g = graph(ctx, "VAEEncodeTiled", 128, 64);
    CHECK_EQ_INT(run(ctx, g, "LATENT", "samples", out, 1, NULL), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "node 'node' (VAEEncodeTiled): overlap 64 is not smaller than half of "
                                         "tile_size 128: the half-size tiles of the tiled encode would not advance");
    sd_graph_free(g);
    sd_context_free(ctx);
}

/* Under SDFLOW_DEVICE_MEMORY=16M (measured: the whole 96x128 decode needs a 28 MB conv buffer,
 * 64 px tiles fit) VAEDecode and VAEEncode warn, naming the node, and finish in tiles, halving
 * from 512 px down to 64 px; the result equals VAEDecodeTiled's with that tile size. */
static void test_out_of_memory_fallback(void)
{
    float *fb = malloc(H * W * 3 * sizeof *fb), *ref = malloc(H * W * 3 * sizeof *ref), lat[4 * LH * LW];
    setenv("SDFLOW_DEVICE_MEMORY", "16M", 1);
    setenv("SDFLOW_CPU_ROUTES", "opencl", 1); /* the sizes above are the OpenCL kernels' scratch */
    sd_context *ctx = new_context();
    sd_graph *g = graph(ctx, "VAEDecode", 0, 0);
    sd_status st = run(ctx, g, "IMAGE", "image", fb, H * W * 3, lat);
    CHECK_MSG(st == SD_OK, "fallback run: %s", sd_context_errmsg(ctx));
    CHECK_STR_CONTAINS(warnings, "node 'node' (VAEDecode): VAE decode: out of device memory allocating");
    CHECK_STR_CONTAINS(warnings, "SDFLOW_DEVICE_MEMORY budget 16777216 bytes; retrying with tiled decoding in 512 px "
                                 "tiles, overlap 128 px (as VAEDecodeTiled)");
    CHECK_STR_CONTAINS(warnings, "node 'node' (VAEDecode): 128 px tiles do not fit either; retrying with 64 px tiles");
    CHECK_STR_CONTAINS(warnings, "node 'enc' (VAEEncode): VAE encode: out of device memory");
    printf("  warnings under a 16M budget:\n%s", warnings);
    sd_graph_free(g);
    /* VAEDecodeTiled with the tile size the fallback reached (64 px, overlap 16) on the same
     * latent (the encoder falls back the same way): identical pixels. */
    g = graph(ctx, "VAEDecodeTiled", 64, 16);
    CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", ref, H * W * 3, NULL), SD_OK);
    CHECK(memcmp(ref, fb, H * W * 3 * sizeof *fb) == 0);
    sd_graph_free(g);
    sd_context_free(ctx);
    unsetenv("SDFLOW_DEVICE_MEMORY");
    unsetenv("SDFLOW_CPU_ROUTES");
    /* A malformed budget is refused when the runtime starts. */
    setenv("SDFLOW_DEVICE_MEMORY", "lots", 1);
    ctx = new_context();
    g = graph(ctx, "VAEDecode", 0, 0);
    CHECK_EQ_INT(run(ctx, g, "IMAGE", "image", fb, H * W * 3, NULL), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "SDFLOW_DEVICE_MEMORY: 'lots' is not a positive size like 512M or 6G");
    sd_graph_free(g);
    sd_context_free(ctx);
    unsetenv("SDFLOW_DEVICE_MEMORY");
    free(fb);
    free(ref);
}

int main(void)
{
    if (!setup())
        return test_summary("test_vae_tiled");
    RUN(test_against_reference);
    RUN(test_tiled_vs_whole);
    RUN(test_tile_not_above_overlap);
    RUN(test_out_of_memory_fallback);
    free(vae_path);
    free(img_path);
    return test_summary("test_vae_tiled");
}
