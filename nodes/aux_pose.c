/* OpenposePreprocessor (comfyui_controlnet_aux's "OpenPose Pose"): the body keypoints of every
 * person, found by the CMU body network (ml/annotators/openpose.h) and body.py's steps
 * (ml/annotators/pose_keypoints.h), drawn as util.draw_bodypose draws them
 * (ml/annotators/pose_draw.h) on a black canvas of the detect resolution. Hand and face
 * detection are not implemented: detect_hand and detect_face default to "disable" here and
 * "enable" is refused before anything runs. */
#include "ml/annotators/openpose.h"
#include "ml/annotators/pose_keypoints.h"
#include "nodes/aux_run.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

typedef struct pose_run {
    sd_cl *cl;
    sd_pose_net *body;
    bool draw_body, xinsr;
} pose_run;

static sd_status detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    pose_run *p = arg;
    sd_context *ctx = sd_run_context(r);
    int64_t h = img->h, w = img->w;
    double *heat = NULL, *paf = NULL;
    sd_pose_person *people = NULL;
    size_t n = 0;
    sd_status st = sd_pose_body_maps(p->cl, p->body, img, &heat, &paf);
    if (!st)
        st = sd_pose_find_people(ctx, heat, paf, (int)h, (int)w, &people, &n);
    if (!st) {
        memset(map, 0, (size_t)(h * w * 3));
        for (size_t i = 0; p->draw_body && i < n; i++) { /* detect_poses normalises, draw_bodypose scales */
            sd_pose_point pts[SD_POSE_BODY_POINTS];
            for (int k = 0; k < SD_POSE_BODY_POINTS; k++)
                pts[k] = (sd_pose_point){people[i].points[k].x / (double)w, people[i].points[k].y / (double)h,
                                         people[i].points[k].present};
            sd_pose_draw_body(map, (int)w, (int)h, pts, p->xinsr);
        }
    }
    free(people), free(heat), free(paf);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_openpose(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL;
    pose_run p = {.draw_body = strcmp(sd_run_string(r, "detect_body"), "enable") == 0,
                  .xinsr = strcmp(sd_run_string(r, "scale_stick_for_xinsr_cn"), "enable") == 0};
    if (strcmp(sd_run_string(r, "detect_hand"), "enable") == 0 || strcmp(sd_run_string(r, "detect_face"), "enable") == 0)
        return sd_run_error(r, SD_ERR_INVALID, "hand and face detection are not implemented; set detect_hand and "
                            "detect_face to disable");
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "body_ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &p.cl)))
        st = sd_pose_net_new(p.cl, file, SD_POSE_BODY, &p.body);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_node_aux_run_channels(r, SD_AUX_CUBIC, 3, detect, &p, NULL);
    sd_pose_net_free(p.body);
    sd_safetensors_close(file);
    return st;
}

/* Before running: hand and face detection refused; the body file must hold the network. */
static void check_openpose(sd_node_check *c)
{
    static const char *const unsupported[] = {"detect_hand", "detect_face"};
    for (int i = 0; i < 2; i++) {
        const char *v = sd_check_literal(c, unsupported[i]);
        if (v && strcmp(v, "enable") == 0)
            sd_check_problem(c, unsupported[i], "hand and face detection are not implemented; set it to disable");
    }
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, "body_ckpt_name");
    sd_safetensors *st = NULL;
    if (path && (sd_safetensors_open(ctx, path, &st) || sd_pose_inspect(ctx, st, SD_POSE_BODY)))
        sd_check_problem(c, "body_ckpt_name", "%s", sd_context_errmsg(ctx));
    sd_clear_error(ctx);
    sd_safetensors_close(st);
}

static const char *const enable_disable[] = {"enable", "disable", NULL};
static const char *const disable_enable[] = {"disable", "enable", NULL};
static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_ENUM("detect_hand", "disable", enable_disable, "hand keypoints (not implemented: only disable runs)"),
    SD_IN_ENUM("detect_body", "enable", enable_disable, "draw the body skeletons"),
    SD_IN_ENUM("detect_face", "disable", enable_disable, "face keypoints (not implemented: only disable runs)"),
    SD_IN_AUX_RESOLUTION,
    SD_IN_ENUM("scale_stick_for_xinsr_cn", "disable", disable_enable,
               "wider limbs on large images, for xinsir's SDXL OpenPose ControlNet"),
    {.name = "body_ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "body_pose_model.pth", .doc = "lllyasviel/Annotators' body_pose_model.pth (or its tensors as .safetensors) "
                                          "in models/annotators"},
};
static const sd_output_desc outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the skeletons on black at the detect resolution")};
const sd_node_desc sd_node_OpenposePreprocessor = {
    .name = "OpenposePreprocessor", .version = 1, .category = "ControlNet Preprocessors/Faces and Poses Estimators",
    .doc = "OpenPose body skeletons (comfyui_controlnet_aux's OpenPose Pose; bodies only).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run_openpose, .check = check_openpose,
};
