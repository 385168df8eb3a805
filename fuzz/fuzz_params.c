/* Fuzzes the parameter-file loader (nabla's own format, and safetensors
 * through the same entry point): a damaged file must be refused and must
 * leave the model's values as they were. */
#include "fuzz_loader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_loader(data, size, ".nbp", nb_params_load);
}
