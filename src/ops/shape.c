/*
 * Ops that relabel values: reshape, squeeze, unsqueeze, detach, cast.
 *
 * reshape, squeeze, unsqueeze and detach are views: the result shares the
 * input's storage.  Their gradients do not (each tensor has its own
 * gradient buffer).
 *   reshape:    y = x with another shape;  dL/dx = dL/dy read in x's shape
 *   squeeze, unsqueeze: reshapes that remove or insert one size-1 axis
 *   detach:     y = x, but no gradient flows back
 *   cast:       y = x in another dtype;  dL/dx = dL/dy converted back
 * (permute and transpose, which move values, are in layout.c.)
 */
#include "../internal.h"

#include <string.h>

/* ---------------------------------------------------------------- reshape */

static void reshape_forward(nb_entry *e) { (void)e; /* shares storage */ }

/* Same layout, so the gradient passes through unchanged. */
static void copy_grad_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
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

/* The backward graph of the views: G read in x's shape (a reshape). */
static void reshape_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    nb_tensor *x = e->in[0];
    long dims[NB_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) dims[d] = (long)x->shape[d];
    grad_in[0] = nb_reshape_(e->out->tape, G, x->ndim, dims, e->file, e->line);
}

static const nb_op reshape_op = {.name = "reshape", .forward = reshape_forward, .backward = copy_grad_backward,
    .derivative = {"1"}, .elementwise = true, .view = true, .backward_graph = reshape_graph};

/* Records op as a view of a with the given shape. */
static nb_tensor *view_as(nb_tape *tp, const nb_op *op, nb_tensor *a, int ndim, const size_t *shape, const char *file,
                          int line) {
    nb_tensor *out = nb_result_view(tp, a, ndim, shape, op->name, file, line);
    if (out->status != NB_OK) return out;
    nb_entry *e = nb_record(tp, op, out, 1, &a, file, line);
    return e ? nb_run(e) : nb_nil(NB_ERR_NOMEM);
}

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
    return view_as(tp, &reshape_op, a, ndim, new_shape, file, line);
}

/* ---------------------------------------------------------------- squeeze, unsqueeze */

static const nb_op squeeze_op = {.name = "squeeze", .forward = reshape_forward, .backward = copy_grad_backward,
    .derivative = {"1"}, .elementwise = true, .view = true, .backward_graph = reshape_graph};
static const nb_op unsqueeze_op = {.name = "unsqueeze", .forward = reshape_forward, .backward = copy_grad_backward,
    .derivative = {"1"}, .elementwise = true, .view = true, .backward_graph = reshape_graph};

nb_tensor *nb_squeeze_(nb_tape *tp, nb_tensor *a, int axis, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &squeeze_op, file, line, 1, &a);
    int ax;
    if (!failed) failed = nb_check_axis(tp, "squeeze", a, axis, &ax, file, line);
    if (failed) return failed;
    if (a->shape[ax] != 1) {
        char s[128];
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "squeeze: axis %d of %s has size %zu, not 1", axis,
                       nb_format_shape(a->ndim, a->shape, s, sizeof s), a->shape[ax]);
    }
    size_t shape[NB_MAX_DIMS];
    for (int d = 0, k = 0; d < a->ndim; d++)
        if (d != ax) shape[k++] = a->shape[d];
    return view_as(tp, &squeeze_op, a, a->ndim - 1, shape, file, line);
}

nb_tensor *nb_unsqueeze_(nb_tape *tp, nb_tensor *a, int axis, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &unsqueeze_op, file, line, 1, &a);
    if (failed) return failed;
    /* the new axis may go anywhere from before the first to after the last */
    int ax = axis < 0 ? axis + a->ndim + 1 : axis;
    if (ax < 0 || ax > a->ndim || a->ndim == NB_MAX_DIMS) {
        char s[128];
        return nb_fail(tp, NB_ERR_ARG, file, line, "unsqueeze: axis %d is out of range for shape %s (%d to %d)%s",
                       axis, nb_format_shape(a->ndim, a->shape, s, sizeof s), -a->ndim - 1, a->ndim,
                       a->ndim == NB_MAX_DIMS ? ", and it has the most dimensions a tensor can have" : "");
    }
    size_t shape[NB_MAX_DIMS];
    for (int d = 0, k = 0; d <= a->ndim; d++) shape[d] = d == ax ? 1 : a->shape[k++];
    return view_as(tp, &unsqueeze_op, a, a->ndim + 1, shape, file, line);
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
    if (nb_recording_nothing(tp)) nb_forget_entry(tp, e);
    return out;
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

static void cast_forward(nb_entry *e) {
    convert(e->in[0]->data, e->in[0]->dtype, e->out->data, e->out->dtype, e->out->size, false);
}

static void cast_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    nb_tensor *x = e->in[0];
    bool acc;
    void *gx = nb_grad_target(tp, x, &acc);
    if (gx) convert(e->out->grad, e->out->dtype, gx, x->dtype, x->size, acc);
}

static void cast_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_cast_(e->out->tape, G, e->in[0]->dtype, e->file, e->line);
}

static const nb_op cast_op = {.name = "cast", .forward = cast_forward, .backward = cast_backward,
    .derivative = {"1"}, .elementwise = true, .backward_graph = cast_graph};

nb_tensor *nb_cast_(nb_tape *tp, nb_tensor *a, nb_dtype dt, const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &cast_op, file, line, 1, &a);
    if (failed) return failed;
    if (dt != NB_F32 && dt != NB_F64)
        return nb_fail(tp, NB_ERR_ARG, file, line, "cast: unknown dtype %d", (int)dt);
    nb_entry *e = nb_emit(tp, &cast_op, 1, &a, dt, a->ndim, a->shape, file, line, &failed);
    return e ? nb_run(e) : failed;
}
