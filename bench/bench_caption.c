/* bench_caption: seconds and peak memory of image-to-text work on random models with the
 * published shapes (written to a temporary file, F16, unless --model names a real one). Not a
 * test: it prints figures, never fails on time.
 *
 *   bench_caption blip [--preset large|base] [--tokens N] [--beams N] [--model FILE]
 *     one BLIP caption: the vision tower on a 384x384 image, then greedy or beam decoding to
 *     --tokens tokens (random weights never end a caption early);
 *   bench_caption interrogate [--labels N] [--model FILE]
 *     the CLIP interrogator with ViT-L/14 (openai/clip-vit-large-patch14's shapes): label
 *     features per second (the first N built-in flavours, default 2048; the one-time cost of
 *     the 111,867 built-in labels follows), one chain step of best mode (2048 prompts of about
 *     40 tokens), and a whole fast and classic interrogation of a 512x512 image with every
 *     built-in table's features in memory (as once they are cached).
 *
 * docs/benchmarks.md records results with the exact command. */
#include "ml/families/sd1_layout.h"
#include "core/embedded.h"
#include "ml/vision/blip.h"
#include "ml/vision/clip_pair.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static void push(sd_layout *l, sd_param_kind kind, int64_t fan_in, int ndim, const int64_t *shape, const char *fmt,
                 int i)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->entries = realloc(l->entries, l->cap * sizeof *l->entries);
        if (!l->entries)
            exit(1);
    }
    sd_layout_entry *e = &l->entries[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, fmt, i);
    e->ndim = ndim;
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->kind = kind;
    e->fan_in = fan_in;
}

static void linear(sd_layout *l, int64_t out, int64_t in, const char *fmt, int i)
{
    char w[160], b[160];
    snprintf(w, sizeof w, "%s.weight", fmt);
    snprintf(b, sizeof b, "%s.bias", fmt);
    push(l, SD_PARAM_WEIGHT, in, 2, (int64_t[]){out, in}, w, i);
    push(l, SD_PARAM_BIAS, in, 1, (int64_t[]){out}, b, i);
}

static void norm(sd_layout *l, int64_t n, const char *fmt, int i)
{
    char w[160], b[160];
    snprintf(w, sizeof w, "%s.weight", fmt);
    snprintf(b, sizeof b, "%s.bias", fmt);
    push(l, SD_PARAM_NORM_WEIGHT, 0, 1, (int64_t[]){n}, w, i);
    push(l, SD_PARAM_NORM_BIAS, 0, 1, (int64_t[]){n}, b, i);
}

/* BlipForConditionalGeneration's tensors for a vision tower of width vw, vl layers. */
static void blip_layout(sd_layout *l, int64_t vw, int vl)
{
    const int64_t tw = 768, ff = 3072, vocab = 30524, grid = 24;
    push(l, SD_PARAM_WEIGHT, 3 * 16 * 16, 4, (int64_t[]){vw, 3, 16, 16}, "vision_model.embeddings.patch_embedding.weight", 0);
    push(l, SD_PARAM_BIAS, 3 * 16 * 16, 1, (int64_t[]){vw}, "vision_model.embeddings.patch_embedding.bias", 0);
    push(l, SD_PARAM_EMBEDDING, 0, 3, (int64_t[]){1, 1, vw}, "vision_model.embeddings.class_embedding", 0);
    push(l, SD_PARAM_EMBEDDING, 0, 3, (int64_t[]){1, grid * grid + 1, vw}, "vision_model.embeddings.position_embedding", 0);
    for (int i = 0; i < vl; i++) {
        norm(l, vw, "vision_model.encoder.layers.%d.layer_norm1", i);
        norm(l, vw, "vision_model.encoder.layers.%d.layer_norm2", i);
        linear(l, 3 * vw, vw, "vision_model.encoder.layers.%d.self_attn.qkv", i);
        linear(l, vw, vw, "vision_model.encoder.layers.%d.self_attn.projection", i);
        linear(l, 4 * vw, vw, "vision_model.encoder.layers.%d.mlp.fc1", i);
        linear(l, vw, 4 * vw, "vision_model.encoder.layers.%d.mlp.fc2", i);
    }
    norm(l, vw, "vision_model.post_layernorm", 0);
    push(l, SD_PARAM_EMBEDDING, 0, 2, (int64_t[]){vocab, tw}, "text_decoder.bert.embeddings.word_embeddings.weight", 0);
    push(l, SD_PARAM_EMBEDDING, 0, 2, (int64_t[]){512, tw}, "text_decoder.bert.embeddings.position_embeddings.weight", 0);
    norm(l, tw, "text_decoder.bert.embeddings.LayerNorm", 0);
    for (int i = 0; i < 12; i++) {
        static const char *const a[2] = {"attention", "crossattention"};
        for (int k = 0; k < 2; k++) {
            char f[160];
            snprintf(f, sizeof f, "text_decoder.bert.encoder.layer.%%d.%s.self.query", a[k]);
            linear(l, tw, tw, f, i);
            snprintf(f, sizeof f, "text_decoder.bert.encoder.layer.%%d.%s.self.key", a[k]);
            linear(l, tw, k ? vw : tw, f, i);
            snprintf(f, sizeof f, "text_decoder.bert.encoder.layer.%%d.%s.self.value", a[k]);
            linear(l, tw, k ? vw : tw, f, i);
            snprintf(f, sizeof f, "text_decoder.bert.encoder.layer.%%d.%s.output.dense", a[k]);
            linear(l, tw, tw, f, i);
            snprintf(f, sizeof f, "text_decoder.bert.encoder.layer.%%d.%s.output.LayerNorm", a[k]);
            norm(l, tw, f, i);
        }
        linear(l, ff, tw, "text_decoder.bert.encoder.layer.%d.intermediate.dense", i);
        linear(l, tw, ff, "text_decoder.bert.encoder.layer.%d.output.dense", i);
        norm(l, tw, "text_decoder.bert.encoder.layer.%d.output.LayerNorm", i);
    }
    linear(l, tw, tw, "text_decoder.cls.predictions.transform.dense", 0);
    norm(l, tw, "text_decoder.cls.predictions.transform.LayerNorm", 0);
    push(l, SD_PARAM_BIAS, tw, 1, (int64_t[]){vocab}, "text_decoder.cls.predictions.bias", 0);
}

static int bench_blip(int argc, char **argv)
{
    const char *model = NULL, *preset = "large";
    int tokens = 32, beams = 1;
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--tokens")) tokens = atoi(v);
        else if (!strcmp(a, "--beams")) beams = atoi(v);
        else if (!strcmp(a, "--model")) model = v;
        else {
            bool help = !strcmp(a, "--help") || !strcmp(a, "-h");
            fprintf(help ? stdout : stderr, "usage: bench_caption blip [--preset large|base] [--tokens N] [--beams N] [--model FILE]\n");
            return help ? 0 : 2;
        }
    }
    sd_context *ctx = NULL;
    sd_safetensors *st = NULL;
    sd_blip *m = NULL;
    sd_cl *cl = NULL;
    sd_dtensor *img = NULL;
    float *pixels = NULL;
    int32_t *ids = NULL;
    char tmp[] = "/tmp/bench_caption_XXXXXX";
    int rc = 1;
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    if (!model) {
        sd_layout l = {0};
        bool large = !strcmp(preset, "large");
        blip_layout(&l, large ? 1024 : 768, large ? 24 : 12);
        int fd = mkstemp(tmp);
        if (fd < 0)
            goto done;
        close(fd);
        double t = now();
        sd_status s = sd_layout_write_random(ctx, tmp, &l, SD_ST_F16, 1, NULL, NULL);
        sd_layout_free(&l);
        if (s)
            goto fail;
        printf("random BLIP-%s written in %.1f s\n", preset, now() - t);
        model = tmp;
    }
    if (sd_safetensors_open(ctx, model, &st) || sd_cl_get(ctx, &cl) || sd_blip_new(cl, st, SD_DTYPE_F32, &m))
        goto fail;
    const sd_blip_config *c = sd_blip_config_of(m);
    size_t n = (size_t)3 * (size_t)c->image_size * (size_t)c->image_size;
    pixels = malloc(n * sizeof *pixels);
    ids = malloc((size_t)(tokens + 1) * sizeof *ids);
    if (!pixels || !ids)
        goto done;
    for (size_t i = 0; i < n; i++)
        pixels[i] = (float)((i * 2654435761u) % 1000u) / 500.0f - 1.0f;
    printf("BLIP: vision %d wide, %d layers, %dx%d; decoder %d wide, %d layers; device: %s\n", c->vis_width,
           c->vis_layers, c->image_size, c->image_size, c->txt_width, c->txt_layers, cl->device_name);
    for (int rep = 0; rep < 2; rep++) {
        double t0 = now();
        if (sd_blip_encode_image(m, pixels, &img))
            goto fail;
        float *features = malloc(img->numel * sizeof *features);
        sd_status waited = features ? sd_dtensor_download(img, features) : SD_ERR_NOMEM;
        free(features);
        if (waited)
            goto fail;
        double t1 = now(); /* the download waited for the vision tower */
        sd_blip_generate_params p = {.num_beams = beams, .max_length = tokens + 1, .repetition_penalty = 1,
                                     .bos = c->vocab - 2, .eos = 102};
        int got = 0;
        if (sd_blip_generate(m, img, &p, ids, &got, NULL, NULL))
            goto fail;
        double t2 = now();
        printf("%s: vision %.2f s, %d tokens (%d beams) %.2f s, total %.2f s; peak RSS %.0f MiB\n",
               rep ? "second run" : "first run (uploads, kernel builds)", t1 - t0, got - 1, beams, t2 - t1, t2 - t0,
               peak_rss_mib());
        sd_dtensor_free(img);
        img = NULL;
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_caption: %s\n", sd_context_errmsg(ctx));
done:
    free(pixels);
    free(ids);
    sd_dtensor_free(img);
    sd_blip_free(m);
    sd_safetensors_close(st);
    sd_context_free(ctx);
    if (!strcmp(model ? model : "", tmp))
        unlink(tmp);
    return rc;
}

/* openai/clip-vit-large-patch14's tensors in transformers' CLIPModel layout. */
static sd_status clip_layout(sd_context *ctx, sd_layout *l)
{
    const int64_t w = 1024, tw = 768, proj = 768;
    sd_clip_config text = {.width = 768, .layers = 12, .intermediate = 3072, .vocab = 49408, .positions = 77,
                           .heads = 12};
    sd_status s = sd_layout_clip(ctx, &text, "text_model.", l);
    if (s)
        return s;
    push(l, SD_PARAM_WEIGHT, tw, 2, (int64_t[]){proj, tw}, "text_projection.weight", 0);
    push(l, SD_PARAM_EMBEDDING, 0, 1, (int64_t[]){w}, "vision_model.embeddings.class_embedding", 0);
    push(l, SD_PARAM_WEIGHT, 3 * 14 * 14, 4, (int64_t[]){w, 3, 14, 14}, "vision_model.embeddings.patch_embedding.weight", 0);
    push(l, SD_PARAM_EMBEDDING, 0, 2, (int64_t[]){257, w}, "vision_model.embeddings.position_embedding.weight", 0);
    norm(l, w, "vision_model.pre_layrnorm", 0);
    for (int i = 0; i < 24; i++) {
        norm(l, w, "vision_model.encoder.layers.%d.layer_norm1", i);
        norm(l, w, "vision_model.encoder.layers.%d.layer_norm2", i);
        linear(l, w, w, "vision_model.encoder.layers.%d.self_attn.q_proj", i);
        linear(l, w, w, "vision_model.encoder.layers.%d.self_attn.k_proj", i);
        linear(l, w, w, "vision_model.encoder.layers.%d.self_attn.v_proj", i);
        linear(l, w, w, "vision_model.encoder.layers.%d.self_attn.out_proj", i);
        linear(l, 4 * w, w, "vision_model.encoder.layers.%d.mlp.fc1", i);
        linear(l, w, 4 * w, "vision_model.encoder.layers.%d.mlp.fc2", i);
    }
    norm(l, w, "vision_model.post_layernorm", 0);
    push(l, SD_PARAM_WEIGHT, w, 2, (int64_t[]){proj, w}, "visual_projection.weight", 0);
    return SD_OK;
}

/* The built-in table `name` (trendings: built in code) with random unit features. */
static sd_status builtin_table(sd_context *ctx, int index, int dim, sd_label_table *t)
{
    snprintf(t->name, sizeof t->name, "%s", sd_label_table_names[index]);
    sd_status s = SD_OK;
    if (index == SD_TABLE_TRENDINGS) {
        s = sd_label_table_trendings(ctx, t);
    } else {
        char gz[96], *text = NULL;
        size_t len = 0;
        snprintf(gz, sizeof gz, "%.63s.txt.gz", t->name);
        s = sd_embedded_gunzip(ctx, gz, "label table", &text, &len);
        if (!s)
            s = sd_label_table_add_lines(ctx, t, text, len, index == SD_TABLE_ARTISTS ? "by " : "");
        if (!s && index == SD_TABLE_ARTISTS)
            s = sd_label_table_add_lines(ctx, t, text, len, "inspired by ");
        free(text);
    }
    if (!s && !(t->embeds = malloc((size_t)t->n * (size_t)dim * sizeof *t->embeds)))
        s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (int i = 0; !s && i < t->n; i++) {
        float *e = t->embeds + (size_t)i * (size_t)dim, norm2 = 0;
        for (int k = 0; k < dim; k++) {
            e[k] = (float)(((unsigned)(i * 7919 + k * 104729) % 2001u) / 1000.0 - 1.0);
            norm2 += e[k] * e[k];
        }
        for (int k = 0; k < dim; k++)
            e[k] /= sqrtf(norm2);
    }
    return s;
}

static int bench_interrogate(int argc, char **argv)
{
    const char *model = NULL;
    int labels = 2048;
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--labels")) labels = atoi(v);
        else if (!strcmp(a, "--model")) model = v;
        else {
            bool help = !strcmp(a, "--help") || !strcmp(a, "-h");
            fprintf(help ? stdout : stderr, "usage: bench_caption interrogate [--labels N] [--model FILE]\n");
            return help ? 0 : 2;
        }
    }
    sd_context *ctx = NULL;
    sd_safetensors *st = NULL;
    sd_clip_pair *p = NULL;
    sd_cl *cl = NULL;
    sd_label_table tables[SD_TABLE_NAMED];
    memset(tables, 0, sizeof tables);
    char tmp[] = "/tmp/bench_caption_XXXXXX", **prompts = NULL;
    float *out = NULL, *pixels = NULL, *rgb = NULL, img[768];
    int rc = 1;
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    if (!model) {
        sd_layout l = {0};
        int fd = mkstemp(tmp);
        if (fd < 0)
            goto done;
        close(fd);
        double t = now();
        sd_status s = clip_layout(ctx, &l);
        if (!s)
            s = sd_layout_write_random(ctx, tmp, &l, SD_ST_F16, 1, NULL, NULL);
        sd_layout_free(&l);
        if (s)
            goto fail;
        printf("random CLIP ViT-L/14 written in %.1f s\n", now() - t);
        model = tmp;
    }
    if (sd_safetensors_open(ctx, model, &st) || sd_cl_get(ctx, &cl) || sd_clip_pair_new(cl, st, &p))
        goto fail;
    int dim = sd_clip_pair_dim(p);
    printf("CLIP: features %d; device: %s\n", dim, cl->device_name);
    for (int t = 0; t < SD_TABLE_NAMED; t++)
        if (builtin_table(ctx, t, dim, &tables[t]))
            goto fail;
    int total = 0;
    for (int t = 0; t < SD_TABLE_NAMED; t++)
        total += tables[t].n;
    /* label features: the first `labels` flavours */
    if (labels > tables[SD_TABLE_FLAVORS].n)
        labels = tables[SD_TABLE_FLAVORS].n;
    if (!(out = malloc((size_t)labels * (size_t)dim * sizeof *out)))
        goto done;
    double t0 = now();
    if (sd_clip_pair_text_features(p, (const char *const *)tables[SD_TABLE_FLAVORS].labels, labels, out))
        goto fail;
    double per = (now() - t0) / labels;
    printf("label features: %d labels in %.1f s (%.1f labels/s, first use included); %d built-in labels: about "
           "%.0f s\n", labels, per * labels, 1.0 / per, total, per * total);
    /* one chain step: 2048 prompts of about 40 tokens */
    if (!(prompts = calloc(2048, sizeof *prompts)))
        goto done;
    for (int i = 0; i < 2048; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "a photograph of a lighthouse on a rocky cliff at dusk, highly detailed, "
                                  "dramatic lighting, oil painting, %s", tables[SD_TABLE_FLAVORS].labels[i % labels]);
        if (!(prompts[i] = strdup(buf)))
            goto done;
    }
    float *step = malloc((size_t)2048 * (size_t)dim * sizeof *step);
    t0 = now();
    sd_status s = step ? sd_clip_pair_text_features(p, (const char *const *)prompts, 2048, step) : SD_ERR_NOMEM;
    free(step);
    if (s)
        goto fail;
    printf("one chain step of best mode (2048 prompts of ~40 tokens): %.1f s (up to 32 steps per image)\n",
           now() - t0);
    /* fast and classic on a 512x512 image with every table's features in memory */
    const sd_clip_vision_config *vc = sd_clip_pair_vision_config(p);
    size_t n = (size_t)512 * 512 * 3;
    if (!(rgb = malloc(n * sizeof *rgb)) ||
        !(pixels = malloc((size_t)3 * (size_t)vc->image_size * (size_t)vc->image_size * sizeof *pixels)))
        goto done;
    for (size_t i = 0; i < n; i++)
        rgb[i] = (float)((i * 2654435761u) % 1000u) / 1000.0f;
    sd_text_encoder enc = sd_clip_pair_encoder(p);
    sd_interrogate_params params = {2048, 2048, 8, 32};
    for (int mode = SD_INTERROGATE_CLASSIC; mode <= SD_INTERROGATE_FAST; mode++) {
        char *prompt = NULL;
        t0 = now();
        if (sd_clip_vision_preprocess(ctx, rgb, 512, 512, vc->image_size, true, pixels) ||
            sd_clip_pair_image_features(p, pixels, img) ||
            sd_interrogate(ctx, &enc, tables, SD_TABLE_NAMED, img, "a photograph of a lighthouse", mode, &params, &prompt))
            goto fail;
        printf("%s interrogation of a 512x512 image, label features in memory: %.2f s; peak RSS %.0f MiB\n",
               sd_interrogate_mode_names[mode], now() - t0, peak_rss_mib());
        free(prompt);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench_caption: %s\n", sd_context_errmsg(ctx));
done:
    for (int i = 0; prompts && i < 2048; i++)
        free(prompts[i]);
    free(prompts);
    for (int t = 0; t < SD_TABLE_NAMED; t++)
        sd_label_table_clear(&tables[t]);
    free(out);
    free(pixels);
    free(rgb);
    sd_clip_pair_free(p);
    sd_safetensors_close(st);
    sd_context_free(ctx);
    if (!strcmp(model ? model : "", tmp))
        unlink(tmp);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "blip"))
        return bench_blip(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "interrogate"))
        return bench_interrogate(argc, argv);
    fprintf(stderr, "usage: bench_caption blip|interrogate [options] (--help after the name)\n");
    return 2;
}
