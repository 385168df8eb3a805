/*
 * Convolutions, pooling and batch norm: forward values against direct
 * loops written here (the definition, no unfolding) on random shapes with
 * every option, and against numbers PyTorch 1.13 printed for the same
 * inputs; gradients against central differences (float64), including
 * fan-out; second derivatives with nb_gradgradcheck; pooling's fast and
 * general paths against its definition on random geometries (first and
 * second order); the picture labels.
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- convolution */

typedef struct {
    size_t N, C, H, W, O, KH, KW;
    nb_conv_opts o;
    bool bias, one_d;
} conv_case;

/* y[n, o, i, j] = b[o] + Σ_{c, kh, kw} w[o, c, kh, kw] x[n, g Cg + c, i s - p + kh d, j s - p + kw d],
 * straight from the definition, in double. */
static void direct_conv(const conv_case *k, const double *x, const double *w, const double *b, double *y,
                        size_t *OH, size_t *OW) {
    size_t groups = k->o.groups ? (size_t)k->o.groups : 1, Cg = k->C / groups, Og = k->O / groups;
    long sh = k->one_d ? 1 : (k->o.stride[0] ? k->o.stride[0] : 1), sw = k->o.stride[k->one_d ? 0 : 1];
    long ph = k->one_d ? 0 : k->o.padding[0], pw = k->o.padding[k->one_d ? 0 : 1];
    long dh = k->one_d ? 1 : (k->o.dilation[0] ? k->o.dilation[0] : 1), dw = k->o.dilation[k->one_d ? 0 : 1];
    sw = sw ? sw : 1;
    dw = dw ? dw : 1;
    *OH = (size_t)(((long)k->H + 2 * ph - dh * ((long)k->KH - 1) - 1) / sh + 1);
    *OW = (size_t)(((long)k->W + 2 * pw - dw * ((long)k->KW - 1) - 1) / sw + 1);
    for (size_t n = 0; n < k->N; n++)
        for (size_t o = 0; o < k->O; o++)
            for (size_t i = 0; i < *OH; i++)
                for (size_t j = 0; j < *OW; j++) {
                    double s = b ? b[o] : 0;
                    size_t grp = o / Og;
                    for (size_t c = 0; c < Cg; c++)
                        for (size_t kh = 0; kh < k->KH; kh++)
                            for (size_t kw = 0; kw < k->KW; kw++) {
                                long r = (long)i * sh - ph + (long)kh * dh, q = (long)j * sw - pw + (long)kw * dw;
                                if (r < 0 || r >= (long)k->H || q < 0 || q >= (long)k->W) continue;
                                s += w[((o * Cg + c) * k->KH + kh) * k->KW + kw] *
                                     x[((n * k->C + grp * Cg + c) * k->H + (size_t)r) * k->W + (size_t)q];
                            }
                    y[((n * k->O + o) * *OH + i) * *OW + j] = s;
                }
}

static const conv_case conv_cases[] = {
    {2, 3, 6, 7, 4, 3, 3, {.groups = 0}, true, false},                                   /* plain 3x3 */
    {1, 2, 5, 5, 3, 1, 1, {.groups = 1}, false, false},                                  /* 1x1: no unfolding */
    {2, 4, 7, 6, 6, 3, 2, {.stride = {2, 1}, .padding = {1, 2}, .groups = 2}, true, false}, /* stride, padding, groups */
    {1, 3, 8, 8, 3, 3, 3, {.padding = {2, 2}, .dilation = {2, 2}, .groups = 3}, false, false}, /* dilated depthwise */
    {3, 2, 4, 9, 5, 2, 4, {.stride = {1, 3}, .padding = {0, 1}}, true, false},           /* rectangular */
    {2, 1, 5, 5, 2, 5, 5, {.padding = {2, 2}}, true, false},                             /* kernel = input */
    {2, 4, 1, 9, 2, 1, 3, {.stride = {2}, .padding = {1}, .groups = 2}, true, true},     /* conv1d */
    {1, 2, 1, 8, 3, 1, 2, {.dilation = {3}}, false, true},                               /* conv1d dilated */
};

/* The case's x, w and bias, seeded; float64 leaves requiring gradients. */
static void conv_inputs(const conv_case *k, nb_rng *rng, nb_tensor **x, nb_tensor **w, nb_tensor **b) {
    size_t groups = k->o.groups ? (size_t)k->o.groups : 1;
    if (k->one_d) {
        *x = random_input(rng, 3, (size_t[]){k->N, k->C, k->W}, -1, 1, false);
        *w = random_input(rng, 3, (size_t[]){k->O, k->C / groups, k->KW}, -1, 1, false);
    } else {
        *x = random_input(rng, 4, (size_t[]){k->N, k->C, k->H, k->W}, -1, 1, false);
        *w = random_input(rng, 4, (size_t[]){k->O, k->C / groups, k->KH, k->KW}, -1, 1, false);
    }
    *b = k->bias ? random_input(rng, 1, (size_t[]){k->O}, -1, 1, false) : NULL;
}

static nb_tensor *conv_of(nb_tape *tp, const conv_case *k, nb_tensor *x, nb_tensor *w, nb_tensor *b) {
    return k->one_d ? nb_conv1d(tp, x, w, b, &k->o) : nb_conv2d(tp, x, w, b, &k->o);
}

static void test_conv_matches_the_definition(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 11);
    for (size_t c = 0; c < sizeof conv_cases / sizeof *conv_cases; c++) {
        const conv_case *k = &conv_cases[c];
        nb_tensor *x, *w, *b;
        conv_inputs(k, &rng, &x, &w, &b);
        double *expected = malloc(4096 * sizeof *expected);
        size_t OH, OW;
        direct_conv(k, nb_tensor_data(x), nb_tensor_data(w), b ? nb_tensor_data(b) : NULL, expected, &OH, &OW);
        for (int dt = NB_F32; dt <= NB_F64; dt++) {
            nb_tape *tp = nb_tape_new();
            nb_tensor *y = conv_of(tp, k, nb_cast(tp, x, dt), nb_cast(tp, w, dt), b ? nb_cast(tp, b, dt) : NULL);
            assert_ok(y);
            assert_int_equal(nb_tensor_dim(y, -1), OW);
            if (!k->one_d) assert_int_equal(nb_tensor_dim(y, 2), OH);
            assert_int_equal(nb_tensor_size(y), k->N * k->O * OH * OW);
            for (size_t i = 0; i < nb_tensor_size(y); i++)
                assert_close(nb_get(y, i), expected[i], dt == NB_F32 ? 1e-5 : 1e-12);
            nb_tape_free(tp);
        }
        free(expected);
        nb_tensor_free(x);
        nb_tensor_free(w);
        nb_tensor_free(b);
    }
}

/* PyTorch 1.13: F.conv2d(x, w, b, stride=2, padding=2, dilation=2, groups=2)
 * with x = (arange(200) % 7 - 3) / 4 as (2, 4, 5, 5), w = (arange(108) % 5 - 2) / 3
 * as (6, 2, 3, 3), b = (0.5, -1, 0.25, 0, 1, 2): y (2, 6, 3, 3) begins
 * 1.166666666667 0.166666666667 0.333333333333 -0.583333333333 1.416666666667
 * 1.25 2.25 -0.5 and sums to 47.25.  F.conv1d(x1, w1, stride=2, padding=1)
 * with x1 = (arange(42) % 5 - 2) / 2 as (2, 3, 7), w1 = arange(36) % 4 - 1.5
 * as (4, 3, 3): the 32 values below. */
static void test_conv_against_pytorch(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_zeros(tp, NB_F64, NB_SHAPE(2, 4, 5, 5)), *w = nb_zeros(tp, NB_F64, NB_SHAPE(6, 2, 3, 3));
    nb_tensor *b = nb_from_array(tp, NB_F64, NB_SHAPE(6), ((double[]){0.5, -1, 0.25, 0, 1, 2}));
    for (size_t i = 0; i < 200; i++) nb_set(x, i, ((double)(i % 7) - 3) / 4);
    for (size_t i = 0; i < 108; i++) nb_set(w, i, ((double)(i % 5) - 2) / 3);
    nb_tensor *y = nb_conv2d(tp, x, w, b, &(nb_conv_opts){.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}, .groups = 2});
    assert_ok(y);
    assert_int_equal(nb_tensor_size(y), 2 * 6 * 3 * 3);
    const double head[8] = {1.166666666667, 0.166666666667, 0.333333333333, -0.583333333333,
                            1.416666666667, 1.25, 2.25, -0.5};
    for (size_t i = 0; i < 8; i++) assert_close(nb_get(y, i), head[i], 1e-11);
    assert_close(nb_item(nb_sum(tp, y)), 47.25, 1e-11);
    nb_tensor *x1 = nb_zeros(tp, NB_F64, NB_SHAPE(2, 3, 7)), *w1 = nb_zeros(tp, NB_F64, NB_SHAPE(4, 3, 3));
    for (size_t i = 0; i < 42; i++) nb_set(x1, i, ((double)(i % 5) - 2) / 2);
    for (size_t i = 0; i < 36; i++) nb_set(w1, i, (double)(i % 4) - 1.5);
    nb_tensor *y1 = nb_conv1d(tp, x1, w1, NULL, &(nb_conv_opts){.stride = {2}, .padding = {1}});
    const double torch1[32] = {3.0,  -0.5, -3.25, 0.0,   -2.0, -1.5, -0.75, 3.0,   -1.0, -0.5, 3.75,
                               -2.0, 0.0,  2.5,   0.25,  -1.0, -1.75, 2.5,  1.0,   -1.25, 1.75, -0.5,
                               -1.0, -1.75, 1.25, -1.5,  -1.0, 1.75, -1.25, -0.5,  1.0,  1.25};
    assert_int_equal(nb_tensor_size(y1), 32);
    for (size_t i = 0; i < 32; i++) assert_close(nb_get(y1, i), torch1[i], 1e-12);
    nb_tape_free(tp);
}

/* loss = Σ R y + 0.1 Σ R y², R fixed random: a loss whose gradient and
 * second derivatives depend on every input. */
typedef struct {
    const conv_case *k;
    nb_tensor *R;
    int fan_out; /* 1: x also goes through a second convolution with the same w */
} conv_user;

static nb_tensor *weighted(nb_tape *tp, nb_tensor *y, nb_tensor *R) {
    nb_tensor *r = nb_cast(tp, R, nb_tensor_dtype(y));
    return nb_add(tp, nb_sum(tp, nb_mul(tp, r, y)), nb_scale(tp, nb_sum(tp, nb_mul(tp, r, nb_square(tp, y))), 0.1));
}

static nb_tensor *conv_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const conv_user *u = user;
    nb_tensor *y = conv_of(tp, u->k, in[0], in[1], n > 2 ? in[2] : NULL);
    if (u->fan_out) y = nb_add(tp, y, nb_tanh(tp, conv_of(tp, u->k, nb_sin(tp, in[0]), in[1], NULL)));
    return weighted(tp, y, u->R);
}

static void test_conv_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 12);
    for (size_t c = 0; c < sizeof conv_cases / sizeof *conv_cases; c++) {
        const conv_case *k = &conv_cases[c];
        nb_tensor *in[3];
        conv_inputs(k, &rng, &in[0], &in[1], &in[2]);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = conv_of(tp, k, in[0], in[1], in[2]);
        nb_tensor *R = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
        nb_tape_free(tp);
        for (int fan_out = 0; fan_out <= 1; fan_out++) {
            conv_user u = {k, R, fan_out};
            assert_gradcheck(conv_loss, in, k->bias ? 3 : 2, &u);
        }
        nb_tensor_free(R);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

static void test_conv_second_derivatives(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 13);
    const size_t picks[] = {0, 2, 3, 6};
    for (size_t p = 0; p < sizeof picks / sizeof *picks; p++) {
        const conv_case *k = &conv_cases[picks[p]];
        nb_tensor *in[3];
        conv_inputs(k, &rng, &in[0], &in[1], &in[2]);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = conv_of(tp, k, in[0], in[1], in[2]);
        nb_tensor *R = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
        nb_tape_free(tp);
        conv_user u = {k, R, 0};
        char what[64];
        snprintf(what, sizeof what, "conv case %zu", picks[p]);
        assert_gradgradcheck(conv_loss, in, k->bias ? 3 : 2, &u, what);
        nb_tensor_free(R);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

/* conv with .relu fused: the same values and gradients, bit for bit, as
 * nb_relu after the convolution; its own second derivatives checked. */
static nb_tensor *fused_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const conv_user *u = user;
    conv_case k = *u->k;
    k.o.relu = true;
    return weighted(tp, conv_of(tp, &k, in[0], in[1], n > 2 ? in[2] : NULL), u->R);
}

static void test_conv_with_relu_fused(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 17);
    for (size_t c = 0; c < sizeof conv_cases / sizeof *conv_cases; c++) {
        conv_case k = conv_cases[c];
        nb_tensor *in[3];
        conv_inputs(&k, &rng, &in[0], &in[1], &in[2]);
        int n = k.bias ? 3 : 2;
        double *grads[2][3];
        nb_tensor *y[2];
        nb_tape *tp[2];
        for (int fused = 0; fused < 2; fused++) {
            tp[fused] = nb_tape_new();
            for (int i = 0; i < n; i++) nb_zero_grad(in[i]);
            k.o.relu = fused;
            y[fused] = conv_of(tp[fused], &k, in[0], in[1], in[2]);
            if (!fused) y[fused] = nb_relu(tp[fused], y[fused]);
            nb_tensor *R = nb_rand_uniform(tp[fused], &(nb_rng){{1, 2, 3, 4}, false, 0}, NB_F64,
                                           nb_tensor_ndim(y[fused]), nb_tensor_shape(y[fused]), -1, 1);
            assert_int_equal(nb_backward(nb_sum(tp[fused], nb_mul(tp[fused], y[fused], R))), NB_OK);
            for (int i = 0; i < n; i++) {
                grads[fused][i] = malloc(nb_tensor_size(in[i]) * sizeof(double));
                for (size_t e = 0; e < nb_tensor_size(in[i]); e++) grads[fused][i][e] = nb_grad_get(in[i], e);
            }
        }
        for (size_t e = 0; e < nb_tensor_size(y[0]); e++) assert_true(nb_get(y[0], e) == nb_get(y[1], e));
        for (int i = 0; i < n; i++) {
            if (memcmp(grads[0][i], grads[1][i], nb_tensor_size(in[i]) * sizeof(double))) print_error("case %zu input %d: %.17g vs %.17g\n", c, i, grads[0][i][1], grads[1][i][1]);
            assert_memory_equal(grads[0][i], grads[1][i], nb_tensor_size(in[i]) * sizeof(double));
            free(grads[0][i]);
            free(grads[1][i]);
        }
        if (c == 0 || c == 2 || c == 6) {
            nb_tensor *R = nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y[0]), nb_tensor_shape(y[0]), -1, 1);
            conv_user u = {&conv_cases[c], R, 0};
            assert_gradcheck(fused_loss, in, n, &u);
            assert_gradgradcheck(fused_loss, in, n, &u, "conv with relu fused");
            nb_tensor_free(R);
        }
        nb_tape_free(tp[0]);
        nb_tape_free(tp[1]);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

/* The bias's gradient is summed in the weight gradient's pass over the
 * examples; with the weights frozen it takes the same pass alone.  Either
 * way, for L = Σ R · y, dL/dbias[o] = Σ over n, positions of R[n, o, :],
 * summed here in plain loops; and a second use of the bias adds to it. */
static void test_conv_bias_gradient_with_weights_frozen(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 23);
    for (int frozen = 0; frozen < 2; frozen++) {
        nb_tape *tp = nb_tape_new();
        nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(10, 2, 7, 7), -1, 1);
        nb_tensor *w = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(3, 2, 3, 3), -1, 1);
        nb_tensor *b = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(3), -1, 1);
        nb_requires_grad(w, !frozen);
        nb_requires_grad(b, true);
        nb_tensor *y = nb_conv2d(tp, x, w, b, &(nb_conv_opts){.padding = {1, 1}});
        nb_tensor *R = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(10, 3, 7, 7), -1, 1);
        /* L = Σ R · y + 2 Σ b: the second use adds 2 to each channel */
        nb_tensor *L = nb_add(tp, nb_sum(tp, nb_mul(tp, y, R)), nb_scale(tp, nb_sum(tp, b), 2));
        assert_int_equal(nb_backward(L), NB_OK);
        for (size_t o = 0; o < 3; o++) {
            double expect = 2;
            for (size_t n = 0; n < 10; n++)
                for (size_t p = 0; p < 49; p++) expect += nb_get(R, (n * 3 + o) * 49 + p);
            assert_close(nb_grad_get(b, o), expect, 1e-12);
        }
        assert_int_equal(nb_has_grad(w), !frozen);
        nb_tensor_free(x), nb_tensor_free(w), nb_tensor_free(b), nb_tensor_free(R);
        nb_tape_free(tp);
    }
}

/* Third order: F = Σ R' · dL/dx + Σ R'' · dL/dw, with the gradients built
 * as ops (create_graph), checked by gradgradcheck: that differentiates the
 * backward's own ops (input_grad, weight_grad) twice more. */
typedef struct {
    conv_user inner;
    nb_tensor *Rx, *Rw;
} third_user;

static nb_tensor *conv_gradient_dot(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const third_user *u = user;
    nb_tensor *loss = conv_loss(tp, in, n, (void *)&u->inner), *g[2];
    assert_int_equal(nb_grad(loss, in, 2, g, true), NB_OK);
    return nb_add(tp, nb_sum(tp, nb_mul(tp, g[0], nb_cast(tp, u->Rx, NB_F64))),
                  nb_sum(tp, nb_mul(tp, g[1], nb_cast(tp, u->Rw, NB_F64))));
}

static void test_conv_third_derivatives(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 16);
    const size_t picks[] = {0, 2, 6};
    for (size_t p = 0; p < sizeof picks / sizeof *picks; p++) {
        const conv_case *k = &conv_cases[picks[p]];
        nb_tensor *in[3];
        conv_inputs(k, &rng, &in[0], &in[1], &in[2]);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = conv_of(tp, k, in[0], in[1], in[2]);
        third_user u = {{k, nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1), 0},
                        nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(in[0]), nb_tensor_shape(in[0]), -1, 1),
                        nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(in[1]), nb_tensor_shape(in[1]), -1, 1)};
        nb_tape_free(tp);
        char what[64];
        snprintf(what, sizeof what, "conv case %zu, third order", picks[p]);
        assert_gradgradcheck(conv_gradient_dot, in, k->bias ? 3 : 2, &u, what);
        nb_tensor_free(u.inner.R);
        nb_tensor_free(u.Rx);
        nb_tensor_free(u.Rw);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

/* ---------------------------------------------------------------- pooling */

/* PyTorch 1.13 on x = 1..16 as (1, 1, 4, 4). */
static void test_pooling_against_pytorch(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_zeros(tp, NB_F64, NB_SHAPE(1, 1, 4, 4));
    for (size_t i = 0; i < 16; i++) nb_set(x, i, (double)i + 1);
    struct {
        bool max;
        nb_pool_opts o;
        size_t n;
        double y[9];
    } cases[] = {
        /* F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=True / False) */
        {false, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}, 9,
         {1.5555555555555556, 3.3333333333333335, 2.0, 6.333333333333333, 11.0, 6.0, 4.5, 7.5, 4.0}},
        {false, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true, .exclude_pad = true}, 9,
         {3.5, 5.0, 6.0, 9.5, 11.0, 12.0, 13.5, 15.0, 16.0}},
        /* F.avg_pool2d(x, 2, stride=3, ceil_mode=True) */
        {false, {.kernel = {2, 2}, .stride = {3, 3}, .ceil_mode = true}, 4, {3.5, 6.0, 13.5, 16.0}},
        /* F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True) */
        {true, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}, 9,
         {6, 8, 8, 14, 16, 16, 14, 16, 16}},
        /* F.max_pool2d(x, 2, stride=1, dilation=2) */
        {true, {.kernel = {2, 2}, .stride = {1, 1}, .dilation = {2, 2}}, 4, {11, 12, 15, 16}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        nb_tensor *y = cases[c].max ? nb_max_pool2d(tp, x, &cases[c].o) : nb_avg_pool2d(tp, x, &cases[c].o);
        assert_ok(y);
        assert_int_equal(nb_tensor_size(y), cases[c].n);
        for (size_t i = 0; i < cases[c].n; i++) assert_close(nb_get(y, i), cases[c].y[i], 1e-12);
    }
    /* Ties go to the first largest element, as PyTorch: [[1, 3], [3, 2]] -> grad [0, 1, 0, 0]. */
    nb_tensor *t = nb_from_array(tp, NB_F64, NB_SHAPE(1, 1, 2, 2), ((double[]){1, 3, 3, 2}));
    nb_requires_grad(t, true);
    assert_int_equal(nb_backward(nb_sum(tp, nb_max_pool2d(tp, t, &(nb_pool_opts){.kernel = {2, 2}}))), NB_OK);
    const double tie[4] = {0, 1, 0, 0};
    for (size_t i = 0; i < 4; i++) assert_true(nb_grad_get(t, i) == tie[i]);
    /* A NaN in a window is its maximum. */
    nb_tensor *z = nb_from_array(tp, NB_F64, NB_SHAPE(1, 1, 2, 2), ((double[]){1, NAN, 5, 2}));
    assert_true(isnan(nb_item(nb_max_pool2d(tp, z, &(nb_pool_opts){.kernel = {2, 2}}))));
    nb_tape_free(tp);
}

typedef struct {
    bool max;
    nb_pool_opts o;
    nb_tensor *R;
} pool_user;

static nb_tensor *pool_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    const pool_user *u = user;
    /* fan-out: x is pooled and also squared into the loss */
    nb_tensor *y = u->max ? nb_max_pool2d(tp, in[0], &u->o) : nb_avg_pool2d(tp, in[0], &u->o);
    return nb_add(tp, weighted(tp, y, u->R), nb_scale(tp, nb_sum(tp, nb_square(tp, in[0])), 0.01));
}

/* Third order through the pooling backward's own ops (avg_pool2d_backward,
 * the scatter to the maxima): F = Σ R' · dL/dx, checked by gradgradcheck. */
typedef struct {
    pool_user inner;
    nb_tensor *Rx;
} pool_third_user;

static nb_tensor *pool_gradient_dot(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const pool_third_user *u = user;
    nb_tensor *g;
    assert_int_equal(nb_grad(pool_loss(tp, in, n, (void *)&u->inner), in, 1, &g, true), NB_OK);
    return nb_sum(tp, nb_mul(tp, nb_square(tp, g), nb_cast(tp, u->Rx, NB_F64)));
}

static void test_pooling_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 14);
    const pool_user cases[] = {
        {true, {.kernel = {2, 2}}, NULL},
        {true, {.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 1}, .dilation = {1, 2}, .ceil_mode = true}, NULL},
        {false, {.kernel = {2, 2}}, NULL},
        {false, {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true}, NULL},
        {false, {.kernel = {3, 2}, .stride = {1, 2}, .padding = {1, 1}, .exclude_pad = true}, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        pool_user u = cases[c];
        nb_tensor *x = random_input(&rng, 4, (size_t[]){2, 3, 5, 6}, -2, 2, false);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = u.max ? nb_max_pool2d(tp, x, &u.o) : nb_avg_pool2d(tp, x, &u.o);
        assert_ok(y);
        u.R = nb_rand_uniform(NULL, &rng, NB_F64, 4, nb_tensor_shape(y), -1, 1);
        nb_tape_free(tp);
        assert_gradcheck(pool_loss, &x, 1, &u);
        char what[64];
        snprintf(what, sizeof what, "pooling case %zu", c);
        assert_gradgradcheck(pool_loss, &x, 1, &u, what);
        pool_third_user t = {u, nb_rand_uniform(NULL, &rng, NB_F64, 4, nb_tensor_shape(x), -1, 1)};
        snprintf(what, sizeof what, "pooling case %zu, third order", c);
        assert_gradgradcheck(pool_gradient_dot, &x, 1, &t, what);
        nb_tensor_free(t.Rx);
        nb_tensor_free(u.R);
        nb_tensor_free(x);
    }
}

/* PyTorch 1.13, F.max_pool2d(x, 2, 2, ceil_mode=True), where the last
 * windows overhang an odd H or W (the 2x2 fast path once read the next row
 * there, or past x): x = 1..9 as (1, 1, 3, 3), and x[i] = (53 i) mod 127
 * as (2, 3, 5, 4) and (1, 2, 4, 7). */
static void test_max_pool_overhanging_windows_against_pytorch(void **state) {
    (void)state;
    static const struct {
        size_t shape[4], n;
        double y[36];
    } cases[] = {
        {{1, 1, 3, 3}, 4, {5, 6, 8, 9}},
        {{2, 3, 5, 4}, 36, {85,  117, 96,  107, 86, 118, 97,  108, 98,  119, 56,  109,
                            99,  120, 89,  121, 100, 79, 90,  122, 101, 112, 91,  123,
                            102, 113, 103, 124, 61,  114, 104, 125, 94,  126, 105, 84}},
        {{1, 2, 4, 7}, 16, {117, 106, 85, 64, 107, 86, 118, 44, 87, 119, 98, 24, 120, 99, 78, 121}},
    };
    nb_pool_opts o = {.kernel = {2, 2}, .stride = {2, 2}, .ceil_mode = true};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        for (int dt = NB_F32; dt <= NB_F64; dt++) {
            nb_tape *tp = nb_tape_new();
            nb_tensor *x = nb_zeros(NULL, dt, 4, cases[c].shape);
            for (size_t i = 0; i < nb_tensor_size(x); i++) nb_set(x, i, c == 0 ? (double)i + 1 : (double)(53 * i % 127));
            nb_requires_grad(x, true);
            nb_tensor *y = nb_max_pool2d(tp, x, &o);
            expect_values(y, cases[c].y, cases[c].n, 0);
            /* each output's gradient lands on the element holding its value, inside x */
            assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
            for (size_t i = 0; i < nb_tensor_size(x); i++) {
                double g = nb_grad_get(x, i), want = 0;
                for (size_t k = 0; k < cases[c].n; k++) want += cases[c].y[k] == nb_get(x, i);
                assert_close(g, want, 0);
            }
            nb_tape_free(tp);
            nb_tensor_free(x);
        }
}

/* A window wholly in the padding (kernel 1x2, padding 1, dilation 5 on a
 * row of 4: taps at -1 and 4): PyTorch's output is -inf and its gradient 0
 * (F.max_pool2d(x, (1, 2), padding=(0, 1), dilation=(1, 5))).  Its arg-max
 * is none: the create_graph path once used it as an index and read the
 * element before the seed (1234.5 instead of 0). */
static void test_max_pool_window_in_the_padding(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 1, 1, 4), ((double[]){1, 2, 3, 4}));
    nb_tensor *w = nb_scalar(NULL, NB_F64, 3);
    nb_requires_grad(x, true);
    nb_requires_grad(w, true);
    nb_pool_opts o = {.kernel = {1, 2}, .padding = {0, 1}, .dilation = {1, 5}};
    nb_tensor *y = nb_max_pool2d(tp, x, &o);
    assert_ok(y);
    assert_int_equal(nb_tensor_size(y), 1);
    assert_true(isinf(nb_item(y)) && nb_item(y) < 0);
    /* the seed (5, 6, 7, 8) sits right after 1234.5 in memory */
    nb_tensor *memory = nb_from_array(NULL, NB_F64, NB_SHAPE(5), ((double[]){1234.5, 5, 6, 7, 8}));
    nb_tensor *seed = nb_reshape(tp, nb_slice(tp, memory, 0, 1, NB_END, 1), NB_DIMS(1, 1, 1, 4));
    assert_ptr_equal(nb_tensor_const_data(seed), (const double *)nb_tensor_const_data(memory) + 1);
    for (int graph = 0; graph < 2; graph++) {
        nb_tensor *gx, *gw, *loss = nb_sum(tp, nb_mul(tp, y, w));
        assert_int_equal(nb_grad(loss, &x, 1, &gx, graph), NB_OK);
        for (size_t i = 0; i < 4; i++) assert_close(nb_get(gx, i), 0, 0);
        if (!graph) continue;
        /* d/dw of seed · dL/dx = seed · (dL/dx per unit w): 0 */
        assert_int_equal(nb_grad_seed(gx, seed, &w, 1, &gw, true), NB_OK);
        assert_close(nb_item(gw), 0, 0);
        assert_int_equal(nb_grad_seed(gx, seed, &w, 1, &gw, false), NB_OK);
        assert_close(nb_item(gw), 0, 0);
    }
    nb_tape_free(tp);
    nb_tensor_free(memory);
    nb_tensor_free(w);
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- pooling, the definition */

/* PyTorch's output size (pooling_output_shape): (in + 2p - d(k - 1) - 1)/s
 * rounded down (or up, in ceil mode), plus 1, where in ceil mode the last
 * window must start inside x or its left padding; 0 when the window does
 * not fit. */
static size_t pooled_size(size_t in, long k, long s, long p, long d, bool ceil_mode) {
    long span = (long)in + 2 * p - d * (k - 1) - 1;
    if (span < 0) return 0;
    long out = (span + (ceil_mode ? s - 1 : 0)) / s + 1;
    if (ceil_mode && (out - 1) * s >= (long)in + p) out--;
    return (size_t)out;
}

typedef struct {
    bool max;
    size_t N, C, H, W, OH, OW;
    long k[2], s[2], p[2], d[2];
    bool exclude_pad;
} pool_def;

/* For L = Σ y ⊙ R and F = Σ S ⊙ dL/dx, from the definitions (PyTorch's CPU
 * kernels), y, dL/dx and dF/dR, all in double:
 *   max: y = x[m], m the window's first tap inside x that is larger than
 *        the taps before it or a NaN (so a later NaN replaces an earlier
 *        one); -inf and no m for a window wholly in the padding.
 *        dL/dx[m] += R, dF/dR = S[m] (0 without m).
 *   avg: rows [o s - p, min(o s - p + k, H + p)) and the same for columns;
 *        d = that window's size, or with exclude_pad its part inside x;
 *        y = Σ (part inside x) / d, dL/dx[i] += R / d, dF/dR = Σ S / d.
 * Returns the number of windows wholly in the padding. */
static int pool_by_definition(const pool_def *g, const double *x, const double *R, const double *S, double *y,
                              double *gx, double *gR) {
    size_t HW = g->H * g->W;
    int padding_only = 0;
    memset(gx, 0, g->N * g->C * HW * sizeof *gx);
    for (size_t plane = 0; plane < g->N * g->C; plane++)
        for (size_t oh = 0; oh < g->OH; oh++)
            for (size_t ow = 0; ow < g->OW; ow++) {
                size_t o = (plane * g->OH + oh) * g->OW + ow;
                long h0 = (long)oh * g->s[0] - g->p[0], w0 = (long)ow * g->s[1] - g->p[1];
                if (g->max) {
                    double top = -INFINITY;
                    long m = -1;
                    for (long kh = 0; kh < g->k[0]; kh++)
                        for (long kw = 0; kw < g->k[1]; kw++) {
                            long h = h0 + kh * g->d[0], w = w0 + kw * g->d[1];
                            if (h < 0 || h >= (long)g->H || w < 0 || w >= (long)g->W) continue;
                            long i = (long)(plane * HW) + h * (long)g->W + w;
                            if (m < 0 || x[i] > top || isnan(x[i])) top = x[i], m = i;
                        }
                    y[o] = top;
                    padding_only += m < 0;
                    gR[o] = m < 0 ? 0 : S[m];
                    if (m >= 0) gx[m] += R[o];
                    continue;
                }
                long h1 = h0 + g->k[0] < (long)g->H + g->p[0] ? h0 + g->k[0] : (long)g->H + g->p[0];
                long w1 = w0 + g->k[1] < (long)g->W + g->p[1] ? w0 + g->k[1] : (long)g->W + g->p[1];
                double d = (double)((h1 - h0) * (w1 - w0));
                h0 = h0 > 0 ? h0 : 0, w0 = w0 > 0 ? w0 : 0;
                h1 = h1 < (long)g->H ? h1 : (long)g->H, w1 = w1 < (long)g->W ? w1 : (long)g->W;
                if (g->exclude_pad) d = (double)((h1 - h0) * (w1 - w0));
                double sum = 0, s_sum = 0;
                for (long h = h0; h < h1; h++)
                    for (long w = w0; w < w1; w++) {
                        size_t i = plane * HW + (size_t)(h * (long)g->W + w);
                        sum += x[i], s_sum += S[i];
                        gx[i] += R[o] / d;
                    }
                y[o] = sum / d;
                gR[o] = s_sum / d;
            }
    return padding_only;
}

/* Equal, or both NaN, or within tol (relative). */
static void assert_same(double actual, double expected, double tol) {
    if (isnan(expected)) {
        assert_true(isnan(actual));
        return;
    }
    if (actual == expected) return;
    assert_close(actual, expected, tol * (1 + fabs(expected)));
}

static double *values_of(const nb_tensor *t) {
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    for (size_t i = 0; i < nb_tensor_size(t); i++) v[i] = nb_get(t, i);
    return v;
}

/* Random geometries (a third of them 2x2 with stride 2, the fast path),
 * odd and even sizes, ceil mode, padding, dilation (windows wholly in the
 * padding among them), NaN and -inf in x, both dtypes: y, the first-order
 * gradient, the create_graph one, and a second order through the
 * backward's own ops, against pool_by_definition. */
static void test_pooling_matches_the_definition(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 16);
    int checked = 0, padding_only = 0;
#define PICK(n) ((long)(nb_rng_next(&rng) % (n)))
    for (int trial = 0; trial < 400; trial++) {
        pool_def g = {.max = trial % 4 != 3, .N = 1 + (size_t)PICK(2), .C = 1 + (size_t)PICK(3),
                      .H = 1 + (size_t)PICK(7), .W = 1 + (size_t)PICK(7), .exclude_pad = PICK(2)};
        nb_pool_opts o = {.ceil_mode = PICK(2), .exclude_pad = g.exclude_pad};
        bool fast = g.max && trial % 3 == 0;
        for (int a = 0; a < 2; a++) {
            o.kernel[a] = fast ? 2 : 1 + (int)PICK(3);
            o.stride[a] = fast ? (int)(2 * PICK(2)) : (int)PICK(4); /* 0: the kernel */
            o.padding[a] = fast ? 0 : (int)PICK((unsigned long)o.kernel[a] / 2 + 1);
            o.dilation[a] = fast || !g.max ? 0 : (int)PICK(6); /* 0: 1 */
            g.k[a] = o.kernel[a];
            g.s[a] = o.stride[a] ? o.stride[a] : o.kernel[a];
            g.p[a] = o.padding[a];
            g.d[a] = o.dilation[a] ? o.dilation[a] : 1;
        }
        g.OH = pooled_size(g.H, g.k[0], g.s[0], g.p[0], g.d[0], o.ceil_mode);
        g.OW = pooled_size(g.W, g.k[1], g.s[1], g.p[1], g.d[1], o.ceil_mode);
        nb_dtype dt = trial % 2 ? NB_F64 : NB_F32;
        double tol = dt == NB_F32 ? 1e-6 : 1e-14;
        size_t xs[4] = {g.N, g.C, g.H, g.W}, ys[4] = {g.N, g.C, g.OH, g.OW}, nx = g.N * g.C * g.H * g.W;
        nb_tensor *x = nb_rand_uniform(NULL, &rng, dt, 4, xs, -2, 2);
        if (trial % 5 == 0) nb_set(x, (size_t)PICK(nx), trial % 10 ? NAN : -INFINITY);
        nb_requires_grad(x, true);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = g.max ? nb_max_pool2d(tp, x, &o) : nb_avg_pool2d(tp, x, &o);
        if (!g.OH || !g.OW) { /* the window does not fit */
            assert_int_equal(nb_tensor_status(y), NB_ERR_SHAPE);
            nb_tape_free(tp);
            nb_tensor_free(x);
            continue;
        }
        assert_ok(y);
        for (int a = 0; a < 4; a++) assert_int_equal(nb_tensor_dim(y, a), ys[a]);
        size_t ny = nb_tensor_size(y);
        nb_tensor *R = nb_rand_uniform(NULL, &rng, dt, 4, ys, -1, 1), *S = nb_rand_uniform(tp, &rng, dt, 4, xs, -1, 1);
        nb_requires_grad(R, true);
        double *xv = values_of(x), *Rv = values_of(R), *Sv = values_of(S);
        double *want_y = malloc(ny * sizeof *want_y), *want_gx = malloc(nx * sizeof *want_gx);
        double *want_gR = malloc(ny * sizeof *want_gR);
        padding_only += pool_by_definition(&g, xv, Rv, Sv, want_y, want_gx, want_gR);
        for (size_t i = 0; i < ny; i++) assert_same(nb_get(y, i), want_y[i], tol);
        nb_tensor *L = nb_sum(tp, nb_mul(tp, y, R)), *gx[2], *gR;
        for (int graph = 0; graph < 2; graph++) {
            assert_int_equal(nb_grad(L, &x, 1, &gx[graph], graph), NB_OK);
            for (size_t i = 0; i < nx; i++) assert_same(nb_get(gx[graph], i), want_gx[i], tol);
        }
        assert_int_equal(nb_grad(nb_sum(tp, nb_mul(tp, gx[1], S)), &R, 1, &gR, false), NB_OK);
        for (size_t i = 0; i < ny; i++) assert_same(nb_get(gR, i), want_gR[i], tol);
        checked++;
        free(xv), free(Rv), free(Sv), free(want_y), free(want_gx), free(want_gR);
        nb_tape_free(tp);
        nb_tensor_free(R);
        nb_tensor_free(x);
    }
#undef PICK
    assert_true(checked > 200); /* 259 of the 400 fit, 30 windows of them wholly in the padding */
    assert_true(padding_only > 0);
}

/* ---------------------------------------------------------------- batch norm */

/* PyTorch 1.13: F.batch_norm on x (3, 2, 2) below, gamma (1.5, -0.5), beta
 * (0.1, 0.2), running (0.5, -1) and (2, 0.5), momentum 0.1, eps 1e-5:
 * training gives y_train and moves the running statistics to (0.50833...,
 * -0.7) and (1.90416..., 1.25); evaluation then gives y_eval. */
static void test_batch_norm_against_pytorch(void **state) {
    (void)state;
    const double xs[12] = {1, 2, 3, 5, -1, 0.5, 2, 4, 0, 1, 1, -3};
    const double y_train[12] = {0.7708165293578557, 2.38077619981671,   0.006350977926341206, -0.3809470662209763,
                                -2.449102811559852, -0.03416330587157124, 0.19999999999999996, -0.18729804414731754,
                                -0.8391431411009982, 0.7708165293578557, 0.3936490220736587, 1.1682451103682938};
    const double y_eval[12] = {0.6344516289549031,  1.721471891236062,   -1.4546836846283433, -2.3491072979409613,
                               -1.5395888956074146, 0.0909414978143237,  -1.0074718779720342, -1.9018954912846522,
                               -0.45256863332625574, 0.6344516289549031, -0.5602600713157253, 1.2285871553095107};
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        double tol = dt == NB_F32 ? 2e-6 : 1e-12;
        nb_tape *tp = nb_tape_new();
        nb_tensor *x = nb_from_array(tp, dt, NB_SHAPE(3, 2, 2), xs);
        nb_tensor *g = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){1.5, -0.5}));
        nb_tensor *b = nb_from_array(tp, dt, NB_SHAPE(2), ((double[]){0.1, 0.2}));
        nb_tensor *rm = nb_from_array(NULL, dt, NB_SHAPE(2), ((double[]){0.5, -1}));
        nb_tensor *rv = nb_from_array(NULL, dt, NB_SHAPE(2), ((double[]){2, 0.5}));
        nb_tensor *y = nb_batch_norm(tp, x, g, b, rm, rv, 0.1, 1e-5);
        assert_ok(y);
        for (size_t i = 0; i < 12; i++) assert_close(nb_get(y, i), y_train[i], tol);
        assert_close(nb_get(rm, 0), 0.5083333333333333, tol);
        assert_close(nb_get(rm, 1), -0.7, tol);
        assert_close(nb_get(rv, 0), 1.9041666666666668, tol);
        assert_close(nb_get(rv, 1), 1.25, tol);
        nb_tape_set_training(tp, false);
        nb_tensor *e = nb_batch_norm(tp, x, g, b, rm, rv, 0.1, 1e-5);
        for (size_t i = 0; i < 12; i++) assert_close(nb_get(e, i), y_eval[i], tol);
        assert_close(nb_get(rm, 0), 0.5083333333333333, tol); /* unchanged in evaluation */
        nb_tape_free(tp);
        nb_tensor_free(rm);
        nb_tensor_free(rv);
    }
}

typedef struct {
    bool gamma, beta, eval;
    int ndim;
    nb_tensor *R, *rm, *rv;
} bn_user;

static nb_tensor *bn_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    const bn_user *u = user;
    int k = 1;
    nb_tensor *g = u->gamma ? in[k++] : NULL, *b = u->beta ? in[k++] : NULL;
    nb_tape_set_training(tp, !u->eval);
    /* running statistics only in evaluation: training would move them
     * between gradcheck's evaluations */
    nb_tensor *y = nb_batch_norm(tp, in[0], g, b, u->eval ? u->rm : NULL, u->eval ? u->rv : NULL, 0.1, 1e-5);
    return nb_add(tp, weighted(tp, y, u->R), nb_scale(tp, nb_sum(tp, nb_mul(tp, in[0], in[0])), 0.05));
}

static void test_batch_norm_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 15);
    const size_t shapes[3][4] = {{5, 3}, {2, 3, 4}, {2, 3, 2, 3}};
    for (int s = 0; s < 3; s++)
        for (int variant = 0; variant < 4; variant++) {
            bn_user u = {variant != 1, variant != 2, variant == 3, s + 2, NULL, NULL, NULL};
            nb_tensor *in[3];
            int n = 0;
            in[n++] = random_input(&rng, u.ndim, shapes[s], -2, 2, false);
            if (u.gamma) in[n++] = random_input(&rng, 1, (size_t[]){3}, 0.5, 1.5, false);
            if (u.beta) in[n++] = random_input(&rng, 1, (size_t[]){3}, -1, 1, false);
            u.R = nb_rand_uniform(NULL, &rng, NB_F64, u.ndim, shapes[s], -1, 1);
            u.rm = nb_rand_uniform(NULL, &rng, NB_F64, 1, (size_t[]){3}, -0.5, 0.5);
            u.rv = nb_rand_uniform(NULL, &rng, NB_F64, 1, (size_t[]){3}, 0.5, 2);
            assert_gradcheck(bn_loss, in, n, &u);
            char what[64];
            snprintf(what, sizeof what, "batch_norm %d-D, variant %d", u.ndim, variant);
            assert_gradgradcheck(bn_loss, in, n, &u, what);
            for (int i = 0; i < n; i++) nb_tensor_free(in[i]);
            nb_tensor_free(u.R);
            nb_tensor_free(u.rm);
            nb_tensor_free(u.rv);
        }
}

/* ---------------------------------------------------------------- pictures */

static void test_picture_labels(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(tp, NB_F32, NB_SHAPE(1, 2, 6, 6)), *w = nb_ones(NULL, NB_F32, NB_SHAPE(4, 2, 3, 3));
    nb_requires_grad(w, true);
    nb_tensor *y = nb_conv2d(tp, x, w, NULL, &(nb_conv_opts){.stride = {2, 2}, .padding = {1, 1}});
    y = nb_max_pool2d(tp, y, &(nb_pool_opts){.kernel = {2, 2}});
    assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
    char path[] = "/tmp/nabla-conv-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(nb_dot_save(tp, path, NULL), NB_OK);
    FILE *f = fopen(path, "r");
    char text[16384];
    size_t len = fread(text, 1, sizeof text - 1, f);
    text[len] = '\0';
    fclose(f);
    unlink(path);
    assert_non_null(strstr(text, "conv2d\\n3×3, stride 2, padding 1"));
    assert_non_null(strstr(text, "max_pool2d\\n2×2"));
    assert_non_null(strstr(text, "∂L/∂t1 = Σ over examples of ∂L/∂t2 ⋆ t0")); /* the upstream and x by name */
    nb_tape_free(tp);
    nb_tensor_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_matches_the_definition),
        cmocka_unit_test(test_conv_against_pytorch),
        cmocka_unit_test(test_conv_gradients),
        cmocka_unit_test(test_conv_second_derivatives),
        cmocka_unit_test(test_conv_third_derivatives),
        cmocka_unit_test(test_conv_with_relu_fused),
        cmocka_unit_test(test_conv_bias_gradient_with_weights_frozen),
        cmocka_unit_test(test_pooling_against_pytorch),
        cmocka_unit_test(test_pooling_gradients),
        cmocka_unit_test(test_max_pool_overhanging_windows_against_pytorch),
        cmocka_unit_test(test_max_pool_window_in_the_padding),
        cmocka_unit_test(test_pooling_matches_the_definition),
        cmocka_unit_test(test_batch_norm_against_pytorch),
        cmocka_unit_test(test_batch_norm_gradients),
        cmocka_unit_test(test_picture_labels),
    };
    return cmocka_run_group_tests_name("conv", tests, NULL, NULL);
}
