/* sdflow_mkckpt: writes random-weight checkpoints in the single-file layouts (tests
 * and benchmarks), standalone VAE files, ControlNets (original or diffusers layout) and stub files of
 * other families (detection tests).
 * Deterministic: the same options and seed give the same bytes. */
#include "ml/adapters/controlnet.h"
#include "ml/families/sd1_layout.h"
#include "ml/formats/gguf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sdflow_mkckpt [options] OUTPUT.safetensors\n"
            "  --preset P             architecture preset (default tiny): tiny, sd15, sdxl-tiny, sdxl,\n"
            "                         sdxl-refiner-tiny, sdxl-refiner, sd2-tiny, sd2, and the\n"
            "                         v-prediction sd2-v-tiny, sd2-v, sd2-unclip-tiny, sd2-unclip-h,\n"
            "                         sd2-unclip-l (with the CLIP image tower), flux-schnell-tiny,\n"
            "                         flux-dev-tiny, flux-schnell, flux-dev (FLUX: ComfyUI's all-in-one\n"
            "                         layout without text encoders; the last two the 12B shapes)\n"
            "  --kind K               checkpoint (default), vae (standalone VAE file), controlnet\n"
            "                         (the preset's UNet encoder as a ControlNet, control_model.*),\n"
            "                         controlnet-diffusers (the same tensors in diffusers' layout),\n"
            "                         or a stub of another family: sd2-stub, sdxl-stub,\n"
            "                         sdxl-refiner-stub, sd3-stub, flux-stub, sd2-unclip-stub;\n"
            "                         FLUX Redux's files: siglip (sigclip_vision_patch14_384's shapes),\n"
            "                         siglip-tiny (144 wide = 2 heads of 72, 3 layers, MLP 96, patch 4,\n"
            "                         image 16), redux (1152 -> 4096), redux-tiny (144 -> the FLUX\n"
            "                         preset's context width)\n"
            "  --dtype f32|f16|bf16   weight dtype (default f32)\n"
            "  --dtype q4_0|q8_0      FLUX presets: the transformer alone as a GGUF file in ComfyUI-GGUF's\n"
            "                         layout (BFL names, general.architecture flux; matrices in the type,\n"
            "                         embedders and final layer F32/F16 as its quantizer keeps them),\n"
            "                         streamed: a 12B model is never held in memory\n"
            "  --seed N               weight seed (default 0)\n"
            "  --no-clip, --no-vae    leave a part out of a checkpoint\n"
            "  --list                 print each tensor's name and shape instead of writing\n"
            "  --inspect FILE         print the family and architecture sdflow reads from FILE\n"
            "UNet overrides: --in-channels N, --model-channels N, --channel-mult 1,2,4,4,\n"
            "  --attention 1,1,1,0, --res-blocks N, --depth N (every attention level and the middle),\n"
            "  --context N (SD1: also the CLIP width)\n"
            "CLIP overrides: --clip-layers N, --clip-intermediate N\n"
            "VAE overrides: --vae-ch N, --vae-mult 1,2,4,4, --vae-res-blocks N\n");
}

static bool parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

/* Parses "1,2,4,4" into at most SD_MAX_LEVELS values; returns the count or 0 on error. */
static int parse_list(const char *s, int lo, int hi, int *out)
{
    int n = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == SD_MAX_LEVELS || !parse_int(tok, lo, hi, &out[n]))
            return 0;
        n++;
    }
    return n;
}

/* The GGUF block type of FLUX's matrices (--dtype q4_0 / q8_0). */
static sd_ggml_type flux_block_type;

/* The type of one FLUX tensor as ComfyUI-GGUF's patched llama-quantize stores it: vectors F32;
 * img_in, the first layers of the time / vector / guidance embedders and final_layer.linear F32;
 * txt_in, the rest of those embedders and final_layer F16; other matrices in the block type. */
static int flux_gguf_type(const sd_layout_entry *e)
{
    static const char *const keep_f32[] = {"img_in.", "time_in.in_layer.", "vector_in.in_layer.",
                                           "guidance_in.in_layer.", "final_layer.linear."};
    static const char *const keep_f16[] = {"txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."};
    if (e->ndim == 1)
        return SD_GGML_F32;
    for (size_t i = 0; i < sizeof keep_f32 / sizeof *keep_f32; i++)
        if (strncmp(e->name, keep_f32[i], strlen(keep_f32[i])) == 0)
            return SD_GGML_F32;
    for (size_t i = 0; i < sizeof keep_f16 / sizeof *keep_f16; i++)
        if (strncmp(e->name, keep_f16[i], strlen(keep_f16[i])) == 0)
            return SD_GGML_F16;
    return flux_block_type;
}

/* The FLUX transformer of cfg alone (BFL names) as a GGUF file of flux_block_type matrices. */
static sd_status write_flux_gguf(sd_context *ctx, const char *path, const sd_checkpoint_config *cfg,
                                 unsigned long long seed)
{
    sd_layout layout = {0};
    sd_status st = sd_layout_flux(ctx, &cfg->flux, "", &layout);
    if (!st)
        st = sd_layout_write_random_gguf(ctx, path, &layout, "flux", flux_block_type == SD_GGML_Q4_0 ? 2 : 7,
                                         flux_gguf_type, seed, NULL, NULL);
    sd_layout_free(&layout);
    return st;
}

/* Prints "name [d0, d1, ...]" for every tensor of the layout. */
static void print_layout(const sd_layout *layout)
{
    for (size_t i = 0; i < layout->n; i++) {
        const sd_layout_entry *e = &layout->entries[i];
        printf("%s [", e->name);
        for (int d = 0; d < e->ndim; d++)
            printf("%s%lld", d ? ", " : "", (long long)e->shape[d]);
        printf("]\n");
    }
}

/* The preset's layout (vae_only: its VAE alone), printed. */
static sd_status list_layout(sd_context *ctx, sd_checkpoint_config *cfg, bool vae_only)
{
    sd_layout layout = {0};
    sd_status st = SD_OK;
    if (vae_only) {
        cfg->has_unet = cfg->has_clip = cfg->has_vision = false;
        cfg->vae_prefix = "";
    }
    if ((st = sd_layout_checkpoint(ctx, cfg, &layout)))
        goto done;
    print_layout(&layout);
done:
    sd_layout_free(&layout);
    return st;
}

static void print_levels(const char *key, const int *v, const bool *b, int n)
{
    printf("%s=", key);
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? "," : "", v ? v[i] : b[i]);
    printf("\n");
}

/* Prints what sd_checkpoint_inspect (or sd_vae_inspect for VAE files) reads from path. */
static sd_status inspect_file(sd_context *ctx, const char *path)
{
    sd_safetensors *st = NULL;
    sd_checkpoint_config cfg;
    sd_status status = sd_safetensors_open(ctx, path, &st);
    if (status)
        return status;
    printf("tensors=%zu\n", sd_safetensors_count(st));
    if (sd_checkpoint_detect(st) == SD_FAMILY_VAE)
        status = sd_vae_inspect(ctx, st, &cfg);
    else
        status = sd_checkpoint_inspect(ctx, st, &cfg);
    if (!status) {
        printf("family=%s\n", sd_family_name(cfg.family));
        if (cfg.has_unet && cfg.family == SD_FAMILY_FLUX) {
            const sd_flux_config *f = &cfg.flux;
            printf("prediction=flow\nflux.hidden=%d\nflux.heads=%d\nflux.head_dim=%d\nflux.mlp_hidden=%d\n"
                   "flux.depth=%d\nflux.depth_single=%d\nflux.context_dim=%d\nflux.vec_dim=%d\nflux.guidance=%d\n",
                   f->hidden, f->heads, f->head_dim, f->mlp_hidden, f->depth, f->depth_single, f->context_dim,
                   f->vec_dim, f->guidance);
        } else if (cfg.has_unet) {
            static const char *const predictions[] = {"eps", "v_prediction", "flow"};
            printf("prediction=%s\n", predictions[cfg.schedule.prediction]);
            const sd_unet_config *u = &cfg.unet;
            printf("unet.in_channels=%d\nunet.out_channels=%d\nunet.model_channels=%d\n", u->in_channels,
                   u->out_channels, u->model_channels);
            print_levels("unet.channel_mult", u->channel_mult, NULL, u->n_levels);
            print_levels("unet.attention", NULL, u->attention, u->n_levels);
            print_levels("unet.depth", u->depth, NULL, u->n_levels);
            printf("unet.middle_depth=%d\nunet.num_res_blocks=%d\nunet.context_dim=%d\nunet.adm_channels=%d\n",
                   u->middle_depth, u->num_res_blocks, u->context_dim, u->adm_channels);
            printf("unet.linear_proj=%d\nunet.num_heads=%d\nunet.head_channels=%d\n", u->linear_proj, u->num_heads,
                   u->head_channels);
        }
        for (int k = 0; cfg.has_clip && k < (cfg.clip2_prefix ? 2 : 1); k++) {
            const sd_clip_config *c = k ? &cfg.clip2 : &cfg.clip;
            const char *name = k ? "clip2" : "clip";
            printf("%s.layout=%s\n%s.width=%d\n%s.layers=%d\n%s.heads=%d\n%s.intermediate=%d\n%s.vocab=%d\n"
                   "%s.positions=%d\n%s.projection=%d\n",
                   name, c->open_clip ? "open_clip" : "transformers", name, c->width, name, c->layers, name, c->heads,
                   name, c->intermediate, name, c->vocab, name, c->positions, name, c->projection);
        }
        if (cfg.has_vision)
            printf("vision.prefix=%s\nvision.width=%d\nvision.layers=%d\nvision.patch=%d\nvision.image_size=%d\n"
                   "vision.projection=%d\n", cfg.vision.prefix, cfg.vision.width, cfg.vision.layers, cfg.vision.patch,
                   cfg.vision.image_size, cfg.vision.projection);
        if (cfg.has_vae) {
            printf("vae.prefix=%s\nvae.ch=%d\n", cfg.vae_prefix, cfg.vae.ch);
            print_levels("vae.ch_mult", cfg.vae.ch_mult, NULL, cfg.vae.n_levels);
            printf("vae.num_res_blocks=%d\nvae.z_channels=%d\nvae.quant_conv=%d\nvae.scale_factor=%g\n",
                   cfg.vae.num_res_blocks, cfg.vae.z_channels, !cfg.vae.no_quant_conv, cfg.vae.scale_factor);
        }
    }
    sd_safetensors_close(st);
    return status;
}

/* The FLUX Redux kinds (siglip, siglip-tiny, redux, redux-tiny) into *layout; false for another
 * kind. */
static bool redux_layout(sd_context *ctx, const char *kind, const sd_checkpoint_config *cfg, sd_layout *layout,
                         sd_status *st)
{
    static const sd_siglip_shape so400m = {1152, 27, 4304, 14, 384}, tiny = {144, 3, 96, 4, 16};
    if (strcmp(kind, "siglip") == 0 || strcmp(kind, "siglip-tiny") == 0)
        *st = sd_layout_siglip(ctx, kind[6] ? &tiny : &so400m, "vision_model.", layout);
    else if (strcmp(kind, "redux") == 0)
        *st = sd_layout_redux(ctx, so400m.width, 4096, layout);
    else if (strcmp(kind, "redux-tiny") == 0)
        *st = cfg->family == SD_FAMILY_FLUX ? sd_layout_redux(ctx, tiny.width, cfg->flux.context_dim, layout)
                                           : sd_set_error(ctx, SD_ERR_INVALID, "--kind redux-tiny needs a FLUX preset "
                                                          "(its context width)");
    else
        return false;
    return true;
}

int main(int argc, char **argv)
{
    const char *preset = "tiny", *kind = "checkpoint", *out = NULL;
    sd_st_dtype dtype = SD_ST_F32;
    unsigned long long seed = 0;
    sd_checkpoint_config cfg;
    /* The preset first, so that overrides apply on top of it whatever their order. */
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--preset") == 0)
            preset = argv[++i];
    if (!sd_checkpoint_preset(preset, &cfg)) {
        fprintf(stderr,
                "sdflow_mkckpt: unknown preset '%s' (tiny, sd15, sdxl-tiny, sdxl, sdxl-refiner-tiny, sdxl-refiner, "
                "sd2-tiny, sd2, sd2-v-tiny, sd2-v, sd2-unclip-tiny, sd2-unclip-h, sd2-unclip-l, flux-schnell-tiny, "
                "flux-dev-tiny, flux-schnell, flux-dev)\n",
                preset);
        return 2;
    }
    sd_unet_config *u = &cfg.unet;
    sd_clip_config *c = &cfg.clip;
    sd_vae_config *v = &cfg.vae;
    bool list = false;
    const char *inspect = NULL;
    int mult_n = 0, attn_n = 0, attn[SD_MAX_LEVELS] = {0}, depth = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true, takes = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--no-clip") == 0) {
            cfg.has_clip = false, takes = false;
        } else if (strcmp(a, "--no-vae") == 0) {
            cfg.has_vae = false, takes = false;
        } else if (strcmp(a, "--list") == 0) {
            list = true, takes = false;
        } else if (a[0] != '-' || !a[1]) {
            if (out) {
                usage(stderr);
                return 2;
            }
            out = a, takes = false;
        } else if (!val) {
            ok = false;
        } else if (strcmp(a, "--preset") == 0) {
        } else if (strcmp(a, "--inspect") == 0) {
            inspect = val;
        } else if (strcmp(a, "--kind") == 0) {
            kind = val;
        } else if (strcmp(a, "--dtype") == 0) {
            if (strcmp(val, "f32") == 0)
                dtype = SD_ST_F32;
            else if (strcmp(val, "f16") == 0)
                dtype = SD_ST_F16;
            else if (strcmp(val, "bf16") == 0)
                dtype = SD_ST_BF16;
            else if (strcmp(val, "q4_0") == 0)
                flux_block_type = SD_GGML_Q4_0;
            else if (strcmp(val, "q8_0") == 0)
                flux_block_type = SD_GGML_Q8_0;
            else
                ok = false;
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            seed = strtoull(val, &end, 10);
            ok = *val && !*end;
        } else if (strcmp(a, "--in-channels") == 0) {
            ok = parse_int(val, 1, 64, &u->in_channels);
        } else if (strcmp(a, "--model-channels") == 0) {
            ok = parse_int(val, 1, 4096, &u->model_channels);
        } else if (strcmp(a, "--channel-mult") == 0) {
            ok = (mult_n = parse_list(val, 1, 64, u->channel_mult)) > 0;
        } else if (strcmp(a, "--attention") == 0) {
            ok = (attn_n = parse_list(val, 0, 1, attn)) > 0;
        } else if (strcmp(a, "--res-blocks") == 0) {
            ok = parse_int(val, 1, 16, &u->num_res_blocks);
        } else if (strcmp(a, "--depth") == 0) {
            ok = parse_int(val, 1, 16, &depth);
        } else if (strcmp(a, "--context") == 0) {
            ok = parse_int(val, 64, 8192, &u->context_dim);
            c->width = u->context_dim;
        } else if (strcmp(a, "--clip-layers") == 0) {
            ok = parse_int(val, 1, 64, &c->layers);
        } else if (strcmp(a, "--clip-intermediate") == 0) {
            ok = parse_int(val, 1, 65536, &c->intermediate);
        } else if (strcmp(a, "--vae-ch") == 0) {
            ok = parse_int(val, 1, 4096, &v->ch);
        } else if (strcmp(a, "--vae-mult") == 0) {
            ok = (v->n_levels = parse_list(val, 1, 64, v->ch_mult)) > 0;
        } else if (strcmp(a, "--vae-res-blocks") == 0) {
            ok = parse_int(val, 1, 16, &v->num_res_blocks);
        } else {
            fprintf(stderr, "sdflow_mkckpt: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "sdflow_mkckpt: bad or missing value for %s\n", a);
            return 2;
        }
        if (takes)
            i++;
    }
    if (!out && !list && !inspect) {
        usage(stderr);
        return 2;
    }
    if (mult_n) {
        u->n_levels = mult_n;
        if (!attn_n)
            for (int l = 0; l < mult_n; l++)
                u->attention[l] = l < mult_n - 1;
    }
    if (attn_n) {
        if (attn_n != u->n_levels) {
            fprintf(stderr, "sdflow_mkckpt: --attention needs %d values (one per level)\n", u->n_levels);
            return 2;
        }
        for (int l = 0; l < attn_n; l++)
            u->attention[l] = attn[l] != 0;
    }
    if (mult_n || attn_n || depth)
        sd_unet_config_set_depth(u, depth ? depth : u->middle_depth);
    u->time_embed_dim = 4 * u->model_channels;
    sd_prediction prediction = cfg.schedule.prediction; /* the preset's (sd2-v: v) */
    sd_checkpoint_apply_family_rules(&cfg);
    cfg.schedule.prediction = prediction;

    sd_context *ctx;
    if (sd_context_new(&ctx)) {
        fprintf(stderr, "sdflow_mkckpt: out of memory\n");
        return 4;
    }
    sd_status st;
    static const struct {
        const char *name;
        sd_family family;
    } stubs[] = {{"sd2-stub", SD_FAMILY_SD2}, {"sdxl-stub", SD_FAMILY_SDXL},
                 {"sdxl-refiner-stub", SD_FAMILY_SDXL_REFINER}, {"sd3-stub", SD_FAMILY_SD3},
                 {"sd2-unclip-stub", SD_FAMILY_SD2_UNCLIP},
                 {"flux-stub", SD_FAMILY_FLUX}};
    size_t s = 0;
    while (s < sizeof stubs / sizeof stubs[0] && strcmp(kind, stubs[s].name) != 0)
        s++;
    sd_layout redux = {0};
    if (inspect) {
        st = inspect_file(ctx, inspect);
    } else if (redux_layout(ctx, kind, &cfg, &redux, &st)) {
        if (!st && list)
            print_layout(&redux);
        else if (!st)
            st = sd_layout_write_random(ctx, out, &redux, dtype, seed, NULL, NULL);
    } else if (list) {
        st = list_layout(ctx, &cfg, strcmp(kind, "vae") == 0);
    } else if (flux_block_type && (strcmp(kind, "checkpoint") != 0 || cfg.family != SD_FAMILY_FLUX)) {
        fprintf(stderr, "sdflow_mkckpt: --dtype q4_0 / q8_0 writes a FLUX preset's transformer (--kind checkpoint)\n");
        sd_context_free(ctx);
        return 2;
    } else if (flux_block_type) {
        st = write_flux_gguf(ctx, out, &cfg, seed);
    } else if (strcmp(kind, "checkpoint") == 0) {
        st = sd_sd1_write_random(ctx, out, &cfg, dtype, seed);
    } else if (strcmp(kind, "vae") == 0) {
        cfg.has_unet = cfg.has_clip = cfg.has_vision = false;
        cfg.has_vae = true;
        cfg.vae_prefix = "";
        st = sd_sd1_write_random(ctx, out, &cfg, dtype, seed);
    } else if (strcmp(kind, "controlnet") == 0 || strcmp(kind, "controlnet-diffusers") == 0) {
        st = sd_controlnet_write_random(ctx, out, &cfg.unet, strcmp(kind, "controlnet-diffusers") == 0, dtype, seed);
    } else if (s < sizeof stubs / sizeof stubs[0]) {
        st = sd_write_family_stub(ctx, out, stubs[s].family);
    } else {
        fprintf(stderr, "sdflow_mkckpt: unknown kind '%s'\n", kind);
        sd_context_free(ctx);
        return 2;
    }
    sd_layout_free(&redux);
    if (st)
        fprintf(stderr, "sdflow_mkckpt: %s\n", sd_context_errmsg(ctx));
    sd_context_free(ctx);
    return sd_status_exit_code(st);
}
