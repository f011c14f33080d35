/* The conditioning nodes (nodes/conditioning.c) and the KSampler's use of their entries.
 *
 * The nodes run directly on small hand-made conditionings, against tensors worked out by hand
 * from ComfyUI's nodes.py (list concatenation, torch.cat along the tokens, the cut or zero-padded
 * weighted average, zeros_like, start/end percent attributes), with their attributes, extra
 * tensors and ControlNet chains carried. The KSampler runs graphs/txt2img.xml on the tiny random
 * checkpoint: Combine(c, c) is c; a [0, 1] range is no range; an entry outside its range is
 * skipped; a side none of whose entries applies predicts 0 (ComfyUI's calc_cond_batch); A on
 * [0, 0.5] combined with B on [0.5, 1] differs from A and from B; Combine keeps ControlNets
 * working; a ComfyUI API workflow using all five nodes imports and runs. The area and mask nodes
 * set ComfyUI's attributes; the weight map of get_area_and_mult matches hand-computed values; a
 * whole-latent area and a mask of ones sample bit for bit as none; left and right halves with
 * two prompts differ from either prompt alone; bad areas fail with one-line errors. */
#include "test.h"
#include "core/run.h"
#include "ml/adapters/control_eval.h"
#include "ml/families/sd1_layout.h"
#include "nodes/conditioning.h"
#include "support/golden.h"
#include "support/graph_run.h"
#include "support/node_direct.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LAT_N = 4 * 8 * 8 };
static sd_context *g_ctx;
static char *ckpt_path, *cn_path, *image_path;

/* ---- running one node directly ---- */

static sd_value *run_node(const char *type, sd_value **in, sd_status *st)
{
    return test_run_node(g_ctx, type, in, st);
}

/* Runs a node that must succeed. */
static sd_value *run_ok(const char *type, sd_value **in)
{
    sd_status st;
    sd_value *v = run_node(type, in, &st);
    CHECK_MSG(st == SD_OK && v, "%s: %s", type, sd_context_errmsg(g_ctx));
    return v;
}

static void expect_absent(const sd_value *v, const char *name)
{
    CHECK_MSG(v && !sd_value_tensor(v, name), "%s should be absent", name);
}

static void expect_attrs(const sd_value *v, const char *json)
{
    json_t *want = json_loads(json, 0, NULL);
    char *got = v && v->attrs ? json_dumps(v->attrs, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    CHECK_MSG(want && v && json_equal(v->attrs, want), "attrs %s, want %s", got ? got : "(none)", json);
    free(got);
    json_decref(want);
}

/* A: entry 0 tokens [1, 2, 2] and pooled; entry 1 tokens [1, 1, 2], no pooled, a concat_mask
 * and a start_percent. B: one entry [1, 3, 2] with pooled. C: one entry [1, 1, 2], no pooled.
 * D: one entry of batch 2 [2, 2, 2]. */
static sd_value *make_a(void)
{
    sd_value *v = sd_value_new(SD_TYPE_CONDITIONING);
    test_put_tensor(v, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){1, 2, 3, 4});
    test_put_tensor(v, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){10, 20});
    test_put_tensor(v, "cond.1", 3, (const int64_t[]){1, 1, 2}, (const float[]){5, 6});
    test_put_tensor(v, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
    v->attrs = json_loads("{\"entries\": [{\"strength\": 1.0}, {\"strength\": 0.5, \"start_percent\": 0.25}]}", 0,
                          NULL);
    return v;
}

static sd_value *make_one(int64_t b, int64_t tokens, const float *data, const float *pooled, double strength)
{
    sd_value *v = sd_value_new(SD_TYPE_CONDITIONING);
    test_put_tensor(v, "cond.0", 3, (const int64_t[]){b, tokens, 2}, data);
    if (pooled)
        test_put_tensor(v, "pooled.0", 2, (const int64_t[]){b, 2}, pooled);
    v->attrs = json_pack("{s:[{s:f}]}", "entries", "strength", strength);
    return v;
}

static sd_value *g_a, *g_b, *g_c, *g_d;
static sd_value *g_floats[64]; /* scalar inputs, released at the end */
static size_t g_n_floats;

static sd_value *keep(sd_value *v)
{
    if (g_n_floats < sizeof g_floats / sizeof g_floats[0])
        g_floats[g_n_floats++] = v;
    return v;
}

static sd_value *num(double f)
{
    return keep(sd_value_float(f));
}

static sd_value *integer(int64_t i)
{
    return keep(sd_value_int(i));
}

static void make_inputs(void)
{
    g_a = make_a();
    g_b = make_one(1, 3, (const float[]){-1, -2, -3, -4, -5, -6}, (const float[]){1, 3}, 2.0);
    g_c = make_one(1, 1, (const float[]){7, 8}, NULL, 1.0);
    g_d = make_one(2, 2, (const float[]){1, 2, 3, 4, 5, 6, 7, 8}, NULL, 1.0);
}

static void test_combine(void)
{
    sd_value *ab = run_ok("ConditioningCombine", (sd_value *[]){g_a, g_b});
    if (ab) {
        CHECK_EQ_INT(ab->n_tensors, 6);
        test_expect_tensor(ab, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){1, 2, 3, 4});
        test_expect_tensor(ab, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){10, 20});
        test_expect_tensor(ab, "cond.1", 3, (const int64_t[]){1, 1, 2}, (const float[]){5, 6});
        expect_absent(ab, "pooled.1");
        test_expect_tensor(ab, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        test_expect_tensor(ab, "cond.2", 3, (const int64_t[]){1, 3, 2}, (const float[]){-1, -2, -3, -4, -5, -6});
        test_expect_tensor(ab, "pooled.2", 2, (const int64_t[]){1, 2}, (const float[]){1, 3});
        expect_attrs(ab, "{\"entries\": [{\"strength\": 1.0}, {\"strength\": 0.5, \"start_percent\": 0.25},"
                         " {\"strength\": 2.0}]}");
        CHECK(sd_value_cacheable(ab));
    }
    sd_value *ba = run_ok("ConditioningCombine", (sd_value *[]){g_b, g_a});
    if (ba) {
        test_expect_tensor(ba, "cond.0", 3, (const int64_t[]){1, 3, 2}, (const float[]){-1, -2, -3, -4, -5, -6});
        test_expect_tensor(ba, "pooled.1", 2, (const int64_t[]){1, 2}, (const float[]){10, 20});
        test_expect_tensor(ba, "cond.2", 3, (const int64_t[]){1, 1, 2}, (const float[]){5, 6});
        test_expect_tensor(ba, "concat_mask.2", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        expect_absent(ba, "concat_mask.1");
        expect_attrs(ba, "{\"entries\": [{\"strength\": 2.0}, {\"strength\": 1.0},"
                         " {\"strength\": 0.5, \"start_percent\": 0.25}]}");
    }
    sd_value_unref(ab);
    sd_value_unref(ba);

    sd_value *empty = sd_value_new(SD_TYPE_CONDITIONING);
    sd_status st;
    CHECK(run_node("ConditioningCombine", (sd_value *[]){g_a, empty}, &st) == NULL);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(g_ctx),
                 "node 'n' (ConditioningCombine): input 'conditioning_2': the conditioning has no entries");
    sd_value_unref(empty);
}

/* ControlNet chains follow their entries through Combine and the entry-wise nodes. */
static void test_controls_carried(void)
{
    sd_value *a = make_a();
    sd_cond_controls *c = sd_cond_controls_new(2);
    sd_control_link *link = sd_control_link_new(NULL, NULL, 1.0, 0.0, 1.0, NULL); /* stand-in: only identity matters */
    if (!a || !c || !link) {
        CHECK(false);
        return;
    }
    c->links[0] = link;
    c->to_uncond[0] = true;
    a->handle = c;
    a->handle_free = sd_cond_controls_free;
    bool flag;
    sd_value *ba = run_ok("ConditioningCombine", (sd_value *[]){g_b, a});
    if (ba) {
        CHECK(!sd_value_cacheable(ba));
        CHECK(sd_cond_control(ba, 0, &flag) == NULL && !flag);
        CHECK(sd_cond_control(ba, 1, &flag) == link && flag);
        CHECK(sd_cond_control(ba, 2, &flag) == NULL && !flag);
    }
    sd_value *ab = run_ok("ConditioningCombine", (sd_value *[]){a, g_b});
    CHECK(ab && sd_cond_control(ab, 0, &flag) == link && flag && sd_cond_control(ab, 2, NULL) == NULL);
    sd_value *z = run_ok("ConditioningZeroOut", (sd_value *[]){a});
    CHECK(z && sd_cond_control(z, 0, &flag) == link && flag && sd_cond_control(z, 1, NULL) == NULL);
    sd_value_unref(a); /* the outputs hold their own references */
    CHECK(ba && sd_cond_control(ba, 1, NULL) == link);
    sd_value_unref(ba);
    sd_value_unref(ab);
    sd_value_unref(z);
}

static void collect_warning(const char *line, void *user)
{
    snprintf(user, 512, "%s", line);
}

static void test_concat(void)
{
    sd_value *v = run_ok("ConditioningConcat", (sd_value *[]){g_a, g_b});
    if (v) {
        test_expect_tensor(v, "cond.0", 3, (const int64_t[]){1, 5, 2},
                           (const float[]){1, 2, 3, 4, -1, -2, -3, -4, -5, -6});
        test_expect_tensor(v, "cond.1", 3, (const int64_t[]){1, 4, 2}, (const float[]){5, 6, -1, -2, -3, -4, -5, -6});
        test_expect_tensor(v, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){10, 20}); /* to's kept */
        expect_absent(v, "pooled.1");
        test_expect_tensor(v, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        expect_attrs(v, "{\"entries\": [{\"strength\": 1.0}, {\"strength\": 0.5, \"start_percent\": 0.25}]}");
    }
    sd_value_unref(v);
    /* Only conditioning_from's first entry is used, with a warning. */
    char warning[512] = "";
    sd_context_set_log(g_ctx, collect_warning, warning);
    v = run_ok("ConditioningConcat", (sd_value *[]){g_c, g_a});
    sd_context_set_log(g_ctx, NULL, NULL);
    test_expect_tensor(v, "cond.0", 3, (const int64_t[]){1, 3, 2}, (const float[]){7, 8, 1, 2, 3, 4});
    CHECK_STR_EQ(warning, "node 'n' (ConditioningConcat): conditioning_from has 2 entries: only the first is used");
    sd_value_unref(v);
    /* torch.cat needs equal batches. */
    sd_status st;
    CHECK(run_node("ConditioningConcat", (sd_value *[]){g_a, g_d}, &st) == NULL);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(g_ctx),
                 "node 'n' (ConditioningConcat): input 'conditioning_from': first entry's tokens [2, 2, 2] vs entry 0 "
                 "of 'conditioning_to' [1, 2, 2]: the batch and the width must be equal");
}

static void test_average(void)
{
    /* A shorter from for entry 0 (cut to 2 tokens) and entry 1 (cut to 1): to * 0.25 + B * 0.75. */
    sd_value *v = run_ok("ConditioningAverage", (sd_value *[]){g_a, g_b, num(0.25)});
    if (v) {
        test_expect_tensor(v, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){-0.5f, -1, -1.5f, -2});
        test_expect_tensor(v, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){3.25f, 7.25f});
        test_expect_tensor(v, "cond.1", 3, (const int64_t[]){1, 1, 2}, (const float[]){0.5f, 0});
        /* entry 1 has no pooled output: from's (from * s + from * (1 - s)) */
        test_expect_tensor(v, "pooled.1", 2, (const int64_t[]){1, 2}, (const float[]){1, 3});
        test_expect_tensor(v, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        expect_attrs(v, "{\"entries\": [{\"strength\": 1.0}, {\"strength\": 0.5, \"start_percent\": 0.25}]}");
    }
    sd_value_unref(v);
    /* A longer to: from (A's first entry) zero-padded from 2 to 3 tokens. */
    v = run_ok("ConditioningAverage", (sd_value *[]){g_b, g_a, num(0.25)});
    test_expect_tensor(v, "cond.0", 3, (const int64_t[]){1, 3, 2}, (const float[]){0.5f, 1, 1.5f, 2, -1.25f, -1.5f});
    test_expect_tensor(v, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){7.75f, 15.75f});
    expect_attrs(v, "{\"entries\": [{\"strength\": 2.0}]}");
    sd_value_unref(v);
    /* from without a pooled output: to's kept (or still absent). */
    v = run_ok("ConditioningAverage", (sd_value *[]){g_a, g_c, num(0.5)});
    test_expect_tensor(v, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){4, 5, 1.5f, 2});
    test_expect_tensor(v, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){10, 20});
    test_expect_tensor(v, "cond.1", 3, (const int64_t[]){1, 1, 2}, (const float[]){6, 7});
    expect_absent(v, "pooled.1");
    sd_value_unref(v);
    /* A batch of 2 broadcasts over to's batch of 1. */
    v = run_ok("ConditioningAverage", (sd_value *[]){g_a, g_d, num(0.5)});
    test_expect_tensor(v, "cond.0", 3, (const int64_t[]){2, 2, 2}, (const float[]){1, 2, 3, 4, 3, 4, 5, 6});
    test_expect_tensor(v, "cond.1", 3, (const int64_t[]){2, 1, 2}, (const float[]){3, 4, 5, 6}); /* D's first tokens */
    sd_value_unref(v);
    /* ComfyUI pads with zeros of batch 1: a longer to and a from of batch 2 fail. */
    sd_status st;
    CHECK(run_node("ConditioningAverage", (sd_value *[]){g_b, g_d, num(0.5)}, &st) == NULL);
    CHECK_EQ_INT(st, SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(g_ctx),
                 "node 'n' (ConditioningAverage): input 'conditioning_from': first entry's tokens [2, 2, 2] vs entry 0 "
                 "of 'conditioning_to' [1, 3, 2]: only a batch of 1 can be zero-padded to the longer tokens");
}

static void test_zero_out_and_range(void)
{
    sd_value *z = run_ok("ConditioningZeroOut", (sd_value *[]){g_a});
    if (z) {
        test_expect_tensor(z, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){0, 0, 0, 0});
        test_expect_tensor(z, "pooled.0", 2, (const int64_t[]){1, 2}, (const float[]){0, 0});
        test_expect_tensor(z, "cond.1", 3, (const int64_t[]){1, 1, 2}, (const float[]){0, 0});
        expect_absent(z, "pooled.1");
        test_expect_tensor(z, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        expect_attrs(z, "{\"entries\": [{\"strength\": 1.0}, {\"strength\": 0.5, \"start_percent\": 0.25}]}");
    }
    sd_value_unref(z);
    sd_value *r = run_ok("ConditioningSetTimestepRange", (sd_value *[]){g_a, num(0.2), num(0.7)});
    if (r) {
        test_expect_tensor(r, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){1, 2, 3, 4});
        test_expect_tensor(r, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        expect_attrs(r, "{\"entries\": [{\"strength\": 1.0, \"start_percent\": 0.2, \"end_percent\": 0.7},"
                        " {\"strength\": 0.5, \"start_percent\": 0.2, \"end_percent\": 0.7}]}");
    }
    sd_value_unref(r);
    /* The input is left as it was. */
    test_expect_tensor(g_a, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){1, 2, 3, 4});
    expect_attrs(g_a, "{\"entries\": [{\"strength\": 1.0}, {\"strength\": 0.5, \"start_percent\": 0.25}]}");
}

/* ConditioningSetArea, ...Percentage, ...Strength and SetMask set ComfyUI's attributes on every
 * entry (area in latent units, pixels // 8) and keep everything else. */
static void test_area_nodes(void)
{
    sd_value *v = run_ok("ConditioningSetArea",
                         (sd_value *[]){g_a, integer(100), integer(64), integer(17), integer(8), num(2.5)});
    if (v) {
        test_expect_tensor(v, "cond.0", 3, (const int64_t[]){1, 2, 2}, (const float[]){1, 2, 3, 4});
        test_expect_tensor(v, "concat_mask.1", 4, (const int64_t[]){1, 1, 1, 1}, (const float[]){0.5f});
        expect_attrs(v, "{\"entries\": [{\"strength\": 2.5, \"area\": [8, 12, 1, 2], \"set_area_to_bounds\": false},"
                        " {\"strength\": 2.5, \"start_percent\": 0.25, \"area\": [8, 12, 1, 2],"
                        " \"set_area_to_bounds\": false}]}");
    }
    sd_value *p = run_ok("ConditioningSetAreaPercentage", (sd_value *[]){v, num(0.5), num(1.0), num(0.5), num(0), num(1)});
    expect_attrs(p, "{\"entries\": [{\"strength\": 1.0, \"area\": [\"percentage\", 1.0, 0.5, 0.0, 0.5],"
                    " \"set_area_to_bounds\": false}, {\"strength\": 1.0, \"start_percent\": 0.25,"
                    " \"area\": [\"percentage\", 1.0, 0.5, 0.0, 0.5], \"set_area_to_bounds\": false}]}");
    sd_value *s = run_ok("ConditioningSetAreaStrength", (sd_value *[]){g_b, num(0.75)});
    expect_attrs(s, "{\"entries\": [{\"strength\": 0.75}]}");
    sd_value_unref(v), sd_value_unref(p), sd_value_unref(s);

    /* SetMask: the mask on each entry as mask.<i> ([H, W] gets a batch of 1), its strength as
     * mask_strength (the entry's strength is kept), set_area_to_bounds from set_cond_area. */
    sd_value *m = sd_value_new(SD_TYPE_MASK);
    test_put_tensor(m, "mask", 2, (const int64_t[]){2, 3}, (const float[]){0, 0.5f, 1, 0, 0, 1});
    v = run_ok("ConditioningSetMask", (sd_value *[]){g_a, m, num(0.5), keep(sd_value_string(SD_TYPE_ENUM, "mask bounds"))});
    test_expect_tensor(v, "mask.0", 3, (const int64_t[]){1, 2, 3}, (const float[]){0, 0.5f, 1, 0, 0, 1});
    test_expect_tensor(v, "mask.1", 3, (const int64_t[]){1, 2, 3}, (const float[]){0, 0.5f, 1, 0, 0, 1});
    test_expect_tensor(v, "cond.1", 3, (const int64_t[]){1, 1, 2}, (const float[]){5, 6});
    expect_attrs(v, "{\"entries\": [{\"strength\": 1.0, \"mask_strength\": 0.5, \"set_area_to_bounds\": true},"
                    " {\"strength\": 0.5, \"start_percent\": 0.25, \"mask_strength\": 0.5,"
                    " \"set_area_to_bounds\": true}]}");
    /* a second SetMask replaces the mask */
    sd_value *m2 = sd_value_new(SD_TYPE_MASK);
    test_put_tensor(m2, "mask", 3, (const int64_t[]){1, 1, 1}, (const float[]){1});
    sd_value *v2 = run_ok("ConditioningSetMask", (sd_value *[]){v, m2, num(1), keep(sd_value_string(SD_TYPE_ENUM, "default"))});
    test_expect_tensor(v2, "mask.0", 3, (const int64_t[]){1, 1, 1}, (const float[]){1});
    CHECK(v2 && v2->n_tensors == v->n_tensors);
    sd_value_unref(v), sd_value_unref(v2), sd_value_unref(m), sd_value_unref(m2);
}

/* The weight map of get_area_and_mult, worked out by hand. */
static void test_area_mult(void)
{
    /* A 8 x 4 area at y 2, x 0 of a 12 x 12 latent, strength 2: rows feathered over
     * rr = min(8, 8 / 4) = 2 lines at both ends (1/2, 1), columns over rr = 1 at the right
     * (x 4 < 12), which multiplies by 1: nothing. */
    float got[32];
    sd_cond_area_mult(12, 12, (const int64_t[]){8, 4, 2, 0}, NULL, 1.0, 2.0, got);
    const float rows[8] = {1, 2, 2, 2, 2, 2, 2, 1};
    for (int i = 0; i < 32; i++)
        CHECK_MSG(got[i] == rows[i / 4], "mult[%d] = %g, want %g", i, got[i], rows[i / 4]);
    /* A 32 x 32 area at (4, 4) of 40 x 40: rr = 8 on all four sides, corners by both ramps. */
    static float big[32 * 32];
    sd_cond_area_mult(40, 40, (const int64_t[]){32, 32, 4, 4}, NULL, 1.0, 1.0, big);
    CHECK(big[0] == 0.015625f);                /* 1/8 * 1/8 */
    CHECK(big[5] == 0.125f * 0.75f);           /* row ramp 1/8, column 6/8 */
    CHECK(big[8 * 32 + 8] == 1.0f);            /* inside both ramps */
    CHECK(big[31 * 32 + 16] == 0.125f);        /* last row */
    CHECK(big[20 * 32 + 30] == 0.25f);         /* second to last column */
    /* Touching the border: no ramp on that side. An area of 3 rows has rr = 0: none at all. */
    sd_cond_area_mult(40, 40, (const int64_t[]){3, 32, 0, 8}, NULL, 1.0, 1.0, big);
    CHECK(big[0] == 0.125f && big[31] == 1.0f && big[2 * 32 + 16] == 1.0f);
    /* A mask: mask * mask_strength * strength over the area, no ramp. */
    const float mask[4 * 4] = {0, 0.5f, 1, 1, 0.25f, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    sd_cond_area_mult(4, 4, (const int64_t[]){2, 2, 0, 1}, mask, 0.5, 3.0, got);
    const float want[4] = {0.75f, 1.5f, 1.5f, 1.5f};
    for (int i = 0; i < 4; i++)
        CHECK_MSG(got[i] == want[i], "masked mult[%d] = %g, want %g", i, got[i], want[i]);
}

/* ---- the KSampler ---- */

static bool setup(void)
{
    if (sd_context_new(&g_ctx))
        return false;
    sd_context_set_allow_absolute_paths(g_ctx, true); /* test files are named by absolute path */
    sd_checkpoint_config cfg;
    const char *dir = test_scratch_dir();
    ckpt_path = test_path(dir, "tiny.safetensors");
    cn_path = test_path(dir, "tiny_controlnet.safetensors");
    image_path = test_path(test_source_dir(), "examples/input/shapes.png");
    bool ok = sd_checkpoint_preset("tiny", &cfg) && !sd_sd1_write_random(g_ctx, ckpt_path, &cfg, SD_ST_F32, 42) &&
              !sd_controlnet_write_random(g_ctx, cn_path, &cfg.unet, false, SD_ST_F16, 11);
    if (!ok)
        fprintf(stderr, "setup: %s\n", sd_context_errmsg(g_ctx));
    return ok;
}

/* A stock graph with the test's settings; `cfg` as text. */
static sd_graph *load_graph(const char *file, const char *cfg)
{
    char *path = test_path(test_source_dir(), file);
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_load_xml(g_ctx, path, &g), SD_OK);
    free(path);
    if (!g)
        return NULL;
    const char *set[][2] = {{"checkpoint", ckpt_path}, {"prompt", "a red fox"}, {"negative", "blurry"},
                            {"seed", "5"}, {"steps", "4"}, {"cfg", cfg}, {"width", "64"}, {"height", "64"}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_param(g, set[i][0], set[i][1]), SD_OK);
    return g;
}

static sd_graph *txt2img(const char *cfg)
{
    return load_graph("graphs/txt2img.xml", cfg);
}

/* Runs g up to node "sampler" and frees it: the latent (malloc'd, LAT_N floats) or NULL. */
static float *sample(sd_graph *g)
{
    float *out = test_run_latent(g, "sampler", LAT_N);
    sd_graph_free(g);
    return out;
}

/* Adds a CLIPTextEncode `id` of text. */
static void add_prompt(sd_graph *g, const char *id, const char *text)
{
    CHECK_EQ_INT(sd_graph_add_node(g, "CLIPTextEncode", id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "ckpt", "CLIP", id, "clip"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, id, "text", text), SD_OK);
}

/* Adds ConditioningSetTimestepRange `id` on src's CONDITIONING output `out`. */
static void add_range(sd_graph *g, const char *id, const char *src, const char *out, const char *start,
                      const char *end)
{
    CHECK_EQ_INT(sd_graph_add_node(g, "ConditioningSetTimestepRange", id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, src, out, id, "conditioning"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, id, "start", start), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, id, "end", end), SD_OK);
}

/* Adds ConditioningCombine `id` of a and b (CONDITIONING outputs a_out, b_out). */
static void add_combine(sd_graph *g, const char *id, const char *a, const char *a_out, const char *b,
                        const char *b_out)
{
    CHECK_EQ_INT(sd_graph_add_node(g, "ConditioningCombine", id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, a, a_out, id, "conditioning_1"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, b, b_out, id, "conditioning_2"), SD_OK);
}

static void feed(sd_graph *g, const char *src, const char *side)
{
    CHECK_EQ_INT(sd_graph_connect(g, src, "CONDITIONING", "sampler", side), SD_OK);
}

static bool same(const float *a, const float *b)
{
    return a && b && memcmp(a, b, LAT_N * sizeof *a) == 0;
}

static double max_diff(const float *a, const float *b)
{
    return a && b ? test_max_abs_diff(a, b, LAT_N) : INFINITY;
}

static double peak(const float *a)
{
    double m = 0;
    for (size_t i = 0; a && i < LAT_N; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

static bool all_finite(const float *a)
{
    for (size_t i = 0; a && i < LAT_N; i++)
        if (!isfinite(a[i]))
            return false;
    return a != NULL;
}

static float *g_base; /* txt2img: "a red fox" / "blurry", cfg 7.5 */

static void test_sampler_identities(void)
{
    g_base = sample(txt2img("7.5"));
    CHECK(all_finite(g_base) && peak(g_base) > 0.1);

    /* Combine(c, c): two equal entries average to the one. */
    sd_graph *g = txt2img("7.5");
    add_combine(g, "both", "positive", "CONDITIONING", "positive", "CONDITIONING");
    feed(g, "both", "positive");
    float *cc = sample(g);
    CHECK_MSG(same(cc, g_base), "Combine(c, c) differs from c by %.3g", max_diff(cc, g_base));

    /* A [0, 1] range on both sides is no range. */
    g = txt2img("7.5");
    add_range(g, "rp", "positive", "CONDITIONING", "0", "1");
    add_range(g, "rn", "negative", "CONDITIONING", "0", "1");
    feed(g, "rp", "positive");
    feed(g, "rn", "negative");
    float *full = sample(g);
    CHECK_MSG(same(full, g_base), "range [0, 1] differs from no range by %.3g", max_diff(full, g_base));

    /* An entry whose range holds no step ([1, 1]: only sigma 0) is skipped, not averaged in. */
    g = txt2img("7.5");
    add_prompt(g, "other", "a blue whale");
    add_range(g, "never", "other", "CONDITIONING", "1", "1");
    add_combine(g, "both", "positive", "CONDITIONING", "never", "CONDITIONING");
    feed(g, "both", "positive");
    float *skipped = sample(g);
    CHECK_MSG(same(skipped, g_base), "an entry outside its range changed the result by %.3g",
              max_diff(skipped, g_base));
    free(cc), free(full), free(skipped);
}

/* A side none of whose entries applies predicts 0, as ComfyUI's calc_cond_batch
 * (out_cond / (out_count + 1e-37)). */
static void test_sampler_empty_side(void)
{
    /* Both sides out of range at every step: D = 0, and euler takes x to 0 (to rounding). */
    sd_graph *g = txt2img("7.5");
    add_range(g, "rp", "positive", "CONDITIONING", "1", "1");
    add_range(g, "rn", "negative", "CONDITIONING", "1", "1");
    feed(g, "rp", "positive");
    feed(g, "rn", "negative");
    float *none = sample(g);
    printf("  no entry in range: latent peak %.3g (txt2img %.3g)\n", peak(none), peak(g_base));
    CHECK(all_finite(none) && peak(none) < 1e-5);

    /* Only the negative applies, cfg 0.5: D = u + (0 - u) * 0.5 = u / 2. Only the positive (the
     * negative's prompt) applies, cfg 0.5: D = 0 + (u - 0) * 0.5. The same, bit for bit. */
    g = txt2img("0.5");
    add_range(g, "rp", "positive", "CONDITIONING", "1", "1");
    feed(g, "rp", "positive");
    float *neg_only = sample(g);
    g = txt2img("0.5");
    add_range(g, "rn", "negative", "CONDITIONING", "1", "1");
    feed(g, "negative", "positive");
    feed(g, "rn", "negative");
    float *pos_only = sample(g);
    CHECK(all_finite(neg_only) && peak(neg_only) > 0.1);
    CHECK_MSG(same(neg_only, pos_only), "empty positive vs empty negative: %.3g", max_diff(neg_only, pos_only));
    CHECK(max_diff(neg_only, g_base) > 1e-3);
    free(none), free(neg_only), free(pos_only);
}

/* A on the first half of the schedule, B on the second: neither A nor B alone. */
static void test_sampler_switch(void)
{
    sd_graph *g = txt2img("7.5");
    CHECK_EQ_INT(sd_graph_set_param(g, "prompt", "a blue whale"), SD_OK);
    float *b_alone = sample(g);
    g = txt2img("7.5");
    add_prompt(g, "b", "a blue whale");
    add_range(g, "first", "positive", "CONDITIONING", "0", "0.5");
    add_range(g, "second", "b", "CONDITIONING", "0.5", "1");
    add_combine(g, "both", "first", "CONDITIONING", "second", "CONDITIONING");
    feed(g, "both", "positive");
    float *switched = sample(g);
    double da = max_diff(switched, g_base), db = max_diff(switched, b_alone);
    printf("  A then B vs A: %.3g, vs B: %.3g\n", da, db);
    CHECK(all_finite(switched) && da > 1e-3 && db > 1e-3 && max_diff(g_base, b_alone) > 1e-3);
    free(b_alone), free(switched);
}

/* ControlNets ride through Combine: Combine(cn(c), cn(c)) samples as cn(c). */
static void test_sampler_controlnet(void)
{
    sd_graph *g = load_graph("graphs/controlnet-canny.xml", "7.5");
    CHECK_EQ_INT(sd_graph_set_param(g, "controlnet", cn_path), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "image", image_path), SD_OK);
    float *cn = sample(g);
    g = load_graph("graphs/controlnet-canny.xml", "7.5");
    CHECK_EQ_INT(sd_graph_set_param(g, "controlnet", cn_path), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "image", image_path), SD_OK);
    add_combine(g, "both", "apply", "positive", "apply", "positive");
    feed(g, "both", "positive");
    float *twice = sample(g);
    CHECK(all_finite(cn) && max_diff(cn, g_base) > 1e-3);
    CHECK_MSG(same(twice, cn), "Combine(cn(c), cn(c)) differs from cn(c) by %.3g", max_diff(twice, cn));
    free(cn), free(twice);
}

/* Adds ConditioningSetArea `id` on src's CONDITIONING (pixels, strength as text). */
static void add_area(sd_graph *g, const char *id, const char *src, const char *w, const char *h, const char *x,
                     const char *y, const char *strength)
{
    const char *set[][2] = {{"width", w}, {"height", h}, {"x", x}, {"y", y}, {"strength", strength}};
    CHECK_EQ_INT(sd_graph_add_node(g, "ConditioningSetArea", id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, src, "CONDITIONING", id, "conditioning"), SD_OK);
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_input(g, id, set[i][0], set[i][1]), SD_OK);
}

/* Adds SolidMask `mask` of value 1 (w x h pixels) and ConditioningSetMask `id` with it on src. */
static void add_mask(sd_graph *g, const char *id, const char *src, const char *w, const char *h, const char *mode)
{
    CHECK_EQ_INT(sd_graph_add_node(g, "SolidMask", "mask", NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "mask", "width", w), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, "mask", "height", h), SD_OK);
    CHECK_EQ_INT(sd_graph_add_node(g, "ConditioningSetMask", id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, src, "CONDITIONING", id, "conditioning"), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, "mask", "MASK", id, "mask"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, id, "set_cond_area", mode), SD_OK);
}

/* Identities of areas and masks: the whole latent at strength 1 is no area (the negative side
 * then gets a copy of its entry over that area, as ComfyUI's create_cond_with_same_area_if_none,
 * which averages to the same); a mask of ones (any size) is no mask, and so are its bounds. */
static void test_sampler_area_identities(void)
{
    sd_graph *g = txt2img("7.5");
    add_area(g, "area", "positive", "64", "64", "0", "0", "1.0");
    feed(g, "area", "positive");
    float *whole = sample(g);
    CHECK_MSG(same(whole, g_base), "an area over the whole latent differs from none by %.3g", max_diff(whole, g_base));
    g = txt2img("7.5");
    add_area(g, "area", "positive", "64", "64", "0", "0", "1.0");
    add_area(g, "narea", "negative", "64", "64", "0", "0", "1.0");
    feed(g, "area", "positive");
    feed(g, "narea", "negative");
    float *both = sample(g);
    CHECK_MSG(same(both, g_base), "whole areas on both sides differ from none by %.3g", max_diff(both, g_base));
    const char *modes[] = {"default", "mask bounds"};
    for (int k = 0; k < 2; k++) {
        g = txt2img("7.5");
        add_mask(g, "masked", "positive", k ? "64" : "16", k ? "64" : "16", modes[k]);
        feed(g, "masked", "positive");
        float *ones = sample(g);
        CHECK_MSG(same(ones, g_base), "a mask of ones (%s) differs from none by %.3g", modes[k], max_diff(ones, g_base));
        free(ones);
    }
    free(whole), free(both);
}

/* Values of the latent [4, 8, 8] in columns [x0, x1). */
static double max_diff_cols(const float *a, const float *b, int x0, int x1)
{
    double m = 0;
    for (int i = 0; a && b && i < LAT_N; i++)
        if (i % 8 >= x0 && i % 8 < x1)
            m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return a && b ? m : INFINITY;
}

/* Adds ConditioningSetAreaPercentage `id` on src's CONDITIONING, full height, width w at x. */
static void add_area_pct(sd_graph *g, const char *id, const char *src, const char *w, const char *x)
{
    const char *out = strcmp(src, "apply") == 0 ? "positive" : "CONDITIONING"; /* ControlNetApplyAdvanced's */
    CHECK_EQ_INT(sd_graph_add_node(g, "ConditioningSetAreaPercentage", id, NULL), SD_OK);
    CHECK_EQ_INT(sd_graph_connect(g, src, out, id, "conditioning"), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, id, "width", w), SD_OK);
    CHECK_EQ_INT(sd_graph_set_input(g, id, "x", x), SD_OK);
}

/* Regional prompting: A on the left half, B on the right half (percentages of the 8 x 8
 * latent: 4 columns each; ConditioningSetArea's minimum of 64 pixels is the whole test image).
 * Each half is A's or B's prediction on that half alone (the UNet sees only its area), so
 * neither half is the A-only or B-only picture. */
static void test_sampler_left_right(void)
{
    sd_graph *g = txt2img("7.5");
    add_area_pct(g, "area", "positive", "1.0", "0");
    feed(g, "area", "positive");
    float *whole = sample(g);
    CHECK_MSG(same(whole, g_base), "a whole percentage area differs from none by %.3g", max_diff(whole, g_base));
    g = txt2img("7.5");
    CHECK_EQ_INT(sd_graph_set_param(g, "prompt", "a blue whale"), SD_OK);
    float *b_alone = sample(g);
    g = txt2img("7.5");
    add_prompt(g, "b", "a blue whale");
    add_area_pct(g, "left", "positive", "0.5", "0");
    add_area_pct(g, "right", "b", "0.5", "0.5");
    add_combine(g, "both", "left", "CONDITIONING", "right", "CONDITIONING");
    feed(g, "both", "positive");
    float *lr = sample(g);
    double la = max_diff_cols(lr, g_base, 0, 4), lb = max_diff_cols(lr, b_alone, 0, 4);
    double ra = max_diff_cols(lr, g_base, 4, 8), rb = max_diff_cols(lr, b_alone, 4, 8);
    printf("  left/right vs A: %.3g / %.3g, vs B: %.3g / %.3g\n", la, ra, lb, rb);
    CHECK(all_finite(lr) && la > 1e-3 && lb > 1e-3 && ra > 1e-3 && rb > 1e-3);
    free(whole), free(b_alone), free(lr);
}

/* Runs g to the sampler, which must fail with message `want`. */
static void expect_sample_error(sd_graph *g, const char *want)
{
    const char *outputs[] = {"sampler"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    CHECK_EQ_INT(sd_graph_run(g, &o, &res), SD_ERR_INVALID);
    CHECK_STR_EQ(sd_context_errmsg(g_ctx), want);
    sd_result_free(res);
    sd_graph_free(g);
}

static void test_sampler_area_errors(void)
{
    sd_graph *g = txt2img("7.5");
    add_area(g, "area", "positive", "64", "64", "64", "0", "1.0");
    feed(g, "area", "positive");
    expect_sample_error(g, "node 'sampler' (KSampler): input 'positive': entry 0's area starts at x 8, y 0 (latent "
                           "units), outside the 8x8 latent");
    /* An area of any size runs (8 x 3 latent pixels: the UNet's skips go 3 -> 2 -> 1 and back):
     * the negative prompt then acts on the bottom rows only. */
    g = txt2img("7.5");
    add_area(g, "area", "negative", "64", "64", "0", "40", "1.0");
    feed(g, "area", "negative");
    float *bottom = sample(g);
    CHECK(bottom && all_finite(bottom) && g_base && max_diff(bottom, g_base) > 1e-3);
    free(bottom);
}

/* A ControlNet on an entry whose area is half the latent: the whole hint is resized to the area
 * (ComfyUI's get_control on the cropped input; a hint of the wrong size would fail the
 * ControlNet's shape check). At strength 1 it changes the result against strength 0, and the
 * area changes it against the whole latent. */
static void test_sampler_area_controlnet(void)
{
    float *by_strength[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        sd_graph *g = load_graph("graphs/controlnet-canny.xml", "7.5");
        CHECK_EQ_INT(sd_graph_set_param(g, "controlnet", cn_path), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "image", image_path), SD_OK);
        CHECK_EQ_INT(sd_graph_set_param(g, "strength", k ? "1.0" : "0.0"), SD_OK);
        add_area_pct(g, "left", "apply", "0.5", "0");
        feed(g, "left", "positive");
        by_strength[k] = sample(g);
    }
    sd_graph *g = load_graph("graphs/controlnet-canny.xml", "7.5");
    CHECK_EQ_INT(sd_graph_set_param(g, "controlnet", cn_path), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "image", image_path), SD_OK);
    CHECK_EQ_INT(sd_graph_set_param(g, "strength", "0.0"), SD_OK);
    float *plain = sample(g); /* the same ControlNet at strength 0 without the area */
    CHECK(by_strength[0] && by_strength[1] && plain);
    if (by_strength[0] && by_strength[1] && plain) {
        CHECK(all_finite(by_strength[1]));
        CHECK_MSG(max_diff(by_strength[0], by_strength[1]) > 1e-3, "strength 1 on the area changed nothing");
        CHECK_MSG(max_diff(by_strength[0], plain) > 1e-3, "the area changed nothing");
    }
    free(by_strength[0]);
    free(by_strength[1]);
    free(plain);
}

/* A ComfyUI "Save (API Format)" workflow with the five nodes imports, validates and samples. */
static void test_comfy_workflow(void)
{
    char *dir = test_path(test_source_dir(), "tests/data/comfy");
    char *path = test_path(dir, "conditioning_api.json");
    sd_graph *g = NULL;
    CHECK_EQ_INT(sd_graph_import_comfy(g_ctx, path, &g), SD_OK);
    free(dir);
    free(path);
    if (!g)
        return;
    const char *set[][3] = {{"4", "ckpt_name", ckpt_path}, {"5", "width", "64"}, {"5", "height", "64"},
                            {"3", "steps", "3"}};
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++)
        CHECK_EQ_INT(sd_graph_set_input(g, set[i][0], set[i][1], set[i][2]), SD_OK);
    CHECK_EQ_INT(sd_graph_validate(g), SD_OK);
    const char *outputs[] = {"3"};
    sd_run_options o = {.outputs = outputs, .n_outputs = 1, .no_cache = true};
    sd_result *res = NULL;
    sd_status st = sd_graph_run(g, &o, &res);
    CHECK_MSG(st == SD_OK, "%s", sd_context_errmsg(g_ctx));
    const sd_value *v = st ? NULL : sd_result_value(res, "3", "LATENT");
    const sd_tensor *t = v ? sd_value_tensor(v, "samples") : NULL;
    CHECK(t && t->ndim == 4 && t->shape[2] == 8 && t->shape[3] == 8 && all_finite(t->data));
    sd_result_free(res);
    sd_graph_free(g);
}

int main(void)
{
    if (!setup())
        return 1;
    make_inputs();
    RUN(test_combine);
    RUN(test_controls_carried);
    RUN(test_concat);
    RUN(test_average);
    RUN(test_zero_out_and_range);
    RUN(test_sampler_identities);
    RUN(test_sampler_empty_side);
    RUN(test_sampler_switch);
    RUN(test_sampler_controlnet);
    RUN(test_area_nodes);
    RUN(test_area_mult);
    RUN(test_sampler_area_identities);
    RUN(test_sampler_left_right);
    RUN(test_sampler_area_errors);
    RUN(test_sampler_area_controlnet);
    RUN(test_comfy_workflow);
    sd_value_unref(g_a);
    sd_value_unref(g_b);
    sd_value_unref(g_c);
    sd_value_unref(g_d);
    for (size_t i = 0; i < g_n_floats; i++)
        sd_value_unref(g_floats[i]);
    free(g_base);
    free(ckpt_path);
    free(cn_path);
    free(image_path);
    sd_context_free(g_ctx);
    return test_summary("test_conditioning");
}
