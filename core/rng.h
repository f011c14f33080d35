/* Torch-compatible random numbers: the same float32 values as torch.randn(shape,
 * generator=torch.manual_seed(seed)) on the CPU, for any shape (only the element count matters
 * for a contiguous tensor), including successive calls on one generator.
 *
 * The generator is PyTorch's CPU generator: MT19937 seeded with the low 32 bits of the 64-bit
 * seed, plus the cached second normal of its double-precision Box-Muller. randn of n >= 16
 * values follows torch's vectorised float path (uniforms first, then Box-Muller in blocks of
 * 16 with the AVX2 kernel's Cephes log/sincos polynomials, the tail recomputed from 16 fresh
 * uniforms); n < 16 follows the scalar double path. Details: docs/sampling.md. */
#ifndef SD_CORE_RNG_H
#define SD_CORE_RNG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SD_RNG_STATE_N 624

/* Plain value: copy it to fork a stream, no allocation, no cleanup. */
typedef struct sd_rng {
    uint32_t state[SD_RNG_STATE_N];
    int left, next;
    bool has_cached_normal; /* torch's next_double_normal_sample */
    double cached_normal;
} sd_rng;

/* torch.manual_seed(seed): resets the engine and drops any cached normal. */
void sd_rng_seed(sd_rng *rng, uint64_t seed);
/* The next 32-bit output of the engine (torch's generator->random()). */
uint32_t sd_rng_u32(sd_rng *rng);
/* Fills out[0..n) like torch.randn(n, generator=g) (float32, mean 0, std 1); n == 0 draws
 * nothing. */
void sd_rng_randn(sd_rng *rng, float *out, size_t n);

#endif
