/*
 * SiLU, y = x σ(x), as a custom op written twice with nabla_op.h:
 *
 *   silu_plain_op   the way a first op is written: a serial loop over the
 *                   elements with libm's expf / exp;
 *   silu_kernel_op  with include/nabla_kernel.h: NB_KERNEL (the built-in
 *                   kernels' vectorising clones), nb_kernel_for (their
 *                   split over nabla's threads) and NB_EXP (a float32 exp
 *                   the compiler vectorises).
 *
 * Both compute what x · sigmoid(x) from the built-in ops computes, in the
 * same order of operations, so the kernel version gives those ops' bits
 * (the plain one differs by libm's rounding of the exp):
 *   y     = x · s,   s = 1 / (1 + e^-x)
 *   dL/dx = g · s + (g · x) · (s (1 - s))        (g = dL/dy)
 * the second term being what sigmoid's backward adds to mul's:
 * dy/dx = s + x s (1 - s).
 * Used by examples/custom_kernel.c, tests/test_custom_op.c and
 * bench/bench_custom_op.c.
 */
#ifndef NABLA_EXAMPLE_SILU_OP_H
#define NABLA_EXAMPLE_SILU_OP_H

#include "nabla_kernel.h"

#include <math.h>

/* ---------------------------------------------------------------- plainly */

static void silu_plain_forward(nb_op_call *c) {
    size_t n = nb_op_size(c);
    if (nb_tensor_dtype(nb_op_output(c)) == NB_F32) {
        const float *x = nb_op_input_data(c, 0);
        float *y = nb_op_output_data(c);
        for (size_t i = 0; i < n; i++) y[i] = x[i] * (1 / (1 + expf(-x[i])));
    } else {
        const double *x = nb_op_input_data(c, 0);
        double *y = nb_op_output_data(c);
        for (size_t i = 0; i < n; i++) y[i] = x[i] * (1 / (1 + exp(-x[i])));
    }
}

static void silu_plain_backward(nb_op_call *c) {
    bool acc;
    void *gx_ = nb_op_grad_input(c, 0, &acc);
    if (!gx_) return;
    size_t n = nb_op_size(c);
    if (nb_tensor_dtype(nb_op_output(c)) == NB_F32) {
        const float *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
        float *gx = gx_;
        for (size_t i = 0; i < n; i++) {
            float s = 1 / (1 + expf(-x[i])), d = g[i] * s + (g[i] * x[i]) * (s * (1 - s));
            gx[i] = acc ? gx[i] + d : d;
        }
    } else {
        const double *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
        double *gx = gx_;
        for (size_t i = 0; i < n; i++) {
            double s = 1 / (1 + exp(-x[i])), d = g[i] * s + (g[i] * x[i]) * (s * (1 - s));
            gx[i] = acc ? gx[i] + d : d;
        }
    }
}

static const nb_op_def silu_plain_op = {.name = "silu", .forward = silu_plain_forward,
                                        .backward = silu_plain_backward,
                                        .derivative = {"σ(x)(1 + x(1−σ(x)))"}, .elementwise = true};

/* ---------------------------------------------------------------- as the built-ins are */

/* What a range needs: the pointers, read once outside the loops (with them
 * in plain locals the compiler can vectorise).  The forward keeps s = σ(x)
 * for the backward, as the built-in sigmoid keeps its output: reading it
 * back is cheaper than a second exp (in float64 libm's exp is a call per
 * element; in float32 NB_EXP is cheap, but reading s still wins while the
 * tensors fit in cache). */
typedef struct {
    const void *x, *g;
    void *out, *s;
    bool acc;
    nb_dtype dt;
} silu_args;

NB_KERNEL static void silu_forward_range(void *ctx, size_t begin, size_t end) {
    const silu_args *a = ctx;
    NB_FOR_DTYPE(a->dt, {
        const T *restrict x = a->x;
        T *restrict y = a->out, *restrict s = a->s;
        for (size_t i = begin; i < end; i++) {
            s[i] = 1 / (1 + NB_EXP(-x[i]));
            y[i] = x[i] * s[i];
        }
    });
}

/* Two loops (set, add), not a choice per element: each vectorises. */
NB_KERNEL static void silu_backward_range(void *ctx, size_t begin, size_t end) {
    const silu_args *a = ctx;
    NB_FOR_DTYPE(a->dt, {
        const T *restrict x = a->x, *restrict g = a->g, *restrict s = a->s;
        T *restrict gx = a->out;
        if (a->acc)
            for (size_t i = begin; i < end; i++) gx[i] += g[i] * s[i] + (g[i] * x[i]) * (s[i] * (1 - s[i]));
        else
            for (size_t i = begin; i < end; i++) gx[i] = g[i] * s[i] + (g[i] * x[i]) * (s[i] * (1 - s[i]));
    });
}

static void silu_kernel_forward(nb_op_call *c) {
    silu_args a = {.x = nb_op_input_data(c, 0), .out = nb_op_output_data(c),
                   .dt = nb_tensor_dtype(nb_op_output(c))};
    size_t bytes = nb_op_size(c) * (a.dt == NB_F32 ? sizeof(float) : sizeof(double));
    if (!(a.s = nb_op_save(c, bytes))) return; /* out of memory: the tape says so */
    nb_kernel_for(nb_op_size(c), silu_forward_range, &a);
}

static void silu_kernel_backward(nb_op_call *c) {
    silu_args a = {.x = nb_op_input_data(c, 0), .g = nb_op_grad_output(c), .s = nb_op_saved(c),
                   .dt = nb_tensor_dtype(nb_op_output(c))};
    if (!(a.out = nb_op_grad_input(c, 0, &a.acc))) return;
    nb_kernel_for(nb_op_size(c), silu_backward_range, &a);
}

static const nb_op_def silu_kernel_op = {.name = "silu", .forward = silu_kernel_forward,
                                         .backward = silu_kernel_backward,
                                         .derivative = {"σ(x)(1 + x(1−σ(x)))"}, .elementwise = true};

/* y = silu(x) with one of the two definitions. */
static inline nb_tensor *silu_with(nb_tape *tp, const nb_op_def *def, nb_tensor *x) {
    return nb_op(tp, def, &x, 1, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x), NULL, 0);
}

#endif
