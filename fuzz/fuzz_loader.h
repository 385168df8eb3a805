/* Shared by the parameter-file fuzz targets: a model of W (2, 3) float32 and
 * b (3,) float64 filled with 7; a file the loader refuses must leave every
 * value at 7 (all or nothing), and nothing may crash or leak. */
#ifndef NABLA_FUZZ_LOADER_H
#define NABLA_FUZZ_LOADER_H

#include "fuzz_common.h"
#include "nabla_train.h"

static int fuzz_loader(const uint8_t *data, size_t size, const char *suffix,
                       nb_status (*load)(nb_params *, const char *)) {
    nb_params *ps = nb_params_new();
    if (!ps) return 0;
    nb_tensor *W = nb_params_add(ps, "W", nb_full(NULL, NB_F32, NB_SHAPE(2, 3), 7));
    nb_tensor *b = nb_params_add(ps, "b", nb_full(NULL, NB_F64, NB_SHAPE(3), 7));
    if (load(ps, input_file(suffix, data, size)) != NB_OK) {
        for (size_t i = 0; i < 6; i++)
            if (nb_get(W, i) != 7) abort();
        for (size_t i = 0; i < 3; i++)
            if (nb_get(b, i) != 7) abort();
    }
    nb_params_free(ps);
    return 0;
}

#endif
