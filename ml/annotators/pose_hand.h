/* The hand steps of comfyui_controlnet_aux's OpenposePreprocessor (open_pose/util.py's
 * handDetect, hand.py's Hand.__call__, __init__.py's detect_hands): square hand boxes from a
 * body's shoulder, elbow and wrist, the hand network over four scales of each box, and one
 * peak per keypoint from the averaged heatmaps. */
#ifndef SD_ML_POSE_HAND_H
#define SD_ML_POSE_HAND_H

#include "ml/annotators/openpose.h"
#include "ml/annotators/pose_keypoints.h"

#define SD_POSE_HAND_MAP 128 /* Hand.__call__'s wsize: the heatmaps are averaged at 128 x 128 */

typedef struct sd_pose_hand_box {
    int x, y, size; /* top-left corner and side in image pixels */
    bool left;
} sd_pose_hand_box;

/* util.handDetect for one person (pixel keypoints) on an h x w image: the left hand (shoulder 5,
 * elbow 6, wrist 7) then the right (2, 3, 4), each where its three points are present, centred
 * a third of the forearm beyond the wrist, 1.5 x max(forearm, 0.9 upper arm) wide, clipped to
 * the image and kept when at least 20 pixels. Returns the count (0..2). */
int sd_pose_hand_boxes(const sd_pose_person *person, int h, int w, sd_pose_hand_box boxes[2]);

/* Hand.__call__'s peak for one keypoint: plane (a 128 x 128 heatmap_avg channel, float64) is
 * blurred (gaussian_filter, sigma 3) and thresholded above 0.05; the 8-connected component with
 * the largest sum of plane's values is kept, and the maximum of plane with everything else zeroed
 * (numpy's argmax order) is scaled to the box (crop_h x crop_w): *x, *y. (0, 0) when nothing is
 * above the threshold. SD_ERR_NOMEM. */
sd_status sd_pose_hand_peak(sd_context *ctx, const double *plane, int crop_h, int crop_w, int *x, int *y);

/* Hand.__call__'s heatmap_avg for one box of img (8-bit RGB): the crop in BGR, cv2.GaussianBlur
 * with sigma 0.8, then for each scale 0.5, 1, 1.5, 2 the crop resized to 368 * scale square
 * (util.smart_resize: INTER_AREA when shrinking, else INTER_LANCZOS4), / 256 - 0.5, the hand
 * network, its 22 maps resized x8 (INTER_LANCZOS4) and to 128 x 128 (INTER_AREA), each / 4 in
 * float32 and summed in float64 into avg [128][128][22]. Device errors, SD_ERR_NOMEM. */
sd_status sd_pose_hand_maps(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, const sd_pose_hand_box *box,
                            double *avg);

/* detect_hands for one box: the maps above, the 21 peaks, as float32 fractions of the image
 * ((peak + corner) / size; -1 / size where a peak coordinate is 0) into points. */
sd_status sd_pose_hand_keypoints(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, const sd_pose_hand_box *box,
                                 float points[SD_POSE_HAND_POINTS][2]);

#endif
