/* People from the OpenPose body network's maps, as comfyui_controlnet_aux's open_pose/body.py
 * finds them (Body.__call__ after the network and the resizes): per keypoint a Gaussian blur
 * (scipy.ndimage.gaussian_filter, sigma 3, mode reflect) and the local maxima above 0.1; per
 * limb the candidate pairs scored along the part affinity field (10 samples, numpy's linspace and
 * round), kept greedily by score; then the people assembled limb by limb (joined, merged or
 * started as body.py does) and those with fewer than 4 parts or a mean score below 0.4 dropped.
 * The arithmetic is float64 in numpy's order, so equal maps give equal people. */
#ifndef SD_ML_POSE_KEYPOINTS_H
#define SD_ML_POSE_KEYPOINTS_H

#include "core/context.h"
#include "ml/annotators/pose_draw.h"

typedef struct sd_pose_person {
    sd_pose_point points[SD_POSE_BODY_POINTS]; /* pixel coordinates of the maps, not normalised */
    double score;                              /* body.py's total_score */
    int parts;                                 /* total_parts */
} sd_pose_person;

/* heat: [h][w][19] and paf: [h][w][38] float64 (heatmap_avg, paf_avg at the image's size).
 * *out (malloc'd, *n people, NULL when none) in body.py's subset order. SD_ERR_NOMEM, or
 * SD_ERR_LIMIT for more than 4096 peaks of one part. */
sd_status sd_pose_find_people(sd_context *ctx, const double *heat, const double *paf, int h, int w,
                              sd_pose_person **out, size_t *n);

/* scipy.ndimage.gaussian_filter(plane, sigma) of an h x w float64 plane (truncate 4, mode
 * reflect), in scipy's order of operations, into out. SD_ERR_NOMEM. */
sd_status sd_pose_gaussian_filter(sd_context *ctx, const double *plane, int h, int w, double sigma, double *out);

/* numpy's sum of n float64 values (its pairwise summation: 8 interleaved partial sums in blocks
 * of up to 128), so sums compare as numpy's do. */
double sd_numpy_sum(const double *a, size_t n);

#endif
