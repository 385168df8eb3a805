/* Ops of the fuzzer's own, through nabla_op.h, written as a user would and
 * used in the ways issue 19 found broken:
 *   - fz_view: a view with any number of inputs (the source is input 0)
 *     and a shape the fuzzer picks, overflowing products included;
 *   - fz_cube: y = x³ whose forward records ops on its call's tape (up to
 *     a few hundred, so that the tape's arrays grow under the call) and
 *     whose backward computes dL/dx = 3x²·G either directly or as a
 *     vector-Jacobian product, nb_grad_seed on ops it records on the same
 *     tape (as a PyTorch Function may call autograd.grad);
 * both with a backward_graph, so nb_grad with create_graph goes through. */
#ifndef FUZZ_CUSTOM_OPS_H
#define FUZZ_CUSTOM_OPS_H

#include "nabla_op.h"

/* ---------------------------------------------------------------- fz_view */

/* y is x's storage under another shape: dL/dx = dL/dy, element by element. */
static void fz_view_backward(nb_op_call *c) {
    bool acc;
    void *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    size_t n = nb_op_size(c);
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *g = nb_op_grad_output(c);
        T *d = gx;
        for (size_t i = 0; i < n; i++) d[i] = acc ? d[i] + g[i] : g[i];
    });
}

static void fz_view_backward_graph(nb_op_call *c, nb_tensor *grad, nb_tensor **grad_in) {
    nb_tensor *x = nb_op_input(c, 0);
    long shape[8];
    int nd = nb_tensor_ndim(x);
    for (int d = 0; d < nd && d < 8; d++) shape[d] = (long)nb_tensor_dim(x, d);
    grad_in[0] = nb_reshape_(nb_op_tape(c), grad, nd, shape, nb_op_file(c), nb_op_line(c));
    for (int i = 1; i < nb_op_inputs(c); i++) grad_in[i] = NULL;
}

static const nb_op_def fz_view = {.name = "fz_view", .backward = fz_view_backward,
                                  .backward_graph = fz_view_backward_graph, .derivative = {"G"},
                                  .view = true};

/* ---------------------------------------------------------------- fz_cube */

typedef struct {
    int forward_ops;  /* ops the forward records on the call's tape */
    bool inner_grad;  /* backward by nb_grad_seed on recorded ops */
} fz_cube_params;

static void fz_cube_forward(nb_op_call *c) {
    const fz_cube_params *p = nb_op_params(c);
    nb_tape *tp = nb_op_tape(c);
    nb_tensor *x = nb_op_input(c, 0), *t = x;
    for (int i = 0; i < p->forward_ops; i++) t = nb_add_scalar(tp, t, 0.5); /* taken off the tape after */
    (void)t;
    size_t n = nb_op_size(c);
    NB_FOR_DTYPE(nb_tensor_dtype(x), {
        const T *xv = nb_op_input_data(c, 0);
        T *y = nb_op_output_data(c);
        for (size_t i = 0; i < n; i++) y[i] = xv[i] * xv[i] * xv[i];
    });
}

/* dL/dx = 3x²·G.  The inner way records u = x·x·x on the tape with
 * recording on and asks nb_grad_seed for Gᵀ du/dx: the same numbers. */
static void fz_cube_backward(nb_op_call *c) {
    const fz_cube_params *p = nb_op_params(c);
    nb_tensor *x = nb_op_input(c, 0);
    size_t n = nb_op_size(c);
    bool acc;
    void *gx = nb_op_grad_input(c, 0, &acc);
    if (!gx) return;
    nb_tensor *inner = NULL;
    if (p->inner_grad) {
        nb_tape *tp = nb_op_tape(c);
        nb_tensor *seed = nb_empty(tp, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x));
        if (nb_tensor_status(seed) != NB_OK) return;
        NB_FOR_DTYPE(nb_tensor_dtype(x), {
            const T *g = nb_op_grad_output(c);
            for (size_t i = 0; i < n; i++) nb_set(seed, i, g[i]);
        });
        bool was = nb_tape_set_grad_enabled(tp, true);
        nb_tensor *u = nb_mul(tp, nb_mul(tp, x, x), x);
        nb_status s = nb_grad_seed(u, seed, &x, 1, &inner, false);
        nb_tape_set_grad_enabled(tp, was);
        if (s != NB_OK) {
            nb_op_fail(c, s, "the inner nb_grad_seed failed: %s", nb_last_error());
            return;
        }
    }
    NB_FOR_DTYPE(nb_tensor_dtype(x), {
        const T *xv = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
        T *d = gx;
        for (size_t i = 0; i < n; i++) {
            T v = inner ? (T)nb_get(inner, i) : 3 * xv[i] * xv[i] * g[i];
            d[i] = acc ? d[i] + v : v;
        }
    });
}

static void fz_cube_backward_graph(nb_op_call *c, nb_tensor *grad, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    nb_tensor *x = nb_op_input(c, 0);
    grad_in[0] = nb_mul(tp, grad, nb_scale(tp, nb_square(tp, x), 3));
}

static const nb_op_def fz_cube = {.name = "fz_cube", .forward = fz_cube_forward, .backward = fz_cube_backward,
                                  .backward_graph = fz_cube_backward_graph, .derivative = {"3x²"},
                                  .elementwise = true};

#endif
