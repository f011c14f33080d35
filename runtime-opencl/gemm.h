/* Internal GEMM building blocks shared by the matmul and convolution ops (kernels/gemm.cl):
 * pack A into MR-row panels, pack B into NR-column panels, run the register-tile kernel. */
#ifndef SD_RUNTIME_OPENCL_GEMM_H
#define SD_RUNTIME_OPENCL_GEMM_H

#include "runtime-opencl/ops.h"

#define SD_GEMM_NR 32

/* A pooled scratch buffer. */
typedef struct sd_scratch {
    cl_mem buf;
    size_t cap;
} sd_scratch;
sd_status sd_scratch_get(sd_cl *cl, size_t elems, size_t elem_size, const char *what, sd_scratch *s);
/* sd_scratch_get for a form that may be kept with a constant tensor (sd_derived_add): a pooled
 * buffer only of the rounded size, never a larger one that would be held for good. */
sd_status sd_scratch_get_exact(sd_cl *cl, size_t elems, size_t elem_size, const char *what, sd_scratch *s);
void sd_scratch_release(sd_cl *cl, sd_scratch *s);

/* Rows per register tile for this device. */
int sd_gemm_mr(const sd_cl *cl);

/* Packs A (element (m, k) of batch b at src[off + b*s_b + m*s_m + k*s_k], f32 or f16) into
 * batch * ceil(M/MR) * K * MR floats of *out, which is allocated when out->buf is NULL (else it
 * must be large enough). */
sd_status sd_gemm_pack_a(sd_cl *cl, cl_mem src, sd_dtype dtype, long off, int M, int K, long s_m,
                         long s_k, long s_b, int batch, sd_scratch *out);
/* Packs B (element (k, n) of batch b at src[off + b*s_b + k*s_k + n*s_n]) into batch *
 * ceil(N/NR) * K * NR floats of *out (allocated as for sd_gemm_pack_a). */
sd_status sd_gemm_pack_b(sd_cl *cl, cl_mem src, sd_dtype dtype, long off, int N, int K, long s_k,
                         long s_n, long s_b, int batch, sd_scratch *out);

/* Forms derived from a constant tensor (sd_dtensor_set_constant), kept with it. A form is
 * identified by its kind and the parameters it was computed with. */
typedef enum sd_derived_kind {
    SD_DERIVED_GEMM_B, SD_DERIVED_WINOGRAD, SD_DERIVED_DNNL_MATMUL, SD_DERIVED_DNNL_CONV
} sd_derived_kind;
typedef struct sd_derived_key {
    sd_derived_kind kind;
    long p[6];
} sd_derived_key;
/* The kept buffer for key, or NULL (also when t is not constant). */
cl_mem sd_derived_find(const sd_dtensor *t, const sd_derived_key *key);
/* Hands s over to t's kept forms under key (s is emptied) when that stays within cl->keep_limit;
 * else, and on SD_ERR_NOMEM, s stays with the caller. */
sd_status sd_derived_add(const sd_dtensor *t, const sd_derived_key *key, sd_scratch *s);
/* Forms whose layout a library chooses (runtime-opencl/dnnl.c): kept whatever cl->keep_limit
 * (the mode that asks for them needs them on every call), each with a copy of the layout
 * description it was made for; found again only when fits(kept meta, want) says the layout is
 * the one wanted. */
cl_mem sd_derived_find_meta(const sd_dtensor *t, const sd_derived_key *key,
                            bool (*fits)(const void *meta, const void *want), const void *want);
sd_status sd_derived_keep_meta(const sd_dtensor *t, const sd_derived_key *key, sd_scratch *s, const void *meta,
                               size_t meta_size);
/* A kept form under key whatever its layout, with its layout description in *meta, or NULL. */
cl_mem sd_derived_find_any_meta(const sd_dtensor *t, const sd_derived_key *key, const void **meta);

/* Most A rows of a call that keeps a constant B's panels: with more rows the per-call packing
 * is a small part of the product and the freshly packed panels are still in cache, so keeping
 * them (f32, twice an f16 weight) costs memory without a measurable gain (docs/benchmarks.md). */
#define SD_GEMM_KEEP_MAX_ROWS 256

/* B packed into panels as sd_gemm_pack_b would, for a product with M rows of A (all batches): src's kept form
 * when it has one; else packed into *tmp (allocated here; release it after use), and kept with
 * src instead when src is constant and M <= SD_GEMM_KEEP_MAX_ROWS. */
sd_status sd_gemm_packed_b(sd_cl *cl, const sd_dtensor *src, long M, int N, int K, long s_k, long s_n, long s_b,
                           int batch, sd_scratch *tmp, cl_mem *out);

typedef struct sd_gemm_job {
    int M, N, K, batch;
    cl_mem ap, bp;         /* operands: bp packed; ap packed, or rows when lda > 0 */
    int lda;               /* > 0: A element (m, k) at ap[b*ap_bs + m*lda + k] (unpacked) */
    sd_dtype a_dtype;      /* of unpacked A rows: f32 or f16 */
    long ap_bs, bp_bs;     /* batch strides in floats (0: shared) */
    cl_mem c;              /* f32 output; element (m, n) at c_off + b*c_bs + m*ldc + n */
    long c_off, c_bs;
    int ldc;
    cl_mem bias;           /* NULL or f32 */
    int bias_mode;         /* 0 none, 1 per column (bias[n]), 2 per row (bias[m]) */
    float alpha;
    sd_act act;
} sd_gemm_job;
sd_status sd_gemm_run(sd_cl *cl, const sd_gemm_job *job);

#endif
