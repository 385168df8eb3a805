/*
 * Recomputation (nb_recompute, src/graph/recompute.c): values and
 * gradients bit for bit those of calling the function directly (an MLP in
 * segments, the projectile in segments of steps, an input also used
 * outside, nested checkpoints, nb_grad inside the function, create_graph
 * to second order), the generators' states kept for dropout (and a
 * recomputation that differs refused), less tape memory (a structural
 * bound from nb_tape_memory, not a timing), errors of the function passed
 * on, and a warm loop with no allocation.
 */
#include "support.h"
#include "internal.h" /* the arena's size, for nested checkpoints */
#include "nabla_train.h"
#include "../bench/projectile_tape.h"

#include <math.h>
#include <string.h>

/* The gradients of n heap tensors, bit for bit the same as the values in want. */
static void expect_same_bits(nb_tensor *t, const double *want, const char *what) {
    for (size_t i = 0; i < nb_tensor_size(t); i++) {
        double g = nb_grad_get(t, i);
        if (memcmp(&g, &want[i], sizeof g)) fail_msg("%s: element %zu is %.17g, directly %.17g", what, i, g, want[i]);
    }
}

static double *grads_of(nb_tensor *t) {
    double *g = test_malloc(nb_tensor_size(t) * sizeof *g);
    for (size_t i = 0; i < nb_tensor_size(t); i++) g[i] = nb_grad_get(t, i);
    return g;
}

static void expect_tensor_bits(const nb_tensor *a, const nb_tensor *b, const char *what) {
    assert_int_equal(nb_tensor_size(a), nb_tensor_size(b));
    for (size_t i = 0; i < nb_tensor_size(a); i++) {
        double x = nb_get(a, i), y = nb_get(b, i);
        if (memcmp(&x, &y, sizeof x)) fail_msg("%s: element %zu is %.17g, directly %.17g", what, i, x, y);
    }
}

/* ---------------------------------------------------------------- an MLP in segments */

#define LAYERS 8
#define WIDTH 48
#define BATCH 16

typedef struct {
    nb_tensor *W[LAYERS], *b[LAYERS];
} mlp;

static mlp mlp_new(nb_rng *rng, nb_dtype dt) {
    mlp m;
    for (int l = 0; l < LAYERS; l++) {
        m.W[l] = nb_rand_normal(NULL, rng, dt, NB_SHAPE(WIDTH, WIDTH), 0, 1.0 / sqrt(WIDTH));
        m.b[l] = nb_rand_normal(NULL, rng, dt, NB_SHAPE(WIDTH), 0, 0.1);
        nb_requires_grad(m.W[l], true);
        nb_requires_grad(m.b[l], true);
    }
    return m;
}

static void mlp_free(mlp *m) {
    for (int l = 0; l < LAYERS; l++) nb_tensor_free(m->W[l]), nb_tensor_free(m->b[l]);
}

/* Layers [first, first + count) of h: tanh(h W + b), a GELU every other. */
static nb_tensor *layers(nb_tape *tp, nb_tensor *h, nb_tensor *const *W, nb_tensor *const *b, int first, int count) {
    for (int l = 0; l < count; l++) {
        nb_tensor *z = nb_linear(tp, h, W[l], b[l]);
        h = (first + l) % 2 ? nb_gelu(tp, z) : nb_tanh(tp, z);
    }
    return h;
}

typedef struct {
    int first, count;
} segment_of_layers;

/* inputs: h, then the segment's W and b in turn. */
static nb_status mlp_segment(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    const segment_of_layers *s = ctx;
    nb_tensor *W[LAYERS], *b[LAYERS];
    for (int l = 0; l < s->count; l++) W[l] = in[1 + 2 * l], b[l] = in[2 + 2 * l];
    out[0] = layers(tp, in[0], W, b, s->first, s->count);
    return NB_OK;
}

/* The loss of the MLP on x, with the layers in checkpointed segments of
 * `per` layers (0: directly). */
static nb_tensor *mlp_loss(nb_tape *tp, const mlp *m, nb_tensor *x, int per, segment_of_layers *segs) {
    nb_tensor *h = x;
    if (!per) {
        h = layers(tp, h, m->W, m->b, 0, LAYERS);
    } else {
        for (int first = 0, s = 0; first < LAYERS; first += per, s++) {
            segs[s] = (segment_of_layers){first, per};
            nb_tensor *in[1 + 2 * LAYERS] = {h};
            for (int l = 0; l < per; l++) in[1 + 2 * l] = m->W[first + l], in[2 + 2 * l] = m->b[first + l];
            assert_int_equal(nb_recompute(tp, mlp_segment, &segs[s], in, 1 + 2 * per, &h, 1, NULL), NB_OK);
        }
    }
    return nb_mean(tp, nb_square(tp, h));
}

/* Every segment length, both dtypes: the loss, the weights' and the
 * input's gradients bit for bit; fewer entries on the tape. */
static void test_mlp_gradients_bitwise(void **state) {
    (void)state;
    for (int d = 0; d < 2; d++) {
        nb_dtype dt = d ? NB_F64 : NB_F32;
        nb_rng rng;
        nb_rng_seed(&rng, 11);
        mlp m = mlp_new(&rng, dt);
        nb_tensor *x = nb_rand_normal(NULL, &rng, dt, NB_SHAPE(BATCH, WIDTH), 0, 1);
        nb_requires_grad(x, true);
        nb_tape *tp = nb_tape_new();
        nb_tensor *loss = mlp_loss(tp, &m, x, 0, NULL);
        assert_int_equal(nb_backward(loss), NB_OK);
        double want = nb_item(loss), *gW[LAYERS], *gb[LAYERS], *gx = grads_of(x);
        assert_int_equal(nb_tape_size(tp), 2 * LAYERS + 2);
        for (int l = 0; l < LAYERS; l++) gW[l] = grads_of(m.W[l]), gb[l] = grads_of(m.b[l]);
        for (int per = 1; per <= LAYERS; per *= 2) {
            segment_of_layers segs[LAYERS];
            nb_set_threads(per == 2 ? 2 : 1); /* (and on any thread count) */
            nb_tape_reset(tp);
            for (int l = 0; l < LAYERS; l++) nb_zero_grad(m.W[l]), nb_zero_grad(m.b[l]);
            nb_zero_grad(x);
            loss = mlp_loss(tp, &m, x, per, segs);
            assert_ok(loss);
            double got = nb_item(loss);
            assert_memory_equal(&got, &want, sizeof got);
            /* a token and an output per segment, instead of 2 entries per layer */
            assert_int_equal(nb_tape_size(tp), 2 * (size_t)(LAYERS / per) + 2);
            assert_int_equal(nb_backward(loss), NB_OK);
            assert_int_equal(nb_tape_size(tp), 2 * (size_t)(LAYERS / per) + 2); /* the recomputation is gone */
            for (int l = 0; l < LAYERS; l++) {
                expect_same_bits(m.W[l], gW[l], "dL/dW");
                expect_same_bits(m.b[l], gb[l], "dL/db");
            }
            expect_same_bits(x, gx, "dL/dx");
        }
        nb_set_threads(1);
        for (int l = 0; l < LAYERS; l++) test_free(gW[l]), test_free(gb[l]);
        test_free(gx);
        nb_tensor_free(x);
        mlp_free(&m);
        nb_tape_free(tp);
    }
}

/* ---------------------------------------------------------------- the projectile */

/* bench/projectile_tape.h's steps, 17 ops each. */
static nb_status projectile_segment(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    for (int k = 0; k < 4; k++) out[k] = in[k];
    projectile_steps(tp, out, *(const int *)ctx);
    return NB_OK;
}

/* x + y after n steps, in segments of `per` steps (0: directly). */
static nb_tensor *projectile(nb_tape *tp, nb_tensor *theta, nb_tensor *speed, int n, int per) {
    nb_tensor *s[4] = {nb_scalar(tp, NB_F64, 0), nb_scalar(tp, NB_F64, 0), nb_mul(tp, speed, nb_cos(tp, theta)),
                       nb_mul(tp, speed, nb_sin(tp, theta))};
    if (!per) {
        projectile_steps(tp, s, n);
    } else {
        static int lengths[10001]; /* one a segment, read again in backward */
        for (int done = 0, k = 0; done < n; done += lengths[k++]) {
            lengths[k] = n - done < per ? n - done : per;
            nb_tensor *in[4] = {s[0], s[1], s[2], s[3]};
            if (nb_recompute(tp, projectile_segment, &lengths[k], in, 4, s, 4, NULL) != NB_OK) return s[0];
        }
    }
    return nb_add(tp, s[0], s[1]);
}

/* 1000 steps in segments of 1, 7 (a shorter last one), 32 and 1000 steps:
 * f and both gradients bit for bit; and 10^4 steps in segments of 100 hold
 * far less tape memory than directly. */
static void test_projectile_in_segments(void **state) {
    (void)state;
    nb_tensor *theta = nb_scalar(NULL, NB_F64, 0.7), *speed = nb_scalar(NULL, NB_F64, 20);
    nb_requires_grad(theta, true);
    nb_requires_grad(speed, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *f = projectile(tp, theta, speed, 1000, 0);
    assert_int_equal(nb_backward(f), NB_OK);
    double want = nb_item(f), g_theta = nb_grad_get(theta, 0), g_speed = nb_grad_get(speed, 0);
    const int pers[] = {1, 7, 32, 1000};
    for (int p = 0; p < 4; p++) {
        nb_tape_reset(tp);
        nb_zero_grad(theta);
        nb_zero_grad(speed);
        f = projectile(tp, theta, speed, 1000, pers[p]);
        assert_ok(f);
        double got = nb_item(f);
        assert_memory_equal(&got, &want, sizeof got);
        assert_int_equal(nb_backward(f), NB_OK);
        expect_same_bits(theta, &g_theta, "df/dtheta");
        expect_same_bits(speed, &g_speed, "df/dspeed");
    }
    nb_tape_free(tp);

    /* Memory: n = 10^4 steps directly against 100 segments of 100.  The
     * tape never shrinks, so nb_tape_memory after backward is its peak. */
    size_t memory[2];
    for (int c = 0; c < 2; c++) {
        tp = nb_tape_new();
        nb_zero_grad(theta);
        nb_zero_grad(speed);
        f = projectile(tp, theta, speed, 10000, c ? 100 : 0);
        assert_int_equal(nb_backward(f), NB_OK);
        memory[c] = nb_tape_memory(tp);
        if (c) assert_int_equal(nb_tape_size(tp), 4 + 100 * 5 + 1); /* 4 to start, 5 a segment, the sum */
        nb_tape_free(tp);
    }
    /* directly: 170,000 entries of 96 bytes and as many headers; in
     * segments: 500 entries and one segment's 1,700 at a time */
    print_message("projectile, 10^4 steps: nb_tape_memory %zu bytes directly, %zu in segments of 100\n", memory[0],
                  memory[1]);
    assert_true(memory[0] > 170000 * 96);
    assert_true(memory[1] * 8 < memory[0]);
    nb_tensor_free(theta);
    nb_tensor_free(speed);
}

/* An input that is also used outside the function (a residual, y = x +
 * f(x)), and a function that returns one of its inputs as an output: the
 * gradients still bit for bit, since the recomputed entries add into x's
 * gradient in the order the direct ones would. */
static nb_status residual_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    nb_tensor *x = in[0];
    out[0] = nb_mul(tp, nb_sin(tp, x), nb_exp(tp, nb_scale(tp, x, 0.3)));
    out[1] = x;
    return NB_OK;
}

static nb_tensor *residual(nb_tape *tp, nb_tensor *x0, bool checkpointed) {
    nb_tensor *x = nb_tanh(tp, x0), *out[2];
    if (checkpointed)
        assert_int_equal(nb_recompute(tp, residual_fn, NULL, &x, 1, out, 2, NULL), NB_OK);
    else
        residual_fn(tp, &x, out, NULL);
    return nb_sum(tp, nb_add(tp, nb_mul(tp, nb_add(tp, x, out[0]), x), nb_square(tp, out[1])));
}

static void test_input_used_outside_and_returned(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 5);
    nb_tensor *x0 = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(3, 5), 0, 1);
    nb_requires_grad(x0, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *direct = residual(tp, x0, false);
    assert_int_equal(nb_backward(direct), NB_OK);
    double *want = grads_of(x0), value = nb_item(direct);
    nb_tape_reset(tp);
    nb_zero_grad(x0);
    nb_tensor *ck = residual(tp, x0, true);
    double got = nb_item(ck);
    assert_memory_equal(&got, &value, sizeof got);
    assert_int_equal(nb_backward(ck), NB_OK);
    expect_same_bits(x0, want, "d/dx0");
    test_free(want);
    nb_tape_free(tp);
    nb_tensor_free(x0);
}

/* ---------------------------------------------------------------- generators */

typedef struct {
    nb_rng *rng;
} dropout_ctx;

static nb_status dropout_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    nb_rng *rng = ((dropout_ctx *)ctx)->rng;
    nb_tensor *h = nb_dropout(tp, nb_tanh(tp, nb_matmul(tp, in[0], in[1])), 0.5, rng);
    out[0] = nb_dropout(tp, nb_sigmoid(tp, h), 0.3, rng);
    return NB_OK;
}

/* With the generator in opts: the masks drawn again are the first ones, so
 * the gradient is the direct one, and the generator ends where the direct
 * run left it (the recomputation's draws are undone).  Without it, the
 * masks differ when drawn again, and backward refuses. */
static void test_dropout_sees_the_same_generator(void **state) {
    (void)state;
    nb_rng init;
    nb_rng_seed(&init, 3);
    nb_tensor *x = nb_rand_normal(NULL, &init, NB_F32, NB_SHAPE(6, 8), 0, 1);
    nb_tensor *W = nb_rand_normal(NULL, &init, NB_F32, NB_SHAPE(8, 8), 0, 0.5);
    nb_requires_grad(W, true);
    nb_tape *tp = nb_tape_new();
    nb_rng rng;
    nb_rng_seed(&rng, 99);
    dropout_ctx c = {&rng};
    nb_tensor *in[2] = {x, W}, *y;
    dropout_fn(tp, in, &y, &c);
    nb_tensor *direct = nb_copy(NULL, y);
    assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, y))), NB_OK);
    double *want = grads_of(W);
    nb_rng after_direct = rng;
    uint64_t next_direct = nb_rng_next(&after_direct);

    nb_tape_reset(tp);
    nb_zero_grad(W);
    nb_rng_seed(&rng, 99);
    nb_recompute_opts opts = {.rngs = (nb_rng *const[]){&rng}, .n_rngs = 1};
    assert_int_equal(nb_recompute(tp, dropout_fn, &c, in, 2, &y, 1, &opts), NB_OK);
    expect_tensor_bits(y, direct, "dropout's output");
    assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, y))), NB_OK);
    expect_same_bits(W, want, "dL/dW with dropout");
    assert_int_equal(nb_rng_next(&rng), next_direct); /* the generator as the direct run left it */

    nb_tape_reset(tp);
    nb_zero_grad(W);
    nb_rng_seed(&rng, 99);
    assert_int_equal(nb_recompute(tp, dropout_fn, &c, in, 2, &y, 1, NULL), NB_OK);
    assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, y))), NB_ERR_STATE);
    assert_message_has(nb_tape_error(tp), "nb_recompute", "other values when run again", "rngs",
                       "test_recompute.c");
    for (size_t i = 0; i < 64; i++) assert_true(nb_grad_get(W, i) == 0); /* zeroed, and nothing added */

    /* In evaluation, dropout passes its input through, and the flag at the
     * call is the one the recomputation sees. */
    nb_tape_reset(tp);
    nb_tape_set_training(tp, false);
    assert_int_equal(nb_recompute(tp, dropout_fn, &c, in, 2, &y, 1, NULL), NB_OK);
    nb_tape_set_training(tp, true);
    assert_int_equal(nb_backward(nb_sum(tp, y)), NB_OK);
    assert_true(nb_has_grad(W));
    test_free(want);
    nb_tensor_free(direct);
    nb_tensor_free(x);
    nb_tensor_free(W);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- create_graph */

static nb_status wavy(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    nb_tensor *x = in[0], *w = in[1];
    nb_tensor *u = nb_mul(tp, nb_sin(tp, nb_mul(tp, x, w)), nb_exp(tp, nb_scale(tp, x, -0.5)));
    out[0] = nb_tanh(tp, nb_add(tp, u, nb_square(tp, w)));
    out[1] = nb_log1p(tp, nb_square(tp, u));
    return NB_OK;
}

static nb_tensor *wavy_loss(nb_tape *tp, nb_tensor *x, nb_tensor *w, bool checkpointed) {
    nb_tensor *in[2] = {x, w}, *out[2];
    if (checkpointed)
        assert_int_equal(nb_recompute(tp, wavy, NULL, in, 2, out, 2, NULL), NB_OK);
    else
        wavy(tp, in, out, NULL);
    return nb_sum(tp, nb_add(tp, nb_mul(tp, out[0], out[0]), nb_scale(tp, out[1], 3)));
}

/* nb_grad with create_graph through a checkpoint: first and second
 * derivatives bit for bit (x and w are used in the function alone), the
 * numeric nb_grad too, and the leaves' own gradients untouched by nb_grad. */
static void test_create_graph(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 8);
    nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(4, 3), 0, 1);
    nb_tensor *w = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(4, 3), 0, 1);
    nb_requires_grad(x, true);
    nb_requires_grad(w, true);
    nb_tape *tp = nb_tape_new();
    nb_tensor *results[2][6];
    for (int c = 0; c < 2; c++) {
        nb_tensor *L = wavy_loss(tp, x, w, c), *wrt[2] = {x, w}, *g[2], *h[2], *num[2];
        assert_int_equal(nb_grad(L, wrt, 2, g, true), NB_OK);
        /* d/d(x, w) of sum(g_x · g_w): mixed second derivatives */
        nb_tensor *s = nb_sum(tp, nb_mul(tp, g[0], g[1]));
        assert_int_equal(nb_grad(s, wrt, 2, h, false), NB_OK);
        assert_int_equal(nb_grad(L, wrt, 2, num, false), NB_OK);
        results[c][0] = g[0], results[c][1] = g[1], results[c][2] = h[0], results[c][3] = h[1];
        results[c][4] = num[0], results[c][5] = num[1];
    }
    const char *names[] = {"dL/dx", "dL/dw", "d2 x", "d2 w", "numeric dL/dx", "numeric dL/dw"};
    for (int k = 0; k < 6; k++) {
        if (k == 2 || k == 3) { /* the second order goes through fn's recomputed copy beside the checkpoint: its
                                 * sums associate otherwise, so it agrees to rounding */
            for (size_t i = 0; i < 12; i++) {
                double want = nb_get(results[0][k], i);
                assert_close(nb_get(results[1][k], i), want, 1e-13 * (1 + fabs(want)));
            }
            continue;
        }
        expect_tensor_bits(results[1][k], results[0][k], names[k]);
    }
    for (int k = 0; k < 2; k++) /* and they are right: the numeric first derivative, from central differences */
        for (size_t i = 0; i < 12; i++) {
            nb_tensor *t = k ? w : x;
            double *v = nb_tensor_data(t), keep = v[i], e = 1e-6, up, down;
            v[i] = keep + e;
            nb_tape *scratch = nb_tape_new();
            up = nb_item(wavy_loss(scratch, x, w, true));
            v[i] = keep - e;
            down = nb_item(wavy_loss(scratch, x, w, true));
            v[i] = keep;
            nb_tape_free(scratch);
            assert_close(nb_get(results[1][k], i), (up - down) / (2 * e), 1e-6);
        }
    assert_false(nb_has_grad(x));
    assert_false(nb_has_grad(w));
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(w);
}

/* ---------------------------------------------------------------- re-entering the library */

static nb_status inner_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_cos(tp, nb_mul(tp, in[0], in[1]));
    return NB_OK;
}

/* A checkpoint inside a checkpoint, twice over. */
static nb_status outer_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    bool nested = *(const bool *)ctx;
    nb_tensor *h = nb_sin(tp, in[0]);
    for (int k = 0; k < 2; k++) {
        nb_tensor *pair[2] = {h, in[1]};
        if (nested) {
            nb_status st = nb_recompute(tp, inner_fn, NULL, pair, 2, &h, 1, NULL);
            if (st != NB_OK) return st;
        } else {
            inner_fn(tp, pair, &h, NULL);
        }
        h = nb_add(tp, h, in[0]);
    }
    out[0] = h;
    return NB_OK;
}

/* fn takes a derivative itself: out = d/dx sum(x³ w) = 3x² w, with
 * create_graph so that the result can be differentiated again. */
static nb_status derivative_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    bool was = nb_tape_no_grad(tp, false); /* fn runs in a no-grad scope the first time: turn recording on */
    nb_tensor *x = in[0], *y = nb_sum(tp, nb_mul(tp, nb_pow(tp, x, 3), in[1]));
    nb_status st = nb_grad(y, &in[0], 1, out, true);
    nb_tape_no_grad(tp, was);
    return st;
}

static void test_reentrant_functions(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 21);
    nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(5), 0, 1);
    nb_tensor *w = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(5), 0, 1);
    nb_requires_grad(x, true);
    nb_requires_grad(w, true);
    nb_tape *tp = nb_tape_new();
    double *want[2] = {NULL, NULL};
    for (int c = 0; c < 3; c++) { /* directly; checkpointed; checkpointed with checkpoints inside */
        nb_tape_reset(tp);
        nb_zero_grad(x);
        nb_zero_grad(w);
        bool nested = c == 2;
        nb_tensor *in[2] = {x, w}, *y;
        if (c == 0)
            outer_fn(tp, in, &y, &nested);
        else
            assert_int_equal(nb_recompute(tp, outer_fn, &nested, in, 2, &y, 1, NULL), NB_OK);
        assert_int_equal(nb_backward(nb_sum(tp, nb_square(tp, y))), NB_OK);
        if (c == 0) {
            want[0] = grads_of(x), want[1] = grads_of(w);
        } else {
            expect_same_bits(x, want[0], "nested: dL/dx");
            expect_same_bits(w, want[1], "nested: dL/dw");
        }
    }
    test_free(want[0]);
    test_free(want[1]);

    /* nb_grad inside: d/dw sum(3x² w) = 3x², d/dx = 6 x w */
    nb_tape_reset(tp);
    nb_zero_grad(x);
    nb_zero_grad(w);
    nb_tensor *in[2] = {x, w}, *d;
    assert_int_equal(nb_recompute(tp, derivative_fn, NULL, in, 2, &d, 1, NULL), NB_OK);
    for (size_t i = 0; i < 5; i++) assert_close(nb_get(d, i), 3 * pow(nb_get(x, i), 2) * nb_get(w, i), 1e-12);
    assert_int_equal(nb_backward(nb_sum(tp, d)), NB_OK);
    for (size_t i = 0; i < 5; i++) {
        assert_close(nb_grad_get(w, i), 3 * pow(nb_get(x, i), 2), 1e-12);
        assert_close(nb_grad_get(x, i), 6 * nb_get(x, i) * nb_get(w, i), 1e-12);
    }
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(w);
}

/* ---------------------------------------------------------------- errors */

typedef struct {
    int mode;
    int calls;
    nb_tensor *hidden;
} failing_ctx;

static nb_status failing_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    failing_ctx *c = ctx;
    c->calls++;
    switch (c->mode) {
    case 0: /* an op fails */
        out[0] = nb_add(tp, in[0], nb_zeros(tp, NB_F64, NB_SHAPE(7)));
        return nb_tensor_status(out[0]);
    case 1: /* returns an error of its own */
        out[0] = nb_exp(tp, in[0]);
        return NB_ERR_VALUE;
    case 2: /* reads a tensor that requires a gradient through ctx */
        out[0] = nb_mul(tp, in[0], c->hidden);
        return NB_OK;
    case 3: /* leaves an output unset */
        return NB_OK;
    case 4: /* fails only when run again */
        out[0] = c->calls > 1 ? nb_reshape(tp, in[0], 1, ((const long[]){-1})) : nb_exp(tp, in[0]);
        return NB_OK;
    case 5: /* leaves a scope open */
        nb_no_grad_begin(tp);
        out[0] = nb_exp(tp, in[0]);
        return NB_OK;
    case 6: /* ends a scope it did not begin */
        nb_no_grad_end(tp);
        out[0] = nb_exp(tp, in[0]);
        return NB_OK;
    default: /* resets the tape that runs it */
        out[0] = nb_exp(tp, in[0]);
        nb_tape_reset(tp);
        return NB_OK;
    }
}

static void test_errors(void **state) {
    (void)state;
    nb_tensor *x = nb_ones(NULL, NB_F64, NB_SHAPE(2, 3)), *hidden = nb_ones(NULL, NB_F64, NB_SHAPE(2, 3)), *y = NULL;
    nb_requires_grad(x, true);
    nb_requires_grad(hidden, true);
    nb_tape *tp = nb_tape_new();
    struct {
        int mode;
        nb_status forward, backward;
        const char *message;
    } rows[] = {
        {0, NB_ERR_SHAPE, NB_OK, "add: shapes (2, 3) and (7,)"},
        {1, NB_ERR_VALUE, NB_OK, "returned"},
        {2, NB_OK, NB_ERR_ARG, "requires a gradient and is not one of its 1 inputs"},
        {3, NB_ERR_NULL, NB_OK, "output 1 of the function given to nb_recompute is NULL"},
        {4, NB_OK, NB_ERR_STATE, "as float64 (6,) when run again"},
        {5, NB_ERR_STATE, NB_OK, "left 1 no-grad scope open"},
        {6, NB_ERR_STATE, NB_OK, "nb_no_grad_end: no nb_no_grad_begin is open on this tape inside the function"},
        {7, NB_ERR_STATE, NB_OK, "nb_recompute: the function called nb_tape_reset on the tape that runs it"},
    };
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        nb_tape_reset(tp);
        nb_zero_grad(x);
        failing_ctx c = {rows[r].mode, 0, hidden};
        nb_status st = nb_recompute(tp, failing_fn, &c, &x, 1, &y, 1, NULL);
        assert_int_equal(st, rows[r].forward);
        if (st != NB_OK) {
            assert_int_equal(nb_tensor_status(y), st); /* an errored output */
            assert_int_equal(nb_tape_status(tp), st);
            assert_message_has(nb_tape_error(tp), rows[r].message);
            assert_int_equal(nb_tape_no_grad_mode(tp), false); /* every scope ended, fn's too */
            continue;
        }
        assert_int_equal(nb_backward(nb_sum(tp, y)), rows[r].backward);
        assert_message_has(nb_tape_error(tp), rows[r].message, "test_recompute.c");
        assert_false(nb_has_grad(hidden));
    }
    /* bad arguments */
    nb_tape_reset(tp);
    assert_int_equal(nb_recompute(tp, NULL, NULL, &x, 1, &y, 1, NULL), NB_ERR_NULL);
    assert_message_has(nb_last_error(), "nb_recompute", "the function is NULL");
    assert_int_equal(nb_tensor_status(y), NB_ERR_NULL);
    nb_tape_reset(tp);
    assert_int_equal(nb_recompute(tp, failing_fn, NULL, &x, 1, &y, 0, NULL), NB_ERR_ARG);
    nb_tape_reset(tp);
    nb_tensor *none[1] = {NULL};
    assert_int_equal(nb_recompute(tp, failing_fn, NULL, none, 1, &y, 1, NULL), NB_ERR_NULL);
    assert_message_has(nb_last_error(), "nb_recompute: input 1 is NULL");
    nb_tape_reset(tp);
    nb_tensor *stale = nb_exp(tp, x);
    nb_tape_reset(tp);
    assert_int_equal(nb_recompute(tp, failing_fn, NULL, &stale, 1, &y, 1, NULL), NB_ERR_STATE);
    nb_tape_reset(tp);
    nb_recompute_opts bad = {.rngs = (nb_rng *const[]){NULL}, .n_rngs = 1};
    assert_int_equal(nb_recompute(tp, failing_fn, NULL, &x, 1, &y, 1, &bad), NB_ERR_NULL);
    assert_message_has(nb_last_error(), "generator 1 of opts is NULL");
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(hidden);
}

/* Gradients off, or no input requiring one: fn simply runs, recorded as ever. */
static void test_without_gradients_fn_runs(void **state) {
    (void)state;
    nb_tensor *x = nb_full(NULL, NB_F64, NB_SHAPE(3), 0.5), *y;
    nb_tape *tp = nb_tape_new();
    failing_ctx c = {1, 0, NULL};
    c.mode = 4; /* exp on the first call */
    assert_int_equal(nb_recompute(tp, failing_fn, &c, &x, 1, &y, 1, NULL), NB_OK);
    assert_int_equal(nb_tape_size(tp), 1); /* exp itself */
    assert_close(nb_get(y, 0), exp(0.5), 1e-15);
    nb_requires_grad(x, true);
    nb_tape_no_grad(tp, true);
    c.calls = 0;
    assert_int_equal(nb_recompute(tp, failing_fn, &c, &x, 1, &y, 1, NULL), NB_OK);
    assert_int_equal(nb_tape_size(tp), 1);
    assert_false(nb_tensor_requires_grad(y));
    nb_tape_free(tp);
    nb_tensor_free(x);
}

/* A warm training loop through checkpoints calls no malloc: the
 * recomputation's region reuses the tape's memory. */
static void test_warm_loop_calls_no_malloc(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 2);
    mlp m = mlp_new(&rng, NB_F32);
    nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(BATCH, WIDTH), 0, 1);
    nb_tape *tp = nb_tape_new();
    uint64_t before = 0;
    for (int step = 0; step < 20; step++) {
        if (step == 8) before = nb_alloc_count();
        nb_tape_reset(tp);
        segment_of_layers segs[LAYERS];
        assert_int_equal(nb_backward(mlp_loss(tp, &m, x, 2, segs)), NB_OK);
        for (int l = 0; l < LAYERS; l++) { /* a step of SGD, by hand */
            float *w = nb_tensor_data(m.W[l]);
            for (size_t i = 0; i < WIDTH * WIDTH; i++) w[i] -= 0.01f * (float)nb_grad_get(m.W[l], i);
            nb_zero_grad(m.W[l]);
            nb_zero_grad(m.b[l]);
        }
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    nb_tape_free(tp);
    nb_tensor_free(x);
    mlp_free(&m);
}


/* The fused SGD of nb_optimizer_backward_step (a weight read by one linear
 * is updated by its backward): the token's entry is a checkpointed weight's
 * one reader, but the function may read it more than once, so such a
 * weight is the optimizer's to update.  Three steps checkpointed (variant 1)
 * give the weights of nb_backward then nb_optimizer_step directly (variant
 * 0) bit for bit; the fused update directly (variant 2) agrees to rounding
 * (the product w - lr · Xᵀ G in one GEMM rounds as OpenBLAS's kernel does:
 * some kernels, Haswell's and Zen's, differ in the last bit from the
 * gradient then the update).  Anomaly and explain modes give the same
 * gradients. */
static void test_fused_sgd_and_modes(void **state) {
    (void)state;
    static float start[3][LAYERS][WIDTH * WIDTH];
    static float after[3][LAYERS][WIDTH * WIDTH];
    for (int c = 0; c < 3; c++) {
        nb_rng rng;
        nb_rng_seed(&rng, 17);
        nb_params *ps = nb_params_new();
        mlp m = mlp_new(&rng, NB_F32);
        char name[16];
        for (int l = 0; l < LAYERS; l++) {
            snprintf(name, sizeof name, "W%d", l);
            nb_params_add(ps, name, m.W[l]);
            snprintf(name, sizeof name, "b%d", l);
            nb_params_add(ps, name, m.b[l]);
            memcpy(start[c][l], nb_tensor_data(m.W[l]), sizeof start[c][l]);
        }
        nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(BATCH, WIDTH), 0, 1);
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, NB_OPT_SGD);
        o.lr = 0.05;
        nb_optimizer *opt = nb_optimizer_new(ps, &o);
        nb_tape *tp = nb_tape_new();
        for (int step = 0; step < 3; step++) {
            nb_tape_reset(tp);
            nb_params_zero_grad(ps);
            segment_of_layers segs[LAYERS];
            nb_tensor *loss = mlp_loss(tp, &m, x, c == 1 ? 2 : 0, segs);
            if (c == 0) {
                assert_int_equal(nb_backward(loss), NB_OK);
                assert_int_equal(nb_optimizer_step(opt), NB_OK);
            } else {
                assert_int_equal(nb_optimizer_backward_step(opt, loss), NB_OK);
            }
        }
        for (int l = 0; l < LAYERS; l++) memcpy(after[c][l], nb_tensor_data(m.W[l]), sizeof after[c][l]);
        /* anomaly and explain modes: the same gradients as a plain pass */
        double plain = 0;
        for (int mode = 0; mode < 3; mode++) {
            nb_tape_reset(tp);
            nb_params_zero_grad(ps);
            nb_tape_set_anomaly_mode(tp, mode == 1);
            nb_tape_set_explain(tp, mode == 2);
            segment_of_layers segs[LAYERS];
            assert_int_equal(nb_backward(mlp_loss(tp, &m, x, c == 1 ? 2 : 0, segs)), NB_OK);
            double g = nb_grad_get(m.W[0], 5);
            if (mode == 0) plain = g;
            assert_memory_equal(&g, &plain, sizeof g);
        }
        nb_tape_free(tp);
        nb_optimizer_free(opt);
        nb_params_free(ps);
        nb_tensor_free(x);
    }
    assert_memory_equal(start[0], start[1], sizeof start[0]);
    assert_memory_equal(start[0], start[2], sizeof start[0]);
    assert_memory_not_equal(start[0], after[0], sizeof start[0]); /* the steps moved the weights */
    assert_memory_equal(after[0], after[1], sizeof after[0]);
    for (int l = 0; l < LAYERS; l++)
        for (size_t i = 0; i < WIDTH * WIDTH; i++)
            assert_true(fabsf(after[2][l][i] - after[0][l][i]) <= 1e-5f * (1 + fabsf(after[0][l][i])));
}

/* A function that reads a weight twice, under the fused SGD: directly the
 * weight has two readers and the optimizer updates it; checkpointed, the
 * token's entry is its one reader, and a fused update in the first
 * recomputed backward would change what the second reads. */
static nb_status twice_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    nb_tensor *h = nb_tanh(tp, nb_linear(tp, in[0], in[1], in[2]));
    out[0] = nb_tanh(tp, nb_linear(tp, h, in[1], in[2]));
    return NB_OK;
}

static void test_fused_sgd_weight_read_twice(void **state) {
    (void)state;
    float w[2][WIDTH * WIDTH];
    for (int c = 0; c < 2; c++) {
        nb_rng rng;
        nb_rng_seed(&rng, 23);
        nb_params *ps = nb_params_new();
        nb_tensor *W = nb_params_add(ps, "W", nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(WIDTH, WIDTH), 0, 0.2));
        nb_tensor *b = nb_params_add(ps, "b", nb_zeros(NULL, NB_F32, NB_SHAPE(WIDTH)));
        nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(BATCH, WIDTH), 0, 1);
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, NB_OPT_SGD);
        o.lr = 0.5;
        nb_optimizer *opt = nb_optimizer_new(ps, &o);
        nb_tape *tp = nb_tape_new();
        for (int step = 0; step < 3; step++) {
            nb_tape_reset(tp);
            nb_params_zero_grad(ps);
            nb_tensor *in[3] = {x, W, b}, *y;
            if (c)
                assert_int_equal(nb_recompute(tp, twice_fn, NULL, in, 3, &y, 1, NULL), NB_OK);
            else
                twice_fn(tp, in, &y, NULL);
            assert_int_equal(nb_optimizer_backward_step(opt, nb_mean(tp, nb_square(tp, y))), NB_OK);
        }
        memcpy(w[c], nb_tensor_data(W), sizeof w[c]);
        nb_tape_free(tp);
        nb_optimizer_free(opt);
        nb_params_free(ps);
        nb_tensor_free(x);
    }
    assert_memory_equal(w[0], w[1], sizeof w[0]);
}

/* Nested checkpoints in the recomputation: segments of 1000 steps made of
 * checkpoints of 100, the same bits as segments of 1000.  (The memory:
 * a scalar's value lives beside its header, and an inner region's headers
 * are retired in place, their pages handed back but their addresses not
 * reused, so the headers' windows grow over an outer recomputation; the
 * arena, where tensors of more than one element keep their values, is
 * given back by each inner region: bench_recompute's nested MLP row.) */
static nb_status segment_of_segments(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    static int hundred = 100;
    (void)ctx;
    for (int k = 0; k < 4; k++) out[k] = in[k];
    for (int i = 0; i < 10; i++) {
        nb_tensor *s[4] = {out[0], out[1], out[2], out[3]};
        nb_status st = nb_recompute(tp, projectile_segment, &hundred, s, 4, out, 4, NULL);
        if (st != NB_OK) return st;
    }
    return NB_OK;
}

static void test_nested_checkpoints_in_the_recomputation(void **state) {
    (void)state;
    nb_tensor *theta = nb_scalar(NULL, NB_F64, 0.7), *speed = nb_scalar(NULL, NB_F64, 20);
    nb_requires_grad(theta, true);
    nb_requires_grad(speed, true);
    size_t memory[2], headers[2];
    double g[2][2];
    for (int c = 0; c < 2; c++) {
        nb_tape *tp = nb_tape_new();
        nb_zero_grad(theta);
        nb_zero_grad(speed);
        nb_tensor *f;
        if (c == 0) {
            f = projectile(tp, theta, speed, 10000, 1000);
        } else {
            nb_tensor *s[4] = {nb_scalar(tp, NB_F64, 0), nb_scalar(tp, NB_F64, 0),
                               nb_mul(tp, speed, nb_cos(tp, theta)), nb_mul(tp, speed, nb_sin(tp, theta))};
            for (int k = 0; k < 10; k++) {
                nb_tensor *in[4] = {s[0], s[1], s[2], s[3]};
                assert_int_equal(nb_recompute(tp, segment_of_segments, NULL, in, 4, s, 4, NULL), NB_OK);
            }
            f = nb_add(tp, s[0], s[1]);
        }
        assert_int_equal(nb_backward(f), NB_OK);
        memory[c] = tp->arena.total;
        headers[c] = nb_headers_memory(&tp->headers) + nb_headers_memory(&tp->other_headers);
        g[c][0] = nb_grad_get(theta, 0), g[c][1] = nb_grad_get(speed, 0);
        nb_tape_free(tp);
    }
    print_message("projectile, 10^4 steps: arena %zu bytes (headers' windows %zu) in segments of 1000, %zu (%zu) in "
                  "segments of 10 checkpoints of 100\n", memory[0], headers[0], memory[1], headers[1]);
    assert_memory_equal(g[0], g[1], sizeof g[0]);
    nb_tensor_free(theta);
    nb_tensor_free(speed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_gradients_bitwise),
        cmocka_unit_test(test_projectile_in_segments),
        cmocka_unit_test(test_input_used_outside_and_returned),
        cmocka_unit_test(test_dropout_sees_the_same_generator),
        cmocka_unit_test(test_create_graph),
        cmocka_unit_test(test_reentrant_functions),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_without_gradients_fn_runs),
        cmocka_unit_test(test_warm_loop_calls_no_malloc),
        cmocka_unit_test(test_fused_sgd_and_modes),
        cmocka_unit_test(test_fused_sgd_weight_read_twice),
        cmocka_unit_test(test_nested_checkpoints_in_the_recomputation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
