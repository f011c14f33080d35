/* sdflow replay: re-run the workflow embedded in a PNG and check the image is pixel-identical,
 * or extract the workflow XML. */
#include "cli/cli.h"
#include "cli/options.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char replay_help[] =
    "usage: sdflow replay IMAGE.png [options]\n"
    "\n"
    "Re-renders the workflow embedded in IMAGE.png (written by SaveImage) and compares the new\n"
    "image with IMAGE.png. Model and image files are looked up by name in the directories below,\n"
    "as 'sdflow run' does, and must have the content hashes IMAGE.png records for them; no path\n"
    "recorded in IMAGE.png is opened.\n"
    "\n"
    "options:\n"
    "  --extract OUT.xml   write the embedded workflow XML to OUT.xml ('-': stdout) and stop\n"
    "  --models-dir DIR    model directory (repeatable; replaces SDFLOW_MODELS)\n"
    "  --input-dir DIR     where image names are looked up (default $SDFLOW_INPUT or ./input)\n"
    "  --allow-absolute-paths  let the workflow name files by absolute path\n"
    "  --use-cache         trust cached node outputs instead of re-rendering everything\n"
    "  --cache PATH        the cache database --use-cache reads\n"
    "  --no-cache          neither read nor write the cache (the default)\n"
    "  -h, --help          show this help\n"
    "\n"
    "exit codes: 0 identical, 1 different (the maximum difference is printed and the new image\n"
    "kept), 3 no workflow or invalid input (a changed file is named with its hashes), 4 resource\n"
    "limit, 5 I/O error, 130 interrupted (Ctrl-C stops at the next node)\n";

int cmd_replay(int argc, char **argv)
{
    const char *image = NULL, *extract = NULL, *input_dir = NULL, *cache = NULL;
    bool no_cache = false, use_cache = false, allow_absolute = false;
    const char **models = calloc((size_t)argc, sizeof *models);
    size_t n_models = 0;
    sd_context *ctx = NULL;
    int rc = EXIT_OK;
    if (!models)
        return cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int r = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(replay_help, stdout);
            goto done;
        } else if ((r = cli_opt_value("replay", argc, argv, &i, "--extract", &v)) > 0) {
            extract = v;
        } else if (!r && (r = cli_opt_value("replay", argc, argv, &i, "--models-dir", &v)) > 0) {
            models[n_models++] = v;
        } else if (!r && (r = cli_opt_value("replay", argc, argv, &i, "--input-dir", &v)) > 0) {
            input_dir = v;
        } else if (!r && (r = cli_opt_value("replay", argc, argv, &i, "--cache", &v)) > 0) {
            cache = v;
        } else if (r < 0) {
            rc = EXIT_USAGE; /* the message is printed */
            goto done;
        } else if (!strcmp(a, "--no-cache")) {
            no_cache = true;
        } else if (!strcmp(a, "--use-cache")) {
            use_cache = true;
        } else if (!strcmp(a, "--allow-absolute-paths")) {
            allow_absolute = true;
        } else if (cli_is_option(a)) {
            rc = cli_usage_error("replay", "unknown option '%s'", a);
            goto done;
        } else if (image) {
            rc = cli_usage_error("replay", "one image at a time ('%s' and '%s')", image, a);
            goto done;
        } else {
            image = a;
        }
    }
    if (!image) {
        rc = cli_usage_error("replay", "no image given");
        goto done;
    }
    if ((cache || use_cache) && no_cache) {
        rc = cli_usage_error("replay", "--%s and --no-cache exclude each other", cache ? "cache" : "use-cache");
        goto done;
    }
    if (cache && !use_cache) {
        rc = cli_usage_error("replay", "--cache needs --use-cache (replay re-renders without the cache)");
        goto done;
    }
    sd_status st = sd_context_new(&ctx);
    if (st) {
        rc = cli_fail(NULL, st, "out of memory");
        goto done;
    }
    if (n_models)
        sd_context_clear_models_dirs(ctx);
    for (size_t k = 0; k < n_models && !st; k++)
        st = sd_context_add_models_dir(ctx, models[k]);
    if (!st && input_dir)
        st = sd_context_set_dir(ctx, SD_DIR_INPUT, input_dir);
    if (!st && cache)
        st = sd_context_set_cache_path(ctx, cache);
    sd_context_set_allow_absolute_paths(ctx, allow_absolute);
    if (st) {
        rc = cli_fail(ctx, st, NULL);
        goto done;
    }
    if (extract) {
        char *xml = NULL;
        if ((st = sd_png_extract_workflow(ctx, image, &xml)))
            rc = cli_fail(ctx, st, NULL);
        else if (!cli_write_text(extract, xml))
            rc = EXIT_IO;
        free(xml);
        goto done;
    }
    sd_replay_report report;
    sd_replay_options ropts = {.use_cache = use_cache};
    cli_catch_signals(ctx, true);
    st = sd_replay(ctx, image, &ropts, &report);
    cli_catch_signals(ctx, false);
    if (st == SD_OK)
        printf("identical: %s\n", image);
    else if (st == SD_ERR_MISMATCH && report.new_image)
        printf("different: %s: max difference %g of 255 levels (re-rendered as %s)\n", image,
               report.max_abs_diff, report.new_image);
    rc = st == SD_OK ? EXIT_OK : cli_report_failure(ctx, st);
    sd_replay_report_clear(&report);
done:
    sd_context_free(ctx);
    free(models);
    return rc;
}
