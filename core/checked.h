/* Overflow-checked size arithmetic: every size computed from untrusted input goes through here. */
#ifndef SD_CORE_CHECKED_H
#define SD_CORE_CHECKED_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* *out = a * b; false on overflow. */
static inline bool sd_mul_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
/* *out = a + b; false on overflow. */
static inline bool sd_add_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}
/* Product of n non-negative int64 dimensions times elem_size; false on overflow or negative. */
bool sd_shape_bytes(const int64_t *dims, int n, size_t elem_size, size_t *out);
#endif
