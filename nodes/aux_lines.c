/* comfyui_controlnet_aux's line extractors that need no model: ScribblePreprocessor,
 * Scribble_XDoG_Preprocessor and BinaryPreprocessor (node names and inputs as there; the
 * annotators' numpy/OpenCV steps in ml/annotators/aux_image.c). */
#include "nodes/aux_run.h"
#include "nodes/node_util.h"
#include <stdlib.h>

/* ScribbleDetector: 0 where the darkest channel is below 127, 255 elsewhere. */
static sd_status scribble(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    (void)r, (void)arg;
    for (int64_t i = 0; i < img->h * img->w; i++) {
        const unsigned char *p = img->px + i * 3;
        unsigned char m = p[0] < p[1] ? p[0] : p[1];
        map[i] = (m < p[2] ? m : p[2]) < 127 ? 0 : 255;
    }
    return SD_OK;
}

static sd_status run_scribble(sd_node_run *r)
{
    return sd_node_aux_run(r, SD_AUX_AREA, scribble, NULL, NULL);
}

/* ScribbleXDog_Detector: dog = uint8(clip(255 - min_c(blur5(x) - blur0.5(x)))), 255 where
 * 2 (255 - dog) > threshold; the product wraps at 256 as numpy's uint8 does. */
static sd_status xdog(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    sd_context *ctx = sd_run_context(r);
    int thr = *(const int *)arg;
    size_t n = (size_t)(img->h * img->w * 3);
    float *x = malloc(sizeof(float) * n * 3), *g1 = x ? x + n : NULL, *g2 = x ? x + 2 * n : NULL;
    if (!x)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory for a %lldx%lld image", (long long)img->w,
                            (long long)img->h);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)img->px[i];
    sd_status st = sd_aux_gaussian_blur(ctx, x, img->h, img->w, 3, 0.5, g1);
    if (!st)
        st = sd_aux_gaussian_blur(ctx, x, img->h, img->w, 3, 5.0, g2);
    for (int64_t i = 0; !st && i < img->h * img->w; i++) {
        float d = g2[i * 3] - g1[i * 3];
        for (int k = 1; k < 3; k++)
            if (g2[i * 3 + k] - g1[i * 3 + k] < d)
                d = g2[i * 3 + k] - g1[i * 3 + k];
        float v = 255.0f - d;
        int dog = v >= 255.0f ? 255 : v > 0.0f ? (int)v : 0;
        map[i] = ((2 * (255 - dog)) & 255) > thr ? 255 : 0;
    }
    free(x);
    return st ? sd_run_fail(r, st) : SD_OK;
}

static sd_status run_xdog(sd_node_run *r)
{
    int thr = (int)sd_run_int(r, "threshold");
    return sd_node_aux_run(r, SD_AUX_CUBIC, xdog, &thr, NULL);
}

/* BinaryDetector: 255 where the gray level is above the threshold (Otsu's for 0 or 255). */
static sd_status binary(sd_node_run *r, const sd_img8 *img, void *arg, unsigned char *map)
{
    (void)r;
    int thr = *(const int *)arg;
    size_t n = (size_t)(img->h * img->w);
    sd_aux_rgb_to_gray(img, map);
    if (thr == 0 || thr == 255)
        thr = sd_aux_otsu_threshold(map, n);
    for (size_t i = 0; i < n; i++)
        map[i] = map[i] > thr ? 255 : 0;
    return SD_OK;
}

static sd_status run_binary(sd_node_run *r)
{
    int thr = (int)sd_run_int(r, "bin_threshold");
    return sd_node_aux_run(r, SD_AUX_CUBIC, binary, &thr, NULL);
}

static const sd_output_desc scribble_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "0 where the image is dark, 1 elsewhere, at the detect resolution")};
static const sd_output_desc lines_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "white lines on black at the detect resolution")};
static const sd_output_desc binary_out[] = {
    SD_OUT("IMAGE", SD_TYPE_IMAGE, "1 where the image is bright, 0 elsewhere, at the detect resolution")};

static const sd_input_desc scribble_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_AUX_RESOLUTION,
};
const sd_node_desc sd_node_ScribblePreprocessor = {
    .name = "ScribblePreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Scribble lines (comfyui_controlnet_aux): 0 where the darkest channel is below 127, 1 elsewhere.",
    .inputs = scribble_inputs, .n_inputs = SD_COUNT(scribble_inputs),
    .outputs = scribble_out, .n_outputs = 1, .run = run_scribble,
};

static const sd_input_desc xdog_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_INT("threshold", "32", 1, 64, "difference-of-Gaussians level (x2) above which a pixel is a line"),
    SD_IN_AUX_RESOLUTION,
};
const sd_node_desc sd_node_Scribble_XDoG_Preprocessor = {
    .name = "Scribble_XDoG_Preprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Scribble lines from a difference of Gaussians (sigma 0.5 and 5), thresholded (comfyui_controlnet_aux).",
    .inputs = xdog_inputs, .n_inputs = SD_COUNT(xdog_inputs),
    .outputs = lines_out, .n_outputs = 1, .run = run_xdog,
};

static const sd_input_desc binary_inputs[] = {
    SD_IN_LINK("image", SD_TYPE_IMAGE, "the images"),
    SD_IN_INT("bin_threshold", "100", 0, 255, "gray level above which a pixel is white; 0 or 255: Otsu's threshold"),
    SD_IN_AUX_RESOLUTION,
};
const sd_node_desc sd_node_BinaryPreprocessor = {
    .name = "BinaryPreprocessor", .version = 1, .category = "ControlNet Preprocessors/Line Extractors",
    .doc = "Binary lines (comfyui_controlnet_aux): 1 where the gray level is above bin_threshold, 0 elsewhere.",
    .inputs = binary_inputs, .n_inputs = SD_COUNT(binary_inputs),
    .outputs = binary_out, .n_outputs = 1, .run = run_binary,
};
