/* BLIPCaption: a caption for each image from a BLIP captioning model (ml/vision/blip.h) in
 * models/blip, decoded with the BERT vocab.txt that the model's repository ships beside it
 * (ml/text/wordpiece.h). The same captioning serves CLIPInterrogate (nodes/interrogate.c). */
#include "nodes/blip_caption.h"
#include "core/files.h"
#include "ml/text/wordpiece.h"
#include "nodes/image_device.h"
#include "nodes/kept_model.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

#define VOCAB_MAX_BYTES (16u << 20)
#define KEPT_SLOT "nodes.blip"

/* The vocab.txt look-up: beside the model (its folder under models/blip), then models/blip. */
static void vocab_names(const char *model, char *beside, size_t size, const char *names[2])
{
    const char *slash = strrchr(model, '/');
    snprintf(beside, size, "%.*svocab.txt", slash ? (int)(slash - model + 1) : 0, model);
    names[0] = beside;
    names[1] = "vocab.txt";
}

sd_status sd_blip_declare_vocab(sd_node_files *f, const char *model_input)
{
    const char *model = sd_files_literal(f, model_input);
    char beside[1024];
    const char *names[2];
    vocab_names(model ? model : "", beside, sizeof beside, names);
    return sd_files_find(f, "blip", names, 2);
}

static sd_status make_blip(sd_cl *cl, const sd_safetensors *st, void **obj)
{
    return sd_blip_new(cl, st, SD_DTYPE_F32, (sd_blip **)obj);
}

static void free_blip(void *p)
{
    sd_blip_free(p);
}

typedef struct progress_state {
    sd_node_run *r;
    int image, images;
} progress_state;

static sd_status on_step(void *user, int step, int steps)
{
    const progress_state *p = user;
    return sd_run_progress(p->r, p->image * steps + step, p->images * steps);
}

/* The vocabulary found by the look-up sd_blip_declare_vocab declared. */
static sd_status read_vocab(sd_node_run *r, const char *model_input, sd_wordpiece **out)
{
    const char *model = sd_run_file(r, model_input), *path = NULL;
    const char *literal = sd_run_string(r, model_input);
    char beside[1024];
    const char *names[2];
    vocab_names(literal ? literal : "", beside, sizeof beside, names);
    sd_status st = sd_run_found_file(r, "blip", names, 2, &path);
    if (!st && !path)
        return sd_run_error(r, SD_ERR_NOT_FOUND,
                            "no vocab.txt beside %s or in models/blip (BLIP's decoder needs the BERT vocab.txt of the "
                            "model's repository)", model);
    char *text = NULL;
    size_t len = 0;
    if (!st)
        st = sd_file_read_text(sd_run_context(r), path, VOCAB_MAX_BYTES, &text, &len);
    if (!st)
        st = sd_wordpiece_parse(sd_run_context(r), path, text, len, out);
    free(text);
    return st ? sd_run_fail(r, st) : SD_OK;
}

sd_status sd_blip_caption_images(sd_node_run *r, const char *model_input, const sd_tensor *img,
                                 const sd_blip_generate_params *params, char ***captions)
{
    sd_context *ctx = sd_run_context(r);
    sd_wordpiece *vocab = NULL;
    sd_blip *m = NULL;
    sd_cl *cl = NULL;
    int64_t b = img->shape[0], h = img->shape[1], w = img->shape[2];
    *captions = NULL;
    sd_status st = read_vocab(r, model_input, &vocab);
    if (!st)
        st = sd_node_kept_model(r, KEPT_SLOT, sd_run_file(r, model_input), make_blip, free_blip, (void **)&m);
    if (!st && img->shape[3] != 3)
        st = sd_run_error(r, SD_ERR_INVALID, "BLIP captions RGB images; this one has %lld channels",
                          (long long)img->shape[3]);
    if (!st && (st = sd_cl_get(ctx, &cl)))
        st = sd_node_op_fail(r, st);
    sd_blip_generate_params p = *params;
    int sep = vocab ? sd_wordpiece_id(vocab, "[SEP]") : -1, dec = vocab ? sd_wordpiece_id(vocab, "[DEC]") : -1;
    p.eos = sep;
    p.bos = dec >= 0 ? dec : vocab ? sd_wordpiece_size(vocab) : 0; /* BLIP adds [DEC] right after the file */
    int size = m ? sd_blip_config_of(m)->image_size : 0;
    float *pixels = m ? malloc((size_t)3 * (size_t)size * (size_t)size * sizeof *pixels) : NULL;
    int32_t *ids = malloc((size_t)(p.max_length > 0 ? p.max_length : 1) * sizeof *ids);
    char **out = calloc((size_t)b, sizeof *out);
    if (!st && (!pixels || !ids || !out))
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; !st && i < b; i++) {
        sd_dtensor *features = NULL;
        progress_state ps = {r, (int)i, (int)b};
        int n = 0;
        st = sd_blip_preprocess(cl, img->data + (size_t)(i * h * w * 3), h, w, size, pixels);
        if (!st)
            st = sd_blip_encode_image(m, pixels, &features);
        if (!st)
            st = sd_blip_generate(m, features, &p, ids, &n, on_step, &ps);
        if (!st)
            st = sd_wordpiece_decode(ctx, vocab, ids, n, &out[i]);
        sd_dtensor_free(features);
        if (st && st != SD_ERR_INTERRUPTED)
            st = sd_node_op_fail(r, st);
    }
    free(pixels);
    free(ids);
    sd_wordpiece_free(vocab);
    if (st) {
        for (int64_t i = 0; out && i < b; i++)
            free(out[i]);
        free(out);
        return st;
    }
    *captions = out;
    return SD_OK;
}

sd_status sd_blip_read_params(sd_node_run *r, sd_blip_generate_params *p)
{
    *p = (sd_blip_generate_params){
        .num_beams = (int)sd_run_int(r, "num_beams"),
        .min_length = (int)sd_run_int(r, "min_tokens") + 1, /* transformers counts the start token */
        .max_length = (int)sd_run_int(r, "max_tokens") + 1,
        .repetition_penalty = (float)sd_run_float(r, "repetition_penalty"),
    };
    if (p->min_length > p->max_length)
        return sd_run_error(r, SD_ERR_INVALID, "min_tokens %d is above max_tokens %d", p->min_length - 1,
                            p->max_length - 1);
    return SD_OK;
}

static sd_status run_caption(sd_node_run *r)
{
    const sd_tensor *img = sd_node_image_tensor(r, "image");
    sd_blip_generate_params p;
    char **captions = NULL;
    if (!img)
        return SD_ERR_INVALID;
    sd_status st = sd_blip_read_params(r, &p);
    if (!st)
        st = sd_blip_caption_images(r, "model_name", img, &p, &captions);
    if (st)
        return st;
    size_t total = 1;
    for (int64_t i = 0; i < img->shape[0]; i++)
        total += strlen(captions[i]) + 1;
    char *joined = malloc(total), *w = joined;
    for (int64_t i = 0; joined && i < img->shape[0]; i++)
        w += sprintf(w, "%s%s", i ? "\n" : "", captions[i]);
    for (int64_t i = 0; i < img->shape[0]; i++)
        free(captions[i]);
    free(captions);
    sd_value *v = joined ? sd_value_string(SD_TYPE_STRING, joined) : NULL;
    free(joined);
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static sd_status caption_files(sd_node_files *f)
{
    return sd_blip_declare_vocab(f, "model_name");
}

static const sd_input_desc caption_in[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images to caption (one caption a line for a batch)"),
    SD_IN_FILE_NAME("model_name", "blip",
                    "BLIP captioning .safetensors in models/blip (transformers' BlipForConditionalGeneration, "
                    "blip-image-captioning-base or -large) with the repository's vocab.txt beside it"),
    SD_BLIP_PARAM_INPUTS,
};
static const sd_output_desc caption_out[] = {
    SD_OUT("STRING", SD_TYPE_STRING, "the captions, one a line"),
};
const sd_node_desc sd_node_BLIPCaption = {
    .name = "BLIPCaption", .version = 1, .category = "image/captioning",
    .doc = "Captions images with BLIP (greedy or beam search, as transformers' generate()).",
    .inputs = caption_in, .n_inputs = SD_COUNT(caption_in),
    .outputs = caption_out, .n_outputs = SD_COUNT(caption_out), .run = run_caption, .files = caption_files,
};
