/* sdflow caption: BLIP captions of images (the BLIPCaption node, docs/interrogate.md). */
#include "cli/cli.h"
#include "cli/image_text.h"

static const cli_input_option options[] = {
    {"--model", "model_name", "BLIP model in models/blip (vocab.txt beside it)"},
    {"--min-tokens", "min_tokens", "at least this many caption tokens (default 0)"},
    {"--max-tokens", "max_tokens", "at most this many caption tokens (default 32)"},
    {"--beams", "num_beams", "1: greedy search (default); more: beam search"},
    {"--repetition-penalty", "repetition_penalty", "above 1 discourages repeated words (default 1)"},
};

int cmd_caption(int argc, char **argv)
{
    static const cli_image_text spec = {
        .cmd = "caption", .node_type = "BLIPCaption",
        .summary = "Prints a BLIP caption for each image, one a line (cached like any node output).",
        .options = options, .n_options = sizeof options / sizeof options[0],
        .text_output = "STRING", .text_key = "caption",
    };
    return cli_image_text_main(&spec, argc, argv);
}
