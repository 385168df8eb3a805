/* The projectile of bench/projectile.h recorded with nabla's ops, shared by
 * bench_scalar.c, bench_recompute.c, tests/test_recompute.c and
 * tests/test_hpp.cpp (which compares include/nabla.hpp's version with it):
 * the same 17 ops a step, in the same order, so all give the same bits. */
#ifndef NABLA_BENCH_PROJECTILE_TAPE_H
#define NABLA_BENCH_PROJECTILE_TAPE_H

#include "nabla.h"
#include "projectile.h"

/* n Euler steps of the state s = (x, y, vx, vy), in place. */
static inline void projectile_steps(nb_tape *tp, nb_tensor **s, int n) {
    nb_tensor *x = s[0], *y = s[1], *vx = s[2], *vy = s[3];
    for (int i = 0; i < n; i++) {
        nb_tensor *v = nb_sqrt(tp, nb_add(tp, nb_mul(tp, vx, vx), nb_mul(tp, vy, vy)));
        nb_tensor *kv = nb_scale(tp, v, -PROJ_K);
        nb_tensor *ax = nb_mul(tp, kv, vx), *ay = nb_add_scalar(tp, nb_mul(tp, kv, vy), -PROJ_G);
        x = nb_add(tp, x, nb_scale(tp, vx, PROJ_DT));
        y = nb_add(tp, y, nb_scale(tp, vy, PROJ_DT));
        vx = nb_add(tp, vx, nb_scale(tp, ax, PROJ_DT));
        vy = nb_add(tp, vy, nb_scale(tp, ay, PROJ_DT));
    }
    s[0] = x, s[1] = y, s[2] = vx, s[3] = vy;
}

/* f = x + y after `steps` steps from the launch (theta, speed). */
static inline nb_tensor *projectile_tape(nb_tape *tp, nb_tensor *theta, nb_tensor *speed, int steps) {
    /* statements, not an initialiser list, whose order C leaves open: the
     * tape's order, and so the order gradients add up in, is fixed */
    nb_tensor *s[4];
    s[2] = nb_mul(tp, speed, nb_cos(tp, theta));
    s[3] = nb_mul(tp, speed, nb_sin(tp, theta));
    s[0] = nb_scalar(tp, NB_F64, 0);
    s[1] = nb_scalar(tp, NB_F64, 0);
    projectile_steps(tp, s, steps);
    return nb_add(tp, s[0], s[1]);
}

#endif
