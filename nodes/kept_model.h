/* One model object kept per context and slot name, so that captioning or interrogating many
 * images in one process (a Lua loop, `sdflow caption a.png b.png`) opens the file and uploads
 * its weights once. The object is rebuilt when the path or the file's identity changes. */
#ifndef SD_NODES_KEPT_MODEL_H
#define SD_NODES_KEPT_MODEL_H

#include "core/node.h"
#include "ml/formats/safetensors.h"
#include "runtime-opencl/tensor.h"

/* Builds the object over st (which stays open as long as the object is kept). */
typedef sd_status (*sd_kept_make)(sd_cl *cl, const sd_safetensors *st, void **obj);

/* The object for the file at path in slot `slot` of the run's context, made with make (and
 * freed with free_obj when replaced or when the context is freed). Errors are the node's. */
sd_status sd_node_kept_model(sd_node_run *r, const char *slot, const char *path, sd_kept_make make,
                             void (*free_obj)(void *), void **obj);

#endif
