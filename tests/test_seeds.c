/*
 * The worked examples of the seed articles (../shared/seeds), recomputed
 * through nabla.  Expected values are worked out by hand in the comments.
 */
#include "support.h"

#include <math.h>

/* Seed 003, case 1: y = x^2 + 3, dy/dx = 2x, learning rate 0.1, x = 5.
 *   y = 25 + 3 = 28;  x <- 5 - 0.1 * (2 * 5) = 4;  y = 16 + 3 = 19.
 * Each step multiplies x by (1 - 0.1 * 2) = 0.8, so x_k = 5 * 0.8^k. */
static double gd_step(nb_tape *tp, nb_tensor *x, double lr, double *grad) {
    nb_tape_reset(tp);
    nb_zero_grad(x);
    nb_tensor *y = nb_add_scalar(tp, nb_square(tp, x), 3.0);
    assert_int_equal(nb_backward(y), NB_OK);
    *grad = nb_grad_get(x, 0);
    double before = nb_item(y);
    nb_set(x, 0, nb_item(x) - lr * *grad);
    return before;
}

static void test_gradient_descent_from_5(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 5.0);
    nb_requires_grad(x, true);
    double grad;
    assert_close(gd_step(tp, x, 0.1, &grad), 28.0, 1e-12);
    assert_close(grad, 10.0, 1e-12);
    assert_close(nb_item(x), 4.0, 1e-12);
    assert_close(gd_step(tp, x, 0.1, &grad), 19.0, 1e-12);
    assert_close(grad, 8.0, 1e-12);
    for (int k = 2; k < 20; k++) {
        assert_close(nb_item(x), 5.0 * pow(0.8, k), 1e-12);
        gd_step(tp, x, 0.1, &grad);
    }
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Case 2: x = -6, y = 36 + 3 = 39;  x <- -6 - 0.1 * (-12) = -4.8;
 * y = 23.04 + 3 = 26.04 (the article rounds to 26). */
static void test_gradient_descent_from_minus_6(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F32, -6.0);
    nb_requires_grad(x, true);
    double grad;
    assert_close(gd_step(tp, x, 0.1, &grad), 39.0, 1e-5);
    assert_close(grad, -12.0, 1e-5);
    assert_close(nb_item(x), -4.8, 1e-5);
    assert_close(gd_step(tp, x, 0.1, &grad), 26.04, 1e-4);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Seed 004: three layers of three nodes, X = W . I and O = sigmoid(X).
 *   X_hidden = W_ih . I = [0.9*0.9 + 0.3*0.1 + 0.4*0.8,   = [1.16,
 *                          0.2*0.9 + 0.8*0.1 + 0.2*0.8,      0.42,
 *                          0.1*0.9 + 0.5*0.1 + 0.6*0.8]      0.62]
 *   O_hidden = sigmoid(X_hidden) = [0.76133, 0.60348, 0.65022]
 *   X_output = W_ho . O_hidden
 *            = [0.3*0.76133 + 0.7*0.60348 + 0.5*0.65022,  = [0.97595,
 *               0.6*0.76133 + 0.5*0.60348 + 0.2*0.65022,     0.88858,
 *               0.8*0.76133 + 0.1*0.60348 + 0.9*0.65022]     1.25461]
 *   O_output = sigmoid(X_output) = [0.72630, 0.70860, 0.77810]
 * (the article prints 0.726, 0.708, 0.778). */
static void test_three_layer_forward(void **state) {
    (void)state;
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tape *tp = nb_tape_new();
        nb_tensor *I = nb_from_array(tp, dt, NB_SHAPE(3, 1), ((double[]){0.9, 0.1, 0.8}));
        nb_tensor *W_ih = nb_from_array(
            tp, dt, NB_SHAPE(3, 3), ((double[]){0.9, 0.3, 0.4, 0.2, 0.8, 0.2, 0.1, 0.5, 0.6}));
        nb_tensor *W_ho = nb_from_array(
            tp, dt, NB_SHAPE(3, 3), ((double[]){0.3, 0.7, 0.5, 0.6, 0.5, 0.2, 0.8, 0.1, 0.9}));
        nb_tensor *X_hidden = nb_matmul(tp, W_ih, I);
        nb_tensor *O_hidden = nb_sigmoid(tp, X_hidden);
        nb_tensor *X_output = nb_matmul(tp, W_ho, O_hidden);
        nb_tensor *O_output = nb_sigmoid(tp, X_output);
        assert_ok(O_output);
        const double xh[3] = {1.16, 0.42, 0.62}, oh[3] = {0.76133, 0.60348, 0.65022};
        const double xo[3] = {0.97595, 0.88858, 1.25461}, oo[3] = {0.72630, 0.70860, 0.77810};
        for (size_t i = 0; i < 3; i++) {
            assert_close(nb_get(X_hidden, i), xh[i], 1e-5);
            assert_close(nb_get(O_hidden, i), oh[i], 1e-5);
            assert_close(nb_get(X_output, i), xo[i], 1e-5);
            assert_close(nb_get(O_output, i), oo[i], 1e-5);
        }
        nb_tape_free(tp);
    }
}

/* Seed 002: f(x, y) = x^2 sin(y), so df/dx = 2x sin(y) and df/dy = x^2 cos(y).
 * At (2, pi/6): f = 4 * 0.5 = 2, df/dx = 2*2*0.5 = 2, df/dy = 4 * (sqrt(3)/2) = 3.4641016. */
static nb_tensor *x2_sin_y(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    return nb_mul(tp, nb_square(tp, in[0]), nb_sin(tp, in[1]));
}

static nb_tensor *sum_x2_sin_y(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    return nb_sum(tp, x2_sin_y(tp, in, n, user));
}

static void test_partial_derivatives(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 2.0), *y = nb_scalar(NULL, NB_F64, M_PI / 6);
    nb_requires_grad(x, true);
    nb_requires_grad(y, true);
    nb_tensor *in[2] = {x, y};
    nb_tensor *f = x2_sin_y(tp, in, 2, NULL);
    assert_close(nb_item(f), 2.0, 1e-12);
    assert_int_equal(nb_backward(f), NB_OK);
    assert_close(nb_grad_get(x, 0), 2.0, 1e-12);
    assert_close(nb_grad_get(y, 0), 2.0 * sqrt(3.0), 1e-12);
    /* And at many points, against finite differences. */
    nb_rng rng;
    nb_rng_seed(&rng, 2);
    nb_tensor *xs = random_input(&rng, NB_SHAPE(5), -3, 3, false);
    nb_tensor *ys = random_input(&rng, NB_SHAPE(5), -3, 3, false);
    nb_tensor *many[2] = {xs, ys};
    assert_gradcheck(sum_x2_sin_y, many, 2, NULL);
    nb_tensor_free(xs);
    nb_tensor_free(ys);
    nb_tensor_free(x);
    nb_tensor_free(y);
    nb_tape_free(tp);
}

/* Seed 003: logistic regression with one sigmoid neuron on m examples of n
 * features, in the seeds' layout: X (n, m), W (1, n), b (1, 1), y (1, m).
 *   a = sigmoid(W X + b),  C = -(1/m) sum [y log a + (1 - y) log(1 - a)]
 * Its closed-form gradients, computed here with plain loops:
 *   dC/dW = (a - y) X^T / m,   dC/db = mean(a - y). */
static void test_logistic_regression_gradients(void **state) {
    (void)state;
    enum { N = 4, M = 7 };
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    for (int use_logits = 0; use_logits <= 1; use_logits++) {
        nb_tape *tp = nb_tape_new();
        nb_tensor *X = nb_rand_normal(tp, &rng, NB_F64, NB_SHAPE(N, M), 0, 1);
        nb_tensor *y = nb_zeros(tp, NB_F64, NB_SHAPE(1, M));
        for (size_t j = 0; j < M; j++) nb_set(y, j, nb_rng_uniform(&rng) < 0.5);
        nb_tensor *W = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(1, N), 0, 0.5);
        nb_tensor *b = nb_full(NULL, NB_F64, NB_SHAPE(1, 1), 0.1);
        nb_requires_grad(W, true);
        nb_requires_grad(b, true);
        nb_tensor *z = nb_add(tp, nb_matmul(tp, W, X), b);
        nb_tensor *a = nb_sigmoid(tp, z);
        nb_tensor *C = use_logits ? nb_bce_logits(tp, z, y) : nb_bce(tp, a, y);
        assert_int_equal(nb_backward(C), NB_OK);

        double expected_cost = 0, db = 0, dW[N] = {0};
        for (size_t j = 0; j < M; j++) {
            double aj = nb_get(a, j), yj = nb_get(y, j);
            expected_cost -= (yj * log(aj) + (1 - yj) * log(1 - aj)) / M;
            db += (aj - yj) / M;
            for (size_t i = 0; i < N; i++) dW[i] += (aj - yj) * nb_get(X, i * M + j) / M;
        }
        assert_close(nb_item(C), expected_cost, 1e-12);
        assert_close(nb_grad_get(b, 0), db, 1e-12);
        for (size_t i = 0; i < N; i++) assert_close(nb_grad_get(W, i), dW[i], 1e-12);
        nb_tensor_free(W);
        nb_tensor_free(b);
        nb_tape_free(tp);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient_descent_from_5),
        cmocka_unit_test(test_gradient_descent_from_minus_6),
        cmocka_unit_test(test_three_layer_forward),
        cmocka_unit_test(test_partial_derivatives),
        cmocka_unit_test(test_logistic_regression_gradients),
    };
    return cmocka_run_group_tests_name("seeds", tests, NULL, NULL);
}
