#include "core/embedded.h"
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

const sd_embedded_file *sd_embedded_find(const sd_embedded_file *table, const char *name)
{
    for (const sd_embedded_file *f = table; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

sd_status sd_embedded_gunzip(sd_context *ctx, const char *name, const char *what, char **out, size_t *out_len)
{
    const sd_embedded_file *f = sd_embedded_find(sd_embedded_data, name);
    if (!f)
        return sd_set_error(ctx, SD_ERR_PARSE, "%s %s is not embedded", what, name);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return sd_set_error(ctx, SD_ERR_NOMEM, "out of memory inflating the %s", what);
    size_t cap = 2u << 20, len = 0;
    char *buf = malloc(cap);
    sd_status status = SD_OK;
    zs.next_in = (unsigned char *)f->data;
    zs.avail_in = (uInt)f->size;
    int rc = Z_OK;
    while (buf && rc == Z_OK) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        zs.next_out = (unsigned char *)buf + len;
        zs.avail_out = (uInt)(cap - len - 1);
        rc = inflate(&zs, Z_NO_FLUSH);
        len = cap - 1 - zs.avail_out;
    }
    inflateEnd(&zs);
    if (!buf || rc == Z_OK)
        status = sd_set_error(ctx, SD_ERR_NOMEM, "out of memory inflating the %s", what);
    else if (rc != Z_STREAM_END)
        status = sd_set_error(ctx, SD_ERR_PARSE, "embedded %s is damaged (zlib error %d)", what, rc);
    if (status) {
        free(buf);
        return status;
    }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return SD_OK;
}
