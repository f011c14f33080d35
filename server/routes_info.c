/* /object_info[/{class}] from the node descriptors in ComfyUI's input-spec shapes, and
 * /system_stats. */
#include "server/internal.h"
#include "sdflow/devices.h"
#include "sdflow/node.h"
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

/* A number from the descriptor: an integer when it is one that fits int64, else a real. */
static json_t *number(double v, bool integer)
{
    if (integer && isfinite(v) && fabs(v) < 9.2e18 && v == floor(v))
        return json_integer((json_int_t)v);
    return json_real(isfinite(v) ? v : (v > 0 ? DBL_MAX : -DBL_MAX));
}

/* A default given as text, as the input's JSON type. */
static json_t *default_value(const sd_input_desc *in)
{
    switch (in->type) {
    case SD_TYPE_INT: return json_integer(strtoll(in->def, NULL, 10));
    case SD_TYPE_FLOAT: return number(strtod(in->def, NULL), false);
    case SD_TYPE_BOOLEAN: return json_boolean(!strcmp(in->def, "true"));
    default: return json_string(in->def);
    }
}

/* PNG names directly in the input directory (what LoadImage offers). */
static json_t *input_images(const sd_context *ctx)
{
    json_t *list = json_array();
    DIR *d = opendir(sd_context_dir(ctx, SD_DIR_INPUT));
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] != '.' && n > 4 && !strcasecmp(e->d_name + n - 4, ".png"))
            json_array_append_new(list, json_string(e->d_name));
    }
    if (d)
        closedir(d);
    return list;
}

/* ComfyUI's spec of one input: ["MODEL"], ["INT", {...}], [[choices...], {...}]. */
static json_t *input_spec(const sd_context *ctx, const sd_input_desc *in)
{
    json_t *opts = json_object();
    if (in->def)
        json_object_set_new(opts, "default", default_value(in));
    if (in->flags & SD_IN_RANGED) {
        json_object_set_new(opts, "min", number(in->min, in->type == SD_TYPE_INT));
        json_object_set_new(opts, "max", number(in->max, in->type == SD_TYPE_INT));
    }
    if (in->flags & SD_IN_MULTILINE)
        json_object_set_new(opts, "multiline", json_true());
    if (in->doc)
        json_object_set_new(opts, "tooltip", json_string(in->doc));
    json_t *kind;
    if (in->flags & SD_IN_FILE) {
        bool image = in->file_dir && !strcmp(in->file_dir, "input");
        kind = image ? input_images(ctx) : sd_model_files(ctx, in->file_dir ? in->file_dir : "");
        if (image)
            json_object_set_new(opts, "image_upload", json_true());
    } else if (in->type == SD_TYPE_ENUM) {
        kind = json_array();
        for (const char *const *c = in->choices; c && *c; c++)
            json_array_append_new(kind, json_string(*c));
    } else {
        kind = json_string(sd_type_name(in->type));
    }
    if (!sd_type_is_literal(in->type) && json_object_size(opts) <= 1) {
        json_decref(opts);
        return json_pack("[o]", kind);
    }
    return json_pack("[o, o]", kind, opts);
}

static json_t *node_info(const sd_context *ctx, const sd_node_desc *d)
{
    json_t *required = json_object(), *optional = json_object();
    json_t *req_order = json_array(), *opt_order = json_array();
    json_t *prev = NULL;
    for (size_t i = 0; i < d->n_inputs; i++) {
        const sd_input_desc *in = &d->inputs[i];
        bool opt = in->flags & SD_IN_OPTIONAL;
        /* sdflow's control_after_generate input is ComfyUI's front-end widget, asked for by the
         * option on the seed before it: declaring it too gives the front end two widgets, and
         * prompts with an input "control_after_generate#1". */
        if (!strcmp(in->name, "control_after_generate") && json_is_object(json_array_get(prev, 1))) {
            json_object_set_new(json_array_get(prev, 1), "control_after_generate", json_true());
            continue;
        }
        prev = input_spec(ctx, in);
        json_object_set_new(opt ? optional : required, in->name, prev);
        json_array_append_new(opt ? opt_order : req_order, json_string(in->name));
    }
    json_t *out = json_array(), *is_list = json_array(), *names = json_array();
    for (size_t i = 0; i < d->n_outputs; i++) {
        json_array_append_new(out, json_string(sd_type_name(d->outputs[i].type)));
        json_array_append_new(is_list, json_false());
        json_array_append_new(names, json_string(d->outputs[i].name));
    }
    return json_pack("{s:{s:o, s:o}, s:{s:o, s:o}, s:o, s:o, s:o, s:s, s:s, s:s, s:s, s:s, s:b}",
                     "input", "required", required, "optional", optional,
                     "input_order", "required", req_order, "optional", opt_order,
                     "output", out, "output_is_list", is_list, "output_name", names,
                     "name", d->name, "display_name", d->name, "description", d->doc ? d->doc : "",
                     "python_module", "nodes", "category", d->category ? d->category : "",
                     "output_node", (d->flags & SD_NODE_OUTPUT) != 0);
}

void sd_route_object_info(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    json_t *all = json_object();
    const char *only = !strncmp(path, "/object_info/", 13) ? path + 13 : NULL;
    for (size_t i = 0; i < sd_node_type_count(); i++) {
        const sd_node_desc *d = sd_node_type_at(i);
        if (!only || !strcmp(only, d->name))
            json_object_set_new(all, d->name, node_info(srv->info, d));
    }
    sd_http_json(conn, 200, all); /* an unknown class gives {} as in ComfyUI */
}

/* The devices as ComfyUI lists them (OpenCL devices; memory figures from the driver). */
static json_t *devices(sd_server *srv)
{
    json_t *list = json_array();
    sd_context *ctx;
    sd_device_info *info = NULL;
    size_t n = 0;
    if (sd_server_context(srv, &ctx))
        return list;
    if (sd_devices_list(ctx, &info, &n) == SD_OK)
        for (size_t i = 0; i < n; i++)
            json_array_append_new(list, json_pack("{s:s, s:s, s:i, s:I, s:I, s:I, s:I}", "name", info[i].name,
                                                  "type", "opencl", "index", info[i].index, "vram_total",
                                                  (json_int_t)info[i].global_mem, "vram_free",
                                                  (json_int_t)info[i].global_mem, "torch_vram_total", (json_int_t)0,
                                                  "torch_vram_free", (json_int_t)0));
    sd_devices_free(info);
    sd_context_free(ctx);
    return list;
}

void sd_route_system_stats(sd_server *srv, struct mg_connection *conn, const char *method, const char *path)
{
    struct sysinfo si = {0};
    sysinfo(&si);
    struct utsname u = {0};
    uname(&u);
    sd_http_json(conn, 200,
                 json_pack("{s:{s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:b, s:[]}, s:o}", "system", "os", "posix",
                           "ram_total", (json_int_t)si.totalram * si.mem_unit, "ram_free",
                           (json_int_t)si.freeram * si.mem_unit, "comfyui_version", sd_version(),
                           "sdflow_version", sd_version(), "python_version", "", "pytorch_version", "",
                           "embedded_python", false, "argv", "devices", devices(srv)));
}
