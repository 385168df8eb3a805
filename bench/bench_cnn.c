/*
 * The training step of KANN's Fashion-MNIST CNN (examples/cnn.c: conv 3x3
 * x32, relu, conv 3x3 x32, relu, max pool 2x2, dropout 0.2, dense 128, relu,
 * dropout 0.2, dense 10; softmax cross-entropy, plain SGD) in nabla, against
 * its floor: the same step's unfolding (im2col, col2im) and CBLAS products
 * alone, written here without nabla.
 *
 *   bench_cnn [--threads N] [--batch B] [--reps R] [--quick] [--csv] [--side n|b] [--general]
 *   bench_cnn --winograd [--reps R] [--quick]
 *
 * With N threads, nabla uses its own; the floor splits the batch into N
 * parts, one thread each, making single-threaded CBLAS calls (as nabla
 * does).  CSV: batch,threads,nabla_ms,floor_ms,allocs,nabla_cpu_ms (the
 * last: the calling thread's CPU time per step, the whole step's on 1
 * thread, immune to the machine's other load).  --general: nabla
 * without Winograd (src/ops/winograd.c), all on unfolding and CBLAS.
 *
 * --winograd: the 3x3 convolutions of the CNN lesson and of a ResNet-style
 * block, alone, by the general path (unfolding and CBLAS) and by Winograd
 * F(2x2, 3x3) and F(4x4, 3x3) (src/ops/winograd.c, forced with its test
 * switch), and by the dispatch rule, alternated, on 1 thread, in the
 * thread's CPU time: the forward, the forward and dL/dx, and the forward
 * and all gradients; the median of R rounds.  CSV:
 * shape,path,forward_ms,input_grad_ms,backward_ms,allocs (input_grad_ms
 * and backward_ms: the time beyond the forward's; allocs: per timing after
 * the first, which makes its tape).
 */
#include "bench_common.h"
#include "nabla.h"
#include "nabla_train.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { F = 32, HIDDEN = 128, FLAT = F * 12 * 12 };

/* ------------------------------------------------------------ nabla step */

typedef struct {
    nb_tape *tp;
    nb_params *ps;
    nb_optimizer *sgd;
    nb_tensor *c1w, *c1b, *c2w, *c2b, *f1w, *f1b, *f2w, *f2b, *x, *y;
    nb_rng rng;
} net;

static void net_init(net *n, size_t batch) {
    nb_rng_seed(&n->rng, 1);
    n->tp = nb_tape_new();
    n->ps = nb_params_new();
    nb_params *ps = n->ps;
    nb_rng *r = &n->rng;
    n->c1w = nb_params_create(ps, "conv1.weight", NB_F32, NB_SHAPE(F, 1, 3, 3), NB_INIT_HE_UNIFORM, 9, F, r);
    n->c1b = nb_params_create(ps, "conv1.bias", NB_F32, NB_SHAPE(F), NB_INIT_ZEROS, 9, F, r);
    n->c2w = nb_params_create(ps, "conv2.weight", NB_F32, NB_SHAPE(F, F, 3, 3), NB_INIT_HE_UNIFORM, 9 * F, F, r);
    n->c2b = nb_params_create(ps, "conv2.bias", NB_F32, NB_SHAPE(F), NB_INIT_ZEROS, 9 * F, F, r);
    n->f1w = nb_params_create(ps, "fc1.weight", NB_F32, NB_SHAPE(HIDDEN, FLAT), NB_INIT_HE_UNIFORM, FLAT, HIDDEN, r);
    n->f1b = nb_params_create(ps, "fc1.bias", NB_F32, NB_SHAPE(HIDDEN), NB_INIT_ZEROS, FLAT, HIDDEN, r);
    n->f2w = nb_params_create(ps, "fc2.weight", NB_F32, NB_SHAPE(10, HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 10, r);
    n->f2b = nb_params_create(ps, "fc2.bias", NB_F32, NB_SHAPE(10), NB_INIT_ZEROS, HIDDEN, 10, r);
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    n->sgd = nb_optimizer_new(ps, &o);
    n->x = nb_rand_uniform(NULL, r, NB_F32, NB_SHAPE(batch, 1, 28, 28), 0, 1);
    n->y = nb_zeros(NULL, NB_F32, NB_SHAPE(batch));
    for (size_t i = 0; i < batch; i++) nb_set(n->y, i, (double)(i % 10));
}

static void net_free(net *n) {
    nb_optimizer_free(n->sgd);
    nb_params_free(n->ps);
    nb_tensor_free(n->x);
    nb_tensor_free(n->y);
    nb_tape_free(n->tp);
}

static int nabla_step(net *n) {
    nb_tape *tp = n->tp;
    nb_tape_reset(tp);
    nb_params_zero_grad(n->ps);
    const nb_conv_opts relu = {.relu = true}; /* as examples/cnn.c: the relus fused */
    nb_tensor *h = nb_conv2d(tp, n->x, n->c1w, n->c1b, &relu);
    h = nb_conv2d(tp, h, n->c2w, n->c2b, &relu);
    h = nb_dropout(tp, nb_max_pool2d(tp, h, &(nb_pool_opts){.kernel = {2, 2}}), 0.2, &n->rng);
    h = nb_reshape(tp, h, NB_DIMS((long)nb_tensor_dim(n->x, 0), -1));
    h = nb_dropout(tp, nb_relu(tp, nb_linear_t(tp, h, n->f1w, n->f1b, false, true)), 0.2, &n->rng);
    nb_tensor *loss = nb_softmax_cross_entropy(tp, nb_linear_t(tp, h, n->f2w, n->f2b, false, true), n->y, 1);
    if (nb_optimizer_backward_step(n->sgd, loss) != NB_OK) {
        fprintf(stderr, "bench_cnn: %s\n", nb_last_error());
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ the floor */

/* A 3x3 convolution of C channels, stride 1, no padding, on H x W planes:
 * col (C 9, OH OW) from x, and back. */
static void unfold(const float *x, size_t C, size_t H, size_t W, float *col) {
    size_t OH = H - 2, OW = W - 2;
    for (size_t c = 0; c < C; c++)
        for (size_t kh = 0; kh < 3; kh++)
            for (size_t kw = 0; kw < 3; kw++) {
                float *row = col + ((c * 3 + kh) * 3 + kw) * OH * OW;
                for (size_t oh = 0; oh < OH; oh++) {
                    float *restrict d = row + oh * OW;
                    const float *restrict s = x + (c * H + oh + kh) * W + kw;
                    for (size_t ow = 0; ow < OW; ow++) d[ow] = s[ow];
                }
            }
}

static void fold(const float *col, size_t C, size_t H, size_t W, float *x) {
    size_t OH = H - 2, OW = W - 2;
    memset(x, 0, C * H * W * sizeof(float));
    for (size_t c = 0; c < C; c++)
        for (size_t kh = 0; kh < 3; kh++)
            for (size_t kw = 0; kw < 3; kw++) {
                const float *row = col + ((c * 3 + kh) * 3 + kw) * OH * OW;
                for (size_t oh = 0; oh < OH; oh++) {
                    float *d = x + (c * H + oh + kh) * W + kw;
                    const float *s = row + oh * OW;
                    for (size_t ow = 0; ow < OW; ow++) d[ow] += s[ow];
                }
            }
}

typedef struct {
    size_t batch;
    float *x, *a1, *a2, *g2, *g1, *w1, *w2, *gw1, *gw2, *cols, *flat, *f1, *gf1, *h, *gh, *out, *gout;
    float *gw1_part, *gw2_part; /* per thread */
} bare;

static void bare_init(bare *b, size_t batch, int threads) {
    b->batch = batch;
    size_t t = (size_t)threads;
    b->x = calloc(batch * 784, 4);
    b->a1 = calloc(batch * F * 26 * 26, 4);
    b->g1 = calloc(batch * F * 26 * 26, 4);
    b->a2 = calloc(batch * F * 24 * 24, 4);
    b->g2 = calloc(batch * F * 24 * 24, 4);
    b->w1 = calloc(F * 9, 4);
    b->w2 = calloc(F * F * 9, 4);
    b->gw1_part = calloc(t * F * 9, 4);
    b->gw2_part = calloc(t * F * F * 9, 4);
    b->cols = calloc(t * F * 9 * 26 * 26, 4);
    b->flat = calloc(batch * FLAT, 4);
    b->f1 = calloc(HIDDEN * FLAT, 4);
    b->gf1 = calloc(HIDDEN * FLAT, 4);
    b->h = calloc(batch * HIDDEN, 4);
    b->gh = calloc(batch * HIDDEN, 4);
    b->out = calloc(batch * 10, 4);
    b->gout = calloc(batch * 10, 4);
    for (size_t i = 0; i < batch * 784; i++) b->x[i] = 0.001f * (float)(i % 997);
    for (size_t i = 0; i < F * F * 9; i++) b->w2[i] = 0.01f * (float)(i % 13) - 0.06f;
    for (size_t i = 0; i < HIDDEN * FLAT; i++) b->f1[i] = 0.001f * (float)(i % 11);
}

static void bare_free(bare *b) {
    float *all[] = {b->x, b->a1, b->g1, b->a2, b->g2, b->w1, b->w2, b->gw1_part, b->gw2_part, b->cols,
                    b->flat, b->f1, b->gf1, b->h, b->gh, b->out, b->gout};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

/* The convolutions' share of the step for examples begin..end (thread t):
 * forward (unfold, product), then backward (unfold, weight product, input
 * product, fold for the second layer; unfold and weight product for the
 * first). */
typedef struct {
    bare *b;
    size_t begin, end, t;
} part;

static void *conv_part(void *arg) {
    part *p = arg;
    bare *b = p->b;
    float *col = b->cols + p->t * F * 9 * 26 * 26, *gw1 = b->gw1_part + p->t * F * 9, *gw2 = b->gw2_part + p->t * F * F * 9;
    for (size_t n = p->begin; n < p->end; n++) {
        unfold(b->x + n * 784, 1, 28, 28, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, 676, 9, 1, b->w1, 9, col, 676, 0,
                    b->a1 + n * F * 676, 676);
        unfold(b->a1 + n * F * 676, F, 26, 26, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, F, 576, F * 9, 1, b->w2, F * 9, col, 576, 0,
                    b->a2 + n * F * 576, 576);
    }
    for (size_t n = p->begin; n < p->end; n++) {
        unfold(b->a1 + n * F * 676, F, 26, 26, col); /* dW2ᵀ = col · G2ᵀ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, F * 9, F, 576, 1, col, 576, b->g2 + n * F * 576, 576,
                    n > p->begin, gw2, F);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, F * 9, 576, F, 1, b->w2, F * 9, b->g2 + n * F * 576, 576,
                    0, col, 576); /* dcol = W2ᵀ G2, folded onto dA1 */
        fold(col, F, 26, 26, b->g1 + n * F * 676);
        unfold(b->x + n * 784, 1, 28, 28, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 9, F, 676, 1, col, 676, b->g1 + n * F * 676, 676,
                    n > p->begin, gw1, F);
    }
    return NULL;
}

static int bare_threads = 1;

static void bare_step(bare *b) {
    size_t B = b->batch;
    pthread_t th[64];
    part parts[64];
    for (int t = 0; t < bare_threads; t++) {
        parts[t] = (part){b, B * (size_t)t / (size_t)bare_threads, B * (size_t)(t + 1) / (size_t)bare_threads, (size_t)t};
        if (t) pthread_create(&th[t], NULL, conv_part, &parts[t]);
    }
    conv_part(&parts[0]);
    for (int t = 1; t < bare_threads; t++) pthread_join(th[t], NULL);
    /* the dense layers: forward, dW and dX for each (OpenBLAS's own threads) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, HIDDEN, FLAT, 1, b->flat, FLAT, b->f1, FLAT, 0, b->h,
                HIDDEN);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, 10, HIDDEN, 1, b->h, HIDDEN, b->f1, HIDDEN, 0,
                b->out, 10);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 10, HIDDEN, (int)B, 1, b->gout, 10, b->h, HIDDEN, 0, b->gf1,
                HIDDEN);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, HIDDEN, 10, 1, b->gout, 10, b->f1, HIDDEN, 0, b->gh,
                HIDDEN);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, HIDDEN, FLAT, (int)B, 1, b->gh, HIDDEN, b->flat, FLAT, 0,
                b->gf1, FLAT);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, FLAT, HIDDEN, 1, b->gh, HIDDEN, b->f1, FLAT, 0,
                b->flat, FLAT);
}

/* ------------------------------------------------------------ Winograd against the general path */

/* src/ops/winograd.h, for tests and benchmarks: 0 the dispatch rule, 1
 * Winograd wherever it applies, -1 never; tile 2 or 4 (0: the default). */
void nb_winograd_set(int mode, int tile);

typedef struct {
    const char *name;
    size_t N, C, O, H;
    int pad;
    bool relu;
} conv_shape;

static const conv_shape wino_shapes[] = {
    {"lesson conv1: 64 x 1->32 x 28x28", 64, 1, 32, 28, 0, true},
    {"lesson conv2: 64 x 32->32 x 26x26", 64, 32, 32, 26, 0, true},
    {"resnet: 16 x 64->64 x 32x32 pad 1", 16, 64, 64, 32, 1, false},
    {"resnet: 16 x 128->128 x 16x16 pad 1", 16, 128, 128, 16, 1, false},
    {"resnet: 16 x 256->256 x 8x8 pad 1", 16, 256, 256, 8, 1, false},
    {"16 x 8->8 x 32x32 pad 1", 16, 8, 8, 32, 1, false},
    {"16 x 16->16 x 32x32 pad 1", 16, 16, 16, 32, 1, false},
    {"16 x 32->32 x 16x16 pad 1", 16, 32, 32, 16, 1, false},
    {"16 x 32->32 x 12x12 pad 1", 16, 32, 32, 12, 1, false},
    {"16 x 32->32 x 8x8 pad 1", 16, 32, 32, 8, 1, false},
    {"16 x 128->128 x 12x12 pad 1", 16, 128, 128, 12, 1, false},
};

/* Thread CPU seconds per call of: the forward (what 0), the forward and
 * dL/dx (1), the forward and every gradient (2), at least `seconds` long;
 * the allocations after the first call are added to *allocs. */
static double time_conv(nb_tape *tp, const conv_shape *k, nb_tensor *x, nb_tensor *w, nb_tensor *b, int what,
                        double seconds, uint64_t *allocs) {
    nb_requires_grad(x, what >= 1);
    nb_requires_grad(w, what == 2);
    nb_requires_grad(b, what == 2);
    nb_conv_opts o = {.padding = {k->pad, k->pad}, .relu = k->relu};
    long calls = 0;
    uint64_t before = 0;
    double t0 = 0;
    do {
        if (calls == 1) { /* the first call warms the tape: not timed */
            before = nb_alloc_count();
            t0 = thread_cpu_seconds();
        }
        nb_tape_reset(tp);
        nb_tensor *y = nb_conv2d(tp, x, w, b, &o);
        if (what) {
            nb_zero_grad(x);
            nb_zero_grad(w);
            nb_zero_grad(b);
            if (nb_backward(nb_sum(tp, nb_mul(tp, y, y))) != NB_OK) fprintf(stderr, "bench_cnn: %s\n", nb_last_error());
        } else if (nb_tensor_status(y) != NB_OK) {
            fprintf(stderr, "bench_cnn: %s\n", nb_last_error());
        }
        calls++;
    } while (calls < 4 || thread_cpu_seconds() - t0 < seconds);
    *allocs += nb_alloc_count() - before;
    return (thread_cpu_seconds() - t0) / (double)(calls - 1);
}

static int winograd_table(int reps, bool quick) {
    enum { PATHS = 4 };
    const int modes[PATHS][2] = {{-1, 0}, {1, 2}, {1, 4}, {0, 0}};
    const char *names[PATHS] = {"general", "F(2x2)", "F(4x4)", "rule"};
    double seconds = quick ? 0.1 : 0.3;
    nb_rng r;
    nb_rng_seed(&r, 3);
    nb_tape *tp = nb_tape_new();
    for (size_t s = 0; s < sizeof wino_shapes / sizeof *wino_shapes; s++) {
        const conv_shape *k = &wino_shapes[s];
        nb_tensor *x = nb_rand_uniform(NULL, &r, NB_F32, NB_SHAPE(k->N, k->C, k->H, k->H), -1, 1);
        nb_tensor *w = nb_rand_uniform(NULL, &r, NB_F32, NB_SHAPE(k->O, k->C, 3, 3), -0.1, 0.1);
        nb_tensor *b = nb_rand_uniform(NULL, &r, NB_F32, NB_SHAPE(k->O), -0.1, 0.1);
        double t[PATHS][3][64];
        uint64_t allocs = 0;
        for (int rep = 0; rep < reps; rep++)
            for (int m = 0; m < PATHS; m++) { /* alternated, so drifts hit the paths alike */
                nb_winograd_set(modes[m][0], modes[m][1]);
                for (int what = 0; what < 3; what++) t[m][what][rep] = time_conv(tp, k, x, w, b, what, seconds, &allocs);
            }
        for (int m = 0; m < PATHS; m++) {
            double med[3];
            for (int what = 0; what < 3; what++) {
                qsort(t[m][what], (size_t)reps, sizeof(double), cmp_double);
                med[what] = 1e3 * t[m][what][reps / 2];
            }
            printf("%s,%s,%.4f,%.4f,%.4f,%llu\n", k->name, names[m], med[0], med[1] - med[0], med[2] - med[0],
                   (unsigned long long)allocs);
        }
        nb_tensor_free(x);
        nb_tensor_free(w);
        nb_tensor_free(b);
    }
    nb_tape_free(tp);
    nb_winograd_set(0, 0);
    return 0;
}

/* ------------------------------------------------------------ driver */

int main(int argc, char **argv) {
    int threads = 1, reps = 5;
    size_t batch = 64;
    bool quick = false, csv = false, winograd = false, general = false;
    char side = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--winograd")) winograd = true;
        else if (!strcmp(argv[i], "--general")) general = true;
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else if (!strcmp(argv[i], "--side") && i + 1 < argc) side = argv[++i][0];
        else {
            fprintf(stderr, "usage: bench_cnn [--threads N] [--batch B] [--reps R] [--quick] [--csv] [--side n|b] "
                            "[--general]\n"
                            "       bench_cnn --winograd [--reps R] [--quick]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 63 || threads < 1 || threads > 64 || batch < 1 || batch > 4096) {
        fprintf(stderr, "bench_cnn: bad arguments\n");
        return 2;
    }
    if (nb_set_threads(threads) != NB_OK) {
        fprintf(stderr, "bench_cnn: %s\n", nb_last_error());
        return 1;
    }
    bare_threads = threads;
    openblas_set_num_threads(1);
    if (winograd) return winograd_table(reps, quick);
    if (general) nb_winograd_set(-1, 0);
    net n;
    bare b;
    net_init(&n, batch);
    bare_init(&b, batch, threads);
    double seconds = quick ? 0.3 : 1.0, nt[64], bt[64], nc[64];
    for (int w = 0; w < 3; w++) {
        if (side != 'b' && nabla_step(&n)) return 1;
        if (side != 'n') bare_step(&b);
    }
    uint64_t before = nb_alloc_count();
    for (int r = 0; r < reps; r++) { /* alternate, so drifts hit both alike */
        long steps = 0;
        double t0 = now();
        while (side != 'n' && (steps < 2 || now() - t0 < seconds)) {
            bare_step(&b);
            steps++;
        }
        bt[r] = steps ? (now() - t0) / (double)steps : 0;
        steps = 0;
        t0 = now();
        double c0 = thread_cpu_seconds();
        while (side != 'b' && (steps < 2 || now() - t0 < seconds)) {
            if (nabla_step(&n)) return 1;
            steps++;
        }
        nt[r] = steps ? (now() - t0) / (double)steps : 0;
        nc[r] = steps ? (thread_cpu_seconds() - c0) / (double)steps : 0;
    }
    uint64_t allocs = nb_alloc_count() - before;
    qsort(nt, (size_t)reps, sizeof *nt, cmp_double);
    qsort(bt, (size_t)reps, sizeof *bt, cmp_double);
    qsort(nc, (size_t)reps, sizeof *nc, cmp_double);
    double nms = 1e3 * nt[reps / 2], bms = 1e3 * bt[reps / 2];
    if (csv)
        printf("%zu,%d,%.4f,%.4f,%llu,%.4f\n", batch, threads, nms, bms, (unsigned long long)allocs, 1e3 * nc[reps / 2]);
    else
        printf("CNN step, batch %zu, %d thread%s: nabla %.3f ms, its unfolding and products alone %.3f ms (%.2fx); "
               "%llu allocations after warm-up\n",
               batch, threads, threads > 1 ? "s" : "", nms, bms, bms > 0 ? nms / bms : 0, (unsigned long long)allocs);
    net_free(&n);
    bare_free(&b);
    return 0;
}
