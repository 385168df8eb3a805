/*
 * The cost of the tape itself: recording and back-propagating graphs of
 * tiny (1-element) ops, in ns per op, for chains and DAGs of 10,000 to
 * 1,000,000 ops.  Each timed run resets the tape, records the graph and runs
 * backward; the tape's memory is warm (the second and later runs allocate
 * nothing).  Median of R runs.
 *
 *   bench_tape [--reps R]
 */
#include "bench_common.h"
#include "nabla.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* y = ((x * c) + d) * c + d ...: a chain of n ops. */
static nb_tensor *chain(nb_tape *tp, nb_tensor *x, long n) {
    nb_tensor *y = x;
    for (long i = 0; i < n; i += 2) y = nb_add_scalar(tp, nb_scale(tp, y, 0.999), 0.001);
    return y;
}

/* a DAG: every op reads the two previous results (fan-out 2 everywhere). */
static nb_tensor *dag(nb_tape *tp, nb_tensor *x, long n) {
    nb_tensor *prev = x, *cur = nb_scale(tp, x, 1.0);
    for (long i = 1; i < n; i += 2) {
        nb_tensor *next = nb_mul(tp, nb_add(tp, cur, prev), x);
        prev = cur;
        cur = next;
    }
    return cur;
}

int main(int argc, char **argv) {
    int reps = 7;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_tape [--reps R]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 63) reps = 7;
    printf("Tape cost for 1-element ops (record + backward, warm tape), median of %d runs\n", reps);
    printf("%-6s %9s | %12s %12s %12s | %s\n", "graph", "ops", "record ns/op", "backward ns", "total ns/op",
           "allocs");
    const long sizes[] = {10000, 100000, 1000000};
    for (int kind = 0; kind < 2; kind++)
        for (size_t s = 0; s < 3; s++) {
            long n = sizes[s];
            nb_tape *tp = nb_tape_new();
            nb_tensor *x = nb_scalar(NULL, NB_F64, 0.5);
            nb_requires_grad(x, true);
            double rec[64], back[64];
            uint64_t allocs = 0;
            for (int r = -2; r < reps; r++) { /* runs -2 and -1 warm the tape (both header arenas) */
                uint64_t before = nb_alloc_count();
                nb_tape_reset(tp);
                nb_zero_grad(x);
                double t0 = now();
                nb_tensor *y = kind ? dag(tp, x, n) : chain(tp, x, n);
                double t1 = now();
                if (nb_backward(y) != NB_OK) {
                    fprintf(stderr, "bench_tape: %s\n", nb_last_error());
                    return 1;
                }
                double t2 = now();
                if (r >= 0) {
                    rec[r] = (t1 - t0) / (double)nb_tape_size(tp) * 1e9;
                    back[r] = (t2 - t1) / (double)nb_tape_size(tp) * 1e9;
                    allocs += nb_alloc_count() - before;
                }
            }
            qsort(rec, (size_t)reps, sizeof *rec, cmp_double);
            qsort(back, (size_t)reps, sizeof *back, cmp_double);
            printf("%-6s %9ld | %12.1f %12.1f %12.1f | %llu\n", kind ? "DAG" : "chain", n, rec[reps / 2],
                   back[reps / 2], rec[reps / 2] + back[reps / 2], (unsigned long long)allocs);
            nb_tensor_free(x);
            nb_tape_free(tp);
        }
    return 0;
}
