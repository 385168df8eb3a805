/*
 * Record once, replay many (include/nabla_graph.h): a captured graph
 * replayed with new input values gives, bit for bit, the values and
 * gradients of a new recording with those values (compared with memcmp
 * against a fresh eager run on another tape), and refuses what it cannot
 * replay: other shapes and dtypes, a reset tape, a branch the other way, a
 * tensor written between forward and backward, inputs that are not leaves.
 */
#include "nabla.h"
#include "nabla_graph.h"
#include "nabla_nn.h"
#include "nabla_op.h"
#include "nabla_train.h"
#include "support.h"
#include "../bench/projectile_tape.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A model: inputs (changed between replays), parameters (leaves read as
 * they are) and a generator; returns the outputs, the loss first. */
typedef int (*model_fn)(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *params, nb_rng *rng,
                        nb_tensor **out);

typedef struct {
    model_fn f;
    int n_in, n_params;
    nb_tensor **in, **params;
    bool class_labels; /* input 1 holds class indices in [0, classes) */
    size_t classes;
} model;

static size_t bytes_of(const nb_tensor *t) {
    return nb_tensor_size(t) * (nb_tensor_dtype(t) == NB_F32 ? sizeof(float) : sizeof(double));
}

/* The leaves that take a gradient: their gradients, concatenated. */
static size_t grads_of(const model *m, unsigned char *buf) {
    size_t n = 0;
    for (int k = 0; k < m->n_in + m->n_params; k++) {
        nb_tensor *t = k < m->n_in ? m->in[k] : m->params[k - m->n_in];
        if (!nb_tensor_requires_grad(t)) continue;
        size_t b = bytes_of(t);
        if (nb_has_grad(t))
            memcpy(buf + n, nb_grad_data(t), b);
        else
            memset(buf + n, 0xee, b);
        n += b;
    }
    return n;
}

static void zero_all(const model *m) {
    for (int k = 0; k < m->n_in; k++) nb_zero_grad(m->in[k]);
    for (int k = 0; k < m->n_params; k++) nb_zero_grad(m->params[k]);
}

/* New values for the inputs, of their shapes (class labels in range). */
static void new_values(const model *m, nb_rng *rng, nb_tensor **vals) {
    for (int k = 0; k < m->n_in; k++) {
        nb_tensor *x = m->in[k];
        vals[k] = nb_empty(NULL, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x));
        for (size_t i = 0; i < nb_tensor_size(x); i++) {
            double v = k == 1 && m->class_labels ? (double)(nb_rng_next(rng) % m->classes)
                                                 : nb_get(x, i) * (0.5 + nb_rng_uniform(rng)) + 0.1 * nb_rng_normal(rng);
            nb_set(vals[k], i, v);
        }
    }
}

/* Records m once, captures it, then for `rounds` new input values compares
 * each replay (forward and backward) with a new recording of the same
 * values on another tape: outputs and gradients bit for bit. */
static void check_replay(const model *m, int rounds, uint64_t seed) {
    nb_tape *tp = nb_tape_new(), *fresh = nb_tape_new();
    nb_rng rng, data;
    nb_rng_seed(&rng, seed);
    nb_rng_seed(&data, seed + 1);
    nb_tensor *out[8], *eager[8];
    int n_out = m->f(tp, m->in, m->params, &rng, out);
    for (int k = 0; k < n_out; k++) assert_ok(out[k]);
    nb_graph *g = nb_graph_capture(tp, m->in, m->n_in, out, n_out);
    if (!g) fail_msg("capture: %s", nb_last_error());
    static unsigned char a[1 << 20], b[1 << 20];
    for (int r = 0; r < rounds; r++) {
        nb_tensor *vals[8];
        new_values(m, &data, vals);
        /* the replay */
        for (int k = 0; k < m->n_in; k++) assert_int_equal(nb_graph_set_input(g, k, vals[k]), NB_OK);
        zero_all(m);
        nb_rng_seed(&rng, seed + 100 + (uint64_t)r);
        if (nb_graph_forward(g) != NB_OK) fail_msg("forward: %s", nb_last_error());
        if (nb_graph_backward(g, 0) != NB_OK) fail_msg("backward: %s", nb_last_error());
        if (r % 2 && nb_graph_backward(g, 0) != NB_OK) /* leaf gradients add up */
            fail_msg("backward: %s", nb_last_error());
        size_t na = 0;
        for (int k = 0; k < n_out; k++) {
            memcpy(a + na, nb_tensor_const_data(out[k]), bytes_of(out[k]));
            na += bytes_of(out[k]);
        }
        na += grads_of(m, a + na);
        /* a new recording of the same values, with the generator in the same state */
        nb_tape_reset(fresh);
        zero_all(m);
        nb_rng_seed(&rng, seed + 100 + (uint64_t)r);
        assert_int_equal(m->f(fresh, m->in, m->params, &rng, eager), n_out);
        assert_int_equal(nb_backward(eager[0]), NB_OK);
        if (r % 2) assert_int_equal(nb_backward(eager[0]), NB_OK);
        size_t nb = 0;
        for (int k = 0; k < n_out; k++) {
            memcpy(b + nb, nb_tensor_const_data(eager[k]), bytes_of(eager[k]));
            nb += bytes_of(eager[k]);
        }
        nb += grads_of(m, b + nb);
        assert_int_equal(na, nb);
        if (memcmp(a, b, na)) {
            for (size_t i = 0; i < na; i++)
                if (a[i] != b[i]) fail_msg("round %d: replay and eager differ at byte %zu of %zu", r, i, na);
        }
        for (int k = 0; k < m->n_in; k++) nb_tensor_free(vals[k]);
    }
    nb_graph_free(g);
    nb_tape_free(tp);
    nb_tape_free(fresh);
}

/* ---------------------------------------------------------------- models */

#define STEPS 200
static int projectile(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *params, nb_rng *rng, nb_tensor **out) {
    (void)params, (void)rng;
    nb_tensor *theta = in[0], *speed = in[1], *s[4];
    s[2] = nb_mul(tp, speed, nb_cos(tp, theta));
    s[3] = nb_mul(tp, speed, nb_sin(tp, theta));
    s[0] = nb_scalar(tp, NB_F64, 0);
    s[1] = nb_scalar(tp, NB_F64, 0);
    projectile_steps(tp, s, STEPS); /* bench/projectile_tape.h */
    out[0] = nb_add(tp, s[0], s[1]);
    nb_tensor *vy = s[3];
    out[1] = vy; /* a second output, not differentiated */
    return 2;
}

static void test_projectile(void **state) {
    (void)state;
    nb_tensor *in[2] = {nb_scalar(NULL, NB_F64, 0.7), nb_scalar(NULL, NB_F64, 20)};
    nb_requires_grad(in[0], true);
    nb_requires_grad(in[1], true);
    model m = {projectile, 2, 0, in, NULL, false, 0};
    check_replay(&m, 5, 1);
    nb_tensor_free(in[0]);
    nb_tensor_free(in[1]);
}

/* Every op of scalar code's compact replay (src/graph/replay_scalar.c),
 * with an input read twice by one op (x * x, x + x), a constant leaf on the
 * tape and one on the heap that take no gradient. */
static int scalar_ops(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *p, nb_rng *rng, nb_tensor **out) {
    (void)rng;
    nb_tensor *a = in[0], *b = in[1], *c = nb_scalar(tp, NB_F64, 0.75);
    nb_tensor *t = nb_div(tp, nb_sub(tp, a, b), nb_add(tp, nb_mul(tp, b, b), c));
    t = nb_neg(tp, nb_square(tp, t));
    t = nb_log(tp, nb_add_scalar(tp, nb_exp(tp, nb_scale(tp, t, 0.1)), 2));
    t = nb_sigmoid(tp, nb_mul(tp, nb_tanh(tp, t), nb_tanh(tp, t)));
    nb_tensor *u = nb_sqrt(tp, nb_add(tp, nb_square(tp, nb_sin(tp, a)), nb_mul(tp, nb_cos(tp, p[0]), p[0])));
    nb_tensor *twice = nb_add(tp, a, a);
    out[0] = nb_add(tp, nb_add(tp, t, nb_mul(tp, u, twice)), nb_mul(tp, nb_sub(tp, b, b), a));
    out[1] = u;
    out[2] = twice;
    return 3;
}

static void test_scalar_ops(void **state) {
    (void)state;
    nb_tensor *in[2] = {nb_scalar(NULL, NB_F64, 0.7), nb_scalar(NULL, NB_F64, -1.3)};
    nb_tensor *constant = nb_scalar(NULL, NB_F64, 2.5);
    nb_requires_grad(in[0], true);
    nb_requires_grad(in[1], true);
    model m = {scalar_ops, 2, 1, in, &constant, false, 0};
    check_replay(&m, 6, 13);
    nb_tensor_free(in[0]);
    nb_tensor_free(in[1]);
    nb_tensor_free(constant);
}

/* Scalar code's replay keeps the checks of the others: a write between
 * forward and backward, ops recorded after the capture. */
static void test_scalar_refusals(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 3);
    nb_requires_grad(x, true);
    nb_tensor *h = nb_mul(tp, x, x);
    nb_tensor *y = nb_sin(tp, h);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    assert_non_null(g);
    nb_set(x, 0, 2);
    assert_int_equal(nb_graph_backward(g, 0), NB_ERR_STATE); /* x written since its ops ran */
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_true(nb_item(h) == 4 && nb_item(y) == sin(4.0));
    nb_set(h, 0, 5);
    assert_int_equal(nb_graph_backward(g, 0), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "written", "mul");
    assert_int_equal(nb_graph_forward(g), NB_OK);
    nb_zero_grad(x);
    assert_int_equal(nb_graph_backward(g, 0), NB_OK);
    double half = 1 * cos(4.0) * 2; /* sin's chain, then mul's, once per side of x * x */
    assert_true(nb_grad_get(x, 0) == half + half);
    /* an op recorded after the capture reads y: a replay marks y written, so it is refused */
    nb_tensor *later = nb_scale(tp, y, 2);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_int_not_equal(nb_backward(later), NB_OK);
    assert_message_has(nb_last_error(), "changed after the op used it");
    nb_graph_free(g);
    /* eager backward after a replay whose input was written: refused, not wrong */
    nb_tape_reset(tp);
    y = nb_sin(tp, nb_mul(tp, x, x));
    g = nb_graph_capture(tp, &x, 1, &y, 1);
    nb_set(x, 0, 1);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_int_not_equal(nb_backward(y), NB_OK);
    assert_message_has(nb_last_error(), "changed after the op used it");
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A custom op that keeps memory for backward (nb_op_save): how much it
 * asks for is set from outside, to see a replay refuse a forward that asks
 * for more than its recording kept. */
static size_t extra_saved;
static void keep_sign_forward(nb_op_call *c) {
    const double *x = nb_op_input_data(c, 0);
    double *y = nb_op_output_data(c);
    unsigned char *sign = nb_op_save(c, nb_op_size(c) + extra_saved);
    if (!sign) return;
    for (size_t i = 0; i < nb_op_size(c); i++) {
        sign[i] = x[i] > 0;
        y[i] = sign[i] ? x[i] : 0.5 * x[i];
    }
}
static void keep_sign_backward(nb_op_call *c) {
    const double *g = nb_op_grad_output(c);
    const unsigned char *sign = nb_op_saved(c);
    bool acc;
    double *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    for (size_t i = 0; i < nb_op_size(c); i++) {
        double d = g[i] * (sign[i] ? 1 : 0.5);
        gx[i] = acc ? gx[i] + d : d;
    }
}
static const nb_op_def keep_sign = {.name = "keep_sign", .forward = keep_sign_forward,
                                    .backward = keep_sign_backward, .derivative = {"1 or ½"}};

static int custom(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *p, nb_rng *rng, nb_tensor **out) {
    (void)rng;
    nb_tensor *h = nb_mul(tp, in[0], p[0]);
    nb_tensor *y = nb_op(tp, &keep_sign, &h, 1, NB_F64, nb_tensor_ndim(h), nb_tensor_shape(h), NULL, 0);
    out[0] = nb_sum(tp, nb_mul(tp, y, y));
    return 1;
}

static void test_custom_op(void **state) {
    (void)state;
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(4), ((double[]){1, -2, 3, -0.5}));
    nb_tensor *w = nb_from_f64(NULL, NB_SHAPE(4), ((double[]){0.5, 1, -1, 2}));
    nb_requires_grad(w, true);
    model m = {custom, 1, 1, &x, &w, false, 0};
    check_replay(&m, 4, 17);
    /* a replayed forward that asks for more than it kept is refused */
    nb_tape *tp = nb_tape_new();
    nb_tensor *out;
    custom(tp, &x, &w, NULL, &out);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &out, 1);
    assert_non_null(g);
    uint64_t before = nb_alloc_count();
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_int_equal(nb_alloc_count(), before);
    extra_saved = 64;
    assert_int_equal(nb_graph_forward(g), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "keep_sign", "nb_op_save", "68 bytes", "kept 4");
    extra_saved = 0;
    nb_graph_free(g);
    nb_tape_free(tp);
    nb_tensor_free(x);
    nb_tensor_free(w);
}

/* A checkpoint's function runs outside the tape: a graph holding one is refused. */
static nb_status square_fn(nb_tape *tp, nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_square(tp, in[0]);
    return NB_OK;
}

static void test_checkpoint_refused(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){1, 2})), *h;
    nb_requires_grad(x, true);
    assert_int_equal(nb_recompute(tp, square_fn, NULL, &x, 1, &h, 1, NULL), NB_OK);
    nb_tensor *y = nb_sum(tp, h);
    assert_null(nb_graph_capture(tp, &x, 1, &y, 1));
    assert_message_has(nb_last_error(), "nb_graph_capture", "checkpoint", "nb_recompute", "test_replay.c");
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* A graph captured inside a no-grad scope keeps its memory when the scope
 * ends (the scope gives back the arena only when nothing was kept). */
static void test_no_grad_scope(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_scalar(NULL, NB_F64, 1.5);
    nb_requires_grad(x, true);
    nb_tensor *y = nb_sin(tp, nb_mul(tp, x, x));
    assert_int_equal(nb_no_grad_begin(tp), NB_OK);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    assert_non_null(g);
    assert_int_equal(nb_no_grad_end(tp), NB_OK);
    nb_tensor *later[16]; /* in arena memory a rewind would hand out again */
    for (int i = 0; i < 16; i++) later[i] = nb_full(tp, NB_F64, NB_SHAPE(8), 7.0);
    nb_set(x, 0, 2);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_true(nb_item(y) == sin(4.0));
    nb_zero_grad(x);
    assert_int_equal(nb_graph_backward(g, 0), NB_OK);
    for (int i = 0; i < 16; i++) /* the replay wrote into the graph's memory only */
        for (size_t k = 0; k < 8; k++) assert_true(nb_get(later[i], k) == 7.0);
    double half = 1 * cos(4.0) * 2;
    assert_true(nb_grad_get(x, 0) == half + half);
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* An MLP with most of what a replay must get right: a linear layer, relu,
 * a view (reshape), fan-out (h read three times), a concat of four inputs
 * (kept outside the entry), layer_norm (memory saved in forward), dropout
 * (redrawn), max along an axis (its arg-max saved), and cross-entropy with
 * class indices (checked again at each replay). */
static int mlp(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *p, nb_rng *rng, nb_tensor **out) {
    nb_tensor *x = in[0], *labels = in[1];
    nb_tensor *h = nb_relu(tp, nb_linear(tp, x, p[0], p[1]));      /* (6, 8) */
    h = nb_layer_norm(tp, h, p[4], p[5], 1e-5);
    nb_tensor *d = nb_dropout(tp, h, 0.25, rng);
    nb_tensor *parts[4] = {nb_slice(tp, d, 1, 0, 2, 1), nb_slice(tp, h, 1, 2, 4, 1), nb_mul(tp, h, h),
                           nb_slice(tp, d, 1, 6, 8, 1)};
    nb_tensor *cat = nb_concat(tp, parts, 4, 1);                   /* (6, 14) */
    nb_tensor *flat = nb_reshape(tp, cat, 1, (long[]){-1});
    nb_tensor *back = nb_reshape(tp, flat, 2, (long[]){6, 14});
    nb_tensor *logits = nb_linear(tp, back, p[2], p[3]);           /* (6, 3) */
    nb_tensor *mx = nb_mean(tp, nb_max_axis(tp, logits, 1, false));
    out[0] = nb_add(tp, nb_softmax_cross_entropy(tp, logits, labels, 1), nb_scale(tp, mx, 0.1));
    out[1] = logits;
    return 2;
}

static void mlp_case(nb_dtype dt) {
    nb_rng rng;
    nb_rng_seed(&rng, 7);
    size_t shapes[6][2] = {{4, 8}, {8, 0}, {14, 3}, {3, 0}, {8, 0}, {8, 0}};
    nb_tensor *p[6];
    for (int k = 0; k < 6; k++) {
        int nd = shapes[k][1] ? 2 : 1;
        p[k] = nb_rand_normal(NULL, &rng, dt, nd, shapes[k], k == 4 ? 1.0 : 0.0, 0.5);
        nb_requires_grad(p[k], true);
    }
    nb_tensor *in[2] = {nb_rand_normal(NULL, &rng, dt, NB_SHAPE(6, 4), 0, 1), nb_zeros(NULL, dt, NB_SHAPE(6))};
    for (size_t i = 0; i < 6; i++) nb_set(in[1], i, (double)(i % 3));
    model m = {mlp, 2, 6, in, p, true, 3};
    check_replay(&m, 4, 3);
    for (int k = 0; k < 6; k++) nb_tensor_free(p[k]);
    nb_tensor_free(in[0]);
    nb_tensor_free(in[1]);
}
static void test_mlp_f64(void **state) { (void)state; mlp_case(NB_F64); }
static void test_mlp_f32(void **state) { (void)state; mlp_case(NB_F32); }

/* A CNN step: convolution with its fused relu, max pooling (its arg-max
 * saved), attention with dropout (its log-sum-exp saved, its seed redrawn). */
static int cnn(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *p, nb_rng *rng, nb_tensor **out) {
    nb_tensor *c = nb_conv2d(tp, in[0], p[0], p[1], &(nb_conv_opts){.padding = {1, 1}, .relu = true}); /* (2,3,6,6) */
    nb_tensor *pooled = nb_max_pool2d(tp, c, &(nb_pool_opts){.kernel = {2, 2}});                        /* (2,3,3,3) */
    nb_tensor *q = nb_reshape(tp, pooled, 3, (long[]){2, 3, 9});
    nb_tensor *att = nb_scaled_dot_product_attention(tp, q, q, q, (&(nb_attention_opts){.dropout_p = 0.2, .rng = rng}));
    out[0] = nb_mean(tp, nb_square(tp, att));
    return 1;
}

static void test_cnn_attention(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 11);
    nb_tensor *p[2] = {nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(3, 2, 3, 3), 0, 0.5),
                       nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(3), 0, 0.1)};
    nb_requires_grad(p[0], true);
    nb_requires_grad(p[1], true);
    nb_tensor *x = nb_rand_normal(NULL, &rng, NB_F64, NB_SHAPE(2, 2, 6, 6), 0, 1);
    model m = {cnn, 1, 2, &x, p, false, 0};
    check_replay(&m, 3, 5);
    nb_tensor_free(p[0]);
    nb_tensor_free(p[1]);
    nb_tensor_free(x);
}

/* A graph that holds a backward: d/dx of sum(w x³) recorded with
 * create_graph, and a loss of that gradient (a gradient penalty). */
static int penalty(nb_tape *tp, nb_tensor *const *in, nb_tensor *const *p, nb_rng *rng, nb_tensor **out) {
    (void)rng;
    nb_tensor *f = nb_sum(tp, nb_mul(tp, p[0], nb_mul(tp, in[0], nb_square(tp, in[0]))));
    nb_tensor *gx;
    if (nb_grad(f, &in[0], 1, &gx, true) != NB_OK) return 0;
    out[0] = nb_add(tp, nb_sum(tp, nb_square(tp, gx)), f);
    return 1;
}

static void test_create_graph(void **state) {
    (void)state;
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(3), ((double[]){0.5, -1.5, 2}));
    nb_tensor *w = nb_from_f64(NULL, NB_SHAPE(3), ((double[]){1, 2, -0.5}));
    nb_requires_grad(x, true);
    nb_requires_grad(w, true);
    model m = {penalty, 1, 1, &x, &w, false, 0};
    check_replay(&m, 3, 9);
    nb_tensor_free(x);
    nb_tensor_free(w);
}

/* ---------------------------------------------------------------- refusals */

static void test_refusals(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new(), *other = nb_tape_new();
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_tensor *c = nb_scalar(NULL, NB_F64, 2);
    nb_requires_grad(x, true);
    nb_tensor *h = nb_mul(tp, x, x);
    nb_tensor *loss = nb_sum(tp, h);
    /* an input that is not a leaf */
    assert_null(nb_graph_capture(tp, &h, 1, &loss, 1));
    assert_message_has(nb_last_error(), "input 0", "(3,)", "not a leaf", "mul");
    /* an output that is a leaf, or of another tape */
    assert_null(nb_graph_capture(tp, &x, 1, &x, 1));
    assert_message_has(nb_last_error(), "output 0", "is a leaf");
    nb_tensor *elsewhere = nb_neg(other, x);
    assert_null(nb_graph_capture(tp, &x, 1, &elsewhere, 1));
    assert_message_has(nb_last_error(), "another tape");
    /* an input no op reads */
    assert_null(nb_graph_capture(tp, &c, 1, &loss, 1));
    assert_message_has(nb_last_error(), "input 0", "read by no op");
    /* a result of no-grad mode inside the graph */
    nb_tape_no_grad(tp, true);
    nb_tensor *frozen = nb_exp(tp, x);
    nb_tape_no_grad(tp, false);
    nb_tensor *uses = nb_sum(tp, nb_mul(tp, frozen, x));
    assert_null(nb_graph_capture(tp, &x, 1, &uses, 1));
    assert_message_has(nb_last_error(), "no-grad mode");

    nb_graph *g = nb_graph_capture(tp, &x, 1, &loss, 1);
    assert_non_null(g);
    assert_int_equal(nb_graph_size(g), 2);
    /* other shapes and dtypes */
    nb_tensor *wrong = nb_zeros(NULL, NB_F64, NB_SHAPE(4)), *wrong32 = nb_zeros(NULL, NB_F32, NB_SHAPE(3));
    nb_tensor *wrong2d = nb_zeros(NULL, NB_F64, NB_SHAPE(1, 3));
    assert_int_equal(nb_graph_set_input(g, 0, wrong), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "input 0", "(3,) float64", "(4,) float64");
    assert_int_equal(nb_graph_set_input(g, 0, wrong2d), NB_ERR_SHAPE);
    assert_message_has(nb_last_error(), "(1, 3)");
    assert_int_equal(nb_graph_set_input(g, 0, wrong32), NB_ERR_DTYPE);
    assert_message_has(nb_last_error(), "float32");
    assert_int_equal(nb_graph_set_input(g, 1, x), NB_ERR_ARG);
    assert_int_equal(nb_graph_backward(g, 1), NB_ERR_ARG);

    /* a captured intermediate written: backward refused until the forward runs again */
    assert_int_equal(nb_graph_forward(g), NB_OK);
    nb_set(h, 0, 100);
    assert_int_equal(nb_graph_backward(g, 0), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "written", "mul");
    assert_int_equal(nb_graph_forward(g), NB_OK);
    nb_zero_grad(x);
    assert_int_equal(nb_graph_backward(g, 0), NB_OK);
    assert_true(nb_grad_get(x, 0) == 2 && nb_grad_get(x, 2) == 6);
    assert_true(nb_item(loss) == 14);
    /* an input written with nb_set: the forward reads it */
    nb_set(x, 0, 4);
    assert_int_equal(nb_graph_backward(g, 0), NB_ERR_STATE);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_true(nb_item(loss) == 29);
    /* an op recorded after the capture read a result the replay changed */
    nb_tensor *later = nb_scale(tp, loss, 2);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_int_not_equal(nb_backward(later), NB_OK);
    assert_message_has(nb_last_error(), "changed after the op used it");
    /* after a reset */
    nb_tape_reset(tp);
    assert_int_equal(nb_graph_forward(g), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "reset");
    assert_int_equal(nb_graph_backward(g, 0), NB_ERR_STATE);
    assert_int_equal(nb_graph_set_input(g, 0, x), NB_ERR_STATE);
    nb_graph_free(g);
    assert_int_equal(nb_graph_forward(NULL), NB_ERR_NULL);
    nb_graph_free(NULL);
    nb_tensor_free(wrong);
    nb_tensor_free(wrong32);
    nb_tensor_free(wrong2d);
    nb_tensor_free(x);
    nb_tensor_free(c);
    nb_tape_free(tp);
    nb_tape_free(other);
}

/* Dropout recorded while training is not replayed in evaluation mode. */
static void test_training_mode(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_rng rng;
    nb_rng_seed(&rng, 3);
    nb_tensor *x = nb_ones(NULL, NB_F64, NB_SHAPE(64));
    nb_tensor *y = nb_sum(tp, nb_dropout(tp, x, 0.5, &rng));
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    assert_non_null(g);
    double first = nb_item(y);
    /* each replay redraws: another mask (64 elements: equal sums are unlikely, and checked against eager above) */
    assert_int_equal(nb_graph_forward(g), NB_OK);
    double second = nb_item(y);
    assert_true(first != second || nb_item(y) == 0);
    nb_tape_set_training(tp, false);
    assert_int_equal(nb_graph_forward(g), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "training mode");
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Branches: a guard that would go the other way refuses the replay. */
static nb_tensor *branchy(nb_tape *tp, nb_tensor *x) {
    if (nb_guard(tp, nb_sub(tp, nb_sum(tp, x), nb_scalar(tp, NB_F64, 1))))
        return nb_sum(tp, nb_square(tp, x));
    return nb_sum(tp, nb_exp(tp, x));
}

static void test_guards(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){1, 2}));
    nb_requires_grad(x, true);
    nb_tensor *y = branchy(tp, x);
    nb_graph *g = nb_graph_capture(tp, &x, 1, &y, 1);
    assert_non_null(g);
    nb_tensor *same = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){3, -1})); /* sum 2 > 1: the same branch */
    nb_tensor *flip = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){0.25, 0.5}));
    assert_int_equal(nb_graph_set_input(g, 0, same), NB_OK);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_true(nb_item(y) == 10);
    nb_zero_grad(x);
    assert_int_equal(nb_graph_backward(g, 0), NB_OK);
    assert_true(nb_grad_get(x, 0) == 6 && nb_grad_get(x, 1) == -2);
    assert_int_equal(nb_graph_set_input(g, 0, flip), NB_OK);
    assert_int_equal(nb_graph_forward(g), NB_ERR_STATE);
    assert_message_has(nb_last_error(), "guard", "other branch", "compared -0.25 with 0", "test_replay.c");
    assert_int_equal(nb_graph_backward(g, 0), NB_ERR_STATE); /* nothing to go back through */
    /* unchecked, the replay runs the recorded branch (the user's responsibility) */
    nb_graph_check_guards(g, false);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_true(nb_item(y) == 0.25 * 0.25 + 0.5 * 0.5);
    /* guards refuse what is not one element */
    assert_false(nb_guard(tp, x));
    assert_message_has(nb_last_error(), "guard", "(2,)");
    nb_graph_free(g);
    nb_tensor_free(same);
    nb_tensor_free(flip);
    nb_tensor_free(x);
    nb_tape_free(tp);
}

/* Class indices are checked at each replay: the kernels index with them. */
static void test_bad_labels(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *logits = nb_from_f64(NULL, NB_SHAPE(2, 3), ((double[]){1, 2, 3, 4, 5, 6}));
    nb_tensor *labels = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){0, 2}));
    nb_requires_grad(logits, true);
    nb_tensor *loss = nb_softmax_cross_entropy(tp, logits, labels, 1);
    nb_tensor *in[2] = {logits, labels};
    nb_graph *g = nb_graph_capture(tp, in, 2, &loss, 1);
    assert_non_null(g);
    nb_set(labels, 1, 3);
    assert_int_equal(nb_graph_forward(g), NB_ERR_VALUE);
    assert_message_has(nb_last_error(), "softmax_cross_entropy", "target element 1 is 3", "[0, 3)");
    nb_graph_free(g);
    nb_tensor_free(logits);
    nb_tensor_free(labels);
    nb_tape_free(tp);
}

/* ---------------------------------------------------------------- memory */

/* A warm replay calls no malloc: forward, backward and an optimizer step. */
static void test_no_malloc(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 21);
    nb_params *ps = nb_params_new();
    nb_tensor *p[6];
    size_t shapes[6][2] = {{4, 8}, {8, 0}, {14, 3}, {3, 0}, {8, 0}, {8, 0}};
    const char *names[6] = {"w1", "b1", "w2", "b2", "g", "b"};
    for (int k = 0; k < 6; k++)
        p[k] = nb_params_add(ps, names[k], nb_rand_normal(NULL, &rng, NB_F32, shapes[k][1] ? 2 : 1, shapes[k],
                                                          k == 4 ? 1.0 : 0.0, 0.5));
    nb_optimizer_opts o;
    nb_optimizer_defaults(&o, NB_OPT_ADAM);
    nb_optimizer *opt = nb_optimizer_new(ps, &o);
    nb_tensor *in[2] = {nb_rand_normal(NULL, &rng, NB_F32, NB_SHAPE(6, 4), 0, 1), nb_zeros(NULL, NB_F32, NB_SHAPE(6))};
    nb_tape *tp = nb_tape_new();
    nb_tensor *out[2];
    mlp(tp, in, p, &rng, out);
    nb_graph *g = nb_graph_capture(tp, in, 2, out, 2);
    assert_non_null(g);
    uint64_t before = 0;
    for (int step = 0; step < 12; step++) {
        if (step == 2) before = nb_alloc_count();
        nb_params_zero_grad(ps);
        nb_set(in[0], (size_t)step % 24, step * 0.1);
        assert_int_equal(nb_graph_forward(g), NB_OK);
        assert_int_equal(nb_graph_backward_step(g, 0, opt), NB_OK);
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    /* and scalar code's compact replay */
    nb_tensor *sx[2] = {nb_scalar(NULL, NB_F64, 0.7), nb_scalar(NULL, NB_F64, 20)}, *sout[2];
    nb_requires_grad(sx[0], true);
    nb_requires_grad(sx[1], true);
    projectile(tp, sx, NULL, NULL, sout);
    nb_graph *sg = nb_graph_capture(tp, sx, 2, sout, 2);
    assert_non_null(sg);
    for (int step = 0; step < 12; step++) {
        if (step == 2) before = nb_alloc_count();
        nb_set(sx[0], 0, 0.7 + 0.01 * step);
        assert_int_equal(nb_graph_forward(sg), NB_OK);
        assert_int_equal(nb_graph_backward(sg, 0), NB_OK);
    }
    assert_int_equal(nb_alloc_count() - before, 0);
    nb_graph_free(sg);
    nb_tensor_free(sx[0]);
    nb_tensor_free(sx[1]);
    nb_graph_free(g);
    nb_optimizer_free(opt);
    nb_params_free(ps);
    nb_tensor_free(in[0]);
    nb_tensor_free(in[1]);
    nb_tape_free(tp);
}

/* Replayed training steps with an optimizer give the parameters a new
 * recording's nb_optimizer_backward_step gives, for plain SGD (its update
 * fused into backward) and Adam. */
static void training_case(nb_optimizer_kind kind) {
    nb_rng rng, data;
    nb_params *ps[2];
    nb_optimizer *opt[2];
    nb_tensor *p[2][6], *in[2][2];
    size_t shapes[6][2] = {{4, 8}, {8, 0}, {14, 3}, {3, 0}, {8, 0}, {8, 0}};
    const char *names[6] = {"w1", "b1", "w2", "b2", "g", "b"};
    for (int s = 0; s < 2; s++) {
        nb_rng_seed(&rng, 5);
        ps[s] = nb_params_new();
        for (int k = 0; k < 6; k++)
            p[s][k] = nb_params_add(ps[s], names[k], nb_rand_normal(NULL, &rng, NB_F64, shapes[k][1] ? 2 : 1,
                                                                    shapes[k], k == 4 ? 1.0 : 0.0, 0.5));
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, kind);
        o.lr = 0.05;
        opt[s] = nb_optimizer_new(ps[s], &o);
        in[s][0] = nb_zeros(NULL, NB_F64, NB_SHAPE(6, 4));
        in[s][1] = nb_zeros(NULL, NB_F64, NB_SHAPE(6));
    }
    nb_tape *tp = nb_tape_new(), *fresh = nb_tape_new();
    nb_tensor *out[2];
    nb_rng_seed(&rng, 1);
    mlp(tp, in[0], p[0], &rng, out);
    nb_graph *g = nb_graph_capture(tp, in[0], 2, out, 2);
    assert_non_null(g);
    nb_rng_seed(&data, 2);
    for (int step = 0; step < 5; step++) {
        for (size_t i = 0; i < 24; i++) {
            double v = nb_rng_normal(&data);
            nb_set(in[0][0], i, v), nb_set(in[1][0], i, v);
        }
        for (size_t i = 0; i < 6; i++) {
            double c = (double)(nb_rng_next(&data) % 3);
            nb_set(in[0][1], i, c), nb_set(in[1][1], i, c);
        }
        nb_params_zero_grad(ps[0]);
        nb_params_zero_grad(ps[1]);
        nb_rng_seed(&rng, 40 + (uint64_t)step);
        assert_int_equal(nb_graph_forward(g), NB_OK);
        assert_int_equal(nb_graph_backward_step(g, 0, opt[0]), NB_OK);
        nb_rng_seed(&rng, 40 + (uint64_t)step);
        nb_tape_reset(fresh);
        nb_tensor *eager[2];
        mlp(fresh, in[1], p[1], &rng, eager);
        assert_int_equal(nb_optimizer_backward_step(opt[1], eager[0]), NB_OK);
        assert_memory_equal(nb_tensor_const_data(out[0]), nb_tensor_const_data(eager[0]), sizeof(double));
        for (int k = 0; k < 6; k++) {
            assert_memory_equal(nb_tensor_const_data(p[0][k]), nb_tensor_const_data(p[1][k]), bytes_of(p[0][k]));
            /* plain SGD's update applied inside backward keeps no gradient: the same ones as eager */
            assert_int_equal(nb_has_grad(p[0][k]), nb_has_grad(p[1][k]));
        }
        if (kind == NB_OPT_SGD) assert_false(nb_has_grad(p[0][0])); /* w1, read by one linear: fused */
    }
    nb_graph_free(g);
    for (int s = 0; s < 2; s++) {
        nb_optimizer_free(opt[s]);
        nb_params_free(ps[s]);
        nb_tensor_free(in[s][0]);
        nb_tensor_free(in[s][1]);
    }
    nb_tape_free(tp);
    nb_tape_free(fresh);
}
static void test_training_sgd(void **state) { (void)state; training_case(NB_OPT_SGD); }
static void test_training_adam(void **state) { (void)state; training_case(NB_OPT_ADAM); }

/* Every allocation of a capture failing in turn: refused, nothing leaked,
 * the tape still usable (a graph of (3,) tensors, and scalar code's). */
static void capture_allocation_failures(bool scalar) {
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = scalar ? nb_scalar(NULL, NB_F64, 0.5) : nb_from_f64(NULL, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    nb_tensor *loss = nb_sum(tp, nb_mul(tp, nb_exp(tp, x), x));
    uint64_t before = nb_alloc_count();
    nb_graph *g = nb_graph_capture(tp, &x, 1, &loss, 1);
    uint64_t count = nb_alloc_count() - before;
    assert_non_null(g);
    nb_graph_free(g);
    assert_true(count > 0);
    for (uint64_t n = 1; n <= count + 1; n++) {
        nb_test_fail_allocation(n);
        g = nb_graph_capture(tp, &x, 1, &loss, 1);
        bool failed = nb_test_allocation_failed();
        nb_test_fail_allocation(0);
        if (failed) {
            assert_null(g);
            assert_message_has(nb_last_error(), "out of memory");
        } else {
            assert_non_null(g);
        }
        nb_graph_free(g);
    }
    g = nb_graph_capture(tp, &x, 1, &loss, 1);
    assert_int_equal(nb_graph_forward(g), NB_OK);
    assert_int_equal(nb_graph_backward(g, 0), NB_OK);
    nb_graph_free(g);
    nb_tensor_free(x);
    nb_tape_free(tp);
}
static void test_capture_allocation_failures(void **state) { (void)state; capture_allocation_failures(false); }
static void test_scalar_allocation_failures(void **state) { (void)state; capture_allocation_failures(true); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_projectile),
        cmocka_unit_test(test_scalar_ops),
        cmocka_unit_test(test_scalar_refusals),
        cmocka_unit_test(test_no_grad_scope),
        cmocka_unit_test(test_custom_op),
        cmocka_unit_test(test_checkpoint_refused),
        cmocka_unit_test(test_mlp_f64),
        cmocka_unit_test(test_mlp_f32),
        cmocka_unit_test(test_cnn_attention),
        cmocka_unit_test(test_create_graph),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_training_mode),
        cmocka_unit_test(test_guards),
        cmocka_unit_test(test_bad_labels),
        cmocka_unit_test(test_no_malloc),
        cmocka_unit_test(test_training_sgd),
        cmocka_unit_test(test_training_adam),
        cmocka_unit_test(test_capture_allocation_failures),
        cmocka_unit_test(test_scalar_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
