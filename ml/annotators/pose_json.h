/* The POSE_KEYPOINT output of comfyui_controlnet_aux's OpenposePreprocessor as text: its list of
 * encode_poses_as_dict results (one per image) written as json.dumps(list, indent=4) writes it,
 * numbers as Python's repr. */
#ifndef SD_ML_POSE_JSON_H
#define SD_ML_POSE_JSON_H

#include "ml/annotators/pose_draw.h"

typedef struct sd_pose_entry {
    sd_pose_point body[SD_POSE_BODY_POINTS]; /* fractions of the detect image; absent: 0, 0, 0 */
    bool has_hand[2];                        /* left, right */
    float hand[2][SD_POSE_HAND_POINTS][2];   /* as sd_pose_draw_hand takes them */
    size_t n_face;                           /* 0: no face (null) */
    float face[SD_POSE_FACE_POINTS][2];      /* detect_face's points, as sd_pose_draw_face takes them */
} sd_pose_entry;

typedef struct sd_pose_frame {
    const sd_pose_entry *people;
    size_t n;
    int64_t canvas_h, canvas_w; /* the output image's size (the padding cut off) */
} sd_pose_frame;

/* The JSON text of n frames: [{"people": [{"pose_keypoints_2d": [x, y, 1.0 | 0.0, 0.0, 0.0, ...],
 * "face_keypoints_2d": [x, y, 1.0, ...] | null, "hand_left_keypoints_2d": [...] | null,
 * "hand_right_keypoints_2d": ...}], "canvas_height": h, "canvas_width": w}, ...] with json's
 * 4-space indentation. Malloc'd; NULL when out of memory. */
char *sd_pose_json(const sd_pose_frame *frames, size_t n);

/* Python's repr of a float64 (the shortest text that reads back to v; "1.0", "0.0001", "1e-05",
 * "1e+16"; NaN and infinities as json writes them) into out (32 bytes). */
void sd_pose_json_number(double v, char out[32]);

#endif
