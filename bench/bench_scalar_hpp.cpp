// bench_scalar's projectile written with include/nabla.hpp (x = x + vx * dt
// instead of nb_add(tp, x, nb_scale(tp, vx, dt))): the same ops recorded in
// the same order, so the same gradient bits; timed as bench_scalar times
// the C version (reset, record, backward; thread CPU time, median of R
// runs on a warm tape), to show what the layer costs.
//
//   bench_scalar_hpp [--reps R] [--steps N] [--csv]
// --csv prints one line: nabla.hpp,ms per gradient,ns per op,ops,df/dtheta,df/ds
#include "bench_common.h"
#include "nabla.hpp"
#include "projectile.h"

#include <algorithm>
#include <cstdio>
#include <vector>

static nb::tensor projectile(const nb::tensor &theta, const nb::tensor &speed, int steps) {
    nb::tensor vx = speed * cos(theta), vy = speed * sin(theta);
    nb::tensor x = nb::scalar(0), y = nb::scalar(0);
    for (int i = 0; i < steps; i++) {
        nb::tensor v = sqrt(vx * vx + vy * vy);
        nb::tensor kv = v * -PROJ_K;
        nb::tensor ax = kv * vx, ay = kv * vy - PROJ_G;
        x = x + vx * PROJ_DT;
        y = y + vy * PROJ_DT;
        vx = vx + ax * PROJ_DT;
        vy = vy + ay * PROJ_DT;
    }
    return x + y;
}

int main(int argc, char **argv) {
    int reps, steps;
    bool csv;
    if (!projectile_options(argc, argv, "bench_scalar_hpp", &reps, &steps, &csv)) return 2;
    nb::tape tp;
    nb::use_tape on(tp);
    nb::parameter theta = nb::parameter::scalar(PROJ_THETA), speed = nb::parameter::scalar(PROJ_SPEED);
    std::vector<double> ms(static_cast<size_t>(reps));
    double f = 0, g[2] = {0, 0};
    size_t ops = 0;
    for (int r = -2; r < reps; r++) { // two warm-up runs, as bench_scalar
        tp.reset();
        theta.zero_grad();
        speed.zero_grad();
        double t0 = thread_cpu_seconds();
        nb::tensor out = projectile(theta, speed, steps);
        nb::backward(out);
        double t1 = thread_cpu_seconds();
        if (r >= 0) ms[static_cast<size_t>(r)] = (t1 - t0) * 1e3;
        f = out.item();
        g[0] = theta.grad();
        g[1] = speed.grad();
        ops = tp.size();
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[static_cast<size_t>(reps / 2)];
    if (f != projectile_f(PROJ_THETA, PROJ_SPEED, steps)) {
        std::fprintf(stderr, "bench_scalar_hpp: f = %.17g, not the plain doubles' value\n", f);
        return 1;
    }
    if (csv)
        std::printf("nabla.hpp,%.6f,%.3f,%zu,%.17g,%.17g\n", med, med * 1e6 / static_cast<double>(ops), ops, g[0],
                    g[1]);
    else
        std::printf("Projectile through nabla.hpp, %d steps, %zu ops: %.3f ms per gradient, %.1f ns per op; "
                    "df/dtheta = %.17g, df/dspeed = %.17g\n", steps, ops, med, med * 1e6 / static_cast<double>(ops),
                    g[0], g[1]);
    return 0;
}
