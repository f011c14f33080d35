/* MODEL, CLIP and VAE values: handles on an entry of the context's model store
 * (models/model_store.h). A CLIP handle also carries the layer CLIPSetLastLayer chose; every
 * handle on one file shares its device weights. */
#ifndef SD_NODES_MODEL_HANDLE_H
#define SD_NODES_MODEL_HANDLE_H

#include "core/node.h"
#include "models/model_store.h"

typedef struct sd_model_handle {
    sd_loaded *loaded; /* one reference */
    int clip_layer;    /* CLIP: -1 = last layer, -2 = the one before, ... */
} sd_model_handle;

/* A new MODEL/CLIP/VAE value holding a new reference to l; NULL when memory runs out. */
sd_value *sd_node_model_value(sd_type type, sd_loaded *l, int clip_layer);

/* The handle on a MODEL/CLIP/VAE input (borrowed), or NULL with the node's error recorded when
 * the value carries none. */
const sd_model_handle *sd_node_model_input(sd_node_run *r, const char *input);

/* Called when a node has finished with a model: releases the runtime's pooled free buffers
 * (its activations), so that the next node starts from the weights alone. */
void sd_node_model_done(sd_node_run *r);

/* Records the context's current message (set by models/) as the node's error; returns st. */
sd_status sd_node_model_fail(sd_node_run *r, sd_status st);

#endif
