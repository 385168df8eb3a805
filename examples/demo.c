/*
 * nabla's demo: a two-layer network composed from ops, trained by plain
 * gradient descent on a generated data set (two interleaving half-moons),
 * checked against finite differences, and drawn as a graph.
 *
 *   build/examples/demo [--out DIR] [--steps N] [--lr RATE] [--hidden H] [--seed S]
 */
#include "nabla.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    nb_tensor *W1, *b1, *W2, *b2;
} model;

/* m points of two half-moons in the plane, label 0 or 1, with noise. */
static void make_moons(nb_rng *rng, size_t m, nb_tensor *X, nb_tensor *y) {
    const double pi = 3.14159265358979323846;
    for (size_t i = 0; i < m; i++) {
        int label = (int)(i % 2);
        double t = pi * nb_rng_uniform(rng);
        double px = label ? 1 - cos(t) : cos(t), py = label ? 0.5 - sin(t) : sin(t);
        nb_set(X, 2 * i, px + 0.1 * nb_rng_normal(rng));
        nb_set(X, 2 * i + 1, py + 0.1 * nb_rng_normal(rng));
        nb_set(y, i, label);
    }
}

/* The network, written with ops: Z1 = X W1 + b1, A1 = tanh(Z1),
 * Z2 = A1 W2 + b2 (a logit per example), loss = BCE from logits. */
static nb_tensor *forward(nb_tape *tp, nb_tensor *const *p, nb_tensor *X, nb_tensor *y,
                          nb_tensor **logits) {
    nb_tensor *Z1 = nb_add(tp, nb_matmul(tp, X, p[0]), p[1]);
    nb_tensor *A1 = nb_tanh(tp, Z1);
    nb_tensor *Z2 = nb_add(tp, nb_matmul(tp, A1, p[2]), p[3]);
    nb_tensor *loss = nb_bce_logits(tp, Z2, y);
    nb_tensor_set_name(Z1, "Z1");
    nb_tensor_set_name(A1, "A1");
    nb_tensor_set_name(Z2, "Z2 (logits)");
    nb_tensor_set_name(loss, "loss");
    if (logits) *logits = Z2;
    return loss;
}

/* For gradcheck: the same network as a function of its parameters, on a
 * fixed batch passed through `user` (cast to the parameters' dtype). */
typedef struct { nb_tensor *X, *y; } batch;

static nb_tensor *loss_of_params(nb_tape *tp, nb_tensor *const *params, int n, void *user) {
    (void)n;
    batch *b = user;
    nb_dtype dt = nb_tensor_dtype(params[0]);
    return forward(tp, params, nb_cast(tp, b->X, dt), nb_cast(tp, b->y, dt), NULL);
}

static double accuracy(const nb_tensor *logits, const nb_tensor *y) {
    size_t right = 0, m = nb_tensor_size(y);
    for (size_t i = 0; i < m; i++) right += (nb_get(logits, i) > 0) == (nb_get(y, i) > 0.5);
    return (double)right / (double)m;
}

static void usage(FILE *f) {
    fprintf(f, "usage: demo [--out DIR] [--steps N] [--lr RATE] [--hidden H] [--seed S]\n"
               "Trains a 2-H-1 network on two half-moons with gradient descent, runs a\n"
               "gradient check and writes the graph as DIR/demo.dot and DIR/demo.svg.\n");
}

int main(int argc, char **argv) {
    const char *out_dir = "build/demo";
    long steps = 600, hidden = 16;
    double lr = 0.5;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!val) {
            fprintf(stderr, "demo: %s needs a value\n", arg);
            usage(stderr);
            return 2;
        }
        errno = 0;
        if (!strcmp(arg, "--out")) out_dir = val;
        else if (!strcmp(arg, "--steps")) steps = strtol(val, &end, 10);
        else if (!strcmp(arg, "--hidden")) hidden = strtol(val, &end, 10);
        else if (!strcmp(arg, "--lr")) lr = strtod(val, &end);
        else if (!strcmp(arg, "--seed")) seed = strtoull(val, &end, 10);
        else {
            fprintf(stderr, "demo: unknown option %s\n", arg);
            usage(stderr);
            return 2;
        }
        if ((end && *end) || errno || steps < 1 || hidden < 1 || hidden > 4096 || !(lr > 0)) {
            fprintf(stderr, "demo: invalid value '%s' for %s\n", val, arg);
            return 2;
        }
        i++;
    }
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "demo: cannot create %s: %s\n", out_dir, strerror(errno));
        return 1;
    }

    /* Data: 200 training points and 200 test points. */
    enum { M = 200 };
    nb_rng rng;
    nb_rng_seed(&rng, seed);
    nb_tensor *X = nb_zeros(NULL, NB_F32, NB_SHAPE(M, 2)), *y = nb_zeros(NULL, NB_F32, NB_SHAPE(M, 1));
    nb_tensor *Xt = nb_zeros(NULL, NB_F32, NB_SHAPE(M, 2)), *yt = nb_zeros(NULL, NB_F32, NB_SHAPE(M, 1));
    make_moons(&rng, M, X, y);
    make_moons(&rng, M, Xt, yt);
    nb_tensor_set_name(X, "X");
    nb_tensor_set_name(y, "y");

    /* Parameters, initialised with Glorot-scaled normal values. */
    size_t H = (size_t)hidden;
    model m = {
        nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(2, H), 0, sqrt(2.0 / (2 + (double)H))),
        nb_zeros(NULL, NB_F32, NB_SHAPE(H)),
        nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(H, 1), 0, sqrt(2.0 / (1 + (double)H))),
        nb_zeros(NULL, NB_F32, NB_SHAPE(1)),
    };
    nb_tensor *params[4] = {m.W1, m.b1, m.W2, m.b2};
    const char *names[4] = {"W1", "b1", "W2", "b2"};
    for (int i = 0; i < 4; i++) {
        nb_tensor_set_name(params[i], names[i]);
        nb_requires_grad(params[i], true);
    }

    /* Training: reset the tape, forward, backward, step.  Once warm, a step
     * allocates nothing. */
    printf("Training a 2-%zu-1 network on %d points of two half-moons (lr %g, %ld steps)\n", H, M,
           lr, steps);
    nb_tape *tp = nb_tape_new();
    int status = 0;
    uint64_t allocs_warm = 0;
    nb_tensor *logits = NULL, *loss = NULL;
    for (long step = 0; step < steps; step++) {
        if (step == 2) allocs_warm = nb_alloc_count();
        nb_tape_reset(tp);
        nb_zero_grads(params, 4);
        loss = forward(tp, params, X, y, &logits);
        if (nb_backward(loss) != NB_OK) {
            fprintf(stderr, "demo: %s\n", nb_tape_status(tp) ? nb_tape_error(tp) : nb_last_error());
            status = 1;
            goto done;
        }
        for (int i = 0; i < 4; i++) {
            float *w = nb_tensor_data(params[i]);
            const float *g = nb_grad_data(params[i]);
            for (size_t j = 0; j < nb_tensor_size(params[i]); j++) w[j] -= (float)lr * g[j];
        }
        if (step % 50 == 0 || step == steps - 1)
            printf("  step %4ld  loss %.4f  train accuracy %.3f\n", step, nb_item(loss),
                   accuracy(logits, y));
    }
    printf("Allocations after warm-up: %llu over %ld steps\n",
           (unsigned long long)(nb_alloc_count() - allocs_warm), steps > 2 ? steps - 2 : 0);

    /* The picture: the last training step's graph, with values and gradients. */
    char dot_path[4096], svg_path[4096];
    snprintf(dot_path, sizeof dot_path, "%s/demo.dot", out_dir);
    snprintf(svg_path, sizeof svg_path, "%s/demo.svg", out_dir);
    nb_dot_opts opts;
    nb_dot_default_opts(&opts);
    opts.loss = loss;
    opts.title = "nabla demo: a 2-layer network, after the last training step";
    if (nb_dot_save(tp, dot_path, &opts) != NB_OK || nb_dot_render(dot_path, svg_path, "svg") != NB_OK) {
        fprintf(stderr, "demo: %s\n", nb_last_error());
        status = 1;
        goto done;
    }

    /* Test accuracy, without recording gradients. */
    nb_tape_reset(tp);
    nb_tape_set_grad_enabled(tp, false);
    forward(tp, params, Xt, yt, &logits);
    nb_tape_set_grad_enabled(tp, true);
    printf("Test accuracy: %.3f on %d new points\n", accuracy(logits, yt), M);

    /* Gradient check of the whole model, in float64, on a small batch. */
    batch b = {nb_zeros(NULL, NB_F32, NB_SHAPE(8, 2)), nb_zeros(NULL, NB_F32, NB_SHAPE(8, 1))};
    make_moons(&rng, 8, b.X, b.y);
    nb_gradcheck_result r = nb_gradcheck(loss_of_params, params, 4, &b, NULL);
    printf("%s\n", r.message);
    if (!r.passed) status = 1;
    nb_tensor_free(b.X);
    nb_tensor_free(b.y);

    printf("Graph written to %s and rendered to %s\n", dot_path, svg_path);
done:
    nb_tape_free(tp);
    for (int i = 0; i < 4; i++) nb_tensor_free(params[i]);
    nb_tensor_free(X);
    nb_tensor_free(y);
    nb_tensor_free(Xt);
    nb_tensor_free(yt);
    return status;
}
