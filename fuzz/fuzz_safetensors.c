/* Fuzzes the safetensors reader: a damaged file must be refused with an
 * error and must leave the model's values as they were. */
#include "fuzz_loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_loader(data, size, ".safetensors", nb_params_load_safetensors);
}
