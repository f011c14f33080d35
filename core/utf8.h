/* UTF-8 encoding and strict decoding of single code points. */
#ifndef SD_CORE_UTF8_H
#define SD_CORE_UTF8_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes one code point at s[*i] (i < len) and advances *i past it. Strict: false (and *i
 * unchanged) for a truncated sequence, overlongs, surrogates and values past U+10FFFF. */
bool sd_utf8_next(const unsigned char *s, size_t len, size_t *i, uint32_t *cp);
/* Writes cp (≤ U+10FFFF) as 1 to 4 bytes at out; returns the count. */
size_t sd_utf8_put(uint32_t cp, char *out);

#endif
