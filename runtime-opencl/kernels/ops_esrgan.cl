/* RRDBNet (ESRGAN) elementwise ops (runtime-opencl/ops_esrgan.c): LeakyReLU and a scaled
 * residual add, each writing into a channel range of a larger NCHW tensor so a dense block's
 * concatenation is built in place; pixel unshuffle with reflect padding.
 *
 * PoCL style (docs/design.md §7): a work-item owns RUN contiguous elements of one batch item's
 * [C*H*W] block and walks them with float8 vectors; no local memory, no barriers. */

#define RUN 64

/* dst[b * dst_stride + dst_off + j] = x >= 0 ? x : slope * x, x = src[b * n + j], j < n.
 * dst may be src (in place, dst_stride = n, dst_off = 0). */
kernel void esrgan_leaky_into(global const float *src, global float *dst, ulong n, ulong dst_stride,
                              ulong dst_off, float slope)
{
    ulong b = get_global_id(1), j0 = (ulong)get_global_id(0) * RUN;
    global const float *s = src + b * n;
    global float *d = dst + b * dst_stride + dst_off;
    if (j0 + RUN <= n) {
        for (int i = 0; i < RUN; i += 8) {
            float8 v = vload8(0, s + j0 + i);
            vstore8(select(v * slope, v, v >= (float8)0.0f), 0, d + j0 + i);
        }
    } else {
        for (ulong j = j0; j < n; j++) {
            float v = s[j];
            d[j] = v >= 0.0f ? v : v * slope;
        }
    }
}

/* dst[b * dst_stride + dst_off + j] = alpha * a[b * n + j] + c[b * c_stride + c_off + j].
 * a or c may alias dst at the same positions (each element is read, then written, by one
 * work-item). */
kernel void esrgan_axpy_into(global const float *a, global const float *c, global float *dst, ulong n,
                             ulong c_stride, ulong c_off, ulong dst_stride, ulong dst_off, float alpha)
{
    ulong b = get_global_id(1), j0 = (ulong)get_global_id(0) * RUN;
    global const float *pa = a + b * n;
    global const float *pc = c + b * c_stride + c_off;
    global float *d = dst + b * dst_stride + dst_off;
    if (j0 + RUN <= n) {
        for (int i = 0; i < RUN; i += 8)
            vstore8(alpha * vload8(0, pa + j0 + i) + vload8(0, pc + j0 + i), 0, d + j0 + i);
    } else {
        for (ulong j = j0; j < n; j++)
            d[j] = alpha * pa[j] + pc[j];
    }
}

/* Mirrors index i into [0, n) without repeating the edge (torch "reflect"), repeatedly for
 * pads longer than n - 1. */
inline int reflect_index(int i, int n)
{
    if (n == 1)
        return 0;
    int period = 2 * (n - 1);
    i = i % period;
    if (i < 0)
        i += period;
    return i < n ? i : period - i;
}

/* torch.pixel_unshuffle(F.pad(x, (0, pw, 0, ph), "reflect"), r): x [B, C, H, W] ->
 * y [B, C*r*r, OH, OW] with OH = (H + ph) / r; y[b, (c*r + i)*r + j, oy, ox] =
 * x[b, c, reflect(oy*r + i), reflect(ox*r + j)]. One work-item per output row. */
kernel void esrgan_unshuffle(global const float *x, global float *y, int C, int H, int W, int r, int OH, int OW)
{
    int oy = get_global_id(0), oc = get_global_id(1), b = get_global_id(2);
    int c = oc / (r * r), i = (oc / r) % r, j = oc % r;
    int sy = reflect_index(oy * r + i, H);
    global const float *src = x + (((long)b * C + c) * H + sy) * W;
    global float *dst = y + (((long)b * C * r * r + oc) * OH + oy) * OW;
    for (int ox = 0; ox < OW; ox++)
        dst[ox] = src[reflect_index(ox * r + j, W)];
}
