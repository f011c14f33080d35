/* The family descriptors. See family.h. Numbers are ComfyUI's (comfy/supported_models.py,
 * comfy/latent_formats.py, comfy/model_sampling.py) and the model cards'. */
#include "ml/families/family.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define UNET_PREFIX "model.diffusion_model."

/* ---- latent formats (comfy/latent_formats.py) ---- */

static const sd_latent_format latent_sd15 = {
    .name = "SD15", .channels = 4, .scale = 0.18215f,
    .rgb_factors = {{0.3512f, 0.2297f, 0.3227f}, {0.3250f, 0.4974f, 0.2350f}, {-0.2829f, 0.1762f, 0.2721f},
                    {-0.2120f, -0.2616f, -0.7177f}},
};

static const sd_latent_format latent_sdxl = {
    .name = "SDXL", .channels = 4, .scale = 0.13025f,
    .rgb_factors = {{0.3651f, 0.4232f, 0.4341f}, {-0.2533f, -0.0042f, 0.1068f}, {0.1076f, 0.1111f, -0.0362f},
                    {-0.3165f, -0.2492f, -0.2188f}},
    .rgb_bias = {0.1084f, -0.0175f, -0.0011f},
};

static const sd_latent_format latent_sd3 = {
    .name = "SD3", .channels = 16, .scale = 1.5305f, .shift = 0.0609f,
    .rgb_factors = {{-0.0922f, -0.0175f, 0.0749f}, {0.0311f, 0.0633f, 0.0954f}, {0.1994f, 0.0927f, 0.0458f},
                    {0.0856f, 0.0339f, 0.0902f}, {0.0587f, 0.0272f, -0.0496f}, {-0.0006f, 0.1104f, 0.0309f},
                    {0.0978f, 0.0306f, 0.0427f}, {-0.0042f, 0.1038f, 0.1358f}, {-0.0194f, 0.0020f, 0.0669f},
                    {-0.0488f, 0.0130f, -0.0268f}, {0.0922f, 0.0988f, 0.0951f}, {-0.0278f, 0.0524f, -0.0542f},
                    {0.0332f, 0.0456f, 0.0895f}, {-0.0069f, -0.0030f, -0.0810f}, {-0.0596f, -0.0465f, -0.0293f},
                    {-0.1448f, -0.1463f, -0.1189f}},
    .rgb_bias = {0.2394f, 0.2135f, 0.1925f},
};

static const sd_latent_format latent_flux = {
    .name = "Flux", .channels = 16, .scale = 0.3611f, .shift = 0.1159f,
    .rgb_factors = {{-0.0346f, 0.0244f, 0.0681f}, {0.0034f, 0.0210f, 0.0687f}, {0.0275f, -0.0668f, -0.0433f},
                    {-0.0174f, 0.0160f, 0.0617f}, {0.0859f, 0.0721f, 0.0329f}, {0.0004f, 0.0383f, 0.0115f},
                    {0.0405f, 0.0861f, 0.0915f}, {-0.0236f, -0.0185f, -0.0259f}, {-0.0245f, 0.0250f, 0.1180f},
                    {0.1008f, 0.0755f, -0.0421f}, {-0.0515f, 0.0201f, 0.0011f}, {0.0428f, -0.0012f, -0.0036f},
                    {0.0817f, 0.0765f, 0.0749f}, {-0.1264f, -0.0522f, -0.1103f}, {-0.0280f, -0.0881f, -0.0499f},
                    {-0.1262f, -0.0982f, -0.0778f}},
    .rgb_bias = {-0.0329f, -0.0718f, -0.0851f},
};

static const sd_latent_format *const latent_formats[] = {&latent_sd15, &latent_sdxl, &latent_sd3, &latent_flux};

/* ---- detection ---- */

static bool has_any_prefix(const sd_safetensors *st, const char *a, const char *b)
{
    return sd_safetensors_has_prefix(st, a) || sd_safetensors_has_prefix(st, b);
}

static bool detect_flux(const sd_safetensors *st)
{
    return has_any_prefix(st, UNET_PREFIX "double_blocks.", "double_blocks.");
}

static bool detect_sd3(const sd_safetensors *st)
{
    return has_any_prefix(st, UNET_PREFIX "joint_blocks.", "joint_blocks.");
}

/* conditioner.embedders.*, or an ADM UNet (label_emb) without SD2's OpenCLIP-H (SD2 unCLIP). */
static bool sdxl_layout(const sd_safetensors *st)
{
    return sd_safetensors_has_prefix(st, "conditioner.embedders.") ||
           (sd_safetensors_find(st, UNET_PREFIX "label_emb.0.0.weight") &&
            !sd_safetensors_has_prefix(st, "cond_stage_model.model."));
}

/* SD 2.1 unCLIP (sd21-unclip-h/l): an SD2 checkpoint whose UNet takes an ADM vector and which
 * carries the CLIP image tower (embedder.model.visual.*) and the noise augmentor's buffers (SDXL's
 * detection leaves files with SD2's text encoder to it; tried before SD2). */
static bool detect_sd2_unclip(const sd_safetensors *st)
{
    return sd_safetensors_has_prefix(st, "cond_stage_model.model.") &&
           (sd_safetensors_has_prefix(st, "embedder.") || sd_safetensors_has_prefix(st, "noise_augmentor."));
}

/* The refiner's conditioner has one embedder, OpenCLIP-G, at index 0. */
static bool detect_sdxl_refiner(const sd_safetensors *st)
{
    return sdxl_layout(st) && !sd_safetensors_has_prefix(st, "conditioner.embedders.1.") &&
           sd_safetensors_has_prefix(st, "conditioner.embedders.0.model.");
}

static bool detect_sdxl(const sd_safetensors *st)
{
    return sdxl_layout(st);
}

/* OpenCLIP-H text model, or (UNet-only files) 1024-wide cross-attention. */
static bool detect_sd2(const sd_safetensors *st)
{
    if (sd_safetensors_has_prefix(st, "cond_stage_model.model."))
        return true;
    const sd_st_tensor *k =
        sd_safetensors_find(st, UNET_PREFIX "middle_block.1.transformer_blocks.0.attn2.to_k.weight");
    return sd_safetensors_has_prefix(st, UNET_PREFIX "input_blocks.") && k && k->ndim == 2 && k->shape[1] == 1024;
}

/* ComfyUI's SD20.model_type: a 4-channel SD2 UNet whose output_blocks.11.1.transformer_blocks.0
 * norm1.bias has a population standard deviation above 0.09 is v-prediction (768-v); inpainting
 * UNets and files without that tensor are eps. Reads that one small tensor. */
static sd_status sd2_prediction(sd_context *ctx, const sd_safetensors *st, int unet_in_channels, sd_prediction *out)
{
    const sd_st_tensor *t =
        sd_safetensors_find(st, UNET_PREFIX "output_blocks.11.1.transformer_blocks.0.norm1.bias");
    *out = SD_PREDICT_EPS;
    if (unet_in_channels != 4 || !t || t->ndim != 1 || t->shape[0] < 1 || t->shape[0] > 65536)
        return SD_OK;
    size_t n = (size_t)t->shape[0];
    float *v = malloc(n * sizeof *v);
    if (!v)
        return sd_set_error(ctx, SD_ERR_NOMEM, "%s: out of memory", sd_safetensors_path(st));
    sd_status status = sd_safetensors_read_f32(ctx, st, t, v, n);
    double mean = 0, var = 0;
    for (size_t i = 0; !status && i < n; i++)
        mean += v[i];
    mean /= (double)n;
    for (size_t i = 0; !status && i < n; i++)
        var += (v[i] - mean) * (v[i] - mean);
    free(v);
    if (!status && sqrt(var / (double)n) > 0.09)
        *out = SD_PREDICT_V;
    return status;
}

static bool detect_sd1(const sd_safetensors *st)
{
    return sd_safetensors_has_prefix(st, UNET_PREFIX "input_blocks.");
}

static bool detect_vae(const sd_safetensors *st)
{
    return sd_safetensors_find(st, "encoder.conv_in.weight") && sd_safetensors_find(st, "decoder.conv_in.weight");
}

static bool detect_diffusers(const sd_safetensors *st)
{
    return sd_safetensors_has_prefix(st, "down_blocks.") || sd_safetensors_has_prefix(st, "encoder.down_blocks.") ||
           sd_safetensors_has_prefix(st, "time_embedding.");
}

/* ---- the descriptors, in detection order ---- */

#define DISCRETE(pred) {.timesteps = 1000, .beta_start = 0.00085, .beta_end = 0.012, .prediction = (pred)}

static const sd_family_desc families[] = {
    {.id = SD_FAMILY_FLUX, .name = "FLUX", .runnable = true, .lora = true, .checkpoint = true, .detect = detect_flux,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "vae.", .latent = &latent_flux,
     .schedule = {.prediction = SD_PREDICT_FLOW}, .n_text_encoders = 2,
     .text_encoders = {{SD_TEXT_CLIP_L, "text_encoders.clip_l.transformer.text_model.", -1, true},
                       {SD_TEXT_T5XXL, "text_encoders.t5xxl.transformer.encoder.", -1, false}},
     .context_dim = 4096, .adm_dim = 768, .default_width = 1024, .default_height = 1024},
    {.id = SD_FAMILY_SD3, .name = "SD3", .checkpoint = true, .detect = detect_sd3,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "first_stage_model.", .latent = &latent_sd3,
     .schedule = {.prediction = SD_PREDICT_FLOW}, .n_text_encoders = 3,
     .text_encoders = {{SD_TEXT_CLIP_L, "text_encoders.clip_l.transformer.text_model.", -2, true},
                       {SD_TEXT_OPENCLIP_G, "text_encoders.clip_g.transformer.text_model.", -2, true},
                       {SD_TEXT_T5XXL, "text_encoders.t5xxl.transformer.encoder.", -1, false}},
     .context_dim = 4096, .adm_dim = 2048, .default_width = 1024, .default_height = 1024},
    {.id = SD_FAMILY_SDXL_REFINER, .name = "SDXL refiner", .runnable = true, .checkpoint = true, .detect = detect_sdxl_refiner,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "first_stage_model.", .latent = &latent_sdxl,
     .schedule = DISCRETE(SD_PREDICT_EPS), .n_text_encoders = 1,
     .text_encoders = {{SD_TEXT_OPENCLIP_G, "conditioner.embedders.0.model.", -2, true, false}},
     .context_dim = 1280, .adm_dim = 2560, .adm = SD_ADM_SDXL_REFINER, .unet_head_channels = 64,
     .default_width = 1024, .default_height = 1024},
    {.id = SD_FAMILY_SDXL, .name = "SDXL", .runnable = true, .lora = true, .checkpoint = true, .detect = detect_sdxl,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "first_stage_model.", .latent = &latent_sdxl,
     .schedule = DISCRETE(SD_PREDICT_EPS), .n_text_encoders = 2,
     .text_encoders = {{SD_TEXT_CLIP_L, "conditioner.embedders.0.transformer.text_model.", -2, false, false},
                       {SD_TEXT_OPENCLIP_G, "conditioner.embedders.1.model.", -2, true, false}},
     .context_dim = 2048, .adm_dim = 2816, .adm = SD_ADM_SDXL, .unet_head_channels = 64,
     .default_width = 1024, .default_height = 1024},
    /* ComfyUI's SD21UnclipH / SD21UnclipL: SD20 (so v-prediction as SD2 tells it) with
     * adm_in_channels 2048 / 1536 and the noise augmentor of timestep_dim 1024 / 768 */
    {.id = SD_FAMILY_SD2_UNCLIP, .name = "SD2.x unCLIP", .runnable = true, .lora = true, .checkpoint = true,
     .detect = detect_sd2_unclip, .prediction = sd2_prediction,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "first_stage_model.", .latent = &latent_sd15,
     .schedule = DISCRETE(SD_PREDICT_EPS), .n_text_encoders = 1,
     .text_encoders = {{SD_TEXT_OPENCLIP_H, "cond_stage_model.model.", -2, false, true}},
     .context_dim = 1024, .adm_dim = 2048, .adm = SD_ADM_UNCLIP, .unet_head_channels = 64,
     .default_width = 768, .default_height = 768, .text_family = SD_FAMILY_SD2,
     .vision_prefix = "embedder.model.visual."},
    {.id = SD_FAMILY_SD2, .name = "SD2.x", .runnable = true, .lora = true, .checkpoint = true, .detect = detect_sd2,
     .prediction = sd2_prediction,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "first_stage_model.", .latent = &latent_sd15,
     .schedule = DISCRETE(SD_PREDICT_EPS), .n_text_encoders = 1,
     /* ComfyUI's SD2ClipHModel: penultimate layer, final LayerNorm applied (layer_norm_hidden_state) */
     .text_encoders = {{SD_TEXT_OPENCLIP_H, "cond_stage_model.model.", -2, false, true}},
     .context_dim = 1024, .unet_head_channels = 64, .default_width = 768, .default_height = 768},
    {.id = SD_FAMILY_SD1, .name = "SD1.x", .runnable = true, .lora = true, .checkpoint = true, .detect = detect_sd1,
     .unet_prefix = UNET_PREFIX, .vae_prefix = "first_stage_model.", .latent = &latent_sd15,
     .schedule = DISCRETE(SD_PREDICT_EPS), .n_text_encoders = 1,
     .text_encoders = {{SD_TEXT_CLIP_L, "cond_stage_model.transformer.text_model.", -1, false, true}},
     .context_dim = 768, .unet_num_heads = 8, .default_width = 512, .default_height = 512},
    {.id = SD_FAMILY_VAE, .name = "standalone VAE", .detect = detect_vae, .vae_prefix = ""},
    {.id = SD_FAMILY_DIFFUSERS, .name = "diffusers-format", .detect = detect_diffusers},
};

static const sd_family_desc unknown_family = {.id = SD_FAMILY_UNKNOWN, .name = "unknown"};

const sd_family_desc *sd_family_get(sd_family family)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (families[i].id == family)
            return &families[i];
    return &unknown_family;
}

const char *sd_text_encoder_name(sd_text_encoder_kind kind)
{
    switch (kind) {
    case SD_TEXT_CLIP_L: return "CLIP";
    case SD_TEXT_OPENCLIP_H: return "OpenCLIP-H";
    case SD_TEXT_OPENCLIP_G: return "OpenCLIP-bigG";
    case SD_TEXT_T5XXL: break;
    }
    return "T5-XXL";
}

const char *sd_family_name(sd_family family)
{
    return sd_family_get(family)->name;
}

sd_family sd_family_text(sd_family family)
{
    sd_family t = sd_family_get(family)->text_family;
    return t != SD_FAMILY_UNKNOWN ? t : family;
}

sd_family sd_family_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof families / sizeof families[0]; i++)
        if (!strcmp(families[i].name, name))
            return families[i].id;
    return SD_FAMILY_UNKNOWN;
}

sd_family sd_family_by_context_dim(int64_t width)
{
    /* Runnable UNet families only: FLUX and SD3 have no cross-attention context of their own, SD2
     * unCLIP shares SD2's. */
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (families[i].checkpoint && families[i].runnable && families[i].text_family == SD_FAMILY_UNKNOWN &&
            families[i].schedule.prediction != SD_PREDICT_FLOW && families[i].context_dim == width)
            return families[i].id;
    return SD_FAMILY_UNKNOWN;
}

sd_family sd_family_detect(const sd_safetensors *st)
{
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (families[i].detect(st))
            return families[i].id;
    return SD_FAMILY_UNKNOWN;
}

/* Joins the names of the families that `keep` accepts, oldest first ("SD1.x, SD2.x"), into buf. */
static const char *join_families(char *buf, size_t size, bool (*keep)(const sd_family_desc *, int), int arg)
{
    if (size)
        buf[0] = '\0';
    for (size_t i = sizeof families / sizeof families[0]; size && i-- > 0;)
        if (keep(&families[i], arg)) {
            if (buf[0])
                strncat(buf, ", ", size - strlen(buf) - 1);
            strncat(buf, families[i].name, size - strlen(buf) - 1);
        }
    return buf;
}

static bool is_runnable(const sd_family_desc *f, int unused)
{
    (void)unused;
    return f->runnable;
}

static bool takes_lora(const sd_family_desc *f, int unused)
{
    (void)unused;
    return f->lora;
}

static bool has_latent_channels(const sd_family_desc *f, int channels)
{
    return f->latent && f->latent->channels == channels;
}

const char *sd_family_runnable_list(char *buf, size_t size)
{
    return join_families(buf, size, is_runnable, 0);
}

const char *sd_family_lora_list(char *buf, size_t size)
{
    return join_families(buf, size, takes_lora, 0);
}

const char *sd_latent_channels_families(char *buf, size_t size, int channels)
{
    return join_families(buf, size, has_latent_channels, channels);
}

const sd_latent_format *sd_latent_format_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof latent_formats / sizeof latent_formats[0]; i++)
        if (!strcmp(latent_formats[i]->name, name))
            return latent_formats[i];
    return NULL;
}
