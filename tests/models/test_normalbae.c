/* The BAE normal network (ml/annotators/normalbae.h) against the PyTorch re-implementation of
 * comfyui_controlnet_aux's NormalBaeDetector (goldens from tests/reference/make_bae_goldens.py:
 * a tiny random EfficientNet encoder and decoder in the real key layout, saved as scannet.pt is:
 * {"model": state dict} with "module." names): the architecture read from the shapes; out_res1
 * (normals and kappa) on the padded 128x64 test image within 1e-4; the detector's image from the
 * reference values byte for byte and from sdflow's within one level; the same tensors as a
 * .safetensors without the prefix give the same output; another network's file, a missing tensor
 * and a bad input size refused with one-line messages. */
#include "test.h"
#include "support/aux_net.h"
#include "support/golden.h"
#include "ml/annotators/normalbae.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static sd_context *ctx;
static sd_cl *cl;
enum { H = AUX_NET_H, W = AUX_NET_W };

static void test_inspect(void)
{
    static const int blocks[7] = {2, 2, 2, 2, 2, 2, 1}, width[7] = {4, 6, 8, 10, 12, 14, 16};
    sd_safetensors *st = aux_open_golden_net(ctx, "bae_tiny.pt");
    sd_normalbae_config c;
    CHECK_EQ_INT(sd_normalbae_inspect(ctx, st, &c), SD_OK);
    CHECK_STR_EQ(c.prefix, "model.module.");
    CHECK_EQ_INT(c.stem, 8);
    CHECK_EQ_INT(c.head, 32);
    for (int i = 0; i < 7; i++) {
        CHECK_EQ_INT(c.blocks[i], blocks[i]);
        CHECK_EQ_INT(c.width[i], width[i]);
    }
    sd_safetensors_close(st);
}

/* The padded test image normalised as the detector does, on the device (NULL after a failed
 * check). */
static sd_dtensor *bae_input(void)
{
    sd_dtensor *bytes = aux_padded_input(ctx, cl, 1.0f), *dx = NULL;
    float *v = malloc(sizeof *v * 3 * H * W), *x = malloc(sizeof *x * 3 * H * W);
    unsigned char *px = malloc(3 * H * W);
    if (bytes && v && x && px && sd_dtensor_download(bytes, v) == SD_OK) {
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < H * W; i++)
                px[i * 3 + c] = (unsigned char)v[c * H * W + i];
        sd_normalbae_input(px, H, W, x);
        CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, H, W}, &dx), SD_OK);
        CHECK_EQ_INT(sd_dtensor_upload(dx, x), SD_OK);
    }
    sd_dtensor_free(bytes);
    free(v), free(x), free(px);
    return dx;
}

static void test_forward(void)
{
    unsigned char *want = test_read_golden("bae_map.u8", H * W * 3);
    float *ref = test_read_golden("bae_normals.f32", sizeof(float) * 4 * H * W), *y = calloc(4 * H * W, sizeof *y);
    sd_safetensors *st = aux_open_golden_net(ctx, "bae_tiny.pt");
    sd_normalbae *m = NULL;
    sd_dtensor *dx = bae_input();
    CHECK_EQ_INT(sd_normalbae_new(cl, st, &m), SD_OK);
    sd_status s = m && dx ? sd_normalbae_forward(m, dx, y) : SD_ERR_INVALID;
    CHECK_MSG(s == SD_OK, "forward: %s", sd_context_errmsg(ctx));
    double d = ref ? test_max_abs_diff(y, ref, 4 * H * W) : 1e9;
    printf("BAE: max abs diff %.3g in out_res1 (unit normals and kappa within 0.3 .. 1)\n", d);
    CHECK(d <= 1e-4);
    unsigned char map[H * W * 3];
    int bad = 0, off = 0, maxd = 0;
    if (ref)
        sd_normalbae_map(ref, H * W, map);
    for (int i = 0; ref && want && i < H * W * 3; i++)
        bad += map[i] != want[i];
    CHECK_MSG(bad == 0, "image from the reference values: %d samples differ", bad);
    sd_normalbae_map(y, H * W, map);
    for (int i = 0; want && i < H * W * 3; i++) {
        int e = abs(map[i] - want[i]);
        off += e != 0;
        maxd = e > maxd ? e : maxd;
    }
    printf("BAE image from sdflow's values: %d of %d samples off, by at most %d\n", off, H * W * 3, maxd);
    CHECK(maxd <= 1 && off <= H * W * 3 / 200);
    free(want), free(ref), free(y);
    sd_dtensor_free(dx);
    sd_normalbae_free(m);
    sd_safetensors_close(st);
}

/* The weight tensors of bae_tiny.pt named without "model.module.", all but `skip`. */
typedef struct resave {
    sd_context *ctx;
    const sd_safetensors *pt;
    const sd_st_tensor *t[512];
} resave;

static sd_status fill(void *user, size_t index, void *dst, size_t nbytes)
{
    resave *r = user;
    return sd_safetensors_read_f32(r->ctx, r->pt, r->t[index], dst, nbytes / sizeof(float));
}

/* Writes the resaved file to the scratch dir as `name` (the path, malloc'd; NULL after a failed
 * check). */
static char *write_safetensors(const char *name, const char *skip)
{
    sd_safetensors *pt = aux_open_golden_net(ctx, "bae_tiny.pt");
    resave r = {.ctx = ctx, .pt = pt};
    sd_st_entry e[512];
    size_t n = 0, skip_len = strlen("model.module.");
    for (size_t i = 0; pt && i < sd_safetensors_count(pt) && n < 512; i++) {
        const sd_st_tensor *t = sd_safetensors_at(pt, i);
        if (!sd_st_dtype_is_weight(t->dtype) || strcmp(t->name + skip_len, skip) == 0)
            continue;
        e[n] = (sd_st_entry){.name = t->name + skip_len, .dtype = SD_ST_F32, .ndim = t->ndim};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        r.t[n++] = t;
    }
    char *path = test_path(test_scratch_dir(), name);
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, n, NULL, fill, &r), SD_OK);
    sd_safetensors_close(pt);
    return path;
}

static void test_safetensors(void)
{
    char *path = write_safetensors("bae.safetensors", ""), *cut = write_safetensors("bae_cut.safetensors",
                                                                                    "decoder.out_conv_res1.6.bias");
    float *ref = test_read_golden("bae_normals.f32", sizeof(float) * 4 * H * W), *y = calloc(4 * H * W, sizeof *y);
    sd_safetensors *st = NULL;
    sd_normalbae *m = NULL;
    sd_normalbae_config c;
    sd_dtensor *dx = bae_input();
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    CHECK_EQ_INT(st ? sd_normalbae_inspect(ctx, st, &c) : SD_ERR_INVALID, SD_OK);
    CHECK_STR_EQ(c.prefix, "");
    CHECK_EQ_INT(st ? sd_normalbae_new(cl, st, &m) : SD_ERR_INVALID, SD_OK);
    CHECK_EQ_INT(m && dx ? sd_normalbae_forward(m, dx, y) : SD_ERR_INVALID, SD_OK);
    CHECK(ref && test_max_abs_diff(y, ref, 4 * H * W) <= 1e-4);
    sd_normalbae_free(m);
    sd_safetensors_close(st);
    st = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, cut, &st), SD_OK);
    CHECK_EQ_INT(st ? sd_normalbae_inspect(ctx, st, &c) : SD_OK, SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "bae_cut.safetensors: not a BAE normal network: tensor "
                                               "'decoder.out_conv_res1.6.bias' is missing");
    sd_safetensors_close(st);
    sd_dtensor_free(dx);
    free(ref), free(y), free(path), free(cut);
}

static void test_bad_input(void)
{
    sd_safetensors *st = aux_open_golden_net(ctx, "bae_tiny.pt");
    sd_normalbae *m = NULL;
    sd_dtensor *x = NULL;
    float out[4];
    CHECK_EQ_INT(sd_normalbae_new(cl, st, &m), SD_OK);
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 4, (const int64_t[]){1, 3, 48, 64}, &x), SD_OK);
    CHECK_EQ_INT(m ? sd_normalbae_forward(m, x, out) : SD_OK, SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(ctx), "BAE: input [1, 3, 48, 64] f32 is not [1, 3, H, W] with H, W multiples of 32");
    sd_dtensor_free(x);
    sd_normalbae_free(m);
    sd_safetensors_close(st);
}

static void test_not_bae(void)
{
    /* The HED test network is not a BAE network. */
    sd_safetensors *st = aux_open_golden_net(ctx, "hed_tiny.safetensors");
    sd_normalbae_config c;
    sd_normalbae *m = NULL;
    CHECK_EQ_INT(sd_normalbae_inspect(ctx, st, &c), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "hed_tiny.safetensors: not a BAE normal network: tensor "
                                               "'encoder.original_model.conv_stem.weight' is missing");
    CHECK_EQ_INT(sd_normalbae_new(cl, st, &m), SD_ERR_INVALID);
    CHECK(m == NULL);
    sd_safetensors_close(st);
}

int main(void)
{
    if (!(ctx = aux_net_context(&cl)))
        return 1;
    RUN(test_inspect);
    RUN(test_forward);
    RUN(test_safetensors);
    RUN(test_bad_input);
    RUN(test_not_bae);
    sd_context_free(ctx);
    return test_summary("test_normalbae");
}
