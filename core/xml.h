/* Limits of the workflow XML reader (docs/workflow-format.md). */
#ifndef SD_CORE_XML_H
#define SD_CORE_XML_H

/* Largest workflow file accepted, checked before parsing. */
#define SD_XML_MAX_BYTES (16 << 20)
/* Deepest element nesting accepted, enforced while parsing. */
#define SD_XML_MAX_DEPTH 64

#endif
