/* Fuzzes the restricted unpickler: sd_pickle_read on the raw bytes (the pickle interpreter and
 * its allowlist), then sd_safetensors_open on the same bytes as a file, which routes zip- and
 * pickle-looking files to sd_torch_parse (zip directory, zip64, storages) as loaders reach it. */
#include "fuzz_util.h"
#include "ml/formats/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sd_context *ctx = fuzz_context();
    sd_pickle_tensors t;
    fuzz_check_error(ctx, sd_pickle_read(ctx, "fuzz.pkl", data, size, &t));
    sd_pickle_tensors_free(&t);
    sd_safetensors *st = NULL;
    fuzz_check_error(ctx, sd_safetensors_open(ctx, fuzz_write_file(data, size, ".ckpt"), &st));
    sd_safetensors_close(st);
    return 0;
}
