/*
 * The training step of an MLP (softmax cross-entropy, plain SGD) in nabla,
 * against its floor: the same step's CBLAS calls made back to back with
 * nothing else (forward X·W per layer, backward dW = Aᵀ·G and dX = G·Wᵀ).
 *
 *   bench_mlp [--threads N] [--reps R] [--quick] [--csv] [--only NET] [--side n|b]
 *             [--batch B] [--act relu|sigmoid] [--optimizer sgd|momentum|adam|adamw|rmsprop]
 *
 * Prints, per network, activation and batch size, the ms per step and
 * examples per second of both and their ratio, the GFLOP/s of the matrix
 * products, and the number of allocations nabla made after warm-up.  Timings
 * are the median of R alternating runs of each.
 *
 * With N threads the bare loop uses OpenBLAS's N threads and nabla its own
 * (nb_set_threads, OpenBLAS on one thread).  OpenBLAS's idle threads keep
 * spinning for a while after each call, so with N > 1 the two sides are best
 * timed in separate processes (--side n, --side b), as bench/run.py does.
 *
 * With --optimizer, nabla's step uses that optimizer (backward, then the
 * update; plain SGD folds the update into backward), and the CSV gains the
 * time of the update alone (nb_optimizer_step on the step's gradients).
 */
#include "bench_common.h"
#include "nabla.h"
#include "nabla_train.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_LAYERS = 4 };

typedef struct {
    int layers;
    size_t sizes[MAX_LAYERS + 1];
    bool relu;
    size_t batch;
} config;

/* ------------------------------------------------------------ nabla step */

typedef struct {
    nb_tape *tp;
    nb_params *ps;
    nb_optimizer *opt;
    nb_tensor *W[MAX_LAYERS], *b[MAX_LAYERS], *X, *y;
} net;

static nb_optimizer_kind optimizer_kind = NB_OPT_SGD;

static void net_init(net *n, const config *c, nb_rng *rng, float lr) {
    n->tp = nb_tape_new();
    n->ps = nb_params_new();
    for (int l = 0; l < c->layers; l++) {
        char name[16];
        snprintf(name, sizeof name, "W%d", l + 1);
        n->W[l] = nb_params_add(n->ps, name, nb_rand_normal(NULL, rng, NB_F32, NB_SHAPE(c->sizes[l], c->sizes[l + 1]),
                                                            0, sqrt(2.0 / (double)c->sizes[l])));
        snprintf(name, sizeof name, "b%d", l + 1);
        n->b[l] = nb_params_add(n->ps, name, nb_zeros(NULL, NB_F32, NB_SHAPE(c->sizes[l + 1])));
    }
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, optimizer_kind);
    if (optimizer_kind == NB_OPT_SGD) o.lr = lr;
    n->opt = nb_optimizer_new(n->ps, &o);
    n->X = nb_rand_uniform(NULL, rng, NB_F32, NB_SHAPE(c->batch, c->sizes[0]), 0, 1);
    n->y = nb_zeros(NULL, NB_F32, NB_SHAPE(c->batch));
    for (size_t i = 0; i < c->batch; i++) nb_set(n->y, i, (double)(i % c->sizes[c->layers]));
}

static void net_free(net *n) {
    nb_optimizer_free(n->opt);
    nb_params_free(n->ps);
    nb_tensor_free(n->X);
    nb_tensor_free(n->y);
    nb_tape_free(n->tp);
}

/* Forward, loss, and backward with the SGD update folded in (each weight's
 * gradient product writes w - lr dL/dw straight into w: see
 * nb_optimizer_backward_step), as a user of the library would write it. */
static int nabla_step(net *n, const config *c) {
    nb_tape *tp = n->tp;
    nb_tape_reset(tp);
    nb_params_zero_grad(n->ps);
    nb_tensor *A = n->X;
    for (int l = 0; l < c->layers; l++) {
        nb_tensor *Z = nb_linear(tp, A, n->W[l], n->b[l]); /* X·W + b, as nn.Linear */
        A = l + 1 < c->layers ? (c->relu ? nb_relu(tp, Z) : nb_sigmoid(tp, Z)) : Z;
    }
    nb_tensor *loss = nb_softmax_cross_entropy(tp, A, n->y, 1);
    if (nb_optimizer_backward_step(n->opt, loss) != NB_OK) {
        fprintf(stderr, "bench_mlp: %s\n", nb_last_error());
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ bare BLAS */

typedef struct {
    float *W[MAX_LAYERS], *dW[MAX_LAYERS], *A[MAX_LAYERS + 1], *G[MAX_LAYERS + 1];
} bare;

static void bare_init(bare *b, const config *c) {
    for (int l = 0; l <= c->layers; l++) {
        b->A[l] = calloc(c->batch * c->sizes[l], sizeof(float));
        b->G[l] = calloc(c->batch * c->sizes[l], sizeof(float));
        for (size_t i = 0; i < c->batch * c->sizes[l]; i++) b->A[l][i] = 0.01f * (float)(i % 7);
        if (l < c->layers) {
            b->W[l] = calloc(c->sizes[l] * c->sizes[l + 1], sizeof(float));
            b->dW[l] = calloc(c->sizes[l] * c->sizes[l + 1], sizeof(float));
            for (size_t i = 0; i < c->sizes[l] * c->sizes[l + 1]; i++) b->W[l][i] = 0.001f * (float)(i % 11);
        }
    }
}

static void bare_free(bare *b, const config *c) {
    for (int l = 0; l <= c->layers; l++) {
        free(b->A[l]);
        free(b->G[l]);
        if (l < c->layers) {
            free(b->W[l]);
            free(b->dW[l]);
        }
    }
}

/* The matrix products of one step and nothing else. */
static void bare_step(bare *b, const config *c) {
    int m = (int)c->batch;
    for (int l = 0; l < c->layers; l++) { /* A[l+1] = A[l] · W[l] */
        int k = (int)c->sizes[l], n = (int)c->sizes[l + 1];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, b->A[l], k, b->W[l], n, 0,
                    b->A[l + 1], n);
    }
    for (int l = c->layers - 1; l >= 0; l--) {
        int k = (int)c->sizes[l], n = (int)c->sizes[l + 1];
        /* dW = A[l]ᵀ · G[l+1] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, m, 1, b->A[l], k, b->G[l + 1], n, 0,
                    b->dW[l], n);
        if (l > 0) /* G[l] = G[l+1] · W[l]ᵀ (not needed for the input) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1, b->G[l + 1], n, b->W[l], n, 0,
                        b->G[l], k);
    }
}

static double step_flops(const config *c) {
    double f = 0;
    for (int l = 0; l < c->layers; l++) {
        double mkn = 2.0 * (double)c->batch * (double)c->sizes[l] * (double)c->sizes[l + 1];
        f += mkn * (l > 0 ? 3 : 2);
    }
    return f;
}

/* ------------------------------------------------------------ driver */

typedef struct { double nabla_ms, bare_ms, update_ms; uint64_t allocs; } result;

/* The optimizer's update alone, on the gradients of one plain backward:
 * the median over reps runs of about `seconds` each. */
static double update_ms(net *n, const config *c, int reps, double seconds) {
    nb_tape_reset(n->tp);
    nb_params_zero_grad(n->ps);
    nb_tensor *A = n->X;
    for (int l = 0; l < c->layers; l++) {
        nb_tensor *Z = nb_linear(n->tp, A, n->W[l], n->b[l]);
        A = l + 1 < c->layers ? (c->relu ? nb_relu(n->tp, Z) : nb_sigmoid(n->tp, Z)) : Z;
    }
    if (nb_backward(nb_softmax_cross_entropy(n->tp, A, n->y, 1)) != NB_OK) return NAN;
    double t0 = now(), times[64];
    long probe = 0;
    while (now() - t0 < 0.01) {
        nb_optimizer_step(n->opt);
        probe++;
    }
    long steps = (long)(seconds / ((now() - t0) / (double)probe)) + 1;
    for (int r = 0; r < reps; r++) {
        t0 = now();
        for (long s = 0; s < steps; s++) nb_optimizer_step(n->opt);
        times[r] = (now() - t0) / (double)steps;
    }
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    return 1e3 * times[reps / 2];
}

/* For profiling one side alone: 'n' (nabla), 'b' (bare BLAS), 0 (both). */
static char only_side;

/* Each side runs with its own threading: the bare loop with OpenBLAS's
 * threads, nabla with its own (which sets OpenBLAS to one thread). */
static int bench_threads = 1;
static void bare_threads(void) { openblas_set_num_threads(bench_threads); }
static void nabla_threads(void) { openblas_set_num_threads(1); }

static result measure(const config *c, int reps, double seconds_per_rep) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    net n;
    bare b;
    net_init(&n, c, &rng, 1e-3f);
    bare_init(&b, c);
    for (int w = 0; w < 5; w++) { /* warm up: sizes the tape, wakes the caches */
        if (only_side != 'b') {
            nabla_threads();
            nabla_step(&n, c);
        }
        if (only_side != 'n') {
            bare_threads();
            bare_step(&b, c);
        }
    }
    /* Steps per timed run: about seconds_per_rep of the bare loop (of nabla's
     * when only nabla runs, so that OpenBLAS's own threads never wake). */
    double t0 = now();
    int probe = 0;
    while (now() - t0 < 0.02) {
        if (only_side == 'n') {
            if (nabla_step(&n, c)) exit(1);
        } else {
            bare_step(&b, c);
        }
        probe++;
    }
    long steps = (long)(seconds_per_rep / ((now() - t0) / probe)) + 1;
    double nt[64], bt[64];
    uint64_t before = nb_alloc_count();
    for (int r = 0; r < reps; r++) { /* alternate, so drifts hit both alike */
        bare_threads();
        t0 = now();
        for (long s = 0; only_side != 'n' && s < steps; s++) bare_step(&b, c);
        bt[r] = (now() - t0) / (double)steps;
        nabla_threads();
        t0 = now();
        for (long s = 0; only_side != 'b' && s < steps; s++)
            if (nabla_step(&n, c)) exit(1);
        nt[r] = (now() - t0) / (double)steps;
    }
    result res = {0, 0, 0, nb_alloc_count() - before};
    qsort(nt, (size_t)reps, sizeof *nt, cmp_double);
    qsort(bt, (size_t)reps, sizeof *bt, cmp_double);
    res.nabla_ms = 1e3 * nt[reps / 2];
    res.bare_ms = 1e3 * bt[reps / 2];
    if (only_side != 'b') {
        nabla_threads();
        res.update_ms = update_ms(&n, c, reps, seconds_per_rep / 5);
    }
    net_free(&n);
    bare_free(&b, c);
    return res;
}

/* The speed of memcpy, in GB/s counting bytes read and written, over a
 * working set the size of Adam's for n float32 parameters (weights,
 * gradients and two moments: 16 bytes a parameter, copied 8 to 8): the
 * floor an optimizer's update can reach. */
static int copy_speed(size_t n) {
    size_t bytes = 8 * n;
    char *a = malloc(bytes), *b = malloc(bytes);
    if (!a || !b) return 1;
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        double t0 = now();
        for (int k = 0; k < 200; k++) {
            memcpy(k & 1 ? a : b, k & 1 ? b : a, bytes);
        }
        double t = (now() - t0) / 200;
        best = t < best ? t : best;
    }
    printf("%.2f\n", 2.0 * (double)bytes / best / 1e9);
    free(a);
    free(b);
    return 0;
}

int main(int argc, char **argv) {
    int threads = 1, reps = 7;
    bool quick = false, csv = false;
    const char *only = NULL, *act = NULL;
    size_t only_batch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else if (!strcmp(argv[i], "--side") && i + 1 < argc) only_side = argv[++i][0];
        else if (!strcmp(argv[i], "--copy-speed") && i + 1 < argc) return copy_speed((size_t)atol(argv[i + 1]));
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) only_batch = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--act") && i + 1 < argc) act = argv[++i];
        else if (!strcmp(argv[i], "--optimizer") && i + 1 < argc && nb_optimizer_parse(argv[i + 1], &optimizer_kind))
            i++;
        else {
            fprintf(stderr, "usage: bench_mlp [--threads N] [--reps R] [--quick] [--csv] [--only NET] [--side n|b] "
                            "[--batch B] [--act relu|sigmoid] [--optimizer sgd|momentum|adam|adamw|rmsprop]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 63) reps = 7;
    if (nb_set_threads(threads) != NB_OK) {
        fprintf(stderr, "bench_mlp: %s\n", nb_last_error());
        return 1;
    }
    bench_threads = threads;
    const config configs[] = {
        {2, {784, 128, 10}, false, 32},   {2, {784, 128, 10}, false, 256},
        {2, {784, 128, 10}, true, 32},    {2, {784, 128, 10}, true, 256},
        {3, {784, 256, 256, 10}, false, 32}, {3, {784, 256, 256, 10}, false, 256},
        {3, {784, 256, 256, 10}, true, 32},  {3, {784, 256, 256, 10}, true, 256},
        {2, {784, 128, 10}, true, 64}, /* the optimizer table's (--batch 64) */
    };
    if (!csv) printf("MLP training step (softmax cross-entropy, SGD), float32, %d thread%s, median of %d runs\n",
           threads, threads > 1 ? "s" : "", reps);
    if (!csv) printf("%-16s %-7s %5s | %9s %10s | %9s %10s %7s | %7s %s\n", "network", "act", "batch", "nabla ms",
           "examples/s", "BLAS ms", "examples/s", "GFLOP/s", "ratio", "allocs");
    for (size_t k = 0; k < sizeof configs / sizeof *configs; k++) {
        const config *c = &configs[k];
        char name[32];
        snprintf(name, sizeof name, c->layers == 2 ? "%zu-%zu-%zu" : "%zu-%zu-%zu-%zu", c->sizes[0],
                 c->sizes[1], c->sizes[2], c->sizes[3]);
        if (only && strcmp(only, name)) continue;
        if (act && strcmp(act, c->relu ? "relu" : "sigmoid")) continue;
        if (only_batch ? c->batch != only_batch : c->batch == 64) continue;
        if (threads > 1 && c->batch < 256 && !only_batch) continue;
        result r = measure(c, reps, quick ? 0.05 : 0.25);
        if (csv) {
            printf("%s,%s,%zu,%.4f,%.4f,%.2f,%llu,%.4f\n", name, c->relu ? "relu" : "sigmoid", c->batch, r.nabla_ms,
                   r.bare_ms, step_flops(c) / (r.bare_ms * 1e6), (unsigned long long)r.allocs, r.update_ms);
            fflush(stdout);
            continue;
        }
        printf("%-16s %-7s %5zu | %9.3f %10.0f | %9.3f %10.0f %7.1f | %6.2fx %llu\n", name,
               c->relu ? "relu" : "sigmoid", c->batch, r.nabla_ms, 1e3 * (double)c->batch / r.nabla_ms,
               r.bare_ms, 1e3 * (double)c->batch / r.bare_ms, step_flops(c) / (r.bare_ms * 1e6),
               r.nabla_ms / r.bare_ms, (unsigned long long)r.allocs);
    }
    return 0;
}
