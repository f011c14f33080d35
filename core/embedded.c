#include "core/embedded.h"
#include <string.h>

const sd_embedded_file *sd_embedded_find(const sd_embedded_file *table, const char *name)
{
    for (const sd_embedded_file *f = table; f->name; f++)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}
