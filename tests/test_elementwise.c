/*
 * The element-wise kernels' fast paths (where, dropout, layer norm, the
 * embedding's gather and scatter-add, softmax) against references computed here
 * element by element in double, on odd sizes, broadcasting patterns and
 * inputs that come out of a transpose, in float32 and float64, and bit for
 * bit the same on 1, 2 and 3 threads (the sizes are big enough to split).
 */
#include "support.h"
#include "nabla_nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

/* The offset in t of output element i of a result of shape (nd, shape),
 * t broadcast against it (aligned from the right, size 1 repeated). */
static size_t broadcast_offset(const nb_tensor *t, int nd, const size_t *shape, size_t i) {
    size_t off = 0, stride = 1;
    int td = nb_tensor_ndim(t);
    for (int d = nd - 1; d >= 0; d--) {
        size_t idx = i % shape[d];
        i /= shape[d];
        int k = d - (nd - td);
        if (k < 0) continue;
        size_t n = nb_tensor_dim(t, k);
        if (n != 1) off += idx * stride;
        stride *= n;
    }
    return off;
}

static nb_tensor *uniform(nb_rng *rng, nb_dtype dt, int ndim, const size_t *shape, double lo, double hi) {
    return nb_rand_uniform(NULL, rng, dt, ndim, shape, lo, hi);
}

/* The bits of a tensor's values, to compare runs on different thread counts. */
static void *bits_of(const nb_tensor *t) {
    size_t n = nb_tensor_size(t) * (nb_tensor_dtype(t) == NB_F32 ? 4 : 8);
    void *b = malloc(n);
    memcpy(b, nb_tensor_const_data(t), n);
    return b;
}

/* float32 values compared with a relative tolerance, float64 more tightly */
static double tol_of(nb_dtype dt) { return dt == NB_F32 ? 2e-6 : 1e-13; }

static void expect_near(double got, double want, double tol, const char *what, size_t i) {
    if (fabs(got - want) <= tol * (1 + fabs(want)) || (isnan(got) && isnan(want))) return;
    print_error("%s[%zu] = %.17g, expected %.17g\n", what, i, got, want);
    fail();
}

/* ---------------------------------------------------------------- where */

typedef struct {
    int nd;
    size_t out[3];
    int cd, ad, bd;
    size_t c[3], a[3], b[3];
} where_case;

static const where_case where_cases[] = {
    {2, {131, 257}, 2, 2, 2, {131, 257}, {131, 257}, {131, 257}},  /* same shapes */
    {3, {3, 129, 97}, 2, 0, 3, {129, 97}, {0}, {3, 129, 97}},      /* masked fill: a (T, T) mask, a 0-d value */
    {3, {3, 129, 97}, 2, 3, 0, {129, 97}, {3, 129, 97}, {0}},      /* the value in b */
    {2, {263, 131}, 1, 2, 1, {131}, {263, 131}, {131}},            /* a row broadcast down */
    {2, {263, 131}, 2, 2, 2, {263, 1}, {1, 131}, {263, 131}},      /* a column, a row */
    {3, {5, 61, 113}, 3, 3, 3, {5, 1, 113}, {5, 61, 113}, {1, 61, 1}},
    {1, {7}, 1, 1, 1, {7}, {1}, {7}},                              /* small: no split */
};

/* where(c, a, b) with a seed through it, on `threads` threads; checks
 * values and gradients against the reference and returns the bits of y,
 * da and db for the comparison across thread counts. */
static void where_run(const where_case *wc, nb_dtype dt, int threads, bool transposed_a, void *bits[3],
                      size_t bytes[3]) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, 11);
    nb_tensor *c = uniform(&rng, dt, wc->cd, wc->c, -1, 1), *a, *b = uniform(&rng, dt, wc->bd, wc->b, -2, 2);
    for (size_t i = 0; i < nb_tensor_size(c); i++) nb_set(c, i, nb_get(c, i) > 0.2 ? nb_get(c, i) : 0);
    nb_tape *tp = nb_tape_new();
    nb_tensor *a_leaf = NULL;
    if (transposed_a && wc->ad == 2) {
        /* a, read through a transpose of its transpose's values */
        a_leaf = uniform(&rng, dt, 2, (size_t[]){wc->a[1], wc->a[0]}, -2, 2);
        nb_requires_grad(a_leaf, true);
        a = nb_transpose(tp, a_leaf, 0, 1);
    } else {
        a = a_leaf = uniform(&rng, dt, wc->ad, wc->a, -2, 2);
        nb_requires_grad(a, true);
    }
    nb_requires_grad(b, true);
    nb_tensor *y = nb_where(tp, c, a, b);
    assert_ok(y);
    size_t n = nb_tensor_size(y);
    nb_tensor *seed = uniform(&rng, dt, wc->nd, wc->out, -1, 1);
    assert_int_equal(nb_backward_seed(y, seed), NB_OK);
    double *ga = calloc(nb_tensor_size(a), sizeof *ga), *gb = calloc(nb_tensor_size(b), sizeof *gb);
    /* a sum of k float32 terms rounds k times: the tolerance grows with the
     * terms a broadcast input's gradient adds up */
    double terms_a = (double)(n / nb_tensor_size(a)), terms_b = (double)(n / nb_tensor_size(b));
    for (size_t i = 0; i < n; i++) {
        size_t oc = broadcast_offset(c, wc->nd, wc->out, i), oa = broadcast_offset(a, wc->nd, wc->out, i),
               ob = broadcast_offset(b, wc->nd, wc->out, i);
        bool on = nb_get(c, oc) != 0;
        if (nb_get(y, i) != (on ? nb_get(a, oa) : nb_get(b, ob))) {
            print_error("where: y[%zu] = %g is not %s\n", i, nb_get(y, i), on ? "a" : "b");
            fail();
        }
        (on ? ga : gb)[on ? oa : ob] += nb_get(seed, i);
    }
    for (size_t i = 0; i < nb_tensor_size(b); i++) expect_near(nb_grad_get(b, i), gb[i], tol_of(dt) * terms_b, "where db", i);
    if (a == a_leaf) {
        for (size_t i = 0; i < nb_tensor_size(a); i++)
            expect_near(nb_grad_get(a, i), ga[i], tol_of(dt) * terms_a, "where da", i);
    } else { /* the leaf is a's transpose */
        size_t r = wc->a[0], k = wc->a[1];
        for (size_t i = 0; i < r; i++)
            for (size_t j = 0; j < k; j++)
                expect_near(nb_grad_get(a_leaf, j * r + i), ga[i * k + j], tol_of(dt), "where da (transposed)",
                            i * k + j);
    }
    bits[0] = bits_of(y);
    bits[1] = malloc(nb_tensor_size(a_leaf) * sizeof(double));
    bits[2] = malloc(nb_tensor_size(b) * sizeof(double));
    bytes[0] = n * (dt == NB_F32 ? 4 : 8);
    bytes[1] = nb_tensor_size(a_leaf) * sizeof(double);
    bytes[2] = nb_tensor_size(b) * sizeof(double);
    for (size_t i = 0; i < nb_tensor_size(a_leaf); i++) ((double *)bits[1])[i] = nb_grad_get(a_leaf, i);
    for (size_t i = 0; i < nb_tensor_size(b); i++) ((double *)bits[2])[i] = nb_grad_get(b, i);
    free(ga);
    free(gb);
    nb_tape_free(tp);
    nb_tensor_free(c);
    nb_tensor_free(a_leaf);
    nb_tensor_free(b);
    nb_tensor_free(seed);
}

static void test_where_fast_paths_match_the_reference(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof where_cases / sizeof *where_cases; k++)
        for (int d = 0; d < 2; d++)
            for (int tr = 0; tr < 2; tr++) {
                nb_dtype dt = d ? NB_F64 : NB_F32;
                void *one[3], *many[3];
                size_t bytes[3];
                where_run(&where_cases[k], dt, 1, tr, one, bytes);
                for (int threads = 2; threads <= 3; threads++) {
                    where_run(&where_cases[k], dt, threads, tr, many, bytes);
                    for (int i = 0; i < 3; i++) {
                        assert_memory_equal(one[i], many[i], bytes[i]);
                        free(many[i]);
                    }
                }
                for (int i = 0; i < 3; i++) free(one[i]);
            }
    nb_set_threads(1);
}

/* ---------------------------------------------------------------- dropout */

/* dropout(x) with x read twice (y = dropout(x) + x, so that dL/dx is added
 * to), on `threads` threads: the result and dL/dx, as doubles. */
static void dropout_run(nb_dtype dt, int nd, const size_t *shape, double p, int threads, double **y_out,
                        double **g_out) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, 21);
    nb_tensor *x = uniform(&rng, dt, nd, shape, 0.5, 2), *seed = uniform(&rng, dt, nd, shape, -1, 1);
    nb_requires_grad(x, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *d = nb_dropout(tp, x, p, &rng), *y = nb_add(tp, d, x);
    assert_ok(y);
    assert_int_equal(nb_backward_seed(y, seed), NB_OK);
    size_t n = nb_tensor_size(x);
    double keep = 1 / (1 - p), dropped = 0;
    *y_out = malloc(n * sizeof **y_out);
    *g_out = malloc(n * sizeof **g_out);
    for (size_t i = 0; i < n; i++) {
        double xi = nb_get(x, i), di = nb_get(d, i), gi = nb_get(seed, i);
        /* each element dropped or kept and scaled, its gradient the same mask plus x's own */
        bool off = di == 0;
        dropped += off;
        if (!off) expect_near(di, dt == NB_F32 ? (double)((float)xi * (float)keep) : xi * keep, 0, "dropout y", i);
        double m = off ? 0 : (dt == NB_F32 ? (double)(float)keep : keep);
        double want = dt == NB_F32 ? (double)((float)(gi * m) + (float)gi) : gi * m + gi;
        expect_near(nb_grad_get(x, i), want, tol_of(dt), "dropout dx", i);
        (*y_out)[i] = di;
        (*g_out)[i] = nb_grad_get(x, i);
    }
    /* the rate: within 5 standard deviations */
    double sd = sqrt((double)n * p * (1 - p));
    if (fabs(dropped - (double)n * p) > 5 * sd) {
        print_error("dropout: %g of %zu dropped at p = %g\n", dropped, n, p);
        fail();
    }
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(seed);
}

static void test_dropout_is_the_same_on_any_thread_count(void **state) {
    (void)state;
    const size_t shapes[][3] = {{3, 257, 131}, {1, 1, 63}, {1, 5, 13}, {2, 64, 64}};
    for (int d = 0; d < 2; d++)
        for (size_t k = 0; k < 4; k++)
            for (int pi = 0; pi < 2; pi++) {
                nb_dtype dt = d ? NB_F64 : NB_F32;
                double p = pi ? 0.1 : 0.6, *y1, *g1;
                dropout_run(dt, 3, shapes[k], p, 1, &y1, &g1);
                size_t n = shapes[k][0] * shapes[k][1] * shapes[k][2];
                for (int threads = 2; threads <= 3; threads++) {
                    double *y, *g;
                    dropout_run(dt, 3, shapes[k], p, threads, &y, &g);
                    assert_memory_equal(y1, y, n * sizeof *y);
                    assert_memory_equal(g1, g, n * sizeof *g);
                    free(y);
                    free(g);
                }
                free(y1);
                free(g1);
            }
    nb_set_threads(1);
}

/* The mask of a call does not depend on the shape (only on the flat index)
 * or the dtype, and matches the fused attention's hash: the mask of
 * nb_attention_dropout_mask for the same seed and p, flattened. */
static void test_dropout_mask_is_the_attention_hash(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(NULL, NB_F32, NB_SHAPE(2, 3, 37, 41)), *x64 = nb_ones(NULL, NB_F64, NB_SHAPE(2 * 3 * 37 * 41));
    nb_tensor *q = nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3, 37, 8)), *k = nb_zeros(NULL, NB_F32, NB_SHAPE(2, 3, 41, 8));
    nb_rng r1, r2, r3;
    nb_rng_seed(&r1, 99);
    nb_rng_seed(&r2, 99);
    nb_rng_seed(&r3, 99);
    nb_tensor *a = nb_dropout(tp, x, 0.25, &r1), *b = nb_dropout(tp, x64, 0.25, &r2);
    nb_tensor *m = nb_attention_dropout_mask(tp, q, k, 0.25, &r3);
    assert_ok(a);
    assert_ok(b);
    assert_ok(m);
    for (size_t i = 0; i < nb_tensor_size(x); i++) {
        assert_true((nb_get(a, i) == 0) == (nb_get(b, i) == 0));
        assert_true((nb_get(a, i) == 0) == (nb_get(m, i) == 0));
    }
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(x64);
    nb_tensor_free(q);
    nb_tensor_free(k);
}

/* ---------------------------------------------------------------- layer norm */

typedef struct {
    double *y, *gx, *gg, *gb;
    size_t n, D;
} norm_outcome;

static void free_outcome(norm_outcome *o) {
    free(o->y);
    free(o->gx);
    free(o->gg);
    free(o->gb);
}

static double *values_of(const nb_tensor *t) {
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    nb_to_f64(t, v);
    return v;
}

static double *grads_of(nb_tensor *t) {
    if (!t) return NULL;
    double *v = malloc(nb_tensor_size(t) * sizeof *v);
    for (size_t i = 0; i < nb_tensor_size(t); i++) v[i] = nb_grad_get(t, i);
    return v;
}

/* layer_norm(x, γ, β) (fused, or composed of ops) with x read twice
 * (y = layer_norm(x) + x, so that dL/dx is added to), x out of a transpose
 * when asked, on `threads` threads. */
static norm_outcome norm_run(nb_dtype dt, size_t rows, size_t D, bool with_gamma, bool with_beta, bool composed,
                             bool transposed, int threads) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, 31);
    nb_tensor *leaf = transposed ? uniform(&rng, dt, 2, (size_t[]){D, rows}, -2, 3)
                                 : uniform(&rng, dt, 2, (size_t[]){rows, D}, -2, 3);
    nb_tensor *gamma = with_gamma ? uniform(&rng, dt, 1, &D, 0.5, 1.5) : NULL;
    nb_tensor *beta = with_beta ? uniform(&rng, dt, 1, &D, -1, 1) : NULL;
    nb_tensor *seed = uniform(&rng, dt, 2, (size_t[]){rows, D}, -1, 1);
    nb_requires_grad(leaf, true);
    if (gamma) nb_requires_grad(gamma, true);
    if (beta) nb_requires_grad(beta, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = transposed ? nb_transpose(tp, leaf, 0, 1) : leaf, *y;
    if (composed) {
        nb_tensor *xc = nb_sub(tp, x, nb_mean_axis(tp, x, -1, true));
        nb_tensor *r = nb_pow(tp, nb_add_scalar(tp, nb_mean_axis(tp, nb_square(tp, xc), -1, true), 1e-5), -0.5);
        y = nb_mul(tp, xc, r);
        if (gamma) y = nb_mul(tp, y, gamma);
        if (beta) y = nb_add(tp, y, beta);
    } else {
        y = nb_layer_norm(tp, x, gamma, beta, 1e-5);
    }
    nb_tensor *out = nb_add(tp, y, x);
    assert_ok(out);
    assert_int_equal(nb_backward_seed(out, seed), NB_OK);
    norm_outcome o = {values_of(y), grads_of(leaf), grads_of(gamma), grads_of(beta), rows * D, D};
    if (transposed) { /* dL/dx in x's (rows, D) order */
        double *g = malloc(o.n * sizeof *g);
        for (size_t i = 0; i < rows; i++)
            for (size_t k = 0; k < D; k++) g[i * D + k] = o.gx[k * rows + i];
        free(o.gx);
        o.gx = g;
    }
    nb_tape_free(tp);
    nb_tensor_free(leaf);
    nb_tensor_free(gamma);
    nb_tensor_free(beta);
    nb_tensor_free(seed);
    return o;
}

static void expect_all_near(const double *got, const double *want, size_t n, double tol, const char *what) {
    for (size_t i = 0; got && i < n; i++) expect_near(got[i], want[i], tol, what, i);
}

/* The fused op against the same function composed of ops (values and every
 * gradient), and bit for bit the same on 1, 2 and 3 threads; rows across
 * several chunks of the γ/β sums, odd D (the lanes' tails), transposed x. */
static void test_layer_norm_rows_match_the_composed_ops(void **state) {
    (void)state;
    const size_t sizes[][2] = {{70, 131}, {3, 7}, {1, 1}, {33, 64}, {257, 517}, {40, 16}};
    for (int d = 0; d < 2; d++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
            for (int v = 0; v < 4; v++) {
                nb_dtype dt = d ? NB_F64 : NB_F32;
                size_t rows = sizes[k][0], D = sizes[k][1];
                bool g = v & 1, b = v & 2, tr = k % 2 == 0;
                /* float32: the composed ops round differently (a mean over D, then
                 * the square's mean); the gradients of γ and β add rows */
                double tol = dt == NB_F32 ? 2e-4 * (1 + sqrt((double)rows)) : 1e-10;
                norm_outcome fused = norm_run(dt, rows, D, g, b, false, tr, 1);
                norm_outcome ref = norm_run(dt, rows, D, g, b, true, tr, 1);
                expect_all_near(fused.y, ref.y, fused.n, tol, "layer_norm y");
                expect_all_near(fused.gx, ref.gx, fused.n, tol, "layer_norm dx");
                expect_all_near(fused.gg, ref.gg, D, tol, "layer_norm dgamma");
                expect_all_near(fused.gb, ref.gb, D, tol, "layer_norm dbeta");
                for (int threads = 2; threads <= 3; threads++) {
                    norm_outcome more = norm_run(dt, rows, D, g, b, false, tr, threads);
                    assert_memory_equal(fused.y, more.y, fused.n * sizeof(double));
                    assert_memory_equal(fused.gx, more.gx, fused.n * sizeof(double));
                    if (g) assert_memory_equal(fused.gg, more.gg, D * sizeof(double));
                    if (b) assert_memory_equal(fused.gb, more.gb, D * sizeof(double));
                    free_outcome(&more);
                }
                free_outcome(&fused);
                free_outcome(&ref);
            }
    nb_set_threads(1);
}

/* ---------------------------------------------------------------- embedding */

/* index_select(x, axis, ids) with repeated ids, against the reference
 * gather and scatter-add; the bits of y and dL/dx on `threads` threads. */
static void select_run(nb_dtype dt, int nd, const size_t *shape, int axis, size_t count, int threads, double **y_out,
                       double **g_out) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, 41);
    nb_tensor *x = uniform(&rng, dt, nd, shape, -1, 1);
    nb_requires_grad(x, true);
    size_t *ids = malloc(count * sizeof *ids), outer = 1, inner = 1, n = shape[axis];
    for (int d = 0; d < axis; d++) outer *= shape[d];
    for (int d = axis + 1; d < nd; d++) inner *= shape[d];
    for (size_t k = 0; k < count; k++) ids[k] = k % 3 == 0 ? 1 : nb_rng_next(&rng) % n; /* row 1 many times */
    size_t yshape[4];
    for (int d = 0; d < nd; d++) yshape[d] = d == axis ? count : shape[d];
    nb_tensor *seed = uniform(&rng, dt, nd, yshape, -1, 1);
    nb_tape *tp = nb_tape_new();
    nb_tensor *y = nb_index_select(tp, x, axis, ids, count);
    assert_ok(y);
    assert_int_equal(nb_backward_seed(y, seed), NB_OK);
    double *want = calloc(nb_tensor_size(x), sizeof *want);
    for (size_t o = 0; o < outer; o++)
        for (size_t k = 0; k < count; k++)
            for (size_t i = 0; i < inner; i++) {
                size_t at = (o * count + k) * inner + i, from = (o * n + ids[k]) * inner + i;
                if (nb_get(y, at) != nb_get(x, from)) {
                    print_error("index_select: y[%zu] is not x[%zu]\n", at, from);
                    fail();
                }
                want[from] += nb_get(seed, at);
            }
    double terms = (double)count / 3 + 1; /* row 1's gradient adds about count/3 slices */
    for (size_t i = 0; i < nb_tensor_size(x); i++)
        expect_near(nb_grad_get(x, i), want[i], tol_of(dt) * terms, "index_select dx", i);
    *y_out = values_of(y);
    *g_out = grads_of(x);
    free(want);
    free(ids);
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(seed);
}

static void test_embedding_gather_and_scatter_add(void **state) {
    (void)state;
    struct {
        int nd, axis;
        size_t shape[3], count;
    } cases[] = {{2, 0, {300, 131}, 517}, {3, 1, {3, 50, 97}, 400}, {2, 1, {65, 7}, 9}, {1, 0, {5}, 3}};
    for (int d = 0; d < 2; d++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            nb_dtype dt = d ? NB_F64 : NB_F32;
            double *y1, *g1;
            select_run(dt, cases[c].nd, cases[c].shape, cases[c].axis, cases[c].count, 1, &y1, &g1);
            size_t nx = 1, ny = 1;
            for (int k = 0; k < cases[c].nd; k++) {
                nx *= cases[c].shape[k];
                ny *= k == cases[c].axis ? cases[c].count : cases[c].shape[k];
            }
            for (int threads = 2; threads <= 3; threads++) {
                double *y, *g;
                select_run(dt, cases[c].nd, cases[c].shape, cases[c].axis, cases[c].count, threads, &y, &g);
                assert_memory_equal(y1, y, ny * sizeof *y);
                assert_memory_equal(g1, g, nx * sizeof *g);
                free(y);
                free(g);
            }
            free(y1);
            free(g1);
        }
    nb_set_threads(1);
}

/* ---------------------------------------------------------------- softmax */

/* softmax or log-softmax along `axis` of a (3, 257, 131) tensor, rows split
 * over `threads` threads; values and dL/dx (as doubles), checked against
 * the definition computed here in double. */
static void softmax_run(nb_dtype dt, int axis, bool log_form, int threads, double **y_out, double **g_out) {
    assert_int_equal(nb_set_threads(threads), NB_OK);
    nb_rng rng;
    nb_rng_seed(&rng, 51);
    const size_t shape[3] = {3, 257, 131};
    nb_tensor *x = uniform(&rng, dt, 3, shape, -6, 6), *seed = uniform(&rng, dt, 3, shape, -1, 1);
    nb_requires_grad(x, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *y = log_form ? nb_log_softmax(tp, x, axis) : nb_softmax(tp, x, axis);
    assert_ok(y);
    assert_int_equal(nb_backward_seed(y, seed), NB_OK);
    size_t n = shape[axis], inner = 1, outer = 1;
    for (int d = 0; d < axis; d++) outer *= shape[d];
    for (int d = axis + 1; d < 3; d++) inner *= shape[d];
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            double m = -INFINITY, sum = 0, dot = 0, gsum = 0;
            for (size_t k = 0; k < n; k++) m = fmax(m, nb_get(x, (o * n + k) * inner + i));
            for (size_t k = 0; k < n; k++) sum += exp(nb_get(x, (o * n + k) * inner + i) - m);
            for (size_t k = 0; k < n; k++) {
                size_t at = (o * n + k) * inner + i;
                double p = exp(nb_get(x, at) - m) / sum;
                dot += nb_get(seed, at) * p;
                gsum += nb_get(seed, at);
            }
            for (size_t k = 0; k < n; k++) {
                size_t at = (o * n + k) * inner + i;
                double p = exp(nb_get(x, at) - m) / sum, g = nb_get(seed, at);
                expect_near(nb_get(y, at), log_form ? log(p) : p, tol_of(dt) * 4, "softmax y", at);
                expect_near(nb_grad_get(x, at), log_form ? g - p * gsum : p * (g - dot), tol_of(dt) * 64,
                            "softmax dx", at);
            }
        }
    *y_out = values_of(y);
    *g_out = grads_of(x);
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(seed);
}

static void test_softmax_rows_on_any_thread_count(void **state) {
    (void)state;
    for (int d = 0; d < 2; d++)
        for (int axis = 0; axis < 3; axis++)
            for (int lf = 0; lf < 2; lf++) {
                nb_dtype dt = d ? NB_F64 : NB_F32;
                double *y1, *g1;
                softmax_run(dt, axis, lf, 1, &y1, &g1);
                for (int threads = 2; threads <= 3; threads++) {
                    double *y, *g;
                    softmax_run(dt, axis, lf, threads, &y, &g);
                    assert_memory_equal(y1, y, 3 * 257 * 131 * sizeof *y);
                    assert_memory_equal(g1, g, 3 * 257 * 131 * sizeof *g);
                    free(y);
                    free(g);
                }
                free(y1);
                free(g1);
            }
    nb_set_threads(1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_where_fast_paths_match_the_reference),
        cmocka_unit_test(test_dropout_is_the_same_on_any_thread_count),
        cmocka_unit_test(test_dropout_mask_is_the_attention_hash),
        cmocka_unit_test(test_layer_norm_rows_match_the_composed_ops),
        cmocka_unit_test(test_embedding_gather_and_scatter_add),
        cmocka_unit_test(test_softmax_rows_on_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
