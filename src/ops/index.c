/*
 * Taking parts of a tensor: slice, index_select, gather.  The tensor is
 * viewed as (outer, n, inner) around the axis taken from (nb_split_axis):
 *
 *   slice:        y[o, k, i] = x[o, start + k step, i]
 *   index_select: y[o, k, i] = x[o, idx[k], i]
 *   gather:       y[..., k, ...] = x[..., index[..., k, ...], ...]
 *
 * Each output element is one input element, so backward sends each element
 * of dL/dy back to the element it came from, adding where several outputs
 * came from the same one (repeated indices: an embedding row used twice
 * gets both gradients):
 *
 *   dL/dx[o, j, i] = sum over k with idx[k] = j of dL/dy[o, k, i]
 */
#include "../internal.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- slice */

/* The entry keeps the axis in e->axis and (start, step) in its saved slot.
 * A slice that takes one contiguous block of x is a view (no forward). */
typedef struct {
    size_t start, step;
} slice_params;

/* With step 1 the slice of each outer block is one run of count inner
 * blocks: one copy (or add) per outer block rather than one per element
 * (an LSTM's gates, columns of a (B, 4H) product, spent 13% of a training
 * step in per-element copies). */
static void slice_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    const slice_params *p = e->saved;
    size_t outer, n, inner, count = e->out->shape[e->axis];
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    size_t w = nb_dtype_size(x->dtype);
    const char *src = x->data;
    char *dst = e->out->data;
    for (size_t o = 0; o < outer; o++) {
        if (p->step == 1) {
            memcpy(dst + o * count * inner * w, src + (o * n + p->start) * inner * w, count * inner * w);
            continue;
        }
        for (size_t k = 0; k < count; k++)
            memcpy(dst + ((o * count + k) * inner) * w, src + ((o * n + p->start + k * p->step) * inner) * w, inner * w);
    }
}

static void view_forward(nb_entry *e) { (void)e; }

/* dL/dx: G in the sliced places, 0 elsewhere.  A first contribution
 * writes every element of the gradient (zeros around the slice), a later
 * one adds its slice only. */
static void slice_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    const slice_params *p = e->saved;
    bool acc;
    void *gx_ = nb_grad_target(e->out->tape, x, &acc);
    if (!gx_) return;
    size_t outer, n, inner, count = e->out->shape[e->axis];
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    if (!acc && p->step != 1) memset(gx_, 0, x->size * nb_dtype_size(x->dtype));
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t o = 0; o < outer; o++) {
            if (p->step == 1) {
                T *block = gx + o * n * inner, *run = block + p->start * inner;
                const T *src = gy + o * count * inner;
                size_t len = count * inner;
                if (acc) {
                    for (size_t i = 0; i < len; i++) run[i] += src[i];
                } else {
                    memset(block, 0, p->start * inner * sizeof(T));
                    memcpy(run, src, len * sizeof(T));
                    memset(run + len, 0, (n - p->start - count) * inner * sizeof(T));
                }
                continue;
            }
            for (size_t k = 0; k < count; k++) {
                T *dst = gx + (o * n + p->start + k * p->step) * inner;
                const T *src = gy + (o * count + k) * inner;
                for (size_t i = 0; i < inner; i++) dst[i] += src[i];
            }
        }
    });
}

static void slice_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in);
static const nb_op slice_op = {.name = "slice", .forward = slice_forward, .backward = slice_backward,
                               .derivative = {"G in the sliced places, 0 elsewhere"}, .backward_graph = slice_graph};
static const nb_op slice_view_op = {.name = "slice", .forward = view_forward, .backward = slice_backward,
                                    .derivative = {"G in the sliced places, 0 elsewhere"}, .view = true,
                                    .backward_graph = slice_graph};

nb_tensor *nb_slice_(nb_tape *tp, nb_tensor *a, int axis, long start, long stop, long step, const char *file,
                     int line) {
    nb_tensor *failed = nb_check(tp, &slice_op, file, line, 1, &a);
    int ax;
    if (!failed) failed = nb_check_axis(tp, "slice", a, axis, &ax, file, line);
    if (failed) return failed;
    char s[128];
    nb_format_shape(a->ndim, a->shape, s, sizeof s);
    long n = (long)a->shape[ax];
    if (step < 1)
        return nb_fail(tp, NB_ERR_ARG, file, line, "slice: step %ld along axis %d of %s (steps are 1 or more)",
                       step, axis, s);
    /* Python's rules: negative positions count from the end; then clamp. */
    long from = start < 0 ? start + n : start, to = stop < 0 ? stop + n : stop;
    from = from < 0 ? 0 : from > n ? n : from;
    to = to < 0 ? 0 : to > n ? n : to;
    if (to <= from)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "slice: [%ld:%ld:%ld] of axis %d of %s selects nothing (empty tensors are not supported)",
                       start, stop == NB_END ? n : stop, step, axis, s);
    /* ceil((to - from) / step), written so that no step (up to LONG_MAX)
     * overflows: to - from - 1 >= 0 here */
    size_t count = (size_t)((to - from - 1) / step) + 1, shape[NB_MAX_DIMS];
    for (int d = 0; d < a->ndim; d++) shape[d] = d == ax ? count : a->shape[d];
    slice_params *p = nb_tape_alloc(tp, sizeof *p);
    if (!p) return nb_fail(tp, NB_ERR_NOMEM, file, line, "slice: out of memory");
    *p = (slice_params){(size_t)from, (size_t)step};
    /* One contiguous block when every axis before this one has size 1 and
     * the slice is a run (or a single position). */
    size_t outer, total, inner;
    nb_split_axis(a, ax, &outer, &total, &inner);
    nb_entry *e;
    if (outer == 1 && (step == 1 || count == 1)) {
        nb_tensor *out = nb_result_view(tp, a, a->ndim, shape, "slice", file, line);
        if (out->status != NB_OK) return out;
        out->size = count * inner;
        out->data = (char *)a->data + (size_t)from * inner * nb_dtype_size(a->dtype);
        if (!(e = nb_record(tp, &slice_view_op, out, 1, &a, file, line))) return nb_nil(NB_ERR_NOMEM);
    } else if (!(e = nb_emit(tp, &slice_op, 1, &a, a->dtype, a->ndim, shape, file, line, &failed))) {
        return failed;
    }
    e->axis = ax;
    e->saved = p;
    return nb_run(e);
}

/* ---------------------------------------------------------------- index_select */

/* The entry keeps the axis in e->axis and the indices (size_t, as many as
 * the output's size along the axis) in its saved slot.
 *
 * Forward copies slices (an embedding: rows of the table), split over
 * threads by output slice.  Backward adds each slice of G into the slice
 * of dL/dx it came from; threads split the slices' columns (the inner
 * elements), each walking every slice in order, so that repeated indices
 * are added in the same order on any thread count and no two threads
 * write the same element. */
typedef struct {
    const nb_entry *e;
    void *gx;
    size_t outer, n, inner, count;
} select_job;

static void gather_range(void *ctx, size_t begin, size_t end) {
    const select_job *j = ctx;
    const size_t *idx = j->e->saved;
    size_t w = nb_dtype_size(j->e->out->dtype);
    for (size_t r = begin; r < end; r++) {
        size_t o = r / j->count, k = r % j->count;
        memcpy((char *)j->e->out->data + r * j->inner * w,
               (const char *)j->e->in[0]->data + ((o * j->n + idx[k]) * j->inner) * w, j->inner * w);
    }
}

static void index_select_forward(nb_entry *e) {
    select_job j = {.e = e};
    j.count = e->out->shape[e->axis];
    nb_split_axis(e->in[0], e->axis, &j.outer, &j.n, &j.inner);
    size_t grain = j.inner >= NB_PARALLEL_GRAIN ? 1 : NB_PARALLEL_GRAIN / j.inner;
    nb_parallel(j.outer * j.count, grain, gather_range, &j);
}

/* Columns [begin, end) of every slice: dL/dx[o, idx[k], i] += G[o, k, i]. */
NB_VECTOR_CLONES static void scatter_range(void *ctx, size_t begin, size_t end) {
    const select_job *j = ctx;
    const size_t *idx = j->e->saved;
    NB_DISPATCH(j->e->out->dtype, {
        const T *gy = j->e->out->grad;
        T *gx = j->gx;
        for (size_t o = 0; o < j->outer; o++)
            for (size_t k = 0; k < j->count; k++) {
                T *restrict dst = gx + (o * j->n + idx[k]) * j->inner + begin;
                const T *restrict src = gy + (o * j->count + k) * j->inner + begin;
                for (size_t i = 0; i < end - begin; i++) dst[i] += src[i];
            }
    });
}

static void index_select_backward(nb_entry *e) {
    select_job j = {.e = e};
    if (!(j.gx = nb_grad_target_zeroed(e->out->tape, e->in[0]))) return;
    j.count = e->out->shape[e->axis];
    nb_split_axis(e->in[0], e->axis, &j.outer, &j.n, &j.inner);
    /* parts of at least NB_PARALLEL_GRAIN elements, and of whole cache lines */
    size_t slices = j.outer * j.count, grain = (NB_PARALLEL_GRAIN + slices - 1) / slices;
    grain = grain < 16 ? 16 : (grain + 15) / 16 * 16;
    nb_parallel(j.inner, grain, scatter_range, &j);
}

static void index_select_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in);
static const nb_op index_select_op = {.name = "index_select", .forward = index_select_forward,
                                      .backward = index_select_backward,
                                      .derivative = {"G added into the selected slices"},
                                      .backward_graph = index_select_graph};

nb_tensor *nb_index_select_(nb_tape *tp, nb_tensor *a, int axis, const size_t *indices, size_t n,
                            const char *file, int line) {
    nb_tensor *failed = nb_check(tp, &index_select_op, file, line, 1, &a);
    int ax;
    if (!failed) failed = nb_check_axis(tp, "index_select", a, axis, &ax, file, line);
    if (failed) return failed;
    char s[128];
    if (!indices || n == 0)
        return nb_fail(tp, n ? NB_ERR_NULL : NB_ERR_SHAPE, file, line, "index_select: %s", n ? "the indices are NULL"
                       : "no indices (empty tensors are not supported)");
    for (size_t k = 0; k < n; k++)
        if (indices[k] >= a->shape[ax])
            return nb_fail(tp, NB_ERR_ARG, file, line,
                           "index_select: index %zu (position %zu) is out of range for axis %d of %s (size %zu)",
                           indices[k], k, axis, nb_format_shape(a->ndim, a->shape, s, sizeof s), a->shape[ax]);
    size_t *kept = nb_tape_alloc(tp, n * sizeof *kept), shape[NB_MAX_DIMS];
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "index_select: out of memory for %zu indices", n);
    memcpy(kept, indices, n * sizeof *kept);
    for (int d = 0; d < a->ndim; d++) shape[d] = d == ax ? n : a->shape[d];
    nb_entry *e = nb_emit(tp, &index_select_op, 1, &a, a->dtype, a->ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->axis = ax;
    e->saved = kept;
    return nb_run(e);
}

/* ---------------------------------------------------------------- gather */

/* y has index's shape; y[p] = x[p with its axis coordinate replaced by
 * index[p]].  The entry keeps, for every element of y, the flat offset of
 * the element of x it reads (computed once, when recorded). */
static void gather_forward(nb_entry *e) {
    const size_t *from = e->saved;
    NB_DISPATCH(e->out->dtype, {
        const T *xs = e->in[0]->data;
        T *ys = e->out->data;
        for (size_t k = 0; k < e->out->size; k++) ys[k] = xs[from[k]];
    });
}

static void gather_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    if (!x->requires_grad) return; /* the index takes no gradient */
    const size_t *from = e->saved;
    void *gx_ = nb_grad_target_zeroed(e->out->tape, x);
    if (!gx_) return;
    NB_DISPATCH(x->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t k = 0; k < e->out->size; k++) gx[from[k]] += gy[k];
    });
}

static void gather_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in);
static const nb_op gather_op = {.name = "gather", .forward = gather_forward, .backward = gather_backward,
                                .derivative = {"G added where each element came from", "none (indices)"},
                                .backward_graph = gather_graph};

nb_tensor *nb_gather_(nb_tape *tp, nb_tensor *a, int axis, nb_tensor *index, const char *file, int line) {
    nb_tensor *in[2] = {a, index};
    nb_tensor *failed = nb_check(tp, &gather_op, file, line, 2, in);
    int ax;
    if (!failed) failed = nb_check_axis(tp, "gather", a, axis, &ax, file, line);
    if (failed) return failed;
    char sa[128], si[128];
    nb_format_shape(a->ndim, a->shape, sa, sizeof sa);
    nb_format_shape(index->ndim, index->shape, si, sizeof si);
    bool fits = index->ndim == a->ndim;
    for (int d = 0; fits && d < a->ndim; d++) fits = d == ax || index->shape[d] <= a->shape[d];
    if (!fits)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "gather: index %s does not fit x %s along axis %d (same number of dimensions, and no "
                       "larger than x along the other axes)",
                       si, sa, axis);
    size_t *from = nb_tape_alloc(tp, index->size * sizeof *from);
    if (!from) return nb_fail(tp, NB_ERR_NOMEM, file, line, "gather: out of memory");
    /* x's strides, then each index element's source offset */
    size_t stride[NB_MAX_DIMS], idx[NB_MAX_DIMS] = {0};
    size_t run = 1;
    for (int d = a->ndim - 1; d >= 0; d--) {
        stride[d] = run;
        run *= a->shape[d];
    }
    for (size_t k = 0; k < index->size; k++) {
        double v = nb_get(index, k);
        if (!(v >= 0 && v < (double)a->shape[ax] && v == floor(v)))
            return nb_fail(tp, NB_ERR_VALUE, file, line,
                           "gather: index element %zu is %g, not a whole number in [0, %zu) for axis %d of x %s",
                           k, v, a->shape[ax], axis, sa);
        size_t off = 0;
        for (int d = 0; d < a->ndim; d++) off += (d == ax ? (size_t)v : idx[d]) * stride[d];
        from[k] = off;
        for (int d = a->ndim - 1; d >= 0; d--) {
            if (++idx[d] < index->shape[d]) break;
            idx[d] = 0;
        }
    }
    nb_entry *e = nb_emit(tp, &gather_op, 2, in, a->dtype, index->ndim, index->shape, file, line, &failed);
    if (!e) return failed;
    if (!a->requires_grad) e->out->requires_grad = false; /* the index takes none (PyTorch's is integral) */
    e->axis = ax;
    e->saved = from;
    return nb_run(e);
}

/* ---------------------------------------------------------------- take and put */

/* The two ops the backward graphs of the indexing ops are made of, each the
 * other's adjoint.  With `from` a list of flat offsets into x (as many as
 * y has elements):
 *   take: y[k] = x[from[k]]               dL/dx[j] = sum over k with from[k] = j of dL/dy[k]
 *   put:  y = zeros (x's shape); y[from[k]] += g[k]      dL/dg[k] = dL/dy[from[k]]
 * so take's backward graph is a put, and put's a take.  An offset NOWHERE
 * (SIZE_MAX: max pooling's window wholly in the padding) names no element:
 * take reads 0 there and put drops g[k]. */
#define NOWHERE SIZE_MAX
static void take_forward(nb_entry *e) {
    const size_t *from = e->saved;
    NB_DISPATCH(e->out->dtype, {
        const T *x = e->in[0]->data;
        T *y = e->out->data;
        for (size_t k = 0; k < e->out->size; k++) y[k] = from[k] == NOWHERE ? 0 : x[from[k]];
    });
}

static void put_forward(nb_entry *e) {
    const size_t *from = e->saved;
    NB_DISPATCH(e->out->dtype, {
        const T *g = e->in[0]->data;
        T *y = e->out->data;
        memset(y, 0, e->out->size * sizeof(T));
        for (size_t k = 0; k < e->in[0]->size; k++)
            if (from[k] != NOWHERE) y[from[k]] += g[k];
    });
}

static void take_backward(nb_entry *e) {
    const size_t *from = e->saved;
    void *gx_ = nb_grad_target_zeroed(e->out->tape, e->in[0]);
    if (!gx_) return;
    NB_DISPATCH(e->out->dtype, {
        const T *gy = e->out->grad;
        T *gx = gx_;
        for (size_t k = 0; k < e->out->size; k++)
            if (from[k] != NOWHERE) gx[from[k]] += gy[k];
    });
}

static void put_backward(nb_entry *e) {
    const size_t *from = e->saved;
    bool acc;
    void *gg_ = nb_grad_target(e->out->tape, e->in[0], &acc);
    if (!gg_) return;
    NB_DISPATCH(e->out->dtype, {
        const T *gy = e->out->grad;
        T *gg = gg_;
        for (size_t k = 0; k < e->in[0]->size; k++) {
            T d = from[k] == NOWHERE ? 0 : gy[from[k]];
            gg[k] = acc ? gg[k] + d : d;
        }
    });
}

static void take_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_put(e->out->tape, G, e->saved, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}

static void put_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_take(e->out->tape, G, e->saved, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}

static const nb_op take_op = {.name = "take", .forward = take_forward, .backward = take_backward,
                              .derivative = {"G added where each element came from"}, .backward_graph = take_graph};
static const nb_op put_op = {.name = "put", .forward = put_forward, .backward = put_backward,
                             .derivative = {"G read where each element went"}, .backward_graph = put_graph};

nb_tensor *nb_take(nb_tape *tp, nb_tensor *x, const size_t *from, int ndim, const size_t *shape, const char *file,
                   int line) {
    nb_tensor *failed;
    nb_entry *e = nb_emit(tp, &take_op, 1, &x, x->dtype, ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = (void *)from;
    return nb_run(e);
}

nb_tensor *nb_put(nb_tape *tp, nb_tensor *g, const size_t *from, int ndim, const size_t *shape, const char *file,
                  int line) {
    nb_tensor *failed;
    nb_entry *e = nb_emit(tp, &put_op, 1, &g, g->dtype, ndim, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = (void *)from;
    return nb_run(e);
}

/* The offsets (into x) of the elements of y for slice and index_select, in
 * the arena: y[o, k, i] = x[o, p(k), i], p(k) = start + k step or idx[k]. */
static size_t *slice_offsets(nb_entry *e, const size_t *idx, size_t start, size_t step) {
    const nb_tensor *x = e->in[0];
    size_t outer, n, inner, count = e->out->shape[e->axis];
    nb_split_axis(x, e->axis, &outer, &n, &inner);
    size_t *from = nb_tape_alloc(e->out->tape, e->out->size * sizeof *from);
    if (!from) {
        nb_set_error(e->out->tape, NB_ERR_NOMEM, e->file, e->line, "%s: out of memory for its backward graph",
                     e->op->name);
        return NULL;
    }
    for (size_t o = 0, k_out = 0; o < outer; o++)
        for (size_t k = 0; k < count; k++)
            for (size_t i = 0; i < inner; i++) from[k_out++] = (o * n + (idx ? idx[k] : start + k * step)) * inner + i;
    return from;
}

static void slice_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    const slice_params *p = e->saved;
    size_t *from = slice_offsets(e, NULL, p->start, p->step);
    if (from) grad_in[0] = nb_put(e->out->tape, G, from, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}

static void index_select_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    size_t *from = slice_offsets(e, e->saved, 0, 0);
    if (from) grad_in[0] = nb_put(e->out->tape, G, from, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}

static void gather_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = nb_put(e->out->tape, G, e->saved, e->in[0]->ndim, e->in[0]->shape, e->file, e->line);
}
