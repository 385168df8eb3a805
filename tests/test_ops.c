/*
 * Every op: forward values worked out by hand, and gradients checked against
 * central differences (nb_gradcheck) on random shapes, with every
 * broadcasting pattern and with fan-out (an input used twice).
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A gradcheck of op(x...) reduces the output with fixed random weights R:
 *   f(x) = sum(op(x) * R)
 * so that every output element gets a different upstream gradient. */
typedef nb_tensor *(*apply_fn)(nb_tape *tp, nb_tensor *const *in);

static nb_tensor *weighted_sum(nb_tape *tp, nb_tensor *y) {
    nb_rng rng;
    nb_rng_seed(&rng, 1234); /* the same R on every evaluation */
    nb_tensor *R = nb_rand_uniform(tp, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
    return nb_sum(tp, nb_mul(tp, y, R));
}

static nb_tensor *through(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    return weighted_sum(tp, ((apply_fn)user)(tp, in));
}

static void check_op(apply_fn op, int n, nb_tensor *const *in) {
    assert_gradcheck(through, in, n, (void *)op);
}

/* ---------------------------------------------------------------- element-wise */

#define APPLY1(name, expr) \
    static nb_tensor *name(nb_tape *tp, nb_tensor *const *in) { return (expr); }

APPLY1(ap_neg, nb_neg(tp, in[0]))
APPLY1(ap_scale, nb_scale(tp, in[0], -2.5))
APPLY1(ap_add_scalar, nb_add_scalar(tp, in[0], 0.75))
APPLY1(ap_exp, nb_exp(tp, in[0]))
APPLY1(ap_log, nb_log(tp, in[0]))
APPLY1(ap_sigmoid, nb_sigmoid(tp, in[0]))
APPLY1(ap_tanh, nb_tanh(tp, in[0]))
APPLY1(ap_relu, nb_relu(tp, in[0]))
APPLY1(ap_leaky, nb_leaky_relu(tp, in[0], 0.01))
APPLY1(ap_square, nb_square(tp, in[0]))
APPLY1(ap_pow, nb_pow(tp, in[0], 2.5))
APPLY1(ap_sin, nb_sin(tp, in[0]))
APPLY1(ap_cos, nb_cos(tp, in[0]))

static void test_unary_gradients(void **state) {
    (void)state;
    struct { apply_fn f; double lo, hi; bool kink; } cases[] = {
        {ap_neg, -3, 3, false},    {ap_scale, -3, 3, false}, {ap_add_scalar, -3, 3, false},
        {ap_exp, -3, 3, false},    {ap_log, 0.2, 4, false},  {ap_sigmoid, -6, 6, false},
        {ap_tanh, -3, 3, false},   {ap_relu, -3, 3, true},   {ap_leaky, -3, 3, true},
        {ap_square, -3, 3, false}, {ap_pow, 0.3, 3, false},  {ap_sin, -3, 3, false},
        {ap_cos, -3, 3, false},
    };
    nb_rng rng;
    nb_rng_seed(&rng, 10);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int trial = 0; trial < 3; trial++) {
            /* A random shape of 0 to 4 dimensions of sizes 1 to 4. */
            size_t shape[4];
            int nd = (int)(nb_rng_next(&rng) % 5);
            for (int d = 0; d < nd; d++) shape[d] = 1 + nb_rng_next(&rng) % 4;
            nb_tensor *x = random_input(&rng, nd, shape, cases[c].lo, cases[c].hi, cases[c].kink);
            check_op(cases[c].f, 1, &x);
            nb_tensor_free(x);
        }
}

static void test_unary_values(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(4), ((double[]){-2, -0.5, 0, 3}));
    /* sigmoid(0) = 1/2; sigmoid(-2) = 1/(1+e^2) = 0.11920292; tanh(3) = 0.99505475 */
    nb_tensor *s = nb_sigmoid(tp, x), *t = nb_tanh(tp, x);
    assert_close(nb_get(s, 2), 0.5, 1e-15);
    assert_close(nb_get(s, 0), 1 / (1 + exp(2.0)), 1e-15);
    assert_close(nb_get(t, 3), 0.99505475368673, 1e-12);
    nb_tensor *r = nb_relu(tp, x), *l = nb_leaky_relu(tp, x, 0.1);
    const double relu[4] = {0, 0, 0, 3}, leaky[4] = {-0.2, -0.05, 0, 3};
    for (size_t i = 0; i < 4; i++) {
        assert_close(nb_get(r, i), relu[i], 0);
        assert_close(nb_get(l, i), leaky[i], 1e-15);
    }
    /* pow(3, 2.5) = 9 * sqrt(3) = 15.588457 */
    assert_close(nb_get(nb_pow(tp, x, 2.5), 3), 9 * sqrt(3.0), 1e-12);
    /* At extreme inputs the activations stay finite. */
    nb_tensor *big = nb_from_array(tp, NB_F32, NB_SHAPE(2), ((double[]){-1e4, 1e4}));
    nb_tensor *sb = nb_sigmoid(tp, big), *tb = nb_tanh(tp, big);
    assert_close(nb_get(sb, 0), 0, 0);
    assert_close(nb_get(sb, 1), 1, 0);
    assert_close(nb_get(tb, 0), -1, 0);
    assert_close(nb_get(tb, 1), 1, 0);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- broadcasting */

APPLY1(ap_add, nb_add(tp, in[0], in[1]))
APPLY1(ap_sub, nb_sub(tp, in[0], in[1]))
APPLY1(ap_mul, nb_mul(tp, in[0], in[1]))
APPLY1(ap_div, nb_div(tp, in[0], in[1]))

typedef struct { int na; size_t a[4]; int nb; size_t b[4]; int nout; size_t out[4]; } bcast_case;

/* Every way two shapes can meet: equal, a trailing vector (a bias row), a
 * scalar on either side, a column against a row, missing leading dimensions,
 * and size-1 dimensions in the middle. */
static const bcast_case bcast_cases[] = {
    {2, {3, 4}, 2, {3, 4}, 2, {3, 4}},
    {2, {3, 4}, 1, {4}, 2, {3, 4}},
    {1, {4}, 2, {3, 4}, 2, {3, 4}},
    {2, {3, 4}, 0, {0}, 2, {3, 4}},
    {0, {0}, 2, {3, 4}, 2, {3, 4}},
    {0, {0}, 0, {0}, 0, {0}},
    {2, {3, 1}, 2, {1, 4}, 2, {3, 4}},
    {2, {3, 4}, 2, {3, 1}, 2, {3, 4}},
    {2, {1, 4}, 2, {3, 4}, 2, {3, 4}},
    {3, {2, 3, 4}, 2, {3, 1}, 3, {2, 3, 4}},
    {3, {2, 1, 4}, 3, {1, 3, 1}, 3, {2, 3, 4}},
    {4, {2, 1, 3, 1}, 3, {4, 1, 5}, 4, {2, 4, 3, 5}},
    {1, {5}, 1, {1}, 1, {5}},
    {3, {2, 3, 4}, 3, {2, 3, 4}, 3, {2, 3, 4}},
};

static void test_broadcast_shapes_and_gradients(void **state) {
    (void)state;
    apply_fn ops[] = {ap_add, ap_sub, ap_mul, ap_div};
    nb_rng rng;
    nb_rng_seed(&rng, 11);
    for (size_t c = 0; c < sizeof bcast_cases / sizeof *bcast_cases; c++) {
        const bcast_case *bc = &bcast_cases[c];
        for (size_t o = 0; o < 4; o++) {
            nb_tensor *a = random_input(&rng, bc->na, bc->a, -2, 2, false);
            /* Divisors stay away from zero: |b| in [0.5, 2]. */
            nb_tensor *b = random_input(&rng, bc->nb, bc->b, 0.5, 2, false);
            if (nb_rng_uniform(&rng) < 0.5) nb_set(b, 0, -nb_get(b, 0));
            nb_tape *tp = nb_tape_new();
            nb_tensor *in[2] = {a, b};
            nb_tensor *y = ops[o](tp, in);
            assert_ok(y);
            assert_int_equal(nb_tensor_ndim(y), bc->nout);
            for (int d = 0; d < bc->nout; d++) assert_int_equal(nb_tensor_dim(y, d), bc->out[d]);
            nb_tape_free(tp);
            check_op(ops[o], 2, in);
            nb_tensor_free(a);
            nb_tensor_free(b);
        }
    }
}

/* Random compatible shape pairs: b takes a's shape, drops some leading
 * dimensions and sets others to 1 (and sometimes a does the same). */
static void test_broadcast_random_shapes(void **state) {
    (void)state;
    apply_fn ops[] = {ap_add, ap_sub, ap_mul, ap_div};
    nb_rng rng;
    nb_rng_seed(&rng, 12);
    for (int trial = 0; trial < 40; trial++) {
        size_t sa[4], sb[4];
        int na = 1 + (int)(nb_rng_next(&rng) % 4);
        for (int d = 0; d < na; d++) sa[d] = 1 + nb_rng_next(&rng) % 3;
        int drop = (int)(nb_rng_next(&rng) % (size_t)(na + 1)), nbd = na - drop;
        for (int d = 0; d < nbd; d++) {
            sb[d] = sa[d + drop];
            if (nb_rng_uniform(&rng) < 0.4) sb[d] = 1;
            if (nb_rng_uniform(&rng) < 0.2 && sb[d] > 1) sa[d + drop] = 1;
        }
        nb_tensor *a = random_input(&rng, na, sa, -2, 2, false);
        nb_tensor *b = random_input(&rng, nbd, sb, 0.5, 2, false);
        nb_tensor *in[2] = {a, b}, *swapped[2] = {b, a};
        apply_fn op = ops[trial % 4];
        check_op(op, 2, in);
        if (op != ap_div) check_op(op, 2, swapped);
        nb_tensor_free(a);
        nb_tensor_free(b);
    }
}

static void test_broadcast_values(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* [[1, 2, 3], [4, 5, 6]] + [10, 20, 30] = [[11, 22, 33], [14, 25, 36]] */
    nb_tensor *a = nb_from_array(tp, NB_F32, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_tensor *b = nb_from_array(tp, NB_F32, NB_SHAPE(3), ((double[]){10, 20, 30}));
    nb_tensor *c = nb_from_array(tp, NB_F32, NB_SHAPE(2, 1), ((double[]){2, 4}));
    const double sum[6] = {11, 22, 33, 14, 25, 36};
    /* [[1, 2, 3], [4, 5, 6]] / [[2], [4]] = [[0.5, 1, 1.5], [1, 1.25, 1.5]] */
    const double quo[6] = {0.5, 1, 1.5, 1, 1.25, 1.5};
    nb_tensor *s = nb_add(tp, a, b), *q = nb_div(tp, a, c);
    for (size_t i = 0; i < 6; i++) {
        assert_close(nb_get(s, i), sum[i], 0);
        assert_close(nb_get(q, i), quo[i], 0);
    }
    /* The gradient of a broadcast bias is the column sum of the upstream
     * gradient: d sum(a + b)/db_j = number of rows = 2. */
    nb_requires_grad(b, true);
    assert_int_equal(nb_backward(nb_sum(tp, nb_add(tp, a, b))), NB_OK);
    for (size_t j = 0; j < 3; j++) assert_close(nb_grad_get(b, j), 2, 0);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- fan-out */

static void test_fan_out(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *a = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, -2, 3}));
    nb_requires_grad(a, true);
    /* b = a + a: db/da = 2 for each element. */
    assert_int_equal(nb_backward(nb_sum(tp, nb_add(tp, a, a))), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(a, i), 2, 0);
    /* c = a * a: dc/da = 2a. */
    nb_zero_grad(a);
    nb_tape_reset(tp);
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, a, a))), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(a, i), 2 * nb_get(a, i), 0);
    /* d = sigmoid(a) * a + exp(a) - a / 2 uses a four times:
     * dd/da = s(1-s) a + s + e^a - 1/2. */
    nb_zero_grad(a);
    nb_tape_reset(tp);
    nb_tensor *s = nb_sigmoid(tp, a);
    nb_tensor *d = nb_sub(tp, nb_add(tp, nb_mul(tp, s, a), nb_exp(tp, a)), nb_scale(tp, a, 0.5));
    assert_int_equal(nb_backward(nb_sum(tp, d)), NB_OK);
    for (size_t i = 0; i < 3; i++) {
        double x = nb_get(a, i), sx = 1 / (1 + exp(-x));
        assert_close(nb_grad_get(a, i), sx * (1 - sx) * x + sx + exp(x) - 0.5, 1e-12);
    }
    nb_tensor_free(a);
    nb_tape_free(tp);
}

static nb_tensor *diamond(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    /* A DAG with shared subexpressions and broadcasting fan-out. */
    nb_tensor *h = nb_tanh(tp, nb_matmul(tp, in[0], in[1]));  /* (3, 4) */
    nb_tensor *g = nb_mul(tp, h, in[2]);                      /* (3, 4) * (4,) */
    nb_tensor *k = nb_add(tp, nb_div(tp, g, nb_add_scalar(tp, nb_square(tp, h), 1)), in[2]);
    return nb_mean(tp, nb_mul(tp, k, nb_sigmoid(tp, g)));
}

static void test_fan_out_dag(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 13);
    nb_tensor *in[3] = {random_input(&rng, NB_SHAPE(3, 5), -1, 1, false),
                        random_input(&rng, NB_SHAPE(5, 4), -1, 1, false),
                        random_input(&rng, NB_SHAPE(4), -1, 1, false)};
    assert_gradcheck(diamond, in, 3, NULL);
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
}

/* ---------------------------------------------------------------- matmul */

static bool trans_a, trans_b;
APPLY1(ap_matmul, nb_matmul_t(tp, in[0], in[1], trans_a, trans_b))
APPLY1(ap_matmul_self, nb_matmul_t(tp, in[0], in[0], trans_a, trans_b))

static void test_matmul(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* [[1, 2], [3, 4]] . [[5, 6], [7, 8]] = [[19, 22], [43, 50]];
     * with B transposed: [[1*5+2*6, 1*7+2*8], [3*5+4*6, 3*7+4*8]] = [[17, 23], [39, 53]] */
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tensor *A = nb_from_array(tp, dt, NB_SHAPE(2, 2), ((double[]){1, 2, 3, 4}));
        nb_tensor *B = nb_from_array(tp, dt, NB_SHAPE(2, 2), ((double[]){5, 6, 7, 8}));
        nb_tensor *C = nb_matmul(tp, A, B), *D = nb_matmul_t(tp, A, B, false, true);
        const double c[4] = {19, 22, 43, 50}, d[4] = {17, 23, 39, 53};
        for (size_t i = 0; i < 4; i++) {
            assert_close(nb_get(C, i), c[i], 0);
            assert_close(nb_get(D, i), d[i], 0);
        }
    }
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 14);
    for (int t = 0; t < 4; t++) {
        trans_a = t & 1;
        trans_b = t & 2;
        size_t m = 3, k = 4, n = 2;
        size_t sa[2] = {trans_a ? k : m, trans_a ? m : k}, sb[2] = {trans_b ? n : k, trans_b ? k : n};
        nb_tensor *in[2] = {random_input(&rng, 2, sa, -1, 1, false),
                            random_input(&rng, 2, sb, -1, 1, false)};
        check_op(ap_matmul, 2, in);
        nb_tensor_free(in[0]);
        nb_tensor_free(in[1]);
        /* X . X, X . Xᵀ and friends: fan-out through both operands. */
        nb_tensor *sq = random_input(&rng, NB_SHAPE(3, 3), -1, 1, false);
        check_op(ap_matmul_self, 1, &sq);
        nb_tensor_free(sq);
    }
}

/* linear = matmul + bias in one op: the same values, every transpose and
 * both kinds of bias pass gradcheck (with the bias used twice too). */
static bool lin_column;
APPLY1(ap_linear, nb_linear_t(tp, in[0], in[1], in[2], trans_a, trans_b))
APPLY1(ap_linear_fanout, nb_add(tp, nb_linear_t(tp, in[0], in[1], in[2], trans_a, trans_b),
                                 lin_column ? in[2] : nb_reshape(tp, in[2], NB_DIMS(1, -1))))

static void test_linear(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 21);
    for (int t = 0; t < 8; t++) {
        trans_a = t & 1;
        trans_b = t & 2;
        lin_column = t & 4;
        size_t m = 3, k = 4, n = 2;
        size_t sa[2] = {trans_a ? k : m, trans_a ? m : k}, sb[2] = {trans_b ? n : k, trans_b ? k : n};
        size_t sc[2] = {lin_column ? m : n, 1};
        nb_tensor *in[3] = {random_input(&rng, 2, sa, -1, 1, false), random_input(&rng, 2, sb, -1, 1, false),
                            random_input(&rng, lin_column ? 2 : 1, sc, -1, 1, false)};
        check_op(ap_linear, 3, in);
        check_op(ap_linear_fanout, 3, in);
        /* the same numbers as matmul then add */
        nb_tape *tp = nb_tape_new();
        nb_tensor *fused = nb_linear_t(tp, in[0], in[1], in[2], trans_a, trans_b);
        nb_tensor *plain = nb_add(tp, nb_matmul_t(tp, in[0], in[1], trans_a, trans_b), in[2]);
        assert_ok(fused);
        for (size_t i = 0; i < m * n; i++) assert_close(nb_get(fused, i), nb_get(plain, i), 1e-14);
        nb_tape_free(tp);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
    nb_tape *tp = nb_tape_new();
    nb_tensor *A = nb_ones(tp, NB_F32, NB_SHAPE(3, 4)), *W = nb_ones(tp, NB_F32, NB_SHAPE(4, 2));
    assert_int_equal(nb_tensor_status(nb_linear(tp, A, W, nb_ones(tp, NB_F32, NB_SHAPE(3)))), NB_ERR_SHAPE);
    assert_message_has(nb_tape_error(tp), "linear", "bias (3,)", "(2,) or (1, 2)", "(3, 1)");
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- reductions */

static int red_axis;
static bool red_keep;
APPLY1(ap_sum, nb_sum(tp, in[0]))
APPLY1(ap_mean, nb_mean(tp, in[0]))
APPLY1(ap_sum_axis, nb_sum_axis(tp, in[0], red_axis, red_keep))
APPLY1(ap_mean_axis, nb_mean_axis(tp, in[0], red_axis, red_keep))

static void test_reductions(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* [[1, 2, 3], [4, 5, 6]]: sum 21, mean 3.5, column sums [5, 7, 9], row means [2, 5] */
    nb_tensor *a = nb_from_array(tp, NB_F32, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    assert_close(nb_item(nb_sum(tp, a)), 21, 0);
    assert_close(nb_item(nb_mean(tp, a)), 3.5, 0);
    nb_tensor *cols = nb_sum_axis(tp, a, 0, false), *rows = nb_mean_axis(tp, a, -1, true);
    assert_int_equal(nb_tensor_ndim(cols), 1);
    assert_int_equal(nb_tensor_dim(rows, 0), 2);
    assert_int_equal(nb_tensor_dim(rows, 1), 1);
    for (size_t j = 0; j < 3; j++) assert_close(nb_get(cols, j), 5 + 2 * (double)j, 0);
    assert_close(nb_get(rows, 0), 2, 0);
    assert_close(nb_get(rows, 1), 5, 0);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 15);
    nb_tensor *x = random_input(&rng, NB_SHAPE(2, 3, 4), -2, 2, false);
    check_op(ap_sum, 1, &x);
    check_op(ap_mean, 1, &x);
    for (red_axis = -3; red_axis < 3; red_axis++)
        for (int keep = 0; keep < 2; keep++) {
            red_keep = keep;
            check_op(ap_sum_axis, 1, &x);
            check_op(ap_mean_axis, 1, &x);
        }
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- shapes */

static int tr_a0, tr_a1;
APPLY1(ap_reshape, nb_reshape(tp, in[0], NB_DIMS(4, -1)))
APPLY1(ap_transpose, nb_transpose(tp, in[0], tr_a0, tr_a1))
APPLY1(ap_reshape_fanout, nb_add(tp, nb_reshape(tp, in[0], NB_DIMS(24)),
                                 nb_reshape(tp, nb_transpose(tp, in[0], 0, 2), NB_DIMS(24))))

static void test_shape_ops(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* transpose([[1, 2, 3], [4, 5, 6]]) = [[1, 4], [2, 5], [3, 6]] */
    nb_tensor *a = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_tensor *t = nb_transpose(tp, a, 0, 1);
    const double tv[6] = {1, 4, 2, 5, 3, 6};
    for (size_t i = 0; i < 6; i++) assert_close(nb_get(t, i), tv[i], 0);
    nb_tensor *r = nb_reshape(tp, a, NB_DIMS(3, -1));
    assert_int_equal(nb_tensor_dim(r, 0), 3);
    assert_int_equal(nb_tensor_dim(r, 1), 2);
    assert_ptr_equal(nb_tensor_data(r), nb_tensor_data(a)); /* a view */
    nb_tensor *c = nb_cast(tp, a, NB_F32);
    assert_int_equal(nb_tensor_dtype(c), NB_F32);
    assert_close(nb_get(c, 5), 6, 0);
    /* d sum(cast(a) * w)/da = w, converted back to a's dtype. */
    nb_requires_grad(a, true);
    nb_tensor *w = nb_from_array(tp, NB_F32, NB_SHAPE(2, 3), ((double[]){1, -2, 0.5, 4, 0, 3}));
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, nb_cast(tp, a, NB_F32), w))), NB_OK);
    for (size_t i = 0; i < 6; i++) assert_close(nb_grad_get(a, i), nb_get(w, i), 0);
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 16);
    nb_tensor *x = random_input(&rng, NB_SHAPE(2, 3, 4), -2, 2, false);
    check_op(ap_reshape, 1, &x);
    check_op(ap_reshape_fanout, 1, &x);
    for (tr_a0 = 0; tr_a0 < 3; tr_a0++)
        for (tr_a1 = -3; tr_a1 < 0; tr_a1++) check_op(ap_transpose, 1, &x);
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- softmax */

static int sm_axis;
APPLY1(ap_softmax, nb_softmax(tp, in[0], sm_axis))
APPLY1(ap_log_softmax, nb_log_softmax(tp, in[0], sm_axis))

static void test_softmax(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* softmax([0, ln 2, ln 5]) = [1, 2, 5] / 8 */
    nb_tensor *x = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){0, log(2.0), log(5.0)}));
    nb_tensor *s = nb_softmax(tp, x, 0), *ls = nb_log_softmax(tp, x, 0);
    const double p[3] = {1.0 / 8, 2.0 / 8, 5.0 / 8};
    for (size_t i = 0; i < 3; i++) {
        assert_close(nb_get(s, i), p[i], 1e-15);
        assert_close(nb_get(ls, i), log(p[i]), 1e-15);
    }
    /* Stable for large inputs: softmax([1e4, 1e4 + ln 3]) = [1/4, 3/4]. */
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tensor *big = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){1e4, 1e4 + log(3.0)}));
        nb_tensor *sb = nb_softmax(tp, big, -1), *lb = nb_log_softmax(tp, big, -1);
        assert_close(nb_get(sb, 0), 0.25, 2e-3);
        assert_close(nb_get(sb, 1), 0.75, 2e-3);
        assert_true(isfinite(nb_get(lb, 0)) && isfinite(nb_get(lb, 1)));
        nb_tensor *neg = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){-1e4, 0}));
        assert_close(nb_get(nb_log_softmax(tp, neg, 0), 0), -1e4, 1);
    }
    nb_tape_free(tp);

    nb_rng rng;
    nb_rng_seed(&rng, 17);
    nb_tensor *in = random_input(&rng, NB_SHAPE(3, 4, 2), -3, 3, false);
    for (sm_axis = -3; sm_axis < 3; sm_axis++) {
        check_op(ap_softmax, 1, &in);
        check_op(ap_log_softmax, 1, &in);
    }
    nb_tensor_free(in);
}

/* ---------------------------------------------------------------- losses */

static int ce_axis;
static nb_tensor *loss_mse(nb_tape *tp, nb_tensor *const *in, int n, void *u) {
    (void)n, (void)u;
    return nb_mse(tp, in[0], in[1]);
}
static nb_tensor *loss_bce(nb_tape *tp, nb_tensor *const *in, int n, void *u) {
    (void)n, (void)u;
    return nb_bce(tp, in[0], in[1]);
}
static nb_tensor *loss_bce_logits(nb_tape *tp, nb_tensor *const *in, int n, void *u) {
    (void)n, (void)u;
    return nb_bce_logits(tp, in[0], in[1]);
}
static nb_tensor *loss_ce(nb_tape *tp, nb_tensor *const *in, int n, void *u) {
    (void)n, (void)u;
    return nb_softmax_cross_entropy(tp, in[0], in[1], ce_axis);
}

static void test_loss_values(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    /* mse([1, 2, 3], [1, 0, 6]) = (0 + 4 + 9) / 3 = 13/3 */
    nb_tensor *p = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_tensor *t = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, 0, 6}));
    assert_close(nb_item(nb_mse(tp, p, t)), 13.0 / 3, 1e-15);
    /* bce([0.8, 0.4], [1, 0]) = -(ln 0.8 + ln 0.6) / 2 = 0.36698 */
    nb_tensor *q = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){0.8, 0.4}));
    nb_tensor *y = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 0}));
    assert_close(nb_item(nb_bce(tp, q, y)), -(log(0.8) + log(0.6)) / 2, 1e-15);
    /* bce_logits(z, y) = bce(sigmoid(z), y): with z = ln 4, sigmoid = 0.8 */
    nb_tensor *z = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){log(4.0), log(2.0 / 3)}));
    assert_close(nb_item(nb_bce_logits(tp, z, y)), -(log(0.8) + log(0.6)) / 2, 1e-15);
    /* Cross-entropy over classes (axis 1) for 2 examples, targets by index [2, 0]:
     * logits [[0, ln 2, ln 5], [ln 3, 0, 0]]: softmax rows [1,2,5]/8 and [3,1,1]/5,
     * loss = -(ln(5/8) + ln(3/5)) / 2 */
    nb_tensor *lg = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3),
                                  ((double[]){0, log(2.0), log(5.0), log(3.0), 0, 0}));
    nb_tensor *idx = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){2, 0}));
    nb_tensor *hot = nb_from_array(tp, NB_F64, NB_SHAPE(2, 3), ((double[]){0, 0, 1, 1, 0, 0}));
    double expected = -(log(5.0 / 8) + log(3.0 / 5)) / 2;
    assert_close(nb_item(nb_softmax_cross_entropy(tp, lg, idx, 1)), expected, 1e-15);
    assert_close(nb_item(nb_softmax_cross_entropy(tp, lg, hot, -1)), expected, 1e-15);
    /* The same in the seeds' layout: classes along axis 0, examples along 1. */
    nb_tensor *lgT = nb_transpose(tp, lg, 0, 1);
    assert_close(nb_item(nb_softmax_cross_entropy(tp, lgT, idx, 0)), expected, 1e-15);
    /* class indices take no gradient, so alone they do not make the loss need one */
    nb_requires_grad(idx, true);
    assert_false(nb_tensor_requires_grad(nb_softmax_cross_entropy(tp, lg, idx, 1)));

    /* Finite at logits of +-1e4, in both dtypes. */
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tensor *zz = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){1e4, -1e4}));
        nb_tensor *yy = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){0, 1}));
        nb_tensor *l = nb_bce_logits(tp, zz, yy);
        /* max(z,0) - z t + log(1 + e^-|z|) = 1e4 for each: mean 1e4 */
        assert_close(nb_item(l), 1e4, 1e-2);
        nb_tensor *zc = nb_from_array(tp, dt, NB_SHAPE(1, 2), ((double[]){1e4, -1e4}));
        nb_tensor *c0 = nb_from_array(tp, dt, NB_SHAPE(1), ((double[]){1}));
        assert_close(nb_item(nb_softmax_cross_entropy(tp, zc, c0, 1)), 2e4, 1);
    }
    /* ... and so are their gradients: d/dz = (sigmoid(z) - t)/N = (1 - 0)/2 and
     * (0 - 1)/2 for z = +1e4, -1e4; for softmax CE, (softmax - onehot) = (0, -1)... */
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tensor *zz = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){1e4, -1e4}));
        nb_tensor *yy = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){0, 1}));
        nb_requires_grad(zz, true);
        assert_int_equal(nb_backward(nb_bce_logits(tp, zz, yy)), NB_OK);
        assert_close(nb_grad_get(zz, 0), 0.5, 0);
        assert_close(nb_grad_get(zz, 1), -0.5, 0);
        /* logits (1e4, -1e4) with class 1: softmax = (1, 0), gradient (1, -1). */
        nb_tensor *zc = nb_from_array(tp, dt, NB_SHAPE(1, 2), ((double[]){1e4, -1e4}));
        nb_tensor *c1 = nb_from_array(tp, dt, NB_SHAPE(1), ((double[]){1}));
        nb_requires_grad(zc, true);
        assert_int_equal(nb_backward(nb_softmax_cross_entropy(tp, zc, c1, 1)), NB_OK);
        assert_close(nb_grad_get(zc, 0), 1, 0);
        assert_close(nb_grad_get(zc, 1), -1, 0);
        /* sigmoid and tanh saturate to a zero gradient, not NaN. */
        nb_tensor *s = nb_add(tp, nb_sum(tp, nb_sigmoid(tp, zz)), nb_sum(tp, nb_tanh(tp, zz)));
        nb_zero_grad(zz);
        assert_int_equal(nb_backward(s), NB_OK);
        assert_close(nb_grad_get(zz, 0), 0, 0);
        assert_close(nb_grad_get(zz, 1), 0, 0);
    }
    /* bce at probabilities 0 and 1 clamps each log at -100. */
    nb_tensor *edge = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){0, 1}));
    nb_tensor *wrong = nb_from_array(tp, NB_F64, NB_SHAPE(2), ((double[]){1, 0}));
    assert_close(nb_item(nb_bce(tp, edge, wrong)), 100, 1e-12);
    nb_tape_free(tp);
}

static void test_loss_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 18);
    nb_tensor *p = random_input(&rng, NB_SHAPE(3, 4), -2, 2, false);
    nb_tensor *t = random_input(&rng, NB_SHAPE(3, 4), -2, 2, false);
    nb_tensor *in[2] = {p, t};
    assert_gradcheck(loss_mse, in, 2, NULL);
    nb_tensor_free(p);
    nb_tensor_free(t);

    nb_tensor *prob = random_input(&rng, NB_SHAPE(2, 5), 0.05, 0.95, false);
    nb_tensor *target = random_input(&rng, NB_SHAPE(2, 5), 0, 1, false);
    nb_tensor *logits = random_input(&rng, NB_SHAPE(2, 5), -4, 4, false);
    nb_tensor *pin[2] = {prob, target}, *lin[2] = {logits, target};
    assert_gradcheck(loss_bce, pin, 2, NULL);
    assert_gradcheck(loss_bce_logits, lin, 2, NULL);
    nb_tensor_free(prob);
    nb_tensor_free(target);
    nb_tensor_free(logits);

    /* Cross-entropy with probability targets (gradient to both inputs) and
     * with class indices (to the logits only), along every axis. */
    nb_tensor *x = random_input(&rng, NB_SHAPE(3, 4, 2), -3, 3, false);
    for (ce_axis = 0; ce_axis < 3; ce_axis++) {
        nb_tensor *soft = random_input(&rng, 3, nb_tensor_shape(x), 0, 1, false);
        nb_tensor *both[2] = {x, soft};
        assert_gradcheck(loss_ce, both, 2, NULL);
        nb_tensor_free(soft);

        size_t shape[2];
        for (int d = 0, k = 0; d < 3; d++)
            if (d != ce_axis) shape[k++] = nb_tensor_dim(x, d);
        nb_tensor *cls = nb_zeros(NULL, NB_F64, 2, shape);
        for (size_t i = 0; i < nb_tensor_size(cls); i++)
            nb_set(cls, i, (double)(nb_rng_next(&rng) % nb_tensor_dim(x, ce_axis)));
        nb_tensor *idx[2] = {x, cls};
        assert_gradcheck(loss_ce, idx, 2, NULL); /* cls requires no gradient */
        nb_tensor_free(cls);
    }
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- dtypes */

/* Every op in float32 agrees with float64, forward and backward. */
static nb_tensor *mixed_model(nb_tape *tp, nb_tensor *const *in) {
    nb_tensor *h = nb_matmul(tp, in[0], in[1]);                         /* (4, 3) */
    h = nb_add(tp, h, in[2]);                                          /* + (3,) */
    nb_tensor *acts = nb_add(tp, nb_add(tp, nb_sigmoid(tp, h), nb_tanh(tp, h)),
                             nb_add(tp, nb_relu(tp, h), nb_leaky_relu(tp, h, 0.1)));
    acts = nb_div(tp, nb_mul(tp, acts, nb_exp(tp, nb_scale(tp, h, 0.1))),
                  nb_add_scalar(tp, nb_square(tp, h), 1));
    acts = nb_add(tp, acts, nb_log(tp, nb_add_scalar(tp, nb_pow(tp, nb_sigmoid(tp, h), 1.5), 1)));
    nb_tensor *sm = nb_log_softmax(tp, acts, 1);
    nb_tensor *t = nb_transpose(tp, nb_reshape(tp, sm, NB_DIMS(3, 4)), 0, 1);
    return nb_add(tp, nb_mean(tp, nb_sum_axis(tp, t, 0, false)),
                  nb_softmax_cross_entropy(tp, acts, in[3], 1));
}

static void test_float32_matches_float64(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 19);
    nb_tensor *in64[4] = {random_input(&rng, NB_SHAPE(4, 5), -1, 1, false),
                          random_input(&rng, NB_SHAPE(5, 3), -1, 1, false),
                          random_input(&rng, NB_SHAPE(3), -1, 1, false),
                          nb_from_array(NULL, NB_F64, NB_SHAPE(4), ((double[]){0, 2, 1, 2}))};
    nb_tensor *in32[4];
    nb_tape *tp = nb_tape_new();
    for (int i = 0; i < 4; i++) {
        in32[i] = nb_cast(tp, in64[i], NB_F32);
        in32[i] = nb_copy(NULL, in32[i]);
        nb_requires_grad(in32[i], i < 3);
    }
    nb_tape_reset(tp);
    nb_tensor *l64 = mixed_model(tp, in64);
    assert_int_equal(nb_backward(l64), NB_OK);
    nb_tape *tp32 = nb_tape_new();
    nb_tensor *l32 = mixed_model(tp32, in32);
    assert_int_equal(nb_tensor_dtype(l32), NB_F32);
    assert_int_equal(nb_backward(l32), NB_OK);
    assert_close(nb_item(l32), nb_item(l64), 1e-5 * fabs(nb_item(l64)) + 1e-6);
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < nb_tensor_size(in64[i]); j++)
            assert_close(nb_grad_get(in32[i], j), nb_grad_get(in64[i], j), 1e-4);
    /* And the float64 model passes gradcheck as a whole. */
    for (int i = 0; i < 4; i++) {
        nb_tensor_free(in32[i]);
    }
    nb_tape_free(tp32);
    nb_tape_free(tp);
    for (int i = 0; i < 4; i++) nb_tensor_free(in64[i]);
}

static nb_tensor *mixed_model_fn(nb_tape *tp, nb_tensor *const *in, int n, void *u) {
    (void)n, (void)u;
    return mixed_model(tp, in);
}

static void test_mixed_model_gradcheck(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 20);
    nb_tensor *in[4] = {random_input(&rng, NB_SHAPE(4, 5), -1, 1, false),
                        random_input(&rng, NB_SHAPE(5, 3), -1, 1, false),
                        random_input(&rng, NB_SHAPE(3), -1, 1, false),
                        nb_from_array(NULL, NB_F64, NB_SHAPE(4), ((double[]){0, 2, 1, 2}))};
    /* Keep relu and leaky relu away from their kink at 0. */
    assert_gradcheck(mixed_model_fn, in, 4, NULL);
    for (int i = 0; i < 4; i++) nb_tensor_free(in[i]);
}

/* relu keeps a NaN, with derivative 1 there, as PyTorch's relu (whose
 * backward zeroes only x <= 0); it turned NaN into 0, hiding it.  The
 * fused relu of a convolution does the same. */
static void test_relu_keeps_nan(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 1, 3), ((double[]){NAN, -1, 2}));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_relu(tp, x);
    assert_true(isnan(nb_get(y, 0)));
    assert_int_equal(nb_backward_seed(y, nb_ones(tp, NB_F64, NB_SHAPE(1, 1, 3))), NB_OK);
    assert_close(nb_grad_get(x, 0), 1, 0);
    assert_close(nb_grad_get(x, 1), 0, 0);
    assert_close(nb_grad_get(x, 2), 1, 0);
    nb_tensor *w = nb_ones(tp, NB_F64, NB_SHAPE(1, 1, 1));
    nb_tensor *c = nb_conv1d(tp, x, w, NULL, &(nb_conv_opts){.relu = true});
    assert_true(isnan(nb_get(c, 0)));
    assert_close(nb_get(c, 1), 0, 0);
    nb_zero_grad(x);
    assert_int_equal(nb_backward(nb_sum(tp, nb_slice(tp, c, 2, 0, NB_END, 1))), NB_OK);
    assert_close(nb_grad_get(x, 0), 1, 0);
    assert_close(nb_grad_get(x, 1), 0, 0);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_values),
        cmocka_unit_test(test_unary_gradients),
        cmocka_unit_test(test_broadcast_values),
        cmocka_unit_test(test_broadcast_shapes_and_gradients),
        cmocka_unit_test(test_broadcast_random_shapes),
        cmocka_unit_test(test_fan_out),
        cmocka_unit_test(test_fan_out_dag),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_shape_ops),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_loss_values),
        cmocka_unit_test(test_loss_gradients),
        cmocka_unit_test(test_float32_matches_float64),
        cmocka_unit_test(test_mixed_model_gradcheck),        cmocka_unit_test(test_relu_keeps_nan),

    };
    return cmocka_run_group_tests_name("ops", tests, NULL, NULL);
}
