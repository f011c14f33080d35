/* Node type descriptors: the single source of truth for a node type's sockets. The XML and Lua
 * bindings, validation, `sdflow nodes`, docs/nodes.md and the cache key all derive from them.
 * Front ends may read descriptors; only nodes/ defines them. */
#ifndef SDFLOW_NODE_H
#define SDFLOW_NODE_H

#include "sdflow/sdflow.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sd_type {
    SD_TYPE_MODEL,
    SD_TYPE_CLIP,
    SD_TYPE_VAE,
    SD_TYPE_CONDITIONING,
    SD_TYPE_LATENT,
    SD_TYPE_IMAGE,
    SD_TYPE_MASK,
    SD_TYPE_CONTROL_NET,
    SD_TYPE_UPSCALE_MODEL,
    SD_TYPE_INT,
    SD_TYPE_FLOAT,
    SD_TYPE_STRING,
    SD_TYPE_BOOLEAN,
    SD_TYPE_ENUM, /* one of the input's choices; carried as a string */
    /* ComfyUI's custom-sampling types (after the older ones: cached values store the number) */
    SD_TYPE_SAMPLER, /* a sampling algorithm (KSamplerSelect) */
    SD_TYPE_SIGMAS,  /* a noise schedule: 1-D float tensor */
    SD_TYPE_NOISE,   /* initial noise: a seed, or none (RandomNoise, DisableNoise) */
    SD_TYPE_GUIDER,  /* a model with its conditionings and guidance (CFGGuider, ...); a handle */
    SD_TYPE_CLIP_VISION,        /* a CLIP image encoder (CLIPVisionLoader); a handle */
    SD_TYPE_CLIP_VISION_OUTPUT, /* image_embeds, last_hidden_state, penultimate_hidden_states */
    SD_TYPE_IPADAPTER,          /* an IP-Adapter model (IPAdapterModelLoader); a handle */
    SD_TYPE_EMBEDS,             /* CLIP vision features for an IP-Adapter (IPAdapterEncoder) */
    SD_TYPE_STYLE_MODEL,        /* a FLUX Redux image encoder (StyleModelLoader); a handle */
    SD_TYPE_INSIGHTFACE,        /* an InsightFace detector + recognizer pack (IPAdapterInsightFaceLoader); a handle */
    SD_TYPE_POSE_KEYPOINT,      /* comfyui_controlnet_aux's pose keypoints: OpenPose JSON text */
    SD_TYPE_COUNT
} sd_type;

/* "MODEL", "INT", ... ; sd_type_from_name returns SD_TYPE_COUNT when unknown. */
const char *sd_type_name(sd_type type);
sd_type sd_type_from_name(const char *name);
/* True for types that may be given as literal text (INT, FLOAT, STRING, BOOLEAN, ENUM). */
bool sd_type_is_literal(sd_type type);

enum {
    SD_IN_OPTIONAL = 1u << 0,  /* may be left unset and unconnected (no default needed) */
    SD_IN_RANGED = 1u << 1,    /* min/max apply (INT, FLOAT) */
    SD_IN_FILE = 1u << 2,      /* STRING/ENUM naming a file looked up in file_dir */
    SD_IN_MULTILINE = 1u << 3, /* long text (prompts): docs and XML writer use element text */
    SD_IN_OUTPUT_PREFIX = 1u << 4 /* STRING: file name prefix under the output directory, checked
                                     by the prefix rules (docs/provenance.md) when validated */
};

typedef struct sd_input_desc {
    const char *name;
    sd_type type;
    unsigned flags;
    const char *def;             /* default in text form; NULL: required (unless OPTIONAL) */
    double min, max;             /* with SD_IN_RANGED */
    const char *const *choices;  /* ENUM: NULL-terminated list */
    const char *file_dir;        /* SD_IN_FILE: "checkpoints", "vae", "loras", "embeddings",
                                    "controlnet", "upscale_models" or "input" (images) */
    const char *doc;             /* one line */
} sd_input_desc;

typedef struct sd_output_desc {
    const char *name; /* ComfyUI's output name, e.g. "MODEL", "LATENT", "IMAGE" */
    sd_type type;
    const char *doc;
} sd_output_desc;

enum {
    SD_NODE_OUTPUT = 1u << 0,    /* writes files (SaveImage): run when no outputs are named */
    SD_NODE_NO_CACHE = 1u << 1,  /* never cached (non-deterministic or side effects) */
};

typedef struct sd_node_run sd_node_run;         /* defined by the scheduler (core/node.h) */
typedef struct sd_node_upgrade sd_node_upgrade; /* defined by core (core/node.h) */
typedef struct sd_node_files sd_node_files;     /* defined by the planner (core/node.h) */
typedef struct sd_node_check sd_node_check;     /* defined by core (core/node.h) */

typedef struct sd_node_desc {
    const char *name;     /* ComfyUI class name, e.g. "KSampler" */
    int version;          /* bumped when outputs change for the same inputs */
    const char *category; /* "loaders", "sampling", "image", "latent", "mask", "utils", ... */
    const char *doc;      /* one line */
    const sd_input_desc *inputs;
    size_t n_inputs;
    const sd_output_desc *outputs;
    size_t n_outputs;
    unsigned flags;
    /* Runs the node: reads inputs, sets every output. See core/node.h. */
    sd_status (*run)(sd_node_run *run);
    /* Maps a node saved by an older version to this one (rename inputs, convert values);
     * NULL when every older version loads unchanged. */
    sd_status (*upgrade)(sd_node_upgrade *up, int from_version);
    /* Declares, before anything runs, the files the node reads besides its SD_IN_FILE inputs
     * (CLIPTextEncode: the embeddings its prompt names), from its literal inputs; see
     * core/node.h. Their contents become part of the node's cache key and of the provenance,
     * and the node can open no other file. NULL when the node reads no other file. */
    sd_status (*files)(sd_node_files *files);
    /* Checks, before anything runs, what file headers and the upstream nodes' tags tell (a
     * model family a node cannot take, a latent of the wrong channel count) and tags this
     * node's outputs for its consumers; NULL: each output passes on the tag of the first linked
     * input of its type. Problems are reported with sd_check_problem. See core/node.h. */
    void (*check)(sd_node_check *check);
} sd_node_desc;

/* The registry: every node type, sorted by name. */
size_t sd_node_type_count(void);
const sd_node_desc *sd_node_type_at(size_t index);
const sd_node_desc *sd_node_type_find(const char *name);
const sd_input_desc *sd_node_desc_input(const sd_node_desc *desc, const char *name);
/* Index of an output by name, or -1. */
int sd_node_desc_output(const sd_node_desc *desc, const char *name);

#ifdef __cplusplus
}
#endif
#endif
