/* Dequantisation of the kept-as-stored weight types (tensor.h): ggml blocks (layouts as
 * ml/formats/gguf.c, whose host dequantiser is the reference) and fp8 bytes. Products in ggml's
 * order and no contraction into fma, so results are bit-identical to the host's; fp8 converts
 * exactly. `dequant` (sd_op_dequantize_tensor) writes f32, or f16 (round to nearest even) when
 * built with -DOUT_F16; `gemm_pack_b_blocks` (sd_op_linear) writes gemm.cl's fp32 B panels.
 * Every block size is even, so the f16 scales sit at even byte offsets and vload_half reads them
 * in place. Type numbers are tensor.h's sd_dtype. */
#pragma OPENCL FP_CONTRACT OFF

#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 4
#define T_Q5_1 5
#define T_Q8_0 6
#define T_Q4_K 7
#define T_Q5_K 8
#define T_Q6_K 9
#define T_F8_E4M3 10
#define T_F8_E5M2 11

#ifdef OUT_F16
#define STORE(v, i, p) vstore_half((v), (i) * ys, (p))
#define OUT half
#else
#define STORE(v, i, p) ((p)[(i) * ys] = (v))
#define OUT float
#endif

#define F16AT(b, off) vload_half(0, (global const half *)((b) + (off)))

inline uint le32(global const uchar *p)
{
    return (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
}

/* Q4_0 (18 B), Q4_1 (20 B), Q5_0 (22 B), Q5_1 (24 B): element j < 16 is qs[j]'s low nibble, 16 + j
 * its high one; Q5 adds bit j of qh. x = d * (q - offset) [+ m]. Element j goes to y[j * ys]. */
inline void q4q5(global const uchar *b, global OUT *y, long ys, int has_min, int five)
{
    float d = F16AT(b, 0), m = has_min ? F16AT(b, 2) : 0.0f;
    global const uchar *p = b + (has_min ? 4 : 2);
    uint qh = five ? le32(p) : 0;
    global const uchar *qs = p + (five ? 4 : 0);
    int offset = has_min ? 0 : (five ? 16 : 8);
    for (int j = 0; j < 32; j++) {
        int q = (j < 16 ? qs[j] & 0x0F : qs[j - 16] >> 4) | (int)(((qh >> j) & 1u) << 4);
        float v = d * (float)(q - offset);
        STORE(has_min ? v + m : v, j, y);
    }
}

/* Q8_0 (34 B): x = q * d. */
inline void q8(global const uchar *b, global OUT *y, long ys)
{
    float d = F16AT(b, 0);
    for (int j = 0; j < 32; j++)
        STORE((float)(char)b[2 + j] * d, j, y);
}

/* Q4_K (144 B) / Q5_K (176 B): d, dmin, 12 B of 6-bit (scale, min) pairs, [32 B high bits], 128 B
 * nibbles; sub-block j: x = (d*sc_j) * q - (dmin*m_j). */
inline void k45(global const uchar *b, global OUT *y, long ys, int five)
{
    float d = F16AT(b, 0), dmin = F16AT(b, 2);
    global const uchar *sc = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int s, m;
        if (j < 4) {
            s = sc[j] & 63;
            m = sc[j + 4] & 63;
        } else {
            s = (sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4);
            m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
        float d1 = d * (float)s, m1 = dmin * (float)m;
        global const uchar *q = qs + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            int v = (j & 1) ? q[l] >> 4 : q[l] & 0x0F;
            if (five)
                v |= ((qh[l] >> j) & 1) << 4;
            STORE(d1 * (float)v - m1, 32 * j + l, y);
        }
    }
}

/* Q6_K (210 B): 128 B ql, 64 B qh, 16 int8 scales, d; x = (d * scale[e/16]) * (q - 32). */
inline void q6k(global const uchar *b, global OUT *y, long ys)
{
    global const uchar *ql = b, *qh = b + 128, *sc = b + 192;
    float d = F16AT(b, 208);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        int lo = (ql[64 * h + 32 * (k & 1) + l] >> (4 * (k / 2))) & 0x0F;
        int hi = (qh[32 * h + l] >> (2 * k)) & 3;
        STORE((d * (float)(char)sc[e / 16]) * (float)((lo | (hi << 4)) - 32), e, y);
    }
}

/* fp8: float8_e4m3fn (bias 7, no infinities, S.1111.111 NaN) and float8_e5m2 (f16's top byte),
 * assembled as f32 bits (exact). */
inline float f8(uchar v, int e5m2)
{
    uint sign = (uint)(v & 0x80) << 24;
    uint e = e5m2 ? (v >> 2) & 31 : (v >> 3) & 15, m = e5m2 ? v & 3 : v & 7;
    uint mbits = e5m2 ? 2 : 3, emax = e5m2 ? 31 : 15, bias = e5m2 ? 15 : 7;
    if (e == emax && (e5m2 || m == 7))
        return as_float(sign | (e5m2 && m == 0 ? 0x7f800000u : 0x7fc00000u));
    if (e == 0)
        return as_float(sign | as_uint((float)m * (e5m2 ? 0x1p-16f : 0x1p-9f)));
    return as_float(sign | (e - bias + 127) << 23 | m << (23 - mbits));
}

/* Bytes and elements per block of type t. */
inline int block_bytes(int t)
{
    switch (t) {
    case T_Q4_0: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q5_1: return 24;
    case T_Q8_0: return 34;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_K: return 210;
    default: return 1;
    }
}

inline int block_elems(int t)
{
    return t >= T_Q4_K && t <= T_Q6_K ? 256 : t >= T_F8_E4M3 ? 1 : 32;
}

/* Block b of type t into y[0], y[ys], y[2 ys], ... */
inline void block(int t, global const uchar *b, global OUT *y, long ys)
{
    switch (t) {
    case T_Q4_0: q4q5(b, y, ys, 0, 0); break;
    case T_Q4_1: q4q5(b, y, ys, 1, 0); break;
    case T_Q5_0: q4q5(b, y, ys, 0, 1); break;
    case T_Q5_1: q4q5(b, y, ys, 1, 1); break;
    case T_Q8_0: q8(b, y, ys); break;
    case T_Q4_K: k45(b, y, ys, 0); break;
    case T_Q5_K: k45(b, y, ys, 1); break;
    case T_Q6_K: q6k(b, y, ys); break;
    default: STORE(f8(b[0], t == T_F8_E5M2), 0, y); break;
    }
}

/* One work-item per block. */
kernel void dequant(global const uchar *src, global OUT *dst, int type)
{
    ulong i = get_global_id(0);
    block(type, src + i * block_bytes(type), dst + i * block_elems(type), 1);
}

#ifndef OUT_F16
#define NR 32
/* gemm.cl's gemm_pack_b for a weight W [N, K] of type `type` (rows of whole blocks) used as B =
 * W^T: Bp[jp][k][j] = W[jp*NR + j][k], 0 past N. Global: ceil(N / NR). */
kernel void gemm_pack_b_blocks(global const uchar *w, global float *bp, int N, int K, int type)
{
    int jp = get_global_id(0), cols = min(NR, N - jp * NR);
    int be = block_elems(type), bb = block_bytes(type);
    long row_bytes = (long)(K / be) * bb;
    global float *dst = bp + (long)jp * K * NR;
    for (int j = 0; j < NR; j++) {
        if (j >= cols) {
            for (int k = 0; k < K; k++)
                dst[(long)k * NR + j] = 0.0f;
            continue;
        }
        global const uchar *row = w + (long)(jp * NR + j) * row_bytes;
        for (int i = 0; i < K / be; i++)
            block(type, row + (long)i * bb, dst + (long)i * be * NR + j, NR);
    }
}
#endif
