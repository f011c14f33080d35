/* InsightFace's face analysis (insightface.app.FaceAnalysis with the detection and recognition
 * models, as ComfyUI_IPAdapter_plus uses it for FaceID) computed by sdflow on its op library: the
 * pack's ONNX files run on the executor of ml/onnx/onnx_graph.h (no onnxruntime, no Python).
 * SCRFD detection (letterbox to det_size, five landmarks, threshold 0.5, NMS 0.4), the ArcFace
 * alignment (face_align.norm_crop: a similarity transform to the 5-point template and
 * cv2.warpAffine's 8-bit bilinear arithmetic) and the ArcFace embedding. docs/faceid.md. */
#ifndef SD_ML_VISION_FACE_ANALYSIS_H
#define SD_ML_VISION_FACE_ANALYSIS_H

#include "runtime-opencl/tensor.h"
#include <stddef.h>

typedef struct sd_face {
    float box[4];         /* x1, y1, x2, y2 in source-image pixels */
    float landmarks[10];  /* five (x, y) points as insightface's Face.kps: left eye, right eye, nose, left and right mouth corner */
    float score;          /* detection score */
    float embedding[512]; /* ArcFace output, L2-normalised (insightface's Face.normed_embedding) */
    float embedding_norm; /* the raw output's L2 norm: embedding * embedding_norm is Face.embedding */
} sd_face;

/* A loaded detector + recognizer pack, reference-counted. */
typedef struct sd_face_analysis sd_face_analysis;

/* Loads a model pack directory (buffalo_l: det_10g.onnx + w600k_r50.onnx; antelopev2:
 * scrfd_10g_bnkps.onnx + glintr100.onnx), finding the detection and recognition files as
 * insightface's model_zoo does, by their graph inputs and outputs, in sorted name order, the first
 * of each kind winning and other files ignored. SD_ERR_NOT_FOUND naming the directory when it
 * holds no detector or no recognizer; the ONNX readers' errors naming the file. */
sd_status sd_face_analysis_load(sd_context *ctx, sd_cl *cl, const char *pack_dir, sd_face_analysis **out);
sd_face_analysis *sd_face_analysis_ref(sd_face_analysis *fa);
void sd_face_analysis_unref(sd_face_analysis *fa); /* NULL-safe; frees at zero */

/* Detects and embeds the faces of one RGB image (width*height*3 floats in [0,1], row-major), as
 * insightface's FaceAnalysis.get does with det_size x det_size detection input (the image goes
 * to 8 bits as ComfyUI_IPAdapter_plus hands it over: trunc(255 x)). Faces in insightface's order
 * (descending score after NMS). *faces is malloc'd (NULL and *count 0 when none is found, which
 * is not an error). det_size: a multiple of 32 in 32..2048. */
sd_status sd_face_analysis_run(sd_context *ctx, sd_face_analysis *fa, const float *rgb, int width, int height,
                               int det_size, sd_face **faces, size_t *count);

/* ComfyUI_IPAdapter_plus's retry: det_size 640, then 576 ... 320 (step -64) until a face is found. */
sd_status sd_face_analysis_run_retry(sd_context *ctx, sd_face_analysis *fa, const float *rgb, int width, int height,
                                     sd_face **faces, size_t *count);

/* insightface face_align.norm_crop: the similarity transform (Umeyama, as skimage's
 * SimilarityTransform.estimate) from landmarks to ArcFace's 5-point template scaled to size (size a
 * multiple of 112, or of 128 with the template shifted as insightface does), and cv2.warpAffine's
 * bilinear warp with border 0 on the 8-bit image (trunc(255 x)). out: size*size*3 floats in [0,1]. */
sd_status sd_face_norm_crop(sd_context *ctx, const float *rgb, int width, int height, const float landmarks[10], int size,
                            float *out);

#endif
