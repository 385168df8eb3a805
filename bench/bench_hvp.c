/*
 * The cost of second derivatives: a Hessian-vector product (nb_hvp: the
 * gradient recorded with create_graph, then differentiated along v) against
 * one ordinary gradient (nb_backward) of the same MLP loss, in the same run.
 * Theory says a small constant: about 2 to 4 gradients.  Also the
 * allocations of a warm HVP step (none: everything lives in the tape).
 *
 *   bench_hvp [--reps R] [--csv]
 * prints: network,batch,gradient ms,hvp ms,ratio,allocs per hvp
 */
#include "bench_common.h"
#include "nabla.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *name;
    size_t sizes[4];
    int layers;
} net;

static nb_tensor *loss_of(nb_tape *tp, nb_tensor *const *W, int layers, nb_tensor *X, nb_tensor *y) {
    nb_tensor *h = X;
    for (int l = 0; l < layers; l++) {
        h = nb_matmul(tp, h, W[l]);
        if (l + 1 < layers) h = nb_tanh(tp, h); /* smooth: a non-trivial Hessian */
    }
    return nb_softmax_cross_entropy(tp, h, y, 1);
}

int main(int argc, char **argv) {
    int reps = 20;
    bool csv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else {
            fprintf(stderr, "usage: bench_hvp [--reps R] [--csv]\n");
            return 2;
        }
    }
    if (reps < 3 || reps > 1000) reps = 20;
    const net nets[] = {{"784-128-10", {784, 128, 10}, 2}, {"784-256-256-10", {784, 256, 256, 10}, 3}};
    const size_t batch = 64;
    if (!csv) {
        printf("Hessian-vector product against one gradient, float32, batch %zu, median of %d\n", batch, reps);
        printf("%-15s | %11s %9s %6s | %s\n", "network", "gradient ms", "HVP ms", "ratio", "allocs per HVP");
    }
    for (size_t k = 0; k < sizeof nets / sizeof *nets; k++) {
        const net *nt = &nets[k];
        nb_rng rng;
        nb_rng_seed(&rng, 1);
        nb_tensor *W[3], *V[3];
        for (int l = 0; l < nt->layers; l++) {
            W[l] = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(nt->sizes[l], nt->sizes[l + 1]), 0, 0.05);
            V[l] = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(nt->sizes[l], nt->sizes[l + 1]), 0, 1);
            nb_requires_grad(W[l], true);
        }
        nb_tensor *X = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(batch, 784), 0, 1);
        nb_tensor *y = nb_zeros(NULL, NB_F32, NB_SHAPE(batch));
        for (size_t i = 0; i < batch; i++) nb_set(y, i, (double)(i % 10));
        nb_tape *tp = nb_tape_new();
        double grad_t[1000], hvp_t[1000];
        uint64_t allocs = 0;
        for (int r = -3; r < reps; r++) { /* three warm-up rounds */
            nb_tape_reset(tp);
            for (int l = 0; l < nt->layers; l++) nb_zero_grad(W[l]);
            double t0 = now();
            if (nb_backward(loss_of(tp, W, nt->layers, X, y)) != NB_OK) goto fail;
            double t1 = now();
            nb_tape_reset(tp);
            uint64_t before = nb_alloc_count();
            double t2 = now();
            nb_tensor *hv[3];
            if (nb_hvp(loss_of(tp, W, nt->layers, X, y), W, nt->layers, V, hv) != NB_OK) goto fail;
            double t3 = now();
            if (r >= 0) {
                grad_t[r] = (t1 - t0) * 1e3;
                hvp_t[r] = (t3 - t2) * 1e3;
                allocs += nb_alloc_count() - before;
            }
        }
        qsort(grad_t, (size_t)reps, sizeof *grad_t, cmp_double);
        qsort(hvp_t, (size_t)reps, sizeof *hvp_t, cmp_double);
        double g = grad_t[reps / 2], h = hvp_t[reps / 2];
        if (csv)
            printf("%s,%zu,%.4f,%.4f,%.3f,%llu\n", nt->name, batch, g, h, h / g, (unsigned long long)allocs);
        else
            printf("%-15s | %11.3f %9.3f %5.2fx | %llu\n", nt->name, g, h, h / g, (unsigned long long)allocs);
        nb_tape_free(tp);
        for (int l = 0; l < nt->layers; l++) {
            nb_tensor_free(W[l]);
            nb_tensor_free(V[l]);
        }
        nb_tensor_free(X);
        nb_tensor_free(y);
    }
    return 0;
fail:
    fprintf(stderr, "bench_hvp: %s\n", nb_last_error());
    return 1;
}
