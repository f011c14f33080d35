/* Shared helpers of the libFuzzer harnesses. */
#include "fuzz_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char scratch[4096];
static sd_context *context;

static void drop_log(const char *line, void *user)
{
    (void)line;
    (void)user;
}

static void cleanup(void)
{
    if (scratch[0])
        unlink(scratch);
    sd_context_free(context);
    context = NULL;
}

static const char *tmpdir(void)
{
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

sd_context *fuzz_context(void)
{
    if (context)
        return context;
    if (sd_context_new(&context) != SD_OK)
        abort();
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/sdflow-fuzz-%ld.d", tmpdir(), (long)getpid());
    sd_context_clear_models_dirs(context);
    sd_context_set_cache_path(context, NULL);
    sd_context_set_dir(context, SD_DIR_INPUT, dir);
    sd_context_set_dir(context, SD_DIR_OUTPUT, dir);
    sd_context_set_dir(context, SD_DIR_TEMP, dir);
    sd_context_set_log(context, drop_log, NULL);
    atexit(cleanup);
    return context;
}

const char *fuzz_write_file(const uint8_t *data, size_t size, const char *suffix)
{
    if (!scratch[0]) {
        fuzz_context();
        snprintf(scratch, sizeof scratch, "%s/sdflow-fuzz-%ld%s", tmpdir(), (long)getpid(), suffix);
    }
    FILE *f = fopen(scratch, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(scratch);
        abort();
    }
    return scratch;
}

void fuzz_check_error(sd_context *ctx, sd_status st)
{
    if (st == SD_OK)
        return;
    const char *msg = sd_context_errmsg(ctx);
    if (!msg || !*msg || strchr(msg, '\n')) {
        fprintf(stderr, "status %d with a bad error message: '%s'\n", (int)st, msg ? msg : "(null)");
        abort();
    }
}

void fuzz_check_graph(sd_context *ctx, sd_graph *g, bool resolve_params)
{
    if (g) {
        fuzz_check_error(ctx, sd_graph_validate(g));
        char *xml = NULL;
        fuzz_check_error(ctx, sd_graph_to_xml(g, resolve_params, &xml));
        free(xml);
    }
    sd_graph_free(g);
}
