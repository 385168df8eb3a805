/*
 * Attention heads: nb_split_heads, nb_split_qkv and nb_merge_heads against
 * the same moves composed of reshape, permute and slice (the same bits:
 * both only copy), for 0 to 3 leading axes, both dtypes; merge undoes
 * split; one tape entry each; gradcheck and gradgradcheck with fan-out
 * (x used directly too, all three parts of qkv, or one part only); the
 * same bits on 1 and 2 threads.  Refusals are rows of
 * tests/test_catalogue.c.
 */
#include "support.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x (lead..., T, parts·H·hd) of random sizes; *H, *hd, *T chosen here. */
static nb_tensor *random_flat(nb_rng *rng, int lead, int parts, int *H, size_t *hd, size_t *T) {
    size_t shape[NB_MAX_DIMS];
    for (int d = 0; d < lead; d++) shape[d] = 1 + nb_rng_next(rng) % 3;
    *H = 1 + (int)(nb_rng_next(rng) % 3);
    *hd = 1 + nb_rng_next(rng) % 3;
    *T = 1 + nb_rng_next(rng) % 4;
    shape[lead] = *T;
    shape[lead + 1] = (size_t)parts * (size_t)*H * *hd;
    return random_input(rng, lead + 2, shape, -1, 1, false);
}

/* The composed split: part `part` of x viewed as (..., T, parts, H, hd),
 * permuted to (..., H, T, hd). */
static nb_tensor *composed_split(nb_tape *tp, nb_tensor *x, int H, int parts, int part) {
    int nd = nb_tensor_ndim(x);
    long dims[NB_MAX_DIMS];
    for (int d = 0; d < nd - 1; d++) dims[d] = (long)nb_tensor_dim(x, d);
    dims[nd - 1] = parts, dims[nd] = H, dims[nd + 1] = -1;
    nb_tensor *v = nb_reshape(tp, x, nd + 2, dims); /* (..., T, P, H, hd) */
    v = nb_slice(tp, v, nd - 1, part, part + 1, 1);
    v = nb_squeeze(tp, v, nd - 1); /* (..., T, H, hd) */
    return nb_transpose(tp, v, nd - 2, nd - 1);
}

static nb_tensor *composed_merge(nb_tape *tp, nb_tensor *x) {
    int nd = nb_tensor_ndim(x);
    nb_tensor *v = nb_transpose(tp, x, nd - 3, nd - 2); /* (..., T, H, hd) */
    long dims[NB_MAX_DIMS];
    for (int d = 0; d < nd - 2; d++) dims[d] = (long)nb_tensor_dim(v, d);
    dims[nd - 2] = -1;
    return nb_reshape(tp, v, nd - 1, dims);
}

static void same_bits(const nb_tensor *a, const nb_tensor *b) {
    assert_ok(a);
    assert_ok(b);
    assert_int_equal(nb_tensor_ndim(a), nb_tensor_ndim(b));
    for (int d = 0; d < nb_tensor_ndim(a); d++) assert_int_equal(nb_tensor_dim(a, d), nb_tensor_dim(b, d));
    for (size_t i = 0; i < nb_tensor_size(a); i++) assert_true(nb_get(a, i) == nb_get(b, i));
}

static void test_values_against_reshape_and_permute(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 301);
    for (int trial = 0; trial < 48; trial++) {
        int lead = trial % 4, parts = trial & 4 ? 3 : 1, H;
        nb_dtype dt = trial & 8 ? NB_F32 : NB_F64;
        size_t hd, T;
        nb_tensor *x64 = random_flat(&rng, lead, parts, &H, &hd, &T);
        nb_tape *tp = nb_tape_new();
        nb_tensor *x = nb_cast(tp, x64, dt), *out[3];
        size_t before = nb_tape_size(tp);
        if (parts == 1) {
            out[0] = nb_split_heads(tp, x, H);
            assert_int_equal(nb_tape_size(tp), before + 1);
        } else {
            assert_int_equal(nb_split_qkv(tp, x, H, out), NB_OK);
            assert_int_equal(nb_tape_size(tp), before + 3);
        }
        for (int p = 0; p < parts; p++) {
            same_bits(out[p], composed_split(tp, x, H, parts, p));
            assert_int_equal(nb_tensor_dim(out[p], -3), H);
            assert_int_equal(nb_tensor_dim(out[p], -2), T);
            assert_int_equal(nb_tensor_dim(out[p], -1), hd);
            /* merge undoes split, and is the composed merge */
            nb_tensor *back = nb_merge_heads(tp, out[p]);
            same_bits(back, composed_merge(tp, out[p]));
            if (parts == 1) same_bits(back, x);
            else same_bits(back, nb_slice(tp, x, -1, p * H * (long)hd, (p + 1) * H * (long)hd, 1));
        }
        nb_tape_free(tp);
        nb_tensor_free(x64);
    }
}

/* The gradient checks' functions: split then a fan-out, the three parts
 * of qkv each weighted differently, one part only (the others' gradient is
 * 0), and merge (of a split-shaped x) used with x itself. */
enum { SPLIT, QKV_ALL, QKV_ONE, MERGE, CASES };
static int grad_case, grad_heads;

static nb_tensor *ap_heads(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    (void)arg;
    nb_tensor *x = in[0];
    switch (grad_case) {
    case SPLIT: return nb_merge_heads(tp, nb_mul(tp, nb_split_heads(tp, x, grad_heads), nb_split_heads(tp, x, grad_heads)));
    case QKV_ALL: {
        nb_tensor *q[3];
        nb_split_qkv(tp, x, grad_heads, q);
        /* x used again after the split: its gradient is there before the parts add theirs */
        return nb_add(tp, nb_add(tp, nb_mul(tp, q[0], q[1]), nb_sin(tp, q[2])), nb_sum(tp, nb_square(tp, x)));
    }
    case QKV_ONE: return nb_split_heads_(tp, x, grad_heads, 3, 1, __FILE__, __LINE__);
    default: return nb_add(tp, nb_merge_heads(tp, nb_sin(tp, x)), nb_sum_axis(tp, nb_merge_heads(tp, x), 0, false));
    }
}

static nb_tensor *gg_heads(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    return weighted_loss(tp, ap_heads(tp, in, NULL), user);
}

static void test_gradients_every_leading_axis_count(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 302);
    for (int trial = 0; trial < 4 * CASES * 2; trial++) {
        int lead = trial % 4;
        grad_case = (trial / 4) % CASES;
        size_t hd, T;
        nb_tensor *x;
        if (grad_case == MERGE) { /* x (lead..., H, T, hd), at least one leading axis for sum_axis */
            size_t shape[NB_MAX_DIMS];
            int nd = lead + 4;
            for (int d = 0; d < nd; d++) shape[d] = 1 + nb_rng_next(&rng) % 3;
            x = random_input(&rng, nd, shape, -1, 1, false);
        } else x = random_flat(&rng, lead, grad_case == SPLIT ? 1 : 3, &grad_heads, &hd, &T);
        assert_op_gradcheck(ap_heads, NULL, &x, 1);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = ap_heads(tp, &x, NULL);
        assert_ok(y);
        nb_tensor *R = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
        nb_tape_free(tp);
        char what[64];
        snprintf(what, sizeof what, "heads case %d, %d leading axes", grad_case, lead);
        assert_gradgradcheck(gg_heads, &x, 1, R, what);
        nb_tensor_free(R);
        nb_tensor_free(x);
    }
}

/* float32 gradients are the composed ops' bits (moves and adds only). */
static void test_float32_gradients_match_the_composition(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 303);
    for (int trial = 0; trial < 8; trial++) {
        int H;
        size_t hd, T;
        nb_tensor *x64 = random_flat(&rng, trial % 4, 3, &H, &hd, &T);
        nb_tensor *x = nb_zeros(NULL, NB_F32, nb_tensor_ndim(x64), nb_tensor_shape(x64));
        for (size_t i = 0; i < nb_tensor_size(x); i++) nb_set(x, i, nb_get(x64, i));
        nb_requires_grad(x, true);
        double *g[2];
        nb_tape *tp = nb_tape_new();
        for (int way = 0; way < 2; way++) {
            nb_tensor *q[3];
            if (way) {
                for (int p = 0; p < 3; p++) q[p] = composed_split(tp, x, H, 3, p);
            } else
                assert_int_equal(nb_split_qkv(tp, x, H, q), NB_OK);
            nb_tensor *y = nb_merge_heads(tp, nb_add(tp, nb_mul(tp, q[0], q[1]), nb_square(tp, q[2])));
            nb_zero_grad(x);
            assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, y, y))), NB_OK);
            g[way] = malloc(nb_tensor_size(x) * sizeof(double));
            for (size_t i = 0; i < nb_tensor_size(x); i++) g[way][i] = nb_grad_get(x, i);
        }
        for (size_t i = 0; i < nb_tensor_size(x); i++) assert_true(g[0][i] == g[1][i]);
        free(g[0]);
        free(g[1]);
        nb_tape_free(tp);
        nb_tensor_free(x);
        nb_tensor_free(x64);
    }
}

/* A GPT-sized split and merge on 1 and 2 threads: the same bits. */
static void test_threads(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 304);
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(4, 64, 3 * 128), -1, 1);
    nb_requires_grad(x, true);
    double *seen[2];
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(nb_set_threads(threads), NB_OK);
        nb_tape *tp = nb_tape_new();
        nb_tensor *q[3];
        assert_int_equal(nb_split_qkv(tp, x, 4, q), NB_OK);
        nb_tensor *y = nb_merge_heads(tp, nb_mul(tp, nb_add(tp, q[0], q[1]), q[2]));
        nb_zero_grad(x);
        assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, y))), NB_OK);
        size_t ny = nb_tensor_size(y), nx = nb_tensor_size(x);
        seen[threads - 1] = malloc((ny + nx) * sizeof(double));
        nb_to_f64(y, seen[threads - 1]);
        for (size_t i = 0; i < nx; i++) seen[threads - 1][ny + i] = nb_grad_get(x, i);
        nb_tape_free(tp);
    }
    assert_int_equal(nb_set_threads(1), NB_OK);
    size_t n = 4 * 64 * 128 + nb_tensor_size(x);
    assert_memory_equal(seen[0], seen[1], n * sizeof(double));
    free(seen[0]);
    free(seen[1]);
    nb_tensor_free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_against_reshape_and_permute),
        cmocka_unit_test(test_gradients_every_leading_axis_count),
        cmocka_unit_test(test_float32_gradients_match_the_composition),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
