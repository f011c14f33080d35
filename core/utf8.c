/* UTF-8: see utf8.h. */
#include "core/utf8.h"

bool sd_utf8_next(const unsigned char *s, size_t len, size_t *i, uint32_t *cp)
{
    unsigned c = s[*i];
    size_t need;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        (*i)++;
        return true;
    } else if ((c & 0xe0) == 0xc0) {
        need = 1, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        need = 2, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        need = 3, v = c & 0x07, min = 0x10000;
    } else {
        return false;
    }
    for (size_t k = 1; k <= need; k++) {
        if (*i + k >= len || (s[*i + k] & 0xc0) != 0x80)
            return false;
        v = (v << 6) | (s[*i + k] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return false;
    *cp = v;
    *i += need + 1;
    return true;
}

size_t sd_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}
