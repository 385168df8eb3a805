/*
 * nabla's own threads (nb_set_threads): a network big enough for every
 * parallel path (split products, element-wise ranges, bias fills and sums)
 * gives the same loss, gradients and SGD-in-backward updates on 1, 2 and 3
 * threads; the pool can be resized and stopped; bad counts are refused.
 */
#include "support.h"
#include "internal.h"
#include "nabla_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { BATCH = 256, IN = 300, HIDDEN = 200, OUT = 10 };

typedef struct {
    double loss;
    double *grads[4];   /* W1, b1, W2, b2 after nb_backward */
    double *updated[4]; /* the same parameters after nb_optimizer_backward_step */
    double *adam[4];    /* and after a further Adam step (split for W1) */
} outcome;

static double *copy_of(const nb_tensor *t) {
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    nb_to_f64(t, v);
    return v;
}

static double *grad_of(nb_tensor *t) {
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    for (size_t i = 0; i < nb_tensor_size(t); i++) v[i] = nb_grad_get(t, i);
    return v;
}

/* Two layers, sigmoid then relu-free logits, softmax cross-entropy; the
 * transposed product (dX = G W^T) is split by columns, the others by rows. */
static outcome run(nb_dtype dt, int threads) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    assert_int_equal(nb_get_threads(), threads);
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_params *ps = nb_params_new();
    nb_tensor *p[4] = {
        nb_params_create(ps, "W1", dt, NB_SHAPE(IN, HIDDEN), NB_INIT_GLOROT_UNIFORM, IN, HIDDEN, &rng),
        nb_params_create(ps, "b1", dt, NB_SHAPE(HIDDEN), NB_INIT_GLOROT_UNIFORM, HIDDEN, 1, &rng),
        nb_params_create(ps, "W2", dt, NB_SHAPE(HIDDEN, OUT), NB_INIT_GLOROT_UNIFORM, HIDDEN, OUT, &rng),
        nb_params_create(ps, "b2", dt, NB_SHAPE(OUT), NB_INIT_ZEROS, HIDDEN, OUT, &rng),
    };
    nb_tensor *X = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(BATCH, IN), 0, 1);
    nb_requires_grad(X, true); /* so that dX = G W1^T runs too */
    nb_tensor *y = nb_zeros(NULL, dt, NB_SHAPE(BATCH));
    for (size_t i = 0; i < BATCH; i++) nb_set(y, i, (double)(i % OUT));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_SGD);
    o.lr = 0.5;
    nb_optimizer *sgd = nb_optimizer_new(ps, &o);
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    nb_optimizer *adam = nb_optimizer_new(ps, &o);
    nb_tape *tp = nb_tape_new();
    outcome out;
    for (int pass = 0; pass < 3; pass++) {
        nb_tape_reset(tp);
        nb_params_zero_grad(ps);
        nb_tensor *h = nb_sigmoid(tp, nb_linear(tp, X, p[0], p[1]));
        nb_tensor *loss = nb_softmax_cross_entropy(tp, nb_linear(tp, h, p[2], p[3]), y, 1);
        if (pass == 0) {
            assert_int_equal(nb_backward(loss), NB_OK);
            out.loss = nb_item(loss);
            for (int k = 0; k < 4; k++) out.grads[k] = grad_of(p[k]);
        } else if (pass == 1) {
            assert_int_equal(nb_optimizer_backward_step(sgd, loss), NB_OK);
            for (int k = 0; k < 4; k++) out.updated[k] = copy_of(p[k]);
        } else {
            assert_int_equal(nb_backward(loss), NB_OK);
            assert_int_equal(nb_optimizer_step(adam), NB_OK);
            for (int k = 0; k < 4; k++) out.adam[k] = copy_of(p[k]);
        }
    }
    nb_tape_free(tp);
    nb_optimizer_free(sgd);
    nb_optimizer_free(adam);
    nb_params_free(ps);
    nb_tensor_free(X);
    nb_tensor_free(y);
    return out;
}

static void free_outcome(outcome *o) {
    for (int k = 0; k < 4; k++) {
        free(o->grads[k]);
        free(o->updated[k]);
        free(o->adam[k]);
    }
}

static const size_t sizes[4] = {IN * HIDDEN, HIDDEN, HIDDEN * OUT, OUT};

static double worst_difference(double *const *a, double *const *b) {
    double worst = 0;
    for (int k = 0; k < 4; k++)
        for (size_t i = 0; i < sizes[k]; i++) {
            double d = fabs(a[k][i] - b[k][i]) / (1e-3 + fabs(a[k][i]));
            if (d > worst) worst = d;
        }
    return worst;
}

static void test_results_do_not_depend_on_threads(void **state) {
    (void)state;
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        outcome one = run(dt, 1);
        for (int threads = 2; threads <= 3; threads++) {
            uint64_t split_before = nb_parallel_jobs();
            outcome many = run(dt, threads);
            /* Split in each of the three passes: the first layer's bias fill,
             * product, sigmoid forward and backward, dW1, dX and bias sum (the
             * second layer's, 10 wide, is too small to split); and Adam's
             * update of W1 (60,000 values). */
            assert_int_equal(nb_parallel_jobs() - split_before, 3 * 7 + 1);
            double tol = dt == NB_F32 ? 1e-5 : 1e-12;
            double dg = worst_difference(one.grads, many.grads), du = worst_difference(one.updated, many.updated);
            double da = worst_difference(one.adam, many.adam);
            print_message("%s, %d threads: loss %.9g vs %.9g, gradients within %.2g, updates within %.2g, %.2g\n",
                          dt == NB_F32 ? "float32" : "float64", threads, many.loss, one.loss, dg, du, da);
            assert_close(many.loss, one.loss, tol * fabs(one.loss));
            assert_true(dg <= tol);
            assert_true(du <= tol);
            assert_true(da <= tol);
            free_outcome(&many);
        }
        free_outcome(&one);
    }
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* A child made by fork() runs its ops on its own thread, without waiting
 * for workers it does not have. */
static void test_fork_child_runs_serially(void **state) {
    (void)state;
    assert_int_equal(nb_set_threads(2), NB_OK);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        /* Without the fork handler this would wait for ever for a worker the
         * child does not have; the alarm turns that into a failure. */
        alarm(20);
        nb_tape *tp = nb_tape_new();
        nb_tensor *a = nb_ones(tp, NB_F32, NB_SHAPE(256, 300)), *b = nb_ones(tp, NB_F32, NB_SHAPE(300, 200));
        nb_tensor *y = nb_sum(tp, nb_sigmoid(tp, nb_matmul(tp, a, b)));
        int ok = nb_get_threads() == 1 && fabs(nb_item(y) - 256 * 200 / (1 + exp(-300.0))) < 1;
        nb_tape_free(tp);
        _exit(ok ? 0 : 3);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

static void test_bad_thread_counts(void **state) {
    (void)state;
    assert_int_equal(nb_set_threads(0), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "nb_set_threads", "0 threads", "1 to 64");
    assert_int_equal(nb_set_threads(65), NB_ERR_ARG);
    assert_int_equal(nb_get_threads(), 1);
    /* Resizing a running pool, then back to one thread, stops cleanly. */
    assert_int_equal(nb_set_threads(4), NB_OK);
    assert_int_equal(nb_set_threads(2), NB_OK);
    assert_int_equal(nb_get_threads(), 2);
    assert_int_equal(nb_set_threads(1), NB_OK);
    assert_int_equal(nb_get_threads(), 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_results_do_not_depend_on_threads),
        cmocka_unit_test(test_fork_child_runs_serially),
        cmocka_unit_test(test_bad_thread_counts),
    };
    return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
