/* Checkpoints with a tensor left out or misshapen (see layout_check.h). */
#include "support/layout_check.h"
#include "ml/families/sd1_layout.h"
#include "test.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sd_status fill_zero(void *user, size_t index, void *dst, size_t nbytes)
{
    (void)user, (void)index;
    memset(dst, 0, nbytes);
    return SD_OK;
}

void test_expect_inspect_error(sd_context *ctx, const sd_checkpoint_config *cfg, const char *drop, const char *grow,
                               const char *tail)
{
    sd_layout l = {0};
    CHECK_EQ_INT(sd_layout_unet(ctx, &cfg->unet, cfg->unet_prefix, &l), SD_OK);
    CHECK_EQ_INT(sd_layout_clip(ctx, &cfg->clip, cfg->clip_prefix, &l), SD_OK);
    if (cfg->clip2_prefix)
        CHECK_EQ_INT(sd_layout_clip(ctx, &cfg->clip2, cfg->clip2_prefix, &l), SD_OK);
    sd_st_entry *e = calloc(l.n + 1, sizeof *e);
    size_t n = 0;
    for (size_t i = 0; e && i < l.n; i++) {
        if (drop && strcmp(l.entries[i].name, drop) == 0)
            continue;
        e[n] = (sd_st_entry){.name = l.entries[i].name, .dtype = SD_ST_F16, .ndim = l.entries[i].ndim};
        memcpy(e[n].shape, l.entries[i].shape, sizeof l.entries[i].shape);
        if (l.entries[i].kind == SD_PARAM_POSITION_IDS)
            e[n].dtype = SD_ST_I64;
        if (grow && strcmp(l.entries[i].name, grow) == 0)
            e[n].shape[0]++;
        n++;
    }
    char *path = test_path(test_scratch_dir(), "altered.safetensors");
    sd_safetensors *st = NULL;
    sd_checkpoint_config got;
    CHECK_EQ_INT(sd_safetensors_write(ctx, path, e, n, NULL, fill_zero, NULL), SD_OK);
    CHECK_EQ_INT(sd_safetensors_open(ctx, path, &st), SD_OK);
    if (st) {
        CHECK_EQ_INT(sd_checkpoint_inspect(ctx, st, &got), SD_ERR_INVALID);
        char want[512];
        snprintf(want, sizeof want, "%s: %s", path, tail);
        CHECK_STR_EQ(sd_context_errmsg(ctx), want);
    }
    sd_safetensors_close(st);
    sd_layout_free(&l);
    free(e);
    free(path);
}

bool test_open_preset(sd_context *ctx, const char *preset, const char *file, uint64_t seed, sd_safetensors **st,
                      sd_checkpoint_config *cfg)
{
    sd_checkpoint_config want;
    char *path = test_path(test_scratch_dir(), file);
    bool ok = sd_checkpoint_preset(preset, &want) && !sd_sd1_write_random(ctx, path, &want, SD_ST_F32, seed) &&
              !sd_safetensors_open(ctx, path, st) && !sd_checkpoint_inspect(ctx, *st, cfg);
    if (!ok)
        fprintf(stderr, "setup %s: %s\n", preset, sd_context_errmsg(ctx));
    free(path);
    return ok;
}
