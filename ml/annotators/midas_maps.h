/* The images comfyui_controlnet_aux's MidasDetector makes from its network's depth
 * (midas/__init__.py), on the host in float32 as numpy, torch and OpenCV compute them there.
 * The MiDaS network itself (dpt_hybrid) is not implemented yet. */
#ifndef SD_ML_MIDAS_MAPS_H
#define SD_ML_MIDAS_MAPS_H

#include "core/context.h"
#include <stdint.h>

/* depth_pt = (d - min) / max(d - min) into norm (h * w floats), and depth_image =
 * uint8(clip(255 depth_pt)) into map (h * w bytes). A flat depth gives NaN there, as torch does,
 * and 0 in map. */
void sd_midas_depth_map(const float *depth, int64_t h, int64_t w, float *norm, unsigned char *map);

/* normal_image: per sample the vector (Sobel x, Sobel y, a) of the depth (cv2.Sobel ksize 3 on
 * float32, BORDER_REFLECT_101), its x and y zeroed where norm (sd_midas_depth_map's) is below
 * bg_th, divided by its length, encoded as uint8(clip(127.5 v + 127.5)) in the order z, y, x
 * (the detector's BGR reversal): rgb receives h * w * 3 bytes. SD_ERR_NOMEM. */
sd_status sd_midas_normal_map(sd_context *ctx, const float *depth, const float *norm, int64_t h, int64_t w, float a,
                              float bg_th, unsigned char *rgb);

#endif
