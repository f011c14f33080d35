/* Mask nodes through the scheduler, against hand-derived expectations of ComfyUI's semantics
 * (scipy grey dilation/erosion with a cross or square footprint, torch slicing, clamping). */
#include "test.h"
#include "core/run.h"
#include <stdlib.h>

static sd_context *ctx;

/* A graph whose node "sq" is an 8x6 mask of zeros with a 2x2 square of ones at (3, 2). */
static sd_graph *square_graph(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SolidMask", "bg", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "bg", "value", "0"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "bg", "width", "8"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "bg", "height", "6"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SolidMask", "fg", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "fg", "width", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "fg", "height", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "MaskComposite", "sq", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "bg", "MASK", "sq", "destination"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "fg", "MASK", "sq", "source"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "sq", "x", "3"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "sq", "y", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "sq", "operation", "add"), SD_OK);
    return g;
}

/* Adds node `id` of `type` fed by `src`.MASK into input "mask". */
static void add_after(sd_graph *g, const char *type, const char *id, const char *src)
{
    CHECK_EQ_INT(sd_graph_add_node(g, type, id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, src, "MASK", id, "mask"), SD_OK);
}

/* Runs g for node `id` and compares its MASK output with rows of '#' (1), '.' (0) or digits
 * (tenths: '5' = 0.5). */
static void expect_mask(sd_graph *g, const char *id, const char *output, int w, int h, const char *rows)
{
    const char *outs[] = {id};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &opt, &res), SD_OK);
    const sd_value *v = sd_result_value(res, id, output);
    const sd_tensor *t = v ? sd_value_tensor(v, "mask") : NULL;
    CHECK_MSG(t && t->ndim == 3 && t->shape[1] == h && t->shape[2] == w, "%s: shape", id);
    for (int i = 0; t && i < w * h; i++) {
        char c = rows[i];
        float want = c == '#' ? 1.0f : c == '.' ? 0.0f : (float)(c - '0') / 10.0f;
        CHECK_MSG(t->data[i] > want - 1e-6f && t->data[i] < want + 1e-6f, "%s: pixel (%d,%d) = %g, want %g", id,
                  i % w, i / w, t->data[i], want);
    }
    sd_result_free(res);
}

static void test_composite_and_invert(void)
{
    sd_graph *g = square_graph();
    expect_mask(g, "sq", "MASK", 8, 6,
                "........"
                "........"
                "...##..."
                "...##..."
                "........"
                "........");
    add_after(g, "InvertMask", "inv", "sq");
    expect_mask(g, "inv", "MASK", 8, 6,
                "########"
                "########"
                "###..###"
                "###..###"
                "########"
                "########");
    sd_graph_free(g);
}

static void test_grow_shrink(void)
{
    sd_graph *g = square_graph();
    add_after(g, "GrowMask", "cross", "sq");
    CHECK_EQ_INT(sd_graph_set_input(g, "cross", "expand", "1"), SD_OK);
    expect_mask(g, "cross", "MASK", 8, 6,
                "........"
                "...##..."
                "..####.."
                "..####.."
                "...##..."
                "........");
    add_after(g, "GrowMask", "box", "sq");
    CHECK_EQ_INT(sd_graph_set_input(g, "box", "expand", "1"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "box", "tapered_corners", "false"), SD_OK);
    expect_mask(g, "box", "MASK", 8, 6,
                "........"
                "..####.."
                "..####.."
                "..####.."
                "..####.."
                "........");
    add_after(g, "GrowMask", "shrunk", "box");
    CHECK_EQ_INT(sd_graph_set_input(g, "shrunk", "expand", "-1"), SD_OK);
    expect_mask(g, "shrunk", "MASK", 8, 6,
                "........"
                "........"
                "...##..."
                "...##..."
                "........"
                "........");
    sd_graph_free(g);
}

static void test_feather_threshold_crop(void)
{
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_new(ctx, &g), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "SolidMask", "one", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "one", "width", "5"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "one", "height", "4"), SD_OK);
    add_after(g, "FeatherMask", "f", "one");
    CHECK_EQ_INT(sd_graph_set_input(g, "f", "left", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "f", "right", "2"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "f", "bottom", "1"), SD_OK);
    /* Outermost column 1/2, next 2/2; the bottom row ramp of 1 pixel is 1/1. */
    expect_mask(g, "f", "MASK", 5, 4, "5###5" "5###5" "5###5" "5###5");
    add_after(g, "ThresholdMask", "t", "f");
    CHECK_EQ_INT(sd_graph_set_input(g, "t", "value", "0.5"), SD_OK);
    expect_mask(g, "t", "MASK", 5, 4, ".###." ".###." ".###." ".###.");
    add_after(g, "CropMask", "c", "f");
    CHECK_EQ_INT(sd_graph_set_input(g, "c", "x", "3"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "c", "y", "1"), SD_OK);
    /* 512x512 asked, clipped to the mask as torch slicing does. */
    expect_mask(g, "c", "MASK", 2, 3, "#5" "#5" "#5");
    add_after(g, "MaskToImage", "img", "c");
    CHECK_EQ_INT(sd_graph_add_node(g, "ImageToMask", "back", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "img", "IMAGE", "back", "image"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "back", "channel", "blue"), SD_OK);
    expect_mask(g, "back", "MASK", 2, 3, "#5" "#5" "#5");
    CHECK_EQ_INT(sd_graph_set_input(g, "c", "x", "9"), SD_OK);
    const char *outs[] = {"c"};
    sd_run_options opt = {.outputs = outs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &opt, &res), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "node 'c' (CropMask): crop at (5, 1) lies outside the 5x4 mask");
    sd_result_free(res);
    sd_graph_free(g);
}

int main(void)
{
    CHECK_EQ_INT(sd_context_new(&ctx), SD_OK);
    sd_context_set_cache_path(ctx, NULL);
    RUN(test_composite_and_invert);
    RUN(test_grow_shrink);
    RUN(test_feather_threshold_crop);
    sd_context_free(ctx);
    return test_summary("test_mask_nodes");
}
