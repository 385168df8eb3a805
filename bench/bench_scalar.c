/*
 * Scalar code on the tape (issue 23): the projectile of bench/projectile.h
 * written with 0-d tensors, 17 ops a step, recorded and differentiated with
 * respect to the launch angle and speed on every run (retaped, as
 * bench/adolc_projectile.cpp does with ADOL-C).  Prints the gradient to 17
 * digits, checks it against central differences of the plain-double
 * function, and times a gradient (reset, record, backward) in the thread's
 * CPU time, median of R runs on a warm tape.  With --replay, the tape is
 * recorded once and captured (include/nabla_graph.h), and each run replays
 * it: the inputs set, forward, backward (as bench/adolc_projectile.cpp
 * --replay replays ADOL-C's tape).
 *
 *   bench_scalar [--reps R] [--steps N] [--csv] [--replay]
 * --csv prints one line: nabla,ms per gradient,ns per op,ops,df/dtheta,df/ds
 * (nabla-replay with --replay)
 */
#include "bench_common.h"
#include "nabla.h"
#include "nabla_graph.h"
#include "projectile_tape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    int reps, steps;
    bool csv, replay = false;
    /* --replay is ours; the others are projectile_options' */
    char *rest[16];
    int n_rest = 0;
    for (int i = 0; i < argc && n_rest < 16; i++)
        if (!strcmp(argv[i], "--replay")) replay = true;
        else rest[n_rest++] = argv[i];
    if (!projectile_options(n_rest, rest, "bench_scalar [--replay]", &reps, &steps, &csv)) return 2;
    nb_tape *tp = nb_tape_new();
    nb_tensor *theta = nb_scalar(NULL, NB_F64, PROJ_THETA), *speed = nb_scalar(NULL, NB_F64, PROJ_SPEED);
    nb_tensor *theta_value = nb_scalar(NULL, NB_F64, PROJ_THETA), *speed_value = nb_scalar(NULL, NB_F64, PROJ_SPEED);
    nb_requires_grad(theta, true);
    nb_requires_grad(speed, true);
    double *ms = malloc((size_t)reps * sizeof *ms), f = 0, g[2] = {0, 0};
    size_t ops = 0;
    nb_graph *graph = NULL;
    nb_tensor *out = NULL;
    if (replay) { /* recorded once, with other values: the replays set the launch's */
        nb_set(theta, 0, 0.5);
        nb_set(speed, 0, 10);
        out = projectile_tape(tp, theta, speed, steps);
        nb_tensor *in[2] = {theta, speed};
        if (!(graph = nb_graph_capture(tp, in, 2, &out, 1))) {
            fprintf(stderr, "bench_scalar: %s\n", nb_last_error());
            return 1;
        }
    }
    for (int r = -2; r < reps; r++) { /* two warm-up runs: both header arenas */
        if (!replay) nb_tape_reset(tp);
        nb_zero_grad(theta);
        nb_zero_grad(speed);
        double t0 = thread_cpu_seconds();
        nb_status st;
        if (replay) {
            st = nb_graph_set_input(graph, 0, theta_value);
            if (st == NB_OK) st = nb_graph_set_input(graph, 1, speed_value);
            if (st == NB_OK) st = nb_graph_forward(graph);
            if (st == NB_OK) st = nb_graph_backward(graph, 0);
        } else {
            out = projectile_tape(tp, theta, speed, steps);
            st = nb_backward(out);
        }
        if (st != NB_OK) {
            fprintf(stderr, "bench_scalar: %s\n", nb_last_error());
            return 1;
        }
        double t1 = thread_cpu_seconds();
        if (r >= 0) ms[r] = (t1 - t0) * 1e3;
        f = nb_item(out);
        g[0] = nb_grad_get(theta, 0);
        g[1] = nb_grad_get(speed, 0);
        ops = replay ? nb_graph_size(graph) : nb_tape_size(tp);
    }
    qsort(ms, (size_t)reps, sizeof *ms, cmp_double);
    double med = ms[reps / 2], fd[2];
    projectile_fd(PROJ_THETA, PROJ_SPEED, steps, fd);
    double plain = projectile_f(PROJ_THETA, PROJ_SPEED, steps);
    if (f != plain) {
        fprintf(stderr, "bench_scalar: f = %.17g on the tape, %.17g in plain doubles\n", f, plain);
        return 1;
    }
    for (int k = 0; k < 2; k++)
        if (!(fabs(g[k] - fd[k]) <= 1e-5 * fabs(fd[k]))) {
            fprintf(stderr, "bench_scalar: gradient %d is %.17g, central differences %.17g\n", k, g[k], fd[k]);
            return 1;
        }
    if (csv) {
        printf("%s,", replay ? "nabla-replay" : "nabla");
        printf("%.6f,%.3f,%zu,%.17g,%.17g\n", med, med * 1e6 / (double)ops, ops, g[0], g[1]);
    } else {
        printf("Projectile, %d steps, %zu ops, %s: %.3f ms per gradient, %.1f ns per op "
               "(thread CPU time, median of %d)\n", steps, ops,
               replay ? "recorded once and replayed each run" : "retaped each run", med, med * 1e6 / (double)ops, reps);
        printf("f = %.17g\ndf/dtheta = %.17g (central differences %.17g, rel %.1e)\n"
               "df/dspeed = %.17g (central differences %.17g, rel %.1e)\n", f, g[0], fd[0],
               fabs(g[0] - fd[0]) / fabs(fd[0]), g[1], fd[1], fabs(g[1] - fd[1]) / fabs(fd[1]));
    }
    free(ms);
    nb_graph_free(graph);
    nb_tensor_free(theta_value);
    nb_tensor_free(speed_value);
    nb_tensor_free(theta);
    nb_tensor_free(speed);
    nb_tape_free(tp);
    return 0;
}
