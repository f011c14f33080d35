/* Convolution as GEMM (runtime-opencl/conv.c): the im2col matrix of one image is never formed
 * whole; this kernel gathers it straight into the NR-column panels that gemm_tile reads, one
 * chunk of output pixels at a time, with zero padding resolved here.
 *
 * Bp[jp][k][j] = X[c][oh*sh - ph + kh][ow*sw - pw + kw] for k = (c*KH + kh)*KW + kw and output
 * pixel p = n0 + jp*NR + j = oh*OW + ow (0 past n0 + ncols or outside the image).
 * Global: (ceil(ncols / NR)); work-group size 1. Build option -DX_HALF for f16 input. */
#define NR 32

#ifdef X_HALF
#define LOAD_X(p, i) vload_half((i), (p))
typedef half x_t;
#else
#define LOAD_X(p, i) ((p)[i])
typedef float x_t;
#endif

__kernel void conv_pack_b(__global const x_t *x, long x_off, __global float *bp, int C, int H, int W, int KH,
                          int KW, int sh, int sw, int ph, int pw, int OW, int n0, int ncols)
{
    int jp = get_global_id(0);
    int K = C * KH * KW;
    __global const x_t *img = x + x_off;
    __global float *dst = bp + (long)jp * K * NR;
    int ih0[NR], iw0[NR];
    int first = n0 + jp * NR, cols = min(NR, n0 + ncols - first);
    for (int j = 0; j < NR; j++) {
        int p = first + min(j, cols - 1);
        ih0[j] = (p / OW) * sh - ph;
        iw0[j] = (p % OW) * sw - pw;
    }
    /* Stride 1 and all NR pixels in one output row: input pixels are contiguous. */
    bool one_row = cols == NR && sw == 1 && ih0[0] == ih0[NR - 1];
    for (int c = 0; c < C; c++) {
        __global const x_t *plane = img + (long)c * H * W;
        for (int kh = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++, dst += NR) {
                int ih = ih0[0] + kh, iw = iw0[0] + kw;
                if (one_row && ih >= 0 && ih < H && iw >= 0 && iw + NR <= W) {
                    __global const x_t *src = plane + (long)ih * W + iw;
#ifdef X_HALF
                    vstore16(vload_half16(0, src), 0, dst);
                    vstore16(vload_half16(1, src), 1, dst);
#else
                    vstore16(vload16(0, src), 0, dst);
                    vstore16(vload16(1, src), 1, dst);
#endif
                    continue;
                }
                for (int j = 0; j < NR; j++) {
                    int y = ih0[j] + kh, xx = iw0[j] + kw;
                    bool in = j < cols && y >= 0 && y < H && xx >= 0 && xx < W;
                    dst[j] = in ? (float)LOAD_X(plane, (long)y * W + xx) : 0.0f;
                }
            }
        }
    }
}
