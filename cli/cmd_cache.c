/* sdflow cache stats|clear|verify|gc: maintenance of the node-output cache database. */
#include "cli/cli.h"
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sdflow cache stats|clear|verify|gc [--max-size SIZE] [--cache PATH]\n"
            "\n"
            "Maintains the node-output cache (default $SDFLOW_CACHE, else\n"
            "$XDG_CACHE_HOME/sdflow/cache.db, else ~/.cache/sdflow/cache.db).\n"
            "\n"
            "  stats            entries, payload bytes, database size, memoized file hashes, and the\n"
            "                   payload budget (SDFLOW_CACHE_MAX_SIZE, default 8G; 0: no eviction)\n"
            "  clear            delete every entry and file hash\n"
            "  verify           check the database and every entry's checksum; delete bad entries\n"
            "  gc --max-size S  evict least recently used entries until the payload is at most S\n"
            "                   (bytes, or with a K/M/G/T suffix: 500M, 8G)\n"
            "\n"
            "  --cache PATH     use this database instead of the default\n"
            "  -h, --help       show this help\n"
            "\n"
            "exit codes: 0 ok, 2 usage, 5 the database cannot be used\n");
}

/* "1.5 GiB" style, for people. */
static void human(int64_t bytes, char *out, size_t size)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, size, "%lld B", (long long)bytes);
    else
        snprintf(out, size, "%.1f %s", v, units[u]);
}

int cmd_cache(int argc, char **argv)
{
    const char *action = NULL, *cache = NULL, *max_size = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--cache") || !strcmp(a, "--max-size")) {
            if (i + 1 >= argc)
                return cli_usage_error("cache", "%s needs a value", a);
            *(a[2] == 'c' ? &cache : &max_size) = argv[++i];
        } else if (a[0] == '-') {
            return cli_usage_error("cache", "unknown option '%s'", a);
        } else if (action) {
            return cli_usage_error("cache", "unexpected argument '%s'", a);
        } else {
            action = a;
        }
    }
    if (!action)
        return cli_usage_error("cache", "missing action (stats, clear, verify or gc)");
    bool is_gc = !strcmp(action, "gc");
    if (!is_gc && strcmp(action, "stats") && strcmp(action, "clear") && strcmp(action, "verify"))
        return cli_usage_error("cache", "unknown action '%s' (stats, clear, verify or gc)", action);
    if (is_gc != (max_size != NULL))
        return cli_usage_error("cache", is_gc ? "gc needs --max-size SIZE" : "--max-size is for gc only");
    int64_t limit = 0;
    if (max_size && sd_parse_size(max_size, &limit) != SD_OK)
        return cli_usage_error("cache", "--max-size '%s' is not a size (like 500M or 8G)", max_size);

    sd_context *ctx;
    sd_status st = sd_context_new(&ctx);
    if (st)
        return cli_fail(NULL, st, "out of memory");
    if (cache)
        st = sd_context_set_cache_path(ctx, cache);
    if (!st && !sd_context_cache_path(ctx))
        st = SD_ERR_USAGE;
    int code = EXIT_OK;
    char a[32], b[32];
    if (st) {
        code = cli_fail(ctx, st, st == SD_ERR_USAGE ? "no cache location: set --cache, SDFLOW_CACHE or HOME" : NULL);
        goto done;
    }
    const char *path = sd_context_cache_path(ctx);
    if (!strcmp(action, "stats")) {
        sd_cache_stats s;
        if ((st = sd_cache_stats_get(ctx, &s))) {
            code = cli_fail(ctx, st, NULL);
            goto done;
        }
        char c[32];
        human(s.bytes, a, sizeof a);
        human(s.file_bytes, b, sizeof b);
        human(s.budget, c, sizeof c);
        printf("cache:       %s\nentries:     %lld\npayload:     %s\ndatabase:    %s\nfile hashes: %lld\n",
               path, (long long)s.entries, a, b, (long long)s.file_hashes);
        if (s.budget)
            printf("budget:      %s (least recently used entries are evicted above it)\n", c);
        else
            printf("budget:      none (SDFLOW_CACHE_MAX_SIZE=0: nothing is evicted)\n");
    } else if (!strcmp(action, "clear")) {
        if ((st = sd_cache_clear(ctx))) {
            code = cli_fail(ctx, st, NULL);
            goto done;
        }
        printf("cleared %s\n", path);
    } else if (!strcmp(action, "verify")) {
        int64_t bad = 0;
        if ((st = sd_cache_verify(ctx, &bad))) {
            code = cli_fail(ctx, st, NULL);
            goto done;
        }
        if (bad)
            printf("%s: %lld bad entries deleted\n", path, (long long)bad);
        else
            printf("%s: ok\n", path);
    } else {
        int64_t evicted = 0;
        sd_cache_stats s;
        if ((st = sd_cache_gc(ctx, limit, &evicted)) || (st = sd_cache_stats_get(ctx, &s))) {
            code = cli_fail(ctx, st, NULL);
            goto done;
        }
        human(s.bytes, a, sizeof a);
        printf("%s: evicted %lld entries; %lld entries, %s payload left\n", path, (long long)evicted,
               (long long)s.entries, a);
    }
done:
    sd_context_free(ctx);
    return code;
}
