/* Fuzzes the safetensors reader: a damaged file must be refused with an
 * error and must leave the model's values as they were. */
#include "fuzz_common.h"
#include "nabla_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    nb_params *ps = nb_params_new();
    if (!ps) return 0;
    nb_tensor *W = nb_params_add(ps, "W", nb_full(NULL, NB_F32, NB_SHAPE(2, 3), 7));
    nb_tensor *b = nb_params_add(ps, "b", nb_full(NULL, NB_F64, NB_SHAPE(3), 7));
    if (nb_params_load_safetensors(ps, input_file(".safetensors", data, size)) != NB_OK) {
        for (size_t i = 0; i < 6; i++)
            if (nb_get(W, i) != 7) abort();
        for (size_t i = 0; i < 3; i++)
            if (nb_get(b, i) != 7) abort();
    }
    nb_params_free(ps);
    return 0;
}
