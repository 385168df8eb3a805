/*
 * Winograd's 3x3 convolutions (src/ops/winograd.c) against the definition
 * computed here in float64, and against the general path (unfolding and
 * CBLAS, forced with nb_winograd_set): forward values, the input and
 * weight gradients, the fused relu, odd sizes (partial tiles at the right
 * and bottom), planes smaller than the kernel with padding, padding 0, 1
 * and 2, batch 1, one channel, several blocks of examples; the error bound
 * of the file's top comment; the same bits on 1 and 2 threads; inf, NaN
 * and magnitudes that would overflow in a transform taking the general
 * path (its results, bit for bit); the dispatch rule; a warm training loop
 * that calls no malloc.
 *
 * WINOGRAD_REPORT=1 prints the largest error ratio seen per tile size, and
 * WINOGRAD_TRIALS=n runs n random geometries instead of 12 (how the bounds
 * were measured: 400 trials).
 */
#include "support.h"
#include "nabla_nn.h"
#include "ops/winograd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bounds of src/ops/winograd.c: |y - y_exact| <= BOUND Σ |w| |x|. */
#define BOUND_F4 1e-5
#define BOUND_F2 1e-6
#define BOUND_GEMM 6e-7
/* and |y - y_exact| <= BOUND_TILE Σ_ci Σ_taps |w| max |x| over the tile's patch */
#define BOUND_TILE_F4 6e-6
#define BOUND_TILE_F2 5e-7
/* and for dL/dw, |dw - dw_exact| <= BOUND_W Σ_n Σ_tiles Σ_tile |G| max |x| over the tile's patch
 * (the general path: BOUND_W_GEMM Σ |G| |x| over the examples and positions) */
#define BOUND_W_F4 3e-6
#define BOUND_W_F2 1e-6
#define BOUND_W_GEMM 6e-7

typedef struct {
    size_t N, C, O, H, W;
    int pad;
    bool bias, relu;
} wcase;

static size_t out_size(size_t in, int pad) { return in + 2 * (size_t)pad - 2; }

/* The forward y (relu'd if the case says so) and Σ|w||x| per output
 * (abs), from the definition in float64. */
static void reference_forward(const wcase *k, const float *x, const float *w, const float *b, double *y,
                              double *y_abs) {
    size_t OH = out_size(k->H, k->pad), OW = out_size(k->W, k->pad);
    long p = k->pad;
    for (size_t n = 0; n < k->N; n++)
        for (size_t o = 0; o < k->O; o++)
            for (size_t i = 0; i < OH; i++)
                for (size_t j = 0; j < OW; j++) {
                    double s = b ? b[o] : 0, a = b ? fabs(b[o]) : 0;
                    for (size_t c = 0; c < k->C; c++)
                        for (long kh = 0; kh < 3; kh++)
                            for (long kw = 0; kw < 3; kw++) {
                                long r = (long)i - p + kh, q = (long)j - p + kw;
                                if (r < 0 || r >= (long)k->H || q < 0 || q >= (long)k->W) continue;
                                double wv = w[((o * k->C + c) * 3 + (size_t)kh) * 3 + (size_t)kw],
                                       xv = x[((n * k->C + c) * k->H + (size_t)r) * k->W + (size_t)q];
                                s += wv * xv;
                                a += fabs(wv * xv);
                            }
                    size_t at = ((n * k->O + o) * OH + i) * OW + j;
                    y[at] = k->relu && s <= 0 ? 0 : s; /* |relu(u) - relu(v)| <= |u - v|: the same bound */
                    y_abs[at] = a;
                }
}

/* dL/dx for the upstream gradient G (masked where y <= 0 when y is given:
 * the fused relu) and Σ|w||G| per element, from the definition in float64. */
static void reference_input_grad(const wcase *k, const float *w, const float *G, const float *y, double *dx,
                                 double *dx_abs) {
    size_t OH = out_size(k->H, k->pad), OW = out_size(k->W, k->pad);
    long p = k->pad;
    for (size_t n = 0; n < k->N; n++)
        for (size_t c = 0; c < k->C; c++)
            for (size_t i = 0; i < k->H; i++)
                for (size_t j = 0; j < k->W; j++) {
                    double s = 0, a = 0;
                    for (size_t o = 0; o < k->O; o++)
                        for (long kh = 0; kh < 3; kh++)
                            for (long kw = 0; kw < 3; kw++) {
                                long r = (long)i + p - kh, q = (long)j + p - kw; /* the output that read x[i, j] */
                                if (r < 0 || r >= (long)OH || q < 0 || q >= (long)OW) continue;
                                size_t at = ((n * k->O + o) * OH + (size_t)r) * OW + (size_t)q;
                                double wv = w[((o * k->C + c) * 3 + (size_t)kh) * 3 + (size_t)kw],
                                       gv = y && y[at] <= 0 ? 0 : G[at];
                                s += wv * gv;
                                a += fabs(wv * gv);
                            }
                    size_t at = ((n * k->C + c) * k->H + i) * k->W + j;
                    dx[at] = s;
                    dx_abs[at] = a;
                }
}

/* dL/dw for the upstream gradient G (masked where y <= 0 when y is given)
 * and Σ|G||x| per weight, from the definition in float64. */
static void reference_weight_grad(const wcase *k, const float *x, const float *G, const float *y, double *dw,
                                  double *dw_abs) {
    size_t OH = out_size(k->H, k->pad), OW = out_size(k->W, k->pad);
    long p = k->pad;
    for (size_t o = 0; o < k->O; o++)
        for (size_t c = 0; c < k->C; c++)
            for (long kh = 0; kh < 3; kh++)
                for (long kw = 0; kw < 3; kw++) {
                    double s = 0, a = 0;
                    for (size_t n = 0; n < k->N; n++)
                        for (size_t i = 0; i < OH; i++)
                            for (size_t j = 0; j < OW; j++) {
                                long r = (long)i - p + kh, q = (long)j - p + kw;
                                if (r < 0 || r >= (long)k->H || q < 0 || q >= (long)k->W) continue;
                                size_t at = ((n * k->O + o) * OH + i) * OW + j;
                                double gv = y && y[at] <= 0 ? 0 : G[at],
                                       xv = x[((n * k->C + c) * k->H + (size_t)r) * k->W + (size_t)q];
                                s += gv * xv;
                                a += fabs(gv * xv);
                            }
                    size_t at = ((o * k->C + c) * 3 + (size_t)kh) * 3 + (size_t)kw;
                    dw[at] = s;
                    dw_abs[at] = a;
                }
}

/* The scale of Winograd's error: an output's tile mixes the (m + 2)² input
 * values under it, so its error follows those, not only its own window's:
 *     scale[n, co, i, j] = Σ_ci Σ_taps |w[co, ci]| · max |in[n, ci]| over the patch of (i, j)'s tile
 * for the planes `in` (Cin x Hin x Win, padded by pad) read by a 3x3
 * kernel into Cout planes of Hout x Wout, with tiles of m x m. wsum[co Cin + ci]
 * is Σ_taps |w|; in masked where mask <= 0 (the fused relu's y). */
static void tile_scale(size_t N, size_t Cin, size_t Hin, size_t Win, size_t Cout, size_t Hout, size_t Wout, long pad,
                       size_t m, const float *in, const float *mask, const double *wsum, double *scale) {
    size_t TH = (Hout + m - 1) / m, TW = (Wout + m - 1) / m;
    double *most = malloc(N * Cin * TH * TW * sizeof *most);
    assert_non_null(most);
    for (size_t n = 0; n < N; n++)
        for (size_t c = 0; c < Cin; c++)
            for (size_t ty = 0; ty < TH; ty++)
                for (size_t tx = 0; tx < TW; tx++) {
                    double mx = 0;
                    for (long u = 0; u < (long)m + 2; u++)
                        for (long v = 0; v < (long)m + 2; v++) {
                            long r = (long)(ty * m) - pad + u, q = (long)(tx * m) - pad + v;
                            if (r < 0 || r >= (long)Hin || q < 0 || q >= (long)Win) continue;
                            size_t at = ((n * Cin + c) * Hin + (size_t)r) * Win + (size_t)q;
                            double val = mask && mask[at] <= 0 ? 0 : fabs(in[at]);
                            if (val > mx) mx = val;
                        }
                    most[((n * Cin + c) * TH + ty) * TW + tx] = mx;
                }
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < Cout; o++)
            for (size_t i = 0; i < Hout; i++)
                for (size_t j = 0; j < Wout; j++) {
                    double s = 0;
                    for (size_t c = 0; c < Cin; c++)
                        s += wsum[o * Cin + c] * most[((n * Cin + c) * TH + i / m) * TW + j / m];
                    scale[((n * Cout + o) * Hout + i) * Wout + j] = s;
                }
    free(most);
}

/* The same for dL/dw, a sum over tiles: scale[o, c] (each of its 9 taps)
 * = Σ_n Σ_tiles (Σ |G[n, o]| over the tile) · max |x[n, c]| over the tile's
 * patch, G masked where mask <= 0. */
static void weight_tile_scale(const wcase *k, size_t m, const float *x, const float *G, const float *mask,
                              double *scale) {
    size_t OH = out_size(k->H, k->pad), OW = out_size(k->W, k->pad), TH = (OH + m - 1) / m, TW = (OW + m - 1) / m;
    size_t T = TH * TW;
    double *most = malloc(k->N * k->C * T * sizeof *most), *gsum = malloc(k->N * k->O * T * sizeof *gsum);
    assert_non_null(most);
    assert_non_null(gsum);
    for (size_t n = 0; n < k->N; n++)
        for (size_t t = 0; t < T; t++) {
            size_t ty = t / TW, tx = t % TW;
            for (size_t c = 0; c < k->C; c++) {
                double mx = 0;
                for (long u = 0; u < (long)m + 2; u++)
                    for (long v = 0; v < (long)m + 2; v++) {
                        long r = (long)(ty * m) - k->pad + u, q = (long)(tx * m) - k->pad + v;
                        if (r < 0 || r >= (long)k->H || q < 0 || q >= (long)k->W) continue;
                        double val = fabs(x[((n * k->C + c) * k->H + (size_t)r) * k->W + (size_t)q]);
                        if (val > mx) mx = val;
                    }
                most[(n * k->C + c) * T + t] = mx;
            }
            for (size_t o = 0; o < k->O; o++) {
                double sum = 0;
                for (size_t i = ty * m; i < ty * m + m && i < OH; i++)
                    for (size_t j = tx * m; j < tx * m + m && j < OW; j++) {
                        size_t at = ((n * k->O + o) * OH + i) * OW + j;
                        sum += mask && mask[at] <= 0 ? 0 : fabs(G[at]);
                    }
                gsum[(n * k->O + o) * T + t] = sum;
            }
        }
    for (size_t o = 0; o < k->O; o++)
        for (size_t c = 0; c < k->C; c++) {
            double sum = 0;
            for (size_t n = 0; n < k->N; n++)
                for (size_t t = 0; t < T; t++) sum += gsum[(n * k->O + o) * T + t] * most[(n * k->C + c) * T + t];
            for (size_t tap = 0; tap < 9; tap++) scale[(o * k->C + c) * 9 + tap] = sum;
        }
    free(most);
    free(gsum);
}

typedef struct {
    float *y, *dx, *dw, *db;
    size_t ny, nx, nw;
} result;

static void result_free(result *r) {
    free(r->y);
    free(r->dx);
    free(r->dw);
    free(r->db);
}

static float *copy_floats(const void *src, size_t n) {
    float *out = malloc(n * sizeof *out);
    assert_non_null(out);
    assert_non_null(src);
    memcpy(out, src, n * sizeof *out);
    return out;
}

/* y = conv(x, w, b) in float32 and the gradients of sum(R ⊙ y), with
 * Winograd's switch at mode and tile. */
static result run(const wcase *k, const float *x, const float *w, const float *b, const float *R, int mode,
                  int tile) {
    nb_winograd_set(mode, tile);
    nb_tape *tp = nb_tape_new();
    nb_tensor *X = nb_from_f32(NULL, NB_SHAPE(k->N, k->C, k->H, k->W), x);
    nb_tensor *Wt = nb_from_f32(NULL, NB_SHAPE(k->O, k->C, 3, 3), w);
    nb_tensor *B = k->bias ? nb_from_f32(NULL, NB_SHAPE(k->O), b) : NULL;
    nb_requires_grad(X, true);
    nb_requires_grad(Wt, true);
    if (B) nb_requires_grad(B, true);
    nb_conv_opts o = {.padding = {k->pad, k->pad}, .relu = k->relu};
    nb_tensor *y = nb_conv2d(tp, X, Wt, B, &o);
    assert_ok(y);
    nb_tensor *Rt = nb_from_f32(tp, 4, nb_tensor_shape(y), R);
    assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, y, Rt))), NB_OK);
    result r = {.ny = nb_tensor_size(y), .nx = nb_tensor_size(X), .nw = nb_tensor_size(Wt)};
    r.y = copy_floats(nb_tensor_const_data(y), r.ny);
    r.dx = copy_floats(nb_grad_data(X), r.nx);
    r.dw = copy_floats(nb_grad_data(Wt), r.nw);
    r.db = B ? copy_floats(nb_grad_data(B), k->O) : NULL;
    nb_tensor_free(X);
    nb_tensor_free(Wt);
    nb_tensor_free(B);
    nb_tape_free(tp);
    nb_winograd_set(0, 0);
    return r;
}

static float *random_floats(nb_rng *rng, size_t n, double lo, double hi) {
    nb_tensor *t = nb_rand_uniform(NULL, rng, NB_F32, NB_SHAPE(n), lo, hi);
    float *out = copy_floats(nb_tensor_const_data(t), n);
    nb_tensor_free(t);
    return out;
}

typedef struct {
    float *x, *w, *b, *R;
    size_t nx, nw, ny;
} inputs;

static inputs make_inputs(const wcase *k, nb_rng *rng, double scale_x, double scale_w) {
    inputs in;
    in.nx = k->N * k->C * k->H * k->W;
    in.nw = k->O * k->C * 9;
    in.ny = k->N * k->O * out_size(k->H, k->pad) * out_size(k->W, k->pad);
    in.x = random_floats(rng, in.nx, -scale_x, scale_x);
    in.w = random_floats(rng, in.nw, -scale_w, scale_w);
    in.b = random_floats(rng, k->O, -1, 1);
    in.R = random_floats(rng, in.ny, -1, 1);
    return in;
}

static void inputs_free(inputs *in) {
    free(in->x);
    free(in->w);
    free(in->b);
    free(in->R);
}

static bool same_bits(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof *a); }

/* The largest |got - want| / abs over n values (abs 0: got must be want). */
static double worst_ratio(const float *got, const double *want, const double *abs, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        double r = abs[i] > 0 ? err / abs[i] : err > 0 ? INFINITY : 0;
        if (!(r <= worst)) worst = r;
    }
    return worst;
}

/* The largest ratios seen, by tile (index 2, 4; 0: the general path). */
static double seen[5], seen_tile[5], seen_window_grad[5], seen_w[5];

static void report(void) {
    if (getenv("WINOGRAD_REPORT"))
        fprintf(stderr,
                "largest error / sum |w||x| of the window: F(4x4) %.3g, F(2x2) %.3g, general %.3g; of the tile: "
                "F(4x4) %.3g, F(2x2) %.3g; input gradients by the window (not bounded): F(4x4) %.3g, F(2x2) %.3g; "
                "weight gradients by the tiles: F(4x4) %.3g, F(2x2) %.3g, general (by Σ |G||x|) %.3g\n",
                seen[4], seen[2], seen[0], seen_tile[4], seen_tile[2], seen_window_grad[4], seen_window_grad[2],
                seen_w[4], seen_w[2], seen_w[0]);
}

static void track(double *slot, double ratio) {
    if (ratio > *slot) *slot = ratio;
}

/* The case's forward and input gradient by Winograd (each tile) and by
 * the general path, each within its bounds of the definition (the input
 * gradient's mask, with the fused relu, is the run's own y); the weight
 * and bias gradients are the general path's, bit for bit. */
static void check_case(const wcase *k, nb_rng *rng, double scale_x, double scale_w) {
    inputs in = make_inputs(k, rng, scale_x, scale_w);
    size_t OH = out_size(k->H, k->pad), OW = out_size(k->W, k->pad);
    double *y = malloc(in.ny * sizeof *y), *ya = malloc(in.ny * sizeof *ya), *yt = malloc(in.ny * sizeof *yt);
    double *dx = malloc(in.nx * sizeof *dx), *dxa = malloc(in.nx * sizeof *dxa), *dxt = malloc(in.nx * sizeof *dxt);
    double *wsum = malloc(k->O * k->C * sizeof *wsum), *wsum_t = malloc(k->O * k->C * sizeof *wsum_t);
    double *dw = malloc(in.nw * sizeof *dw), *dwa = malloc(in.nw * sizeof *dwa);
    for (size_t o = 0; o < k->O; o++)
        for (size_t c = 0; c < k->C; c++) {
            double s = 0;
            for (size_t t = 0; t < 9; t++) s += fabs(in.w[(o * k->C + c) * 9 + t]);
            wsum[o * k->C + c] = wsum_t[c * k->O + o] = s;
        }
    reference_forward(k, in.x, in.w, k->bias ? in.b : NULL, y, ya);
    result general = run(k, in.x, in.w, in.b, in.R, -1, 0);
    for (size_t tile = 0; tile <= 4; tile += 2) {
        result r = tile ? run(k, in.x, in.w, in.b, in.R, 1, (int)tile) : general;
        const float *mask = k->relu ? r.y : NULL;
        reference_input_grad(k, in.w, in.R, mask, dx, dxa);
        reference_weight_grad(k, in.x, in.R, mask, dw, dwa);
        double fwd = worst_ratio(r.y, y, ya, in.ny), bwd = worst_ratio(r.dx, dx, dxa, in.nx);
        if (tile) weight_tile_scale(k, tile, in.x, in.R, mask, dwa); /* else the definition's Σ |G||x| */
        double wgt = worst_ratio(r.dw, dw, dwa, in.nw), wbound = tile == 4 ? BOUND_W_F4 : tile == 2 ? BOUND_W_F2
                                                                                                    : BOUND_W_GEMM;
        if (wgt > wbound) fprintf(stderr, "tile %zu (0: general): weight gradient ratio %g over %g\n", tile, wgt, wbound);
        assert_true(wgt <= wbound);
        track(&seen_w[tile], wgt);
        if (tile) { /* the tile's scale, with the bias's own |b| */
            tile_scale(k->N, k->C, k->H, k->W, k->O, OH, OW, k->pad, tile, in.x, NULL, wsum, yt);
            for (size_t i = 0; i < in.ny; i++) yt[i] += k->bias ? fabs(in.b[i / (OH * OW) % k->O]) : 0;
            tile_scale(k->N, k->O, OH, OW, k->C, k->H, k->W, 2 - k->pad, tile, in.R, mask, wsum_t, dxt);
            double fwd_t = worst_ratio(r.y, y, yt, in.ny), bwd_t = worst_ratio(r.dx, dx, dxt, in.nx);
            double bound = tile == 4 ? BOUND_TILE_F4 : BOUND_TILE_F2;
            if (fwd_t > bound || bwd_t > bound)
                fprintf(stderr, "F(%zu): tile ratios %g (forward), %g (input gradient) over %g\n", tile, fwd_t, bwd_t,
                        bound);
            assert_true(fwd_t <= bound);
            assert_true(bwd_t <= bound);
            track(&seen_tile[tile], fwd_t);
            track(&seen_tile[tile], bwd_t);
        }
        /* the bound per output's own window: the forward with padding 0 or 1 on dense x, whose
         * windows hold 4 values of x or more (the tiles' other values are of the same size) */
        double bound = tile == 4 ? BOUND_F4 : tile == 2 ? BOUND_F2 : BOUND_GEMM;
        if (tile == 0 || k->pad <= 1) {
            if (fwd > bound) fprintf(stderr, "tile %zu (0: general): forward ratio %g over %g\n", tile, fwd, bound);
            assert_true(fwd <= bound);
            track(&seen[tile], fwd);
        }
        if (tile == 0) {
            assert_true(bwd <= bound);
            track(&seen[0], bwd);
        } else {
            track(&seen_window_grad[tile], bwd);
        }
        if (tile) {
            if (k->bias && !k->relu) assert_true(same_bits(r.db, general.db, k->O)); /* the general path's */
            result_free(&r);
        }
    }
    result_free(&general);
    free(y);
    free(ya);
    free(yt);
    free(dx);
    free(dxa);
    free(dxt);
    free(wsum);
    free(wsum_t);
    free(dw);
    free(dwa);
    inputs_free(&in);
}

static const wcase cases[] = {
    {2, 3, 4, 7, 9, 1, true, false},    /* odd sizes: partial tiles at the right and bottom */
    {3, 5, 6, 8, 8, 0, false, false},   /* padding 0, whole tiles for F(2x2) */
    {1, 1, 3, 11, 6, 1, true, false},   /* one channel, batch 1 */
    {2, 4, 2, 1, 2, 1, false, false},   /* a plane smaller than the kernel, padded to 3 x 4 */
    {1, 3, 5, 2, 1, 2, true, false},    /* padding 2: outputs whose windows hold one value of x */
    {2, 6, 3, 5, 13, 2, false, false},  /* padding 2, tiles mostly of padding */
    {70, 2, 3, 6, 6, 1, true, false},   /* several blocks of examples (6 x 6: 4 tiles of 4 x 4 each) */
    {2, 16, 20, 17, 15, 1, true, true}, /* the fused relu */
    {1, 48, 40, 10, 12, 1, true, false}, /* larger channel counts */
    {1, 300, 6, 6, 7, 1, false, false},  /* many input channels: long sums */
    {2, 5, 260, 5, 6, 0, true, false},   /* many filters */
};

static void test_winograd_against_the_definition(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 41);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) check_case(&cases[c], &rng, 1, 1);
    report();
}

/* The bound is relative: the same on inputs of large magnitude (below
 * where the transforms could overflow), and of mixed scales. */
static void test_winograd_error_at_large_magnitudes(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 42);
    const wcase k = {2, 32, 16, 12, 12, 1, false, false};
    check_case(&k, &rng, 1e15, 1e15);
    check_case(&k, &rng, 1e-20, 1e10);
    check_case(&k, &rng, 1e4, 1e-3);
    report();
}

/* Many random geometries, for the largest ratio (WINOGRAD_REPORT). */
static void test_winograd_random_geometries(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 43);
    int trials = getenv("WINOGRAD_TRIALS") ? atoi(getenv("WINOGRAD_TRIALS")) : 12;
    for (int t = 0; t < trials; t++) {
        wcase k = {1 + nb_rng_next(&rng) % 3, 1 + nb_rng_next(&rng) % 40, 1 + nb_rng_next(&rng) % 24,
                   1 + nb_rng_next(&rng) % 19, 1 + nb_rng_next(&rng) % 19, (int)(nb_rng_next(&rng) % 3), true, false};
        if (k.H + 2 * (size_t)k.pad < 3) k.H = 3;
        if (k.W + 2 * (size_t)k.pad < 3) k.W = 3;
        check_case(&k, &rng, 1, 1);
    }
    report();
}

/* Winograd is taken: its results differ from the general path's in the
 * last bits somewhere; the dispatch rule of src/ops/winograd.c takes
 * F(4x4) for 16 channels on 16 x 16 outputs (16 tiles), or 64 channels on
 * 12 x 12 (9 tiles), F(2x2) for 32 channels on 8 x 8, and neither for 8
 * channels, 16 channels on 8 x 8 or 12 x 12, or 32 channels on 7 x 7. */
static void test_winograd_dispatch(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 44);
    const struct {
        wcase k;
        int tile;
    } all[] = {
        {{2, 16, 16, 16, 16, 1, false, false}, 4}, {{1, 64, 64, 12, 12, 1, true, false}, 4},
        {{2, 32, 40, 8, 8, 1, false, false}, 2},   {{2, 8, 16, 16, 16, 1, false, false}, 0},
        {{2, 16, 16, 8, 8, 1, false, false}, 0},   {{1, 16, 16, 12, 12, 1, false, false}, 0},
        {{2, 32, 32, 7, 7, 1, false, false}, 0},
    };
    for (size_t c = 0; c < sizeof all / sizeof *all; c++) {
        const wcase *k = &all[c].k;
        inputs in = make_inputs(k, &rng, 1, 1);
        result automatic = run(k, in.x, in.w, in.b, in.R, 0, 0), off = run(k, in.x, in.w, in.b, in.R, -1, 0);
        result on = run(k, in.x, in.w, in.b, in.R, 1, all[c].tile ? all[c].tile : 4);
        assert_false(same_bits(on.y, off.y, in.ny));
        assert_false(same_bits(on.dx, off.dx, in.nx));
        const result *want = all[c].tile ? &on : &off;
        assert_false(same_bits(on.dw, off.dw, in.nw));
        assert_true(same_bits(automatic.y, want->y, in.ny));
        assert_true(same_bits(automatic.dx, want->dx, in.nx));
        assert_true(same_bits(automatic.dw, want->dw, in.nw));
        result_free(&automatic);
        result_free(&on);
        result_free(&off);
        inputs_free(&in);
    }
}

/* The same bits on 1 and 2 threads: several blocks (batch 9 of 16 x 15,
 * 16 tiles of 4 x 4 each), batch 1, one block, where the products split
 * their rows over the threads instead (at 4 MFLOP and more), and batch 40,
 * whose weight gradient sums two chunks of 512 tiles or more. */
static void test_winograd_thread_invariance(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 45);
    const wcase many = {9, 24, 56, 16, 15, 1, true, false}, one = {1, 32, 64, 127, 129, 1, true, true},
                chunks = {40, 16, 16, 16, 16, 1, false, false};
    const wcase *all[3] = {&many, &one, &chunks};
    for (int c = 0; c < 3; c++)
        for (int tile = 2; tile <= 4; tile += 2) {
            inputs in = make_inputs(all[c], &rng, 1, 1);
            assert_int_equal(nb_set_threads(1), NB_OK);
            result r1 = run(all[c], in.x, in.w, in.b, in.R, 1, tile);
            assert_int_equal(nb_set_threads(2), NB_OK);
            uint64_t jobs = nb_parallel_jobs();
            result r2 = run(all[c], in.x, in.w, in.b, in.R, 1, tile);
            assert_true(nb_parallel_jobs() > jobs); /* the work was split */
            assert_int_equal(nb_set_threads(1), NB_OK);
            assert_true(same_bits(r1.y, r2.y, in.ny));
            assert_true(same_bits(r1.dx, r2.dx, in.nx));
            assert_true(same_bits(r1.dw, r2.dw, in.nw));
            result_free(&r1);
            result_free(&r2);
            inputs_free(&in);
        }
}

/* An inf or NaN in x, w or G, and magnitudes where a transform could
 * overflow: the general path's results, bit for bit, NaNs and infs in the
 * same places. */
static void test_winograd_special_values(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 46);
    const wcase k = {2, 16, 16, 9, 10, 1, true, false};
    for (int trial = 0; trial < 6; trial++) {
        inputs in = make_inputs(&k, &rng, 1, 1);
        switch (trial) {
        case 0: in.x[37] = INFINITY; break;
        case 1: in.x[100] = -INFINITY; in.x[101] = INFINITY; break;
        case 2: in.x[5] = NAN; break;
        case 3: in.w[17] = INFINITY; break;
        case 4: in.R[20] = INFINITY; break; /* G: dL/dx */
        default:                            /* |x| |w| C times the gains above FLT_MAX, the sums below it */
            for (size_t i = 0; i < in.nx; i++) in.x[i] *= 1e17f;
            for (size_t i = 0; i < in.nw; i++) in.w[i] *= 1e17f;
        }
        result on = run(&k, in.x, in.w, in.b, in.R, 1, 4), off = run(&k, in.x, in.w, in.b, in.R, -1, 0);
        if (trial < 4) { /* there are non-finite outputs */
            bool any = false;
            for (size_t i = 0; i < in.ny; i++) any |= !isfinite(off.y[i]);
            assert_true(any);
        }
        /* the forward takes x and w; dL/dx takes G and w; dL/dw takes x and G */
        if (trial != 4) assert_true(same_bits(on.y, off.y, in.ny));
        if (trial == 3 || trial == 4) assert_true(same_bits(on.dx, off.dx, in.nx));
        if (trial != 3 && trial != 5) assert_true(same_bits(on.dw, off.dw, in.nw));
        result_free(&on);
        result_free(&off);
        inputs_free(&in);
    }
}

/* Second derivatives through create_graph: the backward graph's ops (the
 * input and weight gradients as ops, and their own backward) go through
 * Winograd too, and agree with the general path's within float32's
 * rounding: d/dw of |dL/dx|² and d/dx of |dL/dw|² for L = Σ R ⊙ relu(conv). */
static void test_winograd_second_order(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 48);
    const wcase k = {2, 16, 16, 14, 13, 1, true, true};
    inputs in = make_inputs(&k, &rng, 1, 1);
    float *got[2][2];
    for (int path = 0; path < 2; path++) {
        nb_winograd_set(path ? -1 : 1, 0);
        nb_tape *tp = nb_tape_new();
        nb_tensor *X = nb_from_f32(NULL, NB_SHAPE(k.N, k.C, k.H, k.W), in.x);
        nb_tensor *Wt = nb_from_f32(NULL, NB_SHAPE(k.O, k.C, 3, 3), in.w);
        nb_requires_grad(X, true);
        nb_requires_grad(Wt, true);
        nb_tensor *y = nb_conv2d(tp, X, Wt, NULL, &(nb_conv_opts){.padding = {1, 1}, .relu = true});
        nb_tensor *loss = nb_sum(tp, nb_mul(tp, y, nb_from_f32(tp, 4, nb_tensor_shape(y), in.R)));
        nb_tensor *g[2];
        assert_int_equal(nb_grad(loss, ((nb_tensor *[]){X, Wt}), 2, g, true), NB_OK);
        for (int i = 0; i < 2; i++) { /* d/d(the other) of |g[i]|² */
            nb_tensor *other = i ? X : Wt, *h;
            assert_int_equal(nb_grad(nb_sum(tp, nb_mul(tp, g[i], g[i])), &other, 1, &h, false), NB_OK);
            got[path][i] = copy_floats(nb_tensor_const_data(h), nb_tensor_size(h));
        }
        nb_tensor_free(X);
        nb_tensor_free(Wt);
        nb_tape_free(tp);
    }
    nb_winograd_set(0, 0);
    const size_t sizes[2] = {in.nw, in.nx};
    for (int i = 0; i < 2; i++) {
        double most = 0;
        for (size_t j = 0; j < sizes[i]; j++) most = fmax(most, fabs(got[1][i][j]));
        assert_true(most > 0);
        for (size_t j = 0; j < sizes[i]; j++) assert_true(fabs(got[0][i][j] - got[1][i][j]) <= 1e-4 * most);
        assert_false(same_bits(got[0][i], got[1][i], sizes[i])); /* Winograd was taken */
        free(got[0][i]);
        free(got[1][i]);
    }
    inputs_free(&in);
}

/* A warm training loop through Winograd's forward and input gradient
 * calls no malloc: its buffers are the tape's working memory. */
static void test_winograd_warm_loop_allocates_nothing(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 47);
    nb_winograd_set(1, 0);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(3, 16, 12, 12), -1, 1);
    nb_tensor *w1 = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(16, 16, 3, 3), -0.2, 0.2);
    nb_tensor *w2 = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(16, 16, 3, 3), -0.2, 0.2);
    nb_requires_grad(w1, true);
    nb_requires_grad(w2, true);
    uint64_t before = 0;
    for (int step = 0; step < 12; step++) {
        if (step == 4) before = nb_alloc_count();
        nb_tape_reset(tp);
        nb_zero_grad(w1);
        nb_zero_grad(w2);
        nb_tensor *h = nb_conv2d(tp, x, w1, NULL, &(nb_conv_opts){.padding = {1, 1}, .relu = true});
        h = nb_conv2d(tp, h, w2, NULL, &(nb_conv_opts){.padding = {1, 1}});
        assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, h, h))), NB_OK);
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    nb_winograd_set(0, 0);
    nb_tensor_free(x);
    nb_tensor_free(w1);
    nb_tensor_free(w2);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_winograd_against_the_definition),
        cmocka_unit_test(test_winograd_error_at_large_magnitudes),
        cmocka_unit_test(test_winograd_random_geometries),
        cmocka_unit_test(test_winograd_dispatch),
        cmocka_unit_test(test_winograd_thread_invariance),
        cmocka_unit_test(test_winograd_special_values),
        cmocka_unit_test(test_winograd_second_order),
        cmocka_unit_test(test_winograd_warm_loop_allocates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
