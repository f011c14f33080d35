/* SavePoseKpsAsJsonFile (comfyui_controlnet_aux's "Save Pose Keypoints"): a POSE_KEYPOINT value
 * written to the output directory as json.dump(pose_kps, f) writes it (one line, ", " and ": "
 * separators). */
#include "nodes/node_util.h"
#include "nodes/output_files.h"
#include <stdlib.h>
#include <string.h>

/* The one-line form of json.dumps(..., indent=4) text (which holds no newline inside strings):
 * each line break and its indentation dropped, after a comma replaced by a space. Malloc'd. */
static char *one_line(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    for (; out && *s; s++) {
        if (*s != '\n') {
            *o++ = *s;
            continue;
        }
        if (o > out && o[-1] == ',')
            *o++ = ' ';
        while (s[1] == ' ')
            s++;
    }
    if (out)
        *o = 0;
    return out;
}

static sd_status run_save_pose(sd_node_run *r)
{
    sd_output_names names;
    char *path = NULL, *text = one_line(sd_run_value(r, "pose_kps")->s);
    if (!text)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for the pose keypoints");
    sd_status st = sd_output_names_open(sd_run_context(r), sd_context_dir(sd_run_context(r), SD_DIR_OUTPUT),
                                        sd_run_string(r, "filename_prefix"), &names);
    if (!st)
        st = sd_output_write(sd_run_context(r), &names, "json", text, strlen(text), &path);
    sd_output_names_clear(&names);
    if (st)
        st = sd_run_fail(r, st);
    else
        st = sd_run_add_file(r, path);
    free(path), free(text);
    return st;
}

static const sd_input_desc inputs[] = {
    SD_IN_LINK("pose_kps", SD_TYPE_POSE_KEYPOINT, "the keypoints (OpenposePreprocessor's POSE_KEYPOINT)"),
    SD_IN_PREFIX("filename_prefix", "PoseKeypoint",
                 "file name prefix, may include subfolders; files are PREFIX_00001_.json, ..."),
};
const sd_node_desc sd_node_SavePoseKpsAsJsonFile = {
    .name = "SavePoseKpsAsJsonFile", .version = 1, .category = "ControlNet Preprocessors/Pose Keypoint Postprocess",
    .doc = "Saves pose keypoints as a JSON file in the output directory (comfyui_controlnet_aux's Save Pose Keypoints).",
    .inputs = inputs, .n_inputs = SD_COUNT(inputs), .flags = SD_NODE_OUTPUT | SD_NODE_NO_CACHE,
    .run = run_save_pose,
};
