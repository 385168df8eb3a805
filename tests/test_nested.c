/*
 * Passes inside passes: a custom op's backward that asks for a gradient of
 * its own on the same tape (nb_grad_seed for a vector-Jacobian product, as
 * a PyTorch Function's backward may call autograd.grad; with create_graph;
 * nb_backward), a backward hook that calls nb_grad, in explain mode, in a
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passes_inside_passes),
        cmocka_unit_test(test_nested_pass_in_fused_sgd),
    };
    return cmocka_run_group_tests_name("passes inside passes", tests, NULL, NULL);
}
