/* SDXL Revision's pooled output (ml/families/adm.h sd_adm_unclip_pooled) against ComfyUI's
 * unclip_adm noise augmentation written in torch (tests/reference/make_unclip_goldens.py). */
#include "test.h"
#include "support/golden.h"
#include "support/ops_check.h"
#include "ml/families/adm.h"
#include <stdio.h>
#include <stdlib.h>

#define DIM 1280

static void check_case(const char *golden, int rows, const double *strength, const double *aug)
{
    int nd;
    int64_t shape[SD_TENSOR_MAX_DIMS];
    float *emb = ops_read_golden("unclip_embeds.bin", &nd, shape), *ref = ops_read_golden(golden, &nd, shape);
    float out[DIM];
    CHECK(emb && ref && nd == 2 && shape[1] == DIM);
    CHECK(sd_adm_unclip_pooled(emb, strength, aug, rows, DIM, 42 - 10, out));
    double d = ref ? test_max_abs_diff(out, ref, DIM) : 1;
    fprintf(stderr, "  %s: max abs diff %.3g\n", golden, d);
    CHECK_MSG(d < 1e-5, "%s: max abs diff %g", golden, d);
    free(emb), free(ref);
}

static void test_one_row(void)
{
    check_case("unclip_one.bin", 1, (const double[]){0.7}, (const double[]){0.3});
}

static void test_two_rows(void)
{
    check_case("unclip_two.bin", 2, (const double[]){1.2, 0.5}, (const double[]){0.0, 0.25});
}

int main(void)
{
    RUN(test_one_row);
    RUN(test_two_rows);
    return test_summary("test_unclip");
}
