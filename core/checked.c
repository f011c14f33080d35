#include "core/checked.h"

bool sd_shape_bytes(const int64_t *dims, int n, size_t elem_size, size_t *out)
{
    size_t total = elem_size;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0 || (uint64_t)dims[i] > SIZE_MAX)
            return false;
        if (!sd_mul_size(total, (size_t)dims[i], &total))
            return false;
    }
    *out = total;
    return true;
}
