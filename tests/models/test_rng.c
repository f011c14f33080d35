/* Torch-compatible RNG: bit identity with torch.randn (tests/data/goldens/randn.txt) and
 * ComfyUI's prepare_noise with batch_index. */
#include "test.h"
#include "core/context.h"
#include "core/rng.h"
#include "ml/sampling/sampling.h"
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static FILE *open_golden(const char *name)
{
    char *dir = test_path(test_source_dir(), "tests/data/goldens");
    char *path = test_path(dir, name);
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s", path);
    free(dir);
    free(path);
    return f;
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* MT19937 reference: the 10000th output for the default seed 5489 is 4123659995 (C++11). */
static void test_mt19937_reference(void)
{
    sd_rng rng;
    sd_rng_seed(&rng, 5489);
    CHECK_EQ_INT(sd_rng_u32(&rng), 3499211612u);
    for (int i = 1; i < 9999; i++)
        sd_rng_u32(&rng);
    CHECK_EQ_INT(sd_rng_u32(&rng), 4123659995u);
    /* Only the low 32 bits of the seed reach the engine, as in torch. */
    sd_rng a, b;
    sd_rng_seed(&a, 5);
    sd_rng_seed(&b, (UINT64_C(1) << 32) + 5);
    CHECK_EQ_INT(sd_rng_u32(&a), sd_rng_u32(&b));
}

static void test_randn_goldens(void)
{
    FILE *f = open_golden("randn.txt");
    if (!f)
        return;
    char line[4096];
    int cases = 0, values = 0, mismatches = 0, batch_cases = 0;
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    while (fgets(line, sizeof line, f)) {
        uint64_t seed;
        char sizes[512];
        int k, per_item, count;
        if (sscanf(line, "case %" SCNu64 " %511s %d", &seed, sizes, &k) == 3) {
            size_t total = 0, sz[16], n_sz = 0;
            for (char *tok = strtok(sizes, ","); tok && n_sz < 16; tok = strtok(NULL, ","))
                total += sz[n_sz++] = strtoull(tok, NULL, 10);
            float *out = malloc(total * sizeof(float));
            sd_rng rng;
            sd_rng_seed(&rng, seed);
            size_t off = 0;
            for (size_t i = 0; i < n_sz; i++) {
                sd_rng_randn(&rng, out + off, sz[i]);
                off += sz[i];
            }
            for (int i = 0; i < k && fgets(line, sizeof line, f); i++) {
                size_t idx;
                unsigned int want;
                CHECK(sscanf(line, "%zu %x", &idx, &want) == 2 && idx < total);
                if (idx < total && bits(out[idx]) != want) {
                    if (mismatches++ < 5)
                        CHECK_MSG(0, "seed %" PRIu64 " draws %s... index %zu: %08x != %08x", seed, sizes,
                                  idx, bits(out[idx]), want);
                }
                values++;
            }
            free(out);
            cases++;
        } else if (sscanf(line, "batch_index %" SCNu64 " %511s %d %d", &seed, sizes, &per_item, &count) == 4) {
            int64_t inds[16];
            size_t batch = 0;
            for (char *tok = strtok(sizes, ","); tok && batch < 16; tok = strtok(NULL, ","))
                inds[batch++] = strtoll(tok, NULL, 10);
            CHECK_EQ_INT((size_t)count, batch * (size_t)per_item);
            float *out = malloc((size_t)count * sizeof(float));
            CHECK_EQ_INT(sd_prepare_noise(ctx, seed, batch, (size_t)per_item, inds, out), SD_OK);
            for (int i = 0; i < count && fgets(line, sizeof line, f); i++) {
                unsigned int want;
                int idx;
                CHECK(sscanf(line, "%d %x", &idx, &want) == 2 && idx == i);
                CHECK_MSG(bits(out[i]) == want, "batch_index seed %" PRIu64 " value %d: %08x != %08x", seed,
                          i, bits(out[i]), want);
            }
            free(out);
            batch_cases++;
        }
    }
    fclose(f);
    sd_context_free(ctx);
    CHECK_EQ_INT(mismatches, 0);
    CHECK(cases == 17 && values == 1029 && batch_cases == 2);
    printf("randn: %d cases, %d values bit-identical, %d batch_index cases\n", cases, values, batch_cases);
}

/* Without batch_index prepare_noise is one randn of the whole [B, ...] tensor. */
static void test_prepare_noise_whole_batch(void)
{
    sd_context *ctx = NULL;
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    float a[3 * 40], b[3 * 40];
    CHECK_EQ_INT(sd_prepare_noise(ctx, 77, 3, 40, NULL, a), SD_OK);
    sd_rng rng;
    sd_rng_seed(&rng, 77);
    sd_rng_randn(&rng, b, 120);
    CHECK(memcmp(a, b, sizeof a) == 0);
    int64_t bad[2] = {0, -1};
    float sentinel[80];
    for (int i = 0; i < 80; i++)
        sentinel[i] = 42.0f;
    CHECK_EQ_INT(sd_prepare_noise(ctx, 1, 2, 40, bad, sentinel), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "batch_index[1] is -1");
    int64_t huge[1] = {1 << 20};
    CHECK_EQ_INT(sd_prepare_noise(ctx, 1, 1, 40, huge, sentinel), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "above 65535");
    for (int i = 0; i < 80; i++)
        CHECK(sentinel[i] == 42.0f);
    CHECK_EQ_INT(sd_prepare_noise(ctx, 1, SIZE_MAX / 2, 4, NULL, sentinel), SD_ERR_LIMIT);
    sd_context_free(ctx);
}

int main(void)
{
    RUN(test_mt19937_reference);
    RUN(test_randn_goldens);
    RUN(test_prepare_noise_whole_batch);
    return test_summary("test_rng");
}
