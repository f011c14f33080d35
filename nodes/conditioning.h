/* Reading CONDITIONING inputs (core/value.h's entry layout), shared by the nodes that take them
 * (nodes/conditioning.c defines it). */
#ifndef SD_NODES_CONDITIONING_H
#define SD_NODES_CONDITIONING_H
#include "core/node.h"

/* The entries list (the attrs' "entries" array, borrowed) of CONDITIONING input `input`, with
 * their number in *n. NULL when it has none, with the node's error set (SD_ERR_INVALID,
 * "input '<input>': the conditioning has no entries"). */
json_t *sd_node_cond_entries(sd_node_run *r, const char *input, size_t *n);
/* The same for a CONDITIONING value v that came from input `input` (of this node or of a
 * guider). */
json_t *sd_cond_entries(sd_node_run *r, const sd_value *v, const char *input, size_t *n);

/* ComfyUI's get_area_and_mult weight map (comfy/samplers.py) of one conditioning entry over a
 * latent of lat_h x lat_w, into out [area[0], area[1]]: area is (height, width, y, x) in latent
 * units, already inside the latent. With a mask (one plane [lat_h, lat_w], already resized to
 * the latent) the weight is mask * mask_strength * strength over the area; without one it is
 * strength, feathered along each edge of the area that does not touch the latent's border:
 * the rr = min(8, size / 4) rows or columns nearest the edge are multiplied by
 * 1/rr, 2/rr, ..., 1 (corners by both ramps). float arithmetic as torch's. */
void sd_cond_area_mult(int64_t lat_h, int64_t lat_w, const int64_t area[4], const float *mask, double mask_strength,
                       double strength, float *out);

#endif
