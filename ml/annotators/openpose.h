/* The OpenPose networks of comfyui_controlnet_aux's OpenposePreprocessor (open_pose/model.py):
 * the CMU body network (bodypose_model: a VGG front, then six stages of two branches, part
 * affinity fields L1 and keypoint heatmaps L2), the hand network (handpose_model: a deeper VGG
 * front, then six stages of one branch) and the face network (face.py's FaceNet: the hand
 * network's layers with 71 outputs), read from lllyasviel/Annotators' body_pose_model.pth,
 * hand_pose_model.pth and facenet.pth (through the restricted unpickler) or .safetensors with
 * the same names:
 *
 *   body  conv1_1 conv1_2 | conv2_1 conv2_2 | conv3_1..conv3_4 | conv4_1 conv4_2 conv4_3_CPM
 *         conv4_4_CPM ("|": a 2x2 max-pool); stage 1: conv5_{1..5}_CPM_L{1,2}; stages s = 2..6:
 *         Mconv{1..7}_stage{s}_L{1,2} on concat(L1, L2, front)
 *   hand, face  conv1_1 conv1_2 | conv2_1 conv2_2 | conv3_1..conv3_4 | conv4_1..conv4_4 conv5_1 conv5_2
 *         conv5_3_CPM; stage 1: conv6_1_CPM conv6_2_CPM; stages s = 2..6: Mconv{1..7}_stage{s}
 *         on concat(previous stage, front)
 *
 * Every convolution has stride 1 and "same" padding (kernel 3, 7 or 1) and is followed by a ReLU,
 * except the last of each branch; as in the reference's no_relu_layers (which names
 * Mconv7_stage6_L1 twice), the body's last heatmap layer Mconv7_stage6_L2 keeps its ReLU.
 * Widths are read from the shapes (real files: 64 .. 512; outputs 38 PAF and 19 heatmap
 * channels for the body, 22 for the hand, 71 for the face), so tiny test networks run through
 * the same code. */
#ifndef SD_ML_OPENPOSE_H
#define SD_ML_OPENPOSE_H

#include "ml/loading/weights.h"

#define SD_POSE_PAF 38
#define SD_POSE_HEAT 19
#define SD_POSE_HAND 22
#define SD_POSE_FACE 71 /* 70 face keypoints and the background */

typedef enum sd_pose_kind { SD_POSE_BODY, SD_POSE_HAND_NET, SD_POSE_FACE_NET } sd_pose_kind;

/* Checks every tensor of the body, hand or face network in st (names, 4-D float weights chaining
 * channel counts, square odd kernels, biases). SD_ERR_INVALID naming the file and the tensor. */
sd_status sd_pose_inspect(sd_context *ctx, const sd_safetensors *st, sd_pose_kind kind);

typedef struct sd_pose_net sd_pose_net;

/* A network over st (which must outlive it), inspected as above; f32 weights uploaded on first
 * use. */
sd_status sd_pose_net_new(sd_cl *cl, const sd_safetensors *st, sd_pose_kind kind, sd_pose_net **out);
void sd_pose_net_free(sd_pose_net *n); /* NULL-safe */

/* x: [1, 3, H, W] f32 (the reference feeds BGR / 256 - 0.5, H and W multiples of 8) -> for the
 * body out[0] the PAFs [1, 38, H/8, W/8] and out[1] the heatmaps [1, 19, H/8, W/8]; for the hand
 * (face) out[0] the heatmaps [1, 22 (71), H/8, W/8] and out[1] NULL. New tensors; NULL on failure. */
sd_status sd_pose_net_forward(sd_pose_net *n, const sd_dtensor *x, sd_dtensor *out[2]);

/* Body.__call__'s maps for one 8-bit RGB image h x w: the image in BGR scaled by 0.5 * 368 / h
 * (util.smart_resize_k: INTER_AREA when it shrinks, the 8-bit INTER_LANCZOS4 for images of 184
 * rows or fewer), padded at the bottom and right with 128 to multiples of 8, / 256 - 0.5, the
 * network, and each output channel resized x8 (INTER_LANCZOS4), cropped to the scaled size and
 * resized to h x w (INTER_LANCZOS4): *heat [h][w][19] and *paf [h][w][38] float64 (malloc'd).
 * Device errors, SD_ERR_NOMEM. */
typedef struct sd_img8 sd_img8;
sd_status sd_pose_body_maps(sd_cl *cl, sd_pose_net *net, const sd_img8 *img, double **heat, double **paf);

#endif
