/*
 * Scalar code: 1-element operands take their own path through the ops
 * (no broadcast plan, no split, the first gradient in the slot after the
 * value; src/internal.h, src/ops/binary.c, src/ops/unary.c).  Checks that
 * it gives bit for bit what the general path gives on more elements, that
 * gradients are right over repeated passes, and that it keeps every check
 * on its inputs.
 */
#include "support.h"

#include <math.h>
#include <string.h>

/* Every element-wise op with a 1-element path, with fan-out (a and b are
 * read many times) and shared gradients (adds of single-use results). */
static nb_tensor *mixture(nb_tape *tp, nb_tensor *a, nb_tensor *b) {
    nb_tensor *t = nb_sub(tp, nb_add(tp, nb_mul(tp, a, b), a), b);
    t = nb_div(tp, t, nb_add_scalar(tp, nb_square(tp, b), 1));
    nb_tensor *m = nb_minimum(tp, nb_maximum(tp, t, nb_scale(tp, a, 0.5)), b);
    nb_tensor *u = nb_sqrt(tp, nb_add_scalar(tp, nb_square(tp, m), 0.1));
    u = nb_add(tp, u, nb_sin(tp, a));
    u = nb_add(tp, u, nb_cos(tp, b));
    u = nb_add(tp, u, nb_exp(tp, nb_neg(tp, nb_abs(tp, a))));
    u = nb_add(tp, u, nb_log(tp, nb_add_scalar(tp, nb_square(tp, a), 1)));
    u = nb_add(tp, u, nb_sigmoid(tp, b));
    u = nb_add(tp, u, nb_tanh(tp, t));
    u = nb_mul(tp, u, nb_pow(tp, nb_add_scalar(tp, nb_abs(tp, b), 1), 1.5));
    return nb_add(tp, u, nb_mul(tp, a, a));
}

/* f(a, b) and its gradient with a and b of n elements all equal to (va,
 * vb): n = 0 means 0-d tensors.  Returns the first element of each. */
static void run_mixture(nb_dtype dt, int n, double va, double vb, double out[3]) {
    nb_tape *tp = nb_tape_new();
    size_t shape[1] = {(size_t)n};
    int nd = n ? 1 : 0;
    nb_tensor *a = nb_full(NULL, dt, nd, shape, va), *b = nb_full(NULL, dt, nd, shape, vb);
    nb_requires_grad(a, true);
    nb_requires_grad(b, true);
    nb_tensor *y = mixture(tp, a, b);
    assert_ok(y);
    nb_tensor *seed = nb_full(tp, dt, nd, shape, 1.0);
    assert_int_equal(n ? nb_backward_seed(y, seed) : nb_backward(y), NB_OK);
    out[0] = nb_get(y, 0);
    out[1] = nb_grad_get(a, 0);
    out[2] = nb_grad_get(b, 0);
    for (int k = 1; k < n; k++) { /* the general path agrees with itself across elements */
        assert_true(nb_get(y, (size_t)k) == out[0]);
        assert_true(nb_grad_get(a, (size_t)k) == out[1]);
    }
    nb_tensor_free(a);
    nb_tensor_free(b);
    nb_tape_free(tp);
}

static void test_one_element_path_is_bitwise_the_general_one(void **state) {
    (void)state;
    const double points[][2] = {{0.7, -1.3}, {0.7, 0.7}, {-2.5, 0.25}, {1e-3, 3.0}};
    for (int d = 0; d < 2; d++)
        for (size_t p = 0; p < sizeof points / sizeof *points; p++) {
            nb_dtype dt = d ? NB_F64 : NB_F32;
            double scalar[3], vector[3];
            run_mixture(dt, 0, points[p][0], points[p][1], scalar);
            run_mixture(dt, 5, points[p][0], points[p][1], vector);
            for (int k = 0; k < 3; k++) {
                if (memcmp(&scalar[k], &vector[k], sizeof(double)) != 0)
                    fail_msg("%s at (%g, %g), result %d: %.17g on 0-d tensors, %.17g on 5 elements",
                             d ? "float64" : "float32", points[p][0], points[p][1], k, scalar[k], vector[k]);
                assert_true(isfinite(scalar[k]));
            }
        }
}

/* d/dx of (x²)² = 4x³, and d/da of a² = 2a, over two passes on one tape:
 * the leaf's gradient adds up, the op result's is the latest pass's (its
 * first one sat in the slot after its value, the second one elsewhere). */
static void test_gradients_over_repeated_passes(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 1.5), *c = nb_scalar(tp, NB_F64, -0.5);
    nb_requires_grad(x, true);
    nb_requires_grad(c, true);
    nb_tensor *a = nb_mul(tp, x, x);
    nb_tensor *loss = nb_add(tp, nb_mul(tp, a, a), nb_mul(tp, c, x));
    for (int pass = 1; pass <= 2; pass++) {
        assert_int_equal(nb_backward(loss), NB_OK);
        assert_close(nb_grad_get(x, 0), pass * (4 * 1.5 * 1.5 * 1.5 + -0.5), 1e-12);
        assert_close(nb_grad_get(c, 0), pass * 1.5, 1e-12); /* a tape leaf: adds up too */
        assert_close(nb_grad_get(a, 0), 2 * 2.25, 1e-12);
    }
    nb_tensor_free(x);
    nb_tape_free(tp);
}

static void test_one_element_ops_keep_their_checks(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 2), *f = nb_scalar(NULL, NB_F32, 2);
    nb_requires_grad(x, true);

    nb_tensor *y = nb_scale(tp, x, 3);
    nb_tape_reset(tp);
    nb_tensor *r = nb_add(tp, y, x);
    assert_int_equal(nb_tensor_status(r), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "add", "nb_tape_reset");
    assert_int_equal(nb_tensor_status(nb_sin(tp, y)), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "sin", "nb_tape_reset");

    nb_tape_reset(tp);
    assert_int_equal(nb_tensor_status(nb_mul(tp, x, f)), NB_ERR_DTYPE);
    assert_message_has(nb_last_error(), "mul", "float32", "float64");
    assert_int_equal(nb_tensor_status(nb_add(tp, x, NULL)), NB_ERR_NULL);
    assert_message_has(nb_last_error(), "add");
    nb_tensor *elsewhere = nb_scale(other, x, 2);
    assert_int_equal(nb_tensor_status(nb_add(tp, x, elsewhere)), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "add");

    nb_tape_reset(tp);
    nb_tensor *loss = nb_mul(tp, x, x);
    nb_set(x, 0, 5);
    assert_int_equal(nb_backward(loss), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "changed after the op used it", "mul");

    nb_tensor_free(x);
    nb_tensor_free(f);
    nb_tape_free(tp);
    nb_tape_free(other);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_element_path_is_bitwise_the_general_one),
        cmocka_unit_test(test_gradients_over_repeated_passes),
        cmocka_unit_test(test_one_element_ops_keep_their_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
