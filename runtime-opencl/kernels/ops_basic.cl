/* Basic tensor ops (runtime-opencl/ops_basic.c): activations, elementwise arithmetic with
 * broadcasting, normalisation, softmax, copies, upsampling, timestep embedding.
 *
 * PoCL style (docs/design.md §7): each work-item owns a contiguous run of elements and walks it with
 * float8 vectors (vload8/vstore8 need only float alignment), no local memory, no barriers.
 * Reductions (group norm, layer norm, softmax) give one work-item a whole row or group. */

#define RUN 64 /* elements per work-item in elementwise kernels: 8 float8 vectors */

/* ---- Unary elementwise: y = f(x) over n elements, RUN per work-item. ---- */

inline float silu1(float x) { return x / (1.0f + exp(-x)); }
inline float8 silu8(float8 x) { return x / (1.0f + exp(-x)); }

/* erfc(z) for z >= 0 with relative error below 1.2e-7 (Numerical Recipes' erfcc Chebyshev fit):
 * built from exp, which PoCL vectorises, where the erf builtin runs scalar and ~20x slower. */
#define ERFCC_POLY(t)                                                                           \
    (-1.26551223f +                                                                             \
     t * (1.00002368f +                                                                         \
          t * (0.37409196f +                                                                    \
               t * (0.09678418f +                                                               \
                    t * (-0.18628806f +                                                         \
                         t * (0.27886807f +                                                     \
                              t * (-1.13520398f +                                               \
                                   t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f)))))))))
inline float erfc_pos1(float z)
{
    float t = 1.0f / (1.0f + 0.5f * z);
    return t * exp(-z * z + ERFCC_POLY(t));
}
inline float8 erfc_pos8(float8 z)
{
    float8 t = 1.0f / (1.0f + 0.5f * z);
    return t * exp(-z * z + ERFCC_POLY(t));
}

/* GELU 0.5 x (1 + erf(x / sqrt 2)) with erf(u) = sign(u) (1 - erfc(|u|)); branch-free so the
 * float8 form vectorises (absolute error of 1 + erf below 1e-7, like an fp32 erf). */
inline float gelu_erf1(float x)
{
    float c = erfc_pos1(fabs(x) * 0.70710678118654752f);
    return 0.5f * x * (1.0f + copysign(1.0f - c, x));
}
inline float8 gelu_erf8(float8 x)
{
    float8 c = erfc_pos8(fabs(x) * 0.70710678118654752f);
    return 0.5f * x * (1.0f + copysign(1.0f - c, x));
}

inline float gelu_tanh1(float x)
{
    return 0.5f * x * (1.0f + tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
inline float8 gelu_tanh8(float8 x)
{
    return 0.5f * x * (1.0f + tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}
inline float quick_gelu1(float x) { return x / (1.0f + exp(-1.702f * x)); }
inline float8 quick_gelu8(float8 x) { return x / (1.0f + exp(-1.702f * x)); }
inline float sigmoid1(float x) { return 1.0f / (1.0f + exp(-x)); }
inline float8 sigmoid8(float8 x) { return 1.0f / (1.0f + exp(-x)); }

#define UNARY_KERNEL(name, f1, f8)                                                              \
    kernel void name(global const float *x, global float *y, ulong n)                           \
    {                                                                                           \
        ulong base = (ulong)get_global_id(0) * RUN;                                             \
        if (base + RUN <= n) {                                                                  \
            for (int i = 0; i < RUN; i += 8)                                                    \
                vstore8(f8(vload8(0, x + base + i)), 0, y + base + i);                          \
        } else {                                                                                \
            for (ulong i = base; i < n; i++)                                                    \
                y[i] = f1(x[i]);                                                                \
        }                                                                                       \
    }

UNARY_KERNEL(act_silu, silu1, silu8)
UNARY_KERNEL(act_gelu_erf, gelu_erf1, gelu_erf8)
UNARY_KERNEL(act_gelu_tanh, gelu_tanh1, gelu_tanh8)
UNARY_KERNEL(act_quick_gelu, quick_gelu1, quick_gelu8)
UNARY_KERNEL(act_sigmoid, sigmoid1, sigmoid8)

/* y = x * mul + add (scale, invert). */
kernel void affine(global const float *x, global float *y, ulong n, float mul, float add)
{
    ulong base = (ulong)get_global_id(0) * RUN;
    if (base + RUN <= n) {
        for (int i = 0; i < RUN; i += 8)
            vstore8(vload8(0, x + base + i) * mul + add, 0, y + base + i);
    } else {
        for (ulong i = base; i < n; i++)
            y[i] = x[i] * mul + add;
    }
}

/* y = min(max(x, lo), hi). */
kernel void clamp_f32(global const float *x, global float *y, ulong n, float lo, float hi)
{
    ulong base = (ulong)get_global_id(0) * RUN;
    if (base + RUN <= n) {
        for (int i = 0; i < RUN; i += 8)
            vstore8(fmin(fmax(vload8(0, x + base + i), lo), hi), 0, y + base + i);
    } else {
        for (ulong i = base; i < n; i++)
            y[i] = fmin(fmax(x[i], lo), hi);
    }
}

/* GEGLU: x [rows, 2d] -> y [rows, d], y = x[:, :d] * gelu_erf(x[:, d:]).
 * Work-item (chunk, row) handles RUN outputs of one row. */
kernel void geglu(global const float *x, global float *y, uint d)
{
    ulong row = get_global_id(1);
    uint j0 = (uint)get_global_id(0) * RUN;
    global const float *a = x + row * 2 * d;
    global const float *g = a + d;
    global float *o = y + row * d;
    if (j0 + RUN <= d) {
        for (uint j = j0; j < j0 + RUN; j += 8)
            vstore8(vload8(0, a + j) * gelu_erf8(vload8(0, g + j)), 0, o + j);
    } else {
        for (uint j = j0; j < d; j++)
            o[j] = a[j] * gelu_erf1(g[j]);
    }
}

/* ---- Binary elementwise with broadcasting. ----
 * The output has 5 (collapsed) dimensions dims.s0..s4; a and b are addressed through element
 * strides (0 along broadcast dimensions). Work-item (chunk, i3, i0*i1*i2) covers RUN elements of
 * one innermost row; the vector paths need a unit inner stride on a. */
#define BINARY_KERNEL(name, OP)                                                                 \
    kernel void name(global const float *a, global const float *b, global float *y,             \
                     int8 dims, long8 sa, long8 sb)                                             \
    {                                                                                           \
        long j0 = (long)get_global_id(0) * RUN;                                                 \
        long i3 = get_global_id(1);                                                             \
        long i012 = get_global_id(2);                                                           \
        long i2 = i012 % dims.s2, i01 = i012 / dims.s2;                                         \
        long i1 = i01 % dims.s1, i0 = i01 / dims.s1;                                            \
        global const float *pa = a + i0 * sa.s0 + i1 * sa.s1 + i2 * sa.s2 + i3 * sa.s3;        \
        global const float *pb = b + i0 * sb.s0 + i1 * sb.s1 + i2 * sb.s2 + i3 * sb.s3;        \
        global float *py = y + (((i0 * dims.s1 + i1) * dims.s2 + i2) * dims.s3 + i3) * (long)dims.s4; \
        long j1 = min(j0 + RUN, (long)dims.s4);                                                 \
        if (j1 - j0 == RUN && sa.s4 == 1 && sb.s4 == 1) {                                       \
            for (long j = j0; j < j1; j += 8) {                                                 \
                float8 u = vload8(0, pa + j), v = vload8(0, pb + j);                            \
                vstore8(OP(u, v), 0, py + j);                                                   \
            }                                                                                   \
        } else if (j1 - j0 == RUN && sa.s4 == 1 && sb.s4 == 0) {                                \
            float8 v = (float8)(pb[0]);                                                         \
            for (long j = j0; j < j1; j += 8)                                                   \
                vstore8(OP(vload8(0, pa + j), v), 0, py + j);                                   \
        } else {                                                                                \
            for (long j = j0; j < j1; j++)                                                      \
                py[j] = OP(pa[j * sa.s4], pb[j * sb.s4]);                                       \
        }                                                                                       \
    }

#define OP_ADD(u, v) ((u) + (v))
#define OP_MUL(u, v) ((u) * (v))
BINARY_KERNEL(binary_add, OP_ADD)
BINARY_KERNEL(binary_mul, OP_MUL)

/* ---- Group norm ----
 * Pass 1: one work-item per (batch, group) reduces its contiguous group_elems values to
 * (mean, 1/sqrt(var + eps)). Numerically stable: each block of STAT_BLOCK values is reduced
 * exactly around its own mean (two sweeps over cached data), blocks are merged with Chan's
 * parallel-variance formula. */
#define STAT_BLOCK 512

inline float sum8(float8 v)
{
    float4 s = v.lo + v.hi;
    return (s.x + s.y) + (s.z + s.w);
}

/* Mean and M2 (sum of squared deviations) of p[0..n), n <= STAT_BLOCK. */
inline float2 block_moments(global const float *p, uint n)
{
    float8 acc = 0.0f;
    uint i = 0;
    for (; i + 8 <= n; i += 8)
        acc += vload8(0, p + i);
    float s = sum8(acc);
    for (; i < n; i++)
        s += p[i];
    float mean = s / (float)n;
    acc = 0.0f;
    i = 0;
    for (; i + 8 <= n; i += 8) {
        float8 d = vload8(0, p + i) - mean;
        acc += d * d;
    }
    float m2 = sum8(acc);
    for (; i < n; i++) {
        float d = p[i] - mean;
        m2 += d * d;
    }
    return (float2)(mean, m2);
}

/* Mean and population variance of p[0..n) merged blockwise (Chan et al.). */
inline float2 moments(global const float *p, ulong n)
{
    float mean = 0.0f, m2 = 0.0f, count = 0.0f;
    for (ulong off = 0; off < n; off += STAT_BLOCK) {
        uint nb = (uint)min((ulong)STAT_BLOCK, n - off);
        float2 bm = block_moments(p + off, nb);
        float fb = (float)nb;
        float total = count + fb;
        float delta = bm.x - mean;
        mean += delta * (fb / total);
        m2 += bm.y + delta * delta * (count * fb / total);
        count = total;
    }
    return (float2)(mean, m2 / count);
}

kernel void group_norm_stats(global const float *x, global float2 *stats, ulong group_elems, float eps)
{
    ulong g = get_global_id(0);
    float2 mv = moments(x + g * group_elems, group_elems);
    stats[g] = (float2)(mv.x, rsqrt(mv.y + eps));
}

/* Pass 1 for GPUs: one work-group of GN_WG work-items per (batch, group). Each work-item walks
 * the group with stride GN_WG (coalesced) keeping a running mean and M2 (Welford), then the
 * partial moments are merged pairwise in local memory with Chan's formula. */
#define GN_WG 256
inline void chan_merge(float *n, float *mean, float *m2, float nb, float meanb, float m2b)
{
    if (nb == 0.0f)
        return;
    float total = *n + nb, delta = meanb - *mean;
    *mean += delta * (nb / total);
    *m2 += m2b + delta * delta * (*n * nb / total);
    *n = total;
}

kernel void group_norm_stats_wg(global const float *x, global float2 *stats, ulong group_elems, float eps)
{
    local float ln[GN_WG], lmean[GN_WG], lm2[GN_WG];
    ulong g = get_group_id(0);
    uint lid = get_local_id(0);
    global const float *p = x + g * group_elems;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (ulong i = lid; i < group_elems; i += GN_WG) {
        float v = p[i], d = v - mean;
        n += 1.0f;
        mean += d / n;
        m2 += d * (v - mean);
    }
    ln[lid] = n;
    lmean[lid] = mean;
    lm2[lid] = m2;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint half_size = GN_WG / 2; half_size > 0; half_size >>= 1) {
        if (lid < half_size) {
            float a = ln[lid], am = lmean[lid], a2 = lm2[lid];
            chan_merge(&a, &am, &a2, ln[lid + half_size], lmean[lid + half_size], lm2[lid + half_size]);
            ln[lid] = a;
            lmean[lid] = am;
            lm2[lid] = a2;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        stats[g] = (float2)(lmean[0], rsqrt(lm2[0] / ln[0] + eps));
}

/* Pass 2: work-item (chunk, plane) normalises `chunk` values of one (batch, channel) plane of
 * hw values: y = (x - mean) * rstd * gamma + beta, optionally followed by SiLU.
 * affine: 0 none, 1 gamma/beta f32, 2 gamma/beta stored as f16 (read with vload_half). */
kernel void group_norm_apply(global const float *x, global const float2 *stats,
                             global const float *gamma, global const float *beta, global float *y,
                             uint channels, uint channels_per_group, ulong hw, uint chunk,
                             int affine, int silu)
{
    ulong plane = get_global_id(1);
    uint c = (uint)(plane % channels);
    ulong n = plane / channels;
    uint groups = channels / channels_per_group;
    float2 st = stats[n * groups + c / channels_per_group];
    float scale = st.y, shift = -st.x * st.y;
    if (affine) {
        float gm = affine == 2 ? vload_half(c, (global const half *)gamma) : gamma[c];
        float bt = affine == 2 ? vload_half(c, (global const half *)beta) : beta[c];
        scale *= gm;
        shift = shift * gm + bt;
    }
    ulong j0 = (ulong)get_global_id(0) * chunk;
    ulong j1 = min(j0 + chunk, hw);
    global const float *px = x + plane * hw;
    global float *py = y + plane * hw;
    ulong j = j0;
    if (silu) {
        for (; j + 8 <= j1; j += 8)
            vstore8(silu8(vload8(0, px + j) * scale + shift), 0, py + j);
        for (; j < j1; j++)
            py[j] = silu1(px[j] * scale + shift);
    } else {
        for (; j + 8 <= j1; j += 8)
            vstore8(vload8(0, px + j) * scale + shift, 0, py + j);
        for (; j < j1; j++)
            py[j] = px[j] * scale + shift;
    }
}

/* ---- Layer norm: one work-item per row of d values (rows are short and stay cached).
 * affine as in group_norm_apply. ---- */
kernel void layer_norm(global const float *x, global const float *gamma, global const float *beta,
                       global float *y, uint d, float eps, int affine)
{
    ulong row = get_global_id(0);
    global const float *px = x + row * d;
    global float *py = y + row * d;
    float2 mv = moments(px, d);
    float rstd = rsqrt(mv.y + eps);
    uint j = 0;
    if (affine == 2) {
        global const half *gh = (global const half *)gamma, *bh = (global const half *)beta;
        for (; j + 8 <= d; j += 8)
            vstore8((vload8(0, px + j) - mv.x) * rstd * vload_half8(0, gh + j) + vload_half8(0, bh + j), 0,
                    py + j);
        for (; j < d; j++)
            py[j] = (px[j] - mv.x) * rstd * vload_half(j, gh) + vload_half(j, bh);
    } else if (affine) {
        for (; j + 8 <= d; j += 8)
            vstore8((vload8(0, px + j) - mv.x) * rstd * vload8(0, gamma + j) + vload8(0, beta + j), 0,
                    py + j);
        for (; j < d; j++)
            py[j] = (px[j] - mv.x) * rstd * gamma[j] + beta[j];
    } else {
        for (; j + 8 <= d; j += 8)
            vstore8((vload8(0, px + j) - mv.x) * rstd, 0, py + j);
        for (; j < d; j++)
            py[j] = (px[j] - mv.x) * rstd;
    }
}

/* ---- RMS normalisation over rows of d values (T5's LayerNorm): y = x * rsqrt(mean(x^2) + eps) *
 * gamma. One work-item per row. ---- */
kernel void rms_norm(global const float *x, global const float *gamma, global float *y, uint d, float eps)
{
    ulong row = get_global_id(0);
    global const float *px = x + row * d;
    global float *py = y + row * d;
    float8 s8 = (float8)(0.0f);
    uint j = 0;
    for (; j + 8 <= d; j += 8) {
        float8 v = vload8(0, px + j);
        s8 += v * v;
    }
    float s = (s8.s0 + s8.s1) + (s8.s2 + s8.s3) + (s8.s4 + s8.s5) + (s8.s6 + s8.s7);
    for (; j < d; j++)
        s += px[j] * px[j];
    float r = rsqrt(s / (float)d + eps);
    for (j = 0; j + 8 <= d; j += 8)
        vstore8(vload8(0, px + j) * r * vload8(0, gamma + j), 0, py + j);
    for (; j < d; j++)
        py[j] = px[j] * r * gamma[j];
}

/* ---- Softmax over rows of d values: max, sum of exp, scale. One work-item per row; the exp
 * pass handles 32 values per iteration (4 independent float8) so the exp latency overlaps. ---- */
kernel void softmax_rows(global const float *x, global float *y, uint d)
{
    ulong row = get_global_id(0);
    global const float *px = x + row * d;
    global float *py = y + row * d;
    float8 m8 = (float8)(-INFINITY);
    uint j = 0;
    for (; j + 8 <= d; j += 8)
        m8 = fmax(m8, vload8(0, px + j));
    float4 m4 = fmax(m8.lo, m8.hi);
    float m = fmax(fmax(m4.x, m4.y), fmax(m4.z, m4.w));
    for (; j < d; j++)
        m = fmax(m, px[j]);
    if (m == -INFINITY)
        m = 0.0f; /* an all -inf row: exp gives zeros, the division below gives NaN as torch */
    float8 s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    j = 0;
    for (; j + 32 <= d; j += 32) {
        float8 e0 = exp(vload8(0, px + j) - m), e1 = exp(vload8(1, px + j) - m);
        float8 e2 = exp(vload8(2, px + j) - m), e3 = exp(vload8(3, px + j) - m);
        vstore8(e0, 0, py + j);
        vstore8(e1, 1, py + j);
        vstore8(e2, 2, py + j);
        vstore8(e3, 3, py + j);
        s0 += e0;
        s1 += e1;
        s2 += e2;
        s3 += e3;
    }
    for (; j + 8 <= d; j += 8) {
        float8 e = exp(vload8(0, px + j) - m);
        vstore8(e, 0, py + j);
        s0 += e;
    }
    float s = sum8((s0 + s1) + (s2 + s3));
    for (; j < d; j++) {
        float e = exp(px[j] - m);
        py[j] = e;
        s += e;
    }
    float inv = 1.0f / s;
    j = 0;
    for (; j + 8 <= d; j += 8)
        vstore8(vload8(0, py + j) * inv, 0, py + j);
    for (; j < d; j++)
        py[j] *= inv;
}

/* ---- GPU variants of the row reductions: one work-group of ROW_WG work-items per row, each
 * work-item striding the row (coalesced), partial results combined in local memory. ---- */
#define ROW_WG 256

/* Reduces v over the work-group in local scratch l (ROW_WG floats) with op; all get the result. */
#define WG_REDUCE(l, v, lid, OPR)                                                               \
    do {                                                                                        \
        l[lid] = v;                                                                             \
        barrier(CLK_LOCAL_MEM_FENCE);                                                           \
        for (uint h_ = ROW_WG / 2; h_ > 0; h_ >>= 1) {                                          \
            if (lid < h_)                                                                       \
                l[lid] = OPR(l[lid], l[lid + h_]);                                              \
            barrier(CLK_LOCAL_MEM_FENCE);                                                       \
        }                                                                                       \
        v = l[0];                                                                               \
        barrier(CLK_LOCAL_MEM_FENCE);                                                           \
    } while (0)
#define OPR_MAX(a, b) fmax(a, b)
#define OPR_ADD(a, b) ((a) + (b))

kernel void softmax_rows_wg(global const float *x, global float *y, uint d)
{
    local float l[ROW_WG];
    ulong row = get_group_id(0);
    uint lid = get_local_id(0);
    global const float *px = x + row * d;
    global float *py = y + row * d;
    float m = -INFINITY;
    for (uint j = lid; j < d; j += ROW_WG)
        m = fmax(m, px[j]);
    WG_REDUCE(l, m, lid, OPR_MAX);
    if (m == -INFINITY)
        m = 0.0f; /* an all -inf row: NaN as torch, see softmax_rows */
    float s = 0.0f;
    for (uint j = lid; j < d; j += ROW_WG)
        s += exp(px[j] - m);
    WG_REDUCE(l, s, lid, OPR_ADD);
    float inv = 1.0f / s;
    for (uint j = lid; j < d; j += ROW_WG)
        py[j] = exp(px[j] - m) * inv;
}

/* Two-pass mean and variance per row (the row is read three times; it stays in cache). */
kernel void layer_norm_wg(global const float *x, global const float *gamma, global const float *beta,
                          global float *y, uint d, float eps, int affine)
{
    local float l[ROW_WG];
    ulong row = get_group_id(0);
    uint lid = get_local_id(0);
    global const float *px = x + row * d;
    global float *py = y + row * d;
    float s = 0.0f;
    for (uint j = lid; j < d; j += ROW_WG)
        s += px[j];
    WG_REDUCE(l, s, lid, OPR_ADD);
    float mean = s / (float)d, v = 0.0f;
    for (uint j = lid; j < d; j += ROW_WG) {
        float t = px[j] - mean;
        v += t * t;
    }
    WG_REDUCE(l, v, lid, OPR_ADD);
    float rstd = rsqrt(v / (float)d + eps);
    for (uint j = lid; j < d; j += ROW_WG) {
        float o = (px[j] - mean) * rstd;
        if (affine == 2)
            o = o * vload_half(j, (global const half *)gamma) + vload_half(j, (global const half *)beta);
        else if (affine)
            o = o * gamma[j] + beta[j];
        py[j] = o;
    }
}

/* ---- Strided block copy (concat, slice): for each of `rows` rows, copy `len` contiguous
 * floats from src + row * src_row + src_off to dst + row * dst_row + dst_off.
 * Work-item (chunk, row) copies up to RUN floats. ---- */
kernel void copy_rows(global const float *src, global float *dst, ulong len, ulong src_row,
                      ulong src_off, ulong dst_row, ulong dst_off)
{
    ulong row = get_global_id(1);
    ulong j0 = (ulong)get_global_id(0) * RUN;
    global const float *ps = src + row * src_row + src_off;
    global float *pd = dst + row * dst_row + dst_off;
    if (j0 + RUN <= len) {
        for (ulong j = j0; j < j0 + RUN; j += 8)
            vstore8(vload8(0, ps + j), 0, pd + j);
    } else {
        for (ulong j = j0; j < len; j++)
            pd[j] = ps[j];
    }
}

/* ---- Nearest 2x upsample of planes [planes, h, w] -> [planes, 2h, 2w]: one work-item per
 * input row writes two output rows, each input value twice. ---- */
/* torch's F.interpolate(mode="nearest", size=(oh, ow)) on [planes, h, w]: source index
 * min(floor(o * scale), size - 1) with scale = (float)size / out_size in float, as PyTorch's
 * nearest_idx. One work-item per output row. */
kernel void upsample_nearest(global const float *x, global float *y, uint h, uint w, uint oh, uint ow, float sh,
                             float sw)
{
    ulong row = get_global_id(0); /* plane * oh + oy */
    ulong plane = row / oh;
    uint oy = (uint)(row % oh);
    uint iy = min((uint)floor((float)oy * sh), h - 1);
    global const float *px = x + (plane * h + iy) * (ulong)w;
    global float *py = y + row * (ulong)ow;
    for (uint ox = 0; ox < ow; ox++)
        py[ox] = px[min((uint)floor((float)ox * sw), w - 1)];
}

/* conv2d_direct: work-item (x8, oy, b * O + o) computes outputs 8 x8 .. 8 x8 + 7 of row oy of
 * channel o (float8 where the 8 inputs of a tap lie inside the row, one by one otherwise); taps
 * outside the input are zero. Each output's taps are summed in the same order either way. */
kernel void conv2d_direct(global const float *x, global const float *w, global const float *bias, global float *y,
                          int has_bias, uint c, uint h, uint wd, uint o_n, uint cg, uint kh, uint kw, uint oh, uint ow,
                          uint groups, int pad, int dil)
{
    uint ox0 = get_global_id(0) * 8, oy = get_global_id(1);
    ulong bo = get_global_id(2);
    uint o = (uint)(bo % o_n), b = (uint)(bo / o_n), g = o / (o_n / groups);
    float8 acc = (float8)(has_bias ? bias[o] : 0.0f);
    for (uint i = 0; i < cg; i++) {
        global const float *xp = x + ((ulong)b * c + g * cg + i) * h * wd;
        global const float *wp = w + ((ulong)o * cg + i) * kh * kw;
        for (uint ky = 0; ky < kh; ky++) {
            int iy = (int)oy - pad + (int)ky * dil;
            if (iy < 0 || iy >= (int)h)
                continue;
            global const float *row = xp + (ulong)iy * wd;
            for (uint kx = 0; kx < kw; kx++) {
                int ix = (int)ox0 - pad + (int)kx * dil;
                float wv = wp[ky * kw + kx];
                if (ix >= 0 && ix + 8 <= (int)wd) {
                    acc += wv * vload8(0, row + ix);
                } else {
                    float v[8];
                    for (int j = 0; j < 8; j++)
                        v[j] = ix + j >= 0 && ix + j < (int)wd ? row[ix + j] : 0.0f;
                    acc += wv * vload8(0, v);
                }
            }
        }
    }
    global float *d = y + (bo * oh + oy) * ow;
    float r[8];
    vstore8(acc, 0, r);
    for (uint j = 0; j < 8 && ox0 + j < ow; j++)
        d[ox0 + j] = r[j];
}

/* zero_insert: one work-item per output row (plane * oh + oy). */
kernel void zero_insert(global const float *x, global float *y, uint h, uint w, uint oh, uint ow, uint stride,
                        uint before)
{
    ulong row = get_global_id(0), plane = row / oh;
    int oy = (int)(row % oh) - (int)before;
    global float *d = y + row * ow;
    bool on_row = oy >= 0 && oy % (int)stride == 0 && oy / (int)stride < (int)h;
    global const float *s = x + (plane * h + (on_row ? oy / (int)stride : 0)) * (ulong)w;
    for (uint j = 0; j < ow; j++) {
        int ox = (int)j - (int)before;
        d[j] = on_row && ox >= 0 && ox % (int)stride == 0 && ox / (int)stride < (int)w ? s[ox / (int)stride] : 0.0f;
    }
}

/* max_pool2d 2x2 stride 2: one work-item per output row (plane * oh + oy); oh = h / 2, ow = w / 2. */
kernel void max_pool2x2(global const float *x, global float *y, uint h, uint w, uint oh, uint ow)
{
    ulong row = get_global_id(0), plane = row / oh, oy = row % oh;
    global const float *r0 = x + (plane * h + 2 * oy) * (ulong)w, *r1 = r0 + w;
    global float *d = y + row * ow;
    for (uint j = 0; j < ow; j++) {
        float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], e = r1[2 * j + 1];
        float m = fmax(fmax(a, b), fmax(c, e));
        d[j] = isnan(a) || isnan(b) || isnan(c) || isnan(e) ? NAN : m;
    }
}

/* AvgPool2d(2, stride 2, padding (h % 2, w % 2)), zero padding counted: one work-item per
 * output row (plane * oh + oy); input row 2 oy - ph + dy, column 2 ox - pw + dx. */
kernel void avg_pool2x2(global const float *x, global float *y, uint h, uint w, uint oh, uint ow)
{
    ulong row = get_global_id(0), plane = row / oh;
    int oy = (int)(row % oh), ph = (int)(h % 2), pw = (int)(w % 2);
    global const float *p = x + plane * h * (ulong)w;
    global float *d = y + row * ow;
    for (uint j = 0; j < ow; j++) {
        float s = 0.0f;
        for (int dy = 0; dy < 2; dy++) {
            int iy = 2 * oy - ph + dy;
            for (int dx = 0; dx < 2; dx++) {
                int ix = 2 * (int)j - pw + dx;
                if (iy >= 0 && iy < (int)h && ix >= 0 && ix < (int)w)
                    s += p[iy * (ulong)w + ix];
            }
        }
        d[j] = s / 4.0f;
    }
}

kernel void upsample_nearest2x(global const float *x, global float *y, uint w)
{
    ulong row = get_global_id(0); /* plane * h + iy */
    global const float *px = x + row * w;
    global float *y0 = y + row * 4 * (ulong)w;
    global float *y1 = y0 + 2 * (ulong)w;
    uint j = 0;
    for (; j + 4 <= w; j += 4) {
        float4 v = vload4(0, px + j);
        float8 d = (float8)(v.x, v.x, v.y, v.y, v.z, v.z, v.w, v.w);
        vstore8(d, 0, y0 + 2 * j);
        vstore8(d, 0, y1 + 2 * j);
    }
    for (; j < w; j++) {
        float v = px[j];
        y0[2 * j] = v;
        y0[2 * j + 1] = v;
        y1[2 * j] = v;
        y1[2 * j + 1] = v;
    }
}

/* ---- Sinusoidal timestep embedding as the LDM UNet's timestep_embedding (flip_sin_to_cos,
 * shift 0): for half = dim / 2, f_i = exp(-ln(max_period) * i / half),
 * out[n] = [cos(t_n f_0..f_{half-1}), sin(t_n f_0..), 0 if dim is odd].
 * Work-item (i, n); i in [0, half] where i == half writes the odd-dim zero pad. ---- */
kernel void timestep_embedding(global const float *t, global float *y, uint dim, float log_max_period)
{
    uint i = get_global_id(0);
    ulong n = get_global_id(1);
    uint half_dim = dim / 2;
    global float *py = y + n * dim;
    if (i == half_dim) {
        if (dim & 1)
            py[dim - 1] = 0.0f;
        return;
    }
    float freq = exp(-log_max_period * (float)i / (float)half_dim);
    float arg = t[n] * freq;
    py[i] = cos(arg);
    py[half_dim + i] = sin(arg);
}

/* ---- Rotary position embedding on adjacent pairs (FLUX's apply_rope). ----
 * x, y: [B, N, heads, 2 pairs]; pe: [N, pairs, 2] holding (cos, sin) per position and pair:
 * y[2i] = cos x[2i] - sin x[2i+1], y[2i+1] = sin x[2i] + cos x[2i+1].
 * Work-item (pair i, row = (b N + t) heads + h). */
kernel void rope_pairs(global const float *x, global float *y, global const float *pe, uint pairs, uint heads,
                       uint n)
{
    uint i = (uint)get_global_id(0);
    ulong row = get_global_id(1);
    ulong t = (row / heads) % n;
    global const float *p = pe + (t * pairs + i) * 2;
    float c = p[0], s = p[1];
    ulong o = row * 2 * pairs + 2 * i;
    float x0 = x[o], x1 = x[o + 1];
    y[o] = c * x0 - s * x1;
    y[o + 1] = s * x0 + c * x1;
}
