/* The projectile of bench_scalar.c and adolc_projectile.cpp (issue 23): a
 * 2-D point launched at angle theta with speed s, with quadratic drag,
 * integrated by explicit Euler; f = x + y after STEPS steps.  17 scalar ops a
 * step, written in the same order on every side so that the values agree
 * bit for bit:
 *     v  = sqrt(vx vx + vy vy)          kv = v (-K)
 *     ax = kv vx                        ay = kv vy + (-G)
 *     x += vx DT   y += vy DT           vx += ax DT   vy += ay DT       */
#ifndef NABLA_BENCH_PROJECTILE_H
#define NABLA_BENCH_PROJECTILE_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROJ_STEPS 10000
#define PROJ_DT 1e-3
#define PROJ_K 0.02  /* drag per unit mass */
#define PROJ_G 9.81
#define PROJ_THETA 0.7
#define PROJ_SPEED 20.0

/* The plain-double function, for central differences. */
static inline double projectile_f(double theta, double speed, int steps) {
    double vx = speed * cos(theta), vy = speed * sin(theta), x = 0, y = 0;
    for (int i = 0; i < steps; i++) {
        double v = sqrt(vx * vx + vy * vy);
        double kv = v * -PROJ_K;
        double ax = kv * vx, ay = kv * vy + -PROJ_G;
        x = x + vx * PROJ_DT;
        y = y + vy * PROJ_DT;
        vx = vx + ax * PROJ_DT;
        vy = vy + ay * PROJ_DT;
    }
    return x + y;
}

/* Central differences with step h relative to each argument. */
static inline void projectile_fd(double theta, double speed, int steps, double g[2]) {
    double ht = 1e-6 * theta, hs = 1e-6 * speed;
    g[0] = (projectile_f(theta + ht, speed, steps) - projectile_f(theta - ht, speed, steps)) / (2 * ht);
    g[1] = (projectile_f(theta, speed + hs, steps) - projectile_f(theta, speed - hs, steps)) / (2 * hs);
}

/* Both programs' options: --reps R (1 to 1000, else 11), --steps N (>= 1,
 * else PROJ_STEPS), --csv.  false (the usage printed) on anything else. */
static inline bool projectile_options(int argc, char **argv, const char *prog, int *reps, int *steps, bool *csv) {
    *reps = 11, *steps = PROJ_STEPS, *csv = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) *reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) *steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv")) *csv = true;
        else {
            fprintf(stderr, "usage: %s [--reps R] [--steps N] [--csv]\n", prog);
            return false;
        }
    }
    if (*reps < 1 || *reps > 1000) *reps = 11;
    if (*steps < 1) *steps = PROJ_STEPS;
    return true;
}

#endif
