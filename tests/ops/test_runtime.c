/* OpenCL runtime: device listing and selection, tensors and the buffer pool, kernels, named
 * errors, limits, and the on-disk program binary cache across processes. */
#include "test.h"
#include "runtime-opencl/tensor.h"
#include "core/half.h"
#include "sdflow/devices.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char scale_src[] =
    "__kernel void scale(__global float *x, float s, int n)\n"
    "{ int i = get_global_id(0); if (i < n) x[i] *= s; }\n";

static sd_context *new_ctx(void)
{
    sd_context *ctx = NULL;
    if (sd_context_new(&ctx) != SD_OK)
        return NULL;
    return ctx;
}

static void test_devices_list(void)
{
    sd_context *ctx = new_ctx();
    sd_device_info *list = NULL;
    size_t n = 0;
    CHECK_EQ_INT(sd_devices_list(ctx, &list, &n), SD_OK);
    CHECK(n >= 1);
    int defaults = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(list[i].index, (int)i);
        CHECK(list[i].name[0] != '\0');
        CHECK(list[i].max_alloc > 0 && list[i].max_alloc <= list[i].global_mem);
        defaults += list[i].is_default;
    }
    CHECK_EQ_INT(defaults, 1);
    sd_devices_free(list);
    sd_context_free(ctx);
}

static void test_device_selection(void)
{
    sd_context *ctx = new_ctx();
    CHECK_EQ_INT(sd_context_set_device(ctx, "no-such-device-xyz"), SD_OK);
    sd_cl *cl = NULL;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_ERR_CL); /* a device error: exit 4 in the CLI */
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "no OpenCL device matches 'no-such-device-xyz'");
    CHECK_EQ_INT(sd_context_set_device(ctx, "99"), SD_OK);
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_ERR_CL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "no OpenCL device matches '99'");
    CHECK_EQ_INT(sd_context_set_device(ctx, "0"), SD_OK);
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    sd_cl *again = NULL;
    CHECK_EQ_INT(sd_cl_get(ctx, &again), SD_OK);
    CHECK(again == cl); /* one runtime per context, kept in its ext slot */
    /* Name substring, case-insensitive: the selected device's own name matches itself. */
    sd_context *ctx2 = new_ctx();
    char sel[64];
    snprintf(sel, sizeof sel, "%.6s", cl->device_name);
    for (char *p = sel; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    CHECK_EQ_INT(sd_context_set_device(ctx2, sel), SD_OK);
    sd_cl *cl2 = NULL;
    CHECK_EQ_INT(sd_cl_get(ctx2, &cl2), SD_OK);
    CHECK(cl2 && cl2->device == cl->device);
    sd_context_free(ctx2);
    sd_context_free(ctx);
}

static void test_tensor_round_trip(void)
{
    sd_context *ctx = new_ctx();
    sd_cl *cl;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    int64_t shape[] = {2, 3, 5, 7, 11};
    size_t n = 2 * 3 * 5 * 7 * 11;
    float *src = malloc(n * sizeof *src), *dst = malloc(n * sizeof *dst);
    for (size_t i = 0; i < n; i++)
        src[i] = (float)i * 0.37f - 300.0f;
    for (int dt = 0; dt < 2; dt++) {
        sd_dtensor *t = NULL;
        CHECK_EQ_INT(sd_dtensor_new(cl, (sd_dtype)dt, 5, shape, &t), SD_OK);
        CHECK_EQ_INT(t->numel, n);
        CHECK_EQ_INT(sd_dtensor_upload(t, src), SD_OK);
        CHECK_EQ_INT(sd_dtensor_download(t, dst), SD_OK);
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            /* f32 exact; f16 storage: relative rounding error <= 2^-11. */
            double err = (double)dst[i] - (double)src[i];
            double tol = dt == SD_DTYPE_F32 ? 0.0 : fabs((double)src[i]) * (1.0 / 2048);
            if (fabs(err) - tol > worst)
                worst = fabs(err) - tol;
        }
        CHECK(worst <= 0.0);
        sd_dtensor_free(t);
    }
    /* f16 bits go in as they are: every pattern but NaNs widens to the value it encodes. */
    {
        int64_t hs[] = {65536};
        uint16_t *bits = malloc(65536 * sizeof *bits);
        float *wide = malloc(65536 * sizeof *wide);
        sd_dtensor *h = NULL, *f = NULL;
        for (size_t i = 0; i < 65536; i++)
            bits[i] = (uint16_t)i;
        CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F16, 1, hs, &h), SD_OK);
        CHECK_EQ_INT(sd_dtensor_upload_f16(h, bits), SD_OK);
        CHECK_EQ_INT(sd_dtensor_download(h, wide), SD_OK);
        int wrong = 0;
        for (size_t i = 0; i < 65536; i++)
            if (!isnan(wide[i]) && sd_float_to_half(wide[i]) != bits[i])
                wrong++;
        CHECK_EQ_INT(wrong, 0);
        CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, hs, &f), SD_OK);
        CHECK_EQ_INT(sd_dtensor_upload_f16(f, bits), SD_ERR_INVALID);
        CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "f16 upload into [65536] f32");
        sd_dtensor_free(h);
        sd_dtensor_free(f);
        free(bits);
        free(wide);
    }
    /* zeros, copy, reshape */
    sd_dtensor *a = NULL, *b = NULL;
    int64_t s2[] = {6, 5};
    CHECK_EQ_INT(sd_dtensor_zeros(cl, SD_DTYPE_F32, 2, s2, &a), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(a, dst), SD_OK);
    CHECK(dst[0] == 0.0f && dst[29] == 0.0f);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, s2, &b), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(b, src), SD_OK);
    CHECK_EQ_INT(sd_dtensor_copy(a, b), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(a, dst), SD_OK);
    CHECK(memcmp(dst, src, 30 * sizeof *dst) == 0);
    int64_t s3[] = {3, 10}, bad[] = {4, 10};
    CHECK_EQ_INT(sd_dtensor_reshape(a, 2, s3), SD_OK);
    CHECK_EQ_INT(a->shape[1], 10);
    CHECK_EQ_INT(sd_dtensor_reshape(a, 2, bad), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "cannot reshape [3, 10] f32 to 40 elements");
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    free(src);
    free(dst);
    sd_context_free(ctx);
}

static void test_f16_conversion(void)
{
    CHECK_EQ_INT(sd_float_to_half(1.0f), 0x3c00);
    CHECK_EQ_INT(sd_float_to_half(-2.0f), 0xc000);
    CHECK_EQ_INT(sd_float_to_half(65504.0f), 0x7bff);
    CHECK_EQ_INT(sd_float_to_half(65520.0f), 0x7c00);           /* rounds up to inf */
    CHECK_EQ_INT(sd_float_to_half(5.9604645e-8f), 0x0001);      /* smallest subnormal */
    CHECK_EQ_INT(sd_float_to_half(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    CHECK_EQ_INT(sd_float_to_half(1.0f + 3.0f / 2048), 0x3c02); /* tie to even, upwards */
    for (uint32_t h = 0; h < 0x7c00; h++)                    /* every finite half round-trips */
        if (sd_float_to_half(sd_half_to_float((uint16_t)h)) != h) {
            CHECK_MSG(0, "f16 0x%04x does not round-trip", (unsigned)h);
            break;
        }
}

static void test_pool_reuse(void)
{
    sd_context *ctx = new_ctx();
    sd_cl *cl;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    int64_t shape[] = {1000, 1000};
    sd_dtensor *t = NULL;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, shape, &t), SD_OK);
    cl_mem first = t->buf;
    size_t live = cl->stats.live_bytes;
    CHECK(live >= 4000000);
    sd_dtensor_free(t);
    CHECK_EQ_INT(cl->stats.live_bytes, 0);
    CHECK(cl->stats.pool_bytes >= 4000000);
    int64_t smaller[] = {999, 1000}; /* fits the freed buffer: reused */
    int64_t half[] = {512, 1024}; /* 2 MiB: a plain request would take the 4 MB buffer */
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, half, &t), SD_OK);
    CHECK(t->buf == first);
    sd_dtensor_free(t);
    /* A long-lived tensor takes only a buffer of its own size, never the larger free one. */
    CHECK_EQ_INT(sd_dtensor_new_exact(cl, SD_DTYPE_F32, 2, half, &t), SD_OK);
    CHECK(t->buf != first);
    CHECK_EQ_INT(cl->stats.live_bytes, 2 << 20);
    sd_dtensor_free(t);
    sd_cl_pool_trim(cl);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, shape, &t), SD_OK);
    first = t->buf;
    sd_dtensor_free(t);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, smaller, &t), SD_OK);
    CHECK(t->buf == first);
    CHECK_EQ_INT(cl->stats.pool_bytes, 0);
    sd_dtensor_free(t);
    /* An exact request of the same size does reuse it. */
    CHECK_EQ_INT(sd_dtensor_new_exact(cl, SD_DTYPE_F32, 2, shape, &t), SD_OK);
    CHECK(t->buf == first);
    sd_dtensor_free(t);
    int64_t tiny[] = {10}; /* far smaller: a new buffer, not the 4 MB one */
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, tiny, &t), SD_OK);
    CHECK(t->buf != first);
    sd_dtensor_free(t);
    sd_cl_pool_trim(cl);
    CHECK_EQ_INT(cl->stats.pool_bytes, 0);
    /* The pool keeps at most its limit: lowering it releases the oldest free buffers, and a
     * buffer above it is released at once. */
    CHECK_EQ_INT(cl->pool_limit, SD_CL_POOL_DEFAULT);
    sd_dtensor *a = NULL, *b = NULL;
    int64_t one_mb[] = {256 * 1024};
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, one_mb, &a), SD_OK);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, one_mb, &b), SD_OK);
    cl_mem newest = b->buf;
    sd_dtensor_free(a);
    sd_dtensor_free(b);
    CHECK_EQ_INT(cl->stats.pool_bytes, 2 << 20);
    sd_cl_set_pool_limit(cl, (size_t)3 << 19); /* 1.5 MiB: one of the two stays, the newest */
    CHECK_EQ_INT(cl->stats.pool_bytes, 1 << 20);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, one_mb, &a), SD_OK);
    CHECK(a && a->buf == newest); /* the kept one is reused */
    CHECK_EQ_INT(cl->stats.pool_bytes, 0);
    sd_dtensor_free(a);
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, shape, &t), SD_OK); /* 4 MB, above the limit */
    sd_dtensor_free(t);
    CHECK_EQ_INT(cl->stats.pool_bytes, 1 << 20);
    sd_cl_set_pool_limit(cl, 0);
    CHECK_EQ_INT(cl->stats.pool_bytes, 0);
    sd_context_free(ctx);
}

static void test_limits(void)
{
    sd_context *ctx = new_ctx();
    sd_cl *cl;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    /* One element above the device's max allocation: refused before any allocation. */
    int64_t shape[] = {(int64_t)(cl->max_alloc / 4) + 1};
    sd_dtensor *t = (sd_dtensor *)1;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, shape, &t), SD_ERR_LIMIT);
    CHECK(t == NULL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "above the device's maximum allocation");
    CHECK_EQ_INT(cl->stats.live_bytes, 0);
    int64_t huge[] = {INT64_C(1) << 40, INT64_C(1) << 40};
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, huge, &t), SD_ERR_LIMIT);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor size overflows");
    int64_t neg[] = {3, -1};
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 2, neg, &t), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor dimension 1 is negative (-1)");
    int64_t six[6] = {1, 1, 1, 1, 1, 1};
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 6, six, &t), SD_ERR_INVALID);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "tensor rank 6 is outside 1..5");
    sd_context_free(ctx);
}

static void test_kernel_launch_and_errors(void)
{
    sd_context *ctx = new_ctx();
    sd_cl *cl;
    CHECK_EQ_INT(sd_cl_get(ctx, &cl), SD_OK);
    cl_program prog;
    CHECK_EQ_INT(sd_cl_program_source(cl, "scale-test", scale_src, NULL, &prog), SD_OK);
    cl_kernel k = NULL, k2 = NULL;
    /* The label names the program in the runtime's table like a file name. */
    CHECK_EQ_INT(sd_cl_kernel(cl, "scale-test", "scale", NULL, &k), SD_OK);
    CHECK_EQ_INT(sd_cl_kernel(cl, "scale-test.cl", "scale", NULL, &k2), SD_ERR_NOT_FOUND);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "kernel file scale-test.cl");
    float host[37];
    for (int i = 0; i < 37; i++)
        host[i] = (float)i;
    int64_t shape[] = {37};
    sd_dtensor *t;
    CHECK_EQ_INT(sd_dtensor_new(cl, SD_DTYPE_F32, 1, shape, &t), SD_OK);
    CHECK_EQ_INT(sd_dtensor_upload(t, host), SD_OK);
    sd_cl_arg args[] = {SD_ARG_MEM(t->buf), SD_ARG_FLOAT(2.5f), SD_ARG_INT(37)};
    size_t global = 40;
    CHECK_EQ_INT(sd_cl_launch(cl, k, 1, &global, NULL, SD_NARGS(args), args), SD_OK);
    CHECK_EQ_INT(sd_dtensor_download(t, host), SD_OK);
    CHECK(host[0] == 0.0f && host[36] == 90.0f && host[3] == 7.5f);
    /* A wrong argument is a named error with the kernel and the call site. */
    sd_cl_arg wrong[] = {SD_ARG_INT(1), SD_ARG_FLOAT(2.5f), SD_ARG_INT(37)};
    CHECK_EQ_INT(sd_cl_launch(cl, k, 1, &global, NULL, SD_NARGS(wrong), wrong), SD_ERR_CL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "clSetKernelArg(scale, arg 0) failed: CL_INVALID_");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "runtime.c:");
    /* A build failure carries the build log. */
    CHECK_EQ_INT(sd_cl_program_source(cl, "broken", "__kernel void f(__global float *x) { x[0] = y; }",
                                      NULL, &prog), SD_ERR_CL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "building broken");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "CL_BUILD_PROGRAM_FAILURE");
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "undeclared identifier 'y'");
    /* Same (file, options) gives the same kernel object; other options another program. */
    CHECK_EQ_INT(sd_cl_kernel(cl, "gemm.cl", "gemm_pack_b", NULL, &k), SD_OK);
    CHECK_EQ_INT(sd_cl_kernel(cl, "gemm.cl", "gemm_pack_b", NULL, &k2), SD_OK);
    CHECK(k == k2);
    CHECK_EQ_INT(sd_cl_kernel(cl, "gemm.cl", "no_such_kernel", NULL, &k), SD_ERR_CL);
    CHECK_STR_CONTAINS(sd_context_errmsg(ctx), "kernel no_such_kernel in gemm.cl: CL_INVALID_KERNEL_NAME");
    CHECK_STR_CONTAINS(sd_cl_error_name(CL_OUT_OF_RESOURCES), "CL_OUT_OF_RESOURCES");
    sd_dtensor_free(t);
    sd_context_free(ctx);
}

/* Child process: builds the test program once and exits with its counters encoded as
 * compiled + 10 * from_cache + 100 * cache_writes (all small). */
static int cache_child(const char *tag)
{
    sd_context *ctx = new_ctx();
    sd_cl *cl;
    if (!ctx || sd_cl_get(ctx, &cl))
        return 99;
    char *src = sd_strfmt("/* %s */\n%s", tag, scale_src);
    cl_program prog;
    sd_status st = sd_cl_program_source(cl, "cache-test", src, NULL, &prog);
    free(src);
    int code = st ? 98 : cl->stats.programs_compiled + 10 * cl->stats.programs_from_cache +
                             100 * cl->stats.cache_writes;
    sd_context_free(ctx);
    return code;
}

static char self_exe[4096];

static int run_child(const char *tag)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(self_exe, self_exe, "--cache-child", tag, (char *)NULL);
        _exit(97);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

static void test_binary_cache_across_processes(void)
{
    char *dir = test_path(test_scratch_dir(), "kcache");
    CHECK_EQ_INT(setenv("SDFLOW_KERNEL_CACHE", dir, 1), 0);
    char tag[64];
    snprintf(tag, sizeof tag, "unique %ld", (long)getpid());
    CHECK_EQ_INT(run_child(tag), 1 + 100);  /* first process compiles and writes the binary */
    CHECK_EQ_INT(run_child(tag), 10);       /* second process loads it, compiles nothing */
    /* A corrupt cache file is detected (checksum), rebuilt and rewritten. */
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "for f in '%s'/*.bin; do printf 'SDCLBIN1garbage' > \"$f\"; done", dir);
    CHECK_EQ_INT(system(cmd), 0);
    CHECK_EQ_INT(run_child(tag), 1 + 100);
    CHECK_EQ_INT(run_child(tag), 10);
    /* Temporary binaries a killed writer left: removed when old and unlocked; kept while a
     * process holds the writer's lock, while young, or when not named as one. */
    static const char *const temps[] = {"a.bin.tmp.4242", "b.bin.tmp.4243", "c.bin.tmp.4244", "d.bin.tmp.x"};
    int held = -1;
    for (int i = 0; i < 4; i++) {
        char *p = test_path(dir, temps[i]);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK(fd >= 0);
        if (i != 2) {
            const struct timespec old[2] = {{time(NULL) - 3600, 0}, {time(NULL) - 3600, 0}};
            CHECK(futimens(fd, old) == 0);
        }
        if (i == 1 && flock(fd, LOCK_EX) == 0)
            held = fd; /* a live writer */
        else
            close(fd);
        free(p);
    }
    CHECK(held >= 0);
    CHECK_EQ_INT(run_child(tag), 10);
    for (int i = 0; i < 4; i++) {
        char *p = test_path(dir, temps[i]);
        CHECK_MSG(test_file_exists(p) == (i != 0), "%s %s", temps[i], i ? "was removed" : "was left");
        free(p);
    }
    close(held);
    /* An unusable cache directory disables the cache with a warning; building still works. */
    char *file = test_path(test_scratch_dir(), "not-a-dir");
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    char *sub = test_path(file, "kernels");
    CHECK_EQ_INT(setenv("SDFLOW_KERNEL_CACHE", sub, 1), 0);
    CHECK_EQ_INT(run_child(tag), 1);
    unsetenv("SDFLOW_KERNEL_CACHE");
    free(sub);
    free(file);
    free(dir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--cache-child") == 0)
        return cache_child(argv[2]);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n > 0)
        self_exe[n] = '\0';
    RUN(test_f16_conversion);
    RUN(test_devices_list);
    RUN(test_device_selection);
    RUN(test_tensor_round_trip);
    RUN(test_pool_reuse);
    RUN(test_limits);
    RUN(test_kernel_launch_and_errors);
    RUN(test_binary_cache_across_processes);
    return test_summary("test_runtime");
}
