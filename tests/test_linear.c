/*
 * linear of an x with any number of leading axes, (..., in) -> (..., out),
 * with the weight in nabla's (in, out) layout or PyTorch's (out, in)
 * (nb_linear_torch): values against sums computed here, one tape entry,
 * the same bits as the 2-D linear of x read as a matrix, gradcheck and
 * gradgradcheck on random shapes with fan-out and aliased operands, and
 * float32 gradients against float64 ones.  Refusals are rows of
 * tests/test_catalogue.c; the threads' bits are in tests/test_threads.c.
 */
#include "support.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A random x (..., k): `lead` leading axes of sizes 1 to 3 (a 1-D x for
 * lead 0), float64 requiring a gradient. */
static nb_tensor *random_x(nb_rng *rng, int lead, size_t k) {
    size_t shape[NB_MAX_DIMS];
    for (int d = 0; d < lead; d++) shape[d] = 1 + nb_rng_next(rng) % 3;
    shape[lead] = k;
    return random_input(rng, lead + 1, shape, -1, 1, false);
}

/* The weight: (k, n), or (n, k) in PyTorch's layout. */
static nb_tensor *random_w(nb_rng *rng, bool torch, size_t k, size_t n) {
    size_t shape[2] = {torch ? n : k, torch ? k : n};
    return random_input(rng, 2, shape, -1, 1, false);
}

/* The bias: (n,) or (1, n). */
static nb_tensor *random_bias(nb_rng *rng, bool row2d, size_t n) {
    size_t shape[2] = {1, n};
    return row2d ? random_input(rng, 2, shape, -1, 1, false) : random_input(rng, 1, shape + 1, -1, 1, false);
}

static bool torch_layout;

static nb_tensor *lin(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *b) {
    return torch_layout ? nb_linear_torch(tp, x, w, b) : nb_linear(tp, x, w, b);
}

/* y[r, j] = sum_i x[r, i] w(i, j) + b[j], with r running over every
 * leading index at once. */
static void test_values_and_one_entry(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 201);
    for (int trial = 0; trial < 64; trial++) {
        int lead = trial % 4;
        torch_layout = trial & 4;
        bool row2d = lead > 0 && (trial & 8);
        nb_dtype dt = trial & 16 ? NB_F32 : NB_F64;
        size_t k = 1 + nb_rng_next(&rng) % 7, n = 1 + nb_rng_next(&rng) % 6;
        nb_tensor *x = random_x(&rng, lead, k), *w = random_w(&rng, torch_layout, k, n);
        nb_tensor *b = random_bias(&rng, row2d, n);
        nb_tape *tp = nb_tape_new();
        nb_tensor *xc = nb_cast(tp, x, dt), *wc = nb_cast(tp, w, dt), *bc = nb_cast(tp, b, dt);
        size_t before = nb_tape_size(tp);
        nb_tensor *y = lin(tp, xc, wc, bc);
        assert_ok(y);
        assert_int_equal(nb_tape_size(tp), before + 1); /* one op, no reshapes */
        assert_int_equal(nb_tensor_ndim(y), lead + 1);
        for (int d = 0; d < lead; d++) assert_int_equal(nb_tensor_dim(y, d), nb_tensor_dim(x, d));
        assert_int_equal(nb_tensor_dim(y, -1), n);
        size_t m = nb_tensor_size(x) / k;
        for (size_t r = 0; r < m; r++)
            for (size_t j = 0; j < n; j++) {
                double s = nb_get(bc, j);
                for (size_t i = 0; i < k; i++)
                    s += nb_get(xc, r * k + i) * nb_get(wc, torch_layout ? j * k + i : i * n + j);
                assert_close(nb_get(y, r * n + j), s, dt == NB_F32 ? 1e-5 : 1e-13);
            }
        /* the same bits as the linear of x read as an (m, k) matrix */
        nb_tensor *y2 = lin(tp, nb_reshape(tp, xc, NB_DIMS((long)m, (long)k)), wc, bc);
        assert_ok(y2);
        for (size_t i = 0; i < m * n; i++) assert_true(nb_get(y, i) == nb_get(y2, i));
        nb_tape_free(tp);
        nb_tensor_free(x);
        nb_tensor_free(w);
        nb_tensor_free(b);
    }
}

/* The cases of the gradient checks: plain, the bias used a second time
 * (broadcast over y), x used a second time (y + x, in = out), and x as its
 * own weight (a square 2-D x, both layouts). */
enum { PLAIN, BIAS_TWICE, X_TWICE, X_AS_WEIGHT, CASES };
static int grad_case;

static nb_tensor *ap_linear(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    (void)arg;
    switch (grad_case) {
    case BIAS_TWICE: return nb_add(tp, lin(tp, in[0], in[1], in[2]), in[2]);
    case X_TWICE: return nb_mul(tp, lin(tp, in[0], in[1], in[2]), in[0]);
    case X_AS_WEIGHT: return lin(tp, in[0], in[0], in[2]);
    default: return lin(tp, in[0], in[1], in[2]);
    }
}

/* The second-order check's scalar: weighted_loss of the op's result. */
static nb_tensor *gg_linear(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    nb_tensor *y = ap_linear(tp, in, NULL);
    return weighted_loss(tp, y, user);
}

static void test_gradients_every_leading_axis_count(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 202);
    for (int trial = 0; trial < 4 * CASES * 4; trial++) {
        int lead = trial % 4;
        grad_case = (trial / 4) % CASES;
        torch_layout = (trial / (4 * CASES)) & 1;
        bool row2d = lead > 0 && ((trial / (4 * CASES)) & 2);
        size_t k = 1 + nb_rng_next(&rng) % 4, n = grad_case == X_TWICE ? k : 1 + nb_rng_next(&rng) % 4;
        nb_tensor *x, *w;
        if (grad_case == X_AS_WEIGHT) { /* x (k, k) is the weight too */
            lead = 1, row2d = trial & 1, n = k;
            x = random_input(&rng, 2, (size_t[]){k, k}, -1, 1, false);
        } else x = random_x(&rng, lead, k);
        w = random_w(&rng, torch_layout, k, n);
        nb_tensor *b = random_bias(&rng, row2d, n);
        nb_tensor *in[3] = {x, w, b};
        assert_op_gradcheck(ap_linear, NULL, in, 3);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = ap_linear(tp, in, NULL);
        assert_ok(y);
        nb_tensor *R = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
        nb_tape_free(tp);
        char what[96];
        snprintf(what, sizeof what, "linear, %d leading axes, case %d, %s layout", lead, grad_case,
                 torch_layout ? "(out, in)" : "(in, out)");
        assert_gradgradcheck(gg_linear, in, 3, R, what);
        nb_tensor_free(R);
        nb_tensor_free(x);
        nb_tensor_free(w);
        nb_tensor_free(b);
    }
}

/* float32's backward: the float64 gradients within float32's rounding. */
static void test_float32_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 203);
    for (int trial = 0; trial < 16; trial++) {
        int lead = trial % 4;
        torch_layout = trial & 4;
        size_t k = 1 + nb_rng_next(&rng) % 9, n = 1 + nb_rng_next(&rng) % 9;
        nb_tensor *in64[3] = {random_x(&rng, lead, k), random_w(&rng, torch_layout, k, n),
                              random_bias(&rng, lead > 0 && (trial & 8), n)};
        double *g64[3];
        nb_tensor *in32[3];
        for (int i = 0; i < 3; i++) {
            nb_tensor *t = in64[i];
            in32[i] = nb_zeros(NULL, NB_F32, nb_tensor_ndim(t), nb_tensor_shape(t));
            for (size_t e = 0; e < nb_tensor_size(t); e++) nb_set(in32[i], e, nb_get(t, e));
            nb_requires_grad(in32[i], true);
        }
        nb_tape *tp = nb_tape_new();
        for (int pass = 0; pass < 2; pass++) {
            nb_tensor **in = pass ? in32 : in64;
            nb_tensor *y = lin(tp, in[0], in[1], in[2]);
            nb_tensor *loss = nb_sum(tp, nb_square(tp, nb_cast(tp, y, NB_F64)));
            assert_int_equal(nb_backward(loss), NB_OK);
            for (int i = 0; i < 3; i++) {
                size_t size = nb_tensor_size(in[i]);
                if (!pass) {
                    g64[i] = malloc(size * sizeof(double));
                    for (size_t e = 0; e < size; e++) g64[i][e] = nb_grad_get(in[i], e);
                } else
                    for (size_t e = 0; e < size; e++)
                        assert_close(nb_grad_get(in[i], e), g64[i][e], 1e-5 * (1 + fabs(g64[i][e])) * (double)k);
            }
        }
        nb_tape_free(tp);
        for (int i = 0; i < 3; i++) {
            free(g64[i]);
            nb_tensor_free(in64[i]);
            nb_tensor_free(in32[i]);
        }
    }
}

/* Leading axes of size 1 and a long flat stack: (1, 1, 1, k) and (5000, k)
 * read as (1, 1, 1, 5000, k) give the same rows. */
static void test_unit_and_long_leading_axes(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 204);
    nb_tape *tp = nb_tape_new();
    size_t k = 3, n = 5;
    nb_tensor *x = nb_rand_uniform(tp, &rng, NB_F64, NB_SHAPE(5000, k), -1, 1);
    nb_tensor *w = nb_rand_uniform(tp, &rng, NB_F64, NB_SHAPE(n, k), -1, 1);
    nb_tensor *b = nb_rand_uniform(tp, &rng, NB_F64, NB_SHAPE(n), -1, 1);
    nb_tensor *y = nb_linear_torch(tp, x, w, b);
    nb_tensor *y5 = nb_linear_torch(tp, nb_reshape(tp, x, NB_DIMS(1, 1, 1, 5000, (long)k)), w, b);
    nb_tensor *one = nb_linear_torch(tp, nb_reshape(tp, nb_slice(tp, x, 0, 4999, 5000, 1), NB_DIMS(1, 1, 1, (long)k)),
                                     w, b);
    assert_ok(y5);
    assert_ok(one);
    assert_int_equal(nb_tensor_ndim(y5), 5);
    assert_int_equal(nb_tensor_dim(y5, 3), 5000);
    assert_int_equal(nb_tensor_ndim(one), 4);
    for (size_t i = 0; i < 5000 * n; i++) assert_true(nb_get(y, i) == nb_get(y5, i));
    for (size_t j = 0; j < n; j++) assert_true(nb_get(one, j) == nb_get(y, 4999 * n + j));
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_one_entry),
        cmocka_unit_test(test_gradients_every_leading_axis_count),
        cmocka_unit_test(test_float32_gradients),
        cmocka_unit_test(test_unit_and_long_leading_axes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
