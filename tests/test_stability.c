/*
 * Numerical stability at extreme values, and anomaly mode finding the op
 * that first makes a NaN or an infinity.
 */
#include "support.h"

#include "ops/expf.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* At inputs of +-1e4, in both dtypes, every activation, softmax and loss is
 * finite forward and backward (anomaly mode would error the tape on any NaN
 * or infinity), and the gradients are the closed forms' values. */
static void test_extremes_are_finite(void **state) {
    (void)state;
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tape *tp = nb_tape_new();
        nb_tape_set_anomaly_mode(tp, true);
        nb_tensor *z = nb_from_array(NULL, dt, NB_SHAPE(2, 2), ((double[]){1e4, -1e4, -1e4, 1e4}));
        nb_requires_grad(z, true);
        nb_tensor *t = nb_from_array(tp, dt, NB_SHAPE(2, 2), ((double[]){1, 0, 1, 0}));
        nb_tensor *cls = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){1, 0}));
        nb_tensor *parts[] = {
            nb_sum(tp, nb_sigmoid(tp, z)),
            nb_sum(tp, nb_tanh(tp, z)),
            nb_sum(tp, nb_mul(tp, nb_softmax(tp, z, 1), t)),
            nb_sum(tp, nb_mul(tp, nb_log_softmax(tp, z, 1), t)),
            nb_bce_logits(tp, z, t),
            nb_softmax_cross_entropy(tp, z, cls, 1),
            nb_softmax_cross_entropy(tp, z, t, 0),
            nb_bce(tp, nb_sigmoid(tp, z), t),
        };
        nb_tensor *total = parts[0];
        for (size_t i = 1; i < sizeof parts / sizeof *parts; i++) total = nb_add(tp, total, parts[i]);
        assert_int_equal(nb_tape_status(tp), NB_OK);
        assert_true(isfinite(nb_item(total)));
        assert_int_equal(nb_backward(total), NB_OK);
        for (size_t i = 0; i < 4; i++) assert_true(isfinite(nb_grad_get(z, i)));
        nb_tape_free(tp);

        /* The closed forms, one loss at a time: bce_logits' = (sigmoid(z) - t)/N,
         * so (1 - 1)/4, (0 - 0)/4, (0 - 1)/4, (1 - 0)/4. */
        tp = nb_tape_new();
        nb_zero_grad(z);
        t = nb_from_array(tp, dt, NB_SHAPE(2, 2), ((double[]){1, 0, 1, 0}));
        assert_int_equal(nb_backward(nb_bce_logits(tp, z, t)), NB_OK);
        const double expected[4] = {0, 0, -0.25, 0.25};
        for (size_t i = 0; i < 4; i++) assert_close(nb_grad_get(z, i), expected[i], 0);
        /* sigmoid and tanh saturate to a zero gradient. */
        nb_zero_grad(z);
        assert_int_equal(nb_backward(nb_sum(tp, nb_add(tp, nb_sigmoid(tp, z), nb_tanh(tp, z)))), NB_OK);
        for (size_t i = 0; i < 4; i++) assert_close(nb_grad_get(z, i), 0, 0);
        nb_tape_free(tp);
        nb_tensor_free(z);
    }
}

/* log(0) is -inf; through a clamp it is finite, with a zero gradient. */
static void test_log_of_zero(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *p = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0, 0.5, 1}));
    nb_requires_grad(p, true);
    nb_tensor *raw = nb_log(tp, p);
    assert_true(isinf(nb_get(raw, 0)) && nb_get(raw, 0) < 0);
    nb_tensor *safe = nb_log(tp, nb_clamp(tp, p, 1e-12, 1));
    assert_close(nb_get(safe, 0), log(1e-12), 1e-12);
    assert_close(nb_get(safe, 1), log(0.5), 1e-15);
    assert_int_equal(nb_backward(nb_sum(tp, safe)), NB_OK);
    /* d log(clamp(p))/dp = 1/p inside (2 at 0.5), 0 where clamped; at p = 1,
     * on the upper bound, clamp passes the gradient as PyTorch does
     * (torch.log(torch.clamp(p, 1e-12, 1)).sum().backward() gives 0, 2, 1). */
    assert_close(nb_grad_get(p, 0), 0, 0);
    assert_close(nb_grad_get(p, 1), 2, 1e-15);
    assert_close(nb_grad_get(p, 2), 1, 0);
    assert_int_equal(nb_tensor_status(nb_clamp(tp, p, 1, 0)), NB_ERR_ARG);
    nb_tape_free(tp);
    nb_tensor_free(p);
}

static void test_anomaly_names_the_op(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *p = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){0.5, 0, 2}));
    /* Without anomaly mode a -inf passes on silently. */
    assert_true(isinf(nb_item(nb_sum(tp, nb_log(tp, p)))));
    assert_int_equal(nb_tape_status(tp), NB_OK);

    nb_tape_reset(tp);
    nb_tape_set_anomaly_mode(tp, true);
    p = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){0.5, 0, 2}));
    nb_tensor *h = nb_exp(tp, p);
    char site[64];
    snprintf(site, sizeof site, "test_stability.c:%d", __LINE__ + 1);
    nb_tensor *l = nb_log(tp, nb_sub(tp, h, nb_ones(tp, NB_F64, NB_SHAPE(3))));
    assert_int_equal(nb_tensor_status(l), NB_ERR_VALUE);
    /* exp(0) - 1 = 0, whose log is -inf: the log is the culprit, at element 1 */
    assert_message_has(nb_tape_error(tp), "anomaly: log produced -inf at element 1 of its (3,) result",
                       "input 1 (3,): min 0", site);

    /* A NaN that comes from outside the tape is named as such. */
    nb_tape_reset(tp);
    nb_tensor *x = nb_from_array(NULL, NB_F32, NB_SHAPE(3), ((double[]){1, 2, NAN}));
    nb_tensor_set_name(x, "x");
    nb_tensor *y = nb_add(tp, x, nb_ones(tp, NB_F32, NB_SHAPE(3)));
    assert_int_equal(nb_tensor_status(y), NB_ERR_VALUE);
    assert_message_has(nb_tape_error(tp), "input 1 of add ('x', a tensor from outside the tape, shape (3,)) holds nan at element 2");
    nb_tensor_free(x);

    /* In backward: sqrt(x) = x^0.5 is 0 at 0, but its derivative there is
     * 0.5 / sqrt(0) = inf. */
    nb_tape_reset(tp);
    nb_tensor *w = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){4, 0}));
    nb_requires_grad(w, true);
    nb_tensor *root = nb_pow(tp, w, 0.5);
    assert_ok(root);
    assert_int_equal(nb_backward(nb_sum(tp, root)), NB_ERR_VALUE);
    assert_message_has(nb_tape_error(tp), "anomaly: the backward of pow made the gradient of input 1 inf at element 1");
    nb_tensor_free(w);
    nb_tape_free(tp);
}

/* Cross-entropy against probability targets, far from the logits' maximum:
 * the loss and dL/dt stay finite and match PyTorch's autograd
 * (torch.nn.functional.cross_entropy on the same numbers); dL/dt used to be
 * +inf where the softmax probability underflows. */
static void test_cross_entropy_target_gradient_far_from_the_maximum(void **state) {
    (void)state;
    struct {
        nb_dtype dt;
        double gap, loss, dt_expected[3], tol;
    } cases[] = {
        {NB_F64, -1000, 1002.126928011043, {2.1269280110429727, 1002.126928011043, 0.1269280110429726}, 1e-12},
        {NB_F32, -150, 152.12692260742188, {2.1269280910491943, 152.12692260742188, 0.12692804634571075}, 2e-5},
        {NB_F32, -100, 102.1269302368164, {2.1269280910491943, 102.1269302368164, 0.12692804634571075}, 2e-5},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        nb_tape *tp = nb_tape_new();
        nb_tensor *x = nb_from_array(NULL, cases[c].dt, NB_SHAPE(3), ((double[]){0, cases[c].gap, 2}));
        nb_tensor *t = nb_from_array(NULL, cases[c].dt, NB_SHAPE(3), ((double[]){0, 1, 0}));
        nb_requires_grad(x, true);
        nb_requires_grad(t, true);
        nb_tensor *loss = nb_softmax_cross_entropy(tp, x, t, 0);
        assert_int_equal(nb_backward(loss), NB_OK);
        double tol = cases[c].tol;
        assert_close(nb_item(loss), cases[c].loss, tol * cases[c].loss);
        for (size_t k = 0; k < 3; k++) {
            double g = nb_grad_get(t, k);
            assert_true(isfinite(g));
            assert_close(g, cases[c].dt_expected[k], tol * fabs(cases[c].dt_expected[k]));
        }
        /* dL/dx = softmax(x) sum(t) - t: (0.1192, -1, 0.8808) */
        assert_close(nb_grad_get(x, 1), -1, 1e-6);
        assert_close(nb_grad_get(x, 0), 0.11920292202211753, 1e-6);
        nb_tensor_free(x);
        nb_tensor_free(t);
        nb_tape_free(tp);
    }
}

/* d/dx x^0 = 0 everywhere, also at x = 0 (it was NaN: 0 · 0^-1). */
static void test_pow_zero_has_zero_gradient_at_zero(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0, 2, -3}));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_sum(tp, nb_pow(tp, x, 0));
    assert_int_equal(nb_backward(y), NB_OK);
    assert_close(nb_item(y), 3, 0);
    for (size_t k = 0; k < 3; k++) assert_true(nb_grad_get(x, k) == 0);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* The vectorised float exp (src/ops/expf.h) against double-precision exp:
 * within 2 ulp on a sweep of every 256th float from -110 to 95 (8.8 million
 * values), the overflow and underflow ends, and NaN and the infinities. */
static void test_float_exp_is_within_2_ulp(void **state) {
    (void)state;
    double worst = 0;
    float worst_x = 0;
    /* Walk the bit patterns: positive floats up to 95, then negative ones
     * down to -110 (sign bit set), 256 patterns at a time. */
    const uint32_t top[2] = {0x42be0000u /* 95 */, 0x42dc0000u /* 110, negated */};
    for (int negative = 0; negative < 2; negative++)
        for (uint32_t bits = 0; bits <= top[negative]; bits += 256) {
            uint32_t b = bits | (negative ? 0x80000000u : 0);
            float x;
            memcpy(&x, &b, sizeof x);
            double exact = exp((double)x), err;
            float y = nb_expf(x);
            if (exact > FLT_MAX) {
                assert_true(isinf(y) && y > 0);
                continue;
            }
            /* one ulp of the float nearest the exact value (the denormal step
             * below FLT_MIN; the step below at the top of the range) */
            float nearest = (float)exact;
            double ulp = exact < FLT_MIN ? 1.401298464324817e-45
                                         : (double)nextafterf(nearest, INFINITY) - (double)nearest;
            if (isinf(nextafterf(nearest, INFINITY))) ulp = (double)nearest - (double)nextafterf(nearest, 0);
            err = fabs((double)y - exact) / ulp;
            if (err > worst) worst = err, worst_x = x;
        }
    print_message("nb_expf: worst error %.3f ulp, at x = %.9g\n", worst, worst_x);
    assert_true(worst <= 2.0);
    assert_true(isnan(nb_expf(NAN)));
    assert_true(isinf(nb_expf(INFINITY)) && nb_expf(INFINITY) > 0);
    assert_true(nb_expf(-INFINITY) == 0);
    assert_true(nb_expf(0) == 1);
    assert_true(isinf(nb_expf(88.73f)));
    assert_close(nb_expf(88.72f), exp(88.72f), 2e-7 * exp(88.72f)); /* near FLT_MAX */
    assert_true(nb_expf(-103.0f) > 0 && nb_expf(-104.5f) == 0);  /* gradual underflow */
}

/* The worst error, in ulp of the float nearest the exact value, of a
 * function bounded by 1 (tanh, erf) over every 64th float of magnitude up
 * to `top` (a bit pattern), both signs, against its double counterpart. */
static double worst_ulp_to_one(float (*f)(float), double (*exact_f)(double), uint32_t top, float *worst_x) {
    double worst = 0;
    for (int negative = 0; negative < 2; negative++)
        for (uint32_t bits = 0; bits <= top; bits += 64) {
            uint32_t b = bits | (negative ? 0x80000000u : 0);
            float x;
            memcpy(&x, &b, sizeof x);
            double exact = exact_f((double)x), ulp;
            float nearest = (float)exact;
            if (fabs(exact) < FLT_MIN)
                ulp = 1.401298464324817e-45;
            else if (fabsf(nearest) == 1.0f) /* the step below 1 */
                ulp = 1.0 - (double)nextafterf(1.0f, 0);
            else
                ulp = fabs((double)nextafterf(nearest, INFINITY) - (double)nearest);
            double err = fabs((double)f(x) - exact) / ulp;
            if (err > worst) worst = err, *worst_x = x;
        }
    return worst;
}

/* The vectorised float tanh (src/ops/expf.h) against double-precision tanh:
 * within 2 ulp on every 64th float of magnitude up to 50 (both signs, 34
 * million values: the tiny ones, where tanh x = x, included), +-1 beyond,
 * NaN and the infinities. */
static void test_float_tanh_is_within_2_ulp(void **state) {
    (void)state;
    float worst_x = 0;
    double worst = worst_ulp_to_one(nb_tanhf, tanh, 0x42480000u /* 50 */, &worst_x);
    print_message("nb_tanhf: worst error %.3f ulp, at x = %.9g\n", worst, worst_x);
    assert_true(worst <= 2.0);
    assert_true(isnan(nb_tanhf(NAN)));
    assert_true(nb_tanhf(INFINITY) == 1 && nb_tanhf(-INFINITY) == -1);
    assert_true(nb_tanhf(1e30f) == 1 && nb_tanhf(-1e30f) == -1);
    assert_true(nb_tanhf(0) == 0 && signbit(nb_tanhf(-0.0f)));
}

/* The vectorised float erf (src/ops/expf.h) against double-precision erf:
 * within 2 ulp on every 64th float of magnitude up to 10 (both signs; the
 * tiny ones, where erf x = 2x/√π, included), ±1 beyond, NaN, the
 * infinities and -0. */
static void test_float_erf_is_within_2_ulp(void **state) {
    (void)state;
    float worst_x = 0;
    double worst = worst_ulp_to_one(nb_erff, erf, 0x41200000u /* 10 */, &worst_x);
    print_message("nb_erff: worst error %.3f ulp, at x = %.9g\n", worst, worst_x);
    assert_true(worst <= 2.0);
    assert_true(isnan(nb_erff(NAN)));
    assert_true(nb_erff(INFINITY) == 1 && nb_erff(-INFINITY) == -1);
    assert_true(nb_erff(1e30f) == 1 && nb_erff(-3.95f) == -1);
    assert_true(nb_erff(0) == 0 && signbit(nb_erff(-0.0f)));
}

/* ---------------------------------------------------------------- GELU in float32 */

/* The references in double: GELU through erfc (no cancellation for x < 0),
 * the tanh form through x / (1 + e^(-2u)), the same function. */
static double gelu_exact(double x) { return x * 0.5 * erfc(-x * 0.70710678118654752); }
static double gelu_slope_exact(double x) {
    return 0.5 * erfc(-x * 0.70710678118654752) + x * exp(-x * x / 2) * 0.39894228040143268;
}
static double gelu_slope_scale(double x) { /* the larger of the slope's two terms */
    return fmax(0.5 * erfc(-x * 0.70710678118654752), fabs(x) * exp(-x * x / 2) * 0.39894228040143268);
}
static double tanh_u(double x) { return 0.79788456080286536 * (x + 0.044715 * x * x * x); }
static double gelu_tanh_exact(double x) { return x / (1 + exp(-2 * tanh_u(x))); }
static double gelu_tanh_slope_exact(double x) {
    double s = 1 / (1 + exp(-2 * tanh_u(x)));
    return s + x * 2 * s * (1 - s) * 0.79788456080286536 * (1 + 3 * 0.044715 * x * x);
}
static double gelu_tanh_slope_scale(double x) {
    double s = 1 / (1 + exp(-2 * tanh_u(x)));
    return fmax(s, fabs(x * 2 * s * (1 - s) * 0.79788456080286536 * (1 + 3 * 0.044715 * x * x)));
}

/* The worst error over every 64th float x in [lo, hi], in ulp of the float
 * nearest scale(x) (the value itself when scale is NULL; for a slope that
 * can cancel to 0, the larger of its terms), where that is a normal float. */
static double worst_ulp(float (*f)(float), double (*exact_f)(double), double (*scale)(double), double lo, double hi,
                        float *worst_x) {
    double worst = 0;
    for (int negative = 0; negative < 2; negative++)
        for (uint32_t bits = 0; bits <= 0x41200000u /* 10 */; bits += 64) {
            uint32_t b = bits | (negative ? 0x80000000u : 0);
            float x;
            memcpy(&x, &b, sizeof x);
            if (x < lo || x > hi) continue;
            double exact = exact_f((double)x), sc = scale ? scale((double)x) : fabs(exact);
            if (sc < FLT_MIN) continue;
            float nearest = (float)sc;
            double err = fabs((double)f(x) - exact) / ((double)nextafterf(nearest, INFINITY) - (double)nearest);
            if (err > worst) worst = err, *worst_x = x;
        }
    return worst;
}

/* Both float GELUs (src/ops/expf.h: no libm call per element) and their
 * slopes against double references on every 64th float of [-10, 10]
 * (37 million values, in ranges).  Measured (the bounds asserted are these
 * rounded up):
 *   exact form, y and slope: 4.3 and 3.7 ulp on [-1.1, 10]; 10.6 and 9.6
 *     ulp on [-5.657, -1.1), where x²/2, rounded to a float, moves e^(-x²/2)
 *     by up to x²/2 · 2^-24;
 *   tanh form, y and slope: 2.4 and 3.8 ulp on [-0.5, 10]; 186 and 193 ulp
 *     on [-10, -0.5), where -2u, rounded, moves e^(-2u) by |2u| 2^-23 or so
 *     (a relative error of 1e-5 at x = -9, where y = -9e-31; PyTorch's
 *     float 1 + tanh u is 0 there).
 * Below x = -5.657 the exact form is 0 (|y| < 4.5e-8 there), as PyTorch's
 * float GELU; NaN and the infinities as PyTorch. */
static void test_float_gelu_is_within_a_few_ulp(void **state) {
    (void)state;
    struct {
        const char *what;
        float (*f)(float);
        double (*exact)(double), (*scale)(double);
        double lo, hi, bound;
    } sweeps[] = {
        {"gelu", nb_gelu_f, gelu_exact, NULL, -1.1, 10, 4.5},
        {"gelu", nb_gelu_f, gelu_exact, NULL, -5.6568, -1.1, 11},
        {"gelu slope", nb_gelu_slope_f, gelu_slope_exact, gelu_slope_scale, -1.1, 10, 4},
        {"gelu slope", nb_gelu_slope_f, gelu_slope_exact, gelu_slope_scale, -5.6568, -1.1, 10},
        {"gelu_tanh", nb_gelu_tanh_f, gelu_tanh_exact, NULL, -0.5, 10, 2.5},
        {"gelu_tanh", nb_gelu_tanh_f, gelu_tanh_exact, NULL, -10, -0.5, 190},
        {"gelu_tanh slope", nb_gelu_tanh_slope_f, gelu_tanh_slope_exact, gelu_tanh_slope_scale, -0.5, 10, 4},
        {"gelu_tanh slope", nb_gelu_tanh_slope_f, gelu_tanh_slope_exact, gelu_tanh_slope_scale, -10, -0.5, 200},
    };
    for (size_t k = 0; k < sizeof sweeps / sizeof *sweeps; k++) {
        float at = 0;
        double w = worst_ulp(sweeps[k].f, sweeps[k].exact, sweeps[k].scale, sweeps[k].lo, sweeps[k].hi, &at);
        print_message("%s on [%g, %g]: worst error %.3f ulp, at x = %.9g\n", sweeps[k].what, sweeps[k].lo,
                      sweeps[k].hi, w, at);
        assert_true(w <= sweeps[k].bound);
    }
    for (float x = -5.66f; x > -10; x -= 0.01f) /* the tail: 0, and below 4.5e-8 in truth */
        assert_true(nb_gelu_f(x) == 0 && fabs(gelu_exact(x)) < 4.5e-8 && fabs(nb_gelu_slope_f(x)) < 1e-6);
    assert_true(isnan(nb_gelu_f(NAN)) && isnan(nb_gelu_slope_f(NAN)) && isnan(nb_gelu_tanh_f(NAN)) &&
                isnan(nb_gelu_tanh_slope_f(NAN)));
    assert_true(nb_gelu_f(INFINITY) == INFINITY && nb_gelu_tanh_f(INFINITY) == INFINITY);
    /* the slopes at the ends; at +inf (and the tanh form's at 1e30, where x³
     * overflows) inf · 0 is NaN, as in PyTorch's GELU backward */
    assert_true(nb_gelu_slope_f(1e30f) == 1 && nb_gelu_slope_f(-1e30f) == 0 && nb_gelu_tanh_slope_f(20) == 1);
    assert_true(isnan(nb_gelu_slope_f(INFINITY)) && isnan(nb_gelu_tanh_slope_f(1e30f)));
    assert_true(nb_gelu_f(1e30f) == 1e30f && nb_gelu_f(-1e30f) == 0 && nb_gelu_tanh_f(-1e30f) == 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extremes_are_finite),
        cmocka_unit_test(test_log_of_zero),
        cmocka_unit_test(test_anomaly_names_the_op),
        cmocka_unit_test(test_float_exp_is_within_2_ulp),
        cmocka_unit_test(test_float_tanh_is_within_2_ulp),
        cmocka_unit_test(test_float_erf_is_within_2_ulp),
        cmocka_unit_test(test_float_gelu_is_within_a_few_ulp),
        cmocka_unit_test(test_cross_entropy_target_gradient_far_from_the_maximum),
        cmocka_unit_test(test_pow_zero_has_zero_gradient_at_zero),
    };
    return cmocka_run_group_tests_name("stability", tests, NULL, NULL);
}
