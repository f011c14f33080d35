/* The face steps of comfyui_controlnet_aux's OpenposePreprocessor (open_pose/util.py's faceDetect,
 * face.py's Face.__call__ and compute_peaks_from_heatmaps, __init__.py's detect_face): a square
 * face box from a body's nose, eyes and ears, the face network on the box resized to 384 x 384,
 * its last heatmaps resized bilinearly back to the box, and one peak per heatmap above 0.05. */
#ifndef SD_ML_POSE_FACE_H
#define SD_ML_POSE_FACE_H

#include "ml/annotators/openpose.h"
#include "ml/annotators/pose_keypoints.h"

typedef struct sd_pose_face_box {
    int x, y, size; /* top-left corner and side in image pixels (the crop may end at the image) */
} sd_pose_face_box;

/* util.faceDetect for one person (pixel keypoints) on an h x w image: with the nose (0) and at
 * least one of the eyes (14, 15) and ears (16, 17), a box centred on the nose of side twice the
 * largest of 3 x each eye's and 1.5 x each ear's Chebyshev distance from it, its corner moved
 * inside the top and left edges, its side cut to the right (bottom) edge when half of it passes
 * that edge (the reference's test); false without those points or when under 20 pixels. */
bool sd_pose_face_box_find(const sd_pose_person *person, int h, int w, sd_pose_face_box *out);

/* F.interpolate(src, (dh, dw), mode="bilinear", align_corners=True) of one sh x sw float32 plane
 * as torch's CPU kernel computes it (float weights; each row pair mixed along x, then along y). */
void sd_pose_resize_bilinear_corners(const float *src, int sh, int sw, float *dst, int dh, int dw);

/* compute_peaks_from_heatmaps for one h x w heatmap: the first maximum in raster order when it is
 * above 0.05 (*x, *y; true), else false (the reference then leaves the part out). */
bool sd_pose_face_peak(const float *plane, int h, int w, int *x, int *y);

/* detect_face for one box of img (8-bit RGB): the crop (rows y .. y + size, columns x .. x + size,
 * cut at the image) in BGR resized to 384 x 384 (util.smart_resize: INTER_AREA when it shrinks,
 * else INTER_LANCZOS4), / 256 - 0.5, the face network, its 71 last-stage maps resized to the crop
 * (bilinear, align_corners) and their peaks: *n points (parts without a peak left out, so the
 * indices shift as there) as float32 fractions of the image ((peak + corner) / size; -1 / size
 * where a peak coordinate is 0). Device errors, SD_ERR_NOMEM. */
sd_status sd_pose_face_keypoints(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, const sd_pose_face_box *box,
                                 float points[SD_POSE_FACE_POINTS][2], size_t *n);

#endif
