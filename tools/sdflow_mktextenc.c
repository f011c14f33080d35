/* sdflow_mktextenc: writes test text-encoder files in the layouts of models/text_encoders
 * (ml/text/text_encoder_write.h): tiny random clip_l / clip_h / clip_g / t5xxl files, a T5 file
 * converted to a llama.cpp-named GGUF, and an SDXL checkpoint's text encoders split into
 * clip_l.safetensors and clip_g.safetensors. Deterministic. */
#include "ml/text/text_encoder_write.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sdflow_mktextenc [--seed N] [--dtype f32|f16] clip-l|clip-h|clip-g|t5|flux-te OUTPUT.safetensors\n"
               "       (flux-te: CLIP-L and T5 under the names of ComfyUI's all-in-one FLUX files)\n"
               "       sdflow_mktextenc --full [--seed N] [--dtype f32|f16|q8_0] clip-l|t5 OUTPUT\n"
               "       (the real sizes: CLIP-L safetensors; T5-XXL safetensors, or with q8_0 a GGUF file\n"
               "       as city96's t5-v1_1-xxl-encoder-Q8_0.gguf, streamed)\n"
               "       sdflow_mktextenc t5-gguf T5.safetensors OUTPUT.gguf\n"
               "       sdflow_mktextenc t5-fp8|t5-fp8-scaled T5.safetensors OUTPUT.safetensors [REFERENCE.safetensors]\n"
               "       (t5xxl_fp8_e4m3fn / ComfyUI's _scaled layout; REFERENCE: the same values as F32)\n"
               "       sdflow_mktextenc split-sdxl SDXL.safetensors CLIP_L.safetensors CLIP_G.safetensors\n");
}

int main(int argc, char **argv)
{
    uint64_t seed = 0;
    sd_st_dtype dtype = SD_ST_F32;
    bool full = false, q8 = false;
    const char *args[4];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], &end, 10);
            if (*end) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
            i++;
            q8 = strcmp(argv[i], "q8_0") == 0;
            if (strcmp(argv[i], "f32") != 0 && strcmp(argv[i], "f16") != 0 && !q8) {
                usage(stderr);
                return 2;
            }
            dtype = strcmp(argv[i], "f16") == 0 ? SD_ST_F16 : SD_ST_F32;
        } else if (strcmp(argv[i], "--full") == 0) {
            full = true;
        } else if (argv[i][0] != '-' && n < 4) {
            args[n++] = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    static const struct { const char *name; sd_text_encoder_kind kind; } kinds[] = {
        {"clip-l", SD_TEXT_CLIP_L}, {"clip-h", SD_TEXT_OPENCLIP_H}, {"clip-g", SD_TEXT_OPENCLIP_G}, {"t5", SD_TEXT_T5XXL}};
    int kind = -1;
    for (int k = 0; n == 2 && k < 4; k++)
        if (strcmp(args[0], kinds[k].name) == 0)
            kind = k;
    bool gguf = n == 3 && strcmp(args[0], "t5-gguf") == 0, split = n == 4 && strcmp(args[0], "split-sdxl") == 0;
    bool flux = n == 2 && strcmp(args[0], "flux-te") == 0;
    bool fp8 = (n == 3 || n == 4) && strncmp(args[0], "t5-fp8", 6) == 0 &&
               (args[0][6] == '\0' || strcmp(args[0] + 6, "-scaled") == 0);
    if ((kind < 0 && !gguf && !split && !flux && !fp8) || (full && kind < 0) || (q8 && !full)) {
        usage(stderr);
        return 2;
    }
    sd_context *ctx;
    if (sd_context_new(&ctx)) {
        fprintf(stderr, "sdflow_mktextenc: out of memory\n");
        return 4;
    }
    sd_status st = full    ? sd_text_write_full(ctx, args[1], kinds[kind].kind, dtype, q8, seed)
                   : fp8   ? sd_text_write_t5_fp8(ctx, args[1], args[2], n == 4 ? args[3] : NULL, args[0][6] != '\0')
                   : gguf  ? sd_text_write_t5_gguf(ctx, args[1], args[2])
                   : split ? sd_text_write_sdxl_split(ctx, args[1], args[2], args[3])
                   : flux  ? sd_text_write_flux_encoders(ctx, args[1], dtype, seed)
                           : sd_text_write_random(ctx, args[1], kinds[kind].kind, dtype, seed);
    if (st)
        fprintf(stderr, "sdflow_mktextenc: %s\n", sd_context_errmsg(ctx));
    sd_context_free(ctx);
    return st ? 1 : 0;
}
