/* sdflow interrogate: CLIP interrogator prompts for images (the CLIPInterrogate node,
 * docs/interrogate.md). */
#include "cli/cli.h"
#include "cli/image_text.h"

static const cli_input_option options[] = {
    {"--clip", "clip_name", "CLIP model (both towers) in models/clip_vision"},
    {"--blip", "blip_name", "BLIP captioning model in models/blip"},
    {"--caption", "caption", "start from this caption instead of BLIP's"},
    {"--mode", "mode", "best (default), classic, fast or negative"},
    {"--extra-tables", "extra_tables", "more tables in the --lists folder, comma-separated"},
    {"--min-flavors", "min_flavors", "chain steps taken even when similarity drops (8)"},
    {"--max-flavors", "max_flavors", "at most this many labels (32)"},
    {"--intermediate-count", "intermediate_count", "best labels the chain chooses from (2048)"},
    {"--chunk-size", "chunk_size", "labels ranked per chunk (2048)"},
    {"--top", "top_count", "labels per table in --json (5)"},
    {"--beams", "num_beams", "BLIP beam search width (1: greedy)"},
    {"--max-tokens", "max_tokens", "BLIP caption tokens at most (32)"},
};

int cmd_interrogate(int argc, char **argv)
{
    static const cli_image_text spec = {
        .cmd = "interrogate", .node_type = "CLIPInterrogate",
        .summary = "Prints a prompt likely to generate a similar image, one a line (the CLIP interrogator:\n"
                   "a BLIP caption and label tables ranked by CLIP similarity). Label features are computed\n"
                   "once per model and table and kept in the cache.",
        .options = options, .n_options = sizeof options / sizeof options[0],
        .text_output = "prompt", .text_key = "prompt", .json_output = "json",
        .dir_option = "--lists", .dir_input = "lists_dir",
        .dir_help = "a folder of label tables <table>.txt replacing the built-in ones",
    };
    return cli_image_text_main(&spec, argc, argv);
}
