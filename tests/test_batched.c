/*
 * matmul on stacks of matrices and on vectors, as NumPy's matmul: values
 * against products computed here element by element (plain loops), for
 * every pattern of batch broadcasting, transposes and vector operands;
 * gradients against central differences; the one-call path for a shared
 * matrix B; and bitwise the same on 1, 2 and 3 threads.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int na, nb;
    size_t a[5], b[5];
    bool ta, tb;
} product;

/* op(A) is (m, k), op(B) (k, n); element (i, j) of op(X) as stored. */
static double mat_at(const nb_tensor *x, size_t base, size_t rows, size_t cols, bool t, size_t i, size_t j) {
    (void)rows;
    return t ? nb_get(x, base + j * cols + i) : nb_get(x, base + i * cols + j);
}

/* The product the slow, obvious way, for comparing. */
static void reference(const product *p, const nb_tensor *A, const nb_tensor *B, const nb_tensor *C) {
    size_t ar = p->na == 1 ? 1 : p->a[p->na - 2], ac = p->a[p->na - 1];
    size_t br = p->nb == 1 ? p->b[0] : p->b[p->nb - 2], bc = p->nb == 1 ? 1 : p->b[p->nb - 1];
    size_t m = p->ta ? ac : ar, k = p->ta ? ar : ac, n = p->tb ? br : bc;
    int na = p->na > 2 ? p->na - 2 : 0, nbd = p->nb > 2 ? p->nb - 2 : 0, nd = na > nbd ? na : nbd;
    size_t batch[3], items = 1;
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - na), db = d - (nd - nbd);
        size_t sa = da >= 0 ? p->a[da] : 1, sb = db >= 0 ? p->b[db] : 1;
        batch[d] = sa > sb ? sa : sb;
        items *= batch[d];
    }
    assert_int_equal(nb_tensor_size(C), items * m * n);
    for (size_t item = 0; item < items; item++) {
        /* the matrices of A and B this pair uses */
        size_t rest = item, ia = 0, ib = 0, run_a = 1, run_b = 1;
        for (int d = nd - 1; d >= 0; d--) {
            size_t i = rest % batch[d];
            rest /= batch[d];
            int da = d - (nd - na), db = d - (nd - nbd);
            size_t sa = da >= 0 ? p->a[da] : 1, sb = db >= 0 ? p->b[db] : 1;
            ia += (sa == 1 ? 0 : i) * run_a;
            ib += (sb == 1 ? 0 : i) * run_b;
            run_a *= sa;
            run_b *= sb;
        }
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (size_t q = 0; q < k; q++)
                    s += mat_at(A, ia * ar * ac, ar, ac, p->ta, i, q) * mat_at(B, ib * br * bc, br, bc, p->tb, q, j);
                assert_close(nb_get(C, (item * m + i) * n + j), s, 1e-12 * (1 + fabs(s)));
            }
    }
}

static nb_tensor *apply(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const product *p = user;
    nb_tensor *y = nb_matmul_t(tp, in[0], n == 2 ? in[1] : in[0], p->ta, p->tb);
    nb_rng rng;
    nb_rng_seed(&rng, 8);
    nb_tensor *R = nb_rand_uniform(tp, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
    return nb_sum(tp, nb_mul(tp, y, R));
}

static const product cases[] = {
    {3, 3, {4, 2, 3}, {4, 3, 5}, false, false},       /* a stack times a stack */
    {3, 2, {4, 2, 3}, {3, 5}, false, false},          /* a shared B: one tall product */
    {3, 2, {4, 3, 2}, {3, 5}, true, false},           /* ... unless A is transposed */
    {3, 2, {4, 2, 3}, {5, 3}, false, true},
    {2, 3, {2, 3}, {4, 3, 5}, false, false},          /* a shared A */
    {4, 3, {2, 1, 2, 3}, {3, 3, 4}, false, false},    /* batch axes broadcast both ways */
    {4, 4, {2, 1, 3, 2}, {1, 3, 4, 3}, true, true},
    {1, 3, {3}, {2, 3, 4}, false, false},             /* a vector on the left */
    {3, 1, {2, 4, 3}, {3}, false, false},             /* a vector on the right */
    {3, 1, {2, 3, 4}, {3}, true, false},
    {1, 2, {3}, {3, 2}, false, false},                /* vector times matrix */
    {2, 1, {2, 3}, {3}, false, false},                /* matrix times vector */
    {1, 1, {3}, {3}, false, false},                   /* a dot product: a scalar */
    {5, 3, {2, 2, 1, 2, 3}, {2, 3, 2}, false, false}, /* three batch axes */
};

static void test_values_and_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 41);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const product *p = &cases[c];
        nb_tensor *in[2] = {random_input(&rng, p->na, p->a, -1, 1, false), random_input(&rng, p->nb, p->b, -1, 1, false)};
        nb_tape *tp = nb_tape_new();
        nb_tensor *C = nb_matmul_t(tp, in[0], in[1], p->ta, p->tb);
        assert_ok(C);
        reference(p, in[0], in[1], C);
        if (p->na == 1 && p->nb == 1) assert_int_equal(nb_tensor_ndim(C), 0);
        nb_tape_free(tp);
        assert_gradcheck(apply, in, 2, (void *)p);
        nb_tensor_free(in[0]);
        nb_tensor_free(in[1]);
    }
    /* A used on both sides (A Aᵀ per matrix): fan-out through both operands */
    product self = {3, 3, {3, 2, 4}, {3, 2, 4}, false, true};
    nb_tensor *a = random_input(&rng, 3, self.a, -1, 1, false);
    assert_gradcheck(apply, &a, 1, &self);
    nb_tensor_free(a);
}

/* Attention's two products, QKᵀ and (softmax) V, batched, in float32: the
 * same values as one 2-D matmul per batch item. */
static void test_attention_shapes_match_per_item_products(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 42);
    nb_tape *tp = nb_tape_new();
    nb_tensor *Q = nb_rand_normal(tp, &rng, NB_F32, NB_SHAPE(3, 5, 4), 0, 1);
    nb_tensor *K = nb_rand_normal(tp, &rng, NB_F32, NB_SHAPE(3, 5, 4), 0, 1);
    nb_tensor *S = nb_matmul_t(tp, Q, K, false, true);
    assert_int_equal(nb_tensor_dim(S, 0), 3);
    assert_int_equal(nb_tensor_dim(S, 1), 5);
    assert_int_equal(nb_tensor_dim(S, 2), 5);
    for (size_t b = 0; b < 3; b++) {
        nb_tensor *q = nb_squeeze(tp, nb_slice(tp, Q, 0, (long)b, (long)b + 1, 1), 0);
        nb_tensor *k = nb_squeeze(tp, nb_slice(tp, K, 0, (long)b, (long)b + 1, 1), 0);
        nb_tensor *s = nb_matmul_t(tp, q, k, false, true);
        for (size_t i = 0; i < 25; i++) assert_true(nb_get(s, i) == nb_get(S, b * 25 + i));
    }
    nb_tape_free(tp);
}

/* Many pairs over nabla's threads: the bits of one thread. */
static void test_same_bits_on_any_thread_count(void **state) {
    (void)state;
    double *first = NULL;
    size_t count = 0;
    for (int threads = 1; threads <= 3; threads++) {
        assert_int_equal(nb_set_threads(threads), NB_OK);
        nb_rng rng;
        nb_rng_seed(&rng, 43);
        nb_tensor *A = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(6, 48, 40), -1, 1);
        nb_tensor *B = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(6, 40, 30), -1, 1);
        nb_tensor *W = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(30, 400), -1, 1);
        nb_requires_grad(A, true);
        nb_requires_grad(B, true);
        nb_requires_grad(W, true);
        nb_tape *tp = nb_tape_new();
        /* stacks, then a shared matrix on a tall stack (split by rows) */
        nb_tensor *y = nb_matmul(tp, nb_tanh(tp, nb_matmul(tp, A, B)), W);
        assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, y))), NB_OK);
        size_t n = nb_tensor_size(A) + nb_tensor_size(B) + nb_tensor_size(W);
        double *v = malloc(n * sizeof *v);
        size_t at = 0;
        nb_tensor *all[3] = {A, B, W};
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < nb_tensor_size(all[k]); i++) v[at++] = nb_grad_get(all[k], i);
        if (!first) {
            first = v;
            count = n;
        } else {
            assert_int_equal(n, count);
            assert_memory_equal(v, first, n * sizeof *v);
            free(v);
        }
        nb_tape_free(tp);
        for (int k = 0; k < 3; k++) nb_tensor_free(all[k]);
    }
    free(first);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_and_gradients),
        cmocka_unit_test(test_attention_shapes_match_per_item_products),
        cmocka_unit_test(test_same_bits_on_any_thread_count),
    };
    return cmocka_run_group_tests_name("batched matmul", tests, NULL, NULL);
}
