/* comfyui_controlnet_aux's line extractors with a network: HEDPreprocessor ("HED Soft-Edge
 * Lines"), PiDiNetPreprocessor ("PiDiNet Soft-Edge Lines") and LineArtPreprocessor ("Realistic
 * Lineart"), with FakeScribblePreprocessor and Scribble_PiDiNet_Preprocessor (their scribble
 * endings), on the networks of ml/annotators/. Each reads its weights from the `annotators`
 * model folder through a file input comfyui_controlnet_aux does not have (it downloads the
 * .pth): the same tensors as .safetensors under the file names given as defaults. */
#include "ml/annotators/hed.h"
#include "ml/annotators/lineart.h"
#include "ml/annotators/pidinet.h"
#include "nodes/aux_run.h"
#include "nodes/node_util.h"
#include <stdlib.h>

/* A network kind: how to check a file, build the network over it, free it, and make one plane
 * from an image. */
typedef struct net_kind {
    sd_status (*inspect)(sd_context *ctx, const sd_safetensors *st);
    sd_status (*create)(sd_cl *cl, const sd_safetensors *st, void **net);
    void (*destroy)(void *net);
    sd_status (*detect)(sd_node_run *r, sd_cl *cl, void *net, bool flag, const sd_img8 *img, unsigned char *map);
} net_kind;

/* The detector's ending: none, its scribble=True lines, or those lines twice, the second time
 * after the padding was cut off (Scribble_PiDiNet_Preprocessor repeats them). */
typedef enum net_ending { PLAIN, SCRIBBLE, SCRIBBLE_TWICE } net_ending;

typedef struct net_run {
    const net_kind *kind;
    sd_cl *cl;
    void *net;
    bool flag; /* safe (HED, PiDiNet) */
    net_ending ending;
} net_run;

static sd_status scribble_lines(sd_node_run *r, unsigned char *plane, int64_t h, int64_t w)
{
    sd_status st = sd_aux_scribble_lines(sd_run_context(r), plane, h, w);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    net_run *n = arg;
    sd_status st = n->kind->detect(r, n->cl, n->net, n->flag, img, map);
    if (!st && n->ending != PLAIN)
        st = scribble_lines(r, map, img->h, img->w);
    return st;
}

/* Opens the file of input `file_input`, builds the network and runs it on every image. */
static sd_status run_net(sd_node_run *r, const net_kind *kind, const char *file_input, bool flag, net_ending ending)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL;
    net_run n = {.kind = kind, .flag = flag, .ending = ending};
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, file_input), &file);
    if (!st && !(st = sd_cl_get(ctx, &n.cl)))
        st = kind->create(n.cl, file, &n.net);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run(r, SD_AUX_CUBIC, detect, &n, ending == SCRIBBLE_TWICE ? scribble_lines : NULL);
    if (n.net)
        kind->destroy(n.net);
    sd_safetensors_close(file);
    return st;
}

/* The check hook's part: the file of input `file_input` must hold the network (reported on the
 * input before anything runs; a missing file was reported by validation). */
static void check_file(sd_node_check *c, const char *file_input, const net_kind *kind)
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, file_input);
    sd_safetensors *st = NULL;
    if (path && sd_safetensors_open(ctx, path, &st) == SD_OK && kind->inspect(ctx, st) == SD_OK) {
        sd_safetensors_close(st);
        return;
    }
    if (path)
        sd_check_problem(c, file_input, "%s", sd_context_errmsg(ctx));
    sd_clear_error(ctx);
    sd_safetensors_close(st);
}

/* Downloads device tensor t into a new host array (*out, the caller frees). */
static sd_status download(sd_node_run *r, const sd_dtensor *t, float **out)
{
    if (!(*out = malloc(sizeof **out * t->numel)))
        return sd_set_error(sd_run_context(r), SD_ERR_NOMEM, "out of memory");
    return sd_dtensor_download(t, *out);
}

/* ---- HED ---- */

static sd_status hed_create(sd_cl *cl, const sd_safetensors *st, void **net)
{
    return sd_hed_new(cl, st, (sd_hed **)net);
}

static void hed_destroy(void *net)
{
    sd_hed_free(net);
}

static sd_status hed_detect(sd_node_run *r, sd_cl *cl, void *net, bool safe, const sd_img8 *img, unsigned char *map)
{
    sd_dtensor *x = NULL, *proj[SD_HED_BLOCKS] = {0};
    float *host[SD_HED_BLOCKS] = {0};
    int64_t ph[SD_HED_BLOCKS], pw[SD_HED_BLOCKS];
    sd_status st = sd_node_aux_upload(r, cl, img, 1.0f, false, &x);
    if (st)
        return st;
    st = sd_hed_forward(net, x, proj);
    for (int b = 0; !st && b < SD_HED_BLOCKS; b++) {
        ph[b] = proj[b]->shape[2], pw[b] = proj[b]->shape[3];
        st = download(r, proj[b], &host[b]);
    }
    if (!st)
        st = sd_hed_edge_map(sd_run_context(r), (const float *const *)host, ph, pw, img->h, img->w, safe, map);
    for (int b = 0; b < SD_HED_BLOCKS; b++) {
        sd_dtensor_free(proj[b]);
        free(host[b]);
    }
    sd_dtensor_free(x);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status hed_inspect(sd_context *ctx, const sd_safetensors *st)
{
    sd_hed_config c;
    return sd_hed_inspect(ctx, st, &c);
}

static const net_kind hed_kind = {hed_inspect, hed_create, hed_destroy, hed_detect};

static void check_hed(sd_node_check *c)
{
    check_file(c, "ckpt_name", &hed_kind);
}

static sd_status run_hed(sd_node_run *r)
{
    return run_net(r, &hed_kind, "ckpt_name", sd_run_string(r, "safe")[0] == 'e', PLAIN);
}

static sd_status run_fake_scribble(sd_node_run *r)
{
    return run_net(r, &hed_kind, "ckpt_name", sd_run_string(r, "safe")[0] == 'e', SCRIBBLE);
}

/* ---- PiDiNet and line art: one output, a plane from its values ---- */

static sd_status pidinet_create(sd_cl *cl, const sd_safetensors *st, void **net)
{
    return sd_pidinet_new(cl, st, (sd_pidinet **)net);
}

static void pidinet_destroy(void *net)
{
    sd_pidinet_free(net);
}

static sd_status lineart_create(sd_cl *cl, const sd_safetensors *st, void **net)
{
    return sd_lineart_new(cl, st, (sd_lineart **)net);
}

static void lineart_destroy(void *net)
{
    sd_lineart_free(net);
}

/* PiDiNet takes BGR, line art RGB; both [0, 1]. */
static sd_status single_detect(sd_node_run *r, sd_cl *cl, void *net, bool pidinet, bool safe, const sd_img8 *img,
                               unsigned char *map)
{
    sd_dtensor *x = NULL, *y = NULL;
    float *host = NULL;
    sd_status st = sd_node_aux_upload(r, cl, img, 255.0f, pidinet, &x);
    if (st)
        return st;
    st = pidinet ? sd_pidinet_forward(net, x, &y) : sd_lineart_forward(net, x, &y);
    if (!st && !(st = download(r, y, &host))) {
        if (pidinet)
            sd_pidinet_map(host, y->numel, safe, map);
        else
            sd_lineart_map(host, y->numel, map);
    }
    free(host);
    sd_dtensor_free(x);
    sd_dtensor_free(y);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status pidinet_detect(sd_node_run *r, sd_cl *cl, void *net, bool safe, const sd_img8 *img,
                                unsigned char *map)
{
    return single_detect(r, cl, net, true, safe, img, map);
}

static sd_status lineart_detect(sd_node_run *r, sd_cl *cl, void *net, bool coarse, const sd_img8 *img,
                                unsigned char *map)
{
    (void)coarse; /* chose the file */
    return single_detect(r, cl, net, false, false, img, map);
}

static sd_status pidinet_inspect(sd_context *ctx, const sd_safetensors *st)
{
    sd_pidinet_config c;
    return sd_pidinet_inspect(ctx, st, &c);
}

static sd_status lineart_inspect(sd_context *ctx, const sd_safetensors *st)
{
    sd_lineart_config c;
    return sd_lineart_inspect(ctx, st, &c);
}

static const net_kind pidinet_kind = {pidinet_inspect, pidinet_create, pidinet_destroy, pidinet_detect};
static const net_kind lineart_kind = {lineart_inspect, lineart_create, lineart_destroy, lineart_detect};

static void check_pidinet(sd_node_check *c)
{
    check_file(c, "ckpt_name", &pidinet_kind);
}

/* Only the file the coarse choice reads. */
static void check_lineart(sd_node_check *c)
{
    const char *coarse = sd_check_literal(c, "coarse");
    check_file(c, coarse && coarse[0] == 'e' ? "coarse_ckpt_name" : "ckpt_name", &lineart_kind);
}

static sd_status run_pidinet(sd_node_run *r)
{
    return run_net(r, &pidinet_kind, "ckpt_name", sd_run_string(r, "safe")[0] == 'e', PLAIN);
}

static sd_status run_scribble_pidinet(sd_node_run *r)
{
    return run_net(r, &pidinet_kind, "ckpt_name", sd_run_string(r, "safe")[0] == 'e', SCRIBBLE_TWICE);
}

static sd_status run_lineart(sd_node_run *r)
{
    bool coarse = sd_run_string(r, "coarse")[0] == 'e';
    return run_net(r, &lineart_kind, coarse ? "coarse_ckpt_name" : "ckpt_name", coarse, PLAIN);
}

/* ---- Descriptors ---- */

#define ANNOTATOR_FILE(nm, file, dc) \
    {.name = nm, .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators", .def = file, .doc = dc}
#define SAFE_INPUT SD_IN_ENUM("safe", "enable", enable_disable, "enable: quantise the edges to three levels (safe_step)")

static const char *const enable_disable[] = {"enable", "disable", NULL};
static const char *const disable_enable[] = {"disable", "enable", NULL};
static const sd_output_desc soft_edges[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "soft edges, white on black, at the detect resolution")};
static const sd_output_desc lines[] = {SD_OUT("IMAGE", SD_TYPE_IMAGE, "white lines on black at the detect resolution")};

static const sd_input_desc hed_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SAFE_INPUT,
    SD_IN_AUX_RESOLUTION,
    ANNOTATOR_FILE("ckpt_name", "ControlNetHED.safetensors", "ControlNetHED.pth's tensors as .safetensors in models/annotators"),
};
const sd_node_desc sd_node_HEDPreprocessor = {
    .name = "HEDPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "HED soft-edge lines (comfyui_controlnet_aux's HEDdetector).",
    .inputs = hed_inputs, .n_inputs = SD_COUNT(hed_inputs),
    .outputs = soft_edges, .n_outputs = 1, .run = run_hed, .check = check_hed,
};

const sd_node_desc sd_node_FakeScribblePreprocessor = {
    .name = "FakeScribblePreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Fake scribble lines (scribble_hed): HED's edges thinned (nms), blurred and thresholded.",
    .inputs = hed_inputs, .n_inputs = SD_COUNT(hed_inputs),
    .outputs = lines, .n_outputs = 1, .run = run_fake_scribble, .check = check_hed,
};

static const sd_input_desc pidinet_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SAFE_INPUT,
    SD_IN_AUX_RESOLUTION,
    ANNOTATOR_FILE("ckpt_name", "table5_pidinet.safetensors",
                   "table5_pidinet.pth's state_dict as .safetensors in models/annotators"),
};
const sd_node_desc sd_node_PiDiNetPreprocessor = {
    .name = "PiDiNetPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "PiDiNet soft-edge lines (comfyui_controlnet_aux's PidiNetDetector).",
    .inputs = pidinet_inputs, .n_inputs = SD_COUNT(pidinet_inputs),
    .outputs = soft_edges, .n_outputs = 1, .run = run_pidinet, .check = check_pidinet,
};

const sd_node_desc sd_node_Scribble_PiDiNet_Preprocessor = {
    .name = "Scribble_PiDiNet_Preprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Scribble lines from PiDiNet: its edges thinned, blurred and thresholded, twice as comfyui_controlnet_aux does.",
    .inputs = pidinet_inputs, .n_inputs = SD_COUNT(pidinet_inputs),
    .outputs = lines, .n_outputs = 1, .run = run_scribble_pidinet, .check = check_pidinet,
};

static const sd_input_desc lineart_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_ENUM("coarse", "disable", disable_enable, "enable: the coarse model (sk_model2)"),
    SD_IN_AUX_RESOLUTION,
    ANNOTATOR_FILE("ckpt_name", "sk_model.safetensors", "sk_model.pth's tensors as .safetensors in models/annotators"),
    ANNOTATOR_FILE("coarse_ckpt_name", "sk_model2.safetensors",
                   "sk_model2.pth's tensors as .safetensors in models/annotators"),
};
const sd_node_desc sd_node_LineArtPreprocessor = {
    .name = "LineArtPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Realistic line art (comfyui_controlnet_aux's LineartDetector), fine or coarse.",
    .inputs = lineart_inputs, .n_inputs = SD_COUNT(lineart_inputs),
    .outputs = lines, .n_outputs = 1, .run = run_lineart, .check = check_lineart,
};
