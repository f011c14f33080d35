/* sdflow devices: the OpenCL platforms and devices, and which one --device would pick. */
#include "cli/cli.h"
#include "sdflow/devices.h"
#include <string.h>

static void print_help(void)
{
    printf("usage: sdflow devices\n\n"
           "Lists every OpenCL device with its index, platform, type, driver version, memory,\n"
           "largest single allocation and fp16/fp64/subgroup support. Select one for other\n"
           "commands with --device <index or name substring> or SDFLOW_DEVICE; the default\n"
           "(marked '*') is the first GPU, else the first CPU device.\n\n"
           "exit codes: 0 ok, 2 usage, 4 no OpenCL platform or device (install pocl-opencl-icd)\n");
}

int cmd_devices(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help();
            return EXIT_OK;
        }
        return cli_usage_error("devices", "unexpected argument '%s'", argv[i]);
    }
    sd_context *ctx = NULL;
    sd_status st = sd_context_new(&ctx);
    if (st)
        return cli_fail(NULL, st, "out of memory");
    sd_device_info *list = NULL;
    size_t n = 0;
    st = sd_devices_list(ctx, &list, &n);
    int rc = EXIT_OK;
    if (st) {
        rc = cli_fail(ctx, st, NULL);
    } else {
        const char *last_platform = "";
        for (size_t i = 0; i < n; i++) {
            const sd_device_info *d = &list[i];
            if (strcmp(d->platform, last_platform) != 0)
                printf("platform: %s\n", d->platform);
            last_platform = d->platform;
            printf("%c %d: %s\n", d->is_default ? '*' : ' ', d->index, d->name);
            printf("     type %s, driver %s, %s, %u compute units\n", d->type, d->driver, d->version,
                   d->compute_units);
            printf("     memory %.1f GiB, max allocation %.1f GiB, fp16 %s, fp64 %s, subgroups %s\n",
                   (double)d->global_mem / (1u << 30), (double)d->max_alloc / (1u << 30),
                   d->fp16 ? "yes" : "no", d->fp64 ? "yes" : "no", d->subgroups ? "yes" : "no");
        }
    }
    sd_devices_free(list);
    sd_context_free(ctx);
    return rc;
}
