/*
 * Ops defined by the user through nabla_op.h: checked against the same
 * functions composed of built-in ops, and with everything built-in ops get
 * (any number of inputs, errors with the caller's line, gradcheck, pictures,
 * anomaly mode, no-grad regions, threads, the tape's memory, stale and
 * changed inputs).
 */
#include "support.h"
#include "nabla_op.h"
#include "nabla_train.h"
#include "../examples/silu_op.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- softplus, as a user writes it */

/* y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|);  dy/dx = σ(x).  Both dtypes;
 * the element loop runs on nabla's threads. */
typedef struct {
    nb_op_call *c;
    void *gx;
    bool acc;
} job;

static void softplus_range(void *ctx, size_t begin, size_t end) {
    const job *j = ctx;
    if (nb_tensor_dtype(nb_op_output(j->c)) == NB_F64) {
        const double *x = nb_op_input_data(j->c, 0);
        double *y = nb_op_output_data(j->c);
        for (size_t i = begin; i < end; i++) y[i] = fmax(x[i], 0) + log1p(exp(-fabs(x[i])));
    } else {
        const float *x = nb_op_input_data(j->c, 0);
        float *y = nb_op_output_data(j->c);
        for (size_t i = begin; i < end; i++) y[i] = fmaxf(x[i], 0) + log1pf(expf(-fabsf(x[i])));
    }
}

static void softplus_forward(nb_op_call *c) {
    job j = {c, NULL, false};
    nb_parallel_for(nb_op_size(c), 4096, softplus_range, &j);
}

static void softplus_grad_range(void *ctx, size_t begin, size_t end) {
    const job *j = ctx;
    if (nb_tensor_dtype(nb_op_output(j->c)) == NB_F64) {
        const double *x = nb_op_input_data(j->c, 0), *g = nb_op_grad_output(j->c);
        double *gx = j->gx;
        for (size_t i = begin; i < end; i++) {
            double d = g[i] / (1 + exp(-x[i]));
            gx[i] = j->acc ? gx[i] + d : d;
        }
    } else {
        const float *x = nb_op_input_data(j->c, 0), *g = nb_op_grad_output(j->c);
        float *gx = j->gx;
        for (size_t i = begin; i < end; i++) {
            float d = g[i] / (1 + expf(-x[i]));
            gx[i] = j->acc ? gx[i] + d : d;
        }
    }
}

static void softplus_backward(nb_op_call *c) {
    job j = {c, NULL, false};
    if (!(j.gx = nb_op_grad_input(c, 0, &j.acc))) return;
    nb_parallel_for(nb_op_size(c), 4096, softplus_grad_range, &j);
}

static const nb_op_def my_softplus = {.name = "my_softplus", .forward = softplus_forward,
                                      .backward = softplus_backward, .derivative = {"σ(x)"}, .elementwise = true};

static nb_tensor *softplus(nb_tape *tp, nb_tensor *x) {
    return nb_op(tp, &my_softplus, &x, 1, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0);
}

/* The same composed of built-in ops: log(1 + e^x) (fine for moderate x). */
static nb_tensor *softplus_composed(nb_tape *tp, nb_tensor *x) { return nb_log(tp, nb_add_scalar(tp, nb_exp(tp, x), 1)); }

static void test_custom_op_matches_the_composition(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 51);
    for (int dt = NB_F32; dt <= NB_F64; dt++) {
        nb_tensor *x = nb_rand_uniform(NULL, &rng, (nb_dtype)dt, NB_SHAPE(50, 40), -6, 6);
        nb_requires_grad(x, true);
        nb_tape *tp = nb_tape_new();
        nb_tensor *w = nb_rand_uniform(tp, &rng, (nb_dtype)dt, NB_SHAPE(50, 40), -1, 1);
        nb_tensor *mine = softplus(tp, x), *theirs = softplus_composed(tp, x);
        assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, mine, w))), NB_OK);
        double *g_mine = malloc(2000 * sizeof *g_mine);
        for (size_t i = 0; i < 2000; i++) g_mine[i] = nb_grad_get(x, i);
        nb_zero_grad(x);
        assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, theirs, w))), NB_OK);
        double tol = dt == NB_F32 ? 2e-6 : 1e-14;
        for (size_t i = 0; i < 2000; i++) {
            assert_close(nb_get(mine, i), nb_get(theirs, i), tol * (1 + nb_get(theirs, i)));
            assert_close(g_mine[i], nb_grad_get(x, i), tol);
        }
        free(g_mine);
        nb_tape_free(tp);
        nb_tensor_free(x);
    }
}

static nb_tensor *softplus_of(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    /* fan-out: x goes through the op twice and once around it */
    nb_tensor *y = softplus(tp, in[0]);
    return nb_sum(tp, nb_mul(tp, nb_add(tp, y, softplus(tp, nb_neg(tp, in[0]))), in[0]));
}

static void test_custom_op_passes_gradcheck(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 52);
    nb_tensor *x = random_input(&rng, NB_SHAPE(3, 4), -3, 3, false);
    assert_gradcheck(softplus_of, &x, 1, NULL);
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- any number of inputs */

/* y = sum_k c_k x_k for n inputs of one shape, weights c in the parameters;
 * dL/dx_k = c_k G.  Forward also checks the weights are finite (to show
 * nb_op_fail). */
typedef struct {
    int n;
    double c[8];
} combo_params;

static void combo_forward(nb_op_call *c) {
    const combo_params *p = nb_op_params(c);
    double *y = nb_op_output_data(c);
    memset(y, 0, nb_op_size(c) * sizeof *y);
    for (int k = 0; k < p->n; k++) {
        if (!isfinite(p->c[k])) {
            nb_op_fail(c, NB_ERR_VALUE, "weight %d is %g", k, p->c[k]);
            return;
        }
        const double *x = nb_op_input_data(c, k);
        for (size_t i = 0; i < nb_op_size(c); i++) y[i] += p->c[k] * x[i];
    }
}

static void combo_backward(nb_op_call *c) {
    const combo_params *p = nb_op_params(c);
    const double *g = nb_op_grad_output(c);
    for (int k = 0; k < p->n; k++) {
        bool acc;
        double *gx = nb_op_grad_input(c, k, &acc);
        if (!gx) {
            if (nb_tape_status(nb_op_tape(c)) != NB_OK) return;
            continue; /* input k takes no gradient */
        }
        for (size_t i = 0; i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + p->c[k] * g[i] : p->c[k] * g[i];
    }
}

static const nb_op_def combo = {.name = "combo", .forward = combo_forward, .backward = combo_backward,
                                .derivative = {"c_k"}, .elementwise = true};

#define combination(tp, xs, p) \
    nb_op(tp, &combo, xs, (p)->n, NB_F64, nb_tensor_ndim((xs)[0]), nb_tensor_shape((xs)[0]), p, sizeof *(p))

static nb_tensor *combo_of(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n;
    const combo_params *p = user;
    /* seven inputs: the three given, repeated (fan-out through one op) */
    nb_tensor *xs[7] = {in[0], in[1], in[2], in[0], in[2], in[1], in[0]};
    nb_tensor *y = combination(tp, xs, p);
    return nb_sum(tp, nb_mul(tp, y, nb_tanh(tp, y)));
}

static void test_many_inputs(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 53);
    combo_params p = {7, {0.5, -1, 2, 0.25, 1.5, -0.75, 3}};
    nb_tensor *in[3];
    for (int k = 0; k < 3; k++) in[k] = random_input(&rng, NB_SHAPE(2, 3), -1, 1, false);
    assert_gradcheck(combo_of, in, 3, &p);
    /* the gradient of input 0, by hand: 0.5 + 0.25 + 3 = 3.75 times the
     * upstream gradient, for y = combination: d sum(y)/dx0 = 3.75 */
    nb_tape *tp = nb_tape_new();
    nb_tensor *xs[7] = {in[0], in[1], in[2], in[0], in[2], in[1], in[0]};
    assert_int_equal(nb_backward(nb_sum(tp, combination(tp, xs, &p))), NB_OK);
    for (size_t i = 0; i < 6; i++) assert_close(nb_grad_get(in[0], i), 3.75, 1e-15);
    /* a bad weight: the forward's error names the op and this line */
    nb_tape_reset(tp);
    combo_params bad = {2, {1, NAN}};
    nb_tensor *y = combination(tp, xs, &bad); int line = __LINE__;
    assert_int_equal(nb_tensor_status(y), NB_ERR_VALUE);
    char where[64];
    snprintf(where, sizeof where, "test_custom_op.c:%d", line);
    assert_message_has(nb_tape_error(tp), "combo: weight 1 is nan", where);
    /* inputs checked as for built-in ops: a float32 among float64 */
    nb_tape_reset(tp);
    nb_tensor *mixed[2] = {in[0], nb_ones(tp, NB_F32, NB_SHAPE(2, 3))};
    assert_int_equal(nb_tensor_status(combination(tp, mixed, &bad)), NB_ERR_DTYPE);
    assert_message_has(nb_tape_error(tp), "combo", "float32", "test_custom_op.c:");
    /* and a stale one */
    nb_tape_reset(tp);
    nb_tensor *kept = nb_exp(tp, in[0]);
    nb_tape_reset(tp);
    nb_tensor *with_stale[2] = {in[1], kept};
    assert_int_equal(nb_tensor_status(combination(tp, with_stale, &bad)), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "combo: input 2", "before nb_tape_reset");
    nb_tape_free(tp);
    for (int k = 0; k < 3; k++) nb_tensor_free(in[k]);
}

/* y = a b, whose backward takes both buffers first and writes b's part
 * before a's, as the contract allows.  Given (x, x), the two share one
 * buffer, handed out as "set" for a and "add" for b: b's part went onto
 * whatever the buffer held and a's "set" then wiped it, leaving dL/dx = x G
 * where it is 2 x G (found by gradchecks of ops given one tensor twice). */
static void product_forward(nb_op_call *c) {
    const double *a = nb_op_input_data(c, 0), *b = nb_op_input_data(c, 1);
    double *y = nb_op_output_data(c);
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = a[i] * b[i];
}
static void product_backward(nb_op_call *c) {
    const double *a = nb_op_input_data(c, 0), *b = nb_op_input_data(c, 1), *g = nb_op_grad_output(c);
    bool acc_a, acc_b;
    double *ga = nb_op_grad_input(c, 0, &acc_a), *gb = nb_op_grad_input(c, 1, &acc_b);
    for (size_t i = 0; gb && i < nb_op_size(c); i++) gb[i] = acc_b ? gb[i] + g[i] * a[i] : g[i] * a[i];
    for (size_t i = 0; ga && i < nb_op_size(c); i++) ga[i] = acc_a ? ga[i] + g[i] * b[i] : g[i] * b[i];
}
static const nb_op_def product = {.name = "product", .forward = product_forward, .backward = product_backward,
                                  .derivative = {"b", "a"}, .elementwise = true};

static nb_tensor *product_of(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)user;
    nb_tensor *xs[3] = {in[0], in[0], n > 1 ? in[1] : in[0]};
    /* x o first, so that the backward of x x (later on the tape) runs first,
     * on a fresh buffer */
    nb_tensor *z = nb_op(tp, &product, xs + 1, 2, NB_F64, NB_SHAPE(3), NULL, 0);
    nb_tensor *y = nb_op(tp, &product, xs, 2, NB_F64, NB_SHAPE(3), NULL, 0);
    return nb_sum(tp, nb_mul(tp, nb_add(tp, y, z), nb_tanh(tp, y)));
}

static void test_one_tensor_as_several_inputs(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 19);
    nb_tensor *in[2] = {random_input(&rng, NB_SHAPE(3), -1, 1, false), random_input(&rng, NB_SHAPE(3), -1, 1, false)};
    assert_gradcheck(product_of, in, 2, NULL);
    /* d sum(x x)/dx = 2 x, on every pass: after nb_backward, nb_grad
     * twice (the leaves' gradients set aside, their buffers holding the
     * first pass's values), then a second nb_backward adding to the first */
    nb_tape *tp = nb_tape_new();
    nb_tensor *xx[2] = {in[0], in[0]}, *g[1];
    nb_tensor *sum = nb_sum(tp, nb_op(tp, &product, xx, 2, NB_F64, NB_SHAPE(3), NULL, 0));
    assert_int_equal(nb_backward(sum), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(in[0], i), 2 * nb_get(in[0], i), 1e-15);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(nb_grad(sum, in, 1, g, false), NB_OK);
        for (size_t i = 0; i < 3; i++) assert_close(nb_get(g[0], i), 2 * nb_get(in[0], i), 1e-15);
    }
    assert_int_equal(nb_backward(sum), NB_OK);
    for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(in[0], i), 4 * nb_get(in[0], i), 1e-15);
    nb_tape_free(tp);
    nb_tensor_free(in[0]);
    nb_tensor_free(in[1]);
}

/* ---------------------------------------------------------------- what built-in ops get */

static void test_pictures_anomaly_no_grad_and_memory(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){0, 1}));
    nb_requires_grad(x, true);
    /* pictures: the op's name and its derivative, and the chain rule's
     * numbers: σ(0) = 0.5, σ(1) = 0.7311 */
    nb_tape_set_explain(tp, true);
    nb_tensor *y = nb_sum(tp, softplus(tp, x));
    assert_int_equal(nb_backward(y), NB_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(nb_dot_write(tp, f, NULL), NB_OK);
    fclose(f);
    assert_message_has(buf, "my_softplus", "∂t1/∂t0 = σ(t0)", "× 0.5 = 0.5", "× 0.7311 = 0.7311");
    free(buf);
    char page[] = "/tmp/nabla-custom-XXXXXX";
    int fd = mkstemp(page);
    close(fd);
    assert_int_equal(nb_backward_html(y, page, "custom", NULL), NB_OK);
    unlink(page);
    /* no-grad region: the result requires no gradient */
    nb_tape_reset(tp);
    bool was = nb_tape_set_grad_enabled(tp, false);
    assert_false(nb_tensor_requires_grad(softplus(tp, x)));
    nb_tape_set_grad_enabled(tp, was);
    /* anomaly mode names the op and this file when it makes an inf */
    nb_tape_reset(tp);
    nb_tape_set_anomaly_mode(tp, true);
    combo_params huge = {1, {1e308}};
    nb_tensor *big = nb_full(tp, NB_F64, NB_SHAPE(2), 10);
    assert_int_equal(nb_tensor_status(nb_op(tp, &combo, &big, 1, NB_F64, NB_SHAPE(2), &huge, sizeof huge)),
                     NB_ERR_VALUE);
    assert_message_has(nb_tape_error(tp), "anomaly", "combo", "inf", "test_custom_op.c:");
    nb_tape_set_anomaly_mode(tp, false);
    /* a warm loop of custom ops (with saved state) allocates nothing */
    uint64_t before = 0;
    for (int step = 0; step < 5; step++) {
        if (step == 2) before = nb_alloc_count();
        nb_tape_reset(tp);
        nb_zero_grad(x);
        nb_tensor *z = x;
        for (int k = 0; k < 100; k++) z = softplus(tp, nb_scale(tp, z, 0.5));
        assert_int_equal(nb_backward(nb_sum(tp, z)), NB_OK);
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    /* changed after use: refused, as for built-in ops */
    nb_tape_reset(tp);
    nb_tensor *s = nb_sum(tp, softplus(tp, x));
    nb_set(x, 0, 3);
    assert_int_equal(nb_backward(s), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "of my_softplus", "changed after the op used it");
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Larger than a thread's share: the same bits on 1 and 2 threads. */
static void test_custom_op_on_threads(void **state) {
    (void)state;
    double sums[2], grads[2];
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(nb_set_threads(threads), NB_OK);
        nb_rng rng;
        nb_rng_seed(&rng, 54);
        nb_tensor *x = nb_rand_uniform(NULL, &rng, NB_F32, NB_SHAPE(300, 200), -4, 4);
        nb_requires_grad(x, true);
        nb_tape *tp = nb_tape_new();
        nb_tensor *y = nb_sum(tp, nb_square(tp, softplus(tp, x)));
        assert_int_equal(nb_backward(y), NB_OK);
        sums[threads - 1] = nb_item(y);
        grads[threads - 1] = 0;
        for (size_t i = 0; i < nb_tensor_size(x); i++) grads[threads - 1] += nb_grad_get(x, i) * (double)(i % 7);
        nb_tape_free(tp);
        nb_tensor_free(x);
    }
    assert_true(sums[0] == sums[1] && grads[0] == grads[1]);
    assert_int_equal(nb_set_threads(1), NB_OK);
}

/* ---------------------------------------------------------------- a kernel as the built-ins' */

/* SiLU with nabla_kernel.h (examples/silu_op.h) gives the bits of x ·
 * sigmoid(x) from the built-in ops, which evaluate the same expressions in
 * the same order: forward and backward, both dtypes, sizes below and above
 * the thread split (2 · NB_KERNEL_GRAIN) and odd ones (vector tails), on 1
 * and 2 threads; the plain version agrees within libm's rounding. */
static void test_kernel_op_gives_the_built_ins_bits(void **state) {
    (void)state;
    const size_t sizes[] = {1, 7, 33, 2 * NB_KERNEL_GRAIN + 5, 4 * NB_KERNEL_GRAIN + 3};
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(nb_set_threads(threads), NB_OK);
        for (int dt = NB_F32; dt <= NB_F64; dt++)
            for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
                nb_rng rng;
                nb_rng_seed(&rng, 60 + k);
                size_t n = sizes[k];
                nb_tensor *x = nb_rand_uniform(NULL, &rng, (nb_dtype)dt, NB_SHAPE(n), -30, 30);
                nb_requires_grad(x, true);
                nb_tape *tp = nb_tape_new();
                nb_tensor *w = nb_rand_uniform(tp, &rng, (nb_dtype)dt, NB_SHAPE(n), -2, 2);
                nb_tensor *ys[3] = {silu_with(tp, &silu_kernel_op, x), nb_mul(tp, x, nb_sigmoid(tp, x)),
                                    silu_with(tp, &silu_plain_op, x)};
                nb_tensor *g[3];
                for (int v = 0; v < 3; v++)
                    assert_int_equal(nb_grad(nb_sum(tp, nb_mul(tp, ys[v], w)), &x, 1, &g[v], false), NB_OK);
                size_t bytes = n * (dt == NB_F32 ? 4 : 8);
                assert_memory_equal(nb_tensor_data(ys[0]), nb_tensor_data(ys[1]), bytes);
                assert_memory_equal(nb_tensor_data(g[0]), nb_tensor_data(g[1]), bytes);
                double tol = dt == NB_F32 ? 4e-7 : 1e-15;
                for (size_t i = 0; i < n; i++) {
                    double y = nb_get(ys[1], i), gx = nb_get(g[1], i);
                    assert_close(nb_get(ys[2], i), y, tol * fabs(y) + 1e-300);
                    assert_close(nb_get(g[2], i), gx, 4 * tol * (fabs(gx) + fabs(nb_get(w, i))));
                }
                nb_tape_free(tp);
                nb_tensor_free(x);
            }
    }
    assert_int_equal(nb_set_threads(1), NB_OK);
}

static nb_tensor *silu_of(nb_tape *tp, nb_tensor *const *in, int n, void *user) {
    (void)n, (void)user;
    /* fan-out: x through the op twice and once around it */
    nb_tensor *y = silu_with(tp, &silu_kernel_op, in[0]);
    return nb_sum(tp, nb_mul(tp, nb_add(tp, y, silu_with(tp, &silu_kernel_op, nb_neg(tp, in[0]))), in[0]));
}

static void test_kernel_op_passes_gradcheck(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 61);
    nb_tensor *x = random_input(&rng, NB_SHAPE(5, 7), -4, 4, false);
    assert_gradcheck(silu_of, &x, 1, NULL);
    nb_tensor_free(x);
}

/* Bad definitions and calls are refused, never followed. */
static void test_misuse(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(tp, NB_F64, NB_SHAPE(2));
    nb_op_def nameless = my_softplus;
    nameless.name = NULL;
    assert_int_equal(nb_tensor_status(nb_op(tp, &nameless, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0)), NB_ERR_ARG);
    assert_message_has(nb_last_error(), "nb_op", "no name");
    nb_tape_reset(tp);
    x = nb_ones(tp, NB_F64, NB_SHAPE(2));
    assert_int_equal(nb_tensor_status(nb_op(tp, &my_softplus, NULL, 1, NB_F64, NB_SHAPE(2), NULL, 0)), NB_ERR_ARG);
    nb_tape_reset(tp);
    x = nb_ones(tp, NB_F64, NB_SHAPE(2));
    assert_int_equal(nb_tensor_status(nb_op(tp, &my_softplus, &x, 1, NB_F64, NB_SHAPE(2), NULL, 8)), NB_ERR_NULL);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- views of many inputs */

/* y = x0 seen with another shape (a view: forward does nothing); the other
 * inputs ride along, as options passed as tensors would.  dL/dx0 = G. */
static void first_view_forward(nb_op_call *c) { (void)c; }
static void first_view_backward(nb_op_call *c) {
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    const double *g = nb_op_grad_output(c);
    if (!gx) return;
    for (size_t i = 0; i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + g[i] : g[i];
}
static const nb_op_def first_view = {.name = "first_view", .forward = first_view_forward,
                                     .backward = first_view_backward, .derivative = {"G"}, .view = true};

/* An entry of more than 3 inputs keeps them in an array of their own; the
 * view's source is still input 0, and a write through the view reaches it
 * (and nothing else). */
static void test_view_with_many_inputs(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(6), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_requires_grad(x, true);
    nb_tensor *in[5] = {x, nb_ones(tp, NB_F64, NB_SHAPE(2)), nb_ones(tp, NB_F64, NB_SHAPE(3)),
                        nb_ones(tp, NB_F64, NB_SHAPE(1)), nb_ones(tp, NB_F64, NB_SHAPE(4))};
    nb_tensor *v = nb_op(tp, &first_view, in, 5, NB_F64, NB_SHAPE(2, 3), NULL, 0);
    assert_ok(v);
    assert_close(nb_get(v, 4), 5, 0);
    nb_tensor *loss = nb_sum(tp, nb_square(tp, v));
    /* d sum(v²)/dx = 2x, through the view */
    assert_int_equal(nb_backward(loss), NB_OK);
    assert_close(nb_grad_get(x, 5), 12, 0);
    nb_set(v, 0, 7); /* a write through the view is a write of x... */
    assert_close(nb_get(x, 0), 7, 0);
    for (int k = 0; k < 5; k++) assert_ptr_equal(nb_tensor_input(v, k), in[k]); /* ...and of nothing else */
    assert_int_equal(nb_backward(loss), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "changed after the op used it");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(nb_dot_write(tp, f, NULL), NB_OK);
    fclose(f);
    assert_message_has(buf, "first_view");
    free(buf);
    /* a write to the source is seen through the view too */
    nb_tape_reset(tp);
    in[1] = in[2] = in[3] = in[4] = nb_ones(tp, NB_F64, NB_SHAPE(1));
    v = nb_op(tp, &first_view, in, 5, NB_F64, NB_SHAPE(3, 2), NULL, 0);
    loss = nb_sum(tp, nb_square(tp, v));
    nb_set(x, 1, 0);
    assert_int_equal(nb_backward(loss), NB_ERR_STATE);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A view's shape must hold its input's count exactly, counted without
 * wrapping: (4, 2^62 + 2) has 2^64 + 8 elements, not 8. */
static void test_view_shapes_are_checked(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_ones(tp, NB_F64, NB_SHAPE(8));
    size_t wraps[2] = {4, ((size_t)1 << 62) + 2}, nine[9] = {1, 1, 1, 1, 1, 1, 1, 2, 4};
    assert_int_equal(nb_tensor_status(nb_op(tp, &first_view, &x, 1, NB_F64, 2, wraps, NULL, 0)), NB_ERR_SHAPE);
    assert_message_has(nb_tape_error(tp), "first_view", "(4, 4611686018427387906)", "more elements than memory",
                       "test_custom_op.c:");
    struct { int ndim; const size_t *shape; nb_dtype dt; nb_status st; const char *says; } bad[] = {
        {2, (const size_t[]){3, 3}, NB_F64, NB_ERR_SHAPE, "(3, 3)"},        /* 9 elements for 8 */
        {2, (const size_t[]){0, 8}, NB_F64, NB_ERR_SHAPE, "empty"},
        {-1, NULL, NB_F64, NB_ERR_ARG, "-1 dimensions"},
        {9, nine, NB_F64, NB_ERR_ARG, "9 dimensions"},
        {2, NULL, NB_F64, NB_ERR_NULL, "NULL"},
        {1, (const size_t[]){8}, NB_F32, NB_ERR_DTYPE, "float32"},           /* a view keeps its input's dtype */
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        nb_tape_reset(tp);
        x = nb_ones(tp, NB_F64, NB_SHAPE(8));
        nb_tensor *v = nb_op(tp, &first_view, &x, 1, bad[k].dt, bad[k].ndim, bad[k].shape, NULL, 0);
        assert_int_equal(nb_tensor_status(v), bad[k].st);
        assert_message_has(nb_tape_error(tp), "first_view", bad[k].says);
    }
    /* and the output shapes of ops that are not views */
    for (size_t k = 0; k < 5; k++) {
        nb_tape_reset(tp);
        x = nb_ones(tp, NB_F64, NB_SHAPE(8));
        nb_tensor *y = nb_op(tp, &my_softplus, &x, 1, NB_F64, bad[k].ndim, k ? bad[k].shape : wraps, NULL, 0);
        assert_int_equal(nb_tensor_status(y), k ? bad[k].st : NB_ERR_SHAPE);
        assert_message_has(nb_tape_error(tp), "my_softplus", k ? bad[k].says : "more elements than memory");
    }
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- callbacks that record ops */

/* y = 2x, computed by 300 recorded ops (more than the tape's first 256
 * entries: the entry array moves), the factor kept for backward; backward
 * records 300 ops of its own before it writes dL/dx = 2 G.  Ops recorded in
 * a callback are not differentiated through (as in a PyTorch Function). */
static bool recorded_with_grad;
static nb_tensor *by_ops(nb_tape *tp, nb_tensor *t) {
    for (int k = 0; k < 300; k++) t = nb_scale(tp, t, 1);
    recorded_with_grad |= nb_tensor_requires_grad(t);
    return t;
}
static void twice_forward(nb_op_call *c) {
    nb_tensor *t = by_ops(nb_op_tape(c), nb_scale(nb_op_tape(c), nb_op_input(c, 0), 2));
    memcpy(nb_op_output_data(c), nb_tensor_const_data(t), nb_op_size(c) * sizeof(double));
    double *factor = nb_op_save(c, sizeof *factor);
    if (factor) *factor = 2;
}
static void twice_backward(nb_op_call *c) {
    by_ops(nb_op_tape(c), nb_op_input(c, 0));
    const double *factor = nb_op_saved(c), *g = nb_op_grad_output(c);
    if (!factor) {
        nb_op_fail(c, NB_ERR_STATE, "lost what its forward kept");
        return;
    }
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    for (size_t i = 0; i < nb_op_size(c); i++) gx[i] = acc ? gx[i] + *factor * g[i] : *factor * g[i];
}
static const nb_op_def twice = {.name = "twice", .forward = twice_forward, .backward = twice_backward,
                                .derivative = {"2"}, .elementwise = true};

/* describe() for pictures, computing its text with 300 recorded ops. */
static void twice_describe(const nb_op_call *c, char *buf, size_t size) {
    nb_tensor *t = by_ops(nb_op_tape(c), nb_op_input(c, 0));
    snprintf(buf, size, "first input %g", nb_get(t, 0));
}
static const nb_op_def twice_described = {.name = "twice", .forward = twice_forward, .backward = twice_backward,
                                          .describe = twice_describe, .derivative = {"2"}, .elementwise = true};

static void reset_forward(nb_op_call *c) { nb_tape_reset(nb_op_tape(c)); }
static void reset_hook(nb_tape *tp, size_t entry, void *user) {
    (void)entry, (void)user;
    nb_tape_reset(tp);
}
static const nb_op_def resets = {.name = "resets", .forward = reset_forward, .backward = first_view_backward};

static void test_callbacks_that_record_ops(void **state) {
    (void)state;
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, -2, 3}));
    nb_requires_grad(x, true);
    for (int round = 0; round < 3; round++) {
        nb_tape *tp = nb_tape_new(); /* a fresh tape: the first op's entry is the one that moves */
        nb_tape_set_anomaly_mode(tp, round == 1);
        nb_tape_set_explain(tp, round == 2);
        recorded_with_grad = false;
        nb_tensor *y = nb_op(tp, &twice, &x, 1, NB_F64, NB_SHAPE(3), NULL, 0);
        assert_ok(y);
        assert_close(nb_get(y, 1), -4, 0);
        assert_true(nb_tensor_requires_grad(y));
        /* L = sum(y · y) = 4 sum(x²): dL/dx = 8x */
        nb_zero_grad(x);
        assert_int_equal(nb_backward(nb_sum(tp, nb_mul(tp, y, y))), NB_OK);
        assert_false(recorded_with_grad);
        for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(x, i), 8 * nb_get(x, i), 0);
        assert_int_equal(nb_tape_status(tp), NB_OK);
        nb_tape_free(tp);
    }
    /* describe records ops while the picture is drawn: the picture is of the
     * graph (2 ops), and the tape keeps its size */
    nb_tape *tp = nb_tape_new();
    nb_tensor *L = nb_sum(tp, nb_op(tp, &twice_described, &x, 1, NB_F64, NB_SHAPE(3), NULL, 0));
    assert_int_equal(nb_backward(L), NB_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(nb_dot_write(tp, f, NULL), NB_OK);
    fclose(f);
    assert_message_has(buf, "first input 1", "op1", "t2");
    assert_null(strstr(buf, "op2"));
    free(buf);
    assert_int_equal(nb_tape_size(tp), 2);
    char page[] = "/tmp/nabla-describe-XXXXXX";
    int fd = mkstemp(page);
    close(fd);
    assert_int_equal(nb_backward_html(L, page, "describe", NULL), NB_OK);
    unlink(page);
    /* a forward, or a backward hook, that resets its own tape is refused */
    nb_tape_reset(tp);
    assert_int_equal(nb_tensor_status(nb_op(tp, &resets, &x, 1, NB_F64, NB_SHAPE(3), NULL, 0)), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "resets", "reset", "test_custom_op.c:");
    nb_tape_reset(tp);
    nb_tape_set_backward_hook(tp, reset_hook, NULL);
    assert_int_equal(nb_backward(nb_sum(tp, nb_exp(tp, x))), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "hook", "reset");
    nb_tape_free(tp);
    nb_tensor_free(x);
}

/* ---------------------------------------------------------------- views made in callbacks */

/* A forward that makes a view of a tensor, keeps it, and copies its input:
 * the view's entry leaves the tape when the forward returns, but the view
 * still shares the storage.  (Before, the view's link to that storage went
 * with its entry: a write through either was unseen, and backward gave
 * dL/dx = 200 instead of refusing; the fused SGD update wrote the storage
 * under an op that read the view, which then gave a wrong gradient.) */
static nb_tensor *kept_view, *view_of; /* view_of: what the forward views (NULL: its input) */
static void keep_view_forward(nb_op_call *c) {
    nb_tensor *x = view_of ? view_of : nb_op_input(c, 0);
    kept_view = nb_reshape(nb_op_tape(c), x, 1, ((long[]){(long)nb_tensor_size(x)}));
    memcpy(nb_op_output_data(c), nb_op_input_data(c, 0), nb_op_size(c) * sizeof(double));
}
static void keep_view_backward(nb_op_call *c) { (void)c; }
static const nb_op_def keep_view = {.name = "keep_view", .forward = keep_view_forward, .backward = keep_view_backward};

static void test_views_made_in_callbacks_share_their_storage(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    /* a write through the view, after square read x: refused as a write through x is */
    view_of = NULL;
    nb_op(tp, &keep_view, &x, 1, NB_F64, NB_SHAPE(3), NULL, 0);
    nb_tensor *L = nb_sum(tp, nb_square(tp, x));
    assert_true(nb_tensor_const_data(kept_view) == nb_tensor_const_data(x));
    nb_set(kept_view, 0, 100);
    assert_close(nb_get(x, 0), 100, 0);
    assert_int_equal(nb_backward(L), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "square", "changed after the op used it");
    assert_false(nb_has_grad(x));
    /* a write through x, after mul read the view: dL/dw = view's values */
    nb_tape_reset(tp);
    nb_set(x, 0, 1);
    nb_tensor *w = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 1, 1}));
    nb_requires_grad(w, true);
    nb_op(tp, &keep_view, &x, 1, NB_F64, NB_SHAPE(3), NULL, 0);
    L = nb_sum(tp, nb_mul(tp, kept_view, w));
    nb_set(x, 0, 10);
    assert_int_equal(nb_backward(L), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "mul", "changed after the op used it");
    nb_set(x, 0, 1);
    nb_tensor_free(w);
    nb_tensor_free(x);

    /* Plain SGD folded into backward: W is read by the matmul and, through
     * the view V made in a forward, by the mul recorded before it (whose
     * backward runs after the matmul's).  L = sum(V ⊙ y) + sum(X W): the
     * step must be y -= lr W (W as it was) and W -= lr Xᵀ1, as with
     * nb_backward and nb_optimizer_step. */
    const double lr = 0.5, X0[6] = {1, 2, 3, 4, 5, 6}, W0[4] = {0.5, -1, 2, 0.25}, y0[4] = {1, 1, 1, 1};
    nb_tensor *X = nb_from_array(NULL, NB_F64, NB_SHAPE(3, 2), X0);
    nb_tensor *z = nb_from_array(NULL, NB_F64, NB_SHAPE(1), ((double[]){0}));
    for (int fused = 0; fused < 2; fused++) {
        nb_params *ps = nb_params_new();
        nb_tensor *W = nb_params_add(ps, "W", nb_from_array(NULL, NB_F64, NB_SHAPE(2, 2), W0));
        nb_tensor *y = nb_params_add(ps, "y", nb_from_array(NULL, NB_F64, NB_SHAPE(4), y0));
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, NB_OPT_SGD);
        o.lr = lr;
        nb_optimizer *opt = nb_optimizer_new(ps, &o);
        nb_tape_reset(tp);
        view_of = W;
        nb_op(tp, &keep_view, &z, 1, NB_F64, NB_SHAPE(1), NULL, 0);
        nb_tensor *E = nb_mul(tp, kept_view, y), *M = nb_matmul(tp, X, W);
        L = nb_add(tp, nb_sum(tp, E), nb_sum(tp, M));
        assert_int_equal(fused ? nb_optimizer_backward_step(opt, L)
                               : (nb_backward(L) == NB_OK ? nb_optimizer_step(opt) : NB_ERR_STATE),
                         NB_OK);
        for (size_t i = 0; i < 4; i++) {
            assert_close(nb_get(y, i), y0[i] - lr * W0[i], 1e-15);
            double column = X0[i / 2] + X0[2 + i / 2] + X0[4 + i / 2]; /* dL/dW(r, c) = Σ_k X(k, r) */
            assert_close(nb_get(W, i), W0[i] - lr * column, 1e-15);
        }
        nb_optimizer_free(opt);
        nb_params_free(ps);
    }
    view_of = NULL;
    nb_tensor_free(X);
    nb_tensor_free(z);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- first-order backward misuse */

/* A backward that writes nothing: its inputs get no gradient from it (as a
 * PyTorch Function returning None). */
static void silent_backward(nb_op_call *c) { (void)c; }
static const nb_op_def silent = {.name = "silent", .forward = softplus_forward, .backward = silent_backward};

/* One that asks for buffers it may not have: input 1 takes no gradient, 7
 * and -1 do not exist; and one that gives no flag for `accumulate`. */
static int asked;
static void greedy_backward(nb_op_call *c) {
    bool acc = true;
    asked = (nb_op_grad_input(c, 1, &acc) == NULL && !acc) + (nb_op_grad_input(c, 7, &acc) == NULL) +
            (nb_op_grad_input(c, -1, &acc) == NULL);
    softplus_backward(c);
}
static const nb_op_def greedy = {.name = "greedy", .forward = softplus_forward, .backward = greedy_backward};
static void flagless_backward(nb_op_call *c) {
    double *gx = nb_op_grad_input(c, 0, NULL);
    if (gx) gx[0] = 1;
}
static const nb_op_def flagless = {.name = "flagless", .forward = softplus_forward, .backward = flagless_backward};

/* And a forward that asks for gradients, which exist only in backward. */
static void early_forward(nb_op_call *c) {
    bool acc;
    asked = (nb_op_grad_input(c, 0, &acc) == NULL) + (nb_op_grad_output(c) == NULL);
    softplus_forward(c);
}
static const nb_op_def early = {.name = "early", .forward = early_forward, .backward = softplus_backward};

static void test_backward_misuse(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(2), ((double[]){0, 1}));
    nb_requires_grad(x, true);
    nb_tensor *w = nb_exp(tp, x), *y;
    assert_int_equal(nb_backward(nb_sum(tp, nb_op(tp, &silent, &w, 1, NB_F64, NB_SHAPE(2), NULL, 0))), NB_OK);
    assert_false(nb_has_grad(x));
    assert_int_equal(nb_grad(nb_sum(tp, nb_op(tp, &silent, &w, 1, NB_F64, NB_SHAPE(2), NULL, 0)), &x, 1, &y,
                             false), NB_OK);
    assert_close(nb_get(y, 0), 0, 0);
    assert_close(nb_get(y, 1), 0, 0);
    /* the buffers of inputs that take none: NULL, and the tape fine */
    nb_tensor *pair[2] = {x, nb_ones(tp, NB_F64, NB_SHAPE(2))};
    asked = 0;
    assert_int_equal(nb_backward(nb_sum(tp, nb_op(tp, &greedy, pair, 2, NB_F64, NB_SHAPE(2), NULL, 0))), NB_OK);
    assert_int_equal(asked, 3);
    assert_close(nb_grad_get(x, 0), 0.5, 1e-15); /* σ(0) */
    assert_int_equal(nb_backward(nb_sum(tp, nb_op(tp, &flagless, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0))),
                     NB_ERR_NULL);
    assert_message_has(nb_tape_error(tp), "flagless", "nb_op_grad_input", "NULL", "test_custom_op.c:");
    nb_tape_reset(tp);
    /* in forward, no gradient buffer is handed out (a leaf's would keep garbage) */
    nb_zero_grad(x);
    asked = 0;
    y = nb_op(tp, &early, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0);
    assert_int_equal(asked, 2);
    assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
    assert_close(nb_grad_get(x, 1), 1 / (1 + exp(-1.0)), 1e-15);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_custom_op_matches_the_composition),
        cmocka_unit_test(test_custom_op_passes_gradcheck),
        cmocka_unit_test(test_many_inputs),
        cmocka_unit_test(test_one_tensor_as_several_inputs),
        cmocka_unit_test(test_pictures_anomaly_no_grad_and_memory),
        cmocka_unit_test(test_custom_op_on_threads),
        cmocka_unit_test(test_kernel_op_gives_the_built_ins_bits),
        cmocka_unit_test(test_kernel_op_passes_gradcheck),
        cmocka_unit_test(test_misuse),
        cmocka_unit_test(test_view_with_many_inputs),
        cmocka_unit_test(test_view_shapes_are_checked),
        cmocka_unit_test(test_callbacks_that_record_ops),
        cmocka_unit_test(test_views_made_in_callbacks_share_their_storage),
        cmocka_unit_test(test_backward_misuse),
    };
    return cmocka_run_group_tests_name("custom ops", tests, NULL, NULL);
}
