/*
 * Ops that move or relabel values: reshape, transpose, detach, cast.
 *
 * reshape and detach are views: the result shares the input's storage.
 * Their gradients do not (each tensor has its own gradient buffer).
 *   reshape:    y = x with another shape;  dL/dx = dL/dy read in x's shape
 *   transpose:  y[.., j, .., i, ..] = x[.., i, .., j, ..];  dL/dx = transpose(dL/dy)
 *   detach:     y = x, but no gradient flows back
 *   cast:       y = x in another dtype;  dL/dx = dL/dy converted back
 */
#include "../internal.h"

#include <string.h>

/* ---------------------------------------------------------------- reshape */

static void reshape_forward(const nb_entry *e) { (void)e; /* shares storage */ }

/* Same layout, so the gradient passes through unchanged. */
static void copy_grad_backward(nb_tape *tp, const nb_entry *e) {
    nb_tensor *x = e->in[0];
    if (nb_grad_share(tp, x, e->out)) return;
    bool acc;
    void *gx_ = nb_grad_target(tp, x, &acc);
    if (!gx_) return;
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t i = 0; i < x->size; i++) gx[i] = acc ? gx[i] + gy[i] : gy[i];
    });
}

static const nb_op reshape_op = {.name = "reshape", .forward = reshape_forward, .backward = copy_grad_backward,
    .derivative = {"1"}, .elementwise = true, .view = true};

nb_tensor *nb_reshape_(nb_tape *tp, nb_tensor *a, int ndim, const long *shape,
                       const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &reshape_op, file, line, 1, &a);
    if (failed) return failed;
    char sa[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    if (ndim < 0 || ndim > NB_MAX_DIMS || (ndim > 0 && !shape))
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "reshape: %d dimensions requested for %s (allowed: 0 to %d)", ndim, sa,
                       NB_MAX_DIMS);
    size_t new_shape[NB_MAX_DIMS], known = 1;
    int infer = -1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == -1 && infer < 0) {
            infer = d;
            continue;
        }
        if (shape[d] <= 0)
            return nb_fail(tp, NB_ERR_ARG, file, line,
                           "reshape: size %ld at axis %d is invalid (sizes are positive; one "
                           "may be -1)",
                           shape[d], d);
        new_shape[d] = (size_t)shape[d];
        if (__builtin_mul_overflow(known, new_shape[d], &known)) {
            char asked[256];
            size_t used = 0;
            for (int k = 0; k < ndim && used < sizeof asked; k++)
                used += (size_t)snprintf(asked + used, sizeof asked - used, "%s%ld", k ? ", " : "(", shape[k]);
            if (used < sizeof asked) snprintf(asked + used, sizeof asked - used, ")");
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "reshape: the new shape %s for %s has more elements than memory can address", asked, sa);
        }
    }
    if (infer >= 0) {
        if (known == 0 || a->size % known)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "reshape: cannot infer axis %d: %zu elements of %s are not a "
                           "multiple of %zu",
                           infer, a->size, sa, known);
        new_shape[infer] = a->size / known;
        known = a->size;
    }
    if (known != a->size) {
        char sb[128];
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "reshape: %s has %zu elements, the new shape %s has %zu", sa, a->size,
                       nb_format_shape(ndim, new_shape, sb, sizeof sb), known);
    }
    nb_tensor *out = nb_result_view(tp, a, ndim, new_shape, "reshape", file, line);
    if (out->status != NB_OK) return out;
    nb_entry *e = nb_record(tp, &reshape_op, out, 1, &a, file, line);
    return e ? nb_run(e) : nb_nil(NB_ERR_NOMEM);
}

/* ---------------------------------------------------------------- detach */

static const nb_op detach_op = {.name = "detach", .forward = reshape_forward, .backward = NULL,
    .derivative = {"0 (detached)"}, .elementwise = false, .view = true};

nb_tensor *nb_detach_(nb_tape *tp, nb_tensor *a, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &detach_op, file, line, 1, &a);
    if (failed) return failed;
    nb_tensor *out = nb_result_view(tp, a, a->ndim, a->shape, "detach", file, line);
    if (out->status != NB_OK) return out;
    nb_entry *e = nb_record(tp, &detach_op, out, 1, &a, file, line);
    if (!e) return nb_nil(NB_ERR_NOMEM);
    out->requires_grad = false; /* the point of detach */
    return out;
}

/* ---------------------------------------------------------------- transpose */

/* Copies src (shape `shape`) into dst with axes i and j swapped, adding into
 * dst when accumulate is set.  Works on any number of dimensions by viewing
 * the tensor as (A, n_i, B, n_j, C). */
#define SWAP_AXES(T, src, dst, shape, ndim, i, j, accumulate)                              \
    do {                                                                                    \
        size_t A = 1, B = 1, C = 1, ni = (shape)[i], nj = (i) == (j) ? 1 : (shape)[j];                     \
        for (int d = 0; d < (i); d++) A *= (shape)[d];                                      \
        for (int d = (i) + 1; d < (j); d++) B *= (shape)[d];                                \
        for (int d = (j) + 1; d < (ndim); d++) C *= (shape)[d];                             \
        for (size_t a = 0; a < A; a++)                                                      \
            for (size_t p = 0; p < ni; p++)                                                 \
                for (size_t b = 0; b < B; b++)                                              \
                    for (size_t q = 0; q < nj; q++) {                                       \
                        const T *s = (src) + (((a * ni + p) * B + b) * nj + q) * C;         \
                        T *t = (dst) + (((a * nj + q) * B + b) * ni + p) * C;               \
                        for (size_t c = 0; c < C; c++) t[c] = (accumulate) ? t[c] + s[c] : s[c]; \
                    }                                                                       \
    } while (0)

static void transpose_forward(const nb_entry *e) {
    const nb_tensor *x = e->in[0];
    NB_DISPATCH(x->dtype, {
        SWAP_AXES(T, (const T *)x->data, (T *)e->out->data, x->shape, x->ndim, e->axis,
                  (int)e->scalar, false);
    });
}

/* The gradient of a swap is the same swap applied to the upstream gradient. */
static void transpose_backward(nb_tape *tp, const nb_entry *e) {
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx = nb_grad_target(tp, x, &acc);
    if (!gx) return;
    NB_DISPATCH(x->dtype, {
        SWAP_AXES(T, (const T *)e->out->grad, (T *)gx, e->out->shape, x->ndim, e->axis,
                  (int)e->scalar, acc);
    });
}

static const nb_op transpose_op = {.name = "transpose", .forward = transpose_forward, .backward = transpose_backward,
    .derivative = {"Gᵀ"}, .elementwise = false};

nb_tensor *nb_transpose_(nb_tape *tp, nb_tensor *a, int axis0, int axis1, const char *file,
                         int line) {
    nb_tensor *failed = nb_check(tp, &transpose_op, file, line, 1, &a);
    if (failed) return failed;
    int i = nb_norm_axis(axis0, a->ndim), j = nb_norm_axis(axis1, a->ndim);
    if (i < 0 || j < 0) {
        char s[128];
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "transpose: axes %d and %d are not both in range for shape %s", axis0,
                       axis1, nb_format_shape(a->ndim, a->shape, s, sizeof s));
    }
    if (i > j) {
        int t = i;
        i = j;
        j = t;
    }
    size_t shape[NB_MAX_DIMS];
    memcpy(shape, a->shape, (size_t)a->ndim * sizeof *shape);
    shape[i] = a->shape[j];
    shape[j] = a->shape[i];
    nb_entry *e = nb_emit(tp, &transpose_op, 1, &a, a->dtype, a->ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->axis = i;
    e->scalar = j; /* the second axis */
    return nb_run(e);
}

/* ---------------------------------------------------------------- cast */

static void convert(const void *src, nb_dtype from, void *dst, nb_dtype to, size_t n,
                    bool accumulate) {
    for (size_t k = 0; k < n; k++) {
        double v = from == NB_F32 ? (double)((const float *)src)[k] : ((const double *)src)[k];
        if (to == NB_F32) {
            float *d = dst;
            d[k] = accumulate ? d[k] + (float)v : (float)v;
        } else {
            double *d = dst;
            d[k] = accumulate ? d[k] + v : v;
        }
    }
}

static void cast_forward(const nb_entry *e) {
    convert(e->in[0]->data, e->in[0]->dtype, e->out->data, e->out->dtype, e->out->size, false);
}

static void cast_backward(nb_tape *tp, const nb_entry *e) {
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx = nb_grad_target(tp, x, &acc);
    if (gx) convert(e->out->grad, e->out->dtype, gx, x->dtype, x->size, acc);
}

static const nb_op cast_op = {.name = "cast", .forward = cast_forward, .backward = cast_backward,
    .derivative = {"1"}, .elementwise = true};

nb_tensor *nb_cast_(nb_tape *tp, nb_tensor *a, nb_dtype dt, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &cast_op, file, line, 1, &a);
    if (failed) return failed;
    if (dt != NB_F32 && dt != NB_F64)
        return nb_fail(tp, NB_ERR_ARG, file, line, "cast: unknown dtype %d", (int)dt);
    nb_entry *e = nb_emit(tp, &cast_op, 1, &a, dt, a->ndim, a->shape, file, line, &failed);
    return e ? nb_run(e) : failed;
}
