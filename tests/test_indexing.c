/*
 * Indexing, joining and moving values: slice, index_select, gather, concat,
 * stack, where, pad, broadcast_to, squeeze, unsqueeze, permute, transpose,
 * and nb_gather_rows from a table that takes a gradient.  Forward values
 * worked out by hand; gradients against central differences on random
 * shapes, every axis, repeated indices and fan-out, in float64.
 */
#include "support.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- slice */

typedef struct {
    int axis;
    long start, stop, step;
} slice_arg;

static nb_tensor *ap_slice(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const slice_arg *s = arg;
    return nb_slice(tp, in[0], s->axis, s->start, s->stop, s->step);
}

/* the slice used twice, once through itself again: fan-out into x */
static nb_tensor *ap_slice_twice(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const slice_arg *s = arg;
    nb_tensor *y = nb_slice(tp, in[0], s->axis, s->start, s->stop, s->step);
    return nb_mul(tp, y, nb_slice(tp, in[0], s->axis, s->start, s->stop, s->step));
}

static void test_slice(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* x = [[0 1 2 3], [4 5 6 7], [8 9 10 11]] */
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(3, 4), ((double[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
    expect_values(nb_slice(tp, x, 1, 1, 3, 1), (double[]){1, 2, 5, 6, 9, 10}, 6, 1e-12);
    expect_values(nb_slice(tp, x, 1, 0, NB_END, 2), (double[]){0, 2, 4, 6, 8, 10}, 6, 1e-12);
    expect_values(nb_slice(tp, x, 0, -2, NB_END, 1), (double[]){4, 5, 6, 7, 8, 9, 10, 11}, 8, 1e-12);
    expect_values(nb_slice(tp, x, -1, -1, NB_END, 1), (double[]){3, 7, 11}, 3, 1e-12);
    expect_values(nb_slice(tp, x, 1, -3, -1, 1), (double[]){1, 2, 5, 6, 9, 10}, 6, 1e-12);
    /* stop beyond the end is clamped, as in Python */
    expect_values(nb_slice(tp, x, 0, 2, 99, 1), (double[]){8, 9, 10, 11}, 4, 1e-12);
    /* steps near LONG_MAX take the first position of the range (Python's
     * x[:, ::sys.maxsize] is the first column); the count once overflowed */
    expect_values(nb_slice(tp, x, 1, 0, NB_END, LONG_MAX), (double[]){0, 4, 8}, 3, 0);
    expect_values(nb_slice(tp, x, 1, 1, NB_END, LONG_MAX - 1), (double[]){1, 5, 9}, 3, 0);
    expect_values(nb_slice(tp, x, 0, -1, NB_END, LONG_MAX), (double[]){8, 9, 10, 11}, 4, 0);
    expect_values(nb_slice(tp, x, 1, LONG_MIN, LONG_MAX, LONG_MAX), (double[]){0, 4, 8}, 3, 0);
    /* rows 1..2 along the first axis share x's storage */
    nb_tensor *rows = nb_slice(tp, x, 0, 1, 3, 1);
    assert_ptr_equal(nb_tensor_const_data(rows), (const double *)nb_tensor_const_data(x) + 4);
    assert_int_equal(nb_tensor_dim(rows, 0), 2);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 21);
    for (int trial = 0; trial < 30; trial++) {
        size_t shape[4];
        int nd = random_shape(&rng, shape);
        slice_arg s = {(int)(nb_rng_next(&rng) % (size_t)nd), 0, NB_END, 1 + (long)(nb_rng_next(&rng) % 3)};
        long n = (long)shape[s.axis];
        s.start = (long)(nb_rng_next(&rng) % (size_t)n);
        if (nb_rng_next(&rng) & 1) s.start -= n; /* the same place, counted from the end */
        if (nb_rng_next(&rng) & 1) s.stop = s.start < 0 ? s.start + n + 1 : s.start + 1 + (long)(nb_rng_next(&rng) % (size_t)n);
        nb_tensor *in = random_input(&rng, nd, shape, -2, 2, false);
        assert_op_gradcheck(ap_slice, &s, &in, 1);
        assert_op_gradcheck(ap_slice_twice, &s, &in, 1);
        nb_tensor_free(in);
    }
}

/* ---------------------------------------------------------------- index_select */

typedef struct {
    int axis;
    size_t n;
    size_t idx[8];
} select_arg;

static nb_tensor *ap_select(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const select_arg *s = arg;
    return nb_index_select(tp, in[0], s->axis, s->idx, s->n);
}

static void test_index_select(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* an embedding: rows 2, 0, 2 of a (3, 2) table */
    nb_tensor *table = nb_from_array(NULL, NB_F64, NB_SHAPE(3, 2), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_requires_grad(table, true);
    nb_tensor *e = nb_index_select(tp, table, 0, ((size_t[]){2, 0, 2}), 3);
    expect_values(e, (double[]){5, 6, 1, 2, 5, 6}, 6, 1e-12);
    /* sum(e * w), w = [[1, 2], [3, 4], [5, 6]]: row 2 was used twice, so its
     * gradient is w[0] + w[2] = (6, 8); row 0 gets w[1] = (3, 4); row 1 none */
    nb_tensor *w = nb_from_array(tp, NB_F64, NB_SHAPE(3, 2), ((double[]){1, 2, 3, 4, 5, 6}));
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, e, w))), NB_OK);
    const double expect[6] = {3, 4, 0, 0, 6, 8};
    for (size_t i = 0; i < 6; i++) assert_close(nb_grad_get(table, i), expect[i], 0);
    /* nb_gather_rows from the table is the same op: the gradient flows (it
     * used to be dropped, and backward said no parameter was marked) */
    nb_zero_grad(table);
    nb_tape_reset(tp);
    nb_tensor *g = nb_gather_rows(tp, table, ((size_t[]){2, 0, 2}), 3);
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, g, nb_from_array(tp, NB_F64, NB_SHAPE(3, 2),
                                                                        ((double[]){1, 2, 3, 4, 5, 6}))))),
                     NB_OK);
    for (size_t i = 0; i < 6; i++) assert_close(nb_grad_get(table, i), expect[i], 0);
    nb_tensor_free(table);
    /* along axis 1, with repeats */
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    expect_values(nb_index_select(tp, x, 1, ((size_t[]){2, 2, 0}), 3), (double[]){3, 3, 1, 6, 6, 4}, 6, 1e-12);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 22);
    for (int trial = 0; trial < 30; trial++) {
        size_t shape[4];
        int nd = random_shape(&rng, shape);
        select_arg s = {(int)(nb_rng_next(&rng) % (size_t)nd), 1 + nb_rng_next(&rng) % 6, {0}};
        for (size_t k = 0; k < s.n; k++) s.idx[k] = nb_rng_next(&rng) % shape[s.axis]; /* repeats likely */
        if (nb_rng_next(&rng) & 1) s.axis -= nd;
        nb_tensor *in = random_input(&rng, nd, shape, -2, 2, false);
        assert_op_gradcheck(ap_select, &s, &in, 1);
        nb_tensor_free(in);
    }
}

/* ---------------------------------------------------------------- gather */

typedef struct {
    int axis;
    nb_tensor *index;
} gather_arg;

static nb_tensor *ap_gather(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const gather_arg *g = arg;
    return nb_gather(tp, in[0], g->axis, g->index);
}

static void test_gather(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* torch.gather(x, 1, [[0, 0], [1, 0]]) of x = [[1, 2], [3, 4]] is [[1, 1], [4, 3]] */
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2, 2), ((double[]){1, 2, 3, 4}));
    nb_tensor *idx = nb_from_array(tp, NB_F64, NB_SHAPE(2, 2), ((double[]){0, 0, 1, 0}));
    expect_values(nb_gather(tp, x, 1, idx), (double[]){1, 1, 4, 3}, 4, 1e-12);
    /* along axis 0: [[x[0][0], x[1][1]]] */
    nb_tensor *idx0 = nb_from_array(tp, NB_F64, NB_SHAPE(1, 2), ((double[]){0, 1}));
    expect_values(nb_gather(tp, x, 0, idx0), (double[]){1, 4}, 2, 1e-12);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 23);
    for (int trial = 0; trial < 30; trial++) {
        size_t shape[4], ishape[4];
        int nd = random_shape(&rng, shape);
        gather_arg g = {(int)(nb_rng_next(&rng) % (size_t)nd), NULL};
        for (int d = 0; d < nd; d++) ishape[d] = d == g.axis ? 1 + nb_rng_next(&rng) % 5 : 1 + nb_rng_next(&rng) % shape[d];
        g.index = nb_zeros(NULL, NB_F64, nd, ishape);
        for (size_t k = 0; k < nb_tensor_size(g.index); k++) nb_set(g.index, k, (double)(nb_rng_next(&rng) % shape[g.axis]));
        nb_tensor *in = random_input(&rng, nd, shape, -2, 2, false);
        assert_op_gradcheck(ap_gather, &g, &in, 1);
        nb_tensor_free(in);
        nb_tensor_free(g.index);
    }
}

/* ---------------------------------------------------------------- concat, stack */

typedef struct {
    int axis, n;
    bool stack;
    int order[6]; /* which input goes where: repeats are fan-out */
} join_arg;

static nb_tensor *ap_join(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const join_arg *j = arg;
    nb_tensor *list[6];
    for (int k = 0; k < j->n; k++) list[k] = in[j->order[k]];
    return j->stack ? nb_stack(tp, list, j->n, j->axis) : nb_concat(tp, list, j->n, j->axis);
}

static void test_concat_and_stack(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *a = nb_from_array(tp, NB_F64, NB_SHAPE(2, 2), ((double[]){1, 2, 3, 4}));
    nb_tensor *b = nb_from_array(tp, NB_F64, NB_SHAPE(2, 1), ((double[]){5, 6}));
    nb_tensor *ab[2] = {a, b}, *aa[2] = {a, a};
    expect_values(nb_concat(tp, ab, 2, 1), (double[]){1, 2, 5, 3, 4, 6}, 6, 1e-12);
    nb_tensor *c = nb_concat(tp, aa, 2, 0);
    assert_int_equal(nb_tensor_dim(c, 0), 4);
    expect_values(c, (double[]){1, 2, 3, 4, 1, 2, 3, 4}, 8, 1e-12);
    nb_tensor *s = nb_stack(tp, aa, 2, 2); /* (2, 2, 2): s[i][j][k] = a[i][j] */
    assert_int_equal(nb_tensor_ndim(s), 3);
    expect_values(s, (double[]){1, 1, 2, 2, 3, 3, 4, 4}, 8, 1e-12);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 24);
    for (int trial = 0; trial < 30; trial++) {
        size_t base[4];
        int nd = random_shape(&rng, base);
        join_arg j = {(int)(nb_rng_next(&rng) % (size_t)(nd + 1)), 1 + (int)(nb_rng_next(&rng) % 6),
                      trial % 2 == 0, {0}};
        if (!j.stack && j.axis == nd) j.axis = nd - 1;
        nb_tensor *in[3];
        for (int k = 0; k < 3; k++) {
            size_t shape[4];
            memcpy(shape, base, sizeof shape);
            if (!j.stack) shape[j.axis] = 1 + nb_rng_next(&rng) % 3; /* concat: sizes differ along the axis */
            in[k] = random_input(&rng, nd, shape, -2, 2, false);
        }
        for (int k = 0; k < j.n; k++) j.order[k] = (int)(nb_rng_next(&rng) % 3);
        if (nb_rng_next(&rng) & 1) j.axis -= j.stack ? nd + 1 : nd;
        assert_op_gradcheck(ap_join, &j, in, 3);
        for (int k = 0; k < 3; k++) nb_tensor_free(in[k]);
    }
}

/* ---------------------------------------------------------------- where */

static nb_tensor *ap_where(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    return nb_where(tp, (nb_tensor *)arg, in[0], in[1]);
}

/* a causal mask: where(keep, scores, -1e9), as attention uses it */
static void test_where(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *keep = nb_from_array(tp, NB_F64, NB_SHAPE(2, 2), ((double[]){1, 0, 1, 1}));
    nb_tensor *scores = nb_from_array(NULL, NB_F64, NB_SHAPE(2, 2), ((double[]){0.5, 0.7, -1, 2}));
    nb_requires_grad(scores, true);
    nb_tensor *masked = nb_where(tp, keep, scores, nb_scalar(tp, NB_F64, -1e9));
    expect_values(masked, (double[]){0.5, -1e9, -1, 2}, 4, 1e-12);
    assert_int_equal(nb_backward(nb_sum(tp, masked)), NB_OK);
    expect_values(nb_scalar(tp, NB_F64, nb_grad_get(scores, 1)), (double[]){0}, 1, 1e-12);
    assert_close(nb_grad_get(scores, 0), 1, 0);
    /* only a and b make the result need a gradient: none flows to the
     * condition (PyTorch's is boolean) */
    nb_tensor *c = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){1, 0}));
    nb_requires_grad(c, true);
    nb_tensor *a = nb_ones(tp, NB_F64, NB_SHAPE(2)), *b = nb_zeros(tp, NB_F64, NB_SHAPE(2));
    assert_false(nb_tensor_requires_grad(nb_where(tp, c, a, b)));
    assert_true(nb_tensor_requires_grad(nb_where(tp, c, scores, b)));
    /* gather's index, alike */
    assert_false(nb_tensor_requires_grad(nb_gather(tp, nb_ones(tp, NB_F64, NB_SHAPE(2, 2)), 1, nb_reshape(tp, c, NB_DIMS(2, 1)))));
    nb_tensor_free(c);
    nb_tensor_free(scores);
    nb_tape_free(tp);

    /* every broadcasting pattern of the three */
    nb_rng rng;
    nb_rng_seed(&rng, 25);
    const size_t shapes[][3] = {{3, 4, 0}, {4, 0, 0}, {1, 4, 0}, {3, 1, 0}, {1, 1, 0}, {2, 3, 4}};
    const int nds[] = {2, 1, 2, 2, 2, 3};
    for (int trial = 0; trial < 36; trial++) {
        int ic = trial % 6, ia = (trial / 6) % 6, ib = (trial + 3) % 6;
        if (nds[ic] == 3 || nds[ia] == 3 || nds[ib] == 3) ic = ia = ib = 5;
        nb_tensor *cond = nb_zeros(NULL, NB_F64, nds[ic], shapes[ic]);
        for (size_t k = 0; k < nb_tensor_size(cond); k++) nb_set(cond, k, (double)(nb_rng_next(&rng) % 2));
        nb_tensor *in[2] = {random_input(&rng, nds[ia], shapes[ia], -2, 2, false),
                            random_input(&rng, nds[ib], shapes[ib], -2, 2, false)};
        assert_op_gradcheck(ap_where, cond, in, 2);
        nb_tensor *same[2] = {in[0], in[0]}; /* fan-out: the same tensor on both sides */
        assert_op_gradcheck(ap_where, cond, same, 2);
        nb_tensor_free(cond);
        nb_tensor_free(in[0]);
        nb_tensor_free(in[1]);
    }
}

/* ---------------------------------------------------------------- pad, broadcast_to */

static nb_tensor *ap_pad(nb_tape *tp, nb_tensor *const *in, const void *arg) { return nb_pad(tp, in[0], arg); }

typedef struct {
    int nd;
    size_t shape[4];
} shape_arg;

static nb_tensor *ap_broadcast(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const shape_arg *s = arg;
    return nb_broadcast_to(tp, in[0], s->nd, s->shape);
}

static void test_pad_and_broadcast_to(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2, 2), ((double[]){1, 2, 3, 4}));
    /* one zero row above, one zero column on each side */
    expect_values(nb_pad(tp, x, ((size_t[]){1, 0, 1, 1})), (double[]){0, 0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0}, 12, 1e-12);
    nb_tensor *v = nb_from_array(tp, NB_F64, NB_SHAPE(2, 1), ((double[]){7, 8}));
    expect_values(nb_broadcast_to(tp, v, NB_SHAPE(2, 2, 3)), (double[]){7, 7, 7, 8, 8, 8, 7, 7, 7, 8, 8, 8}, 12, 1e-12);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 26);
    for (int trial = 0; trial < 30; trial++) {
        size_t shape[4], pads[8];
        int nd = random_shape(&rng, shape);
        for (int k = 0; k < 2 * nd; k++) pads[k] = nb_rng_next(&rng) % 3;
        nb_tensor *in = random_input(&rng, nd, shape, -2, 2, false);
        assert_op_gradcheck(ap_pad, pads, &in, 1);
        /* a target shape: extra leading axes, and size-1 axes grown */
        shape_arg target = {nd + (int)(nb_rng_next(&rng) % (size_t)(5 - nd)), {0}};
        for (int d = 0; d < target.nd; d++) {
            int dx = d - (target.nd - nd);
            target.shape[d] = dx < 0 ? 1 + nb_rng_next(&rng) % 3 : shape[dx];
        }
        nb_tensor *ones = nb_zeros(NULL, NB_F64, nd, shape); /* the same shape with some axes 1 */
        size_t small[4];
        for (int d = 0; d < nd; d++) small[d] = nb_rng_next(&rng) % 2 ? 1 : shape[d];
        nb_tensor_free(ones);
        nb_tensor *narrow = random_input(&rng, nd, small, -2, 2, false);
        assert_op_gradcheck(ap_broadcast, &target, &narrow, 1);
        nb_tensor_free(narrow);
        nb_tensor_free(in);
    }
}

/* ---------------------------------------------------------------- squeeze, permute */

typedef struct {
    int axes[4];
} perm_arg;

static nb_tensor *ap_permute(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    return nb_permute(tp, in[0], ((const perm_arg *)arg)->axes);
}
static nb_tensor *ap_transpose(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    const perm_arg *p = arg;
    return nb_transpose(tp, in[0], p->axes[0], p->axes[1]);
}
static nb_tensor *ap_unsqueeze_squeeze(nb_tape *tp, nb_tensor *const *in, const void *arg) {
    int axis = *(const int *)arg;
    nb_tensor *u = nb_unsqueeze(tp, in[0], axis);
    return nb_mul(tp, u, nb_unsqueeze(tp, nb_squeeze(tp, u, axis), axis));
}

static void test_squeeze_and_permute(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* x (2, 3) = [[0 1 2], [3 4 5]]; permute (1, 0) is its transpose */
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){0, 1, 2, 3, 4, 5}));
    expect_values(nb_permute(tp, x, ((int[]){1, 0})), (double[]){0, 3, 1, 4, 2, 5}, 6, 1e-12);
    nb_tensor *u = nb_unsqueeze(tp, x, 1);
    assert_int_equal(nb_tensor_ndim(u), 3);
    assert_int_equal(nb_tensor_dim(u, 1), 1);
    assert_ptr_equal(nb_tensor_const_data(u), nb_tensor_const_data(x));
    nb_tensor *s = nb_squeeze(tp, u, -2);
    assert_int_equal(nb_tensor_ndim(s), 2);
    /* y (2, 3, 4) permuted (2, 0, 1): y'[k][i][j] = y[i][j][k] */
    double v[24];
    for (int i = 0; i < 24; i++) v[i] = i;
    nb_tensor *y = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3, 4), v);
    nb_tensor *p = nb_permute(tp, y, ((int[]){2, 0, 1}));
    assert_int_equal(nb_tensor_dim(p, 0), 4);
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < 3; j++)
            for (size_t k = 0; k < 4; k++)
                assert_close(nb_get_at(p, (size_t[]){k, i, j}), (double)((i * 3 + j) * 4 + k), 0);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 27);
    for (int trial = 0; trial < 30; trial++) {
        size_t shape[4];
        int nd = random_shape(&rng, shape);
        perm_arg perm;
        for (int d = 0; d < nd; d++) perm.axes[d] = d;
        for (int d = nd - 1; d > 0; d--) { /* a random permutation */
            int k = (int)(nb_rng_next(&rng) % (size_t)(d + 1)), t = perm.axes[d];
            perm.axes[d] = perm.axes[k];
            perm.axes[k] = t;
        }
        nb_tensor *in = random_input(&rng, nd, shape, -2, 2, false);
        assert_op_gradcheck(ap_permute, &perm, &in, 1);
        perm_arg t = {{(int)(nb_rng_next(&rng) % (size_t)nd), (int)(nb_rng_next(&rng) % (size_t)nd) - nd}};
        assert_op_gradcheck(ap_transpose, &t, &in, 1);
        int axis = (int)(nb_rng_next(&rng) % (size_t)(nd + 1));
        assert_op_gradcheck(ap_unsqueeze_squeeze, &axis, &in, 1);
        nb_tensor_free(in);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slice),
        cmocka_unit_test(test_index_select),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_concat_and_stack),
        cmocka_unit_test(test_where),
        cmocka_unit_test(test_pad_and_broadcast_to),
        cmocka_unit_test(test_squeeze_and_permute),
    };
    return cmocka_run_group_tests_name("indexing", tests, NULL, NULL);
}
