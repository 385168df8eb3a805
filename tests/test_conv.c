/*
 * Convolutions and batch norm: forward values against direct loops
 * written here (the definition, no unfolding) on random shapes with every
 * option, and against numbers PyTorch 1.13 printed for the same inputs;
 * gradients against central differences (float64), including fan-out;
 * second derivatives with nb_gradgradcheck; the picture labels.  Pooling
 * is in tests/test_pool.c.
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

static nb_tensor *conv_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const conv_user *u = user;
    nb_tensor *y = conv_of(tp, u->k, in[0], in[1], n > 2 ? in[2] : NULL);
    if (u->fan_out) y = nb_add(tp, y, nb_tanh(tp, conv_of(tp, u->k, nb_sin(tp, in[0]), in[1], NULL)));
    return weighted_loss(tp, y, u->R);
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
    return weighted_loss(tp, conv_of(tp, &k, in[0], in[1], n > 2 ? in[2] : NULL), u->R);
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

/* The fused relu passes no gradient where y <= 0 even when it is inf or
 * NaN there, and passes it where y is NaN, as nb_relu (and PyTorch's
 * threshold_backward): the upstream
 * gradient is inf or NaN at every such place and the inputs' gradients are
 * those of conv then nb_relu, finite, at first order and with create_graph
 * (the fused backward made G · 0 = NaN). */
static void test_conv_relu_passes_no_infinite_gradient(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 19);
    conv_case k = conv_cases[0];
    nb_tensor *in[3];
    conv_inputs(&k, &rng, &in[0], &in[1], &in[2]);
    int n = k.bias ? 3 : 2;
    for (int graph = 0; graph < 2; graph++) {
        double *grads[2][3];
        for (int fused = 0; fused < 2; fused++) {
            nb_tape *tp = nb_tape_new();
            k.o.relu = fused;
            nb_tensor *y = conv_of(tp, &k, in[0], in[1], in[2]), *g[3];
            if (!fused) y = nb_relu(tp, y);
            nb_tensor *R = nb_rand_uniform(tp, &(nb_rng){{1, 2, 3, 4}, false, 0}, NB_F64, nb_tensor_ndim(y),
                                           nb_tensor_shape(y), -1, 1);
            size_t hidden = 0;
            for (size_t e = 0; e < nb_tensor_size(y); e++)
                if (nb_get(y, e) <= 0) nb_set(R, e, hidden++ % 2 ? NAN : INFINITY);
            assert_true(hidden > 0);
            assert_int_equal(nb_grad(nb_sum(tp, nb_mul(tp, y, R)), in, n, g, graph), NB_OK);
            for (int i = 0; i < n; i++) {
                grads[fused][i] = malloc(nb_tensor_size(in[i]) * sizeof(double));
                for (size_t e = 0; e < nb_tensor_size(in[i]); e++) {
                    grads[fused][i][e] = nb_get(g[i], e);
                    assert_true(isfinite(grads[fused][i][e]));
                }
            }
            nb_tape_free(tp);
        }
        for (int i = 0; i < n; i++) {
            assert_memory_equal(grads[0][i], grads[1][i], nb_tensor_size(in[i]) * sizeof(double));
            free(grads[0][i]);
            free(grads[1][i]);
        }
    }
    /* A NaN in x makes NaN outputs, where relu passes G (NaN is not <= 0):
     * dx is the same at first order and with create_graph (whose mask was
     * y > 0, which blocked it). */
    nb_set(in[0], 0, NAN);
    double *dx[2];
    for (int graph = 0; graph < 2; graph++) {
        nb_tape *tp = nb_tape_new();
        k.o.relu = true;
        nb_tensor *y = conv_of(tp, &k, in[0], in[1], in[2]), *g[3];
        assert_true(isnan(nb_get(y, 0)));
        assert_int_equal(nb_grad(nb_sum(tp, y), in, n, g, graph), NB_OK);
        dx[graph] = malloc(nb_tensor_size(in[0]) * sizeof(double));
        for (size_t e = 0; e < nb_tensor_size(in[0]); e++) dx[graph][e] = nb_get(g[0], e);
        nb_tape_free(tp);
    }
    for (size_t e = 0; e < nb_tensor_size(in[0]); e++)
        assert_true(dx[0][e] == dx[1][e] || (isnan(dx[0][e]) && isnan(dx[1][e])));
    free(dx[0]);
    free(dx[1]);
    for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
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
    return nb_add(tp, weighted_loss(tp, y, u->R), nb_scale(tp, nb_sum(tp, nb_mul(tp, in[0], in[0])), 0.05));
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
        cmocka_unit_test(test_conv_relu_passes_no_infinite_gradient),
        cmocka_unit_test(test_conv_bias_gradient_with_weights_frozen),
        cmocka_unit_test(test_batch_norm_against_pytorch),
        cmocka_unit_test(test_batch_norm_gradients),
        cmocka_unit_test(test_picture_labels),
    };
    return cmocka_run_group_tests_name("conv", tests, NULL, NULL);
}
