/*
 * The projectile of bench/projectile.h with ADOL-C (Debian's libadolc-dev,
 * a bench-only dependency, never vendored): retaped on every run (trace_on,
 * the function, trace_off, then gradient()), as bench_scalar.c records
 * nabla's tape on every run.  With --replay, taped once and replayed on
 * every run (gradient() on the recorded tape: zos_forward, then
 * fos_reverse), as bench_scalar --replay replays nabla's captured graph.
 * The thread's CPU time, median of R runs.
 *
 *   adolc_projectile [--reps R] [--steps N] [--csv] [--replay]
 * --csv prints one line: adolc,ms per gradient,df/dtheta,df/ds (adolc-replay
 * with --replay)
 */
#include <adolc/adolc.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

extern "C" {
#include "projectile.h"
}

/* The thread's CPU time, as bench_scalar measures it (bench_common.h). */
static double cpu_now() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void tape(short tag, int steps, const double in[2], double *f) {
    trace_on(tag, 1); /* keep: the tape's buffers are reused between runs */
    adouble theta, speed;
    theta <<= in[0];
    speed <<= in[1];
    adouble vx = speed * cos(theta), vy = speed * sin(theta), x = 0.0, y = 0.0;
    for (int i = 0; i < steps; i++) {
        adouble v = sqrt(vx * vx + vy * vy);
        adouble kv = v * -PROJ_K;
        adouble ax = kv * vx, ay = kv * vy + -PROJ_G;
        x = x + vx * PROJ_DT;
        y = y + vy * PROJ_DT;
        vx = vx + ax * PROJ_DT;
        vy = vy + ay * PROJ_DT;
    }
    adouble out = x + y;
    out >>= *f;
    trace_off();
}

int main(int argc, char **argv) {
    int reps, steps;
    bool csv, replay = false;
    std::vector<char *> rest;
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--replay")) replay = true;
        else rest.push_back(argv[i]);
    if (!projectile_options((int)rest.size(), rest.data(), "adolc_projectile [--replay]", &reps, &steps, &csv))
        return 2;
    const double in[2] = {PROJ_THETA, PROJ_SPEED}, other[2] = {0.5, 10};
    double f = 0, g[2] = {0, 0};
    std::vector<double> ms;
    if (replay) tape(1, steps, other, &f); /* recorded once, with other values */
    for (int r = -2; r < reps; r++) {
        double t0 = cpu_now();
        if (!replay) tape(1, steps, in, &f);
        gradient(1, 2, in, g);
        double t1 = cpu_now();
        if (r >= 0) ms.push_back((t1 - t0) * 1e3);
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2];
    if (csv)
        printf("%s,%.6f,%.17g,%.17g\n", replay ? "adolc-replay" : "adolc", med, g[0], g[1]);
    else {
        printf("ADOL-C, %d steps, %s: %.3f ms per gradient (thread CPU time, median of %d)\n", steps,
               replay ? "taped once, replayed each run" : "retaped each run", med, reps);
        if (!replay) printf("f = %.17g\n", f); /* (a replay's gradient() gives no value) */
        printf("df/dtheta = %.17g\ndf/dspeed = %.17g\n", g[0], g[1]);
    }
    return 0;
}
