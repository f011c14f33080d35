/* Output file names and writing for the saving nodes (see nodes/output_files.h). */
#include "nodes/output_files.h"
#include "core/comfy.h"
#include "core/fileio.h"
#include "core/files.h"
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

sd_status sd_node_save_request(sd_node_run *r, sd_dir_kind dir, const char *prefix, int compression,
                               sd_save_request *req)
{
    /* Without its provenance no file is written (the message naming this node is already set). */
    const char *xml = sd_run_workflow_xml(r);
    const char *prov = xml ? sd_run_provenance_json(r) : NULL;
    if (!prov)
        return xml ? SD_ERR_NOMEM : SD_ERR_INVALID;
    *req = (sd_save_request){
        .dir = sd_context_dir(sd_run_context(r), dir), .prefix = prefix, .node_id = sd_run_node_id(r),
        .workflow_xml = xml, .provenance_json = prov, .compression = compression,
    };
    return sd_run_interop_texts(r, &req->interop, &req->n_interop);
}

void sd_output_engine_text(char *buf, size_t size)
{
    snprintf(buf, size, "sdflow %s", sd_version());
}

/* One more than the highest N among files named <base>_<N>_... in dir (1 when none). */
static sd_status next_counter(sd_context *ctx, const char *dir, const char *base, unsigned *counter)
{
    DIR *d = opendir(dir);
    if (!d)
        return sd_set_error(ctx, SD_ERR_IO, "cannot list %s: %s", dir, strerror(errno));
    size_t blen = strlen(base);
    unsigned max = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *name = e->d_name;
        if (strncmp(name, base, blen) != 0 || name[blen] != '_')
            continue;
        const char *q = name + blen + 1;
        unsigned n = 0;
        int digits = 0;
        for (; *q >= '0' && *q <= '9' && digits < 9; q++, digits++)
            n = n * 10 + (unsigned)(*q - '0');
        if (digits > 0 && *q == '_' && n > max)
            max = n;
    }
    closedir(d);
    *counter = max + 1;
    return SD_OK;
}

/* Splits the prefix into its subfolder (may be "") and base name, refusing escapes. */
static sd_status split_prefix(sd_context *ctx, const char *prefix, char **sub, char **base)
{
    *sub = *base = NULL;
    char msg[512];
    if (!sd_output_prefix_check(prefix, msg, sizeof msg))
        return sd_set_error(ctx, SD_ERR_INVALID, "filename_prefix %s", msg);
    const char *slash = strrchr(prefix, '/');
    *sub = slash ? strndup(prefix, (size_t)(slash - prefix)) : sd_strdup("");
    *base = sd_strdup(slash ? slash + 1 : prefix);
    if (!*sub || !*base) {
        free(*sub);
        free(*base);
        *sub = *base = NULL;
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
    }
    return SD_OK;
}

sd_status sd_output_names_open(sd_context *ctx, const char *dir, const char *prefix, sd_output_names *names)
{
    *names = (sd_output_names){.counter = 1};
    char *sub = NULL;
    sd_status st = split_prefix(ctx, prefix, &sub, &names->base);
    if (!st)
        st = sd_make_dirs_within(ctx, dir, sub, &names->dir);
    free(sub);
    return st ? st : next_counter(ctx, names->dir, names->base, &names->counter);
}

void sd_output_names_clear(sd_output_names *names)
{
    free(names->dir);
    free(names->base);
    *names = (sd_output_names){0};
}

sd_status sd_output_write(sd_context *ctx, sd_output_names *names, const char *ext, const void *data, size_t len,
                          char **path)
{
    *path = NULL;
    sd_status st = SD_OK;
    /* Another writer may take a name between the scan and the write: skip to the next. */
    bool existed = true;
    for (int tries = 0; existed && tries < 1000; tries++, names->counter++) {
        free(*path);
        if (!(*path = sd_strfmt("%s/%s_%05u_.%s", names->dir, names->base, names->counter, ext))) {
            st = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory");
            break;
        }
        st = sd_file_write_atomic(ctx, *path, data, len, true, &existed);
        if (st && !existed)
            break;
    }
    if (st) {
        free(*path);
        *path = NULL;
    }
    return st;
}
