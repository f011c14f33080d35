/* ComfyUI interchange shared by the import (core/comfy_import.c, core/comfy_ui.c) and the export
 * (core/comfy_export.c): which node types and inputs ComfyUI has, and the order of a node's
 * widgets in a UI-format workflow ("widgets_values"). docs/comfyui.md describes the formats. */
#ifndef SD_CORE_COMFY_H
#define SD_CORE_COMFY_H

#include "core/graph.h"
#include <jansson.h>

/* Whether ComfyUI (without custom nodes) has this node type; sdflow's own types are named
 * Sdflow*. */
bool sd_comfy_has_type(const sd_node_desc *desc);

/* Whether the input is one of ComfyUI's widgets for this node type: a literal input that
 * ComfyUI declares too (sdflow's additions, such as the loaders' weight_dtype, are not). */
bool sd_comfy_is_widget(const sd_node_desc *desc, const sd_input_desc *in);

/* The input that follows a seed as in ComfyUI's frontend (KSampler, KSamplerAdvanced,
 * PrimitiveInt): what happens to the seed after each run of --repeat. Not one of ComfyUI's
 * API inputs. */
#define SD_COMFY_CONTROL "control_after_generate"

/* Whether a JSON value is one of control_after_generate's values (fixed, increment, decrement,
 * randomize). */
bool sd_comfy_is_control_value(const json_t *v);

/* Converts a parsed UI-format workflow (root object with "nodes" and "links", subgraphs in
 * "definitions"/"subgraphs") into a new API-format object, as ComfyUI's frontend does before
 * queueing it: widgets_values become inputs in widget order, Reroutes and PrimitiveNodes are
 * resolved, notes dropped, muted nodes dropped (inputs they fed removed), bypassed nodes passed
 * through by type, subgraph instances expanded with ids "INSTANCE:INNER" ("_meta" "title" is
 * the node's title or type). *meta_out gets {"titles": {id: the title a user gave the node},
 * "groups": [{"title": T, "nodes": [ids of the nodes inside the group's box]}]}. Errors name
 * path. */
sd_status sd_comfy_ui_to_api(sd_context *ctx, const char *path, const json_t *ui, json_t **api_out,
                             json_t **meta_out);

/* Parses workflow JSON text, reading integers beyond the signed 64-bit range up to 2^64 - 1
 * (ComfyUI's seeds) as strings of their digits. Duplicate keys are rejected. NULL with a
 * one-line message naming source on failure. */
json_t *sd_comfy_parse_json(sd_context *ctx, const char *source, const char *text, size_t len);

#endif
