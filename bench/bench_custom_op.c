/*
 * A custom op against the built-in ops it replaces: SiLU, y = x σ(x), from
 * examples/silu_op.h written plainly (a serial loop with libm's expf) and
 * with include/nabla_kernel.h (NB_KERNEL clones, nb_kernel_for's split,
 * NB_EXP), against x · sigmoid(x) from two built-in ops.  Each run records
 * the forward and back-propagates a seed of ones to x (nb_grad_seed); the
 * three variants alternate run by run and each figure is the median.  On 1
 * thread the clock is the thread's CPU time, on more the wall clock.
 *
 *   bench_custom_op [--reps R] [--threads T] [--n N] [--f64] [--csv]
 */
#include "bench_common.h"
#include "../examples/silu_op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PLAIN, KERNEL, BUILT_IN, N_VARIANTS };
static const char *const variant_names[] = {"plain custom op", "custom op with nabla_kernel.h",
                                            "built-in x * sigmoid(x)"};

static nb_tensor *forward(nb_tape *tp, int variant, nb_tensor *x) {
    if (variant == PLAIN) return silu_with(tp, &silu_plain_op, x);
    if (variant == KERNEL) return silu_with(tp, &silu_kernel_op, x);
    return nb_mul(tp, x, nb_sigmoid(tp, x));
}

int main(int argc, char **argv) {
    int reps = 30, threads = 1;
    size_t n = 2048 * 512;
    bool csv = false;
    nb_dtype dt = NB_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--n") && i + 1 < argc) n = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--f64")) dt = NB_F64;
        else if (!strcmp(argv[i], "--csv")) csv = true;
        else {
            fprintf(stderr, "usage: bench_custom_op [--reps R] [--threads T] [--n N] [--f64] [--csv]\n");
            return 2;
        }
    }
    if (reps < 1 || threads < 1 || n < 1 || nb_set_threads(threads) != NB_OK) {
        fprintf(stderr, "bench_custom_op: bad --reps, --threads or --n\n");
        return 2;
    }
    double (*clock_fn)(void) = threads == 1 ? thread_cpu_seconds : now;
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tensor *x = nb_rand_uniform(NULL, &rng, dt, NB_SHAPE(n), -6, 6);
    nb_tensor *seed = nb_ones(NULL, dt, NB_SHAPE(n));
    nb_requires_grad(x, true);
    nb_tape *tp = nb_tape_new();
    double *times[N_VARIANTS][2];
    for (int v = 0; v < N_VARIANTS; v++)
        for (int p = 0; p < 2; p++) times[v][p] = calloc((size_t)reps, sizeof(double));
    for (int r = -2; r < reps; r++) /* two warm-up rounds */
        for (int v = 0; v < N_VARIANTS; v++) {
            nb_tape_reset(tp);
            double t0 = clock_fn();
            nb_tensor *y = forward(tp, v, x), *g;
            double t1 = clock_fn();
            if (nb_grad_seed(y, seed, &x, 1, &g, false) != NB_OK) {
                fprintf(stderr, "bench_custom_op: %s\n", nb_last_error());
                return 1;
            }
            double t2 = clock_fn();
            if (r >= 0) times[v][0][r] = t1 - t0, times[v][1][r] = t2 - t1;
        }
    double med[N_VARIANTS][2];
    for (int v = 0; v < N_VARIANTS; v++)
        for (int p = 0; p < 2; p++) {
            qsort(times[v][p], (size_t)reps, sizeof(double), cmp_double);
            med[v][p] = times[v][p][reps / 2] * 1e3;
        }
    if (csv) {
        for (int v = 0; v < N_VARIANTS; v++) printf("%s,%.4f,%.4f\n", variant_names[v], med[v][0], med[v][1]);
    } else {
        printf("A custom op at built-in speed: SiLU of %zu %s on %d thread%s (%s, median of %d alternating runs)\n",
               n, dt == NB_F32 ? "floats" : "doubles", threads, threads == 1 ? "" : "s",
               threads == 1 ? "thread CPU time" : "wall clock", reps);
        printf("  %-31s %9s %9s %9s %s\n", "", "fwd ms", "bwd ms", "total", "vs built-in");
        double ref = med[BUILT_IN][0] + med[BUILT_IN][1];
        for (int v = 0; v < N_VARIANTS; v++)
            printf("  %-31s %9.3f %9.3f %9.3f %9.2fx\n", variant_names[v], med[v][0], med[v][1],
                   med[v][0] + med[v][1], (med[v][0] + med[v][1]) / ref);
    }
    for (int v = 0; v < N_VARIANTS; v++)
        for (int p = 0; p < 2; p++) free(times[v][p]);
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(seed);
    return 0;
}
