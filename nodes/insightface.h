/* InsightFace model packs for the FaceID nodes (nodes/insightface_loader.c): where a pack is, the
 * files the planner must know, and opening one. */
#ifndef SD_NODES_INSIGHTFACE_H
#define SD_NODES_INSIGHTFACE_H

#include "core/node.h"
#include "ml/vision/face_analysis.h"

/* The first <models dir>/insightface/models/<name> directory, malloc'd (resolved), or NULL. */
char *sd_node_insightface_find(sd_context *ctx, const char *name);
/* Declares every .onnx file of pack `name` to the planner (nothing when the pack is absent). */
sd_status sd_node_insightface_declare(sd_node_files *f, const char *name);
/* Opens pack `name` on the run's device; a missing pack is SD_ERR_NOT_FOUND naming it when
 * required, else SD_OK with *out NULL. */
sd_status sd_node_insightface_open(sd_node_run *r, const char *name, bool required, sd_face_analysis **out);

#endif
