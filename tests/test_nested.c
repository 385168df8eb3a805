/*
 * Passes inside passes: a custom op's backward that asks for a gradient of
 * its own on the same tape (nb_grad_seed for a vector-Jacobian product, as
 * a PyTorch Function's backward may call autograd.grad; with create_graph;
 * nb_backward, which adds into the leaves even under nb_grad), a backward
 * hook that calls nb_grad, in explain mode, in a
 * filmed pass and inside nb_optimizer_backward_step's fused SGD.  The outer
 * pass must come out as if nothing had happened: the same gradients, and
 * the same pictures, as the function composed of built-in ops.
 */
#include "support.h"
#include "nabla_op.h"
#include "nabla_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* y = sin x, whose backward finds dL/dx = G cos x as a vector-Jacobian
 * product of ops it records, s = sin(x), as a PyTorch Function's backward
 * may call autograd.grad: by nb_grad_seed(s, G, x) (with or without
 * create_graph), or by nb_backward_seed(s, G) into a heap copy of x.  The
 * outer pass must come out of it as if nothing had happened. */
enum { BY_GRAD, BY_GRAD_GRAPH, BY_BACKWARD };
static int nesting;

static void vjp_sin_forward(nb_op_call *c) {
    const double *x = nb_op_input_data(c, 0);
    double *y = nb_op_output_data(c);
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = sin(x[i]);
}
static void vjp_sin_backward(nb_op_call *c) {
    nb_tape *tp = nb_op_tape(c);
    nb_tensor *x = nb_op_input(c, 0), *gx = NULL, *heap = NULL;
    nb_tensor *G = nb_from_f64(tp, nb_tensor_ndim(x), nb_tensor_shape(x), nb_op_grad_output(c));
    bool was = nb_tape_set_grad_enabled(tp, true); /* callbacks record without gradients unless asked */
    nb_status st;
    if (nesting == BY_BACKWARD) {
        heap = nb_copy(NULL, x);
        nb_requires_grad(heap, true);
        st = nb_backward_seed(nb_sin(tp, heap), G);
    } else {
        st = nb_grad_seed(nb_sin(tp, x), G, &x, 1, &gx, nesting == BY_GRAD_GRAPH);
    }
    nb_tape_set_grad_enabled(tp, was);
    bool acc;
    double *d = st == NB_OK ? nb_op_grad_input(c, 0, &acc) : NULL;
    for (size_t i = 0; d && i < nb_op_size(c); i++) {
        double v = heap ? nb_grad_get(heap, i) : nb_get(gx, i);
        d[i] = acc ? d[i] + v : v;
    }
    if (st != NB_OK) nb_op_fail(c, st, "the inner pass failed: %s", nb_last_error());
    nb_tensor_free(heap);
}
static void vjp_sin_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    grad_in[0] = nb_mul(tp, G, nb_cos(tp, nb_op_input(c, 0)));
}
static const nb_op_def vjp_sin = {.name = "vjp_sin", .forward = vjp_sin_forward, .backward = vjp_sin_backward,
                                  .backward_graph = vjp_sin_graph, .derivative = {"cos x"}, .elementwise = true};

static nb_tensor *sine(nb_tape *tp, nb_tensor *x, bool custom) {
    return custom ? nb_op(tp, &vjp_sin, &x, 1, NB_F64, nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0)
                  : nb_sin(tp, x);
}

/* L = sum(x ⊙ y + u ⊙ y + y), x = 2w, u = sin x, y = sin u: x and u have
 * partial gradients from the later ops when the sines' backwards run, and
 * the inner pass from sin(u) runs u's own backward, a pass in a pass in a
 * pass. */
static nb_tensor *two_sines(nb_tape *tp, nb_tensor *w, bool custom, nb_tensor **x_out) {
    nb_tensor *x = nb_scale(tp, w, 2), *u = sine(tp, x, custom), *y = sine(tp, u, custom);
    if (x_out) *x_out = x;
    return nb_sum(tp, nb_add(tp, nb_mul(tp, nb_add(tp, x, u), y), y));
}

/* A backward hook that asks, at every step, for dL/dw by nb_grad. */
typedef struct {
    nb_tensor *loss, *w;
    const double *expect;
    double worst;
    int calls;
} asking;
static void ask_every_step(nb_tape *tp, size_t entry, void *user) {
    (void)tp, (void)entry;
    asking *a = user;
    nb_tensor *g;
    a->calls++;
    if (nb_grad(a->loss, &a->w, 1, &g, false) != NB_OK) {
        a->worst = INFINITY;
        return;
    }
    for (size_t i = 0; i < 3; i++) a->worst = fmax(a->worst, fabs(nb_get(g, i) - a->expect[i]));
}

static char *dot_text(nb_tape *tp) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    nb_dot_opts o;
    nb_dot_default_opts(&o);
    o.show_grads = true;
    assert_int_equal(nb_dot_write(tp, f, &o), NB_OK);
    fclose(f);
    return buf;
}

static void test_passes_inside_passes(void **state) {
    (void)state;
    nb_tensor *w = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0.3, -1.2, 2.0}));
    nb_requires_grad(w, true);
    nb_tape *tp = nb_tape_new();
    /* the same function of built-in ops: the gradients to get */
    nb_tensor *x;
    assert_int_equal(nb_backward(two_sines(tp, w, false, &x)), NB_OK);
    double dw[3], dx[3];
    for (size_t i = 0; i < 3; i++) dw[i] = nb_grad_get(w, i), dx[i] = nb_grad_get(x, i);
    nb_tape_reset(tp);
    nb_tape_set_explain(tp, true);
    nb_zero_grad(w);
    assert_int_equal(nb_backward(two_sines(tp, w, false, NULL)), NB_OK);
    char *plain = dot_text(tp);
    for (nesting = BY_GRAD; nesting <= BY_BACKWARD; nesting++) {
        for (int explain = 0; explain < 2; explain++) {
            nb_tape_reset(tp);
            nb_tape_set_explain(tp, explain);
            nb_zero_grad(w);
            nb_tensor *L = two_sines(tp, w, true, &x);
            assert_int_equal(nb_backward(L), NB_OK);
            for (size_t i = 0; i < 3; i++) {
                assert_close(nb_grad_get(w, i), dw[i], 1e-14);
                assert_close(nb_grad_get(x, i), dx[i], 1e-14); /* the outer pass's, not an inner one's */
            }
            /* nb_grad of it (passes in a pass of nb_grad's), leaving w's gradient */
            nb_tensor *g;
            assert_int_equal(nb_grad(L, &w, 1, &g, false), NB_OK);
            for (size_t i = 0; i < 3; i++) {
                assert_close(nb_get(g, i), dw[i], 1e-14);
                assert_close(nb_grad_get(w, i), dw[i], 1e-14);
            }
        }
        /* a filmed pass, with its passes inside */
        char page[] = "/tmp/nabla-nested-XXXXXX";
        int fd = mkstemp(page);
        close(fd);
        assert_int_equal(nb_backward_html(two_sines(tp, w, true, NULL), page, "nested", NULL), NB_OK);
        unlink(page);
    }
    /* a hook that asks for the gradient at every step: it gets the whole
     * gradient each time, and the pass its own; the pictures show the outer
     * pass's chain rule, as without the hook (inner passes run entries the
     * outer pass has explained already) */
    nesting = BY_GRAD;
    for (int run = 0; run < 4; run++) {
        bool explain = run & 1, custom = run & 2;
        nb_tape_reset(tp);
        nb_tape_set_explain(tp, explain);
        nb_zero_grad(w);
        asking a = {two_sines(tp, w, custom, NULL), w, dw, 0, 0};
        nb_tape_set_backward_hook(tp, ask_every_step, &a);
        assert_int_equal(nb_backward(a.loss), NB_OK);
        nb_tape_set_backward_hook(tp, NULL, NULL);
        assert_true(a.calls >= 7);
        assert_true(a.worst < 1e-14);
        for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(w, i), dw[i], 1e-14);
        if (explain && !custom) {
            char *nested = dot_text(tp);
            assert_string_equal(nested, plain);
            free(nested);
        }
    }
    free(plain);
    nb_tape_free(tp);
    nb_tensor_free(w);
}

/* Plain SGD folded into backward (nb_optimizer_backward_step), with a
 * nested pass through the matmul whose weight it updates: the same step as
 * nb_backward + nb_optimizer_step. */
static void test_nested_pass_in_fused_sgd(void **state) {
    (void)state;
    nb_rng rng;
    nb_rng_seed(&rng, 81);
    nb_tensor *X = nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(4, 3), -1, 1);
    double after[2][6];
    for (int fused = 0; fused < 2; fused++) {
        nb_rng_seed(&rng, 82);
        nb_params *ps = nb_params_new();
        nb_tensor *W = nb_params_add(ps, "W", nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(3, 2), -1, 1));
        nb_tensor *V = nb_params_add(ps, "V", nb_rand_uniform(NULL, &rng, NB_F64, NB_SHAPE(2, 1), -1, 1));
        nb_optimizer_opts o;
        nb_optimizer_defaults(&o, NB_OPT_SGD);
        o.lr = 0.5;
        nb_optimizer *opt = nb_optimizer_new(ps, &o);
        nb_tape *tp = nb_tape_new();
        for (nesting = BY_GRAD; nesting <= BY_BACKWARD; nesting++) {
            nb_tape_reset(tp);
            nb_params_zero_grad(ps);
            nb_tensor *h = nb_matmul(tp, X, W), *L = nb_sum(tp, nb_matmul(tp, sine(tp, h, true), V));
            assert_int_equal(fused ? nb_optimizer_backward_step(opt, L)
                                   : (nb_backward(L) == NB_OK ? nb_optimizer_step(opt) : NB_ERR_STATE),
                             NB_OK);
        }
        for (size_t i = 0; i < 6; i++) after[fused][i] = nb_get(W, i);
        nb_tape_free(tp);
        nb_optimizer_free(opt);
        nb_params_free(ps);
    }
    for (size_t i = 0; i < 6; i++) assert_close(after[1][i], after[0][i], 1e-14);
    nb_tensor_free(X);
}

/* ---------------------------------------------------------------- callbacks that reset their tape */

/* y = rsq(a) = a², whose callbacks (and a backward hook) can reset or free
 * their tape, then fill the arena with values that look like pointers.
 * Whatever call runs them, the reset is refused: the tape and its tensors
 * stay as they were, and the call fails naming the op and the callback.
 * (Before: a backward_graph resetting under nb_grad with create_graph, a
 * backward or a hook under nb_grad or nb_backward_html, used the rewound
 * arena as pointers and crashed; a describe under nb_dot_save returned
 * NB_OK; a free was a use after free.)  The reset may also come after a
 * pass inside the callback has run callbacks of its own. */
enum { NOWHERE, IN_FORWARD, IN_BACKWARD, IN_BACKWARD_AFTER_INNER, IN_GRAPH, IN_DESCRIBE, IN_HOOK };
static int reset_in, inner_depth;
static bool free_instead;
static void reset_here(nb_tape *tp) {
    if (free_instead)
        nb_tape_free(tp);
    else
        nb_tape_reset(tp);
    for (int k = 0; k < 64; k++) nb_full(tp, NB_F64, NB_SHAPE(64), 1e-300);
}
static const nb_op_def rsq;
static void rsq_forward(nb_op_call *c) {
    const double *a = nb_op_input_data(c, 0);
    double *y = nb_op_output_data(c);
    for (size_t i = 0; i < nb_op_size(c); i++) y[i] = a[i] * a[i];
    if (reset_in == IN_FORWARD) reset_here(nb_op_tape(c));
}
static void rsq_backward(nb_op_call *c) {
    nb_tape *tp = nb_op_tape(c);
    const double *a = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
    bool acc;
    double *ga = nb_op_grad_input(c, 0, &acc);
    for (size_t i = 0; ga && i < nb_op_size(c); i++) ga[i] = (acc ? ga[i] : 0) + 2 * a[i] * g[i];
    if (reset_in == IN_BACKWARD_AFTER_INNER && inner_depth == 0) { /* an inner pass through rsq's backward */
        inner_depth++;
        nb_tensor *x = nb_op_input(c, 0), *gx;
        bool was = nb_tape_set_grad_enabled(tp, true);
        nb_tensor *inner = nb_sum(tp, nb_op(tp, &rsq, &x, 1, NB_F64, nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0));
        nb_tape_set_grad_enabled(tp, was);
        nb_grad(inner, &x, 1, &gx, false);
        inner_depth--;
        reset_here(tp);
    }
    if (reset_in == IN_BACKWARD) reset_here(tp);
}
static void rsq_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    if (reset_in == IN_GRAPH) reset_here(tp);
    grad_in[0] = nb_mul(tp, G, nb_scale(tp, nb_op_input(c, 0), 2));
}
static void rsq_describe(const nb_op_call *c, char *buf, size_t size) {
    if (reset_in == IN_DESCRIBE) reset_here(nb_op_tape(c));
    snprintf(buf, size, "squares");
}
static const nb_op_def rsq = {.name = "rsq", .forward = rsq_forward, .backward = rsq_backward,
                              .backward_graph = rsq_graph, .describe = rsq_describe, .derivative = {"2a"},
                              .elementwise = true};
static void rsq_hook(nb_tape *tp, size_t entry, void *user) {
    (void)entry, (void)user;
    if (reset_in == IN_HOOK) reset_here(tp);
}

/* L = sum(rsq(sin x) ⊙ x): dL/dx = 2 sin x cos x · x + sin² x. */
static nb_tensor *rsq_loss(nb_tape *tp, nb_tensor *x) {
    nb_tensor *a = nb_sin(tp, x);
    return nb_sum(tp, nb_mul(tp, nb_op(tp, &rsq, &a, 1, NB_F64, NB_SHAPE(3), NULL, 0), x));
}

enum { BY_OP, BY_BACKWARD_CALL, BY_GRAD_CALL, BY_GRAD_GRAPH_CALL, BY_DOT_SAVE, BY_HTML, BY_FRAMES };
static nb_status run_call(int call, nb_tape *tp, nb_tensor *x, nb_tensor *L, const char *dir) {
    char path[128];
    nb_tensor *g;
    nb_status st;
    switch (call) {
    case BY_OP: return nb_tensor_status(rsq_loss(tp, x));
    case BY_BACKWARD_CALL: return nb_backward(L);
    case BY_GRAD_CALL: return nb_grad(L, &x, 1, &g, false);
    case BY_GRAD_GRAPH_CALL: return nb_grad(L, &x, 1, &g, true);
    case BY_DOT_SAVE:
        snprintf(path, sizeof path, "%s/graph.dot", dir);
        st = nb_dot_save(tp, path, NULL);
        unlink(path);
        return st;
    case BY_HTML:
        snprintf(path, sizeof path, "%s/page.html", dir);
        st = nb_backward_html(L, path, "reset", NULL);
        unlink(path);
        return st;
    default:
        st = nb_backward_frames(L, dir, NULL, NULL);
        for (int k = 0; k < 16; k++) {
            snprintf(path, sizeof path, "%s/frame_%03d.dot", dir, k);
            unlink(path);
        }
        return st;
    }
}

static void test_callbacks_may_not_reset_their_tape(void **state) {
    (void)state;
    const struct { int where, call; const char *says; } cases[] = {
        {IN_FORWARD, BY_OP, "rsq: its forward"},
        {IN_BACKWARD, BY_BACKWARD_CALL, "rsq: its backward"},
        {IN_BACKWARD, BY_GRAD_CALL, "rsq: its backward"},
        {IN_BACKWARD, BY_HTML, "rsq: its backward"},
        {IN_BACKWARD, BY_FRAMES, "rsq: its backward"},
        {IN_BACKWARD_AFTER_INNER, BY_BACKWARD_CALL, "rsq: its backward"},
        {IN_BACKWARD_AFTER_INNER, BY_GRAD_CALL, "rsq: its backward"},
        {IN_GRAPH, BY_GRAD_GRAPH_CALL, "rsq: its backward_graph"},
        {IN_DESCRIBE, BY_DOT_SAVE, "rsq: its describe"},
        {IN_DESCRIBE, BY_HTML, "rsq: its describe"},
        {IN_HOOK, BY_BACKWARD_CALL, "the backward hook"},
        {IN_HOOK, BY_GRAD_CALL, "the backward hook"},
    };
    char dir[] = "/tmp/nabla-reset-XXXXXX";
    assert_non_null(mkdtemp(dir));
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){0.5, -1, 2}));
    nb_requires_grad(x, true);
    double expect[3];
    for (size_t i = 0; i < 3; i++) {
        double v = nb_get(x, i);
        expect[i] = 2 * sin(v) * cos(v) * v + sin(v) * sin(v);
    }
    for (size_t k = 0; k < 2 * sizeof cases / sizeof *cases; k++) {
        int where = cases[k / 2].where, call = cases[k / 2].call;
        free_instead = k % 2;
        reset_in = NOWHERE;
        nb_tape *tp = nb_tape_new();
        nb_tape_set_backward_hook(tp, rsq_hook, NULL);
        nb_zero_grad(x);
        nb_tensor *L = rsq_loss(tp, x);
        assert_int_equal(nb_backward(L), NB_OK); /* x's gradient, which the calls must leave */
        double value = nb_item(L);
        size_t entries = nb_tape_size(tp);
        reset_in = where;
        assert_int_equal(run_call(call, tp, x, L, dir), NB_ERR_STATE);
        reset_in = NOWHERE;
        assert_message_has(nb_tape_error(tp), cases[k / 2].says, free_instead ? "nb_tape_free" : "nb_tape_reset",
                           "refused", "left as it was");
        assert_message_has(nb_last_error(), free_instead ? "nb_tape_free" : "nb_tape_reset", "refused");
        /* nothing was rewound: the tape's tensors live, with their values */
        assert_int_equal(nb_tensor_status(L), NB_OK);
        assert_close(nb_item(L), value, 0);
        if (call != BY_OP && call != BY_GRAD_GRAPH_CALL) /* (those two record ops that stay) */
            assert_int_equal(nb_tape_size(tp), entries);
        if (call != BY_OP && call != BY_BACKWARD_CALL) /* nb_grad and the films give the leaves back */
            for (size_t i = 0; i < 3; i++) assert_close(nb_grad_get(x, i), expect[i], 1e-14);
        /* after the call, the reset is the user's to make */
        nb_tape_reset(tp);
        assert_int_equal(nb_tape_status(tp), NB_OK);
        nb_tensor *g;
        assert_int_equal(nb_grad(rsq_loss(tp, x), &x, 1, &g, k % 4 < 2), NB_OK);
        for (size_t i = 0; i < 3; i++) assert_close(nb_get(g, i), expect[i], 1e-14);
        nb_tape_free(tp);
    }
    free_instead = false;
    nb_tensor_free(x);
    assert_int_equal(rmdir(dir), 0);
}

/* y = x whose backward also runs nb_backward(sum(x ⊙ x)) on its input, a
 * leaf: that adds 2x into x's own gradient, as backward() in a PyTorch
 * Function's backward adds into .grad.  Under nb_grad the leaves' buffers
 * hold nb_grad's partial gradients, set aside: nb_grad gave 8x instead of
 * 6x for L = sum(y ⊙ 3x) (the inner 2x mixed in), and x's own gradient lost
 * the 2x when nb_grad put it back. */
static void identity_forward(nb_op_call *c) {
    memcpy(nb_op_output_data(c), nb_op_input_data(c, 0), nb_op_size(c) * sizeof(double));
}
static void identity_backward(nb_op_call *c) {
    nb_tape *tp = nb_op_tape(c);
    nb_tensor *x = nb_op_input(c, 0);
    bool was = nb_tape_set_grad_enabled(tp, true);
    nb_status st = nb_backward(nb_sum(tp, nb_mul(tp, x, x)));
    nb_tape_set_grad_enabled(tp, was);
    if (st != NB_OK) nb_op_fail(c, st, "the inner pass failed: %s", nb_last_error());
    const double *g = nb_op_grad_output(c);
    bool acc;
    double *d = nb_op_grad_input(c, 0, &acc);
    for (size_t i = 0; d && i < nb_op_size(c); i++) d[i] = acc ? d[i] + g[i] : g[i];
}
static const nb_op_def identity_backward_inside = {.name = "identity_backward_inside", .forward = identity_forward,
                                                   .backward = identity_backward};

static void test_backward_inside_grad_adds_into_the_leaves(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){1, 2}));
    nb_requires_grad(x, true);
    nb_tensor *w = nb_from_f64(NULL, NB_SHAPE(2), ((double[]){5, 7})); /* a leaf the inner pass does not reach */
    nb_requires_grad(w, true);
    nb_backward(nb_sum(tp, nb_add(tp, x, w))); /* x and w start with gradient (1, 1) */
    nb_tape_reset(tp);
    nb_tensor *y = nb_op(tp, &identity_backward_inside, &x, 1, NB_F64, NB_SHAPE(2), NULL, 0);
    nb_tensor *L = nb_sum(tp, nb_mul(tp, nb_mul(tp, y, nb_scale(tp, x, 3)), w)); /* dL/dx = 6 x w */
    nb_tensor *g[2], *wrt[2] = {x, w};
    assert_int_equal(nb_grad(L, wrt, 2, g, false), NB_OK);
    assert_close(nb_get(g[0], 0), 30, 1e-12); /* 6 · 1 · 5 */
    assert_close(nb_get(g[0], 1), 84, 1e-12); /* 6 · 2 · 7 */
    assert_close(nb_get(g[1], 0), 3, 1e-12);  /* 3 x² */
    assert_close(nb_get(g[1], 1), 12, 1e-12);
    assert_close(nb_grad_get(x, 0), 1 + 2, 1e-12); /* its own, plus the inner pass's 2x */
    assert_close(nb_grad_get(x, 1), 1 + 4, 1e-12);
    assert_close(nb_grad_get(w, 0), 1, 1e-12);
    assert_close(nb_grad_get(w, 1), 1, 1e-12);
    /* The Jacobian of y ⊙ 3x ⊙ w runs two passes, each adding 2x */
    nb_tensor *J = nb_jacobian(nb_mul(tp, nb_mul(tp, y, nb_scale(tp, x, 3)), w), x);
    assert_ok(J);
    double want[4] = {30, 0, 0, 84};
    for (int i = 0; i < 4; i++) assert_close(nb_get(J, (size_t)i), want[i], 1e-12);
    assert_close(nb_grad_get(x, 0), 3 + 2 * 2, 1e-12);
    assert_close(nb_grad_get(x, 1), 5 + 2 * 4, 1e-12);
    /* and under nb_backward, as before: 6xw + 2x on top of what x had */
    assert_int_equal(nb_backward(L), NB_OK);
    assert_close(nb_grad_get(x, 0), 7 + 30 + 2, 1e-12);
    assert_close(nb_grad_get(x, 1), 13 + 84 + 4, 1e-12);
    nb_tensor_free(x);
    nb_tensor_free(w);
    nb_tape_free(tp);
}

/* nb_hvp and nb_jvp asked for in a no-grad region give the products, as
 * torch's autograd.functional.hvp and jvp do (they enable gradients for
 * their own passes); they gave zeros, the inner product g · v having been
 * recorded as a constant.  y = sum(x³) at (1, 2, 3): H v = 6 x v; z = sin x:
 * J t = cos(x) t.  The region stays a no-grad one. */
static void test_products_in_a_no_grad_region(void **state) {
    (void)state;
    nb_tape *tp = nb_tape_new();
    nb_tensor *x = nb_from_array(NULL, NB_F64, NB_SHAPE(3), ((double[]){1, 2, 3}));
    nb_requires_grad(x, true);
    nb_tensor *y = nb_sum(tp, nb_mul(tp, nb_square(tp, x), x)), *z = nb_sin(tp, x);
    nb_tensor *v = nb_from_array(tp, NB_F64, NB_SHAPE(3), ((double[]){1, -1, 0.5}));
    nb_tensor *hv = NULL, *jv = NULL;
    nb_tape_set_grad_enabled(tp, false);
    assert_int_equal(nb_hvp(y, &x, 1, &v, &hv), NB_OK);
    assert_int_equal(nb_jvp(z, &x, 1, &v, &jv), NB_OK);
    for (size_t i = 0; i < 3; i++) {
        assert_close(nb_get(hv, i), 6.0 * (double)(i + 1) * nb_get(v, i), 1e-12);
        assert_close(nb_get(jv, i), cos((double)(i + 1)) * nb_get(v, i), 1e-12);
    }
    assert_false(nb_tape_set_grad_enabled(tp, true));
    nb_tensor_free(x);
    nb_tape_free(tp);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passes_inside_passes),
        cmocka_unit_test(test_nested_pass_in_fused_sgd),
        cmocka_unit_test(test_callbacks_may_not_reset_their_tape),
        cmocka_unit_test(test_backward_inside_grad_adds_into_the_leaves),
        cmocka_unit_test(test_products_in_a_no_grad_region),
    };
    return cmocka_run_group_tests_name("passes inside passes", tests, NULL, NULL);
}
