/*
 * Transposed convolutions: forward values against a direct scatter loop
 * written here (the definition: each input element adds its weighted
 * kernel into the output) on random shapes with every option, against the
 * input gradient of nb_conv2d (what a transposed convolution is), and
 * against numbers PyTorch 1.13 printed for the same inputs; gradients
 * against central differences (float64) with fan-out; second and third
 * derivatives with nb_gradgradcheck; the same bits on 1 and 2 threads; a
 * warm step without allocations (with the upsamplings); the picture label.  Bad input is in tests/test_catalogue.c.
 */
#include "support.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    size_t N, C, H, W, O, KH, KW; /* x (N, C, H, W), w (C, O / groups, KH, KW): O output channels */
    nb_conv_transpose_opts o;
    bool bias, one_d;
} ct_case;

static size_t groups_of(const ct_case *k) { return k->o.groups ? (size_t)k->o.groups : 1; }

/* The axis parameters of the case (1-D: the width's are the first of each pair). */
static void axis_params(const ct_case *k, long *s, long *p, long *op, long *d) {
    for (int a = 0; a < 2; a++) s[a] = 1, p[a] = 0, op[a] = 0, d[a] = 1;
    for (int a = 0; a < (k->one_d ? 1 : 2); a++) {
        int at = k->one_d ? 1 : a;
        s[at] = k->o.stride[a] ? k->o.stride[a] : 1;
        p[at] = k->o.padding[a];
        op[at] = k->o.output_padding[a];
        d[at] = k->o.dilation[a] ? k->o.dilation[a] : 1;
    }
}

static void out_sizes(const ct_case *k, size_t *OH, size_t *OW) {
    long s[2], p[2], op[2], d[2];
    axis_params(k, s, p, op, d);
    size_t H = k->one_d ? 1 : k->H, KH = k->one_d ? 1 : k->KH;
    *OH = (size_t)(((long)H - 1) * s[0] - 2 * p[0] + d[0] * ((long)KH - 1) + op[0] + 1);
    *OW = (size_t)(((long)k->W - 1) * s[1] - 2 * p[1] + d[1] * ((long)k->KW - 1) + op[1] + 1);
}

/* y[n, g Og + o, i s - p + kh d, j s - p + kw d] += x[n, g Cg + c, i, j] w[g Cg + c, o, kh, kw],
 * y starting as the bias: straight from the definition, in double. */
static void direct(const ct_case *k, const double *x, const double *w, const double *b, double *y) {
    size_t groups = groups_of(k), Cg = k->C / groups, Og = k->O / groups, OH, OW;
    size_t H = k->one_d ? 1 : k->H, KH = k->one_d ? 1 : k->KH;
    long s[2], p[2], op[2], d[2];
    axis_params(k, s, p, op, d);
    out_sizes(k, &OH, &OW);
    for (size_t n = 0; n < k->N; n++)
        for (size_t o = 0; o < k->O; o++)
            for (size_t q = 0; q < OH * OW; q++) y[(n * k->O + o) * OH * OW + q] = b ? b[o] : 0;
    for (size_t n = 0; n < k->N; n++)
        for (size_t c = 0; c < k->C; c++)
            for (size_t i = 0; i < H; i++)
                for (size_t j = 0; j < k->W; j++) {
                    double v = x[((n * k->C + c) * H + i) * k->W + j];
                    size_t grp = c / Cg;
                    for (size_t o = 0; o < Og; o++)
                        for (size_t kh = 0; kh < KH; kh++)
                            for (size_t kw = 0; kw < k->KW; kw++) {
                                long r = (long)i * s[0] - p[0] + (long)kh * d[0];
                                long t = (long)j * s[1] - p[1] + (long)kw * d[1];
                                if (r < 0 || r >= (long)OH || t < 0 || t >= (long)OW) continue;
                                y[((n * k->O + grp * Og + o) * OH + (size_t)r) * OW + (size_t)t] +=
                                    v * w[((c * Og + o) * KH + kh) * k->KW + kw];
                            }
                }
}

static const ct_case cases[] = {
    {2, 3, 4, 5, 2, 3, 3, {.groups = 0}, true, false},                                        /* plain 3x3 */
    {1, 2, 3, 3, 3, 1, 1, {.groups = 1}, false, false},                                       /* 1x1 */
    {2, 4, 3, 4, 6, 3, 2, {.stride = {2, 3}, .padding = {1, 0}, .output_padding = {1, 2}, .groups = 2}, true, false},
    {1, 3, 3, 3, 3, 3, 3, {.stride = {2, 2}, .padding = {2, 2}, .dilation = {2, 2}, .groups = 3}, false, false}, /* depthwise */
    {2, 2, 3, 3, 2, 2, 2, {.stride = {4, 5}, .padding = {3, 1}}, true, false},                /* stride > kernel, padding > kernel */
    {1, 2, 1, 1, 3, 3, 2, {.stride = {2, 2}, .output_padding = {1, 1}}, true, false},         /* a 1x1 input */
    {1, 2, 3, 2, 2, 2, 3, {.dilation = {3, 2}, .output_padding = {2, 1}}, false, false},     /* output padding < dilation */
    {3, 1, 5, 4, 1, 4, 1, {.stride = {3, 1}, .padding = {2, 0}}, true, false},                /* rectangular kernel */
    {2, 4, 1, 5, 2, 1, 3, {.stride = {2}, .padding = {1}, .output_padding = {1}, .groups = 2}, true, true}, /* 1-D */
    {1, 2, 1, 4, 3, 1, 2, {.dilation = {3}, .stride = {3}, .padding = {4}}, false, true},    /* 1-D dilated */
    {2, 2, 3, 2, 4, 1, 1, {.dilation = {2, 3}, .output_padding = {1, 2}}, true, false},     /* 1x1, output padding */
};
#define N_CASES (sizeof cases / sizeof *cases)

static void inputs(const ct_case *k, nb_rng *rng, nb_tensor **x, nb_tensor **w, nb_tensor **b) {
    size_t groups = groups_of(k);
    if (k->one_d) {
        *x = random_input(rng, 3, (size_t[]){k->N, k->C, k->W}, -1, 1, false);
        *w = random_input(rng, 3, (size_t[]){k->C, k->O / groups, k->KW}, -1, 1, false);
    } else {
        *x = random_input(rng, 4, (size_t[]){k->N, k->C, k->H, k->W}, -1, 1, false);
        *w = random_input(rng, 4, (size_t[]){k->C, k->O / groups, k->KH, k->KW}, -1, 1, false);
    }
    *b = k->bias ? random_input(rng, 1, (size_t[]){k->O}, -1, 1, false) : NULL;
}

static nb_tensor *ct_of(nb_tape *tp, const ct_case *k, nb_tensor *x, nb_tensor *w, nb_tensor *b) {
    return k->one_d ? nb_conv_transpose1d(tp, x, w, b, &k->o) : nb_conv_transpose2d(tp, x, w, b, &k->o);
}

static void test_matches_the_definition(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 21);
    for (size_t c = 0; c < N_CASES; c++) {
        const ct_case *k = &cases[c];
        nb_tensor *x, *w, *b;
        inputs(k, &rng, &x, &w, &b);
        size_t OH, OW;
        out_sizes(k, &OH, &OW);
        double *expected = malloc(k->N * k->O * OH * OW * sizeof *expected);
        direct(k, nb_tensor_data(x), nb_tensor_data(w), b ? nb_tensor_data(b) : NULL, expected);
        for (int dt = NB_F32; dt <= NB_F64; dt++) {
            nb_tape *tp = nb_tape_new();
            nb_tensor *y = ct_of(tp, k, nb_cast(tp, x, dt), nb_cast(tp, w, dt), b ? nb_cast(tp, b, dt) : NULL);
            assert_ok(y);
            assert_int_equal(nb_tensor_dim(y, 0), k->N);
            assert_int_equal(nb_tensor_dim(y, 1), k->O);
            assert_int_equal(nb_tensor_dim(y, -1), OW);
            if (!k->one_d) assert_int_equal(nb_tensor_dim(y, 2), OH);
            assert_int_equal(nb_tensor_size(y), k->N * k->O * OH * OW);
            for (size_t i = 0; i < nb_tensor_size(y); i++)
                assert_close(nb_get(y, i), expected[i], dt == NB_F32 ? 1e-5 : 1e-12);
            nb_tape_free(tp);
        }
        free(expected);
        nb_tensor_free(x), nb_tensor_free(w), nb_tensor_free(b);
    }
}

/* conv_transpose2d(x, w) is d/dz Σ x ⊙ conv2d(z, w) for z of the result's
 * shape (the input gradient of the convolution), here through nb_grad of
 * nb_conv2d: checked where output_padding is 0 (with it, the convolution
 * of z would have rows the transposed one never writes). */
static void test_is_the_input_gradient_of_conv2d(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 22);
    for (size_t c = 0; c < N_CASES; c++) {
        const ct_case *k = &cases[c];
        if (k->one_d || k->o.output_padding[0] || k->o.output_padding[1]) continue;
        nb_tensor *x, *w, *b;
        inputs(k, &rng, &x, &w, &b);
        size_t OH, OW;
        out_sizes(k, &OH, &OW);
        nb_tape *tp = nb_tape_new();
        nb_tensor *z = nb_zeros(tp, NB_F64, NB_SHAPE(k->N, k->O, OH, OW));
        nb_requires_grad(z, true);
        nb_conv_opts co = {.groups = k->o.groups};
        memcpy(co.stride, k->o.stride, sizeof co.stride);
        memcpy(co.padding, k->o.padding, sizeof co.padding);
        memcpy(co.dilation, k->o.dilation, sizeof co.dilation);
        nb_tensor *cz = nb_conv2d(tp, z, w, NULL, &co), *gz;
        assert_ok(cz);
        assert_int_equal(nb_grad(nb_sum(tp, nb_mul(tp, cz, x)), &z, 1, &gz, false), NB_OK);
        nb_tensor *y = nb_conv_transpose2d(tp, x, w, NULL, &k->o);
        assert_ok(y);
        assert_int_equal(nb_tensor_size(y), nb_tensor_size(gz));
        for (size_t i = 0; i < nb_tensor_size(y); i++) assert_close(nb_get(y, i), nb_get(gz, i), 1e-12);
        nb_tape_free(tp);
        nb_tensor_free(x), nb_tensor_free(w), nb_tensor_free(b);
    }
}

/* PyTorch 1.13, float64: F.conv_transpose2d(x, w, b, stride=(2, 3),
 * padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(2, 1)) with
 * x = (arange(48) % 7 - 3) / 4 as (2, 4, 3, 2), w = (arange(72) % 5 - 2) / 3
 * as (4, 3, 3, 2), b = (0.5, -1, 0.25, 0, 1, 2): y (2, 6, 8, 7), sum
 * 306.58333333333337, sum of squares 736.6041666666666, its first row
 * below.  F.conv_transpose1d(x1, w1, stride=3, padding=2, output_padding=1)
 * with x1 = (arange(12) % 5 - 2) / 2 as (1, 3, 4), w1 = arange(18) % 4 - 1.5
 * as (3, 2, 3): the 18 values below. */
static void test_against_pytorch(void **state) {
    (void)state;
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        double tol = dt == NB_F32 ? 1e-5 : 1e-12;
        nb_tape *tp = nb_tape_new();
        nb_tensor *x = nb_zeros(tp, dt, NB_SHAPE(2, 4, 3, 2)), *w = nb_zeros(tp, dt, NB_SHAPE(4, 3, 3, 2));
        nb_tensor *b = nb_from_array(tp, dt, NB_SHAPE(6), ((double[]){0.5, -1, 0.25, 0, 1, 2}));
        for (size_t i = 0; i < 48; i++) nb_set(x, i, ((double)(i % 7) - 3) / 4);
        for (size_t i = 0; i < 72; i++) nb_set(w, i, ((double)(i % 5) - 2) / 3);
        nb_tensor *y = nb_conv_transpose2d(tp, x, w, b,
                                           &(nb_conv_transpose_opts){.stride = {2, 3}, .padding = {1, 0},
                                                                     .output_padding = {1, 2}, .groups = 2,
                                                                     .dilation = {2, 1}});
        assert_ok(y);
        assert_int_equal(nb_tensor_dim(y, 1), 6);
        assert_int_equal(nb_tensor_dim(y, 2), 8);
        assert_int_equal(nb_tensor_dim(y, 3), 7);
        const double row[14] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0, -0.25, 0.5, 0.91666666666666674,
                                0.41666666666666669, 0.5, 0.5};
        for (size_t i = 0; i < 14; i++) assert_close(nb_get(y, i), row[i], tol);
        assert_close(nb_item(nb_sum(tp, y)), 306.58333333333337, 100 * tol);
        assert_close(nb_item(nb_sum(tp, nb_mul(tp, y, y))), 736.6041666666666, 100 * tol);
        nb_tensor *x1 = nb_zeros(tp, dt, NB_SHAPE(1, 3, 4)), *w1 = nb_zeros(tp, dt, NB_SHAPE(3, 2, 3));
        for (size_t i = 0; i < 12; i++) nb_set(x1, i, ((double)(i % 5) - 2) / 2);
        for (size_t i = 0; i < 18; i++) nb_set(w1, i, (double)(i % 4) - 1.5);
        nb_tensor *y1 = nb_conv_transpose1d(
            tp, x1, w1, NULL, &(nb_conv_transpose_opts){.stride = {3}, .padding = {2}, .output_padding = {1}});
        const double torch1[18] = {-1.75, -1.25, -1.75, 1.75, 1.25,  -0.25, 0.25,  0,    0,
                                   1.75,  1.25,  -1.25, -1.75, -1.25, 1.25, -0.25, 0,    0};
        assert_ok(y1);
        assert_int_equal(nb_tensor_size(y1), 18);
        for (size_t i = 0; i < 18; i++) assert_close(nb_get(y1, i), torch1[i], tol);
        nb_tape_free(tp);
    }
}

/* A 1x1 kernel with stride 1 and output padding 1 (allowed by dilation 2):
 * the output is one row and column larger than x, the last ones zero.
 * PyTorch 1.13: F.conv_transpose2d(x, w, dilation=2, output_padding=1),
 * x = (arange(18) % 7 - 3) / 4 as (1, 2, 3, 3), w = (arange(6) % 5 - 2) / 3
 * as (2, 3, 1, 1), float64: channel 1 below. */
static void test_one_by_one_with_output_padding(void **state) {
    (void)state;
    const double torch1[16] = {0.083333333333333343, 0.16666666666666666, 0.25, 0, 0.33333333333333331,
                               0.41666666666666663, -0.66666666666666663, 0, -0.58333333333333326,
                               0.083333333333333343, 0.16666666666666666, 0, 0, 0, 0, 0};
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_zeros(tp, NB_F64, NB_SHAPE(1, 2, 3, 3)), *w = nb_zeros(tp, NB_F64, NB_SHAPE(2, 3, 1, 1));
    for (size_t i = 0; i < 18; i++) nb_set(x, i, ((double)(i % 7) - 3) / 4);
    for (size_t i = 0; i < 6; i++) nb_set(w, i, ((double)(i % 5) - 2) / 3);
    nb_tensor *y = nb_conv_transpose2d(tp, x, w, NULL,
                                       &(nb_conv_transpose_opts){.dilation = {2, 2}, .output_padding = {1, 1}});
    assert_ok(y);
    assert_int_equal(nb_tensor_dim(y, 2), 4);
    assert_int_equal(nb_tensor_dim(y, 3), 4);
    for (size_t i = 0; i < 16; i++) assert_close(nb_get(y, 16 + i), torch1[i], 1e-15);
    nb_tape_free(tp);
}

/* loss = Σ R y + 0.1 Σ R y², R fixed random; with fan-out x also goes
 * through a second transposed convolution (of sin x) with the same w. */
typedef struct {
    const ct_case *k;
    nb_tensor *R;
    int fan_out;
} ct_user;

static nb_tensor *ct_loss(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const ct_user *u = user;
    nb_tensor *y = ct_of(tp, u->k, in[0], in[1], n > 2 ? in[2] : NULL);
    if (u->fan_out) y = nb_add(tp, y, nb_tanh(tp, ct_of(tp, u->k, nb_sin(tp, in[0]), in[1], NULL)));
    return weighted_loss(tp, y, u->R);
}

static nb_tensor *result_weights(const ct_case *k, nb_rng *rng, nb_tensor *const *in) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *y = ct_of(tp, k, in[0], in[1], in[2]);
    assert_ok(y);
    nb_tensor *R = nb_rand_uniform(NULL, rng, NB_F64, nb_tensor_ndim(y), nb_tensor_shape(y), -1, 1);
    nb_tape_free(tp);
    return R;
}

static void test_gradients(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 23);
    for (size_t c = 0; c < N_CASES; c++) {
        const ct_case *k = &cases[c];
        nb_tensor *in[3];
        inputs(k, &rng, &in[0], &in[1], &in[2]);
        nb_tensor *R = result_weights(k, &rng, in);
        for (int fan_out = 0; fan_out <= 1; fan_out++) {
            ct_user u = {k, R, fan_out};
            assert_gradcheck(ct_loss, in, k->bias ? 3 : 2, &u);
        }
        nb_tensor_free(R);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

/* Random shapes and options (seeded), gradient-checked, and second
 * derivatives for every third. */
static void test_random_shapes(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 24);
    int ran = 0;
    for (int trial = 0; trial < 24; trial++) {
        ct_case k = {.one_d = nb_rng_uniform(&rng) < 0.3, .bias = nb_rng_uniform(&rng) < 0.6};
        int groups = 1 + (int)(nb_rng_uniform(&rng) * 3);
        k.o.groups = groups;
        k.N = 1 + (size_t)(nb_rng_uniform(&rng) * 2);
        k.C = (size_t)groups * (1 + (size_t)(nb_rng_uniform(&rng) * 2));
        k.O = (size_t)groups * (1 + (size_t)(nb_rng_uniform(&rng) * 2));
        k.H = k.one_d ? 1 : 1 + (size_t)(nb_rng_uniform(&rng) * 4);
        k.W = 1 + (size_t)(nb_rng_uniform(&rng) * 4);
        k.KH = k.one_d ? 1 : 1 + (size_t)(nb_rng_uniform(&rng) * 3);
        k.KW = 1 + (size_t)(nb_rng_uniform(&rng) * 3);
        for (int a = 0; a < 2; a++) {
            k.o.stride[a] = 1 + (int)(nb_rng_uniform(&rng) * 3);
            k.o.dilation[a] = 1 + (int)(nb_rng_uniform(&rng) * 2);
            int most = (k.o.stride[a] > k.o.dilation[a] ? k.o.stride[a] : k.o.dilation[a]) - 1;
            k.o.output_padding[a] = (int)(nb_rng_uniform(&rng) * (most + 1));
            k.o.padding[a] = (int)(nb_rng_uniform(&rng) * 2);
        }
        size_t OH, OW;
        out_sizes(&k, &OH, &OW);
        if ((long)OH < 1 || (long)OW < 1 || OH > 64 || OW > 64) continue;
        nb_tensor *in[3];
        inputs(&k, &rng, &in[0], &in[1], &in[2]);
        nb_tensor *R = result_weights(&k, &rng, in);
        ct_user u = {&k, R, trial % 2};
        assert_gradcheck(ct_loss, in, k.bias ? 3 : 2, &u);
        ran++;
        if (trial % 3 == 0) {
            char what[96];
            snprintf(what, sizeof what, "random conv_transpose trial %d", trial);
            assert_gradgradcheck(ct_loss, in, k.bias ? 3 : 2, &u, what);
        }
        nb_tensor_free(R);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
    assert_true(ran >= 12); /* most draws give a valid output size */
}

static void test_second_derivatives(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 25);
    const size_t picks[] = {0, 2, 3, 4, 6, 8};
    for (size_t p = 0; p < sizeof picks / sizeof *picks; p++) {
        const ct_case *k = &cases[picks[p]];
        nb_tensor *in[3];
        inputs(k, &rng, &in[0], &in[1], &in[2]);
        nb_tensor *R = result_weights(k, &rng, in);
        ct_user u = {k, R, 1};
        char what[64];
        snprintf(what, sizeof what, "conv_transpose case %zu", picks[p]);
        assert_gradgradcheck(ct_loss, in, k->bias ? 3 : 2, &u, what);
        nb_tensor_free(R);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

/* Third order: F = Σ R' · dL/dx + Σ R'' · dL/dw with the gradients as ops
 * (create_graph), checked by gradgradcheck. */
typedef struct {
    ct_user inner;
    nb_tensor *Rx, *Rw;
} third_user;

static nb_tensor *gradient_dot(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    const third_user *u = user;
    nb_tensor *loss = ct_loss(tp, in, n, (void *)&u->inner), *g[2];
    assert_int_equal(nb_grad(loss, in, 2, g, true), NB_OK);
    return nb_add(tp, nb_sum(tp, nb_mul(tp, g[0], u->Rx)), nb_sum(tp, nb_mul(tp, g[1], u->Rw)));
}

static void test_third_derivatives(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 26);
    const size_t picks[] = {2, 8};
    for (size_t p = 0; p < sizeof picks / sizeof *picks; p++) {
        const ct_case *k = &cases[picks[p]];
        nb_tensor *in[3];
        inputs(k, &rng, &in[0], &in[1], &in[2]);
        third_user u = {{k, result_weights(k, &rng, in), 0},
                        nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(in[0]), nb_tensor_shape(in[0]), -1, 1),
                        nb_rand_uniform(NULL, &rng, NB_F64, nb_tensor_ndim(in[1]), nb_tensor_shape(in[1]), -1, 1)};
        char what[64];
        snprintf(what, sizeof what, "conv_transpose case %zu, third order", picks[p]);
        assert_gradgradcheck(gradient_dot, in, k->bias ? 3 : 2, &u, what);
        nb_tensor_free(u.inner.R), nb_tensor_free(u.Rx), nb_tensor_free(u.Rw);
        for (int i = 0; i < 3; i++) nb_tensor_free(in[i]);
    }
}

/* The result and the three gradients of a case big enough to be split
 * over threads, as bytes. */
static void run_big(int threads, nb_dtype dt, double *out, size_t n_out) {
    nb_set_threads(threads);
    memset(out, 0, n_out * sizeof *out);
    nb_rng rng;
    nb_rng_seed(&rng, 27);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(9, 8, 12, 11), 0, 1);
    nb_tensor *w = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(8, 3, 3, 3), 0, 1);
    nb_tensor *b = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(6), 0, 1);
    nb_tensor *leaves[3] = {x, w, b};
    for (int i = 0; i < 3; i++) nb_requires_grad(leaves[i], true);
    nb_tensor *y = nb_conv_transpose2d(tp, x, w, b,
                                       &(nb_conv_transpose_opts){.stride = {2, 2}, .padding = {1, 1},
                                                                 .output_padding = {1, 0}, .groups = 2});
    assert_ok(y);
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, y, y))), NB_OK);
    size_t at = 0;
    for (size_t i = 0; i < nb_tensor_size(y) && at < n_out; i++) out[at++] = nb_get(y, i);
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < nb_tensor_size(leaves[l]) && at < n_out; i++) out[at++] = nb_grad_get(leaves[l], i);
    nb_tape_free(tp);
    for (int i = 0; i < 3; i++) nb_tensor_free(leaves[i]);
    nb_set_threads(1);
}

static void test_same_bits_on_any_thread_count(void **state) {
    (void)state;
    enum { VALUES = 9 * 6 * 24 * 21 + 9 * 8 * 12 * 11 + 8 * 3 * 9 + 6 };
    double *one = malloc(VALUES * sizeof *one), *two = malloc(VALUES * sizeof *two);
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        run_big(1, dt, one, VALUES);
        run_big(2, dt, two, VALUES);
        assert_memory_equal(one, two, VALUES * sizeof *one);
    }
    free(one), free(two);
}

/* A decoder's warm training step (transposed convolution, bilinear
 * upsampling, backward, create_graph's gradient too) allocates nothing:
 * the geometry, the upsampling's tables and the working memory come from
 * the tape. */
static void test_warm_steps_allocate_nothing(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 28);
    nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(4, 6, 5, 5), 0, 1);
    nb_tensor *w = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(6, 3, 4, 4), 0, 0.2);
    nb_tensor *b = nb_zeros(NULL, NB_F32, NB_SHAPE(3));
    nb_requires_grad(w, true), nb_requires_grad(b, true);
    nb_tape *tp = nb_tape_new();
    uint64_t before = 0;
    for (int step = 0; step < 12; step++) {
        if (step == 6) before = nb_alloc_count();
        nb_tape_reset(tp);
        nb_zero_grad(w), nb_zero_grad(b);
        nb_tensor *y = nb_conv_transpose2d(tp, x, w, b, &(nb_conv_transpose_opts){.stride = {2, 2}, .padding = {1, 1}});
        y = nb_upsample_bilinear2d(tp, nb_tanh(tp, y), &(nb_upsample_opts){.scale = {1.5, 1.5}});
        y = nb_upsample_nearest2d(tp, y, &(nb_upsample_opts){.size = {20, 17}});
        nb_tensor *loss = nb_mean(tp, nb_square(tp, y)), *g;
        assert_int_equal(nb_grad(loss, &w, 1, &g, true), NB_OK);
        assert_int_equal(nb_backward(nb_add(tp, loss, nb_sum(tp, nb_square(tp, g)))), NB_OK);
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    nb_tape_free(tp);
    nb_tensor_free(x), nb_tensor_free(w), nb_tensor_free(b);
}

static void test_picture_label(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(tp, NB_F32, NB_SHAPE(1, 2, 3, 3)), *w = nb_ones(NULL, NB_F32, NB_SHAPE(2, 4, 3, 3));
    nb_requires_grad(w, true);
    nb_tensor *y = nb_conv_transpose2d(
        tp, x, w, NULL, &(nb_conv_transpose_opts){.stride = {2, 2}, .padding = {1, 1}, .output_padding = {1, 1}});
    assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
    char path[] = "/tmp/nabla-convt-XXXXXX";
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
    assert_non_null(strstr(text, "conv_transpose2d\\n3×3, stride 2, padding 1, output padding 1"));
    assert_non_null(strstr(text, "∂L/∂t1 = Σ over examples of t0 ⋆ ∂L/∂t2"));
    nb_tape_free(tp);
    nb_tensor_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_definition),
        cmocka_unit_test(test_is_the_input_gradient_of_conv2d),
        cmocka_unit_test(test_against_pytorch),
        cmocka_unit_test(test_one_by_one_with_output_padding),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_random_shapes),
        cmocka_unit_test(test_second_derivatives),
        cmocka_unit_test(test_third_derivatives),
        cmocka_unit_test(test_same_bits_on_any_thread_count),
        cmocka_unit_test(test_warm_steps_allocate_nothing),
        cmocka_unit_test(test_picture_label),
    };
    return cmocka_run_group_tests_name("conv_transpose", tests, NULL, NULL);
}
