/* The frame of the commands that turn images into text through one node (caption: BLIPCaption,
 * interrogate: CLIPInterrogate): options mapped onto the node's inputs, one graph LoadImage ->
 * node per image run through the public API (so results are cached like any node output), the
 * text on stdout one line per image, or a JSON array with --json. */
#ifndef SD_CLI_IMAGE_TEXT_H
#define SD_CLI_IMAGE_TEXT_H

#include <stddef.h>

/* An option taking a value that sets a node input: "--beams N" -> num_beams. */
typedef struct cli_input_option {
    const char *option, *input, *help;
} cli_input_option;

typedef struct cli_image_text {
    const char *cmd, *node_type, *summary;
    const cli_input_option *options; /* n_options of them */
    size_t n_options;
    const char *text_output;         /* the STRING output printed */
    const char *text_key;            /* its key in the JSON objects ("caption", "prompt") */
    const char *json_output;         /* NULL, or a STRING output holding a JSON object merged into
                                        each image's object with --json */
    /* NULL, or an option naming a directory ("--lists DIR") whose absolute path sets the node's
     * input dir_input. */
    const char *dir_option, *dir_input, *dir_help;
} cli_image_text;

int cli_image_text_main(const cli_image_text *spec, int argc, char **argv);

#endif
