/* Binary preview frames of the WebSocket (ComfyUI's server.py encode_bytes / send_image):
 * 4-byte big-endian event 1 (PREVIEW_IMAGE), 4-byte big-endian format 2 (PNG), the PNG. */
#include "server/internal.h"
#include <png.h>
#include <stdlib.h>
#include <string.h>

unsigned char *sd_preview_frame(const uint8_t *rgb, int width, int height, size_t *len)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = PNG_FORMAT_RGB;
    png_alloc_size_t size = 0;
    if (!png_image_write_to_memory(&img, NULL, &size, 0, rgb, 0, NULL) || size == 0)
        return NULL;
    unsigned char *buf = malloc(8 + size);
    if (!buf)
        return NULL;
    static const unsigned char header[8] = {0, 0, 0, 1, 0, 0, 0, 2};
    memcpy(buf, header, sizeof header);
    if (!png_image_write_to_memory(&img, buf + 8, &size, 0, rgb, 0, NULL)) {
        free(buf);
        return NULL;
    }
    *len = 8 + size;
    return buf;
}

void sd_ws_send_preview(sd_server *srv, const uint8_t *rgb, int width, int height, const char *sid)
{
    size_t len = 0;
    unsigned char *frame = width > 0 && height > 0 ? sd_preview_frame(rgb, width, height, &len) : NULL;
    if (frame)
        sd_ws_send_binary(srv, frame, len, sid);
    free(frame);
}
