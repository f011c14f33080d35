/* Checkpoint inspection on tiny checkpoints written by the project's writer: config round
 * trips, SD1 layout facts, missing/misshapen tensors named, other families named. */
#include "test.h"
#include "ml/families/sd1_layout.h"
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static sd_context *ctx;

static char *scratch(const char *name)
{
    return test_path(test_scratch_dir(), name);
}

static void check_same_config(const sd_checkpoint_config *a, const sd_checkpoint_config *b)
{
    const sd_unet_config *u = &a->unet, *v = &b->unet;
    CHECK_EQ_INT(u->in_channels, v->in_channels);
    CHECK_EQ_INT(u->out_channels, v->out_channels);
    CHECK_EQ_INT(u->model_channels, v->model_channels);
    CHECK_EQ_INT(u->n_levels, v->n_levels);
    for (int l = 0; l < u->n_levels; l++) {
        CHECK_EQ_INT(u->channel_mult[l], v->channel_mult[l]);
        CHECK_EQ_INT(u->attention[l], v->attention[l]);
        CHECK_EQ_INT(u->depth[l], v->depth[l]);
    }
    CHECK_EQ_INT(u->middle_depth, v->middle_depth);
    CHECK_EQ_INT(u->adm_channels, v->adm_channels);
    CHECK_EQ_INT(u->num_res_blocks, v->num_res_blocks);
    CHECK_EQ_INT(u->context_dim, v->context_dim);
    CHECK_EQ_INT(u->time_embed_dim, v->time_embed_dim);
    CHECK_EQ_INT(u->linear_proj, v->linear_proj);
    CHECK_EQ_INT(u->num_heads, v->num_heads);
    CHECK_EQ_INT(u->head_channels, v->head_channels);
    CHECK_EQ_INT(u->norm_groups, 32);
    CHECK_EQ_INT(a->has_clip, b->has_clip);
    if (a->has_clip) {
        CHECK_EQ_INT(a->clip.width, b->clip.width);
        CHECK_EQ_INT(a->clip.layers, b->clip.layers);
        CHECK_EQ_INT(a->clip.intermediate, b->clip.intermediate);
        CHECK_EQ_INT(a->clip.vocab, b->clip.vocab);
        CHECK_EQ_INT(a->clip.positions, b->clip.positions);
        CHECK_EQ_INT(a->clip.heads, b->clip.width / 64);
        CHECK_EQ_INT(a->clip.has_position_ids, b->clip.has_position_ids);
    }
    CHECK_EQ_INT(a->has_vae, b->has_vae);
    if (a->has_vae) {
        const sd_vae_config *x = &a->vae, *y = &b->vae;
        CHECK_EQ_INT(x->ch, y->ch);
        CHECK_EQ_INT(x->n_levels, y->n_levels);
        for (int l = 0; l < x->n_levels; l++)
            CHECK_EQ_INT(x->ch_mult[l], y->ch_mult[l]);
        CHECK_EQ_INT(x->num_res_blocks, y->num_res_blocks);
        CHECK_EQ_INT(x->z_channels, y->z_channels);
        CHECK_EQ_INT(x->embed_dim, y->embed_dim);
        CHECK_EQ_INT(x->in_channels, 3);
        CHECK_EQ_INT(x->out_channels, 3);
        CHECK_EQ_INT(x->attn_linear, false);
        CHECK(x->scale_factor == 0.18215f);
    }
    CHECK_EQ_INT(a->schedule.timesteps, 1000);
    CHECK(a->schedule.beta_start == 0.00085 && a->schedule.beta_end == 0.012);
    CHECK_EQ_INT(a->schedule.prediction, SD_PREDICT_EPS);
}

/* Writes cfg, reopens it and inspects it; returns the status of inspection. */
static sd_status roundtrip(const char *name, const sd_checkpoint_config *cfg, sd_st_dtype dtype,
                           sd_checkpoint_config *got)
{
    char *p = scratch(name);
    sd_status st = sd_sd1_write_random(ctx, p, cfg, dtype, 42);
    CHECK_EQ_INT(st, SD_OK);
    sd_safetensors *f = NULL;
    if (!st)
        st = sd_safetensors_open(ctx, p, &f);
    CHECK_EQ_INT(st, SD_OK);
    if (!st)
        st = sd_checkpoint_inspect(ctx, f, got);
    if (!st)
        CHECK_EQ_INT(got->family, SD_FAMILY_SD1);
    sd_safetensors_close(f);
    free(p);
    return st;
}

static void test_tiny_roundtrip(void)
{
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    static const sd_st_dtype dtypes[3] = {SD_ST_F32, SD_ST_F16, SD_ST_BF16};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(roundtrip("tiny.safetensors", &cfg, dtypes[i], &got), SD_OK);
        check_same_config(&got, &cfg);
    }
}

static void test_variant_roundtrip(void)
{
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.unet.in_channels = 9; /* inpainting */
    cfg.unet.num_res_blocks = 2;
    cfg.unet.n_levels = 2;
    cfg.unet.channel_mult[1] = 3;
    cfg.unet.attention[0] = false;
    cfg.unet.attention[1] = true;
    sd_unet_config_set_depth(&cfg.unet, 2);
    cfg.unet.context_dim = cfg.clip.width = 128;
    cfg.clip.has_position_ids = false;
    cfg.has_vae = false;
    CHECK_EQ_INT(roundtrip("variant.safetensors", &cfg, SD_ST_F16, &got), SD_OK);
    check_same_config(&got, &cfg);
    CHECK_EQ_INT(got.clip.heads, 2);
}

static void test_old_clip_prefix(void)
{
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.clip_prefix = SD1_CLIP_PREFIX_OLD;
    cfg.has_vae = false;
    CHECK_EQ_INT(roundtrip("oldclip.safetensors", &cfg, SD_ST_F16, &got), SD_OK);
    CHECK(got.has_clip);
    CHECK_STR_EQ(got.clip_prefix, SD1_CLIP_PREFIX_OLD);
    check_same_config(&got, &cfg);
}

static void test_weights_deterministic(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_unet = cfg.has_vae = false; /* the CLIP part is enough here */
    char *a = scratch("a.safetensors"), *b = scratch("b.safetensors"), *c = scratch("c.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, a, &cfg, SD_ST_F32, 7), SD_OK);
    CHECK_EQ_INT(sd_sd1_write_random(ctx, b, &cfg, SD_ST_F32, 7), SD_OK);
    CHECK_EQ_INT(sd_sd1_write_random(ctx, c, &cfg, SD_ST_F32, 8), SD_OK);
    sd_safetensors *fa = NULL, *fb = NULL, *fc = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, a, &fa), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, b, &fb), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, c, &fc), SD_OK);
    if (fa && fb && fc) {
        const char *name = SD1_CLIP_PREFIX "encoder.layers.1.mlp.fc1.weight";
        const sd_st_tensor *ta = sd_safetensors_find(fa, name), *tb = sd_safetensors_find(fb, name),
                           *tc = sd_safetensors_find(fc, name);
        CHECK(ta && tb && tc && ta->nbytes == 256 * 64 * 4);
        if (ta && tb && tc) {
            unsigned char *ra = malloc(ta->nbytes), *rb = malloc(ta->nbytes), *rc = malloc(ta->nbytes);
            CHECK(sd_safetensors_read_raw(ctx, fa, ta, ra) == SD_OK && sd_safetensors_read_raw(ctx, fb, tb, rb) == SD_OK &&
                  sd_safetensors_read_raw(ctx, fc, tc, rc) == SD_OK);
            CHECK(memcmp(ra, rb, ta->nbytes) == 0);
            CHECK(memcmp(ra, rc, ta->nbytes) != 0);
            free(ra), free(rb), free(rc);
            float *w = malloc(ta->nbytes);
            CHECK_EQ_INT(sd_safetensors_read_f32(ctx, fa, ta, w, ta->numel), SD_OK);
            float lo = 0, hi = 0;
            for (size_t i = 0; i < ta->numel; i++)
                lo = w[i] < lo ? w[i] : lo, hi = w[i] > hi ? w[i] : hi;
            CHECK(lo >= -0.125f && hi <= 0.125f && hi - lo > 0.2f); /* uniform ±1/sqrt(64) */
            free(w);
        }
        const sd_st_tensor *ln = sd_safetensors_find(fa, SD1_CLIP_PREFIX "final_layer_norm.weight");
        float one[64];
        CHECK(ln && sd_safetensors_read_f32(ctx, fa, ln, one, 64) == SD_OK && one[0] == 1.0f && one[63] == 1.0f);
        const sd_st_tensor *ids = sd_safetensors_find(fa, SD1_CLIP_PREFIX "embeddings.position_ids");
        unsigned char raw[8 * 77];
        CHECK(ids && ids->dtype == SD_ST_I64 && ids->shape[1] == 77 && ids->nbytes == sizeof raw &&
              sd_safetensors_read_raw(ctx, fa, ids, raw) == SD_OK && raw[8 * 76] == 76);
    }
    sd_safetensors_close(fa);
    sd_safetensors_close(fb);
    sd_safetensors_close(fc);
    free(a), free(b), free(c);
}

static void test_sd15_layout(void)
{
    sd_checkpoint_config cfg;
    CHECK(sd_checkpoint_preset("sd15", &cfg));
    sd_layout l = {0};
    CHECK_EQ_INT(sd_layout_unet(ctx, &cfg.unet, SD1_UNET_PREFIX, &l), SD_OK);
    CHECK_EQ_INT(l.n, 686);
    CHECK_EQ_INT(sd_layout_vae(ctx, &cfg.vae, SD1_VAE_PREFIX, &l), SD_OK);
    CHECK_EQ_INT(sd_layout_clip(ctx, &cfg.clip, SD1_CLIP_PREFIX, &l), SD_OK);
    CHECK_EQ_INT(l.n, 1131); /* the tensor count of v1-5-pruned-emaonly.safetensors */
    static const struct {
        const char *name;
        int64_t shape[4];
    } known[] = {
        {SD1_UNET_PREFIX "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", {320, 768}},
        {SD1_UNET_PREFIX "input_blocks.4.0.skip_connection.weight", {640, 320, 1, 1}},
        {SD1_UNET_PREFIX "output_blocks.2.1.conv.weight", {1280, 1280, 3, 3}},
        {SD1_UNET_PREFIX "output_blocks.8.2.conv.weight", {640, 640, 3, 3}},
        {SD1_UNET_PREFIX "output_blocks.11.0.in_layers.0.weight", {640}},
        {SD1_UNET_PREFIX "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight", {10240, 1280}},
        {SD1_VAE_PREFIX "encoder.down.1.block.0.nin_shortcut.weight", {256, 128, 1, 1}},
        {SD1_VAE_PREFIX "decoder.up.0.block.0.nin_shortcut.weight", {128, 256, 1, 1}},
        {SD1_VAE_PREFIX "decoder.mid.attn_1.q.weight", {512, 512, 1, 1}},
        {SD1_VAE_PREFIX "quant_conv.weight", {8, 8, 1, 1}},
        {SD1_CLIP_PREFIX "embeddings.token_embedding.weight", {49408, 768}},
        {SD1_CLIP_PREFIX "encoder.layers.11.mlp.fc1.weight", {3072, 768}},
    };
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
        size_t i = 0;
        while (i < l.n && strcmp(l.entries[i].name, known[k].name) != 0)
            i++;
        CHECK_MSG(i < l.n, "missing %s", known[k].name);
        for (int d = 0; i < l.n && d < l.entries[i].ndim; d++)
            CHECK_EQ_INT(l.entries[i].shape[d], known[k].shape[d]);
    }
    sd_layout_free(&l);
}

/* Writes the tiny layout with tensor `drop` left out or `reshape` given a wrong shape. */
static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    memset(dst, 0, nbytes);
    return SD_OK;
}

static char *write_altered(const char *file, const char *drop, const char *reshape, const char *retype)
{
    sd_checkpoint_config cfg;
    sd_checkpoint_preset("tiny", &cfg);
    sd_layout l = {0};
    sd_layout_unet(ctx, &cfg.unet, SD1_UNET_PREFIX, &l);
    sd_layout_clip(ctx, &cfg.clip, SD1_CLIP_PREFIX, &l);
    sd_layout_vae(ctx, &cfg.vae, SD1_VAE_PREFIX, &l);
    sd_st_entry *e = calloc(l.n, sizeof *e);
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (drop && strcmp(l.entries[i].name, drop) == 0)
            continue;
        e[n] = (sd_st_entry){.name = l.entries[i].name, .dtype = SD_ST_F16, .ndim = l.entries[i].ndim};
        memcpy(e[n].shape, l.entries[i].shape, sizeof l.entries[i].shape);
        if (reshape && strcmp(l.entries[i].name, reshape) == 0)
            e[n].shape[0]++;
        if (retype && strcmp(l.entries[i].name, retype) == 0)
            e[n].dtype = SD_ST_I32;
        n++;
    }
    char *p = scratch(file);
    CHECK_EQ_INT(sd_safetensors_write(ctx, p, e, n, NULL, fill_zero, NULL), SD_OK);
    free(e);
    sd_layout_free(&l);
    return p;
}

static void expect_inspect_error(const char *path, const char *tail, bool vae)
{
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &f), SD_OK);
    if (!f)
        return;
    sd_checkpoint_config cfg;
    CHECK_EQ_INT(vae ? sd_vae_inspect(ctx, f, &cfg) : sd_checkpoint_inspect(ctx, f, &cfg), SD_ERR_INVALID);
    char want[1024];
    snprintf(want, sizeof want, "%s: %s", path, tail);
    CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    sd_safetensors_close(f);
}

static void test_missing_tensor(void)
{
    const char *name = SD1_UNET_PREFIX "output_blocks.3.1.transformer_blocks.0.attn2.to_v.weight";
    char *p = write_altered("missing.safetensors", name, NULL, NULL);
    expect_inspect_error(p, "missing tensor 'model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_v."
                            "weight' (SD1.x UNet)", false);
    free(p);
    p = write_altered("missing_vae.safetensors", SD1_VAE_PREFIX "decoder.up.2.upsample.conv.bias", NULL, NULL);
    expect_inspect_error(p, "missing tensor 'first_stage_model.decoder.up.2.upsample.conv.bias' (VAE)", false);
    free(p);
    p = write_altered("missing_clip.safetensors", SD1_CLIP_PREFIX "encoder.layers.1.self_attn.v_proj.bias", NULL,
                      NULL);
    expect_inspect_error(p, "missing tensor 'cond_stage_model.transformer.text_model.encoder.layers.1.self_attn.v_proj."
                            "bias' (SD1.x CLIP text model)", false);
    free(p);
    p = write_altered("reshaped.safetensors", NULL, SD1_UNET_PREFIX "middle_block.2.emb_layers.1.weight", NULL);
    expect_inspect_error(p, "tensor 'model.diffusion_model.middle_block.2.emb_layers.1.weight' has shape [65, 128], "
                            "expected [64, 128] (SD1.x UNet)", false);
    free(p);
    /* A nonfloat weight is named; position_ids may have any dtype and shape. */
    p = write_altered("i32.safetensors", NULL, NULL, SD1_UNET_PREFIX "out.0.bias");
    expect_inspect_error(p, "tensor 'model.diffusion_model.out.0.bias': dtype I32 is not a float type (F32, F16, BF16, F8_E4M3, F8_E5M2)",
                         false);
    free(p);
    p = write_altered("posids.safetensors", NULL, SD1_CLIP_PREFIX "embeddings.position_ids",
                      SD1_CLIP_PREFIX "embeddings.position_ids");
    sd_safetensors *g = NULL;
    sd_checkpoint_config c2;
    CHECK(sd_safetensors_open(ctx, p, &g) == SD_OK && sd_checkpoint_inspect(ctx, g, &c2) == SD_OK);
    CHECK(c2.clip.has_position_ids);
    sd_safetensors_close(g);
    free(p);
    /* An untouched copy passes. */
    p = write_altered("intact.safetensors", NULL, NULL, NULL);
    sd_safetensors *f = NULL;
    sd_checkpoint_config cfg;
    CHECK(sd_safetensors_open(ctx, p, &f) == SD_OK && sd_checkpoint_inspect(ctx, f, &cfg) == SD_OK);
    sd_safetensors_close(f);
    free(p);
}

static void test_other_families(void)
{
    static const struct {
        sd_family family;
        const char *file, *msg;
    } cases[] = {
        /* SDXL and SD2 stubs are detected and then read as such: their 2-D stand-in tensors are refused */
        {SD_FAMILY_SDXL, "sdxl.safetensors",
         "tensor 'model.diffusion_model.input_blocks.0.0.weight' has 2 dimensions, expected 4"},
        {SD_FAMILY_SDXL_REFINER, "refiner.safetensors",
         "tensor 'model.diffusion_model.input_blocks.0.0.weight' has 2 dimensions, expected 4"},
        {SD_FAMILY_SD2, "sd2.safetensors",
         "tensor 'model.diffusion_model.input_blocks.0.0.weight' has 2 dimensions, expected 4"},
        {SD_FAMILY_SD3, "sd3.safetensors", "SD3 checkpoint detected; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner, FLUX"},
        /* SD2 unCLIP has SDXL's label_emb: detected as itself, not read as SDXL */
        {SD_FAMILY_SD2_UNCLIP, "sd2-unclip.safetensors",
         "tensor 'model.diffusion_model.input_blocks.0.0.weight' has 2 dimensions, expected 4"},
        {SD_FAMILY_FLUX, "flux.safetensors", "tensor 'model.diffusion_model.img_in.weight' is missing (FLUX transformer)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *p = scratch(cases[i].file);
        CHECK_EQ_INT(sd_write_family_stub(ctx, p, cases[i].family), SD_OK);
        sd_safetensors *f = NULL;
        CHECK_EQ_INT(sd_safetensors_open(ctx, p, &f), SD_OK);
        if (f)
            CHECK_EQ_INT(sd_checkpoint_detect(f), cases[i].family);
        sd_safetensors_close(f);
        expect_inspect_error(p, cases[i].msg, false);
        free(p);
    }
    char *p = scratch("empty.safetensors");
    CHECK_EQ_INT(sd_safetensors_write(ctx, p, NULL, 0, NULL, fill_zero, NULL), SD_OK);
    expect_inspect_error(p, "not a Stable Diffusion checkpoint (no model.diffusion_model.* tensors)", false);
    expect_inspect_error(p, "no VAE tensors (encoder.* and decoder.*, or first_stage_model.*)", true);
    free(p);
}

static void test_standalone_vae(void)
{
    sd_checkpoint_config cfg, got;
    CHECK(sd_checkpoint_preset("tiny", &cfg));
    cfg.has_unet = cfg.has_clip = false;
    cfg.vae_prefix = "";
    char *p = scratch("vae.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, p, &cfg, SD_ST_F16, 3), SD_OK);
    sd_safetensors *f = NULL;
    CHECK_EQ_INT(sd_safetensors_open(ctx, p, &f), SD_OK);
    if (f) {
        CHECK_EQ_INT(sd_checkpoint_detect(f), SD_FAMILY_VAE);
        CHECK_EQ_INT(sd_vae_inspect(ctx, f, &got), SD_OK);
        CHECK_EQ_INT(got.family, SD_FAMILY_VAE);
        CHECK_STR_EQ(got.vae_prefix, "");
        CHECK(got.has_vae && !got.has_unet && !got.has_clip);
        CHECK_EQ_INT(got.vae.ch, 32);
        CHECK_EQ_INT(got.vae.n_levels, 4);
        CHECK_EQ_INT(got.vae.ch_mult[1], 2);
        CHECK_EQ_INT(got.vae.num_res_blocks, 1);
        CHECK(got.vae.scale_factor == 0.18215f);
    }
    sd_safetensors_close(f);
    expect_inspect_error(p, "standalone VAE file detected, not a checkpoint; load it with VAELoader", false);
    free(p);
    /* The VAE inside a full checkpoint. */
    sd_checkpoint_preset("tiny", &cfg);
    p = scratch("full.safetensors");
    CHECK_EQ_INT(sd_sd1_write_random(ctx, p, &cfg, SD_ST_F32, 3), SD_OK);
    f = NULL;
    CHECK(sd_safetensors_open(ctx, p, &f) == SD_OK && sd_vae_inspect(ctx, f, &got) == SD_OK);
    CHECK_STR_EQ(got.vae_prefix, SD1_VAE_PREFIX);
    CHECK_EQ_INT(got.vae.n_levels, 4);
    sd_safetensors_close(f);
    free(p);
}

/* Runs sdflow_mkckpt with args (stdout+stderr to out_file); returns its exit status or -1. */
static int run_tool(const char *args, const char *out_file)
{
    const char *build = getenv("SDFLOW_BUILD_DIR");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/sdflow_mkckpt' %s > '%s' 2>&1", build, args, out_file);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *path)
{
    static char buf[8192];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return buf;
}

static void test_tool(void)
{
    if (!getenv("SDFLOW_BUILD_DIR")) {
        fprintf(stderr, "  (SDFLOW_BUILD_DIR unset: run through ctest to test the tool)\n");
        return;
    }
    char *log = scratch("tool.log"), *ck = scratch("tool.safetensors"), *xl = scratch("tool_xl.safetensors");
    char args[1024];
    snprintf(args, sizeof args, "--preset tiny --dtype bf16 --seed 5 --channel-mult 1,2 --context 128 '%s'", ck);
    CHECK_EQ_INT(run_tool(args, log), 0);
    sd_safetensors *f = NULL;
    sd_checkpoint_config cfg;
    CHECK(sd_safetensors_open(ctx, ck, &f) == SD_OK && sd_checkpoint_inspect(ctx, f, &cfg) == SD_OK);
    if (f) {
        CHECK_EQ_INT(cfg.unet.n_levels, 2);
        CHECK(cfg.unet.attention[0] && !cfg.unet.attention[1]);
        CHECK_EQ_INT(cfg.unet.context_dim, 128);
        CHECK_EQ_INT(cfg.clip.width, 128);
        CHECK_STR_EQ(sd_safetensors_metadata(f, "sdflow.random_seed"), "5");
        const sd_st_tensor *t = sd_safetensors_find(f, SD1_UNET_PREFIX "out.2.weight");
        CHECK(t && t->dtype == SD_ST_BF16);
    }
    sd_safetensors_close(f);
    snprintf(args, sizeof args, "--inspect '%s'", ck);
    CHECK_EQ_INT(run_tool(args, log), 0);
    CHECK_STR_CONTAINS(slurp(log), "family=SD1.x\n");
    CHECK_STR_CONTAINS(slurp(log), "unet.channel_mult=1,2\nunet.attention=1,0\n");
    snprintf(args, sizeof args, "--kind sd3-stub '%s'", xl);
    CHECK_EQ_INT(run_tool(args, log), 0);
    snprintf(args, sizeof args, "--inspect '%s'", xl);
    CHECK_EQ_INT(run_tool(args, log), 3);
    char want[1024];
    snprintf(want, sizeof want, "sdflow_mkckpt: %s: SD3 checkpoint detected; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner, FLUX\n",
             xl);
    CHECK_STR_CONTAINS(slurp(log), want);
    CHECK_EQ_INT(run_tool("--dtype f8 x.safetensors", log), 2);
    CHECK_STR_EQ(slurp(log), "sdflow_mkckpt: bad or missing value for --dtype\n");
    free(log), free(ck), free(xl);
}

int main(void)
{
    if (sd_context_new(&ctx) != SD_OK)
        return 2;
    RUN(test_tiny_roundtrip);
    RUN(test_variant_roundtrip);
    RUN(test_old_clip_prefix);
    RUN(test_weights_deterministic);
    RUN(test_sd15_layout);
    RUN(test_missing_tensor);
    RUN(test_other_families);
    RUN(test_standalone_vae);
    RUN(test_tool);
    sd_context_free(ctx);
    return test_summary("test_checkpoint");
}
