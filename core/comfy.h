/* ComfyUI interchange shared by the import (core/comfy_import.c, core/comfy_ui.c) and the export
 * (core/comfy_export.c): which node types and inputs ComfyUI has, and the order of a node's
 * widgets in a UI-format workflow ("widgets_values"). docs/comfyui.md describes the formats. */
#ifndef SD_CORE_COMFY_H
#define SD_CORE_COMFY_H

#include "core/graph.h"
#include "core/node.h"
#include "core/png.h"
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

/* The titles and groups an imported UI workflow keeps in its description ("Titles: 3 "Base"",
 * "Group "T": 3, 4"; core/comfy_import.c writes them) as sd_comfy_ui_to_api's meta object;
 * a malformed line is read up to its first malformed entry. NULL only when out of memory. */
json_t *sd_comfy_described_meta(const char *description);

/* Parses workflow JSON text, reading integers beyond the signed 64-bit range up to 2^64 - 1
 * (ComfyUI's seeds) as strings of their digits. Duplicate keys are rejected. NULL with a
 * one-line message naming source on failure. */
json_t *sd_comfy_parse_json(sd_context *ctx, const char *source, const char *text, size_t len);

/* A1111's "parameters" text for a graph with one sampler (KSampler or KSamplerAdvanced): the
 * prompt and negative prompt of the text encoders upstream of it, then "Steps: 20, Sampler:
 * Euler, Schedule type: Karras, CFG scale: 8, Seed: 42, Size: 512x512, Model hash: ..., Model:
 * NAME, Version: sdflow X" on one line; model_hash (A1111's AutoV2: the first 10 hex digits of
 * the checkpoint file's SHA-256) is left out when NULL or "". NULL when there is no single
 * sampler, or out of memory (*nomem set). malloc'd. */
char *sd_a1111_parameters(const sd_graph *graph, const char *model_hash, bool *nomem);
/* The CheckpointLoaderSimple upstream of the graph's one sampler's model, or NULL. */
const sd_graph_node *sd_a1111_checkpoint(const sd_graph *graph);

/* The PNG text chunks that let ComfyUI and A1111 read an image of this run, made once per run:
 * "prompt" (API format) and "workflow" (UI format) when ComfyUI has every node type of the
 * graph, "parameters" (A1111's text) when the graph has one sampler. *texts points into the
 * run's state; *n may be 0. Fails only when out of memory (the message names the node). */
sd_status sd_run_interop_texts(sd_node_run *run, const sd_png_text **texts, size_t *n);
struct sd_interop_texts;
void sd_interop_texts_free(struct sd_interop_texts *t);

#endif
