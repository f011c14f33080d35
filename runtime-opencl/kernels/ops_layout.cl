/* Layout kernels (runtime-opencl/ops_layout.c). */

#define TILE 16

/* out[b][n][m] = x[b][m][n] (+ add[b][n][m]) for x [batch, M, N]. One work-item per TILE x TILE
 * block: it reads TILE rows of x along n (contiguous) and writes TILE rows of out along m, so
 * both sides stream through cache lines. global = (ceil(N / TILE), ceil(M / TILE), batch). */
kernel void transpose_tile(global const float *x, global const float *add, global float *out, uint m, uint n,
                           int has_add)
{
    uint n0 = get_global_id(0) * TILE, m0 = get_global_id(1) * TILE;
    ulong base = get_global_id(2) * (ulong)m * n;
    global const float *src = x + base;
    global float *dst = out + base;
    uint mend = min(m0 + TILE, m), nend = min(n0 + TILE, n);
    float tile[TILE][TILE];
    for (uint i = m0; i < mend; i++)
        for (uint j = n0; j < nend; j++)
            tile[j - n0][i - m0] = src[(ulong)i * n + j];
    for (uint j = n0; j < nend; j++) {
        ulong row = (ulong)j * m;
        if (has_add) {
            global const float *a = add + base + row;
            for (uint i = m0; i < mend; i++)
                dst[row + i] = tile[j - n0][i - m0] + a[i];
        } else {
            for (uint i = m0; i < mend; i++)
                dst[row + i] = tile[j - n0][i - m0];
        }
    }
}
