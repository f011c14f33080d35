/* Image-to-text commands (see image_text.h). */
#include "cli/image_text.h"
#include "cli/cli.h"
#include "cli/options.h"
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(const cli_image_text *spec, FILE *out)
{
    fprintf(out, "usage: sdflow %s [options] IMAGE.png...\n\n%s\n\noptions:\n", spec->cmd, spec->summary);
    char name[64];
    for (size_t i = 0; i < spec->n_options; i++) {
        snprintf(name, sizeof name, "%s VALUE", spec->options[i].option);
        fprintf(out, "  %-20s %s\n", name, spec->options[i].help);
    }
    if (spec->dir_option) {
        snprintf(name, sizeof name, "%s DIR", spec->dir_option);
        fprintf(out, "  %-20s %s\n", name, spec->dir_help);
    }
    fprintf(out, "  --json               a JSON array with one object per image on stdout\n"
                 "  --quiet              no progress on stderr\n%s%s",
            cli_engine_opts_help, cli_opts_help);
}

typedef struct progress_line {
    bool open;
} progress_line;

/* A progress bar on a terminal: the node's steps (label embeddings, decoding). */
static void on_progress(const sd_progress *e, void *user)
{
    progress_line *p = user;
    if (e->kind != SD_PROGRESS_STEP || e->steps <= 0)
        return;
    int width = 30, done = (int)((long long)e->step * width / e->steps);
    fprintf(stderr, "\r%s [%.*s%*s] %d/%d", e->node_type, done, "##############################", width - done, "",
            e->step, e->steps);
    p->open = true;
    fflush(stderr);
}

/* The graph LoadImage(image) -> node(spec), inputs from the option values. */
static sd_status build(const cli_image_text *spec, sd_context *ctx, const char *image, const char *const *values,
                       const char *dir_value, sd_graph **out)
{
    sd_status st = sd_graph_new(ctx, out);
    if (!st) st = sd_graph_add_node(*out, "LoadImage", "image", NULL);
    if (!st) st = sd_graph_set_input(*out, "image", "image", image);
    if (!st) st = sd_graph_add_node(*out, spec->node_type, "text", NULL);
    if (!st) st = sd_graph_connect(*out, "image", "IMAGE", "text", "image");
    for (size_t i = 0; !st && i < spec->n_options; i++)
        if (values[i])
            st = sd_graph_set_input(*out, "text", spec->options[i].input, values[i]);
    if (!st && dir_value)
        st = sd_graph_set_input(*out, "text", spec->dir_input, dir_value);
    return st;
}

/* Runs one image; appends its object to array (with --json) or prints its text. */
static int run_image(const cli_image_text *spec, sd_context *ctx, const char *image, const char *const *values,
                     const char *dir_value, bool no_cache, json_t *array)
{
    char abs[PATH_MAX];
    if (!realpath(image, abs)) {
        fprintf(stderr, "sdflow: error: %s: no such image\n", image);
        return EXIT_INVALID;
    }
    sd_graph *g = NULL;
    sd_result *res = NULL;
    const char *wanted[1] = {"text"};
    sd_run_options ro = {.outputs = wanted, .n_outputs = 1, .no_cache = no_cache};
    sd_output_info text, extra;
    sd_status st = build(spec, ctx, abs, values, dir_value, &g);
    if (!st)
        st = sd_graph_run(g, &ro, &res);
    if (!st)
        st = sd_result_output(res, "text", spec->text_output, &text);
    if (!st && spec->json_output && array)
        st = sd_result_output(res, "text", spec->json_output, &extra);
    int code = st ? cli_report_failure(ctx, st) : EXIT_OK;
    if (!st && array) {
        json_t *obj = spec->json_output ? json_loads(extra.s, 0, NULL) : json_object();
        if (!obj)
            obj = json_object();
        json_object_set_new(obj, "image", json_string(image));
        json_object_set_new(obj, spec->text_key, json_string(text.s));
        json_array_append_new(array, obj);
    } else if (!st) {
        printf("%s\n", text.s);
        fflush(stdout);
    }
    sd_result_free(res);
    sd_graph_free(g);
    return code;
}

int cli_image_text_main(const cli_image_text *spec, int argc, char **argv)
{
    cli_engine_opts eo = {0};
    const char **values = calloc(spec->n_options + 1, sizeof *values), **images = calloc((size_t)argc, sizeof *images);
    const char *dir_value = NULL;
    size_t n_images = 0;
    bool json = false, quiet = false;
    int code = EXIT_USAGE;
    sd_context *ctx = NULL;
    json_t *array = NULL;
    if (!values || !images) {
        code = cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        int r = cli_engine_opts_parse(&eo, spec->cmd, argc, argv, &i);
        for (size_t k = 0; !r && k < spec->n_options; k++)
            r = cli_opt_value(spec->cmd, argc, argv, &i, spec->options[k].option, &values[k]);
        if (!r && spec->dir_option)
            r = cli_opt_value(spec->cmd, argc, argv, &i, spec->dir_option, &dir_value);
        if (r < 0)
            goto done;
        if (r)
            continue;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(spec, stdout);
            code = EXIT_OK;
            goto done;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            quiet = true;
        } else if (cli_is_option(argv[i])) {
            code = cli_usage_error(spec->cmd, "unknown option '%s'", argv[i]);
            goto done;
        } else {
            images[n_images++] = argv[i];
        }
    }
    if (!n_images) {
        code = cli_usage_error(spec->cmd, "missing the image files");
        goto done;
    }
    char dir_abs[PATH_MAX];
    if (dir_value && !realpath(dir_value, dir_abs)) {
        code = cli_usage_error(spec->cmd, "%s: no such directory '%s'", spec->dir_option, dir_value);
        goto done;
    }
    sd_status st = sd_context_new(&ctx);
    if (!st && !(st = cli_engine_opts_apply(ctx, &eo)))
        sd_context_set_allow_absolute_paths(ctx, true); /* the images and --lists named on this command line */
    if (st) {
        code = cli_report_failure(ctx, st);
        goto done;
    }
    progress_line progress = {false};
    if (!quiet && isatty(STDERR_FILENO))
        sd_context_set_progress(ctx, on_progress, &progress);
    if (json && !(array = json_array())) {
        code = cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
        goto done;
    }
    cli_catch_signals(ctx, true);
    code = EXIT_OK;
    for (size_t i = 0; i < n_images && code == EXIT_OK; i++) {
        code = run_image(spec, ctx, images[i], values, dir_value ? dir_abs : NULL, eo.no_cache, array);
        if (progress.open) {
            fprintf(stderr, "\n");
            progress.open = false;
        }
    }
    cli_catch_signals(ctx, false);
    if (code == EXIT_OK && array) {
        char *text = json_dumps(array, JSON_INDENT(2));
        if (text)
            printf("%s\n", text);
        free(text);
    }
done:
    json_decref(array);
    sd_context_free(ctx);
    cli_opts_free(&eo.common);
    free(values);
    free(images);
    return code;
}
