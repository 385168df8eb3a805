/*
 * Ops that move values to new places: permute (and transpose, the permute
 * that swaps two axes), broadcast_to and pad.  Each output element is one
 * input element (or a zero, for pad), so each backward moves the upstream
 * gradient back to where the element came from:
 *
 *   permute:      y[i_0..i_n] = x[i at axes], y's axis d is x's axis p[d]
 *                 dL/dx = permute(dL/dy, p⁻¹)
 *   broadcast_to: y[i] = x[i with broadcast axes set to 0]
 *                 dL/dx = dL/dy summed over the broadcast axes
 *   pad:          y = x surrounded by zeros
 *                 dL/dx = the part of dL/dy where x was
 */
#include "../internal.h"

#include <string.h>

/* ---------------------------------------------------------------- permute */

/* Copies src (of shape src_shape) into dst permuted by p (dst's axis d is
 * src's axis p[d]), adding when accumulate is set.  The innermost loop runs
 * along dst's last axis, reading src with that axis's stride. */
#define PERMUTE(T, src, src_shape, dst, p, nd, accumulate)                                        \
    do {                                                                                          \
        size_t src_stride[NB_MAX_DIMS] = {0}, dshape[NB_MAX_DIMS] = {0}, stride[1][NB_MAX_DIMS] = {{0}}, total = 1; \
        size_t run_ = 1;                                                                          \
        for (int d = (nd)-1; d >= 0; d--) {                                                       \
            src_stride[d] = run_;                                                                 \
            run_ *= (src_shape)[d];                                                               \
        }                                                                                         \
        for (int d = 0; d < (nd); d++) {                                                          \
            dshape[d] = (src_shape)[(p)[d]];                                                      \
            stride[0][d] = src_stride[(p)[d]];                                                    \
            total *= dshape[d];                                                                   \
        }                                                                                         \
        size_t inner = (nd) ? dshape[(nd)-1] : 1, step = (nd) ? stride[0][(nd)-1] : 1;            \
        size_t idx[NB_MAX_DIMS] = {0}, off[1] = {0};                                              \
        int outer_nd = (nd) ? (nd)-1 : 0;                                                         \
        for (size_t o = 0; o < total; o += inner, nb_odometer_next(outer_nd, dshape, idx, 1, off, stride)) { \
            const T *s_ = (src) + off[0];                                                         \
            T *d_ = (dst) + o;                                                                    \
            for (size_t k = 0; k < inner; k++) d_[k] = (accumulate) ? d_[k] + s_[k * step] : s_[k * step]; \
        }                                                                                         \
    } while (0)

/* The entry keeps the permutation (nd ints) in its saved slot. */
static void permute_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    const int *p = e->saved;
    NB_DISPATCH(x->dtype, { PERMUTE(T, (const T *)x->data, x->shape, (T *)e->out->data, p, x->ndim, false); });
}

/* The inverse permutation applied to the upstream gradient. */
static void permute_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0];
    const int *p = e->saved;
    int inverse[NB_MAX_DIMS] = {0};
    for (int d = 0; d < x->ndim; d++) inverse[p[d]] = d;
    bool acc;
    void *gx = nb_grad_target(tp, x, &acc);
    if (!gx) return;
    NB_DISPATCH(x->dtype, {
        PERMUTE(T, (const T *)e->out->grad, e->out->shape, (T *)gx, inverse, x->ndim, acc);
    });
}

/* G permuted back (its own inverse for a transpose). */
static void permute_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    const int *p = e->saved;
    int inverse[NB_MAX_DIMS] = {0};
    for (int d = 0; d < e->in[0]->ndim; d++) inverse[p[d]] = d;
    grad_in[0] = nb_permute_(e->out->tape, G, inverse, e->file, e->line);
}

/* For the pictures: "axes (2, 0, 1)"; a transpose names the two axes it
 * swaps, unless it is a matrix's. */
static void permute_describe(const nb_op_call *e, char *buf, size_t size) {
    const int *p = e->saved;
    int nd = e->in[0]->ndim, n = 0;
    if (!strcmp(e->op->name, "transpose")) {
        if (nd <= 2) return;
        int first = -1, second = -1;
        for (int d = 0; d < nd; d++)
            if (p[d] != d) {
                if (first < 0) first = d;
                else second = d;
            }
        if (second >= 0) snprintf(buf, size, "axes %d ↔ %d", first, second);
        return;
    }
    n = snprintf(buf, size, "axes (");
    for (int d = 0; d < nd && n >= 0 && (size_t)n < size; d++)
        n += snprintf(buf + n, size - (size_t)n, d ? ", %d" : "%d", p[d]);
    if (n >= 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, ")");
}

static const nb_op permute_op = {.name = "permute", .forward = permute_forward, .backward = permute_backward,
                                 .derivative = {"G with the axes put back"}, .backward_graph = permute_graph,
                                 .describe = permute_describe};
static const nb_op transpose_op = {.name = "transpose", .forward = permute_forward, .backward = permute_backward,
                                   .derivative = {"Gᵀ"}, .backward_graph = permute_graph,
                                   .describe = permute_describe};

static nb_tensor *permuted(nb_tape *tp, const nb_op *op, nb_tensor *a, const int *p, const char *file, int line) {
    int *kept = nb_tape_alloc(tp, (size_t)(a->ndim ? a->ndim : 1) * sizeof *kept);
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", op->name);
    size_t shape[NB_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) {
        kept[d] = p[d];
        shape[d] = a->shape[p[d]];
    }
    nb_tensor *failed;
    nb_entry *e = nb_emit(tp, op, 1, &a, a->dtype, a->ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    return nb_run(e);
}

nb_tensor *nb_permute_(nb_tape *tp, nb_tensor *a, const int *axes, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &permute_op, file, line, 1, &a);
    if (failed) return failed;
    if (!axes && a->ndim) return nb_fail(tp, NB_ERR_NULL, file, line, "permute: the axes are NULL");
    int p[NB_MAX_DIMS] = {0};
    bool seen[NB_MAX_DIMS] = {false}, valid = true;
    for (int d = 0; d < a->ndim && valid; d++) {
        p[d] = nb_norm_axis(axes[d], a->ndim);
        valid = p[d] >= 0 && !seen[p[d]];
        if (valid) seen[p[d]] = true;
    }
    if (!valid) {
        char s[128], list[96];
        size_t used = 0;
        for (int d = 0; d < a->ndim && used < sizeof list; d++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%d", d ? ", " : "", axes[d]);
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "permute: axes (%s) are not a permutation of the %d axes of %s (each of 0 to %d once)",
                       list, a->ndim, nb_format_shape(a->ndim, a->shape, s, sizeof s), a->ndim - 1);
    }
    return permuted(tp, &permute_op, a, p, file, line);
}

nb_tensor *nb_transpose_(nb_tape *tp, nb_tensor *a, int axis0, int axis1, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &transpose_op, file, line, 1, &a);
    if (failed) return failed;
    int i = nb_norm_axis(axis0, a->ndim), j = nb_norm_axis(axis1, a->ndim);
    if (i < 0 || j < 0) {
        char s[128];
        return nb_fail(tp, NB_ERR_ARG, file, line, "transpose: axes %d and %d are not both in range for shape %s",
                       axis0, axis1, nb_format_shape(a->ndim, a->shape, s, sizeof s));
    }
    int p[NB_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) p[d] = d;
    p[i] = j;
    p[j] = i;
    return permuted(tp, &transpose_op, a, p, file, line);
}

/* ---------------------------------------------------------------- broadcast_to */

static void broadcast_to_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    size_t strides[1][NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0}, off[1] = {0};
    nb_broadcast_strides(x, e->out->ndim, strides[0]);
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        T *ys = e->out->data;
        for (size_t i = 0; i < e->out->size; i++, nb_odometer_next(e->out->ndim, e->out->shape, idx, 1, off, strides))
            ys[i] = xs[off[0]];
    });
}

static void broadcast_to_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    size_t strides[1][NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0}, off[1] = {0};
    nb_broadcast_strides(x, e->out->ndim, strides[0]);
    void *gx_ = nb_grad_target_zeroed(e->out->tape, x);
    if (!gx_) return;
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t i = 0; i < e->out->size; i++, nb_odometer_next(e->out->ndim, e->out->shape, idx, 1, off, strides))
            gx[off[0]] += gy[i];
    });
}

static void broadcast_to_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in);
static const nb_op broadcast_to_op = {.name = "broadcast_to", .forward = broadcast_to_forward,
                                      .backward = broadcast_to_backward,
                                      .derivative = {"G summed over the broadcast axes"},
                                      .backward_graph = broadcast_to_graph};

nb_tensor *nb_broadcast_to_(nb_tape *tp, nb_tensor *a, int ndim, const size_t *shape, const char *file,
                            int line) {
    nb_tensor *failed = nb_check(tp, &broadcast_to_op, file, line, 1, &a);
    if (failed) return failed;
    char sa[128], sb[128];
    if (ndim < a->ndim || ndim > NB_MAX_DIMS || (ndim && !shape))
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "broadcast_to: %s cannot take %d dimensions (%d to %d)",
                       nb_format_shape(a->ndim, a->shape, sa, sizeof sa), ndim, a->ndim, NB_MAX_DIMS);
    for (int d = 0; d < a->ndim; d++) {
        size_t have = a->shape[d], want = shape[ndim - a->ndim + d];
        if (have != want && have != 1)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "broadcast_to: %s does not broadcast to %s (aligned from the right, each size must "
                           "equal the target's or be 1)",
                           nb_format_shape(a->ndim, a->shape, sa, sizeof sa), nb_format_shape(ndim, shape, sb, sizeof sb));
    }
    nb_entry *e = nb_emit(tp, &broadcast_to_op, 1, &a, a->dtype, ndim, shape, file, line, &failed);
    return e ? nb_run(e) : failed;
}

/* ---------------------------------------------------------------- sum_to */

/* The adjoint of broadcast_to: y (of the target shape, aligned from the
 * right with x) holds the sums of x over the axes where the target has
 * size 1 or none.  dL/dx = broadcast_to(dL/dy, x's shape). */
static void sum_to_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    size_t strides[1][NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0}, off[1] = {0};
    nb_broadcast_strides(e->out, x->ndim, strides[0]);
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        T *ys = e->out->data;
        memset(ys, 0, e->out->size * sizeof(T));
        for (size_t i = 0; i < x->size; i++, nb_odometer_next(x->ndim, x->shape, idx, 1, off, strides)) ys[off[0]] += xs[i];
    });
}

static void sum_to_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    size_t strides[1][NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0}, off[1] = {0};
    nb_broadcast_strides(e->out, x->ndim, strides[0]);
    bool acc;
    void *gx_ = nb_grad_target(e->out->tape, x, &acc);
    if (!gx_) return;
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t i = 0; i < x->size; i++, nb_odometer_next(x->ndim, x->shape, idx, 1, off, strides))
            gx[i] = acc ? gx[i] + gy[off[0]] : gy[off[0]];
    });
}

static void sum_to_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_broadcast_to_(e->out->tape, G, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}

static void broadcast_to_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_sum_to_(e->out->tape, G, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}

static const nb_op sum_to_op = {.name = "sum_to", .forward = sum_to_forward, .backward = sum_to_backward,
                                .derivative = {"G spread over the summed axes"}, .backward_graph = sum_to_graph};

nb_tensor *nb_sum_to_(nb_tape *tp, nb_tensor *a, int ndim, const size_t *shape, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &sum_to_op, file, line, 1, &a);
    if (failed) return failed;
    char sa[128], sb[128];
    bool fits = ndim >= 0 && ndim <= a->ndim && (ndim == 0 || shape);
    for (int d = 0; fits && d < ndim; d++) {
        size_t want = shape[d], have = a->shape[a->ndim - ndim + d];
        fits = want == have || want == 1;
    }
    if (!fits)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "sum_to: %s cannot be summed to %s (the target, aligned from the right, must have each "
                       "size equal or 1)",
                       nb_format_shape(a->ndim, a->shape, sa, sizeof sa), nb_format_shape(ndim, shape, sb, sizeof sb));
    /* already the shape: nothing to sum */
    bool same = ndim == a->ndim;
    for (int d = 0; same && d < ndim; d++) same = shape[d] == a->shape[d];
    if (same) return a;
    nb_entry *e = nb_emit(tp, &sum_to_op, 1, &a, a->dtype, ndim, shape, file, line, &failed);
    return e ? nb_run(e) : failed;
}

/* ---------------------------------------------------------------- pad */

/* The entry keeps pads (2 ndim sizes) in its saved slot.  x's element at
 * index i sits at i + before in y, axis by axis. */
static size_t padded_offset(const nb_tensor *x, const nb_tensor *y, const size_t *pads, const size_t *idx) {
    size_t off = 0;
    for (int d = 0; d < x->ndim; d++) off = off * y->shape[d] + idx[d] + pads[2 * (size_t)d];
    return off;
}

static void pad_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    const size_t *pads = e->saved;
    size_t idx[NB_MAX_DIMS] = {0}, inner = x->ndim ? x->shape[x->ndim - 1] : 1;
    NB_DISPATCH(x->dtype, {
        const T *xs = x->data;
        T *ys = e->out->data;
        memset(ys, 0, e->out->size * sizeof(T));
        for (size_t i = 0; i < x->size; i += inner) { /* a row of x at a time */
            T *row = ys + padded_offset(x, e->out, pads, idx);
            memcpy(row, xs + i, inner * sizeof(T));
            for (int d = x->ndim - 2; d >= 0; d--) {
                if (++idx[d] < x->shape[d]) break;
                idx[d] = 0;
            }
        }
    });
}

static void pad_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    const size_t *pads = e->saved;
    bool acc;
    void *gx_ = nb_grad_target(e->out->tape, x, &acc);
    if (!gx_) return;
    size_t idx[NB_MAX_DIMS] = {0}, inner = x->ndim ? x->shape[x->ndim - 1] : 1;
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t i = 0; i < x->size; i += inner) {
            const T *row = gy + padded_offset(x, e->out, pads, idx);
            for (size_t k = 0; k < inner; k++) gx[i + k] = acc ? gx[i + k] + row[k] : row[k];
            for (int d = x->ndim - 2; d >= 0; d--) {
                if (++idx[d] < x->shape[d]) break;
                idx[d] = 0;
            }
        }
    });
}

/* The part of G where x was: take(G) at x's places in y. */
static void pad_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    const nb_tensor *x = e->in[0];
    size_t *from = nb_tape_alloc(tp, x->size * sizeof *from), idx[NB_MAX_DIMS] = {0};
    if (!from) {
        nb_set_error(tp, NB_ERR_NOMEM, e->file, e->line, "pad: out of memory for its backward graph");
        return;
    }
    for (size_t i = 0; i < x->size; i++) {
        from[i] = padded_offset(x, e->out, e->saved, idx);
        for (int d = x->ndim - 1; d >= 0; d--) {
            if (++idx[d] < x->shape[d]) break;
            idx[d] = 0;
        }
    }
    grad_in[0] = nb_take(tp, G, from, x->ndim, x->shape, e->file, e->line);
}

static const nb_op pad_op = {.name = "pad", .forward = pad_forward, .backward = pad_backward,
                             .derivative = {"G without the padding"}, .backward_graph = pad_graph};

nb_tensor *nb_pad_(nb_tape *tp, nb_tensor *a, const size_t *pads, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &pad_op, file, line, 1, &a);
    if (failed) return failed;
    if (!pads && a->ndim) return nb_fail(tp, NB_ERR_NULL, file, line, "pad: the pads are NULL");
    size_t shape[NB_MAX_DIMS];
    size_t *kept = nb_tape_alloc(tp, 2 * (size_t)(a->ndim ? a->ndim : 1) * sizeof *kept);
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "pad: out of memory");
    for (int d = 0; d < a->ndim; d++) {
        size_t before = 2 * (size_t)d, after = before + 1;
        kept[before] = pads[before];
        kept[after] = pads[after];
        if (__builtin_add_overflow(a->shape[d], pads[before], &shape[d]) ||
            __builtin_add_overflow(shape[d], pads[after], &shape[d])) {
            char s[128];
            return nb_fail(tp, NB_ERR_SHAPE, file, line, "pad: padding axis %d of %s by %zu and %zu overflows", d,
                           nb_format_shape(a->ndim, a->shape, s, sizeof s), pads[before], pads[after]);
        }
    }
    nb_entry *e = nb_emit(tp, &pad_op, 1, &a, a->dtype, a->ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    return nb_run(e);
}
