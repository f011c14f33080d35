/* Image file input and output shared by LoadImage, LoadImageMask, SaveImage and PreviewImage.
 * Kept apart from the node run functions so they can be tested without a scheduler. */
#ifndef SD_NODES_IMAGE_IO_H
#define SD_NODES_IMAGE_IO_H

#include "core/context.h"
#include "core/png.h"
#include "core/value.h"
#include "nodes/output_files.h"

/* LoadImage: the PNG at path as IMAGE [1, h, w, 3] (gray replicated to RGB) and MASK:
 * 1 - alpha as [1, h, w] when the file has an alpha channel or a palette with tRNS, else
 * zeros [1, 64, 64] (ComfyUI's rule: a gray or RGB colour key gives no mask). New references
 * in *image and *mask. Failures of sd_png_read, with the message on ctx. */
sd_status sd_load_image(sd_context *ctx, const char *path, sd_value **image, sd_value **mask);

/* LoadImageMask: one channel ("alpha", "red", "green" or "blue") of the PNG at path as MASK
 * [1, h, w]; alpha is inverted (1 - alpha) and is 1 where the file has none, so its mask is 0.
 * Gray files give their gray value for red, green and blue. */
sd_status sd_load_image_mask(sd_context *ctx, const char *path, const char *channel, sd_value **mask);

/* Called with the path of each file written, in batch order. */
typedef sd_status (*sd_saved_fn)(void *user, const char *path);

/* Writes each image of an IMAGE value ([batch, h, w, 3 or 4]) as an 8-bit PNG named
 * <dir>/<prefix>_<counter>_.png (numbering, refused prefixes and the atomic write in
 * nodes/output_files.h). Files written before a failure stay (each is complete). */
sd_status sd_save_images(sd_context *ctx, const sd_save_request *req, const sd_value *images,
                         sd_saved_fn saved, void *user);

#endif
