/* Shared by the parameter-file fuzz targets: a model of W (2, 3) float32 and
 * b (3,) float64 filled with 7; a file the loader refuses must leave every
 * value at 7 (all or nothing), and nothing may crash or leak.  The same
 * bytes are then loaded as a checkpoint, into the model, a momentum
 * optimizer and a generator, which a refusal must leave as they were. */
#ifndef NABLA_FUZZ_LOADER_H
#define NABLA_FUZZ_LOADER_H

#include "fuzz_common.h"
#include "nabla_train.h"

#include <string.h>

static void fill_7(nb_tensor *W, nb_tensor *b) {
    for (size_t i = 0; i < 6; i++) nb_set(W, i, 7);
    for (size_t i = 0; i < 3; i++) nb_set(b, i, 7);
}

static int fuzz_loader(const uint8_t *data, size_t size, const char *suffix,
                       nb_status (*load)(nb_params *, const char *)) {
    nb_params *ps = nb_params_new();
    if (!ps) return 0;
    nb_tensor *W = nb_params_add(ps, "W", nb_full(NULL, NB_F32, NB_SHAPE(2, 3), 7));
    nb_tensor *b = nb_params_add(ps, "b", nb_full(NULL, NB_F64, NB_SHAPE(3), 7));
    const char *path = input_file(suffix, data, size);
    if (load(ps, path) != NB_OK) {
        for (size_t i = 0; i < 6; i++)
            if (nb_get(W, i) != 7) abort();
        for (size_t i = 0; i < 3; i++)
            if (nb_get(b, i) != 7) abort();
    }
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_MOMENTUM);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_rng rng, before;
    nb_rng_seed(&rng, 1);
    before = rng;
    fill_7(W, b);
    if (opt && nb_checkpoint_load(ps, opt, &rng, path) != NB_OK) {
        for (size_t i = 0; i < 6; i++)
            if (nb_get(W, i) != 7) abort();
        for (size_t i = 0; i < 3; i++)
            if (nb_get(b, i) != 7) abort();
        if (memcmp(&rng, &before, sizeof rng) != 0 || nb_optimizer_lr(opt) != o.lr) abort();
    }
    nb_optimizer_free(opt);
    nb_params_free(ps);
    return 0;
}

#endif
