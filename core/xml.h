/* Limits of the workflow XML reader and what its writer can carry (docs/workflow-format.md). */
#ifndef SD_CORE_XML_H
#define SD_CORE_XML_H

/* Largest workflow file accepted, checked before parsing. */
#define SD_XML_MAX_BYTES (16 << 20)
/* Deepest element nesting accepted, enforced while parsing. */
#define SD_XML_MAX_DEPTH 64

#include <stdbool.h>
#include <stddef.h>

/* True when XML 1.0 can carry the text s (valid UTF-8 without control characters other than
 * tab, line feed and carriage return); otherwise false with the first problem described in msg
 * ("text contains U+0001, which XML cannot carry"). */
bool sd_xml_text_ok(const char *s, char *msg, size_t size);

#endif
