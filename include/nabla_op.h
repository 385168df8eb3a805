/*
 * nabla's op interface: define a new op in C, with its forward and its
 * backward, and use it like a built-in one.
 *
 * An op is a static nb_op_def: a name, a forward that fills the output from
 * the inputs, a backward that adds dL/d input into each input's gradient
 * from dL/d output, and (for pictures) how the gradient reaches each input.
 * nb_op() records one call of it on a tape and runs the forward at once.
 * Everything built-in ops get, a custom op gets too: errors carrying the
 * caller's file and line, nb_gradcheck, the .dot pictures and the backward
 * stepper, anomaly mode, no-grad regions, nabla's threads (nb_parallel_for),
 * and memory from the tape's arena (no malloc per call once a loop is warm).
 * The built-in ops are nb_op_defs too (src/ops/); those in
 * src/ops/functions.c are written with this header alone, as a user would.
 *
 * A minimal op, y = softplus(x) = log(1 + e^x), dy/dx = sigmoid(x):
 *
 *   static void softplus_forward(nb_op_call *c) {
 *       const double *x = nb_op_input_data(c, 0);
 *       double *y = nb_op_output_data(c);
 *       for (size_t i = 0; i < nb_op_size(c); i++) y[i] = log1p(exp(-fabs(x[i]))) + fmax(x[i], 0);
 *   }
 *   static void softplus_backward(nb_op_call *c) {
 *       const double *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
 *       bool acc;
 *       double *gx = nb_op_grad_input(c, 0, &acc);
 *       if (!gx) return;                        // out of memory: the tape says so
 *       for (size_t i = 0; i < nb_op_size(c); i++) {
 *           double d = g[i] / (1 + exp(-x[i]));  // upstream x local derivative
 *           gx[i] = acc ? gx[i] + d : d;         // first write sets, later ones add
 *       }
 *   }
 *   static const nb_op_def softplus = {.name = "softplus", .forward = softplus_forward,
 *                                      .backward = softplus_backward,
 *                                      .derivative = {"σ(x)"}, .elementwise = true};
 *   ...
 *   nb_tensor *y = nb_op(tp, &softplus, &x, 1, NB_F64, nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0);
 *
 * (examples/custom_op.c is this op for both dtypes, checked against the same
 * function composed of built-in ops.)
 *
 * What the callbacks may do, as in a PyTorch Function:
 *  - Each gets a copy of the call, valid while it runs: keep what you need
 *    (nb_op_save), not the nb_op_call pointer.
 *  - forward and backward run with gradient recording off, and may record
 *    ops on the call's tape (nb_op_tape): a softmax from built-in ops, a
 *    recomputation.  Those ops are taken off the tape when the callback
 *    returns: their results keep their values until nb_tape_reset, but they
 *    are no part of the graph (backward does not go through them, pictures
 *    do not show them).  To differentiate what a callback records, turn
 *    recording on around it (nb_tape_set_grad_enabled(tp, true), then back).
 *  - backward may ask for gradients of its own on the same tape: nb_grad,
 *    nb_grad_seed (a vector-Jacobian product, as autograd.grad in a
 *    Function's backward), with or without create_graph, and nb_backward.
 *    The pass under way comes out as it was: its partial gradients, its
 *    explain-mode numbers, its hooks (not called for the inner pass).  An
 *    inner nb_backward adds into the leaves' gradients (as backward() does
 *    in PyTorch); the op results' gradients it computes are gone when it
 *    returns, so read those through nb_grad.  Inside
 *    nb_optimizer_backward_step with plain SGD, the rest of that pass
 *    computes ordinary gradients for the optimizer to apply.
 *  - No callback may reset or free the tape it runs on (nor may a backward
 *    hook): the call under way (nb_op, a backward pass, nb_grad, a
 *    picture) still uses the tape's memory.  nb_tape_reset and
 *    nb_tape_free called from inside one are refused: they do nothing, the
 *    tape is errored with NB_ERR_STATE naming the op and the callback, and
 *    that call returns the error (nb_op an errored tensor); reset the tape
 *    once it has returned.
 *  - A view recorded in a callback and kept shares its input's storage as
 *    any view does: a write through either is seen by the version check.
 */
#ifndef NABLA_OP_H
#define NABLA_OP_H

#include "nabla.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Runs the statements once with T bound to the C type of dtype dt (float
 * for NB_F32, double for NB_F64), so that a kernel is written once for both:
 *   NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
 *       const T *x = nb_op_input_data(c, 0);
 *       T *y = nb_op_output_data(c);
 *       for (size_t i = 0; i < nb_op_size(c); i++) y[i] = x[i] > 0 ? x[i] : 0;
 *   });
 * (with <tgmath.h>, exp() and the others pick the float or double function
 * from T).  The built-in ops use it too. */
#define NB_FOR_DTYPE(dt, ...)      \
    do {                           \
        if ((dt) == NB_F32) {      \
            typedef float T;       \
            __VA_ARGS__            \
        } else {                   \
            typedef double T;      \
            __VA_ARGS__            \
        }                          \
    } while (0)

/* One recorded call of an op: what the callbacks are given. */
typedef struct nb_op_call nb_op_call;

/* Formulas for pictures: derivative[i] describes input i; an input past the
 * last one given uses the last (ops with any number of inputs give one). */
#define NB_OP_FORMULAS 4

typedef struct nb_op_def {
    const char *name;
    /* Fills the output's values from the inputs' (and the parameters). */
    void (*forward)(nb_op_call *call);
    /* Adds dL/d input into each input that needs a gradient, from the
     * output's gradient: for input i, take the buffer from
     * nb_op_grad_input() and either set every element of it (accumulate
     * false: the first contribution this pass) or add to it (accumulate
     * true).  An input whose buffer it never takes gets nothing from this
     * op (a zero contribution, as a None from a PyTorch Function).  NULL:
     * no gradient flows through the op: its output requires none (an
     * argmax, a mask). */
    void (*backward)(nb_op_call *call);
    /* For pictures: for an element-wise op, the local derivative dy/dx_i
     * ("σ(x)(1−σ(x))"); for the others, the whole vector-Jacobian product
     * in terms of the upstream gradient G ("G · Bᵀ"). */
    const char *derivative[NB_OP_FORMULAS];
    /* Output element k depends on element k of each (same-shaped) input
     * alone: pictures then show the chain rule element by element. */
    bool elementwise;
    /* The output shares input 0's storage (a view): forward does nothing.
     * A write through either is seen by the other's version check.  Its
     * shape must hold exactly input 0's number of elements, in its dtype. */
    bool view;
    /* Higher-order derivatives (nb_grad with create_graph): builds, with
     * ordinary ops on the call's tape (recording on; they stay), the
     * tensors dL/d input i from the upstream gradient `grad` (a tensor of
     * the output's shape), storing them in grad_in[i] (NULL for no
     * gradient).  Each must have input i's shape and dtype and live on the
     * call's tape (or the heap): anything else is refused, naming the op,
     * and an errored one passes its error on.  Without backward_graph,
     * differentiating a backward through this op is refused with an error
     * naming it. */
    void (*backward_graph)(nb_op_call *call, nb_tensor *grad, nb_tensor **grad_in);
    /* For pictures: the call's parameters in a few words ("3×3, stride 2"),
     * written into buf (size bytes, NUL-terminated) and shown under the
     * op's name.  Optional. */
    void (*describe)(const nb_op_call *call, char *buf, size_t size);
} nb_op_def;

/* Records a call of `def` on inputs[0..n_inputs) (any number, of one dtype,
 * all on the tape or on the heap), with an output of the given dtype and
 * shape, and runs its forward.  params (params_bytes bytes, copied to the
 * tape) are what the op needs besides its inputs (an axis, a slope...).
 * Inputs are checked as for built-in ops (NULL, errored, stale, from another
 * tape, mixed dtypes); checking shapes is the op's own business, before the
 * call.  Returns the output, or an errored tensor (the tape keeps the
 * message, with the caller's file and line). */
#define nb_op(tp, def, inputs, n_inputs, dtype, ...) /* ndim, shape (or NB_SHAPE(...)), params, params_bytes */ \
    nb_op_(tp, def, inputs, n_inputs, dtype, __VA_ARGS__, NB_SITE)
nb_tensor *nb_op_(nb_tape *tp, const nb_op_def *def, nb_tensor *const *inputs, int n_inputs, nb_dtype dtype,
                  int ndim, const size_t *shape, const void *params, size_t params_bytes, const char *file,
                  int line);

/* Before nb_op, for the checks an op makes of its own (shapes, axes,
 * values): nb_op_check() checks inputs as nb_op would (NULL, errored,
 * stale, another tape, mixed dtypes) and returns NULL when all is well,
 * else the errored tensor to return; nb_op_error() records an error on the
 * tape, with the caller's file and line, and returns an errored tensor. */
nb_tensor *nb_op_check(nb_tape *tp, const nb_op_def *def, nb_tensor *const *inputs, int n_inputs,
                       const char *file, int line);
nb_tensor *nb_op_error(nb_tape *tp, nb_status status, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* ------------------------------------------------------------ in the callbacks */

int nb_op_inputs(const nb_op_call *call);
nb_tensor *nb_op_input(const nb_op_call *call, int i);
nb_tensor *nb_op_output(const nb_op_call *call);
nb_tape *nb_op_tape(const nb_op_call *call);
/* Where the op was called from (for ops built in backward_graph, so that
 * their errors name the user's line). */
const char *nb_op_file(const nb_op_call *call);
int nb_op_line(const nb_op_call *call);
/* Raw values (float* or double*, the op's dtype) and the output's size. */
const void *nb_op_input_data(const nb_op_call *call, int i);
void *nb_op_output_data(const nb_op_call *call);
size_t nb_op_size(const nb_op_call *call);
/* The parameters given to nb_op (NULL if none). */
const void *nb_op_params(const nb_op_call *call);
/* In forward: `bytes` of tape memory kept for backward (a mask, an index,
 * statistics); NULL (and the tape errored) if it cannot be had.  In
 * backward: nb_op_saved() gives the same memory. */
void *nb_op_save(nb_op_call *call, size_t bytes);
void *nb_op_saved(const nb_op_call *call);
/* In backward: dL/d output, of the output's dtype and size (NULL in the
 * other callbacks). */
const void *nb_op_grad_output(const nb_op_call *call);
/* Whether input i takes a gradient (it or something it depends on was
 * marked with nb_requires_grad). */
bool nb_op_needs_grad(const nb_op_call *call, int i);
/* In backward: the buffer dL/d input i goes into (the input's dtype and
 * size), and whether to add into it (*accumulate) or overwrite it.  One
 * tensor given as several inputs has one buffer: it comes zeroed, with
 * *accumulate true for each of them, so their parts add up in any order of
 * writing.  NULL
 * when input i needs no gradient or does not exist, outside backward, or
 * when memory ran out or accumulate is NULL (then the tape is errored and
 * the backward should return). */
void *nb_op_grad_input(nb_op_call *call, int i, bool *accumulate);
/* Reports an error from a callback: the tape keeps it (the first one
 * sticks), with the op's name and the caller's file and line. */
void nb_op_fail(nb_op_call *call, nb_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs fn(ctx, begin, end) over [0, n) in parts of at least `grain` items,
 * one per nabla thread (nb_set_threads), and returns when all are done; on
 * the calling thread alone with one thread.  Parts must not write to the
 * same memory; each element should be computed as it would be serially, so
 * that results do not depend on the thread count. */
void nb_parallel_for(size_t n, size_t grain, void (*fn)(void *ctx, size_t begin, size_t end), void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* NABLA_OP_H */
