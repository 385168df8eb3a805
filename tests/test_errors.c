/*
 * Bad input gives a clear error, never a crash: the status says what kind,
 * the message names the op, the shapes and the caller's file and line, and
 * errors pass through later ops so the caller can check once at the end.
 * (The sanitizer run of this file also shows that no error path leaks.)
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void test_shape_mismatch_names_op_shapes_and_line(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *a = nb_zeros(tp, NB_F32, NB_SHAPE(2, 3));
    nb_tensor *b = nb_zeros(tp, NB_F32, NB_SHAPE(2));
    char expected_site[64];
    snprintf(expected_site, sizeof expected_site, "test_errors.c:%d", __LINE__ + 1);
    nb_tensor *c = nb_add(tp, a, b);
    assert_int_equal(nb_tensor_status(c), NB_ERR_SHAPE);
    assert_int_equal(nb_tape_status(tp), NB_ERR_SHAPE);
    assert_message_has(nb_tape_error(tp), "add", "(2, 3)", "(2,)", "broadcast", expected_site);
    assert_string_equal(nb_last_error(), nb_tape_error(tp));
    nb_tape_free(tp);
}

/* The first error sticks: later ops on the errored tensor return errored
 * tensors without replacing the message, and the tape reports it once. */
static void test_errors_propagate_and_first_message_sticks(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *W = nb_ones(tp, NB_F64, NB_SHAPE(3, 4));
    nb_tensor *x = nb_ones(tp, NB_F64, NB_SHAPE(5, 2));
    nb_tensor *h = nb_matmul(tp, W, x);
    nb_tensor *y = nb_sigmoid(tp, nb_add(tp, h, nb_ones(tp, NB_F64, NB_SHAPE(4))));
    nb_tensor *loss = nb_mean(tp, nb_square(tp, y));
    assert_int_equal(nb_tensor_status(loss), NB_ERR_SHAPE);
    assert_message_has(nb_tape_error(tp), "matmul", "(3, 4)", "(5, 2)", "4 columns", "5 rows");
    assert_int_equal(nb_tape_size(tp), 0); /* nothing was recorded */
    assert_int_equal(nb_backward(loss), NB_ERR_SHAPE);
    /* Reading an errored tensor is safe. */
    assert_true(isnan(nb_item(loss)));
    assert_null(nb_tensor_data(loss));
    assert_int_equal(nb_tensor_size(loss), 0);
    nb_tensor_free(loss); /* ignored, not a crash */
    /* Reset clears the error; the tape works again. */
    nb_tape_reset(tp);
    assert_int_equal(nb_tape_status(tp), NB_OK);
    assert_ok(nb_add(tp, nb_ones(tp, NB_F64, NB_SHAPE(2)), nb_ones(tp, NB_F64, NB_SHAPE(2))));
    nb_tape_free(tp);
}

static void test_dtype_null_and_foreign_inputs(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *f = nb_ones(tp, NB_F32, NB_SHAPE(2)), *d = nb_ones(tp, NB_F64, NB_SHAPE(2));
    assert_int_equal(nb_tensor_status(nb_mul(tp, f, d)), NB_ERR_DTYPE);
    assert_message_has(nb_tape_error(tp), "mul", "float32", "float64", "nb_cast");
    nb_tape_reset(tp);
    f = nb_ones(tp, NB_F32, NB_SHAPE(2));
    assert_int_equal(nb_tensor_status(nb_sub(tp, f, NULL)), NB_ERR_NULL);
    assert_message_has(nb_tape_error(tp), "sub", "input 2 is NULL");
    assert_int_equal(nb_tensor_status(nb_exp(NULL, f)), NB_ERR_NULL);
    assert_message_has(nb_last_error(), "tape is NULL");
    nb_tape_reset(tp);
    f = nb_ones(tp, NB_F32, NB_SHAPE(2));
    nb_tensor *g = nb_ones(other, NB_F32, NB_SHAPE(2));
    assert_int_equal(nb_tensor_status(nb_add(tp, f, g)), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "add", "another tape");
    nb_tape_free(tp);
    nb_tape_free(other);
}

/* Each case runs on a fresh tape, so the tape's message is its own. */
static nb_tensor *bad_axis_or_shape(nb_tape *tp, int which) {
    nb_tensor *a = nb_ones(tp, NB_F32, NB_SHAPE(2, 3));
    switch (which) {
    case 0: return nb_sum_axis(tp, a, 2, false);
    case 1: return nb_mean_axis(tp, a, -3, true);
    case 2: return nb_softmax(tp, a, 5);
    case 3: return nb_transpose(tp, a, 0, 2);
    case 4: return nb_reshape(tp, a, NB_DIMS(4, 2));
    case 5: return nb_reshape(tp, a, NB_DIMS(4, -1));
    case 6: return nb_reshape(tp, a, NB_DIMS(0, 6));
    case 7: return nb_matmul(tp, a, nb_ones(tp, NB_F32, NB_SHAPE(4)));
    case 8: return nb_mse(tp, a, nb_ones(tp, NB_F32, NB_SHAPE(3, 2)));
    default: return nb_softmax_cross_entropy(tp, a, nb_ones(tp, NB_F32, NB_SHAPE(3)), 1);
    }
}

static void test_axis_and_reshape_errors(void **state) {
    (void)state;
    const struct { nb_status st; const char *op, *detail; } cases[] = {
        {NB_ERR_ARG, "sum_axis", "axis 2 is out of range for shape (2, 3)"},
        {NB_ERR_ARG, "mean_axis", "axis -3"},
        {NB_ERR_ARG, "softmax", "(2, 3)"},
        {NB_ERR_ARG, "transpose", "(2, 3)"},
        {NB_ERR_SHAPE, "reshape", "6 elements"},
        {NB_ERR_SHAPE, "reshape", "cannot infer"},
        {NB_ERR_ARG, "reshape", "size 0"},
        {NB_ERR_SHAPE, "matmul", "inner sizes differ"},
        {NB_ERR_SHAPE, "mse", "same shape"},
        {NB_ERR_SHAPE, "softmax_cross_entropy", "neither"},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) {
        nb_tape *tp = nb_tape_new();
        assert_int_equal(nb_tensor_status(bad_axis_or_shape(tp, i)), cases[i].st);
        assert_message_has(nb_tape_error(tp), cases[i].op, cases[i].detail, "test_errors.c:");
        nb_tape_free(tp);
    }
}

static void test_bad_values(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *p = nb_from_array(tp, NB_F32, NB_SHAPE(3), ((double[]){0.5, 1.5, 0.2}));
    nb_tensor *t = nb_zeros(tp, NB_F32, NB_SHAPE(3));
    assert_int_equal(nb_tensor_status(nb_bce(tp, p, t)), NB_ERR_VALUE);
    assert_message_has(nb_tape_error(tp), "bce", "element 1", "1.5", "bce_logits");
    nb_tape_reset(tp);
    nb_tensor *logits = nb_zeros(tp, NB_F32, NB_SHAPE(2, 3));
    nb_tensor *cls = nb_from_array(tp, NB_F32, NB_SHAPE(2), ((double[]){1, 3}));
    assert_int_equal(nb_tensor_status(nb_softmax_cross_entropy(tp, logits, cls, 1)), NB_ERR_VALUE);
    assert_message_has(nb_tape_error(tp), "softmax_cross_entropy", "element 1", "[0, 3)");
    nb_tape_reset(tp);
    logits = nb_zeros(tp, NB_F32, NB_SHAPE(2, 3));
    cls = nb_from_array(tp, NB_F32, NB_SHAPE(2), ((double[]){0.5, NAN}));
    assert_int_equal(nb_tensor_status(nb_softmax_cross_entropy(tp, logits, cls, 1)), NB_ERR_VALUE);
    nb_tape_free(tp);
}

static void test_creation_errors(void **state) {
    (void)state;
    nb_tensor *t = nb_zeros(NULL, NB_F32, NB_SHAPE(SIZE_MAX / 2, 4));
    assert_int_equal(nb_tensor_status(t), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "more elements than memory can address");
    t = nb_zeros(NULL, NB_F64, NB_SHAPE(3, 0));
    assert_int_equal(nb_tensor_status(t), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "(3, 0)", "empty");
    t = nb_zeros(NULL, NB_F64, 9, (size_t[9]){1, 1, 1, 1, 1, 1, 1, 1, 1});
    assert_int_equal(nb_tensor_status(t), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "9 dimensions");
    t = nb_zeros(NULL, (nb_dtype)7, NB_SHAPE(2));
    assert_int_equal(nb_tensor_status(t), NB_ERR_ARG);
    t = nb_from_f32(NULL, NB_SHAPE(2), NULL);
    assert_int_equal(nb_tensor_status(t), NB_ERR_NULL);
    t = nb_zeros(NULL, NB_F64, 2, NULL);
    assert_int_equal(nb_tensor_status(t), NB_ERR_NULL);
    nb_rng rng;
    nb_rng_seed(&rng, 1);
    t = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(2), 1, 0);
    assert_int_equal(nb_tensor_status(t), NB_ERR_ARG);
    t = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(2), 0, -1);
    assert_int_equal(nb_tensor_status(t), NB_ERR_ARG);
    /* Errored tensors print as such and accept every accessor. */
    char buf[256] = {0};
    FILE *f = fmemopen(buf, sizeof buf, "w");
    nb_print(f, t);
    fclose(f);
    assert_message_has(buf, "errored tensor", "invalid argument");
    nb_set(t, 0, 1.0);
    nb_requires_grad(t, true);
    assert_false(nb_tensor_requires_grad(t));
    assert_int_equal(nb_tensor_dim(t, 0), 0);
}

static void test_status_strings(void **state) {
    (void)state;
    for (int s = 0; s < NB_STATUS_COUNT; s++) assert_non_null(nb_status_string((nb_status)s));
    assert_string_equal(nb_status_string((nb_status)999), "unknown status");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_mismatch_names_op_shapes_and_line),
        cmocka_unit_test(test_errors_propagate_and_first_message_sticks),
        cmocka_unit_test(test_dtype_null_and_foreign_inputs),
        cmocka_unit_test(test_axis_and_reshape_errors),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_creation_errors),
        cmocka_unit_test(test_status_strings),
    };
    return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
