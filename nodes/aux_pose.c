/* OpenposePreprocessor (comfyui_controlnet_aux's "OpenPose Pose"): the body keypoints of every
 * person, found by the CMU body network (ml/annotators/openpose.h) and body.py's steps
 * (ml/annotators/pose_keypoints.h), with detect_hand each person's hands (the hand network over
 * the boxes of ml/annotators/pose_hand.h) and with detect_face each person's face (the face
 * network over the box of ml/annotators/pose_face.h), drawn as util.draw_bodypose,
 * draw_handpose and draw_facepose draw them (ml/annotators/pose_draw.h) on a black canvas of the
 * detect resolution; the keypoints also come out as the aux node's POSE_KEYPOINT, OpenPose JSON
 * text. */
#include "ml/annotators/openpose.h"
#include "ml/annotators/pose_face.h"
#include "ml/annotators/pose_hand.h"
#include "ml/annotators/pose_json.h"
#include "ml/annotators/pose_keypoints.h"
#include "nodes/aux_run.h"
#include "nodes/image_device.h"
#include "nodes/node_util.h"
#include <stdlib.h>
#include <string.h>

typedef struct pose_run {
    sd_cl *cl;
    sd_pose_net *body, *hand, *face; /* hand, face: NULL without detect_hand, detect_face */
    bool draw_body, xinsr;
    int64_t canvas_h, canvas_w; /* each item's output size */
    sd_pose_frame *frames;      /* one per item so far; their people malloc'd */
    size_t n_frames;
} pose_run;

/* detect_hands for one person into e: each box's keypoints (left, then right). */
static sd_status find_hands(pose_run *p, const sd_img8 *img, const sd_pose_person *person, sd_pose_entry *e)
{
    sd_pose_hand_box boxes[2];
    int n = sd_pose_hand_boxes(person, (int)img->h, (int)img->w, boxes);
    for (int i = 0; i < n; i++) {
        int side = boxes[i].left ? 0 : 1;
        sd_status st = sd_pose_hand_keypoints(p->cl, p->hand, img, &boxes[i], e->hand[side]);
        if (st)
            return st;
        e->has_hand[side] = true;
    }
    return SD_OK;
}

static sd_status detect(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    pose_run *p = arg;
    sd_context *ctx = sd_run_context(r);
    int64_t h = img->h, w = img->w;
    double *heat = NULL, *paf = NULL;
    sd_pose_person *people = NULL;
    sd_pose_entry *found = NULL;
    size_t n = 0;
    sd_status st = sd_pose_body_maps(p->cl, p->body, img, &heat, &paf);
    if (!st)
        st = sd_pose_find_people(ctx, heat, paf, (int)h, (int)w, &people, &n);
    if (!st && n && !(found = calloc(n, sizeof *found)))
        st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory for %zu poses", n);
    if (!st) {
        memset(map, 0, (size_t)(h * w * 3));
        for (size_t i = 0; !st && i < n; i++) { /* detect_poses normalises, draw_bodypose scales */
            for (int k = 0; k < SD_POSE_BODY_POINTS; k++)
                found[i].body[k] = (sd_pose_point){people[i].points[k].x / (double)w,
                                                   people[i].points[k].y / (double)h, people[i].points[k].present};
            if (p->draw_body)
                sd_pose_draw_body(map, (int)w, (int)h, found[i].body, p->xinsr);
            if (p->hand && !(st = find_hands(p, img, &people[i], &found[i])))
                for (int side = 0; side < 2; side++)
                    if (found[i].has_hand[side])
                        sd_pose_draw_hand(map, (int)w, (int)h, (const float(*)[2])found[i].hand[side]);
            sd_pose_face_box box;
            if (!st && p->face && sd_pose_face_box_find(&people[i], (int)h, (int)w, &box) &&
                !(st = sd_pose_face_keypoints(p->cl, p->face, img, &box, found[i].face, &found[i].n_face)))
                sd_pose_draw_face(map, (int)w, (int)h, (const float(*)[2])found[i].face, found[i].n_face);
        }
    }
    if (!st) /* run_openpose sized frames for every item */
        p->frames[p->n_frames++] = (sd_pose_frame){found, n, p->canvas_h, p->canvas_w};
    else
        free(found);
    free(people), free(heat), free(paf);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_openpose(sd_node_run *r)
{
    sd_context *ctx = sd_run_context(r);
    sd_safetensors *file = NULL, *hand_file = NULL, *face_file = NULL;
    pose_run p = {.draw_body = strcmp(sd_run_string(r, "detect_body"), "enable") == 0,
                  .xinsr = strcmp(sd_run_string(r, "scale_stick_for_xinsr_cn"), "enable") == 0};
    bool hands = strcmp(sd_run_string(r, "detect_hand"), "enable") == 0;
    bool faces = strcmp(sd_run_string(r, "detect_face"), "enable") == 0;
    sd_status st = sd_safetensors_open(ctx, sd_run_file(r, "body_ckpt_name"), &file);
    if (!st && !(st = sd_cl_get(ctx, &p.cl)))
        st = sd_pose_net_new(p.cl, file, SD_POSE_BODY, &p.body);
    if (!st && hands && !(st = sd_safetensors_open(ctx, sd_run_file(r, "hand_ckpt_name"), &hand_file)))
        st = sd_pose_net_new(p.cl, hand_file, SD_POSE_HAND_NET, &p.hand);
    if (!st && faces && !(st = sd_safetensors_open(ctx, sd_run_file(r, "face_ckpt_name"), &face_file)))
        st = sd_pose_net_new(p.cl, face_file, SD_POSE_FACE_NET, &p.face);
    const sd_tensor *t = st ? NULL : sd_node_image_tensor(r, "image");
    if (st)
        st = sd_run_fail(r, st);
    else if (!t)
        st = SD_ERR_INVALID;
    else /* a size out of range is the frame's error */
        (void)sd_aux_target_size(t->shape[1], t->shape[2], sd_run_int(r, "resolution"), &p.canvas_h, &p.canvas_w);
    if (!st && t && !(p.frames = calloc((size_t)t->shape[0], sizeof *p.frames)))
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for the poses");
    if (!st)
        st = sd_node_aux_run_channels(r, SD_AUX_CUBIC, 3, detect, &p, NULL);
    char *json = st ? NULL : sd_pose_json(p.frames, p.n_frames);
    sd_value *v = json ? sd_value_string(SD_TYPE_POSE_KEYPOINT, json) : NULL;
    if (!st && !v)
        st = sd_run_error(r, SD_ERR_NOMEM, "out of memory for the pose keypoints");
    if (!st)
        sd_run_set_output(r, 1, v);
    free(json);
    for (size_t i = 0; i < p.n_frames; i++)
        free((void *)p.frames[i].people);
    free(p.frames);
    sd_pose_net_free(p.body);
    sd_pose_net_free(p.hand);
    sd_pose_net_free(p.face);
    sd_safetensors_close(file);
    sd_safetensors_close(hand_file);
    sd_safetensors_close(face_file);
    return st;
}

/* The network file of input `name` must hold the `kind` network. */
static void check_net(sd_node_check *c, const char *name, sd_pose_kind kind)
{
    sd_context *ctx = sd_check_context(c);
    const char *path = sd_check_file(c, name);
    sd_safetensors *st = NULL;
    if (path && (sd_safetensors_open(ctx, path, &st) || sd_pose_inspect(ctx, st, kind)))
        sd_check_problem(c, name, "%s", sd_context_errmsg(ctx));
    sd_clear_error(ctx);
    sd_safetensors_close(st);
}

/* Before running: the body file (and with detect_hand the hand file, with detect_face the face
 * file) must hold the network. */
static void check_openpose(sd_node_check *c)
{
    const char *face = sd_check_literal(c, "detect_face"), *hand = sd_check_literal(c, "detect_hand");
    check_net(c, "body_ckpt_name", SD_POSE_BODY);
    if (hand && strcmp(hand, "enable") == 0)
        check_net(c, "hand_ckpt_name", SD_POSE_HAND_NET);
    if (face && strcmp(face, "enable") == 0)
        check_net(c, "face_ckpt_name", SD_POSE_FACE_NET);
}

/* Version 1 ran only with detect_face disable (its default): one not given as text becomes so. */
static sd_status upgrade_openpose(sd_node_upgrade *up, int from_version)
{
    (void)from_version;
    return sd_upgrade_literal(up, "detect_face") ? SD_OK : sd_upgrade_set_literal(up, "detect_face", "disable");
}

static const char *const enable_disable[] = {"enable", "disable", NULL};
static const char *const disable_enable[] = {"disable", "enable", NULL};
static const sd_input_desc inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_ENUM("detect_hand", "enable", enable_disable, "find and draw each person's hands (the hand network)"),
    SD_IN_ENUM("detect_body", "enable", enable_disable, "draw the body skeletons"),
    SD_IN_ENUM("detect_face", "enable", enable_disable, "find and draw each person's face keypoints (the face network)"),
    SD_IN_AUX_RESOLUTION,
    SD_IN_ENUM("scale_stick_for_xinsr_cn", "disable", disable_enable,
               "wider limbs on large images, for xinsir's SDXL OpenPose ControlNet"),
    {.name = "body_ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "body_pose_model.pth", .doc = "lllyasviel/Annotators' body_pose_model.pth (or its tensors as .safetensors) "
                                          "in models/annotators"},
    {.name = "hand_ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "hand_pose_model.pth", .doc = "lllyasviel/Annotators' hand_pose_model.pth (or its tensors as .safetensors) "
                                          "in models/annotators; read only with detect_hand"},
    {.name = "face_ckpt_name", .type = SD_TYPE_STRING, .flags = SD_IN_FILE, .file_dir = "annotators",
     .def = "facenet.pth", .doc = "lllyasviel/Annotators' facenet.pth (or its tensors as .safetensors) in "
                                  "models/annotators; read only with detect_face"},
};
static const sd_output_desc outputs[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "the skeletons on black at the detect resolution"),
    SD_OUT("POSE_KEYPOINT", SD_TYPE_POSE_KEYPOINT,
           "the keypoints as the aux node's POSE_KEYPOINT in OpenPose JSON text: a list of one "
           "{people, canvas_height, canvas_width} per image, points as fractions of the padded detect image")};
const sd_node_desc sd_node_OpenposePreprocessor = {
    .name = "OpenposePreprocessor", .version = 2, .category = "ControlNet Preprocessors/Faces and Poses Estimators",
    .doc = "OpenPose body, hand and face keypoints drawn (comfyui_controlnet_aux's OpenPose Pose).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs),
    .outputs = outputs, .n_outputs = SD_COUNT(outputs), .run = run_openpose, .check = check_openpose,
    .upgrade = upgrade_openpose,
};
