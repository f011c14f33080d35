/* Image ops on [B, H, W, C] float images (runtime-opencl/ops_image.c): separable resampling
 * through host-computed tap tables (resize, blur), crop, pad, Sobel and the Canny stages.
 * One work-item per output pixel (all channels) or per output row; no local memory. */

/* ---- Separable resampling along one axis. ----
 * The image is viewed as [outer, n_in, inner] (inner = W*C when resampling along H of an
 * [B,H,W,C] image, inner = C along W); output [outer, n_out, inner]. Output position o reads
 * taps idx[o*taps + k] with weights w[o*taps + k] (zero-weight padding taps allowed).
 * Work-item (e-chunk, o-block, outer) computes RUN inner elements (float8 vectors; a vertical
 * pass reads whole rows) for OBLK consecutive output positions. */
#define RUN 32
#define OBLK 8
kernel void resample_axis(global const float *x, global float *y, global const int *idx,
                          global const float *w, uint taps, uint n_in, uint n_out, uint inner)
{
    uint e0 = get_global_id(0) * RUN, e1 = min(e0 + RUN, inner);
    uint o0 = get_global_id(1) * OBLK, o1 = min(o0 + OBLK, n_out);
    ulong b = get_global_id(2);
    global const float *px = x + b * n_in * inner;
    global float *py = y + b * n_out * inner;
    for (uint o = o0; o < o1; o++) {
        global const int *ti = idx + (ulong)o * taps;
        global const float *tw = w + (ulong)o * taps;
        global float *row = py + (ulong)o * inner;
        if (e1 - e0 == RUN) {
            float8 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            for (uint k = 0; k < taps; k++) {
                global const float *src = px + (ulong)ti[k] * inner + e0;
                float wk = tw[k];
                a0 += wk * vload8(0, src);
                a1 += wk * vload8(1, src);
                a2 += wk * vload8(2, src);
                a3 += wk * vload8(3, src);
            }
            vstore8(a0, 0, row + e0);
            vstore8(a1, 1, row + e0);
            vstore8(a2, 2, row + e0);
            vstore8(a3, 3, row + e0);
        } else if (inner <= 4) {
            /* Pixels of up to 4 channels along W: one float4 accumulator per output. */
            float4 a = 0.0f;
            for (uint k = 0; k < taps; k++) {
                global const float *src = px + (ulong)ti[k] * inner;
                float4 v = (float4)(src[0], inner > 1 ? src[1] : 0.0f, inner > 2 ? src[2] : 0.0f,
                                    inner > 3 ? src[3] : 0.0f);
                a += tw[k] * v;
            }
            float r[4] = {a.x, a.y, a.z, a.w};
            for (uint e = 0; e < inner; e++)
                row[e] = r[e];
        } else {
            for (uint e = e0; e < e1; e++) {
                float s = 0.0f;
                for (uint k = 0; k < taps; k++)
                    s += tw[k] * px[(ulong)ti[k] * inner + e];
                row[e] = s;
            }
        }
    }
}

/* The same with PIL's 8-bit fixed-point arithmetic (Resample.c, 22 precision bits): inputs
 * hold integers 0..255, weights are integers; the result is rounded, shifted and clipped to
 * 0..255 like PIL's clip8. */
#define PRECISION_BITS 22
kernel void resample_axis_u8(global const float *x, global float *y, global const int *idx,
                             global const int *w, uint taps, uint n_in, uint n_out, uint inner)
{
    uint e0 = get_global_id(0) * RUN, e1 = min(e0 + RUN, inner);
    uint o0 = get_global_id(1) * OBLK, o1 = min(o0 + OBLK, n_out);
    ulong b = get_global_id(2);
    global const float *px = x + b * n_in * inner;
    global float *py = y + b * n_out * inner;
    for (uint o = o0; o < o1; o++) {
        global const int *ti = idx + (ulong)o * taps;
        global const int *tw = w + (ulong)o * taps;
        global float *row = py + (ulong)o * inner;
        if (e1 - e0 == RUN) {
            int8 a[4];
            for (int v = 0; v < 4; v++)
                a[v] = (int8)(1 << (PRECISION_BITS - 1));
            for (uint k = 0; k < taps; k++) {
                global const float *src = px + (ulong)ti[k] * inner + e0;
                int wk = tw[k];
                for (int v = 0; v < 4; v++)
                    a[v] += wk * convert_int8(vload8(v, src));
            }
            for (int v = 0; v < 4; v++)
                vstore8(convert_float8(clamp(a[v] >> PRECISION_BITS, 0, 255)), v, row + e0);
        } else if (inner <= 4) {
            int4 a = (int4)(1 << (PRECISION_BITS - 1));
            for (uint k = 0; k < taps; k++) {
                global const float *src = px + (ulong)ti[k] * inner;
                int4 v = (int4)((int)src[0], inner > 1 ? (int)src[1] : 0, inner > 2 ? (int)src[2] : 0,
                                inner > 3 ? (int)src[3] : 0);
                a += tw[k] * v;
            }
            float4 f = convert_float4(clamp(a >> PRECISION_BITS, 0, 255));
            float r[4] = {f.x, f.y, f.z, f.w};
            for (uint e = 0; e < inner; e++)
                row[e] = r[e];
        } else {
            for (uint e = e0; e < e1; e++) {
                int s = 1 << (PRECISION_BITS - 1);
                for (uint k = 0; k < taps; k++)
                    s += tw[k] * (int)px[(ulong)ti[k] * inner + e];
                row[e] = (float)clamp(s >> PRECISION_BITS, 0, 255);
            }
        }
    }
}

/* ComfyUI's float -> uint8 conversion before PIL: trunc(clip(255 x, 0, 255)). */
kernel void quantize_u8(global const float *x, global float *y, ulong n)
{
    ulong i = get_global_id(0);
    if (i < n)
        y[i] = trunc(clamp(x[i] * 255.0f, 0.0f, 255.0f));
}

/* uint8 levels -> floats through a 256-entry table (exact v / 255 computed on the host). */
kernel void dequantize_u8(global const float *x, global float *y, global const float *lut, ulong n)
{
    ulong i = get_global_id(0);
    if (i < n)
        y[i] = lut[(int)x[i]];
}

/* ---- Crop: out [B, h, w, C] = x[:, top:top+h, left:left+w, :]; one work-item per out row. */
kernel void crop_rows(global const float *x, global float *y, uint in_h, uint in_w, uint c,
                      uint out_h, uint out_w, uint top, uint left)
{
    ulong row = get_global_id(0); /* b * out_h + oy */
    ulong b = row / out_h;
    uint oy = (uint)(row % out_h);
    global const float *ps = x + ((b * in_h + top + oy) * in_w + left) * c;
    global float *pd = y + row * out_w * c;
    uint len = out_w * c, j = 0;
    for (; j + 8 <= len; j += 8)
        vstore8(vload8(0, ps + j), 0, pd + j);
    for (; j < len; j++)
        pd[j] = ps[j];
}

/* ---- Pad: out [B, H+top+bottom, W+left+right, C]; mode 0 constant `value`, 1 edge
 * (replicate). Work-item (ox, oy, b) writes all channels of one pixel. */
kernel void pad_image(global const float *x, global float *y, uint in_h, uint in_w, uint c,
                      uint out_h, uint out_w, uint top, uint left, int mode, float value)
{
    uint ox = get_global_id(0), oy = get_global_id(1);
    ulong b = get_global_id(2);
    global float *pd = y + ((b * out_h + oy) * out_w + ox) * c;
    int iy = (int)oy - (int)top, ix = (int)ox - (int)left;
    bool inside = iy >= 0 && iy < (int)in_h && ix >= 0 && ix < (int)in_w;
    if (!inside && mode == 0) {
        for (uint k = 0; k < c; k++)
            pd[k] = value;
        return;
    }
    if (mode == 2) { /* reflect: the pad is smaller than the side */
        iy = iy < 0 ? -iy : iy >= (int)in_h ? 2 * ((int)in_h - 1) - iy : iy;
        ix = ix < 0 ? -ix : ix >= (int)in_w ? 2 * ((int)in_w - 1) - ix : ix;
    }
    iy = clamp(iy, 0, (int)in_h - 1);
    ix = clamp(ix, 0, (int)in_w - 1);
    global const float *ps = x + ((b * in_h + iy) * in_w + ix) * c;
    for (uint k = 0; k < c; k++)
        pd[k] = ps[k];
}

/* ---- Sobel (kornia spatial_gradient, unnormalised, replicate border) on [B, H, W, C]:
 * gx = [[-1,0,1],[-2,0,2],[-1,0,1]] correlated, gy its transpose. Work-item (x, y, b). */
kernel void sobel(global const float *x, global float *gx, global float *gy, uint h, uint w, uint c)
{
    int px = get_global_id(0), py = get_global_id(1);
    ulong b = get_global_id(2);
    int xm = max(px - 1, 0), xp = min(px + 1, (int)w - 1);
    int ym = max(py - 1, 0), yp = min(py + 1, (int)h - 1);
    global const float *img = x + b * h * w * c;
#define AT(yy, xx, k) img[((ulong)(yy) * w + (xx)) * c + (k)]
    for (uint k = 0; k < c; k++) {
        float tl = AT(ym, xm, k), tc = AT(ym, px, k), tr = AT(ym, xp, k);
        float ml = AT(py, xm, k), mr = AT(py, xp, k);
        float bl = AT(yp, xm, k), bc = AT(yp, px, k), br = AT(yp, xp, k);
        ulong o = ((b * h + py) * w + px) * c + k;
        gx[o] = ((tr - tl) + 2.0f * (mr - ml)) + (br - bl);
        gy[o] = ((bl - tl) + 2.0f * (bc - tc)) + (br - tr);
    }
#undef AT
}

/* ---- Canny stages on single-channel planes [B, H, W]. ---- */

/* RGB [B,H,W,3] -> gray [B,H,W] with kornia's weights. */
kernel void rgb_to_gray(global const float *x, global float *y, ulong n)
{
    ulong i = get_global_id(0);
    if (i < n)
        y[i] = 0.299f * x[3 * i] + 0.587f * x[3 * i + 1] + 0.114f * x[3 * i + 2];
}

/* Gradient magnitude sqrt(gx^2 + gy^2 + eps). */
kernel void canny_magnitude(global const float *gx, global const float *gy, global float *mag,
                            ulong n, float eps)
{
    ulong i = get_global_id(0);
    if (i < n)
        mag[i] = sqrt(gx[i] * gx[i] + gy[i] * gy[i] + eps);
}

/* Direction sector 0..7 of (gx, gy): round(atan2(gy, gx) / 45 degrees) mod 8, decided by
 * comparisons against tan(22.5) and tan(67.5) (no atan2 rounding differences). */
inline int canny_sector(float gx, float gy)
{
    const float t1 = 0.41421356237309503f, t2 = 2.4142135623730949f;
    float ax = fabs(gx), ay = fabs(gy);
    int s;
    if (ay <= t1 * ax)
        s = gx >= 0.0f ? 0 : 4; /* 0 or +-180 degrees */
    else if (ay >= t2 * ax)
        s = gy >= 0.0f ? 2 : 6; /* +-90 */
    else if (gy >= 0.0f)
        s = gx >= 0.0f ? 1 : 3;
    else
        s = gx >= 0.0f ? 7 : 5;
    return s;
}

/* Non-maximum suppression and double threshold (kornia canny): a pixel survives when its
 * magnitude is strictly larger than both neighbours along its gradient direction (zero outside
 * the image); then edges = 0.5 (mag > low) + 0.5 (mag > high). Work-item (x, y, b). */
kernel void canny_nms(global const float *mag, global const float *gx, global const float *gy,
                      global float *edges, uint h, uint w, float low, float high)
{
    int px = get_global_id(0), py = get_global_id(1);
    ulong b = get_global_id(2);
    /* Neighbour offsets of sectors 0..7 (kornia's NMS kernels): +x, +x+y, +y, -x+y, ... */
    const int dx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
    const int dy[8] = {0, 1, 1, 1, 0, -1, -1, -1};
    ulong plane = b * h * w;
    ulong i = plane + (ulong)py * w + px;
    float m = mag[i];
    int s = canny_sector(gx[i], gy[i]);
    float best = 0.0f;
    for (int side = 0; side < 2; side++) {
        int k = (s + 4 * side) & 7;
        int nx = px + dx[k], ny = py + dy[k];
        float nm = (nx >= 0 && nx < (int)w && ny >= 0 && ny < (int)h) ? mag[plane + (ulong)ny * w + nx] : 0.0f;
        best = fmax(best, nm);
    }
    float e = 0.0f;
    if (m - best > 0.0f) {
        e = (m > low ? 0.5f : 0.0f) + (m > high ? 0.5f : 0.0f);
    }
    edges[i] = e;
}

/* Hysteresis, in place: a weak pixel (0.5) with a strong (1) 8-neighbour becomes strong.
 * Promotions only go 0.5 -> 1, so concurrent updates never undo each other and the fixed point
 * is unique (weak pixels 8-connected to a strong one). canny_hysteresis_rows gives one
 * work-item a row and sweeps it left-to-right then right-to-left; canny_hysteresis_cols does
 * the same along columns, so chains along either axis resolve in one launch. Any change sets
 * *changed. */
inline bool has_strong_neighbour(global const float *plane, int px, int py, uint h, uint w)
{
    for (int yy = max(py - 1, 0); yy <= min(py + 1, (int)h - 1); yy++)
        for (int xx = max(px - 1, 0); xx <= min(px + 1, (int)w - 1); xx++)
            if (plane[(ulong)yy * w + xx] == 1.0f)
                return true;
    return false;
}

kernel void canny_hysteresis_rows(global float *edges, global int *changed, uint h, uint w)
{
    int py = get_global_id(0);
    global float *plane = edges + get_global_id(1) * (ulong)h * w;
    int any = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int t = 0; t < (int)w; t++) {
            int px = pass == 0 ? t : (int)w - 1 - t;
            global float *p = plane + (ulong)py * w + px;
            if (*p == 0.5f && has_strong_neighbour(plane, px, py, h, w)) {
                *p = 1.0f;
                any = 1;
            }
        }
    if (any)
        *changed = 1;
}

kernel void canny_hysteresis_cols(global float *edges, global int *changed, uint h, uint w)
{
    int px = get_global_id(0);
    global float *plane = edges + get_global_id(1) * (ulong)h * w;
    int any = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int t = 0; t < (int)h; t++) {
            int py = pass == 0 ? t : (int)h - 1 - t;
            global float *p = plane + (ulong)py * w + px;
            if (*p == 0.5f && has_strong_neighbour(plane, px, py, h, w)) {
                *p = 1.0f;
                any = 1;
            }
        }
    if (any)
        *changed = 1;
}

/* Final Canny image: strong edges 1, everything else 0, repeated over 3 channels. */
kernel void canny_to_rgb(global const float *edges, global float *y, ulong n)
{
    ulong i = get_global_id(0);
    if (i < n) {
        float v = edges[i] == 1.0f ? 1.0f : 0.0f;
        y[3 * i] = v;
        y[3 * i + 1] = v;
        y[3 * i + 2] = v;
    }
}
