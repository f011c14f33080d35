/* Drawing OpenPose skeletons as comfyui_controlnet_aux's open_pose/util.py draws them, with
 * OpenCV 4's 8-connected drawing primitives reproduced bit for bit (cv::ellipse2Poly with its
 * sine table, cv::fillConvexPoly, filled cv::circle and cv::line of thickness 1) on 8-bit RGB
 * canvases (h x w x 3 bytes, row-major). */
#ifndef SD_ML_POSE_DRAW_H
#define SD_ML_POSE_DRAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SD_POSE_BODY_POINTS 18
#define SD_POSE_HAND_POINTS 21
#define SD_POSE_FACE_POINTS 71 /* at most: face.py keeps one peak per heatmap, the background's too */

/* A keypoint in coordinates normalised to the canvas (x / width, y / height), as the
 * annotator's Keypoint after detect_poses; absent points are skipped. */
typedef struct sd_pose_point {
    double x, y;
    bool present;
} sd_pose_point;

/* cv::ellipse2Poly(center, axes, angle, arc_start, arc_end, delta) (the integer version): up to
 * max points into pts (x, y pairs); returns the number it makes (which may exceed max: then only
 * max are written). */
size_t sd_cv_ellipse2poly(int cx, int cy, int ax, int ay, int angle, int arc_start, int arc_end, int delta,
                          int *pts, size_t max);

/* cv::fillConvexPoly(img, pts, color, 8, shift) (n points, x, y pairs with `shift` fractional
 * bits, 0 to 16; OpenCV's Line for the outline at shift 0, its fixed-point Line2 otherwise). */
void sd_cv_fill_convex_poly(uint8_t *img, int w, int h, const int64_t *pts, size_t n, int shift,
                            const uint8_t color[3]);

/* cv::circle(img, (cx, cy), radius, color, thickness=-1): filled, 8-connected. */
void sd_cv_circle_filled(uint8_t *img, int w, int h, int cx, int cy, int radius, const uint8_t color[3]);

/* util.draw_bodypose: the 17 limbs as filled ellipses (stick width 4, times the xinsr scale when
 * xinsr_scaling: 1 below 500 pixels on the longer side, else min(2 + side / 1000, 7)) in 60% of
 * their colours, then a filled circle of radius 4 on each of the 18 points. */
void sd_pose_draw_body(uint8_t *canvas, int w, int h, const sd_pose_point points[SD_POSE_BODY_POINTS],
                       bool xinsr_scaling);

/* util.draw_handpose: the 20 finger segments as cv2.line of thickness 2 in the colours
 * hsv_to_rgb(e / 20, 1, 1), then a filled blue circle of radius 4 on each point; points are
 * float32 fractions of the canvas (as detect_hands makes them), drawn only where int(x * w) and
 * int(y * h) are both positive. */
void sd_pose_draw_hand(uint8_t *canvas, int w, int h, const float points[SD_POSE_HAND_POINTS][2]);

/* util.draw_facepose: a filled white circle of radius 3 on each of n points (float32 fractions of
 * the canvas, as detect_face makes them), drawn only where int(x * w) and int(y * h) are both
 * positive. */
void sd_pose_draw_face(uint8_t *canvas, int w, int h, const float (*points)[2], size_t n);

#endif
