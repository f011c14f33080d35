/* Weight patch (sd_op_weight_add, used for LoRA): out = base + delta over n elements, base and
 * out in the weight's storage dtype (f16 when built with -DWEIGHT_F16, else f32), delta f32.
 * Each work-item takes a run of RUN elements (few, heavy work-items suit PoCL; docs/design.md §7). */

#define RUN 64

#ifdef WEIGHT_F16
#define LOAD(i, p) vload_half((i), (p))
#define STORE(v, i, p) vstore_half((v), (i), (p))
#define WEIGHT half
#else
#define LOAD(i, p) ((p)[i])
#define STORE(v, i, p) ((p)[i] = (v))
#define WEIGHT float
#endif

kernel void weight_add(global const WEIGHT *base, global const float *delta, global WEIGHT *out, ulong n)
{
    ulong start = (ulong)get_global_id(0) * RUN, end = min(start + RUN, n);
    for (ulong i = start; i < end; i++)
        STORE(LOAD(i, base) + delta[i], i, out);
}
