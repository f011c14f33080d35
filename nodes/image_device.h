/* Shared by the image nodes that run on the OpenCL image ops (ImageScale, ImageScaleBy,
 * ImageInvert, ImageCrop, ImagePadForOutpaint, ImageBlur, ImageSharpen, Canny): moving IMAGE
 * values to and from device tensors, and reporting op failures as the node's error. */
#ifndef SD_NODES_IMAGE_DEVICE_H
#define SD_NODES_IMAGE_DEVICE_H

#include "core/node.h"
#include "runtime-opencl/ops_image.h"

/* The "image" tensor [B, H, W, C] (B, H, W, C >= 1) of IMAGE input `input`, uploaded to the
 * context's device: *cl is the runtime, *out a new device tensor the caller frees. A missing or
 * malformed tensor is SD_ERR_INVALID naming the input; device failures keep the runtime's
 * message. Errors are recorded as the node's. */
sd_status sd_node_image_upload(sd_node_run *r, const char *input, sd_cl **cl, sd_dtensor **out);

/* Downloads t ([B, H, W, C]) into a new IMAGE value and sets it as output `index`. */
sd_status sd_node_image_output(sd_node_run *r, size_t index, const sd_dtensor *t);

/* Records the context's current message (set by an op or the runtime) as the node's error and
 * returns st. */
sd_status sd_node_op_fail(sd_node_run *r, sd_status st);
/* The usual end of an image node: st is the op's status; on success y becomes output 0. Frees
 * x and y either way and returns the node's status. */
sd_status sd_node_image_finish(sd_node_run *r, sd_status st, sd_dtensor *x, sd_dtensor *y);

/* The "image" tensor of IMAGE input `input` after checking its shape, or NULL (error recorded). */
const sd_tensor *sd_node_image_tensor(sd_node_run *r, const char *input);

/* ComfyUI's upscale method names, NULL-terminated: nearest-exact, bilinear, area, bicubic,
 * lanczos. */
extern const char *const sd_node_upscale_methods[];

/* comfy.utils.common_upscale on a device image: resize x to width x height with the named
 * method ("lanczos" is ComfyUI's uint8 PIL path), after cropping the centre to the target
 * aspect ratio when crop_center is set. *out is new. Errors are recorded as the node's. */
sd_status sd_node_common_upscale(sd_node_run *r, sd_cl *cl, const sd_dtensor *x, const char *method,
                                 int64_t width, int64_t height, bool crop_center, sd_dtensor **out);

/* The upscale_method input of the resizing nodes (ComfyUI's combo, default nearest-exact). */
#define SD_IN_UPSCALE_METHOD                                                           \
    SD_IN_ENUM("upscale_method", "nearest-exact", sd_node_upscale_methods,              \
               "torch interpolate modes (nearest-exact, bilinear, area, bicubic) or PIL's 8-bit lanczos")

/* The end of a node that resizes its "image" input x by a computed size (ImageScaleBy,
 * ImageScaleToTotalPixels): width and height are whole numbers from ComfyUI's rounding; below
 * 1 is SD_ERR_INVALID "<why> makes the WxH image empty"; otherwise x is resized with the node's
 * upscale_method (no crop) into output 0. Frees x. */
sd_status sd_node_resize_to(sd_node_run *r, sd_cl *cl, sd_dtensor *x, double width, double height, const char *why);

/* ImagePadForOutpaint's MASK for an h x w image padded by top/bottom/left/right: a new value
 * [1, h + top + bottom, w + left + right], 1 on the new area; inside, 0 or, at distance
 * d < feathering from a padded side, ((feathering - d) / feathering)^2, only when
 * 2 feathering < h and < w (ComfyUI's rule). NULL when memory runs out. */
sd_value *sd_node_outpaint_mask(int64_t h, int64_t w, int64_t top, int64_t bottom, int64_t left, int64_t right,
                                int64_t feathering);

#endif
