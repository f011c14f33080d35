/* bench_lora: the cost of applying a LoRA to the SD1.5 UNet (docs/lora.md): seconds to upload
 * the base tensors a typical kohya LoRA touches, seconds to compute their patched copies on the
 * device, and the device memory the copies add. Not a test: it prints figures. The base file
 * holds only those tensors (SD1.5 shapes, f16, written to a scratch directory first), the LoRA is
 * sdflow_mklora's layout at the given rank.
 *
 *   bench_lora [--rank N] [--dir DIR]     (default rank 32, DIR $TMPDIR or /tmp) */
#include "ml/adapters/lora.h"
#include "ml/families/sd1_layout.h"
#include "runtime-opencl/runtime.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The UNet weights sd_lora_write_random targets. */
static bool targeted(const sd_layout_entry *e)
{
    return e->kind == SD_PARAM_WEIGHT &&
           (strstr(e->name, ".attn1.to_") || strstr(e->name, ".attn2.to_") || strstr(e->name, ".ff.net.") ||
            strstr(e->name, ".proj_in.") || strstr(e->name, ".proj_out.") ||
            strcmp(e->name, "input_blocks.1.0.in_layers.2.weight") == 0);
}

static sd_status fill(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user;
    uint16_t *h = dst;
    for (size_t i = 0; i < nbytes / 2; i++)
        h[i] = sd_float_to_half((float)((i * 2654435761u + index) % 1000) * 1e-5f - 0.005f);
    return SD_OK;
}

int main(int argc, char **argv)
{
    int rank = 32;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rank") == 0 && i + 1 < argc)
            rank = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_lora [--rank N] [--dir DIR]\n");
            return 2;
        }
    }
    sd_context *ctx;
    if (sd_context_new(&ctx))
        return 4;
    sd_context_set_cache_path(ctx, NULL);
    sd_checkpoint_config cfg;
    sd_checkpoint_preset("sd15", &cfg);
    cfg.has_clip = cfg.has_vae = false;
    char base_path[1024], lora_path[1024];
    snprintf(base_path, sizeof base_path, "%s/bench_lora_base.safetensors", dir);
    snprintf(lora_path, sizeof lora_path, "%s/bench_lora_lora.safetensors", dir);
    sd_layout layout = {0};
    sd_st_entry *entries = NULL;
    char (*names)[160] = NULL;
    size_t n = 0, params = 0;
    sd_safetensors *st = NULL;
    sd_weights *base = NULL, *view = NULL;
    sd_lora *lora = NULL;
    sd_lora_stack *stack = NULL;
    sd_cl *cl;
    sd_status s = sd_layout_unet(ctx, &cfg.unet, "", &layout);
    if (!s && (!(entries = calloc(layout.n, sizeof *entries)) || !(names = calloc(layout.n, sizeof *names))))
        s = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < layout.n; i++) {
        const sd_layout_entry *e = &layout.entries[i];
        if (!targeted(e))
            continue;
        snprintf(names[n], sizeof names[n], "%s%s", SD1_UNET_PREFIX, e->name);
        entries[n] = (sd_st_entry){.name = names[n], .dtype = SD_ST_F16, .ndim = e->ndim};
        memcpy(entries[n].shape, e->shape, sizeof e->shape);
        size_t k = 1;
        for (int d = 0; d < e->ndim; d++)
            k *= (size_t)e->shape[d];
        params += k;
        n++;
    }
    printf("SD1.5 UNet, kohya LoRA rank %d on %zu tensors (%.1f M parameters)\n", rank, n, (double)params / 1e6);
    double t0 = now();
    if (!s)
        s = sd_safetensors_write(ctx, base_path, entries, n, NULL, fill, NULL);
    if (!s)
        s = sd_lora_write_random(ctx, lora_path, &cfg, rank, 1, SD_LORA_KOHYA);
    printf("  writing the files: %.2f s\n", now() - t0);
    if (!s)
        s = sd_cl_get(ctx, &cl);
    if (!s)
        s = sd_safetensors_open(ctx, base_path, &st);
    if (!s)
        s = sd_weights_new(cl, st, SD1_UNET_PREFIX, SD_DTYPE_F16, &base);
    t0 = now();
    if (!s)
        s = sd_lora_open(ctx, lora_path, &cfg, &lora);
    double t_open = now() - t0;
    if (!s)
        s = sd_lora_stack_push(ctx, NULL, lora, 1.0f, SD_LORA_UNET, &stack);
    sd_weight_patcher p;
    if (!s) {
        sd_lora_stack_patcher(stack, SD_LORA_UNET, &p);
        s = sd_weights_new_patched(base, &p, &view);
    }
    const sd_dtensor *t;
    t0 = now();
    for (size_t i = 0; !s && i < n; i++)
        s = sd_weights_get(base, names[i] + strlen(SD1_UNET_PREFIX), &t);
    if (!s)
        s = sd_cl_finish(cl);
    double t_upload = now() - t0;
    t0 = now();
    for (size_t i = 0; !s && i < n; i++)
        s = sd_weights_get(view, names[i] + strlen(SD1_UNET_PREFIX), &t);
    if (!s)
        s = sd_cl_finish(cl);
    double t_patch = now() - t0;
    if (s) {
        fprintf(stderr, "bench_lora: %s\n", sd_context_errmsg(ctx));
    } else {
        printf("  opening the LoRA (key mapping, checks): %.3f s\n", t_open);
        printf("  uploading the base tensors (f16): %.2f s\n", t_upload);
        printf("  patching them on the device: %.2f s\n", t_patch);
        printf("  device memory: base %.0f MiB, patched copies %.0f MiB\n",
               (double)sd_weights_device_bytes(base) / 1048576.0, (double)sd_weights_device_bytes(view) / 1048576.0);
    }
    sd_weights_free(view);
    sd_lora_stack_unref(stack);
    sd_lora_unref(lora);
    sd_weights_free(base);
    sd_safetensors_close(st);
    unlink(base_path);
    unlink(lora_path);
    free(entries);
    free(names);
    sd_layout_free(&layout);
    sd_context_free(ctx);
    return s ? 1 : 0;
}
