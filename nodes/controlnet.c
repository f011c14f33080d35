/* ControlNetLoader, ControlNetApply and ControlNetApplyAdvanced (ComfyUI's nodes.py and
 * comfy/controlnet.py). The loader opens and checks the file (weights upload on first use); the
 * apply nodes copy the conditioning and attach to each entry a link holding the ControlNet, the
 * hint image, the strength and the percent range, chained to the entry's previous ControlNet
 * (ml/adapters/control_eval.h). The samplers evaluate the links. */
#include "ml/adapters/control_eval.h"
#include "nodes/conditioning.h"
#include "nodes/model_handle.h"
#include "nodes/family_check.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

static void controlnet_free(void *p)
{
    sd_controlnet_unref(p);
}

static const char *const weight_dtypes[] = {"fp16", "fp32", NULL};

/* The loaders' file, opened with their weight_dtype. */
static sd_status open_file(sd_node_run *r, sd_controlnet **cn)
{
    sd_dtype dtype = strcmp(sd_run_string(r, "weight_dtype"), "fp32") == 0 ? SD_DTYPE_F32 : SD_DTYPE_F16;
    return sd_controlnet_open(sd_run_context(r), sd_run_file(r, "control_net_name"), dtype, cn);
}

/* Output 0 takes cn over (a CONTROL_NET value). */
static sd_status set_output(sd_node_run *r, sd_controlnet *cn)
{
    sd_value *v = sd_value_handle(SD_TYPE_CONTROL_NET, cn, controlnet_free); /* frees cn on failure */
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static sd_status run_loader(sd_node_run *r)
{
    sd_controlnet *cn;
    sd_status st = open_file(r, &cn);
    return st ? sd_node_model_fail(r, st) : set_output(r, cn);
}

static const sd_input_desc loader_in[] = {
    SD_IN_FILE_NAME("control_net_name", "controlnet",
                    "SD1.x or SDXL ControlNet (original or diffusers layout) or T2I-Adapter in models/controlnet"),
    SD_IN_ENUM("weight_dtype", "fp16", weight_dtypes, "device storage of the weights: fp16 (half the memory) or fp32"),
};
static const sd_output_desc loader_out[] = {
    SD_OUT("CONTROL_NET", SD_TYPE_CONTROL_NET, "the ControlNet"),
};
const sd_node_desc sd_node_ControlNetLoader = {
    .name = "ControlNetLoader", .version = 1, .category = "loaders",
    .doc = "Opens a ControlNet or T2I-Adapter; weights upload when sampling first uses it.",
    .inputs = loader_in, .n_inputs = SD_COUNT(loader_in),
    .outputs = loader_out, .n_outputs = SD_COUNT(loader_out), .run = run_loader,
    .check = sd_check_controlnet_loader,
};

/* DiffControlNetLoader's model: the MODEL value (one reference), its UNet looked up per weight
 * (the model store may have released and re-created it; LoRAs on the MODEL are included). */
static sd_status model_weight(void *user, const char *name, const sd_dtensor **out)
{
    const sd_model_handle *h = ((sd_value *)user)->handle;
    sd_unet *u;
    sd_status st = sd_node_model_unet(h, &u);
    return st ? st : sd_unet_weight(u, name, out);
}

static void model_release(void *user)
{
    sd_value_unref(user);
}

static sd_status run_diff_loader(sd_node_run *r)
{
    const sd_model_handle *h = sd_node_model_input(r, "model");
    if (!h)
        return SD_ERR_INVALID;
    sd_controlnet *cn;
    sd_status st = open_file(r, &cn);
    sd_controlnet_base base = {.get = model_weight, .release = model_release,
                               .user = sd_value_ref(sd_run_value(r, "model"))};
    sd_family model = sd_loaded_config(h->loaded)->family;
    bool difference = !st && sd_controlnet_is_difference(cn);
    if (difference && sd_controlnet_family(cn) != model) {
        model_release(base.user);
        st = sd_set_error(sd_run_context(r), SD_ERR_INVALID, "%s: %s difference ControlNet; the model is %s",
                          sd_controlnet_path(cn), sd_family_name(sd_controlnet_family(cn)), sd_family_name(model));
    } else if (difference) {
        st = sd_controlnet_set_base(cn, &base);
    } else {
        model_release(base.user);
    }
    if (st) {
        sd_controlnet_unref(cn);
        return sd_node_model_fail(r, st);
    }
    return set_output(r, cn);
}

static const sd_input_desc diff_loader_in[] = {
    SD_IN_LINK("model", SD_TYPE_MODEL, "the model whose UNet weights a difference ControlNet's are added to"),
    SD_IN_FILE_NAME("control_net_name", "controlnet",
                    "difference ControlNet (control_model.* and a 'difference' tensor), or any file "
                    "ControlNetLoader takes, in models/controlnet"),
    SD_IN_ENUM("weight_dtype", "fp16", weight_dtypes, "device storage of the weights: fp16 (half the memory) or fp32"),
};
const sd_node_desc sd_node_DiffControlNetLoader = {
    .name = "DiffControlNetLoader", .version = 1, .category = "loaders",
    .doc = "Opens a difference ControlNet, whose weights are added to the model's UNet weights (other "
           "ControlNets and T2I-Adapters load as ControlNetLoader does).",
    .inputs = diff_loader_in, .n_inputs = SD_COUNT(diff_loader_in),
    .outputs = loader_out, .n_outputs = SD_COUNT(loader_out), .run = run_diff_loader,
    .check = sd_check_diff_controlnet_loader,
};

/* ---- applying ---- */

typedef struct apply_args {
    sd_controlnet *net;
    sd_value *image;
    double strength, start, end;
    bool to_uncond;
    /* ComfyUI's cnets: one new link per previous link, shared by every entry that had it. */
    const sd_control_link **prev;
    sd_control_link **made;
    size_t n_made;
} apply_args;

static sd_controlnet *controlnet_input(sd_node_run *r)
{
    sd_value *v = sd_run_value(r, "control_net");
    if (!v || v->handle_free != controlnet_free) {
        sd_run_error(r, SD_ERR_INVALID, "input 'control_net' carries no loaded ControlNet");
        return NULL;
    }
    return v->handle;
}

/* Reads the shared inputs and checks the hint image against the ControlNet. */
static sd_status read_args(sd_node_run *r, apply_args *a)
{
    memset(a, 0, sizeof *a);
    if (!(a->net = controlnet_input(r)))
        return SD_ERR_INVALID;
    a->image = sd_run_value(r, "image");
    a->strength = sd_run_float(r, "strength");
    const sd_tensor *t = sd_value_tensor(a->image, "image");
    int want = sd_controlnet_config_of(a->net)->hint_channels;
    if (!t || t->ndim != 4 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1)
        return sd_run_error(r, SD_ERR_INVALID, "input 'image' is not an image [batch, height, width, channels]");
    if (!sd_controlnet_takes_channels(a->net, t->shape[3]))
        return sd_run_error(r, SD_ERR_INVALID, "input 'image' has %lld channels, the ControlNet takes %d",
                            (long long)t->shape[3], want);
    return SD_OK;
}

static void args_free(apply_args *a)
{
    for (size_t i = 0; i < a->n_made; i++)
        sd_control_link_unref(a->made[i]);
    free(a->made);
    free(a->prev);
}

/* The link for an entry whose previous ControlNet is prev (shared per prev). */
static sd_control_link *link_for(apply_args *a, sd_control_link *prev)
{
    for (size_t i = 0; i < a->n_made; i++)
        if (a->prev[i] == prev)
            return a->made[i];
    const sd_control_link **p = realloc(a->prev, (a->n_made + 1) * sizeof *p);
    if (p)
        a->prev = p;
    sd_control_link **m = p ? realloc(a->made, (a->n_made + 1) * sizeof *m) : NULL;
    if (m)
        a->made = m;
    sd_control_link *l = m ? sd_control_link_new(a->net, a->image, a->strength, a->start, a->end, prev) : NULL;
    if (l) {
        a->prev[a->n_made] = prev;
        a->made[a->n_made++] = l;
    }
    return l;
}

/* A copy of the CONDITIONING input `input` whose entries carry the new links. */
static sd_status apply(sd_node_run *r, apply_args *a, const char *input, size_t output)
{
    const sd_value *in = sd_run_value(r, input);
    size_t n;
    if (!sd_node_cond_entries(r, input, &n))
        return SD_ERR_INVALID;
    sd_value *out = sd_cond_copy(in);
    sd_cond_controls *c = sd_cond_controls_new(n);
    bool ok = out && c;
    for (size_t i = 0; ok && i < n; i++) {
        sd_control_link *l = link_for(a, (sd_control_link *)sd_cond_control(in, i, NULL));
        ok = l != NULL;
        c->links[i] = sd_control_link_ref(l);
        c->to_uncond[i] = a->to_uncond;
    }
    if (!ok) {
        sd_value_unref(out);
        sd_cond_controls_free(c);
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    }
    if (out->handle_free) /* the copy's attachment (the previous links) gives way to the new one */
        out->handle_free(out->handle);
    out->handle = c;
    out->handle_free = sd_cond_controls_free;
    sd_run_set_output(r, output, out);
    return SD_OK;
}

static sd_status run_apply(sd_node_run *r)
{
    apply_args a;
    sd_status st = read_args(r, &a);
    if (st)
        return st;
    if (a.strength == 0.0) { /* as ComfyUI: the conditioning unchanged */
        sd_run_set_output(r, 0, sd_value_ref(sd_run_value(r, "conditioning")));
        return SD_OK;
    }
    a.start = 0.0, a.end = 1.0, a.to_uncond = true;
    st = apply(r, &a, "conditioning", 0);
    args_free(&a);
    return st;
}

static const sd_input_desc apply_in[] = {
    SD_IN_LINK("conditioning", SD_TYPE_CONDITIONING, "the conditioning to control"),
    SD_IN_LINK("control_net", SD_TYPE_CONTROL_NET, "the ControlNet"),
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the hint (edges, depth, pose, scribble, ...), RGB in [0, 1]"),
    SD_IN_FLOAT("strength", "1.0", 0.0, 10.0, "multiplies the residuals; 0 leaves the conditioning unchanged"),
};
static const sd_output_desc apply_out[] = {
    SD_OUT("CONDITIONING", SD_TYPE_CONDITIONING, "the conditioning with the ControlNet attached"),
};
const sd_node_desc sd_node_ControlNetApply = {
    .name = "ControlNetApply", .version = 1, .category = "conditioning/controlnet",
    .doc = "Attaches a ControlNet and its hint image to a conditioning (also applied to the negative side).",
    .inputs = apply_in, .n_inputs = SD_COUNT(apply_in),
    .outputs = apply_out, .n_outputs = SD_COUNT(apply_out), .run = run_apply,
    .check = sd_check_controlnet_apply,
};

static sd_status run_apply_advanced(sd_node_run *r)
{
    apply_args a;
    sd_status st = read_args(r, &a);
    if (st)
        return st;
    if (a.strength == 0.0) {
        sd_run_set_output(r, 0, sd_value_ref(sd_run_value(r, "positive")));
        sd_run_set_output(r, 1, sd_value_ref(sd_run_value(r, "negative")));
        return SD_OK;
    }
    a.start = sd_run_float(r, "start_percent");
    a.end = sd_run_float(r, "end_percent");
    st = apply(r, &a, "positive", 0);
    if (!st)
        st = apply(r, &a, "negative", 1);
    args_free(&a);
    return st;
}

static const sd_input_desc advanced_in[] = {
    SD_IN_LINK("positive", SD_TYPE_CONDITIONING, "the positive conditioning"),
    SD_IN_LINK("negative", SD_TYPE_CONDITIONING, "the negative conditioning"),
    SD_IN_LINK("control_net", SD_TYPE_CONTROL_NET, "the ControlNet"),
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the hint (edges, depth, pose, scribble, ...), RGB in [0, 1]"),
    SD_IN_FLOAT("strength", "1.0", 0.0, 10.0, "multiplies the residuals; 0 leaves the conditioning unchanged"),
    SD_IN_FLOAT("start_percent", "0.0", 0.0, 1.0, "fraction of the schedule where the ControlNet starts acting"),
    SD_IN_FLOAT("end_percent", "1.0", 0.0, 1.0, "fraction of the schedule where it stops"),
};
static const sd_output_desc advanced_out[] = {
    SD_OUT("positive", SD_TYPE_CONDITIONING, "the positive conditioning with the ControlNet attached"),
    SD_OUT("negative", SD_TYPE_CONDITIONING, "the negative conditioning with the ControlNet attached"),
};
const sd_node_desc sd_node_ControlNetApplyAdvanced = {
    .name = "ControlNetApplyAdvanced", .version = 1, .category = "conditioning/controlnet",
    .doc = "Attaches a ControlNet and its hint to positive and negative conditioning over a percent range.",
    .inputs = advanced_in, .n_inputs = SD_COUNT(advanced_in),
    .outputs = advanced_out, .n_outputs = SD_COUNT(advanced_out), .run = run_apply_advanced,
    .check = sd_check_controlnet_apply_advanced,
};
