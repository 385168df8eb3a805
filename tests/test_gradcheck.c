/*
 * nb_gradcheck itself: it must fail a wrong gradient and say where, pass a
 * right one, and report its own misuse.  The wrong gradient comes from an op
 * defined here on nabla's internal op interface with a deliberate mistake.
 */
#include "support.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* y = x^3, with backward claiming dy/dx = 3x^2 except for element 2, where
 * it says 2x^2: a bug in one element. */
static void cube_forward(nb_entry *e) {
    for (size_t i = 0; i < e->out->size; i++) {
        double x = NB_D(e->in[0])[i];
        NB_D(e->out)[i] = x * x * x;
    }
}

static void cube_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    bool acc;
    double *gx = nb_grad_target(tp, e->in[0], &acc);
    if (!gx) return;
    for (size_t i = 0; i < e->out->size; i++) {
        double x = NB_D(e->in[0])[i];
        double d = (i == 2 ? 2.0 : 3.0) * x * x * ((double *)e->out->grad)[i];
        gx[i] = acc ? gx[i] + d : d;
    }
}

static const nb_op buggy_cube_op = {.name = "buggy_cube", .forward = cube_forward, .backward = cube_backward,
                                    .derivative = {"3x²"}, .elementwise = true};

static nb_tensor *buggy_cube(nb_tape *tp, nb_tensor *a) {
    nb_tensor *failed = nb_check(tp, &buggy_cube_op, __FILE__, __LINE__, 1, &a);
    if (failed) return failed;
    nb_entry *e = nb_emit(tp, &buggy_cube_op, 1, &a, NB_F64, a->ndim, a->shape, __FILE__,
                          __LINE__, &failed);
    return e ? nb_run(e) : failed;
}

static nb_tensor *sum_buggy_cube(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    return nb_sum(tp, buggy_cube(tp, in[0]));
}

static void test_detects_a_wrong_gradient(void **state) {
    (void)state;
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2, 2), ((double[]){0.5, -1, 2, 1.5}));
    nb_requires_grad(x, true);
    nb_tensor_set_name(x, "x");
    char report[4096] = {0};
    FILE *f = fmemopen(report, sizeof report - 1, "w");
    nb_gradcheck_opts opts;
    nb_gradcheck_default_opts(&opts);
    opts.report = f;
    nb_gradcheck_result r = nb_gradcheck(sum_buggy_cube, &x, 1, NULL, &opts);
    fclose(f);
    assert_int_equal(r.status, NB_OK);
    assert_false(r.passed);
    assert_int_equal(r.checked, 4);
    assert_int_equal(r.failed, 1);
    /* Element 2 = index (1, 0), x = 2: numeric 3*4 = 12, analytic 2*4 = 8. */
    assert_int_equal(r.worst_input, 0);
    assert_int_equal(r.worst_element, 2);
    assert_close(r.worst_numeric, 12, 1e-6);
    assert_close(r.worst_analytic, 8, 1e-12);
    assert_close(r.worst_abs_err, 4, 1e-6);
    assert_message_has(r.message, "FAILED", "1 of 4", "(x)", "(1, 0)");
    /* The report has one line, for the failing element, with f(x+-eps). */
    assert_message_has(report, "numeric", "analytic", "(1, 0)", "FAIL", "12", "8");
    assert_null(strstr(report, "(0, 0)"));
    /* x itself is untouched. */
    assert_close(nb_get(x, 2), 2, 0);
    nb_tensor_free(x);
}

/* Labels are fixed data, passed through `user` and cast to the inputs'
 * dtype (float64 inside gradcheck). */
static nb_tensor *softmax_ce(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    nb_tensor *labels = nb_cast(tp, user, nb_tensor_dtype(in[0]));
    return nb_softmax_cross_entropy(tp, nb_matmul(tp, in[0], in[1]), labels, 1);
}

/* float32 inputs are checked in float64; report_all lists every element;
 * inputs not requiring a gradient are left out. */
static void test_passes_and_reports_every_element(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 4);
    nb_tensor *X = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(3, 4), 0, 1);
    nb_tensor *W = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(4, 2), 0, 1);
    nb_tensor *y = nb_from_array(NULL, NB_F32, NB_SHAPE(3), ((double[]){0, 1, 1}));
    nb_requires_grad(W, true);
    nb_tensor *in[2] = {X, W};
    char report[8192] = {0};
    FILE *f = fmemopen(report, sizeof report - 1, "w");
    nb_gradcheck_opts opts;
    nb_gradcheck_default_opts(&opts);
    opts.report = f;
    opts.report_all = true;
    nb_gradcheck_result r = nb_gradcheck(softmax_ce, in, 2, y, &opts);
    fclose(f);
    assert_true(r.passed);
    assert_int_equal(r.checked, 8); /* W only */
    assert_int_equal(r.failed, 0);
    size_t lines = 0;
    for (const char *p = report; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 1 + 8); /* header + one per element */
    assert_message_has(report, " ok\n");
    /* With no input marked, every input is checked. */
    nb_requires_grad(W, false);
    r = nb_gradcheck(softmax_ce, in, 2, y, NULL);
    assert_true(r.passed);
    assert_int_equal(r.checked, 12 + 8);
    nb_tensor_free(X);
    nb_tensor_free(W);
    nb_tensor_free(y);
}

static nb_tensor *not_a_scalar(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    return nb_square(tp, in[0]);
}

static nb_tensor *shape_error(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    return nb_sum(tp, nb_add(tp, in[0], nb_ones(tp, NB_F64, NB_SHAPE(7))));
}

static void test_reports_misuse(void **state) {
    (void)state;
    nb_tensor *x = nb_ones(NULL, NB_F64, NB_SHAPE(3));
    nb_requires_grad(x, true);
    nb_gradcheck_result r = nb_gradcheck(not_a_scalar, &x, 1, NULL, NULL);
    assert_int_equal(r.status, NB_ERR_SHAPE);
    assert_false(r.passed);
    assert_message_has(r.message, "1-element", "(3,)", "nb_sum");
    r = nb_gradcheck(shape_error, &x, 1, NULL, NULL);
    assert_int_equal(r.status, NB_ERR_SHAPE);
    assert_message_has(r.message, "function failed", "add", "(3,)", "(7,)");
    r = nb_gradcheck(NULL, &x, 1, NULL, NULL);
    assert_int_equal(r.status, NB_ERR_ARG);
    nb_gradcheck_opts opts;
    nb_gradcheck_default_opts(&opts);
    opts.eps = 0;
    r = nb_gradcheck(not_a_scalar, &x, 1, NULL, &opts);
    assert_int_equal(r.status, NB_ERR_ARG);
    nb_tensor *bad[1] = {NULL};
    r = nb_gradcheck(not_a_scalar, bad, 1, NULL, NULL);
    assert_int_equal(r.status, NB_ERR_NULL);
    nb_tensor_free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detects_a_wrong_gradient),
        cmocka_unit_test(test_passes_and_reports_every_element),
        cmocka_unit_test(test_reports_misuse),
    };
    return cmocka_run_group_tests_name("gradcheck", tests, NULL, NULL);
}
