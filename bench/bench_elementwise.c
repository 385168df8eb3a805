/*
 * The element-wise kernels of a transformer's step against memcpy: for each
 * kernel at a transformer's sizes, its forward and its backward alone, the
 * bytes it must move (read plus written) per second, and its time over the
 * time memcpy takes to move the same bytes (a copy of half of them: it
 * reads one half and writes the other).  1.00x is memory speed.
 *
 * Each run resets the tape, records the op (forward timed), puts a reshape
 * after it and back-propagates a seed through both; a backward hook, called
 * after each entry's backward, times the op's backward alone (from the
 * reshape's hook to the op's).  A memcpy of the forward's and of the
 * backward's bytes runs after each run, so the two sides alternate; each
 * figure is the minimum over the runs.  On 1 thread the clock is the
 * thread's CPU time (other work on the machine does not count), on more
 * the wall clock.
 *
 *   bench_elementwise [--reps R] [--threads T] [--f64] [--only NAME] [--csv]
 */
#include "bench_common.h"
#include "nabla.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { SOFTMAX, LOG_SOFTMAX, GELU, GELU_TANH, WHERE, MASKED_FILL, DROPOUT, LAYER_NORM, EMBEDDING } kernel;
static const char *const kernel_names[] = {"softmax", "log_softmax", "gelu", "gelu_tanh", "where",
                                           "masked_fill", "dropout", "layer_norm", "embedding"};
enum { N_KERNELS = 9, VOCAB = 256 };

/* What a kernel needs, made once on the heap: x (rows, cols) or viewed as
 * (heads, T, T) for the masks, the condition(s), γ and β, the ids. */
typedef struct {
    kernel k;
    nb_dtype dt;
    size_t rows, cols, T, heads;
    nb_tensor *x, *x2, *cond, *fill, *gamma, *beta, *table, *seed;
    size_t *ids;
    nb_rng rng;
    nb_tensor *wrt[3];
    int n_wrt;
} setup;

static clockid_t clock_id = CLOCK_THREAD_CPUTIME_ID;
static double tick(void) {
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double hook_time[2];
static void time_hook(nb_tape *tp, size_t entry, void *user) {
    (void)tp;
    size_t op_entry = *(const size_t *)user;
    if (entry == op_entry + 1) hook_time[0] = tick();
    if (entry == op_entry) hook_time[1] = tick();
}

static nb_tensor *random_tensor(nb_rng *rng, nb_dtype dt, int ndim, const size_t *shape, double lo, double hi) {
    return nb_rand_uniform_(NULL, rng, dt, ndim, shape, lo, hi, __FILE__, __LINE__);
}

static void make_setup(setup *s, kernel k, nb_dtype dt, size_t rows, size_t cols) {
    memset(s, 0, sizeof *s);
    s->k = k, s->dt = dt, s->rows = rows, s->cols = cols;
    nb_rng_seed(&s->rng, 7);
    size_t n = rows * cols;
    /* the masks: x as (heads, T, T) with a causal (T, T) condition */
    s->T = cols, s->heads = n / (cols * cols);
    if (k == MASKED_FILL)
        s->x = random_tensor(&s->rng, dt, 3, (size_t[]){s->heads, s->T, s->T}, -3, 3);
    else if (k != EMBEDDING)
        s->x = random_tensor(&s->rng, dt, 2, (size_t[]){rows, cols}, -3, 3);
    if (k == WHERE) {
        s->x2 = random_tensor(&s->rng, dt, 2, (size_t[]){rows, cols}, -3, 3);
        s->cond = random_tensor(&s->rng, dt, 2, (size_t[]){rows, cols}, -1, 1);
        float *c32 = nb_tensor_data(s->cond);
        double *c64 = nb_tensor_data(s->cond);
        for (size_t i = 0; i < n; i++) {
            if (dt == NB_F32) c32[i] = c32[i] > 0;
            else c64[i] = c64[i] > 0;
        }
    }
    if (k == MASKED_FILL) {
        s->cond = nb_zeros(NULL, dt, NB_SHAPE(s->T, s->T));
        for (size_t i = 0; i < s->T; i++)
            for (size_t j = i + 1; j < s->T; j++) nb_set(s->cond, i * s->T + j, 1);
        s->fill = nb_scalar(NULL, dt, -1e9);
    }
    if (k == LAYER_NORM) {
        s->gamma = random_tensor(&s->rng, dt, 1, (size_t[]){cols}, 0.5, 1.5);
        s->beta = random_tensor(&s->rng, dt, 1, (size_t[]){cols}, -0.5, 0.5);
    }
    if (k == EMBEDDING) {
        s->table = random_tensor(&s->rng, dt, 2, (size_t[]){VOCAB, cols}, -1, 1);
        s->ids = malloc(rows * sizeof *s->ids);
        for (size_t i = 0; i < rows; i++) s->ids[i] = nb_rng_next(&s->rng) % VOCAB;
    }
    s->seed = random_tensor(&s->rng, dt, 1, (size_t[]){n}, -1, 1);
    if (k == EMBEDDING) s->wrt[s->n_wrt++] = s->table;
    else s->wrt[s->n_wrt++] = s->x;
    if (k == WHERE) s->wrt[s->n_wrt++] = s->x2;
    if (k == LAYER_NORM) s->wrt[s->n_wrt++] = s->gamma, s->wrt[s->n_wrt++] = s->beta;
    for (int i = 0; i < s->n_wrt; i++) nb_requires_grad(s->wrt[i], true);
}

static void free_setup(setup *s) {
    nb_tensor *all[] = {s->x, s->x2, s->cond, s->fill, s->gamma, s->beta, s->table, s->seed};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) nb_tensor_free(all[i]);
    free(s->ids);
}

static nb_tensor *record(nb_tape *tp, setup *s) {
    switch (s->k) {
    case SOFTMAX: return nb_softmax(tp, s->x, -1);
    case LOG_SOFTMAX: return nb_log_softmax(tp, s->x, -1);
    case GELU: return nb_gelu(tp, s->x);
    case GELU_TANH: return nb_gelu_tanh(tp, s->x);
    case WHERE: return nb_where(tp, s->cond, s->x, s->x2);
    case MASKED_FILL: return nb_where(tp, s->cond, s->fill, s->x);
    case DROPOUT: return nb_dropout(tp, s->x, 0.1, &s->rng);
    case LAYER_NORM: return nb_layer_norm(tp, s->x, s->gamma, s->beta, 1e-5);
    case EMBEDDING: return nb_index_select(tp, s->table, 0, s->ids, s->rows);
    }
    return NULL;
}

/* The bytes a kernel must read and write, forward and backward, with w
 * bytes per element (n = rows cols).  Small operands (a (T, T) mask, γ, β)
 * count once; dropout's mask as one bit per element. */
static void kernel_bytes(const setup *s, double w, double *fwd, double *bwd) {
    double n = (double)(s->rows * s->cols), d = (double)s->cols;
    switch (s->k) {
    case SOFTMAX: case LOG_SOFTMAX: case GELU: case GELU_TANH:
        *fwd = 2 * n * w, *bwd = 3 * n * w; /* x -> y;  (x or y), G -> dx */
        break;
    case WHERE:
        *fwd = 4 * n * w, *bwd = 4 * n * w; /* c, a, b -> y;  c, G -> da, db */
        break;
    case MASKED_FILL:
        *fwd = 2 * n * w + (double)(s->T * s->T) * w, *bwd = *fwd;
        break;
    case DROPOUT:
        *fwd = 2 * n * w + n / 8, *bwd = *fwd; /* x -> y, mask;  G, mask -> dx */
        break;
    case LAYER_NORM:
        *fwd = 2 * n * w + 2 * d * w, *bwd = 3 * n * w + 4 * d * w; /* x, γ, β -> y;  x, G, γ -> dx, dγ, dβ */
        break;
    case EMBEDDING:
        *fwd = 2 * n * w, *bwd = n * w + VOCAB * d * w; /* rows -> y;  G -> the table's gradient */
        break;
    }
}

static volatile unsigned char sink;

int main(int argc, char **argv) {
    int reps = 30, threads = 1;
    bool csv = false;
    nb_dtype dt = NB_F32;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--f64")) dt = NB_F64;
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else {
            fprintf(stderr, "usage: bench_elementwise [--reps R] [--threads T] [--f64] [--only NAME] [--csv]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 30;
    if (threads > 1) clock_id = CLOCK_MONOTONIC;
    if (nb_set_threads(threads) != NB_OK) {
        fprintf(stderr, "bench_elementwise: %s\n", nb_last_error());
        return 1;
    }
    double w = dt == NB_F32 ? 4 : 8;
    const size_t sizes[][2] = {{2048, 512}, {16 * 128, 128}};
    size_t biggest = 0;
    for (int k = 0; k < 2; k++) biggest = biggest > sizes[k][0] * sizes[k][1] ? biggest : sizes[k][0] * sizes[k][1];
    size_t copy_bytes = (size_t)(2 * biggest * w) + (1 << 20);
    unsigned char *src = malloc(copy_bytes), *dst = malloc(copy_bytes);
    if (!src || !dst) return 1;
    memset(src, 1, copy_bytes);
    memset(dst, 2, copy_bytes);
    if (!csv) {
        printf("Element-wise kernels, %s, %d thread%s, min of %d alternated runs (%s); ratio = time / memcpy's time for "
               "the same bytes\n", dt == NB_F32 ? "float32" : "float64", threads, threads > 1 ? "s" : "", reps,
               threads > 1 ? "wall clock" : "CPU time");
        printf("%-12s %-12s | %9s %8s %7s | %9s %8s %7s\n", "kernel", "shape", "fwd ms", "GB/s", "ratio",
               "bwd ms", "GB/s", "ratio");
    }
    nb_tape *tp = nb_tape_new();
    for (int k = 0; k < N_KERNELS; k++) {
        if (only && strcmp(only, kernel_names[k])) continue;
        for (int z = 0; z < 2; z++) {
            setup s;
            make_setup(&s, (kernel)k, dt, sizes[z][0], sizes[z][1]);
            double fb = 0, bb = 0, best[4] = {1e30, 1e30, 1e30, 1e30};
            kernel_bytes(&s, w, &fb, &bb);
            size_t op_entry = 0;
            nb_tape_set_backward_hook(tp, time_hook, &op_entry);
            for (int r = -2; r < reps; r++) {
                nb_tape_reset(tp);
                for (int i = 0; i < s.n_wrt; i++) nb_zero_grad(s.wrt[i]);
                double t0 = tick();
                nb_tensor *y = record(tp, &s);
                double t1 = tick();
                op_entry = nb_tape_size(tp) - 1;
                nb_tensor *flat = nb_reshape(tp, y, 1, (long[]){-1});
                if (nb_backward_seed(flat, s.seed) != NB_OK) {
                    fprintf(stderr, "bench_elementwise: %s: %s\n", kernel_names[k], nb_last_error());
                    return 1;
                }
                double tb = hook_time[1] - hook_time[0];
                double c0 = tick();
                memcpy(dst, src, (size_t)(fb / 2));
                double c1 = tick();
                memcpy(dst + 64, src, (size_t)(bb / 2));
                double c2 = tick();
                sink ^= dst[(size_t)(bb / 4)];
                if (r < 0) continue;
                double t[4] = {t1 - t0, c1 - c0, tb, c2 - c1};
                for (int i = 0; i < 4; i++) best[i] = t[i] < best[i] ? t[i] : best[i];
            }
            char shape[32];
            snprintf(shape, sizeof shape, "(%zu, %zu)", s.rows, s.cols);
            if (csv)
                printf("%s,%zu,%zu,%.6f,%.3f,%.3f,%.6f,%.3f,%.3f\n", kernel_names[k], s.rows, s.cols, best[0] * 1e3,
                       fb / best[0] * 1e-9, best[0] / best[1], best[2] * 1e3, bb / best[2] * 1e-9, best[2] / best[3]);
            else
                printf("%-12s %-12s | %9.3f %8.1f %6.2fx | %9.3f %8.1f %6.2fx\n", kernel_names[k], shape,
                       best[0] * 1e3, fb / best[0] * 1e-9, best[0] / best[1], best[2] * 1e3, bb / best[2] * 1e-9,
                       best[2] / best[3]);
            free_setup(&s);
        }
    }
    nb_tape_free(tp);
    free(src);
    free(dst);
    return 0;
}
