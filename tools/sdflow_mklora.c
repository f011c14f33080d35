/* sdflow_mklora: writes a random-weight LoRA in kohya or diffusers/PEFT layout for the architecture
 * of an SD1, SD2, SDXL or FLUX checkpoint (tests and goldens; ml/adapters/lora.h, sd_lora_write_random). Deterministic: the same
 * checkpoint architecture, options and seed give the same bytes. */
#include "ml/adapters/lora.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sdflow_mklora [--rank N] [--seed N] [--ldm-names | --peft | --bfl] CHECKPOINT.safetensors OUTPUT.safetensors\n"
               "  --rank N      LoRA rank (default 4)\n"
               "  --seed N      weight seed (default 0)\n"
               "  --ldm-names   name UNet keys the LDM way (lora_unet_input_blocks_...) instead of diffusers'\n"
               "  --peft        diffusers/PEFT keys (unet.*, text_encoder.*, text_encoder_2.*; lora_A / lora_B)\n"
               "                instead of kohya's (lora_unet_*, lora_te_* / lora_te1_*, lora_te2_*)\n"
               "  --bfl         FLUX: ComfyUI's diffusion_model.<BFL name>.lora_A / lora_B keys\n"
               "                (on FLUX --ldm-names writes OneTrainer's lora_transformer_<diffusers name>)\n");
}

int main(int argc, char **argv)
{
    int rank = 4;
    unsigned long long seed = 0;
    sd_lora_layout layout = SD_LORA_KOHYA;
    const char *files[2] = {NULL, NULL};
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--rank") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 1024) {
                fprintf(stderr, "sdflow_mklora: bad rank '%s'\n", argv[i]);
                return 2;
            }
            rank = (int)v;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], &end, 10);
            if (*end) {
                fprintf(stderr, "sdflow_mklora: bad seed '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--ldm-names") == 0) {
            layout = SD_LORA_KOHYA_LDM;
        } else if (strcmp(argv[i], "--peft") == 0) {
            layout = SD_LORA_PEFT;
        } else if (strcmp(argv[i], "--bfl") == 0) {
            layout = SD_LORA_BFL;
        } else if (argv[i][0] != '-' && nfiles < 2) {
            files[nfiles++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (nfiles != 2) {
        usage(stderr);
        return 2;
    }
    sd_context *ctx;
    if (sd_context_new(&ctx)) {
        fprintf(stderr, "sdflow_mklora: out of memory\n");
        return 4;
    }
    sd_safetensors *st = NULL;
    sd_checkpoint_config cfg;
    sd_status status = sd_safetensors_open(ctx, files[0], &st);
    if (!status)
        status = sd_checkpoint_inspect(ctx, st, &cfg);
    if (!status)
        status = sd_lora_write_random(ctx, files[1], &cfg, rank, seed, layout);
    if (status)
        fprintf(stderr, "sdflow_mklora: %s\n", sd_context_errmsg(ctx));
    sd_safetensors_close(st);
    sd_context_free(ctx);
    return status ? 1 : 0;
}
