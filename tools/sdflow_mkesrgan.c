/* sdflow_mkesrgan: writes RRDBNet (ESRGAN / Real-ESRGAN) .safetensors files with deterministic
 * random weights in the new, old or BSRGAN key layout (tests, goldens, benchmarks), and prints
 * what sdflow reads from a file. The same options and seed give the same bytes; the layouts of
 * one seed hold the same network. */
#include "ml/upscale/esrgan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sdflow_mkesrgan [options] OUTPUT.safetensors\n"
            "       sdflow_mkesrgan --inspect FILE\n"
            "  --layout new|old|bsrgan  key layout (default new)\n"
            "  --nf N        features (default 64)      --gc N      growth channels (default 32)\n"
            "  --blocks N    RRDB blocks (default 23)   --up N      2x upsampling steps (default 2)\n"
            "  --in-nc N     input channels (default 3; 12 or 48: pixel-unshuffled Real-ESRGAN x2/x1)\n"
            "  --out-nc N    output channels (default 3)\n"
            "  --dtype f32|f16|bf16   weight dtype (default f32)\n"
            "  --seed N      weight seed (default 0)\n");
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

static int inspect(sd_context *ctx, const char *path)
{
    sd_safetensors *st = NULL;
    sd_esrgan_config c;
    sd_status s = sd_safetensors_open(ctx, path, &st);
    if (!s)
        s = sd_esrgan_inspect(ctx, st, &c);
    sd_safetensors_close(st);
    if (s) {
        fprintf(stderr, "sdflow_mkesrgan: %s\n", sd_context_errmsg(ctx));
        return 1;
    }
    printf("layout=%s scale=%d blocks=%d nf=%d gc=%d in_nc=%d out_nc=%d up=%d unshuffle=%d\n",
           sd_esrgan_layout_name(c.layout), c.scale, c.blocks, c.nf, c.gc, c.in_nc, c.out_nc, c.n_up, c.shuffle);
    return 0;
}

int main(int argc, char **argv)
{
    sd_esrgan_config c = {.layout = SD_ESRGAN_NEW, .in_nc = 3, .out_nc = 3, .nf = 64, .gc = 32, .blocks = 23, .n_up = 2};
    sd_st_dtype dtype = SD_ST_F32;
    int seed = 0;
    const char *out = NULL, *inspect_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] != '-') {
            ok = !out;
            out = a;
            v = NULL;
        } else if (!v) {
            ok = false;
        } else if (!strcmp(a, "--inspect")) {
            inspect_path = v;
        } else if (!strcmp(a, "--layout")) {
            if (!strcmp(v, "new"))
                c.layout = SD_ESRGAN_NEW;
            else if (!strcmp(v, "old"))
                c.layout = SD_ESRGAN_OLD;
            else if (!strcmp(v, "bsrgan"))
                c.layout = SD_ESRGAN_BSRGAN;
            else
                ok = false;
        } else if (!strcmp(a, "--nf")) {
            ok = parse_int(v, 1, SD_ESRGAN_MAX_FEATURES, &c.nf);
        } else if (!strcmp(a, "--gc")) {
            ok = parse_int(v, 1, SD_ESRGAN_MAX_FEATURES, &c.gc);
        } else if (!strcmp(a, "--blocks")) {
            ok = parse_int(v, 1, SD_ESRGAN_MAX_BLOCKS, &c.blocks);
        } else if (!strcmp(a, "--up")) {
            ok = parse_int(v, 0, SD_ESRGAN_MAX_UP, &c.n_up);
        } else if (!strcmp(a, "--in-nc")) {
            ok = parse_int(v, 1, 64, &c.in_nc);
        } else if (!strcmp(a, "--out-nc")) {
            ok = parse_int(v, 1, 64, &c.out_nc);
        } else if (!strcmp(a, "--seed")) {
            ok = parse_int(v, 0, 1 << 30, &seed);
        } else if (!strcmp(a, "--dtype")) {
            dtype = !strcmp(v, "f16") ? SD_ST_F16 : !strcmp(v, "bf16") ? SD_ST_BF16 : SD_ST_F32;
            ok = !strcmp(v, "f16") || !strcmp(v, "bf16") || !strcmp(v, "f32");
        } else {
            ok = false;
        }
        if (!ok) {
            fprintf(stderr, "sdflow_mkesrgan: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (v)
            i++; /* the option's value */
    }
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx) != SD_OK)
        return 1;
    int rc;
    if (inspect_path) {
        rc = inspect(ctx, inspect_path);
    } else if (!out) {
        usage(stderr);
        rc = 2;
    } else if (sd_esrgan_write_random(ctx, out, &c, dtype, (uint64_t)seed) != SD_OK) {
        fprintf(stderr, "sdflow_mkesrgan: %s\n", sd_context_errmsg(ctx));
        rc = 1;
    } else {
        rc = 0;
    }
    sd_context_free(ctx);
    return rc;
}
