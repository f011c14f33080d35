/* What the CPU offers sdflow's host routes (attention loops, the int8 linear route): detected once
 * per process from CPUID, with Linux's permission for the AMX tile state (Linux 5.16+; where it is
 * refused, the AMX fields stay false). All false off x86-64. */
#ifndef SD_RUNTIME_OPENCL_CPU_ISA_H
#define SD_RUNTIME_OPENCL_CPU_ISA_H

#include <stdbool.h>

typedef struct sd_cpu_isa {
    bool avx512;      /* AVX-512 F, BW, DQ and VL */
    bool avx512_bf16; /* with avx512 */
    bool avx512_vnni; /* with avx512 */
    bool amx_bf16;    /* AMX-TILE and AMX-BF16, tile state granted */
    bool amx_int8;    /* AMX-TILE and AMX-INT8, tile state granted */
} sd_cpu_isa;

const sd_cpu_isa *sd_cpu_isa_get(void);

#endif
