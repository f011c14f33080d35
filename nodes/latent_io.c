/* SaveLatent and LoadLatent: LATENT values to and from ComfyUI's .latent files (the nodes of
 * the same names; the format in nodes/latent_file.h and docs/provenance.md). */
#include "nodes/latent_file.h"
#include "nodes/node_util.h"
#include <stdlib.h>

static sd_status run_save_latent(sd_node_run *r)
{
    sd_save_request req;
    char *path = NULL;
    sd_status st = sd_node_save_request(r, SD_DIR_OUTPUT, sd_run_string(r, "filename_prefix"), 0, &req);
    if (!st && (st = sd_save_latent(sd_run_context(r), &req, sd_run_value(r, "samples"), &path)))
        st = sd_run_fail(r, st);
    if (!st)
        st = sd_run_add_file(r, path);
    free(path);
    return st;
}

static const sd_input_desc save_in[] = {
    SD_IN_LINK("samples", SD_TYPE_LATENT, "the latent to save"),
    SD_IN_PREFIX("filename_prefix", "latents/ComfyUI",
                 "file name prefix, may include subfolders; files are PREFIX_00001_.latent, ..."),
};
const sd_node_desc sd_node_SaveLatent = {
    .name = "SaveLatent", .version = 1, .category = "_for_testing",
    .doc = "Saves a latent as a .latent (safetensors) file in the output directory, with the workflow embedded.",
    .inputs = save_in, .n_inputs = SD_COUNT(save_in), .flags = SD_NODE_OUTPUT | SD_NODE_NO_CACHE,
    .run = run_save_latent,
};

static sd_status run_load_latent(sd_node_run *r)
{
    sd_value *latent;
    sd_status st = sd_load_latent(sd_run_context(r), sd_run_file(r, "latent"), &latent);
    if (st)
        return sd_run_fail(r, st);
    sd_run_set_output(r, 0, latent);
    return SD_OK;
}

static const sd_input_desc load_in[] = {
    SD_IN_FILE_NAME("latent", "input", ".latent file name in the input directory"
                    " (an absolute path needs --allow-absolute-paths)"),
};
static const sd_output_desc load_out[] = {
    SD_OUT("LATENT", SD_TYPE_LATENT, "the samples as f32; files of the old format divided by 0.18215"),
};
const sd_node_desc sd_node_LoadLatent = {
    .name = "LoadLatent", .version = 1, .category = "_for_testing",
    .doc = "Loads a .latent file (as written by SaveLatent or ComfyUI) from the input directory.",
    .inputs = load_in, .n_inputs = SD_COUNT(load_in),
    .outputs = load_out, .n_outputs = SD_COUNT(load_out), .run = run_load_latent,
};
