/* CPU feature detection for the host routes (runtime-opencl/cpu_isa.h). */
#include "runtime-opencl/cpu_isa.h"

#include <pthread.h>

static sd_cpu_isa isa;
static pthread_once_t isa_once = PTHREAD_ONCE_INIT;

#ifdef __x86_64__

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023 /* arch_prctl: ask for an extended state component */
#define XFEATURE_XTILEDATA 18      /* AMX tile data */

/* Leaf 7.0: ECX bit 11 AVX512-VNNI; EDX bits 22 AMX-BF16, 24 AMX-TILE, 25 AMX-INT8. Leaf 7.1: EAX
 * bit 5 AVX512-BF16. */
static void detect(void)
{
    unsigned a, b, c, d;
    __builtin_cpu_init();
    isa.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (!isa.avx512 || !__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    isa.avx512_vnni = (c & (1u << 11)) != 0;
    bool tile = (d & (1u << 24)) != 0, amx_bf16 = tile && (d & (1u << 22)), amx_int8 = tile && (d & (1u << 25));
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d))
        isa.avx512_bf16 = (a & (1u << 5)) != 0;
    if ((amx_bf16 || amx_int8) && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0) {
        isa.amx_bf16 = amx_bf16;
        isa.amx_int8 = amx_int8;
    }
}

#else

static void detect(void)
{
}

#endif

const sd_cpu_isa *sd_cpu_isa_get(void)
{
    pthread_once(&isa_once, detect);
    return &isa;
}
