/*
 * Fashion-MNIST for the examples that learn it (mlp, cnn): the four IDX
 * files of the Debian package dataset-fashion-mnist, read and checked to
 * pair up, with a clear message when they are missing or do not.
 */
#ifndef NABLA_EXAMPLES_FASHION_H
#define NABLA_EXAMPLES_FASHION_H

#include "cli.h"
#include "nabla_train.h"

#include <stdio.h>
#include <string.h>

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static const char *const fashion_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/* Training and test images (N, 28, 28) scaled to [0, 1], and their labels (N,). */
typedef struct {
    nb_tensor *X, *y, *Xt, *yt;
} fashion;

static inline nb_tensor *fashion_file(const char *program, const char *dir, const char *file, double scale) {
    char path[4096];
    if (!cli_join(path, sizeof path, program, dir, file)) return nb_idx_read(NULL, NB_F32, scale); /* an errored nil */
    nb_tensor *t = nb_idx_read(path, NB_F32, scale);
    if (nb_tensor_status(t) != NB_OK)
        fprintf(stderr, "%s: %s\n%s", program, nb_last_error(),
                strstr(nb_last_error(), "cannot open")
                    ? "    install the data with: apt-get install dataset-fashion-mnist (or give --data DIR)\n"
                    : "");
    return t;
}

static inline void fashion_free(fashion *f) {
    nb_tensor_free(f->X);
    nb_tensor_free(f->y);
    nb_tensor_free(f->Xt);
    nb_tensor_free(f->yt);
    *f = (fashion){NULL, NULL, NULL, NULL};
}

/* 0 when the four files are read and pair up; else 1, the reason printed. */
static inline int fashion_load(const char *program, const char *dir, fashion *f) {
    f->X = fashion_file(program, dir, "train-images-idx3-ubyte.gz", 1.0 / 255);
    f->y = fashion_file(program, dir, "train-labels-idx1-ubyte.gz", 1);
    f->Xt = fashion_file(program, dir, "t10k-images-idx3-ubyte.gz", 1.0 / 255);
    f->yt = fashion_file(program, dir, "t10k-labels-idx1-ubyte.gz", 1);
    if (nb_tensor_status(f->X) || nb_tensor_status(f->y) || nb_tensor_status(f->Xt) || nb_tensor_status(f->yt))
        return 1;
    nb_tensor *images[2] = {f->X, f->Xt}, *labels[2] = {f->y, f->yt};
    for (int k = 0; k < 2; k++) {
        char si[64], sl[64];
        if (nb_tensor_size(images[k]) != nb_tensor_dim(images[k], 0) * 784 ||
            nb_tensor_dim(images[k], 0) != nb_tensor_size(labels[k])) {
            fprintf(stderr, "%s: the %s images %s and labels %s in %s do not pair up (expected (N, 28, 28) and (N,))\n",
                    program, k ? "test" : "training", nb_shape_string(images[k], si, sizeof si),
                    nb_shape_string(labels[k], sl, sizeof sl), dir);
            return 1;
        }
    }
    return 0;
}

#endif
