/*
 * Functions users reach for: logsumexp, variance, max and min along an axis
 * (and their arg-indices), and the Huber and smooth-L1 losses (layer norm
 * and dropout, with kernels of their own, are in layer_norm.c and
 * dropout.c).
 *
 * This file is written with the public op interface (nabla.h and
 * nabla_op.h) alone, as a user's own op would be: each op is a static
 * nb_op_def with its forward and backward, checks its arguments with
 * nb_op_check / nb_op_error, and is recorded with nb_op.  Its parameters
 * (an axis, eps) travel in a small struct that nb_op copies to the tape.
 *
 * Reductions along an axis view the input as (outer, n, inner): the axis
 * has n elements, each at a stride of inner.
 */
#include "nabla_op.h"

#include <math.h>
#include <string.h>

/* The axis normalised (negative counts from the end) and the (outer, n,
 * inner) view around it; false, with the error recorded, if out of range. */
typedef struct {
    int axis;
    bool keepdims;
    size_t outer, n, inner;
    double extra; /* correction for var, eps for layer norm */
} axis_params;

static nb_tensor *axis_view(nb_tape *tp, const char *name, nb_tensor *x, int axis, axis_params *p, const char *file,
                            int line) {
    int nd = nb_tensor_ndim(x), ax = axis < 0 ? axis + nd : axis;
    if (ax < 0 || ax >= nd) {
        char s[128];
        return nb_op_error(tp, NB_ERR_ARG, file, line, "%s: axis %d is out of range for shape %s (%d dimensions)",
                           name, axis, nb_shape_string(x, s, sizeof s), nd);
    }
    p->axis = ax;
    p->outer = p->inner = 1;
    for (int d = 0; d < ax; d++) p->outer *= nb_tensor_dim(x, d);
    p->n = nb_tensor_dim(x, ax);
    for (int d = ax + 1; d < nd; d++) p->inner *= nb_tensor_dim(x, d);
    return NULL;
}

/* The shape of a reduction's result: x's without the axis, or with it as 1. */
static int reduced_shape(const nb_tensor *x, const axis_params *p, size_t *shape) {
    int nd = 0;
    for (int d = 0; d < nb_tensor_ndim(x); d++)
        if (d != p->axis)
            shape[nd++] = nb_tensor_dim(x, d);
        else if (p->keepdims)
            shape[nd++] = 1;
    return nd;
}

/* For the backward graphs (higher derivatives): the call's site, and a
 * reduced tensor with its axis put back (size 1), ready to broadcast. */
#define SITE_OF(c) nb_op_file(c), nb_op_line(c)
static nb_tensor *keep_axis(nb_tape *tp, nb_op_call *c, nb_tensor *t) {
    const axis_params *p = nb_op_params(c);
    return p->keepdims ? t : nb_unsqueeze_(tp, t, p->axis, SITE_OF(c));
}

/* A constant tensor of x's shape (no gradient) filled by the caller. */
static nb_tensor *constant_like(nb_tape *tp, nb_op_call *c, const nb_tensor *x) {
    return nb_full_(tp, nb_tensor_dtype(x), nb_tensor_ndim(x), nb_tensor_shape(x), 0, SITE_OF(c));
}

/* Records a reduction op along an axis after checking its input. */
static nb_tensor *reduce(nb_tape *tp, const nb_op_def *def, nb_tensor *x, int axis, bool keepdims, double extra,
                         const char *file, int line) {
    axis_params p = {.keepdims = keepdims, .extra = extra};
    nb_tensor *failed = nb_op_check(tp, def, &x, 1, file, line);
    if (!failed) failed = axis_view(tp, def->name, x, axis, &p, file, line);
    if (failed) return failed;
    size_t shape[NB_MAX_DIMS];
    int nd = reduced_shape(x, &p, shape);
    return nb_op_(tp, def, &x, 1, nb_tensor_dtype(x), nd, shape, &p, sizeof p, file, line);
}

/* ---------------------------------------------------------------- logsumexp */

/*   y = log sum_k e^{x_k} = m + log sum_k e^{x_k - m},  m = max_k x_k
 *   dy/dx_k = e^{x_k - y}  (the softmax)
 * The derivative is computed as written everywhere, as PyTorch does: a row
 * of all -inf (y = -inf) has no softmax (it would sum to 1, yet every term
 * is 0/0), so its gradient is NaN, which anomaly mode reports, not a 0 that
 * would pass unnoticed; a +inf gets NaN and the row's finite elements 0.
 * The backward graph's G e^{x - y} gives the same. */
static void logsumexp_forward(nb_op_call *c) {
    const axis_params *p = nb_op_params(c);
    // cppcheck-suppress invalidFunctionArg ; log(sum) with sum >= 1 (see below)
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *x = nb_op_input_data(c, 0);
        T *y = nb_op_output_data(c);
        for (size_t o = 0; o < p->outer; o++)
            for (size_t i = 0; i < p->inner; i++) {
                const T *row = x + o * p->n * p->inner + i;
                T m = row[0];
                for (size_t k = 1; k < p->n; k++) m = row[k * p->inner] > m ? row[k * p->inner] : m;
                if (isinf(m)) { /* all -inf: -inf; any +inf: +inf */
                    y[o * p->inner + i] = m;
                    continue;
                }
                T sum = 0;
                for (size_t k = 0; k < p->n; k++) sum += exp(row[k * p->inner] - m);
                y[o * p->inner + i] = m + log(sum); /* sum >= 1: the maximum's own term is e^0 */
            }
    });
}

static void logsumexp_backward(nb_op_call *c) {
    const axis_params *p = nb_op_params(c);
    bool acc;
    void *gx_ = nb_op_grad_input(c, 0, &acc);
    if (!gx_) return;
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *x = nb_op_input_data(c, 0), *y = nb_op_output_data(c), *g = nb_op_grad_output(c);
        T *gx = gx_;
        for (size_t o = 0; o < p->outer; o++)
            for (size_t k = 0; k < p->n; k++)
                for (size_t i = 0; i < p->inner; i++) {
                    size_t j = (o * p->n + k) * p->inner + i, r = o * p->inner + i;
                    T d = g[r] * exp(x[j] - y[r]);
                    gx[j] = acc ? gx[j] + d : d;
                }
    });
}

/* dL/dx = G e^{x - y}, G and y with the axis put back. */
static void logsumexp_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    nb_tensor *x = nb_op_input(c, 0), *y = keep_axis(tp, c, nb_op_output(c));
    grad_in[0] = nb_mul_(tp, keep_axis(tp, c, G), nb_exp_(tp, nb_sub_(tp, x, y, SITE_OF(c)), SITE_OF(c)), SITE_OF(c));
}

static const nb_op_def logsumexp_op = {.name = "logsumexp", .forward = logsumexp_forward,
                                       .backward = logsumexp_backward, .derivative = {"G · softmax(x)"}, .backward_graph = logsumexp_graph};

nb_tensor *nb_logsumexp_(nb_tape *tp, nb_tensor *x, int axis, bool keepdims, const char *file, int line) {
    return reduce(tp, &logsumexp_op, x, axis, keepdims, 0, file, line);
}

/* ---------------------------------------------------------------- variance */

/*   y = sum_k (x_k - μ)² / (n - c),  μ = mean_k x_k, c the correction
 *   dy/dx_k = 2 (x_k - μ) / (n - c)   (the terms through μ sum to zero) */
static void var_forward(nb_op_call *c) {
    const axis_params *p = nb_op_params(c);
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *x = nb_op_input_data(c, 0);
        T *y = nb_op_output_data(c);
        for (size_t o = 0; o < p->outer; o++)
            for (size_t i = 0; i < p->inner; i++) {
                const T *row = x + o * p->n * p->inner + i;
                double mean = 0, ss = 0;
                for (size_t k = 0; k < p->n; k++) mean += row[k * p->inner];
                mean /= (double)p->n;
                for (size_t k = 0; k < p->n; k++) ss += (row[k * p->inner] - mean) * (row[k * p->inner] - mean);
                y[o * p->inner + i] = (T)(ss / ((double)p->n - p->extra));
            }
    });
}

static void var_backward(nb_op_call *c) {
    const axis_params *p = nb_op_params(c);
    bool acc;
    void *gx_ = nb_op_grad_input(c, 0, &acc);
    if (!gx_) return;
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *x = nb_op_input_data(c, 0), *g = nb_op_grad_output(c);
        T *gx = gx_;
        for (size_t o = 0; o < p->outer; o++)
            for (size_t i = 0; i < p->inner; i++) {
                size_t base = o * p->n * p->inner + i;
                double mean = 0;
                for (size_t k = 0; k < p->n; k++) mean += x[base + k * p->inner];
                mean /= (double)p->n;
                T scale = (T)(2.0 / ((double)p->n - p->extra)) * g[o * p->inner + i];
                for (size_t k = 0; k < p->n; k++) {
                    size_t j = base + k * p->inner;
                    T d = scale * (T)(x[j] - mean);
                    gx[j] = acc ? gx[j] + d : d;
                }
            }
    });
}

/* dL/dx = G · 2 (x - mean)/(n - c), the mean as an op of x. */
static void var_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    const axis_params *p = nb_op_params(c);
    nb_tensor *x = nb_op_input(c, 0);
    nb_tensor *centred = nb_sub_(tp, x, nb_sum_axis_(tp, x, p->axis, true, true, SITE_OF(c)), SITE_OF(c));
    nb_tensor *d = nb_scale_(tp, centred, 2.0 / ((double)p->n - p->extra), SITE_OF(c));
    grad_in[0] = nb_mul_(tp, keep_axis(tp, c, G), d, SITE_OF(c));
}

static const nb_op_def var_op = {.name = "var", .forward = var_forward, .backward = var_backward,
                                 .derivative = {"G · 2(x − mean)/(n − c)"}, .backward_graph = var_graph};

nb_tensor *nb_var_axis_(nb_tape *tp, nb_tensor *x, int axis, bool keepdims, int correction, const char *file,
                        int line) {
    nb_tensor *failed = nb_op_check(tp, &var_op, &x, 1, file, line);
    if (failed) return failed;
    int nd = nb_tensor_ndim(x), ax = axis < 0 ? axis + nd : axis;
    /* A negative correction divides by more than n, as PyTorch allows. */
    if (ax >= 0 && ax < nd && correction >= 0 && (size_t)correction >= nb_tensor_dim(x, ax)) {
        char s[128];
        return nb_op_error(tp, NB_ERR_ARG, file, line,
                           "var: correction %d along axis %d of %s leaves no degrees of freedom (it must be "
                           "below the axis's %zu elements)",
                           correction, axis, nb_shape_string(x, s, sizeof s), nb_tensor_dim(x, ax));
    }
    return reduce(tp, &var_op, x, axis, keepdims, correction, file, line);
}

/* ---------------------------------------------------------------- max, min, argmax, argmin */

/* The position of the largest (or smallest) element of row (o, i): the
 * first one, and a NaN wins (as PyTorch's max, which propagates NaN). */
static size_t arg_extreme(const void *x, nb_dtype dt, const axis_params *p, size_t o, size_t i, bool larger) {
    size_t best = 0;
    NB_FOR_DTYPE(dt, {
        const T *row = (const T *)x + o * p->n * p->inner + i;
        for (size_t k = 1; k < p->n && row[best * p->inner] == row[best * p->inner]; k++) {
            T v = row[k * p->inner], b = row[best * p->inner];
            if (v != v || (larger ? v > b : v < b)) best = k;
        }
    });
    return best;
}

/* max/min keep each row's winning position for backward, which sends the
 * row's gradient there alone (ties: the first, as the index returned). */
static void extreme_forward(nb_op_call *c, bool larger) {
    const axis_params *p = nb_op_params(c);
    size_t *where = nb_op_save(c, p->outer * p->inner * sizeof *where);
    if (!where) return;
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *x = nb_op_input_data(c, 0);
        T *y = nb_op_output_data(c);
        for (size_t o = 0; o < p->outer; o++)
            for (size_t i = 0; i < p->inner; i++) {
                size_t k = arg_extreme(x, nb_tensor_dtype(nb_op_input(c, 0)), p, o, i, larger);
                where[o * p->inner + i] = k;
                y[o * p->inner + i] = x[(o * p->n + k) * p->inner + i];
            }
    });
}

static void max_forward(nb_op_call *c) { extreme_forward(c, true); }
static void min_forward(nb_op_call *c) { extreme_forward(c, false); }

static void extreme_backward(nb_op_call *c) {
    const axis_params *p = nb_op_params(c);
    const size_t *where = nb_op_saved(c);
    bool acc;
    void *gx_ = nb_op_grad_input(c, 0, &acc);
    if (!gx_) return;
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *g = nb_op_grad_output(c);
        T *gx = gx_;
        if (!acc) memset(gx, 0, nb_tensor_size(nb_op_input(c, 0)) * sizeof(T));
        for (size_t o = 0; o < p->outer; o++)
            for (size_t i = 0; i < p->inner; i++) {
                size_t r = o * p->inner + i;
                gx[(o * p->n + where[r]) * p->inner + i] += g[r];
            }
    });
}

/* G at the winning positions, chosen by a constant one-hot mask with where()
 * (not G times the mask: an inf in G would give 0 · inf = NaN where the
 * eager backward passes 0); the second derivative of max is 0 where it is
 * defined, as PyTorch takes it. */
static void extreme_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    const axis_params *p = nb_op_params(c);
    const size_t *where = nb_op_saved(c);
    nb_tensor *x = nb_op_input(c, 0), *mask = constant_like(tp, c, x);
    if (nb_tensor_status(mask) != NB_OK) return;
    for (size_t o = 0; o < p->outer; o++)
        for (size_t i = 0; i < p->inner; i++) nb_set(mask, (o * p->n + where[o * p->inner + i]) * p->inner + i, 1);
    nb_tensor *zero = nb_full_(tp, nb_tensor_dtype(G), 0, NULL, 0, SITE_OF(c));
    grad_in[0] = nb_where_(tp, mask, keep_axis(tp, c, G), zero, SITE_OF(c));
}

static const nb_op_def max_op = {.name = "max", .forward = max_forward, .backward = extreme_backward,
                                 .derivative = {"G at the arg-max, 0 elsewhere"}, .backward_graph = extreme_graph};
static const nb_op_def min_op = {.name = "min", .forward = min_forward, .backward = extreme_backward,
                                 .derivative = {"G at the arg-min, 0 elsewhere"}, .backward_graph = extreme_graph};

static void arg_forward(nb_op_call *c, bool larger) {
    const axis_params *p = nb_op_params(c);
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *x = nb_op_input_data(c, 0);
        T *y = nb_op_output_data(c);
        for (size_t o = 0; o < p->outer; o++)
            for (size_t i = 0; i < p->inner; i++) {
                y[o * p->inner + i] = (T)arg_extreme(x, nb_tensor_dtype(nb_op_input(c, 0)), p, o, i, larger);
            }
    });
}

static void argmax_forward(nb_op_call *c) { arg_forward(c, true); }
static void argmin_forward(nb_op_call *c) { arg_forward(c, false); }

/* No backward: an index is not a differentiable function of x. */
static const nb_op_def argmax_op = {.name = "argmax", .forward = argmax_forward};
static const nb_op_def argmin_op = {.name = "argmin", .forward = argmin_forward};

nb_tensor *nb_max_axis_(nb_tape *tp, nb_tensor *x, int axis, bool keepdims, bool arg, const char *file, int line) {
    return reduce(tp, arg ? &argmax_op : &max_op, x, axis, keepdims, 0, file, line);
}

nb_tensor *nb_min_axis_(nb_tape *tp, nb_tensor *x, int axis, bool keepdims, bool arg, const char *file, int line) {
    return reduce(tp, arg ? &argmin_op : &min_op, x, axis, keepdims, 0, file, line);
}

/* ---------------------------------------------------------------- Huber, smooth L1 */

/* Both are means over elements of a function h of d = pred - target, with
 * dL/dpred = h'(d)/N and dL/dtarget = -h'(d)/N:
 *   Huber(δ):      h = d²/2 for |d| <= δ, else δ(|d| - δ/2);  h' = d, or δ sign d
 *   smooth L1(β):  h = d²/(2β) for |d| < β, else |d| - β/2;   h' = d/β, or sign d
 * (smooth L1 is Huber divided by β; with β = 0 it is the L1 loss, |d|). */
typedef struct {
    double k;      /* δ or β */
    bool smooth;   /* smooth L1 rather than Huber */
} robust_params;

static double robust_h(const robust_params *p, double d, double *slope) {
    if (isnan(d)) { /* NaN in, NaN out, its slope too (as torch; the tests below would give 0) */
        *slope = d;
        return d;
    }
    double a = fabs(d), sign = d > 0 ? 1 : d < 0 ? -1 : 0;
    if (p->smooth) {
        if (a < p->k) {
            *slope = d / p->k;
            return d * d / (2 * p->k);
        }
        *slope = sign;
        return a - p->k / 2;
    }
    if (a <= p->k) {
        *slope = d;
        return d * d / 2;
    }
    *slope = p->k * sign;
    return p->k * (a - p->k / 2);
}

static void robust_forward(nb_op_call *c) {
    const robust_params *p = nb_op_params(c);
    size_t n = nb_tensor_size(nb_op_input(c, 0));
    double total = 0, slope;
    NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
        const T *pred = nb_op_input_data(c, 0), *target = nb_op_input_data(c, 1);
        for (size_t i = 0; i < n; i++) total += robust_h(p, (double)pred[i] - (double)target[i], &slope);
        *(T *)nb_op_output_data(c) = (T)(total / (double)n);
    });
}

static void robust_backward(nb_op_call *c) {
    const robust_params *p = nb_op_params(c);
    size_t n = nb_tensor_size(nb_op_input(c, 0));
    for (int which = 0; which < 2; which++) {
        bool acc;
        void *g_ = nb_op_grad_input(c, which, &acc);
        if (!g_) continue;
        NB_FOR_DTYPE(nb_tensor_dtype(nb_op_output(c)), {
            const T *pred = nb_op_input_data(c, 0), *target = nb_op_input_data(c, 1);
            T scale = *(const T *)nb_op_grad_output(c) / (T)n * (which ? -1 : 1), *g = g_;
            for (size_t i = 0; i < n; i++) {
                double slope;
                robust_h(p, (double)pred[i] - (double)target[i], &slope);
                T d = scale * (T)slope;
                g[i] = acc ? g[i] + d : d;
            }
        });
    }
}

/* h'(d) as ops of d = p - t: d (or d/β) where |d| is inside, a constant
 * δ sign d (or sign d) outside: h' = d · m + c, with the constants m = 1
 * (or 1/β) inside and 0 outside, c = 0 inside and h' outside.  1/β is
 * taken only inside, where β > |d| >= 0: smooth L1 with β = 0 (the L1
 * loss) has no inside, h' = sign d and h'' = 0 (scaling d by 1/β = inf and
 * masking it by 0 gave inf · 0 = NaN). */
static void robust_graph(nb_op_call *c, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = nb_op_tape(c);
    const robust_params *p = nb_op_params(c);
    nb_tensor *pred = nb_op_input(c, 0), *d = nb_sub_(tp, pred, nb_op_input(c, 1), SITE_OF(c));
    nb_tensor *inside = constant_like(tp, c, pred), *outside = constant_like(tp, c, pred);
    if (nb_tensor_status(inside) != NB_OK || nb_tensor_status(outside) != NB_OK) return;
    for (size_t i = 0; i < nb_tensor_size(pred); i++) {
        double slope, di = nb_get(pred, i) - nb_get(nb_op_input(c, 1), i); /* in double, as robust_backward */
        robust_h(p, di, &slope);
        bool in = p->smooth ? fabs(di) < p->k : fabs(di) <= p->k;
        nb_set(inside, i, !in ? 0 : p->smooth ? 1 / p->k : 1);
        nb_set(outside, i, in ? 0 : slope);
    }
    nb_tensor *h1 = nb_add_(tp, nb_mul_(tp, d, inside, SITE_OF(c)), outside, SITE_OF(c));
    nb_tensor *scaled = nb_mul_(tp, nb_scale_(tp, G, 1.0 / (double)nb_tensor_size(pred), SITE_OF(c)), h1, SITE_OF(c));
    if (nb_op_needs_grad(c, 0)) grad_in[0] = scaled;
    if (nb_op_needs_grad(c, 1)) grad_in[1] = nb_neg_(tp, scaled, SITE_OF(c));
}

static const nb_op_def huber_op = {.name = "huber", .forward = robust_forward, .backward = robust_backward,
                                   .derivative = {"G · h′(p−t)/N, h′ = d or δ sign d", "G · −h′(p−t)/N"}, .backward_graph = robust_graph};
static const nb_op_def smooth_l1_op = {.name = "smooth_l1", .forward = robust_forward, .backward = robust_backward,
                                       .derivative = {"G · h′(p−t)/N, h′ = d/β or sign d", "G · −h′(p−t)/N"}, .backward_graph = robust_graph};

static nb_tensor *robust_loss(nb_tape *tp, const nb_op_def *def, nb_tensor *pred, nb_tensor *target, double k,
                              const char *file, int line) {
    nb_tensor *in[2] = {pred, target};
    nb_tensor *failed = nb_op_check(tp, def, in, 2, file, line);
    if (failed) return failed;
    char sp[128], st[128];
    bool same = nb_tensor_ndim(pred) == nb_tensor_ndim(target);
    for (int d = 0; same && d < nb_tensor_ndim(pred); d++) same = nb_tensor_dim(pred, d) == nb_tensor_dim(target, d);
    if (!same)
        return nb_op_error(tp, NB_ERR_SHAPE, file, line, "%s: prediction %s and target %s must have the same shape",
                           def->name, nb_shape_string(pred, sp, sizeof sp), nb_shape_string(target, st, sizeof st));
    bool smooth = def == &smooth_l1_op;
    if (!(smooth ? k >= 0 : k > 0))
        return nb_op_error(tp, NB_ERR_ARG, file, line, "%s: %s = %g must be %s", def->name, smooth ? "beta" : "delta",
                           k, smooth ? ">= 0" : "> 0");
    robust_params p = {k, smooth};
    return nb_op_(tp, def, in, 2, nb_tensor_dtype(pred), 0, NULL, &p, sizeof p, file, line);
}

nb_tensor *nb_huber_(nb_tape *tp, nb_tensor *pred, nb_tensor *target, double delta, const char *file, int line) {
    return robust_loss(tp, &huber_op, pred, target, delta, file, line);
}

nb_tensor *nb_smooth_l1_(nb_tape *tp, nb_tensor *pred, nb_tensor *target, double beta, const char *file, int line) {
    return robust_loss(tp, &smooth_l1_op, pred, target, beta, file, line);
}
