/* Dequantisation of ggml block formats (sd_op_dequantize; layouts as ml/formats/gguf.c, whose
 * host dequantiser is the reference): one work-item per block, products in ggml's order and no
 * contraction into fma, so results are bit-identical to the host's. Output f32, or f16 (round to
 * nearest even) when built with -DOUT_F16. Every block size is even, so the f16 scales sit at
 * even byte offsets and vload_half reads them in place. */
#pragma OPENCL FP_CONTRACT OFF

#ifdef OUT_F16
#define STORE(v, i, p) vstore_half((v), (i), (p))
#define OUT half
#else
#define STORE(v, i, p) ((p)[i] = (v))
#define OUT float
#endif

#define F16AT(b, off) vload_half(0, (global const half *)((b) + (off)))

inline uint le32(global const uchar *p)
{
    return (uint)p[0] | ((uint)p[1] << 8) | ((uint)p[2] << 16) | ((uint)p[3] << 24);
}

/* Q4_0 (18 B), Q4_1 (20 B), Q5_0 (22 B), Q5_1 (24 B): element j < 16 is qs[j]'s low nibble, 16 + j
 * its high one; Q5 adds bit j of qh. x = d * (q - offset) [+ m]. */
inline void q4q5(global const uchar *b, global OUT *y, int has_min, int five)
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

kernel void dequant_q4_0(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    q4q5(src + i * 18, dst + i * 32, 0, 0);
}

kernel void dequant_q4_1(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    q4q5(src + i * 20, dst + i * 32, 1, 0);
}

kernel void dequant_q5_0(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    q4q5(src + i * 22, dst + i * 32, 0, 1);
}

kernel void dequant_q5_1(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    q4q5(src + i * 24, dst + i * 32, 1, 1);
}

kernel void dequant_q8_0(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    global const uchar *b = src + i * 34;
    global OUT *y = dst + i * 32;
    float d = F16AT(b, 0);
    for (int j = 0; j < 32; j++)
        STORE((float)(char)b[2 + j] * d, j, y);
}

/* Q4_K (144 B) / Q5_K (176 B): d, dmin, 12 B of 6-bit (scale, min) pairs, [32 B high bits], 128 B
 * nibbles; sub-block j: x = (d*sc_j) * q - (dmin*m_j). */
inline void k45(global const uchar *b, global OUT *y, int five)
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

kernel void dequant_q4_k(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    k45(src + i * 144, dst + i * 256, 0);
}

kernel void dequant_q5_k(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    k45(src + i * 176, dst + i * 256, 1);
}

/* Q6_K (210 B): 128 B ql, 64 B qh, 16 int8 scales, d; x = (d * scale[e/16]) * (q - 32). */
kernel void dequant_q6_k(global const uchar *src, global OUT *dst)
{
    ulong i = get_global_id(0);
    global const uchar *b = src + i * 210, *ql = b, *qh = b + 128, *sc = b + 192;
    global OUT *y = dst + i * 256;
    float d = F16AT(b, 208);
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        int lo = (ql[64 * h + 32 * (k & 1) + l] >> (4 * (k / 2))) & 0x0F;
        int hi = (qh[32 * h + l] >> (2 * k)) & 3;
        STORE((d * (float)(char)sc[e / 16]) * (float)((lo | (hi << 4)) - 32), e, y);
    }
}
