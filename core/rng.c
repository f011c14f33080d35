/* Torch-compatible CPU random numbers (see rng.h and docs/sampling.md).
 *
 * Bit-exactness rules: every float operation below is one IEEE single operation in the order
 * PyTorch's AVX2 kernel performs it; where that kernel's compiled code fuses a multiply with an
 * add, fmaf() does the same. The file is compiled as ISO C, so the compiler contracts nothing
 * on its own; the pragma says so for compilers that would. */
#include "core/rng.h"

#include <math.h>
#include <string.h>

/* ISO C mode already keeps GCC from contracting a*b+c into fma; clang needs telling. */
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* avx_mathfun's constants are float arrays initialised from double literals. */
#define F32(x) ((float)(x))

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UMASK 0x80000000u
#define MT_LMASK 0x7fffffffu

void sd_rng_seed(sd_rng *rng, uint64_t seed)
{
    rng->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < SD_RNG_STATE_N; j++)
        rng->state[j] = 1812433253u * (rng->state[j - 1] ^ (rng->state[j - 1] >> 30)) + j;
    rng->left = 1;
    rng->next = 0;
    rng->has_cached_normal = false;
    rng->cached_normal = 0.0;
}

static uint32_t mt_twist(uint32_t u, uint32_t v)
{
    return (((u & MT_UMASK) | (v & MT_LMASK)) >> 1) ^ ((v & 1u) ? MT_MATRIX_A : 0u);
}

static void mt_next_state(sd_rng *rng)
{
    uint32_t *s = rng->state;
    int j = 0;
    for (; j < SD_RNG_STATE_N - MT_M; j++)
        s[j] = s[j + MT_M] ^ mt_twist(s[j], s[j + 1]);
    for (; j < SD_RNG_STATE_N - 1; j++)
        s[j] = s[j + MT_M - SD_RNG_STATE_N] ^ mt_twist(s[j], s[j + 1]);
    s[j] = s[j + MT_M - SD_RNG_STATE_N] ^ mt_twist(s[j], s[0]);
    rng->left = SD_RNG_STATE_N;
    rng->next = 0;
}

uint32_t sd_rng_u32(sd_rng *rng)
{
    if (--rng->left == 0)
        mt_next_state(rng);
    uint32_t y = rng->state[rng->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* torch's uniform_real_distribution<float>(0, 1): 24 random bits scaled into [0, 1). */
static float uniform_f32(sd_rng *rng)
{
    return (float)(sd_rng_u32(rng) & 0xffffffu) * (1.0f / 16777216.0f);
}

/* uniform_real_distribution<double>(0, 1) from random64() = (first << 32) | second. */
static double uniform_f64(sd_rng *rng)
{
    uint64_t hi = sd_rng_u32(rng);
    uint64_t lo = sd_rng_u32(rng);
    uint64_t v = (hi << 32) | lo;
    return (double)(v & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* normal_distribution<double>(0, 1): Box-Muller with the second value cached on the generator. */
static double normal_f64(sd_rng *rng)
{
    if (rng->has_cached_normal) {
        rng->has_cached_normal = false;
        return rng->cached_normal;
    }
    double u1 = uniform_f64(rng);
    double u2 = uniform_f64(rng);
    double r = sqrt(-2.0 * log1p(-u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    rng->cached_normal = r * sin(theta);
    rng->has_cached_normal = true;
    return r * cos(theta);
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* log256_ps of avx_mathfun (Cephes logf) for one lane. The callers only pass u in (0, 1]. */
static float cephes_logf(float x)
{
    x = fmaxf(x, bits_to_f32(0x00800000u));
    int32_t e_bits = (int32_t)(f32_to_bits(x) >> 23);
    x = bits_to_f32((f32_to_bits(x) & ~0x7f800000u) | f32_to_bits(0.5f));
    float e = (float)(e_bits - 0x7f);
    e = e + 1.0f;
    bool below = x < F32(0.707106781186547524);
    float tmp = below ? x : 0.0f;
    x = x - 1.0f;
    e = e - (below ? 1.0f : 0.0f);
    x = x + tmp;
    float z = x * x;
    float y = F32(7.0376836292E-2);
    y = fmaf(y, x, F32(-1.1514610310E-1));
    y = fmaf(y, x, F32(1.1676998740E-1));
    y = fmaf(y, x, F32(-1.2420140846E-1));
    y = fmaf(y, x, F32(1.4249322787E-1));
    y = fmaf(y, x, F32(-1.6668057665E-1));
    y = fmaf(y, x, F32(2.0000714765E-1));
    y = fmaf(y, x, F32(-2.4999993993E-1));
    y = fmaf(y, x, F32(3.3333331174E-1));
    y = y * x;
    y = fmaf(y, z, e * F32(-2.12194440e-4));
    y = fmaf(-z, 0.5f, y);
    x = x + y;
    x = fmaf(e, F32(0.693359375), x);
    return x;
}

/* sincos256_ps of avx_mathfun (Cephes sinf/cosf) for one lane; x >= 0 here (2*pi*u). */
static void cephes_sincosf(float x, float *s, float *c)
{
    uint32_t sign_sin = f32_to_bits(x) & 0x80000000u;
    x = fabsf(x);
    float y = x * F32(1.27323954473516);
    int32_t j = (int32_t)y; /* truncation, as cvttps */
    j = (j + 1) & ~1;
    y = (float)j;
    uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
    bool poly2 = ((uint32_t)j & 2u) == 0;
    x = fmaf(y, F32(-0.78515625), x);
    x = fmaf(y, F32(-2.4187564849853515625e-4), x);
    x = fmaf(y, F32(-3.77489497744594108e-8), x);
    uint32_t sign_cos = (~(uint32_t)(j - 2) & 4u) << 29;
    sign_sin ^= swap_sin;
    float z = x * x;
    float p = F32(2.443315711809948E-005);
    p = fmaf(p, z, F32(-1.388731625493765E-003));
    p = fmaf(p, z, F32(4.166664568298827E-002));
    p = p * z;
    p = fmaf(p, z, -(z * 0.5f));
    p = p + 1.0f;
    float q = F32(-1.9515295891E-4);
    q = fmaf(q, z, F32(8.3321608736E-3));
    q = fmaf(q, z, F32(-1.6666654611E-1));
    q = q * z;
    q = fmaf(q, x, x);
    /* The kernel selects with masks and add/sub, which decides the sign of zeros. */
    float sin2 = poly2 ? q : 0.0f;
    float sin1 = poly2 ? 0.0f : p;
    q = q - sin2;
    p = p - sin1;
    *s = bits_to_f32(f32_to_bits(sin1 + sin2) ^ sign_sin);
    *c = bits_to_f32(f32_to_bits(p + q) ^ sign_cos);
}

/* torch's NormalFill16 (AVX2): data[0..8) and data[8..16) hold uniforms; in place. */
static void normal_fill_16(float *data)
{
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - data[j];
        float u2 = data[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = (float)(2.0 * 3.14159265358979323846) * u2;
        float s, c;
        cephes_sincosf(theta, &s, &c);
        data[j] = fmaf(radius * c, 1.0f, 0.0f);
        data[j + 8] = fmaf(radius * s, 1.0f, 0.0f);
    }
}

void sd_rng_randn(sd_rng *rng, float *out, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = (float)normal_f64(rng);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = uniform_f32(rng);
    for (size_t i = 0; i + 16 <= n; i += 16)
        normal_fill_16(out + i);
    if (n % 16 != 0) {
        float *tail = out + n - 16;
        for (int i = 0; i < 16; i++)
            tail[i] = uniform_f32(rng);
        normal_fill_16(tail);
    }
}
