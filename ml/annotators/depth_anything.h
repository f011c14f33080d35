/* Depth Anything V2 (relative depth) as comfyui_controlnet_aux's DepthAnythingV2Detector runs
 * it, from the original .pth state dict (or a .safetensors file with the same names):
 *
 *   pretrained.*   DINOv2 ViT: patch embedding (conv 14x14 stride 14), cls token, position
 *                  embedding on a square grid interpolated (bicubic, DINOv2's +0.1 offset) to
 *                  the token grid; blocks of pre-norm attention (fused qkv with bias, heads of
 *                  64) and GELU MLP, each scaled by its LayerScale (ls1, ls2) and added; the
 *                  final norm applied to the four intermediate layers the head takes
 *   depth_head.*   DPT head: per layer a 1x1 projection and a resize (transposed conv x4, x2,
 *                  identity, conv stride 2), 3x3 *_rn convs, four fusion blocks (residual conv
 *                  units, bilinear align_corners upsample, 1x1 out_conv), output convs with ReLU
 *
 * Layer norms use eps 1e-6. Everything is read from the shapes; the intermediate layers are
 * those of the real sizes (12 blocks: 2, 5, 8, 11; 24: 4, 11, 17, 23; other multiples of 4:
 * the last block of each quarter). ViT-g's SwiGLU MLP is not supported. */
#ifndef SD_ML_DEPTH_ANYTHING_H
#define SD_ML_DEPTH_ANYTHING_H

#include "ml/annotators/aux_image.h"
#include "ml/loading/weights.h"

#define SD_DEPTH_ANYTHING_MAX_BLOCKS 64

typedef struct sd_depth_anything_config {
    int dim, heads, blocks, hidden; /* ViT width, heads (dim / 64), blocks, MLP width */
    int grid;                       /* position-embedding grid side */
    int layers[4];                  /* the blocks the head takes */
    int features, out_ch[4];        /* DPT widths */
} sd_depth_anything_config;

/* Reads the architecture from st's shapes, checking every tensor used. SD_ERR_INVALID naming
 * the file and the tensor missing or misshapen. */
sd_status sd_depth_anything_inspect(sd_context *ctx, const sd_safetensors *st, sd_depth_anything_config *out);

typedef struct sd_depth_anything sd_depth_anything;

/* A network over st (which must outlive it), f32 weights uploaded on first use. */
sd_status sd_depth_anything_new(sd_cl *cl, const sd_safetensors *st, sd_depth_anything **out);
void sd_depth_anything_free(sd_depth_anything *m); /* NULL-safe */

/* x: [1, 3, H, W] normalised RGB, H and W multiples of 14 -> *out: new [1, 1, H, W], the
 * head's output (relative depth, >= 0). */
sd_status sd_depth_anything_forward(sd_depth_anything *m, const sd_dtensor *x, sd_dtensor **out);

/* infer_image (input_size 518 in the detector) on an 8-bit RGB image: image2tensor (resize
 * keeping the aspect ratio, the shorter side to input_size, both sides rounded to multiples of
 * 14; cv2 INTER_CUBIC on doubles; ImageNet mean and std), the network, and the depth resized
 * back to img's size (bilinear, align_corners). depth: img->h * img->w floats. */
sd_status sd_depth_anything_infer(sd_depth_anything *m, const sd_img8 *img, int input_size, float *depth);

/* The detector's 8-bit depth: (d - min) / (max - min) * 255 in float32, truncated (all 0 when
 * the map is flat). */
void sd_depth_anything_map(const float *depth, size_t n, unsigned char *map);

#endif
