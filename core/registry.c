/* The node-type registry, expanded from nodes/node_list.h and sorted by name once. */
#include "sdflow/node.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SD_NODE(name) extern const sd_node_desc sd_node_##name;
#include "nodes/node_list.h"
#undef SD_NODE

static const sd_node_desc *registry[] = {
#define SD_NODE(name) &sd_node_##name,
#include "nodes/node_list.h"
#undef SD_NODE
};
#define REGISTRY_SIZE (sizeof registry / sizeof registry[0])

static pthread_once_t sorted_once = PTHREAD_ONCE_INIT;

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const sd_node_desc *const *)a)->name, (*(const sd_node_desc *const *)b)->name);
}

static void sort_registry(void)
{
    qsort(registry, REGISTRY_SIZE, sizeof registry[0], by_name);
}

size_t sd_node_type_count(void)
{
    return REGISTRY_SIZE;
}

const sd_node_desc *sd_node_type_at(size_t index)
{
    pthread_once(&sorted_once, sort_registry);
    return index < REGISTRY_SIZE ? registry[index] : NULL;
}

const sd_node_desc *sd_node_type_find(const char *name)
{
    pthread_once(&sorted_once, sort_registry);
    size_t lo = 0, hi = REGISTRY_SIZE;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, registry[mid]->name);
        if (c == 0)
            return registry[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const sd_input_desc *sd_node_desc_input(const sd_node_desc *desc, const char *name)
{
    for (size_t i = 0; i < desc->n_inputs; i++)
        if (strcmp(desc->inputs[i].name, name) == 0)
            return &desc->inputs[i];
    return NULL;
}

int sd_node_desc_output(const sd_node_desc *desc, const char *name)
{
    for (size_t i = 0; i < desc->n_outputs; i++)
        if (strcmp(desc->outputs[i].name, name) == 0)
            return (int)i;
    return -1;
}

static const char *const type_names[SD_TYPE_COUNT] = {
    "MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "CONTROL_NET",
    "UPSCALE_MODEL", "INT", "FLOAT", "STRING", "BOOLEAN", "ENUM", "SAMPLER", "SIGMAS", "NOISE", "GUIDER",
    "CLIP_VISION", "CLIP_VISION_OUTPUT", "IPADAPTER", "EMBEDS", "STYLE_MODEL", "INSIGHTFACE",
    "POSE_KEYPOINT",
};

const char *sd_type_name(sd_type type)
{
    return (unsigned)type < SD_TYPE_COUNT ? type_names[type] : "?";
}

sd_type sd_type_from_name(const char *name)
{
    for (int t = 0; t < SD_TYPE_COUNT; t++)
        if (strcmp(type_names[t], name) == 0)
            return (sd_type)t;
    return SD_TYPE_COUNT;
}

bool sd_type_is_literal(sd_type type)
{
    return type == SD_TYPE_INT || type == SD_TYPE_FLOAT || type == SD_TYPE_STRING ||
           type == SD_TYPE_BOOLEAN || type == SD_TYPE_ENUM;
}
