/* Primitive nodes: a literal INT, FLOAT, STRING or BOOLEAN as an output (ComfyUI's
 * PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean). */
#include "nodes/node_util.h"
#include <float.h>
#include <stdint.h>

static sd_status emit(sd_node_run *r, sd_value *v)
{
    if (!v)
        return sd_run_error(r, SD_ERR_NOMEM, "out of memory");
    sd_run_set_output(r, 0, v);
    return SD_OK;
}

static sd_status run_int(sd_node_run *r) { return emit(r, sd_value_int(sd_run_int(r, "value"))); }
static sd_status run_float(sd_node_run *r) { return emit(r, sd_value_float(sd_run_float(r, "value"))); }
static sd_status run_bool(sd_node_run *r) { return emit(r, sd_value_bool(sd_run_bool(r, "value"))); }
static sd_status run_string(sd_node_run *r)
{
    return emit(r, sd_value_string(SD_TYPE_STRING, sd_run_string(r, "value")));
}

static const sd_input_desc int_in[] = {
    SD_IN_INT("value", "0", (double)INT64_MIN, (double)INT64_MAX, "the integer"),
    SD_IN_SEED_CONTROL,
};
static const sd_output_desc int_out[] = {SD_OUT("INT", SD_TYPE_INT, "the integer")};
const sd_node_desc sd_node_PrimitiveInt = {
    .name = "PrimitiveInt", .version = 1, .category = "utils/primitive",
    .doc = "A constant integer.", .inputs = int_in, .n_inputs = SD_COUNT(int_in),
    .outputs = int_out, .n_outputs = SD_COUNT(int_out), .run = run_int,
};

static const sd_input_desc float_in[] = {
    SD_IN_FLOAT("value", "0", -DBL_MAX, DBL_MAX, "the number"),
};
static const sd_output_desc float_out[] = {SD_OUT("FLOAT", SD_TYPE_FLOAT, "the number")};
const sd_node_desc sd_node_PrimitiveFloat = {
    .name = "PrimitiveFloat", .version = 1, .category = "utils/primitive",
    .doc = "A constant floating-point number.", .inputs = float_in, .n_inputs = SD_COUNT(float_in),
    .outputs = float_out, .n_outputs = SD_COUNT(float_out), .run = run_float,
};

static const sd_input_desc bool_in[] = {SD_IN_BOOL("value", "false", "the flag")};
static const sd_output_desc bool_out[] = {SD_OUT("BOOLEAN", SD_TYPE_BOOLEAN, "the flag")};
const sd_node_desc sd_node_PrimitiveBoolean = {
    .name = "PrimitiveBoolean", .version = 1, .category = "utils/primitive",
    .doc = "A constant true/false flag.", .inputs = bool_in, .n_inputs = SD_COUNT(bool_in),
    .outputs = bool_out, .n_outputs = SD_COUNT(bool_out), .run = run_bool,
};

static const sd_input_desc string_in[] = {SD_IN_STRING("value", "", "the text")};
static const sd_input_desc text_in[] = {SD_IN_TEXT("value", "", "the text (multi-line)")};
static const sd_output_desc string_out[] = {SD_OUT("STRING", SD_TYPE_STRING, "the text")};
const sd_node_desc sd_node_PrimitiveString = {
    .name = "PrimitiveString", .version = 1, .category = "utils/primitive",
    .doc = "A constant single-line string.", .inputs = string_in, .n_inputs = SD_COUNT(string_in),
    .outputs = string_out, .n_outputs = SD_COUNT(string_out), .run = run_string,
};
const sd_node_desc sd_node_PrimitiveStringMultiline = {
    .name = "PrimitiveStringMultiline", .version = 1, .category = "utils/primitive",
    .doc = "A constant multi-line string.", .inputs = text_in, .n_inputs = SD_COUNT(text_in),
    .outputs = string_out, .n_outputs = SD_COUNT(string_out), .run = run_string,
};
