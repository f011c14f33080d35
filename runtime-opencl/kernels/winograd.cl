/* Winograd F(4x4, 3x3) convolution pieces (runtime-opencl/conv.c): Y = A^T [U .* V] A with
 * U = G g G^T (weights), V = B^T d B (6x6 input patches), the 36 element-wise products summed
 * over input channels as 36 GEMMs [O, C] x [C, tiles] by gemm_tile.
 * Index xi = 6 * row + column of the 6x6 transformed tile. Work-group size 1 on CPUs. */
#define NR 32

#ifdef W_HALF
#define LOAD_W(p, i) vload_half((i), (p))
typedef half w_t;
#else
#define LOAD_W(p, i) ((p)[i])
typedef float w_t;
#endif

/* U[xi][o][c] = (G g G^T)[xi] for g = w[o][c] (3x3). Global: (O); each work-item does every c. */
__kernel void wino_weights(__global const w_t *w, __global float *u, int O, int C)
{
    int o = get_global_id(0);
    for (int c = 0; c < C; c++) {
    __global const w_t *g = w + ((long)o * C + c) * 9;
    float gg[3][3], t[6][3];
    for (int i = 0; i < 9; i++)
        gg[i / 3][i % 3] = (float)LOAD_W(g, i);
    for (int j = 0; j < 3; j++) { /* t = G g */
        float a = gg[0][j], b = gg[1][j], d = gg[2][j];
        t[0][j] = a * 0.25f;
        t[1][j] = -(a + b + d) / 6.0f;
        t[2][j] = -(a - b + d) / 6.0f;
        t[3][j] = a / 24.0f + b / 12.0f + d / 6.0f;
        t[4][j] = a / 24.0f - b / 12.0f + d / 6.0f;
        t[5][j] = d;
    }
    long plane = (long)O * C, at = (long)o * C + c;
    for (int i = 0; i < 6; i++) { /* (G g) G^T */
        float a = t[i][0], b = t[i][1], d = t[i][2];
        float r[6] = {a * 0.25f, -(a + b + d) / 6.0f, -(a - b + d) / 6.0f, a / 24.0f + b / 12.0f + d / 6.0f,
                      a / 24.0f - b / 12.0f + d / 6.0f, d};
        for (int j = 0; j < 6; j++)
            u[(i * 6 + j) * plane + at] = r[j];
    }
    }
}

/* B^T x B for one 6x6 patch, in place. */
void bt_b(float d[6][6])
{
    float t[6][6];
    for (int j = 0; j < 6; j++) {
        t[0][j] = 4.0f * d[0][j] - 5.0f * d[2][j] + d[4][j];
        t[1][j] = -4.0f * d[1][j] - 4.0f * d[2][j] + d[3][j] + d[4][j];
        t[2][j] = 4.0f * d[1][j] - 4.0f * d[2][j] - d[3][j] + d[4][j];
        t[3][j] = -2.0f * d[1][j] - d[2][j] + 2.0f * d[3][j] + d[4][j];
        t[4][j] = 2.0f * d[1][j] - d[2][j] - 2.0f * d[3][j] + d[4][j];
        t[5][j] = 4.0f * d[1][j] - 5.0f * d[3][j] + d[5][j];
    }
    for (int i = 0; i < 6; i++) {
        d[i][0] = 4.0f * t[i][0] - 5.0f * t[i][2] + t[i][4];
        d[i][1] = -4.0f * t[i][1] - 4.0f * t[i][2] + t[i][3] + t[i][4];
        d[i][2] = 4.0f * t[i][1] - 4.0f * t[i][2] - t[i][3] + t[i][4];
        d[i][3] = -2.0f * t[i][1] - t[i][2] + 2.0f * t[i][3] + t[i][4];
        d[i][4] = 2.0f * t[i][1] - t[i][2] - 2.0f * t[i][3] + t[i][4];
        d[i][5] = 4.0f * t[i][1] - 5.0f * t[i][3] + t[i][5];
    }
}

/* Transformed input tiles written as the B panels of the 36 GEMMs:
 * Vp[xi][jp][c][j] for tile t = t0 + jp*NR + j of image x + x_off (tiles past t0 + nt are 0).
 * Tiles are numbered row-major over a TH x TW grid; tile (ty, tx) reads input rows from
 * 4*ty - ph and columns from 4*tx - pw. Global: (ceil(nt / NR), C). */
__kernel void wino_input(__global const float *x, long x_off, __global float *vp, int C, int H, int W,
                         int ph, int pw, int TW, int t0, int nt)
{
    int jp = get_global_id(0), c = get_global_id(1);
    int npanels = (nt + NR - 1) / NR;
    long xi_stride = (long)npanels * C * NR;
    __global const float *plane = x + x_off + (long)c * H * W;
    __global float *dst = vp + ((long)jp * C + c) * NR;
    for (int j = 0; j < NR; j++) {
        float d[6][6];
        int t = jp * NR + j;
        if (t < nt) {
            int ty = (t0 + t) / TW, tx = (t0 + t) % TW;
            int y0 = ty * 4 - ph, x0 = tx * 4 - pw;
            for (int i = 0; i < 6; i++)
                for (int k = 0; k < 6; k++) {
                    int yy = y0 + i, xx = x0 + k;
                    d[i][k] = yy >= 0 && yy < H && xx >= 0 && xx < W ? plane[(long)yy * W + xx] : 0.0f;
                }
            bt_b(d);
        } else {
            for (int i = 0; i < 36; i++)
                d[i / 6][i % 6] = 0.0f;
        }
        for (int i = 0; i < 36; i++)
            dst[i * xi_stride + j] = d[i / 6][i % 6];
    }
}

/* Y = A^T M A (4x4) for tiles t0 + [t1, t1 + NR) and output channel o, plus bias, activation
 * (0 none, 1 SiLU, 2 GELU), written into out + out_off ([O, OH, OW]). M[xi][o][t] with t < ldm;
 * nt tiles in this chunk. Global: (ceil(nt / NR), O). */
__kernel void wino_output(__global const float *mbuf, int ldm, long m_xi_stride, __global float *out, long out_off,
                          __global const float *bias, int OH, int OW, int TW, int t0, int nt, int act)
{
    int t1 = get_global_id(0) * NR, o = get_global_id(1);
    float b = bias ? bias[o] : 0.0f;
    __global float *dst = out + out_off + (long)o * OH * OW;
    for (int t = t1; t < min(t1 + NR, nt); t++) {
        float m[6][6], r[6][4];
        __global const float *src = mbuf + (long)o * ldm + t;
        for (int i = 0; i < 36; i++)
            m[i / 6][i % 6] = src[i * m_xi_stride];
        for (int i = 0; i < 6; i++) { /* M A */
            r[i][0] = m[i][0] + m[i][1] + m[i][2] + m[i][3] + m[i][4];
            r[i][1] = m[i][1] - m[i][2] + 2.0f * (m[i][3] - m[i][4]);
            r[i][2] = m[i][1] + m[i][2] + 4.0f * (m[i][3] + m[i][4]);
            r[i][3] = m[i][1] - m[i][2] + 8.0f * (m[i][3] - m[i][4]) + m[i][5];
        }
        int ty = (t0 + t) / TW, tx = (t0 + t) % TW;
        for (int j = 0; j < 4; j++) { /* A^T (M A) */
            float y[4] = {r[0][j] + r[1][j] + r[2][j] + r[3][j] + r[4][j],
                          r[1][j] - r[2][j] + 2.0f * (r[3][j] - r[4][j]),
                          r[1][j] + r[2][j] + 4.0f * (r[3][j] + r[4][j]),
                          r[1][j] - r[2][j] + 8.0f * (r[3][j] - r[4][j]) + r[5][j]};
            int xx = tx * 4 + j;
            for (int i = 0; i < 4; i++) {
                int yy = ty * 4 + i;
                float v = y[i] + b;
                if (act == 1)
                    v = v / (1.0f + exp(-v));
                else if (act == 2)
                    v = 0.5f * v * (1.0f + erf(v * 0.70710678118654752f));
                if (yy < OH && xx < OW)
                    dst[(long)yy * OW + xx] = v;
            }
        }
    }
}
