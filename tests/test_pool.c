/*
 * Max and average pooling: against numbers PyTorch 1.13 printed, gradients
 * against central differences (float64), and the fast and general paths
 * against the definition on random geometries (odd sizes, ceil mode,
 * padding, dilation, windows wholly in the padding; first and second
 * order).
 */
#include "support.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    return nb_add(tp, weighted_loss(tp, y, u->R), nb_scale(tp, nb_sum(tp, nb_square(tp, in[0])), 0.01));
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

/* With ceil_mode, PyTorch takes a window larger than the padded x (it is
 * clipped): x = (1, 2, 3) in (1, 1, 1, 3), kernel 1x4, stride 2 gives one
 * output, max 3 (gradient to the 3) and average 2 (gradient 1/3 each, the
 * divisor being the clipped window's 3 elements), as torch 1.13 printed.
 * nabla refused it ("does not fit"); without ceil_mode both refuse. */
static void test_ceil_mode_window_larger_than_x(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(1, 1, 1, 3), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    nb_pool_opts o = {.kernel = {1, 4}, .stride = {2, 2}, .ceil_mode = true};
    for (int avg = 0; avg < 2; avg++) {
        for (int exclude = 0; exclude < 2; exclude++) {
            nb_tape_reset(tp);
            nb_zero_grad(x);
            o.exclude_pad = exclude;
            nb_tensor *y = avg ? nb_avg_pool2d(tp, x, &o) : nb_max_pool2d(tp, x, &o);
            assert_ok(y);
            assert_int_equal(nb_tensor_size(y), 1);
            assert_close(nb_item(y), avg ? 2.0 : 3.0, 1e-15);
            assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
            for (size_t i = 0; i < 3; i++)
                assert_close(nb_grad_get(x, i), avg ? 1.0 / 3 : (i == 2 ? 1.0 : 0.0), 1e-15);
        }
    }
    o.ceil_mode = false;
    nb_tape_reset(tp);
    assert_int_equal(nb_tensor_status(nb_max_pool2d(tp, x, &o)), NB_ERR_SHAPE);
    assert_message_has(nb_tape_error(tp), "max_pool2d", "does not fit", "ceil_mode");
    nb_tape_free(tp);
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- pooling, the definition */

/* PyTorch's output size (pooling_output_shape): (in + 2p - d(k - 1) - 1)/s
 * rounded down (or up, in ceil mode), plus 1, where in ceil mode the last
 * window must start inside x or its left padding; 0 when the window does
 * not fit. */
static size_t pooled_size(size_t in, long k, long s, long p, long d, bool ceil_mode) {
    /* PyTorch's count, the division rounding down (with ceil_mode a window
     * may overhang the padded x by less than the stride) */
    long span = (long)in + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (span < 0) return 0;
    long out = span / s + 1;
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pooling_against_pytorch),
        cmocka_unit_test(test_pooling_gradients),
        cmocka_unit_test(test_max_pool_overhanging_windows_against_pytorch),
        cmocka_unit_test(test_max_pool_window_in_the_padding),
        cmocka_unit_test(test_ceil_mode_window_larger_than_x),
        cmocka_unit_test(test_pooling_matches_the_definition),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
