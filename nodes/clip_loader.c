/* CLIPLoader and DualCLIPLoader (ComfyUI's nodes) and CLIPLoaderGGUF and DualCLIPLoaderGGUF
 * (ComfyUI-GGUF's): a CLIP value made of text-encoder files from models/text_encoders (or the
 * older models/clip), each file read as ml/text/text_encoder_file.h says (GGUF T5 files
 * included). The type says which family the encoders serve; as ComfyUI does, which file holds
 * which encoder is read from the files, so their order does not matter:
 *
 *   CLIPLoader stable_diffusion: CLIP-L (SD1.x), OpenCLIP-H (SD2.x) or OpenCLIP-bigG (SDXL refiner)
 *   DualCLIPLoader sdxl: CLIP-L + OpenCLIP-bigG; flux: CLIP-L + T5-XXL
 *
 * The other types ComfyUI lists are refused with one line naming the type. The check hook reads
 * the files' headers, so a file of the wrong kind is reported before anything runs. Weights are
 * stored as f16 (CheckpointLoaderSimple's default) and upload on first use. */
#include "nodes/family_check.h"
#include "nodes/model_handle.h"
#include "nodes/node_util.h"
#include <stdio.h>
#include <string.h>

#define MAX_FILES 2

/* ComfyUI's CLIPLoader and DualCLIPLoader type lists. */
static const char *const single_types[] = {
    "stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos", "lumina2",
    "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image", "flux2", "ovis", NULL};
static const char *const dual_types[] = {"sdxl", "sd3", "flux", "hunyuan_video", "hidream", NULL};
static const char *const devices[] = {"default", "cpu", NULL};

static const char *const file_inputs[MAX_FILES] = {"clip_name1", "clip_name2"};

/* One text encoder found in the files: file index and part. */
typedef struct found {
    int file, part;
    sd_text_encoder_kind kind;
    bool used;
} found;

/* The family a single CLIP-type file serves (SD_FAMILY_UNKNOWN for T5-XXL). */
static sd_family single_family(sd_text_encoder_kind kind)
{
    switch (kind) {
    case SD_TEXT_CLIP_L: return SD_FAMILY_SD1;
    case SD_TEXT_OPENCLIP_H: return SD_FAMILY_SD2;
    case SD_TEXT_OPENCLIP_G: return SD_FAMILY_SDXL_REFINER;
    case SD_TEXT_T5XXL: break;
    }
    return SD_FAMILY_UNKNOWN;
}

/* "CLIP-L" for messages (sd_text_encoder_name says "CLIP"). */
static const char *kind_name(sd_text_encoder_kind kind)
{
    return kind == SD_TEXT_CLIP_L ? "CLIP-L" : sd_text_encoder_name(kind);
}

/* Assigns the files' encoders to the slots of family (files[i] named by inputs[i]): slot k gets
 * the first unused encoder of its kind. false with a one-line message in msg when one is missing. */
static bool assign(sd_family family, const char *type, const sd_text_file *const *files, int n,
                   const char *const *inputs, int *file_of, int *part_of, char *msg, size_t size)
{
    found pool[MAX_FILES * SD_TEXT_FILE_MAX_PARTS];
    int np = 0;
    for (int i = 0; i < n; i++)
        for (int p = 0; p < sd_text_file_count(files[i]); p++)
            pool[np++] = (found){i, p, sd_text_file_part_at(files[i], p)->kind, false};
    const sd_family_desc *f = sd_family_get(family);
    bool ok = true;
    for (int k = 0; ok && k < f->n_text_encoders; k++) {
        int j = 0;
        while (j < np && (pool[j].used || pool[j].kind != f->text_encoders[k].kind))
            j++;
        if ((ok = j < np)) {
            pool[j].used = true;
            file_of[k] = pool[j].file;
            part_of[k] = pool[j].part;
        }
    }
    if (ok)
        return true;
    size_t at = (size_t)snprintf(msg, size, "type %s takes ", type);
    for (int k = 0; k < f->n_text_encoders && at < size; k++)
        at += (size_t)snprintf(msg + at, size - at, "%s%s", k ? " + " : "", kind_name(f->text_encoders[k].kind));
    for (int i = 0; i < n && at < size; i++) {
        char what[96];
        sd_text_file_describe(files[i], what, sizeof what);
        at += (size_t)snprintf(msg + at, size - at, "%s %s is %s", i ? "," : ";", inputs[i],
                               strcmp(what, "CLIP") == 0 ? "CLIP-L" : what);
    }
    if (n == 2 && at < size) {
        /* the type the files fit, if any */
        static const struct { const char *type; sd_family family; } others[] = {{"sdxl", SD_FAMILY_SDXL},
                                                                                {"flux", SD_FAMILY_FLUX}};
        for (size_t t = 0; t < sizeof others / sizeof *others; t++) {
            int fo[SD_FAMILY_MAX_TEXT_ENCODERS], po[SD_FAMILY_MAX_TEXT_ENCODERS];
            char ignored[8];
            if (strcmp(others[t].type, type) != 0 &&
                assign(others[t].family, others[t].type, files, n, inputs, fo, po, ignored, sizeof ignored)) {
                snprintf(msg + at, size - at, " (type %s fits them)", others[t].type);
                break;
            }
        }
    }
    return false;
}

/* The family of a loader's type for its files, or SD_FAMILY_UNKNOWN with msg set. */
static sd_family type_family(const char *type, const sd_text_file *const *files, int n,
                             const char *const *inputs, char *msg, size_t size)
{
    if (n == 1 && strcmp(type, "stable_diffusion") == 0) {
        const sd_text_file_part *p = sd_text_file_part_at(files[0], 0);
        sd_family f = sd_text_file_count(files[0]) == 1 ? single_family(p->kind) : SD_FAMILY_UNKNOWN;
        if (f == SD_FAMILY_UNKNOWN) {
            char what[96];
            snprintf(msg, size, "type stable_diffusion takes one CLIP-L, OpenCLIP-H or OpenCLIP-bigG text model; "
                     "%s is %s (FLUX's T5-XXL goes with CLIP-L into DualCLIPLoader type flux)", inputs[0],
                     sd_text_file_describe(files[0], what, sizeof what));
        }
        return f;
    }
    if (n == 2 && strcmp(type, "sdxl") == 0)
        return SD_FAMILY_SDXL;
    if (n == 2 && strcmp(type, "flux") == 0)
        return SD_FAMILY_FLUX;
    snprintf(msg, size, "type %s is not supported by sdflow (supported: %s)", type,
             n == 1 ? "stable_diffusion" : "sdxl, flux");
    return SD_FAMILY_UNKNOWN;
}

/* Which family the files serve under the node's type, and which encoder fills each slot; false
 * with msg set otherwise. */
static bool resolve(const char *type, const sd_text_file *const *files, int n,
                    const char *const *inputs, sd_family *family, int *file_of, int *part_of, char *msg, size_t size)
{
    *family = type_family(type, files, n, inputs, msg, size);
    return *family != SD_FAMILY_UNKNOWN && assign(*family, type, files, n, inputs, file_of, part_of, msg, size);
}

sd_status sd_node_clip_of_file(sd_context *ctx, const char *path, sd_family family, sd_dtype dtype, sd_value **out)
{
    *out = NULL;
    sd_loaded *l;
    sd_status st = sd_model_store_open(ctx, path, SD_MODEL_FILE_TEXT_ENCODERS, dtype, &l);
    if (st)
        return st;
    const sd_text_file *files[1] = {sd_loaded_text_file(l)};
    static const char *const inputs[1] = {"the checkpoint"};
    int file_of[SD_FAMILY_MAX_TEXT_ENCODERS] = {0}, part_of[SD_FAMILY_MAX_TEXT_ENCODERS] = {0};
    sd_loaded *slots[SD_FAMILY_MAX_TEXT_ENCODERS] = {l, l, l};
    char msg[512];
    if (!assign(family, sd_family_name(family), files, 1, inputs, file_of, part_of, msg, sizeof msg))
        st = sd_set_error(ctx, SD_ERR_INVALID, "%s: %s", path, msg);
    else if (!(*out = sd_node_clip_files_value(family, slots, part_of, sd_family_get(family)->text_encoders[0].layer)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    sd_loaded_unref(l);
    return st;
}

static const char *const single_input[1] = {"clip_name"};

static const char *const *input_names(int n)
{
    return n == 1 ? single_input : file_inputs;
}

/* The layer a CLIP of family starts at: the family's, but the last of an OpenCLIP-H file of 23
 * layers (diffusers' SD2 text encoders stop there; ComfyUI runs 23 of its 24 either way). */
static int start_layer(sd_family family, const sd_text_file *f, int part)
{
    const sd_text_file_part *p = sd_text_file_part_at(f, part);
    int layer = sd_family_get(family)->text_encoders[0].layer;
    return p->kind == SD_TEXT_OPENCLIP_H && p->clip.layers == 23 && layer == -2 ? -1 : layer;
}

static sd_status run_loader(sd_node_run *r, int n)
{
    const char *const *inputs = input_names(n);
    sd_loaded *l[MAX_FILES] = {NULL};
    const sd_text_file *files[MAX_FILES];
    sd_status st = SD_OK;
    for (int i = 0; i < n && !st; i++)
        if ((st = sd_model_store_open(sd_run_context(r), sd_run_file(r, inputs[i]), SD_MODEL_FILE_TEXT_ENCODERS,
                                      SD_DTYPE_F16, &l[i])))
            st = sd_node_model_fail(r, st);
        else
            files[i] = sd_loaded_text_file(l[i]);
    sd_family family;
    int file_of[SD_FAMILY_MAX_TEXT_ENCODERS] = {0}, part_of[SD_FAMILY_MAX_TEXT_ENCODERS] = {0};
    char msg[512];
    if (!st && !resolve(sd_run_string(r, "type"), files, n, inputs, &family, file_of, part_of,
                        msg, sizeof msg))
        st = sd_run_error(r, SD_ERR_INVALID, "%s", msg);
    if (!st) {
        sd_loaded *slots[SD_FAMILY_MAX_TEXT_ENCODERS] = {NULL};
        for (int k = 0; k < sd_family_get(family)->n_text_encoders; k++)
            slots[k] = l[file_of[k]];
        sd_value *v = sd_node_clip_files_value(family, slots, part_of, start_layer(family, files[file_of[0]], part_of[0]));
        if (v)
            sd_run_set_output(r, 0, v);
        else
            st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++)
        sd_loaded_unref(l[i]);
    return st;
}

static sd_status run_single(sd_node_run *r)
{
    return run_loader(r, 1);
}

static sd_status run_dual(sd_node_run *r)
{
    return run_loader(r, 2);
}

/* The check hook: the files' headers against the type; tags the CLIP with its family. */
static void check_loader(sd_node_check *c, int n)
{
    const char *const *inputs = input_names(n);
    sd_context *ctx = sd_check_context(c);
    sd_text_file *files[MAX_FILES] = {NULL};
    bool all = true;
    for (int i = 0; i < n; i++) {
        const char *path = sd_check_file(c, inputs[i]);
        sd_status st = path ? sd_text_file_open(ctx, path, &files[i]) : SD_ERR_NOT_FOUND;
        if (st == SD_ERR_INVALID)
            sd_check_problem(c, inputs[i], "%s", sd_context_errmsg(ctx));
        sd_clear_error(ctx);
        all &= files[i] != NULL;
    }
    const char *type = sd_check_literal(c, "type");
    sd_family family;
    int file_of[SD_FAMILY_MAX_TEXT_ENCODERS], part_of[SD_FAMILY_MAX_TEXT_ENCODERS];
    char msg[512];
    if (all && type) {
        if (!resolve(type, (const sd_text_file *const *)files, n, inputs, &family, file_of,
                     part_of, msg, sizeof msg))
            sd_check_problem(c, "type", "%s", msg);
        else
            sd_check_set_tag(c, 0, sd_family_name(family));
    }
    for (int i = 0; i < n; i++)
        sd_text_file_close(files[i]);
}

static void check_single(sd_node_check *c)
{
    check_loader(c, 1);
}

static void check_dual(sd_node_check *c)
{
    check_loader(c, 2);
}

#define CLIP_FILE(name, doc) SD_IN_FILE_NAME(name, "text_encoders", doc " in models/text_encoders or models/clip")
#define DEVICE_INPUT \
    SD_IN_ENUM("device", "default", devices, "ComfyUI's device choice; sdflow runs the text encoders on the context's device")

static const sd_input_desc single_in[] = {
    CLIP_FILE("clip_name", "text-encoder file: CLIP-L, OpenCLIP-H or OpenCLIP-bigG (.safetensors, .gguf)"),
    SD_IN_ENUM("type", "stable_diffusion", single_types,
               "what the encoder serves: stable_diffusion (CLIP-L: SD1.x, OpenCLIP-H: SD2.x, OpenCLIP-bigG: SDXL "
               "refiner); sdflow runs no other type"),
    DEVICE_INPUT,
};
static const sd_input_desc dual_in[] = {
    CLIP_FILE("clip_name1", "a text-encoder file (.safetensors, .gguf)"),
    CLIP_FILE("clip_name2", "the other text-encoder file (either order)"),
    SD_IN_ENUM("type", "sdxl", dual_types,
               "sdxl: CLIP-L + OpenCLIP-bigG (clip_l, clip_g); flux: CLIP-L + T5-XXL (clip_l, t5xxl); sdflow runs "
               "no other type"),
    DEVICE_INPUT,
};
static const sd_output_desc clip_out[] = {
    SD_OUT("CLIP", SD_TYPE_CLIP, "the text encoders, for the family the type and files give"),
};

const sd_node_desc sd_node_CLIPLoader = {
    .name = "CLIPLoader", .version = 1, .category = "advanced/loaders",
    .doc = "Opens one text-encoder file as a CLIP (its kind is read from the file); weights upload lazily.",
    .inputs = single_in, .n_inputs = SD_COUNT(single_in),
    .outputs = clip_out, .n_outputs = SD_COUNT(clip_out), .run = run_single, .check = check_single,
};

const sd_node_desc sd_node_DualCLIPLoader = {
    .name = "DualCLIPLoader", .version = 1, .category = "advanced/loaders",
    .doc = "Opens two text-encoder files as one CLIP (SDXL: clip_l + clip_g; FLUX: clip_l + t5xxl, in either order).",
    .inputs = dual_in, .n_inputs = SD_COUNT(dual_in),
    .outputs = clip_out, .n_outputs = SD_COUNT(clip_out), .run = run_dual, .check = check_dual,
};

/* ComfyUI-GGUF's loaders: the same with GGUF files (t5-v1_1-xxl-encoder-Q8_0.gguf and the like)
 * allowed, and no device input. */
static const sd_input_desc single_gguf_in[] = {
    CLIP_FILE("clip_name", "text-encoder file (.gguf or .safetensors)"),
    SD_IN_ENUM("type", "stable_diffusion", single_types, "as CLIPLoader's type"),
};
static const sd_input_desc dual_gguf_in[] = {
    CLIP_FILE("clip_name1", "a text-encoder file (.gguf or .safetensors)"),
    CLIP_FILE("clip_name2", "the other text-encoder file (either order)"),
    SD_IN_ENUM("type", "sdxl", dual_types, "as DualCLIPLoader's type (flux: CLIP-L + a T5-XXL GGUF)"),
};

const sd_node_desc sd_node_CLIPLoaderGGUF = {
    .name = "CLIPLoaderGGUF", .version = 1, .category = "bootleg",
    .doc = "ComfyUI-GGUF's CLIPLoader: one text-encoder file, GGUF or safetensors.",
    .inputs = single_gguf_in, .n_inputs = SD_COUNT(single_gguf_in),
    .outputs = clip_out, .n_outputs = SD_COUNT(clip_out), .run = run_single, .check = check_single,
};

const sd_node_desc sd_node_DualCLIPLoaderGGUF = {
    .name = "DualCLIPLoaderGGUF", .version = 1, .category = "bootleg",
    .doc = "ComfyUI-GGUF's DualCLIPLoader: two text-encoder files, GGUF or safetensors (FLUX: clip_l + a T5 GGUF).",
    .inputs = dual_gguf_in, .n_inputs = SD_COUNT(dual_gguf_in),
    .outputs = clip_out, .n_outputs = SD_COUNT(clip_out), .run = run_dual, .check = check_dual,
};
