/*
 * The tape's behaviour: what backward visits and skips, gradient
 * accumulation, no-grad regions, detach, seeds, resets, very long chains,
 * and that a warm training loop allocates nothing.
 */
#include "support.h"

#include <math.h>
#include <string.h>

typedef struct { size_t calls; size_t order[64]; } hook_log;

static void count_entries(nb_tape *tp, size_t entry, void *user) {
    (void)tp;
    hook_log *log = user;
    if (log->calls < 64) log->order[log->calls] = entry;
    log->calls++;
}

/* Backward visits exactly the entries between a parameter and the loss, in
 * reverse tape order. */
static void test_backward_skips_what_does_not_matter(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    hook_log log = {0};
    nb_tape_set_backward_hook(tp, count_entries, &log);
    nb_tensor *w = nb_full(NULL, NB_F64, NB_SHAPE(2), 0.5);
    nb_requires_grad(w, true);
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 2}));
    nb_tensor *data = nb_exp(tp, nb_square(tp, x)); /* entries 0, 1: no parameter */
    nb_tensor *y = nb_mul(tp, data, w);            /* entry 2 */
    nb_tensor *side = nb_tanh(tp, y);              /* entry 3: not on the loss path */
    nb_tensor *loss = nb_sum(tp, y);               /* entry 4 */
    assert_false(nb_tensor_requires_grad(data));
    assert_true(nb_tensor_requires_grad(side));
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_int_equal(log.calls, 2);
    assert_int_equal(log.order[0], 4);
    assert_int_equal(log.order[1], 2);
    assert_false(nb_has_grad(side));
    assert_false(nb_has_grad(data));
    /* d sum(e^{x^2} w)/dw = e^{x^2} */
    assert_close(nb_grad_get(w, 0), exp(1.0), 1e-12);
    assert_close(nb_grad_get(w, 1), exp(4.0), 1e-9);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

static void test_gradients_accumulate_until_zeroed(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *w = nb_from_array(NULL, NB_F32, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(w, true);
    for (int pass = 1; pass <= 3; pass++) {
        nb_tape_reset(tp);
        assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, w))), NB_OK);
        /* d sum(w^2)/dw = 2w, added once per pass */
        for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 2.0 * pass * (i + 1), 0);
    }
    nb_zero_grad(w);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 0, 0);
    nb_zero_grad(w);
    nb_tape_reset(tp);
    assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, w))), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 2.0 * (i + 1), 0);
    /* A second backward over the same tape recomputes intermediates and adds
     * to the leaf again. */
    nb_zero_grad(w);
    nb_tape_reset(tp);
    nb_tensor *h = nb_scale(tp, w, 3);
    nb_tensor *loss = nb_sum(tp, nb_mul(tp, h, h)); /* 9 w^2: gradient 18 w */
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_int_equal(nb_backward(loss), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), 36.0 * (i + 1), 1e-4);
    assert_close(nb_grad_get(h, 0), 6, 1e-5); /* d loss/dh = 2h = 6w, not doubled */
    nb_tensor_free(w);
    nb_tape_free(tp);
}

static void test_no_grad_region_and_detach(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *w = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){2, -1}));
    nb_requires_grad(w, true);
    bool was = nb_tape_set_grad_enabled(tp, false);
    assert_true(was);
    nb_tensor *frozen = nb_square(tp, w);
    assert_false(nb_tensor_requires_grad(frozen));
    assert_close(nb_get(frozen, 0), 4, 0); /* the op still ran */
    nb_tape_set_grad_enabled(tp, true);
    assert_int_equal(nb_backward(nb_sum(tp, frozen)), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_backward", "requires a gradient");

    /* y = detach(w^2) * w: dy/dw = w^2 (the detached factor is a constant). */
    nb_tape_reset(tp);
    nb_tensor *d = nb_detach(tp, nb_square(tp, w));
    assert_false(nb_tensor_requires_grad(d));
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, d, w))), NB_OK);
    assert_close(nb_grad_get(w, 0), 4, 0);
    assert_close(nb_grad_get(w, 1), 1, 0);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

static void test_backward_with_seed(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    /* y = x^2 elementwise; with seed v, dL/dx = v * 2x (a vector-Jacobian product). */
    nb_tensor *y = nb_square(tp, x);
    nb_tensor *v = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, 10, 100}));
    assert_int_equal(nb_backward_seed(y, v), NB_OK);
    assert_close(nb_grad_get(x, 0), 2, 0);
    assert_close(nb_grad_get(x, 1), 40, 0);
    assert_close(nb_grad_get(x, 2), 600, 0);
    /* Without a seed a non-scalar output is an error naming its shape. */
    assert_int_equal(nb_backward(y), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "(3,)", "seed", "test_tape.c:");
    nb_tensor *bad = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 1}));
    assert_int_equal(nb_backward_seed(y, bad), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "seed (2,)", "output (3,)");
    nb_tensor_free(x);
    nb_tape_free(tp);
}

static void test_backward_after_reset_is_an_error(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 3);
    nb_requires_grad(x, true);
    nb_tensor *loss = nb_square(tp, x);
    nb_tape_reset(tp);
    assert_int_equal(nb_backward(loss), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "nb_tape_reset");
    assert_int_equal(nb_backward(x), NB_ERR_STATE); /* a leaf */
    assert_int_equal(nb_backward(NULL), NB_ERR_NULL);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A chain of a million ops, forward and backward, with no recursion.
 * y = ((x * c) + 1) * c + 1 ...: dy/dx = c^(ops/2). */
static void test_million_op_chain(void **state) {
    (void)state;
    enum { OPS = 1000000 };
    const double c = 1.000001;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 0.5);
    nb_requires_grad(x, true);
    nb_tensor *y = x;
    for (int i = 0; i < OPS / 2; i++) y = nb_add_scalar(tp, nb_scale(tp, y, c), 1e-6);
    assert_ok(y);
    assert_int_equal(nb_tape_size(tp), OPS);
    assert_int_equal(nb_backward(y), NB_OK);
    assert_close(nb_grad_get(x, 0), pow(c, OPS / 2), 1e-9);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A DAG of a million tiny ops with wide fan-out: every op reads the two
 * previous results. */
static void test_million_op_dag(void **state) {
    (void)state;
    enum { OPS = 1000000 };
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 0.3);
    nb_requires_grad(x, true);
    /* a_{k+1} = 0.5 a_k + 0.5 a_{k-1} (average); each a_k is linear in x with
     * coefficient 1 (a_0 = a_1 = x), so d a_n/dx = 1. */
    nb_tensor *prev = x, *cur = nb_scale(tp, x, 1.0);
    for (int i = 0; i < OPS / 3; i++) {
        nb_tensor *next = nb_add(tp, nb_scale(tp, cur, 0.5), nb_scale(tp, prev, 0.5));
        prev = cur;
        cur = next;
    }
    assert_int_equal(nb_backward(cur), NB_OK);
    assert_close(nb_grad_get(x, 0), 1.0, 1e-9);
    assert_close(nb_item(cur), 0.3, 1e-12);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A training loop: after the first steps have sized the tape, further steps
 * make no allocation at all, and the tape's memory stays flat. */
static void test_warm_training_loop_does_not_allocate(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_tensor *X = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(32, 8), 0, 1);
    nb_tensor *labels = nb_zeros(NULL, NB_F32, NB_SHAPE(32));
    for (size_t i = 0; i < 32; i++) nb_set(labels, i, (double)(i % 3));
    nb_tensor *W1 = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(8, 16), 0, 0.3);
    nb_tensor *b1 = nb_zeros(NULL, NB_F32, NB_SHAPE(16));
    nb_tensor *W2 = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(16, 3), 0, 0.3);
    nb_tensor *params[3] = {W1, b1, W2};
    for (int i = 0; i < 3; i++) nb_requires_grad(params[i], true);
    nb_tape *tp = nb_tape_new();
    uint64_t allocs_after_warmup = 0;
    size_t memory_after_warmup = 0;
    double first_loss = 0, last_loss = 0;
    for (int step = 0; step < 200; step++) {
        if (step == 3) {
            allocs_after_warmup = nb_alloc_count();
            memory_after_warmup = nb_tape_memory(tp);
        }
        nb_tape_reset(tp);
        nb_zero_grads(params, 3);
        nb_tensor *h = nb_relu(tp, nb_add(tp, nb_matmul(tp, X, W1), b1));
        nb_tensor *loss = nb_softmax_cross_entropy(tp, nb_matmul(tp, h, W2), labels, 1);
        assert_int_equal(nb_backward(loss), NB_OK);
        for (int i = 0; i < 3; i++) {
            float *w = nb_tensor_data(params[i]), *g = nb_grad_data(params[i]);
            for (size_t j = 0; j < nb_tensor_size(params[i]); j++) w[j] -= 0.1f * g[j];
        }
        if (step == 0) first_loss = nb_item(loss);
        last_loss = nb_item(loss);
    }
    assert_int_equal(nb_alloc_count() - allocs_after_warmup, 0);
    assert_int_equal(nb_tape_memory(tp), memory_after_warmup);
    assert_true(last_loss < 0.5 * first_loss); /* and it learned something */
    for (int i = 0; i < 3; i++) nb_tensor_free(params[i]);
    nb_tensor_free(X);
    nb_tensor_free(labels);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backward_skips_what_does_not_matter),
        cmocka_unit_test(test_gradients_accumulate_until_zeroed),
        cmocka_unit_test(test_no_grad_region_and_detach),
        cmocka_unit_test(test_backward_with_seed),
        cmocka_unit_test(test_backward_after_reset_is_an_error),
        cmocka_unit_test(test_million_op_chain),
        cmocka_unit_test(test_million_op_dag),
        cmocka_unit_test(test_warm_training_loop_does_not_allocate),
    };
    return cmocka_run_group_tests_name("tape", tests, NULL, NULL);
}
