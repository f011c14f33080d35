/* sdflow: the command-line front end. Dispatches to the subcommands in cli/command_list.h. */
#include "cli/cli.h"
#include <stdarg.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
#define SD_COMMAND(name, fn, summary) {name, fn, summary},
#include "cli/command_list.h"
#undef SD_COMMAND
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sdflow <command> [options] [arguments]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'sdflow <command> --help' describes a command's options.\n"
                 "exit codes: 0 ok, 1 replay mismatch, 2 usage, 3 invalid input, 4 resource limit,\n"
                 "            5 I/O error, 130 interrupted\n");
}

int cli_fail(sd_context *ctx, sd_status status, const char *msg)
{
    if (!msg)
        msg = ctx ? sd_context_errmsg(ctx) : sd_status_name(status);
    fprintf(stderr, "sdflow: error: %s\n", *msg ? msg : sd_status_name(status));
    return sd_status_exit_code(status);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "sdflow %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'sdflow %s --help'.\n", cmd);
    return EXIT_USAGE;
}

int cmd_version(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: sdflow version\n\nPrints the engine version.\n");
        return EXIT_OK;
    }
    if (argc > 1)
        return cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("sdflow %s\n", sd_version());
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version"))
        return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sdflow: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return EXIT_USAGE;
}
