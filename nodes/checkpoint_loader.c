/* CheckpointLoaderSimple, unCLIPCheckpointLoader, UNETLoader and VAELoader (ComfyUI's nodes of the same names): open a model file
 * from the models directories. Opening is cheap; weights upload when a node first uses them
 * (ml/loading/model_store.h), and a file already open in this context is reused. */
#include "nodes/model_handle.h"
#include "nodes/clip_vision.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include <string.h>

/* The device storage of weights: "fp16" (default; half the memory) or "fp32". The computation
 * is in the run's precision either way (a MODEL's: ModelComputeDtype's; docs/precision.md). */
static const char *const weight_dtypes[] = {"fp16", "fp32", NULL};
#define WEIGHT_DTYPE_INPUT \
    SD_IN_ENUM("weight_dtype", "fp16", weight_dtypes, "device storage of the weights: fp16 (half the memory) or fp32")

static sd_dtype weight_dtype(sd_node_run *r)
{
    return strcmp(sd_run_string(r, "weight_dtype"), "fp32") == 0 ? SD_DTYPE_F32 : SD_DTYPE_F16;
}

/* Outputs 0..2 (MODEL, CLIP, VAE) of the checkpoint on ckpt_name; *family: its family. */
static sd_status open_checkpoint(sd_node_run *r, sd_family *family)
{
    sd_loaded *l;
    sd_status st = sd_model_store_open(sd_run_context(r), sd_run_file(r, "ckpt_name"), SD_MODEL_FILE_CHECKPOINT,
                                       weight_dtype(r), &l);
    if (st)
        return sd_node_model_fail(r, st);
    /* The CLIP starts at the family's context layer (SDXL: the penultimate, as ComfyUI). */
    const sd_family_desc *f = sd_family_get(sd_loaded_config(l)->family);
    int layer = f->text_encoders[0].layer;
    *family = f->id;
    sd_value *model = sd_node_model_value(SD_TYPE_MODEL, l, -1);
    sd_value *clip = NULL;
    /* T5 (FLUX's all-in-one files): the text encoders as DualCLIPLoader reads them; a file
     * without them gets the checkpoint's handle, which names what is missing when used */
    for (int k = 0; k < f->n_text_encoders && !clip; k++)
        if (f->text_encoders[k].kind == SD_TEXT_T5XXL &&
            sd_node_clip_of_file(sd_run_context(r), sd_run_file(r, "ckpt_name"), f->id, weight_dtype(r), &clip))
            sd_clear_error(sd_run_context(r));
    if (!clip)
        clip = sd_node_model_value(SD_TYPE_CLIP, l, layer);
    sd_value *vae = sd_node_model_value(SD_TYPE_VAE, l, -1);
    sd_loaded_unref(l);
    if (!model || !clip || !vae) {
        sd_value_unref(model);
        sd_value_unref(clip);
        sd_value_unref(vae);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    sd_run_set_output(r, 0, model);
    sd_run_set_output(r, 1, clip);
    sd_run_set_output(r, 2, vae);
    return SD_OK;
}

static sd_status run_checkpoint(sd_node_run *r)
{
    sd_family family;
    return open_checkpoint(r, &family);
}

static const sd_input_desc ckpt_in[] = {
    SD_IN_FILE_NAME("ckpt_name", "checkpoints",
                    "SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner or FLUX single-file checkpoint in models/checkpoints"
                    " (an absolute path needs --allow-absolute-paths)"),
    WEIGHT_DTYPE_INPUT,
};
static const sd_output_desc ckpt_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the denoising UNet"),
    SD_OUT("CLIP", SD_TYPE_CLIP, "the text encoders (SD2: OpenCLIP-H; SDXL: CLIP-L and OpenCLIP-bigG; refiner: OpenCLIP-bigG)"),
    SD_OUT("VAE", SD_TYPE_VAE, "the VAE that maps latents to images and back"),
};
const sd_node_desc sd_node_CheckpointLoaderSimple = {
    .name = "CheckpointLoaderSimple", .version = 1, .category = "loaders",
    .doc = "Opens an SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner or FLUX checkpoint (the family is detected); "
           "weights upload lazily when a node first uses them.",
    .inputs = ckpt_in, .n_inputs = SD_COUNT(ckpt_in),
    .outputs = ckpt_out, .n_outputs = SD_COUNT(ckpt_out), .run = run_checkpoint,
    .check = sd_check_checkpoint_loader,
};

/* ComfyUI's unCLIPCheckpointLoader (load_checkpoint_guess_config with output_clipvision): the
 * checkpoint's MODEL, CLIP and VAE as CheckpointLoaderSimple gives them, and its CLIP image tower
 * (embedder.model.visual.*: ViT-H/14 in sd21-unclip-h, ViT-L/14 in -l). */
static sd_status run_unclip_checkpoint(sd_node_run *r)
{
    sd_family family;
    sd_status st = open_checkpoint(r, &family);
    if (st)
        return st;
    const char *path = sd_run_file(r, "ckpt_name");
    const char *prefix = sd_family_get(family)->vision_prefix;
    sd_clip_vision_handle *h = NULL;
    if (!prefix)
        return sd_run_error(r, SD_ERR_INVALID, "%s: no CLIP image tower (embedder.model.visual.*) in this %s "
                            "checkpoint; load it with CheckpointLoaderSimple", path, sd_family_name(family));
    if ((st = sd_clip_vision_handle_open_at(sd_run_context(r), path, prefix, &h)))
        return sd_run_fail(r, st);
    sd_value *v = sd_value_handle(SD_TYPE_CLIP_VISION, h, sd_clip_vision_handle_free); /* frees h on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 3, v);
    return SD_OK;
}

static const sd_input_desc unclip_ckpt_in[] = {
    SD_IN_FILE_NAME("ckpt_name", "checkpoints",
                    "SD2.x unCLIP single-file checkpoint (sd21-unclip-h / -l, .safetensors or .ckpt) in "
                    "models/checkpoints (an absolute path needs --allow-absolute-paths)"),
    WEIGHT_DTYPE_INPUT,
};
static const sd_output_desc unclip_ckpt_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the denoising UNet (its ADM input takes unCLIPConditioning's image embeddings)"),
    SD_OUT("CLIP", SD_TYPE_CLIP, "the text encoder (OpenCLIP-H, as SD2.x)"),
    SD_OUT("VAE", SD_TYPE_VAE, "the VAE that maps latents to images and back"),
    SD_OUT("CLIP_VISION", SD_TYPE_CLIP_VISION, "the checkpoint's CLIP image tower (ViT-H/14 or ViT-L/14) for "
           "CLIPVisionEncode"),
};
const sd_node_desc sd_node_unCLIPCheckpointLoader = {
    .name = "unCLIPCheckpointLoader", .version = 1, .category = "loaders",
    .doc = "Opens an SD2.x unCLIP checkpoint: MODEL, CLIP and VAE as CheckpointLoaderSimple, and the CLIP vision "
           "encoder stored in it.",
    .inputs = unclip_ckpt_in, .n_inputs = SD_COUNT(unclip_ckpt_in),
    .outputs = unclip_ckpt_out, .n_outputs = SD_COUNT(unclip_ckpt_out), .run = run_unclip_checkpoint,
    .check = sd_check_unclip_checkpoint_loader,
};

/* Opens the file of `input` as kind and outputs one handle of type. */
static sd_status run_single(sd_node_run *r, const char *input, sd_model_file_kind kind, sd_dtype dtype, sd_type type)
{
    sd_loaded *l;
    sd_status st = sd_model_store_open(sd_run_context(r), sd_run_file(r, input), kind, dtype, &l);
    if (st)
        return sd_node_model_fail(r, st);
    sd_value *v = sd_node_model_value(type, l, -1);
    sd_loaded_unref(l);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static sd_status run_vae(sd_node_run *r)
{
    return run_single(r, "vae_name", SD_MODEL_FILE_VAE, weight_dtype(r), SD_TYPE_VAE);
}

static const sd_input_desc vae_in[] = {
    SD_IN_FILE_NAME("vae_name", "vae",
                    "VAE .safetensors (encoder.*/decoder.* keys, or a full checkpoint) in models/vae"),
    WEIGHT_DTYPE_INPUT,
};
static const sd_output_desc vae_out[] = {
    SD_OUT("VAE", SD_TYPE_VAE, "the VAE"),
};
const sd_node_desc sd_node_VAELoader = {
    .name = "VAELoader", .version = 1, .category = "loaders",
    .doc = "Opens a standalone VAE file (e.g. vae-ft-mse-840000); weights upload lazily.",
    .inputs = vae_in, .n_inputs = SD_COUNT(vae_in),
    .outputs = vae_out, .n_outputs = SD_COUNT(vae_out), .run = run_vae,
    .check = sd_check_vae_loader,
};

/* ComfyUI's UNETLoader weight_dtype choices, a storage dtype there as here; sdflow stores weights in
 * f16 or f32 only, so "default" and the fp8 choices store f16 (the computation is in the run's
 * precision, or ModelComputeDtype's, either way). */
static const char *const unet_dtypes[] = {"default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2", "fp32", NULL};

static sd_status run_unet(sd_node_run *r)
{
    return run_single(r, "unet_name", SD_MODEL_FILE_UNET, weight_dtype(r), SD_TYPE_MODEL);
}

static const sd_input_desc unet_in[] = {
    SD_IN_FILE_NAME("unet_name", "diffusion_models",
                    "SD1.x, SD2.x, SDXL, SDXL refiner or FLUX diffusion model alone (.safetensors in bf16, f16, f32, "
                    "fp8 e4m3fn or e5m2; tensors with or without model.diffusion_model.; FLUX also .gguf) in "
                    "models/diffusion_models or models/unet"),
    SD_IN_ENUM("weight_dtype", "default", unet_dtypes,
               "device storage of the weights: fp32, else fp16 (sdflow has no fp8 storage: fp8 files are "
               "widened to f16 at upload)"),
};
static const sd_output_desc unet_out[] = {
    SD_OUT("MODEL", SD_TYPE_MODEL, "the denoising UNet"),
};
const sd_node_desc sd_node_UNETLoader = {
    .name = "UNETLoader", .version = 1, .category = "loaders",
    .doc = "Opens a bare diffusion-model file (the family is read from its shapes); weights upload lazily.",
    .inputs = unet_in, .n_inputs = SD_COUNT(unet_in),
    .outputs = unet_out, .n_outputs = SD_COUNT(unet_out), .run = run_unet,
    .check = sd_check_unet_loader,
};

static sd_status run_unet_gguf(sd_node_run *r)
{
    return run_single(r, "unet_name", SD_MODEL_FILE_UNET, SD_DTYPE_F16, SD_TYPE_MODEL);
}

static const sd_input_desc unet_gguf_in[] = {
    SD_IN_FILE_NAME("unet_name", "diffusion_models",
                    "FLUX diffusion model as GGUF (ComfyUI-GGUF's or stable-diffusion.cpp's converter: Q8_0, Q4_0, "
                    "Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, F16, BF16, F32 tensors) in models/diffusion_models or "
                    "models/unet"),
};
const sd_node_desc sd_node_UnetLoaderGGUF = {
    .name = "UnetLoaderGGUF", .version = 1, .category = "bootleg",
    .doc = "Opens a GGUF diffusion model (ComfyUI-GGUF's node); block-quantised tensors are expanded to f16 on "
           "the device when first used.",
    .inputs = unet_gguf_in, .n_inputs = SD_COUNT(unet_gguf_in),
    .outputs = unet_out, .n_outputs = SD_COUNT(unet_out), .run = run_unet_gguf,
    .check = sd_check_unet_loader,
};
