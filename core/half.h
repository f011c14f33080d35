/* Scalar conversions between float and the 16-bit storage formats: IEEE binary16 (f16) and
 * bfloat16. Exact where the target holds the value; float -> f16 rounds to nearest even,
 * overflows to infinity and keeps NaN a NaN. */
#ifndef SD_CORE_HALF_H
#define SD_CORE_HALF_H
#include <stdint.h>

float sd_half_to_float(uint16_t h);
uint16_t sd_float_to_half(float f);
float sd_bf16_to_float(uint16_t b);
/* Round to nearest even; a NaN stays a (quiet) NaN. */
uint16_t sd_float_to_bf16(float f);

#endif
