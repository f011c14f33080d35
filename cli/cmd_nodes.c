/* sdflow nodes [TYPE]... [--markdown]: the node reference, from the registry's descriptors.
 * `sdflow nodes --markdown > docs/nodes.md` regenerates docs/nodes.md (a test compares them). */
#include "cli/cli.h"
#include "sdflow/node.h"
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void help(void)
{
    printf("usage: sdflow nodes [TYPE]... [--markdown]\n\n"
           "Describes node types: category, version, what the node does, its inputs (type,\n"
           "default, range or choices, doc) and outputs. Without TYPE, every node type.\n\n"
           "options:\n"
           "  --markdown           write the reference as Markdown (docs/nodes.md)\n"
           "  -h, --help           show this help\n\n"
           "exit status: 0 ok, 2 usage, 3 unknown node type\n");
}

/* A bound as text: integers exactly, other numbers in their shortest exact form. */
static void format_bound(const sd_input_desc *in, double v, char *buf, size_t size)
{
    if (in->type == SD_TYPE_INT && v >= -9.2e18 && v <= 9.2e18) {
        snprintf(buf, size, "%lld", (long long)v);
        return;
    }
    if (v == trunc(v) && fabs(v) < 1e15) { /* whole numbers in plain decimal: 100, not 1e+02 */
        snprintf(buf, size, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* Whether a bound is the type's own extreme (no real limit). */
static bool unbounded(const sd_input_desc *in, double v)
{
    if (in->type == SD_TYPE_INT)
        return v <= (double)INT64_MIN || v >= (double)INT64_MAX;
    return v <= -DBL_MAX || v >= DBL_MAX;
}

/* "[0, 10]", ">= 0", "<= 5", "one of: a, b" or "" into buf. */
static void constraint(const sd_input_desc *in, char *buf, size_t size)
{
    buf[0] = '\0';
    if (in->choices) {
        size_t used = (size_t)snprintf(buf, size, "one of:");
        for (const char *const *c = in->choices; *c && used < size; c++)
            used += (size_t)snprintf(buf + used, size - used, "%s %s", c == in->choices ? "" : ",", *c);
        return;
    }
    if (!(in->flags & SD_IN_RANGED))
        return;
    char lo[40], hi[40];
    format_bound(in, in->min, lo, sizeof lo);
    format_bound(in, in->max, hi, sizeof hi);
    bool no_lo = unbounded(in, in->min), no_hi = unbounded(in, in->max);
    if (!no_lo && !no_hi)
        snprintf(buf, size, "[%s, %s]", lo, hi);
    else if (!no_lo)
        snprintf(buf, size, ">= %s", lo);
    else if (!no_hi)
        snprintf(buf, size, "<= %s", hi);
}

/* "INT", "STRING (multi-line)", "STRING (file in checkpoints/)". */
static void type_text(const sd_input_desc *in, char *buf, size_t size)
{
    if (in->flags & SD_IN_FILE)
        snprintf(buf, size, "%s (file in %s/)", sd_type_name(in->type), in->file_dir);
    else if (in->flags & SD_IN_MULTILINE)
        snprintf(buf, size, "%s (multi-line)", sd_type_name(in->type));
    else
        snprintf(buf, size, "%s", sd_type_name(in->type));
}

/* "required", "optional" or the default as written ("" shown as ""). */
static void default_text(const sd_input_desc *in, char *buf, size_t size)
{
    if (in->def)
        snprintf(buf, size, "%s", *in->def ? in->def : "\"\"");
    else
        snprintf(buf, size, "%s", in->flags & SD_IN_OPTIONAL ? "optional" : "required");
}

static void print_text(const sd_node_desc *d)
{
    printf("%s  [%s, version %d]\n  %s\n", d->name, d->category, d->version, d->doc);
    printf("  inputs:%s\n", d->n_inputs ? "" : " none");
    for (size_t i = 0; i < d->n_inputs; i++) {
        const sd_input_desc *in = &d->inputs[i];
        char type[128], def[256], cons[1024];
        type_text(in, type, sizeof type);
        default_text(in, def, sizeof def);
        constraint(in, cons, sizeof cons);
        printf("    %s: %s, %s%s%s%s\n      %s\n", in->name, type, in->def ? "default " : "", def,
               *cons ? ", " : "", cons, in->doc);
    }
    printf("  outputs:%s\n", d->n_outputs ? "" : " none");
    for (size_t i = 0; i < d->n_outputs; i++)
        printf("    %s: %s\n      %s\n", d->outputs[i].name, sd_type_name(d->outputs[i].type),
               d->outputs[i].doc);
}

/* A Markdown table cell: '|' escaped, line breaks as spaces. */
static void md_cell(const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", stdout);
        else if (*s == '\n')
            putchar(' ');
        else
            putchar(*s);
    }
}

static void print_markdown(const sd_node_desc *d)
{
    printf("\n### %s\n\n%s Version %d.\n", d->name, d->doc, d->version);
    if (d->n_inputs) {
        printf("\n| Input | Type | Default | Range / choices | Description |\n"
               "|---|---|---|---|---|\n");
        for (size_t i = 0; i < d->n_inputs; i++) {
            const sd_input_desc *in = &d->inputs[i];
            char type[128], def[256], cons[1024];
            type_text(in, type, sizeof type);
            default_text(in, def, sizeof def);
            constraint(in, cons, sizeof cons);
            printf("| `%s` | ", in->name);
            md_cell(type);
            fputs(" | ", stdout);
            md_cell(def);
            fputs(" | ", stdout);
            md_cell(cons);
            fputs(" | ", stdout);
            md_cell(in->doc);
            fputs(" |\n", stdout);
        }
    }
    if (d->n_outputs) {
        printf("\n| Output | Type | Description |\n|---|---|---|\n");
        for (size_t i = 0; i < d->n_outputs; i++) {
            printf("| `%s` | %s | ", d->outputs[i].name, sd_type_name(d->outputs[i].type));
            md_cell(d->outputs[i].doc);
            fputs(" |\n", stdout);
        }
    }
}

static int by_category(const void *a, const void *b)
{
    const sd_node_desc *x = *(const sd_node_desc *const *)a, *y = *(const sd_node_desc *const *)b;
    int c = strcmp(x->category, y->category);
    return c ? c : strcmp(x->name, y->name);
}

int cmd_nodes(int argc, char **argv)
{
    bool markdown = false;
    size_t n = 0;
    const sd_node_desc **list = calloc(sd_node_type_count() + (size_t)argc, sizeof *list);
    if (!list)
        return cli_fail(NULL, SD_ERR_NOMEM, "out of memory");
    int rc = EXIT_OK;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help();
            goto done;
        } else if (!strcmp(argv[i], "--markdown")) {
            markdown = true;
        } else if (argv[i][0] == '-') {
            rc = cli_usage_error("nodes", "unknown option '%s'", argv[i]);
            goto done;
        } else if (!(list[n++] = sd_node_type_find(argv[i]))) {
            fprintf(stderr, "sdflow: error: unknown node type '%s' ('sdflow nodes' lists them)\n",
                    argv[i]);
            rc = EXIT_INVALID;
            goto done;
        }
    }
    if (n == 0) {
        for (size_t i = 0; i < sd_node_type_count(); i++)
            list[n++] = sd_node_type_at(i);
        qsort(list, n, sizeof *list, by_category);
    }
    if (markdown)
        printf("# Node reference\n\n"
               "Generated by `sdflow nodes --markdown` from the node registry; do not edit by hand.\n"
               "Type and input names follow ComfyUI. Default \"required\": the input must be linked\n"
               "or set; \"optional\": it may stay unset; otherwise the default applies when unset.\n");
    const char *category = NULL;
    if (markdown) {
        /* An index: one line per category linking to its node types. */
        putchar('\n');
        for (size_t i = 0; i < n; i++) {
            bool first = !category || strcmp(category, list[i]->category) != 0;
            if (first)
                printf("%s- %s: ", category ? "\n" : "", list[i]->category);
            printf("%s[%s](#", first ? "" : ", ", list[i]->name);
            for (const char *c = list[i]->name; *c; c++)
                putchar(tolower((unsigned char)*c));
            putchar(')');
            category = list[i]->category;
        }
        putchar('\n');
        category = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (markdown && (!category || strcmp(category, list[i]->category) != 0)) {
            category = list[i]->category;
            printf("\n## %s\n", category);
        } else if (!markdown && i > 0) {
            putchar('\n');
        }
        if (markdown)
            print_markdown(list[i]);
        else
            print_text(list[i]);
    }
done:
    free(list);
    return rc;
}
