/*
 * Newton's method next to gradient descent: what the second derivative buys.
 *
 * Seed 003 walks down y = x² + 3 by gradient descent, x <- x - 0.1 y'(x):
 * from 5 to 4, 3.2, 2.56, ... approaching the minimum at 0 by a fifth each
 * step.  Newton's method divides by the curvature instead of a learning
 * rate, x <- x - y'(x) / y''(x), and since y'' = 2 everywhere it lands on
 * 5 - 10/2 = 0 in one step.  nabla computes y'' by differentiating the
 * gradient, which nb_grad records as ops (create_graph).
 *
 * Then the logistic regression of the heart-style data (examples/logreg):
 * gradient descent with the lesson's learning rate needs hundreds of steps;
 * Newton's method, w <- w - H⁻¹ g with the Hessian from nb_hessian, a
 * handful.  Both are printed side by side.
 *
 * --dot and --html draw the gradient's own graph: y = x² + 3, then the ops
 * that compute dy/dx, then the backward pass through them that gives d²y/dx².
 */
#include "cli.h"
#include "heart.h"

#include <math.h>

static const char usage[] =
    "usage: newton [--steps N] [--dot FILE] [--html FILE]\n"
    "Newton's method beside gradient descent, on y = x^2 + 3 and on logistic regression.\n"
    "  --steps N   Newton steps on the logistic regression (default 8)\n"
    "  --dot FILE  write the graph of y = x^2 + 3 and of its derivative as Graphviz dot\n"
    "  --html FILE write a page that steps through the backward pass of dy/dx (giving d2y/dx2)\n";

/* ---------------------------------------------------------------- y = x² + 3 */

static int parabola(const char *dot, const char *html) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *gd = nb_scalar(NULL, NB_F64, 5), *nx = nb_scalar(NULL, NB_F64, 5);
    nb_requires_grad(gd, true);
    nb_requires_grad(nx, true);
    printf("y = x^2 + 3 from x = 5\n%5s | %18s | %26s\n", "step", "gradient descent x", "Newton x (y'' from nb_grad)");
    int status = 0;
    for (int step = 0; step <= 4 && !status; step++) {
        printf("%5d | %18.6f | %26.6f\n", step, nb_item(gd), nb_item(nx));
        /* gradient descent, learning rate 0.1 */
        nb_tape_reset(tp);
        nb_tensor *y = nb_add_scalar(tp, nb_square(tp, gd), 3), *g, *h;
        if (nb_grad(y, &gd, 1, &g, false) != NB_OK) status = 1;
        double step_gd = 0.1 * nb_item(g);
        /* Newton: y' recorded as ops, then differentiated again for y'' */
        nb_tape_reset(tp);
        y = nb_add_scalar(tp, nb_square(tp, nx), 3);
        if (nb_grad(y, &nx, 1, &g, true) != NB_OK || nb_grad(g, &nx, 1, &h, false) != NB_OK) status = 1;
        double step_newton = nb_item(g) / nb_item(h);
        nb_set(gd, 0, nb_item(gd) - step_gd);
        nb_set(nx, 0, nb_item(nx) - step_newton);
    }
    if (!status && (dot || html)) { /* the derivative is a graph too */
        nb_tape_reset(tp);
        nb_set(nx, 0, 5);
        nb_tensor_set_name(nx, "x");
        nb_tensor *sq = nb_square(tp, nx), *y = nb_add_scalar(tp, sq, 3), *g;
        nb_tensor_set_name(sq, "x²");
        nb_tensor_set_name(y, "y");
        nb_scope_begin(tp, "dy/dx, recorded by nb_grad");
        if (nb_grad(y, &nx, 1, &g, true) != NB_OK) status = 1;
        nb_scope_end(tp);
        nb_tensor_set_name(g, "y′"); /* y′ = dy/dx, a tensor like any other */
        /* nb_grad's ops come unnamed; walk back from y′ and name the product
         * square's backward made as a class writes it: y′ = 2x · 1 (the
         * seed, dy/dy = 1) */
        for (int k = 0; k < nb_tensor_n_inputs(g); k++)
            if (!strcmp(nb_tensor_op(nb_tensor_input(g, k)), "scale")) nb_tensor_set_name(nb_tensor_input(g, k), "2x");
        nb_tape_set_explain(tp, true);
        if (!status && nb_backward(g) != NB_OK) status = 1; /* d²y/dx² = 2, on the edges */
        nb_dot_opts o;
        nb_dot_default_opts(&o);
        o.clusters = true;
        o.title = "y = x² + 3 at x = 5 and the ops that compute y′ = dy/dx = 2x; backward through them gives "
                  "d²y/dx² = 2";
        if (status) fprintf(stderr, "newton: %s\n", nb_last_error());
        else status = write_pictures(tp, g, &o, dot, html);
    }
    nb_tensor_free(gd);
    nb_tensor_free(nx);
    nb_tape_free(tp);
    return status;
}

/* ---------------------------------------------------------------- logistic regression */

/* Mean cross-entropy of the logits X θ (X with a column of ones for the
 * bias) against y. */
static nb_tensor *loss(nb_tape *tp, nb_tensor *X, nb_tensor *y, nb_tensor *theta) {
    return nb_bce_logits(tp, nb_matmul(tp, X, theta), y);
}

/* Solves H d = g (n unknowns) by Gaussian elimination with partial
 * pivoting; false if H is singular. */
static bool solve(double *H, double *g, size_t n) {
    for (size_t c = 0; c < n; c++) {
        size_t p = c;
        for (size_t r = c + 1; r < n; r++)
            if (fabs(H[r * n + c]) > fabs(H[p * n + c])) p = r;
        if (fabs(H[p * n + c]) < 1e-300) return false;
        for (size_t k = 0; k < n; k++) {
            double t = H[c * n + k];
            H[c * n + k] = H[p * n + k];
            H[p * n + k] = t;
        }
        double t = g[c];
        g[c] = g[p];
        g[p] = t;
        for (size_t r = c + 1; r < n; r++) {
            double f = H[r * n + c] / H[c * n + c];
            for (size_t k = c; k < n; k++) H[r * n + k] -= f * H[c * n + k];
            g[r] -= f * g[c];
        }
    }
    for (size_t c = n; c-- > 0;) {
        for (size_t k = c + 1; k < n; k++) g[c] -= H[c * n + k] * g[k];
        g[c] /= H[c * n + c];
    }
    return true;
}

static int logistic(long newton_steps) {
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    nb_dataset data = {0};
    generate_heart_like(&rng, &data);
    if (nb_standardize(data.X, NULL, 0) != NB_OK) {
        fprintf(stderr, "newton: %s\n", nb_last_error());
        nb_dataset_free(&data);
        return 1;
    }
    size_t m = data.rows, n = data.features + 1;
    nb_tensor *X = nb_ones(NULL, NB_F64, NB_SHAPE(m, n)), *y = nb_zeros(NULL, NB_F64, NB_SHAPE(m, 1));
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j + 1 < n; j++) nb_set(X, i * n + j, nb_get(data.X, i * (n - 1) + j));
        nb_set(y, i, nb_get(data.y, i));
    }
    nb_dataset_free(&data);
    nb_tensor *gd = nb_zeros(NULL, NB_F64, NB_SHAPE(n, 1)), *nt = nb_zeros(NULL, NB_F64, NB_SHAPE(n, 1));
    nb_requires_grad(gd, true);
    nb_requires_grad(nt, true);
    nb_tape *tp = nb_tape_new();
    double *H = malloc(n * n * sizeof *H), *g = malloc(n * sizeof *g), newton_loss[64] = {0};
    int status = 0;
    /* Newton's steps first, to know where they end */
    for (long k = 0; k <= newton_steps && !status; k++) {
        nb_tape_reset(tp);
        nb_tensor *L = loss(tp, X, y, nt), *grad;
        newton_loss[k] = nb_item(L);
        if (k == newton_steps) break;
        nb_tensor *Hess = nb_hessian(L, nt);
        if (nb_tensor_status(Hess) != NB_OK || nb_grad(L, &nt, 1, &grad, false) != NB_OK) {
            status = 1;
            break;
        }
        for (size_t i = 0; i < n * n; i++) H[i] = nb_get(Hess, i);
        for (size_t i = 0; i < n; i++) g[i] = nb_get(grad, i);
        if (!solve(H, g, n)) {
            fprintf(stderr, "newton: the Hessian is singular\n");
            status = 1;
            break;
        }
        for (size_t i = 0; i < n; i++) nb_set(nt, i, nb_get(nt, i) - g[i]);
    }
    if (!status) {
        double best = newton_loss[newton_steps];
        printf("\nlogistic regression, %zu rows, %zu weights and a bias: mean cross-entropy by step\n", m, n - 1);
        printf("%5s | %22s | %22s\n", "step", "gradient descent (0.5)", "Newton (nb_hessian)");
        long reached = -1;
        for (long k = 0; k <= 5000; k++) {
            nb_tape_reset(tp);
            nb_tensor *L = loss(tp, X, y, gd), *grad;
            double l = nb_item(L);
            if (reached < 0 && l - best < 1e-6) reached = k;
            if (k <= newton_steps) printf("%5ld | %22.8f | %22.8f\n", k, l, newton_loss[k]);
            if (nb_grad(L, &gd, 1, &grad, false) != NB_OK) {
                status = 1;
                break;
            }
            for (size_t i = 0; i < n; i++) nb_set(gd, i, nb_get(gd, i) - 0.5 * nb_get(grad, i));
        }
        if (reached >= 0)
            printf("gradient descent comes within 1e-6 of Newton's step-%ld loss after %ld steps\n", newton_steps,
                   reached);
        else
            printf("gradient descent is still more than 1e-6 above Newton's step-%ld loss after 5000 steps\n",
                   newton_steps);
    }
    if (status) fprintf(stderr, "newton: %s\n", nb_last_error());
    free(H);
    free(g);
    nb_tape_free(tp);
    nb_tensor *all[4] = {X, y, gd, nt};
    for (int k = 0; k < 4; k++) nb_tensor_free(all[k]);
    return status;
}

int main(int argc, char **argv) {
    long steps = 8;
    const char *dot = NULL, *html = NULL;
    cli c = cli_start(argc, argv, usage);
    while (cli_next(&c) && !c.failed) {
        if (cli_help(&c)) return 0;
        else if (cli_is(&c, "--steps")) steps = cli_long(&c, 1, 60);
        else if (cli_is(&c, "--dot")) dot = cli_value(&c);
        else if (cli_is(&c, "--html")) html = cli_value(&c);
        else cli_unknown(&c);
    }
    if (c.failed) return 2;
    if (parabola(dot, html)) return 1;
    return logistic(steps);
}
