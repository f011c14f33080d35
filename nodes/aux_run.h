/* The frame every comfyui_controlnet_aux preprocessor node shares (common_annotator_call and
 * resize_image_with_pad): each item of the "image" input is converted to 8 bits, resized so
 * that its shorter side is the "resolution" input and edge-padded to multiples of 64; the
 * detector makes one 8-bit plane of the padded size; the padding is cut off and the plane,
 * repeated over 3 channels and divided by 255, becomes the item's output. Outputs are at the
 * detect resolution, as there. */
#ifndef SD_NODES_AUX_RUN_H
#define SD_NODES_AUX_RUN_H

#include "core/node.h"
#include "ml/annotators/aux_image.h"
#include "runtime-opencl/tensor.h"

/* Fills map (padded->h * padded->w bytes) from the padded image; errors are the node's. */
typedef sd_status (*sd_aux_detect_fn)(sd_node_run *r, const sd_img8 *padded, void *arg, unsigned char *map);

/* Changes the plane (h * w bytes) after the padding was cut off; errors are the node's. */
typedef sd_status (*sd_aux_post_fn)(sd_node_run *r, unsigned char *plane, int64_t h, int64_t w);

/* Runs detect on every item with `up` as the enlarging interpolation, then post (NULL: none) on
 * the cut plane; sets output 0. */
sd_status sd_node_aux_run(sd_node_run *r, sd_aux_interp up, sd_aux_detect_fn detect, void *arg, sd_aux_post_fn post);
/* The same for detectors that draw in colour: map holds padded->h * padded->w * channels bytes
 * (1 or 3; 3: RGB, kept as it is), post is for 1 channel only. */
sd_status sd_node_aux_run_channels(sd_node_run *r, sd_aux_interp up, int channels, sd_aux_detect_fn detect, void *arg,
                                   sd_aux_post_fn post);

/* Fills map (img->h * img->w bytes) from the unresized 8-bit image; errors are the node's. */
typedef sd_status (*sd_aux_plane_fn)(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map);

/* The frame of detectors that run on the image as given and resize their result (the depth
 * estimators): each item converted to 8 bits, plane made by detect at its size, repeated over 3
 * channels, resized by resize_image_with_pad (INTER_CUBIC when enlarging) and cut to the detect
 * resolution; sets output 0. */
sd_status sd_node_aux_run_then_resize(sd_node_run *r, sd_aux_plane_fn detect, void *arg);

/* The padded 8-bit image as a network input [1, 3, H, W]: each byte divided by divisor (1:
 * 0..255; 255: [0, 1] as the annotators' "/ 255.0", a division, not a product), the channels
 * reversed when bgr is set. *out is new; errors are the node's. */
sd_status sd_node_aux_upload(sd_node_run *r, sd_cl *cl, const sd_img8 *img, float divisor, bool bgr,
                             sd_dtensor **out);

/* The resolution input of every preprocessor (INPUT.RESOLUTION()). */
#define SD_IN_AUX_RESOLUTION \
    SD_IN_INT("resolution", "512", 64, 16384, "detect resolution: the shorter side of the output")

#endif
