/*
 * The lessons' logistic-regression data when no CSV file is given: a table
 * shaped like the seed article's heart-disease data.
 */
#ifndef NABLA_EXAMPLES_HEART_H
#define NABLA_EXAMPLES_HEART_H

#include "nabla_train.h"

#include <math.h>

/* 303 rows of 13 features whose log-odds are a fixed linear function plus
 * noise, like the article's heart-disease table in shape. */
static inline void generate_heart_like(nb_rng *rng, nb_dataset *d) {
    enum { ROWS = 303, FEATURES = 13 };
    d->rows = ROWS;
    d->features = FEATURES;
    d->X = nb_zeros(NULL, NB_F32, NB_SHAPE(ROWS, FEATURES));
    d->y = nb_zeros(NULL, NB_F32, NB_SHAPE(ROWS, 1));
    double w[FEATURES];
    for (int j = 0; j < FEATURES; j++) w[j] = nb_rng_normal(rng);
    for (size_t i = 0; i < ROWS; i++) {
        double z = 0.3;
        for (size_t j = 0; j < FEATURES; j++) {
            double v = 50 + 10 * nb_rng_normal(rng); /* raw, unstandardised scale */
            nb_set(d->X, i * FEATURES + j, v);
            z += w[j] * (v - 50) / 10;
        }
        double p = 1 / (1 + exp(-z - 0.5 * nb_rng_normal(rng)));
        nb_set(d->y, i, nb_rng_uniform(rng) < p);
    }
}

#endif
