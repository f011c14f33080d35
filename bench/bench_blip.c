/* bench_blip: seconds and peak memory of one BLIP caption (vision tower on a 384x384 image, then
 * greedy or beam decoding to --tokens tokens), on a random model with BLIP-large's or
 * BLIP-base's shapes (written to a temporary file, F16) unless --model names a real one. Random
 * weights never end a caption early, so every run decodes the full --tokens. Not a test: it
 * prints figures, never fails on time.
 *
 *   bench_blip [--preset large|base] [--tokens N] [--beams N] [--model FILE]
 *
 * docs/benchmarks.md records results with the exact command. */
#include "ml/families/sd1_layout.h"
#include "ml/vision/blip.h"
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

int main(int argc, char **argv)
{
    const char *model = NULL, *preset = "large";
    int tokens = 32, beams = 1;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--tokens")) tokens = atoi(v);
        else if (!strcmp(a, "--beams")) beams = atoi(v);
        else if (!strcmp(a, "--model")) model = v;
        else {
            bool help = !strcmp(a, "--help") || !strcmp(a, "-h");
            fprintf(help ? stdout : stderr, "usage: bench_blip [--preset large|base] [--tokens N] [--beams N] [--model FILE]\n");
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
    char tmp[] = "/tmp/bench_blip_XXXXXX";
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
        double t1 = now();
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
    fprintf(stderr, "bench_blip: %s\n", sd_context_errmsg(ctx));
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
