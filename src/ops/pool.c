/*
 * Pooling over windows of x (N, C, H, W), as PyTorch's max_pool2d and
 * avg_pool2d.  Window (oh, ow) covers the rows oh sh - ph + kh dh and the
 * columns ow sw - pw + kw dw (kh < KH, kw < KW) that fall inside x.
 *
 *   max:  y = x[m], m the window's first largest element (a NaN counts as
 *         largest, as in PyTorch's CPU kernel), kept for backward:
 *         dL/dx[m] += G          (nothing for the window's other elements)
 *   avg:  y = Σ window / d, with d the window's size including the padding
 *         but not the overhang of ceil_mode (PyTorch's count_include_pad),
 *         or only its elements inside x (exclude_pad):
 *         dL/dx[i] += G / d for every element i of the window
 *
 * Both backward maps are linear in G; each has an adjoint that is its own
 * backward, which makes the backward differentiable: max pooling's is the
 * scatter of G to the kept indices (nb_put), whose adjoint is the gather
 * (nb_take); average pooling's is avg_pool2d_backward, whose adjoint is
 * average pooling itself.
 */
#include "../internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* top = take ? v : top on the values' bits: branch-free (compilers turn a
 * floating-point select into a branch, and on real data a branch here is
 * mispredicted half the time: 5.5 ms against 1.2 ms for max pooling of 64 x
 * 32 planes of 24 x 24 floats, measured on an Intel Xeon). */
#define SELECT_BITS(T, take, v, top)                                             \
    do {                                                                         \
        if (sizeof(T) == 4) {                                                    \
            uint32_t a_, b_;                                                     \
            memcpy(&a_, &(v), 4);                                                \
            memcpy(&b_, &(top), 4);                                              \
            b_ ^= (a_ ^ b_) & (0u - (uint32_t)(take));                           \
            memcpy(&(top), &b_, 4);                                              \
        } else {                                                                 \
            uint64_t a_, b_;                                                     \
            memcpy(&a_, &(v), 8);                                                \
            memcpy(&b_, &(top), 8);                                              \
            b_ ^= (a_ ^ b_) & (0 - (uint64_t)(take));                            \
            memcpy(&(top), &b_, 8);                                              \
        }                                                                        \
    } while (0)

typedef struct {
    size_t N, C, H, W, OH, OW;
    long kh, kw, sh, sw, ph, pw, dh, dw;
    bool exclude_pad;
} pool_geom;

/* The window's first row and one past its last (in the padded frame, then
 * clipped to x), as PyTorch computes them for average pooling. */
typedef struct { long start, end, clipped_start, clipped_end; } span;

static span window(long o, long stride, long pad, long k, size_t in) {
    span s;
    s.start = o * stride - pad;
    s.end = s.start + k < (long)in + pad ? s.start + k : (long)in + pad;
    s.clipped_start = s.start > 0 ? s.start : 0;
    s.clipped_end = s.end < (long)in ? s.end : (long)in;
    return s;
}

/* ---------------------------------------------------------------- max */

typedef struct {
    const pool_geom *g;
    nb_dtype dt;
    const void *x;
    void *y;
    size_t *arg;  /* flat index into x of each output's maximum */
} max_job;

/* The taps k (0 <= k < taps) of a window starting at `start` with spacing
 * `dilation` that fall inside [0, in): [*lo, *hi). */
static inline void taps_inside(long start, long dilation, long taps, size_t in, long *lo, long *hi) {
    if (start >= 0 && start + (taps - 1) * dilation < (long)in) { /* inside: the usual case, no division */
        *lo = 0;
        *hi = taps;
        return;
    }
    *lo = start >= 0 ? 0 : (-start + dilation - 1) / dilation;
    long last = ((long)in - 1 - start) / dilation; /* the last tap at or before in - 1 */
    *hi = (long)in - 1 - start < 0 ? 0 : last + 1 < taps ? last + 1 : taps;
    if (*lo > *hi) *lo = *hi;
}

/* Planes (n, c) begin..end.  The taps inside x are worked out once per
 * window row and column, so the inner loops make no bounds checks; the
 * geometry is read into locals first (the stores to arg, size_t like the
 * geometry's fields, would otherwise make the compiler reload them).  A NaN
 * wins (v != v) and, once it is the maximum, only a later NaN replaces it,
 * as in PyTorch's `val > maxval || isnan(val)`. */
static void max_part(void *ctx, size_t begin, size_t end) {
    const max_job *j = ctx;
    const size_t H = j->g->H, W = j->g->W, OH = j->g->OH, OW = j->g->OW;
    const long kh_n = j->g->kh, kw_n = j->g->kw, sh = j->g->sh, sw = j->g->sw, ph = j->g->ph, pw = j->g->pw;
    const long dh = j->g->dh, dw = j->g->dw;
    size_t *restrict arg = j->arg;
    NB_DISPATCH(j->dt, {
        const T *restrict xs = j->x;
        T *restrict ys = j->y;
        /* 2x2 windows, stride 2, every one inside x (the usual pooling): the
         * taps unrolled, about 5x fewer instructions than the general loop.
         * With ceil_mode and an odd H or W the last windows overhang x and
         * take the general loop, which clips them. */
        bool two_by_two = kh_n == 2 && kw_n == 2 && sh == 2 && sw == 2 && dh == 1 && dw == 1 && ph == 0 && pw == 0 &&
                          2 * OH <= H && 2 * OW <= W;
        for (size_t plane = begin; plane < end && two_by_two; plane++) {
            const T *restrict xp = xs + plane * H * W;
            for (size_t oh = 0; oh < OH; oh++) {
                size_t row = 2 * oh * W, o = (plane * OH + oh) * OW;
                for (size_t ow = 0; ow < OW; ow++) {
                    size_t i = row + 2 * ow, best = i, take;
                    T top = xp[i], v;
                    v = xp[i + 1], take = (size_t)((v > top) | (v != v)), best ^= (best ^ (i + 1)) & (0 - take);
                    SELECT_BITS(T, take, v, top);
                    v = xp[i + W], take = (size_t)((v > top) | (v != v)), best ^= (best ^ (i + W)) & (0 - take);
                    SELECT_BITS(T, take, v, top);
                    v = xp[i + W + 1], take = (size_t)((v > top) | (v != v)), best ^= (best ^ (i + W + 1)) & (0 - take);
                    SELECT_BITS(T, take, v, top);
                    ys[o + ow] = top;
                    arg[o + ow] = plane * H * W + best;
                }
            }
        }
        for (size_t plane = begin; plane < end && !two_by_two; plane++) {
            const T *restrict xp = xs + plane * H * W;
            for (size_t oh = 0; oh < OH; oh++) {
                long h0 = (long)oh * sh - ph, khlo, khhi;
                taps_inside(h0, dh, kh_n, H, &khlo, &khhi);
                for (size_t ow = 0; ow < OW; ow++) {
                    long w0 = (long)ow * sw - pw, kwlo, kwhi;
                    taps_inside(w0, dw, kw_n, W, &kwlo, &kwhi);
                    /* the first tap inside, then the others, branch-free */
                    size_t best = SIZE_MAX;
                    T top = -INFINITY;
                    if (khlo < khhi && kwlo < kwhi) {
                        best = (size_t)(h0 + khlo * dh) * W + (size_t)(w0 + kwlo * dw);
                        top = xp[best];
                    }
                    for (long kh = khlo; kh < khhi; kh++) {
                        size_t row = (size_t)(h0 + kh * dh) * W;
                        for (long kw = kwlo; kw < kwhi; kw++) {
                            size_t i = row + (size_t)(w0 + kw * dw);
                            T v = xp[i];
                            size_t take = (size_t)((v > top) | (v != v));
                            best ^= (best ^ i) & (0 - take); /* best = take ? i : best */
                            SELECT_BITS(T, take, v, top);
                        }
                    }
                    size_t o = (plane * OH + oh) * OW + ow;
                    ys[o] = top;
                    arg[o] = best == SIZE_MAX ? SIZE_MAX : plane * H * W + best;
                }
            }
        }
    });
}

static void max_forward(nb_entry *e) {
    const nb_tensor *x = e->in[0];
    const pool_geom *g = e->saved;
    max_job j = {g, x->dtype, x->data, e->out->data, (size_t *)(g + 1)};
    nb_parallel(g->N * g->C, 1 + NB_PARALLEL_GRAIN / (g->OH * g->OW * (size_t)(g->kh * g->kw) + 1), max_part, &j);
}

/* dL/dx[arg[o]] += G[o]: each plane's indices stay in the plane, so planes
 * split over threads write apart. */
typedef struct {
    const pool_geom *g;
    nb_dtype dt;
    const void *G;
    void *gx;
    const size_t *arg;
} scatter_job;

static void scatter_part(void *ctx, size_t begin, size_t end) {
    const scatter_job *j = ctx;
    size_t per_plane = j->g->OH * j->g->OW;
    NB_DISPATCH(j->dt, {
        const T *G = j->G;
        T *gx = j->gx;
        for (size_t o = begin * per_plane; o < end * per_plane; o++)
            if (j->arg[o] != SIZE_MAX) gx[j->arg[o]] += G[o];
    });
}

static void max_backward(nb_entry *e) {
    nb_tensor *x = e->in[0];
    const pool_geom *g = e->saved;
    void *gx = nb_grad_target_zeroed(e->out->tape, x);
    if (!gx) return;
    scatter_job j = {g, x->dtype, e->out->grad, gx, (const size_t *)(g + 1)};
    nb_parallel(g->N * g->C, 1 + NB_PARALLEL_GRAIN / (g->OH * g->OW + 1), scatter_part, &j);
}

/* The scatter as an op (nb_put).  A window wholly in the padding (possible
 * with dilation: kernel 1x2, padding 1, dilation 5 on a row of 4) has no
 * arg-max, SIZE_MAX, which nb_put and nb_take skip: its gradient is 0. */
static void max_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    const nb_tensor *x = e->in[0];
    grad_in[0] = nb_put(e->out->tape, G, (const size_t *)((const pool_geom *)e->saved + 1), x->ndim, x->shape,
                        e->file, e->line);
}

/* ---------------------------------------------------------------- avg */

typedef struct {
    const pool_geom *g;
    nb_dtype dt;
    const void *in;
    void *out;
    bool acc;
} avg_job;

/* The divisor of window (oh, ow). */
static double divisor(const pool_geom *g, const span *r, const span *c) {
    return g->exclude_pad ? (double)((r->clipped_end - r->clipped_start) * (c->clipped_end - c->clipped_start))
                          : (double)((r->end - r->start) * (c->end - c->start));
}

/* y (+)= window averages of x, planes begin..end. */
static void avg_part(void *ctx, size_t begin, size_t end) {
    const avg_job *j = ctx;
    const pool_geom *g = j->g;
    NB_DISPATCH(j->dt, {
        const T *xs = j->in;
        T *ys = j->out;
        for (size_t plane = begin; plane < end; plane++)
            for (size_t oh = 0; oh < g->OH; oh++) {
                span r = window((long)oh, g->sh, g->ph, g->kh, g->H);
                for (size_t ow = 0; ow < g->OW; ow++) {
                    span c = window((long)ow, g->sw, g->pw, g->kw, g->W);
                    T s = 0;
                    for (long h = r.clipped_start; h < r.clipped_end; h++)
                        for (long w = c.clipped_start; w < c.clipped_end; w++)
                            s += xs[(plane * g->H + (size_t)h) * g->W + (size_t)w];
                    double d = divisor(g, &r, &c);
                    T v = d > 0 ? s / (T)d : 0;
                    size_t o = (plane * g->OH + oh) * g->OW + ow;
                    ys[o] = j->acc ? ys[o] + v : v;
                }
            }
    });
}

/* The adjoint: gx (+)= G / d over each window, planes begin..end. */
static void avg_adjoint_part(void *ctx, size_t begin, size_t end) {
    const avg_job *j = ctx;
    const pool_geom *g = j->g;
    NB_DISPATCH(j->dt, {
        const T *G = j->in;
        T *gx = j->out;
        if (!j->acc) memset(gx + begin * g->H * g->W, 0, (end - begin) * g->H * g->W * sizeof(T));
        for (size_t plane = begin; plane < end; plane++)
            for (size_t oh = 0; oh < g->OH; oh++) {
                span r = window((long)oh, g->sh, g->ph, g->kh, g->H);
                for (size_t ow = 0; ow < g->OW; ow++) {
                    span c = window((long)ow, g->sw, g->pw, g->kw, g->W);
                    double d = divisor(g, &r, &c);
                    if (!(d > 0)) continue;
                    T share = G[(plane * g->OH + oh) * g->OW + ow] / (T)d;
                    for (long h = r.clipped_start; h < r.clipped_end; h++)
                        for (long w = c.clipped_start; w < c.clipped_end; w++)
                            gx[(plane * g->H + (size_t)h) * g->W + (size_t)w] += share;
                }
            }
    });
}

static void run_avg(const pool_geom *g, nb_range_fn fn, nb_dtype dt, const void *in, void *out, bool acc) {
    avg_job j = {g, dt, in, out, acc};
    nb_parallel(g->N * g->C, 1 + NB_PARALLEL_GRAIN / (g->OH * g->OW * (size_t)(g->kh * g->kw) + 1), fn, &j);
}

static void avg_forward(nb_entry *e) {
    run_avg(e->saved, avg_part, e->out->dtype, e->in[0]->data, e->out->data, false);
}

static void avg_backward(nb_entry *e) {
    bool acc;
    void *gx = nb_grad_target(e->out->tape, e->in[0], &acc);
    if (gx) run_avg(e->saved, avg_adjoint_part, e->out->dtype, e->out->grad, gx, acc);
}

/* avg_pool2d_backward: input G (the pooled shape), output x's shape. */
static void avg_adjoint_forward(nb_entry *e) {
    run_avg(e->saved, avg_adjoint_part, e->out->dtype, e->in[0]->data, e->out->data, false);
}

static void avg_adjoint_backward(nb_entry *e) {
    bool acc;
    void *gG = nb_grad_target(e->out->tape, e->in[0], &acc);
    if (gG) run_avg(e->saved, avg_part, e->out->dtype, e->out->grad, gG, acc);
}

static nb_tensor *avg_call(nb_tape *tp, bool adjoint, const pool_geom *g, nb_tensor *in, const char *file, int line);

static void avg_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = avg_call(e->out->tape, true, e->saved, G, e->file, e->line);
}

static void avg_adjoint_graph(nb_entry *e, nb_tensor *H, nb_tensor **grad_in) {
    grad_in[0] = avg_call(e->out->tape, false, e->saved, H, e->file, e->line);
}

/* "2×2, stride 1, padding 1" for the pictures. */
static void pool_describe(const nb_op_call *e, char *buf, size_t size) {
    const pool_geom *g = e->saved;
    int n = snprintf(buf, size, "%ld×%ld", g->kh, g->kw);
    if (n > 0 && (size_t)n < size && (g->sh != g->kh || g->sw != g->kw))
        n += snprintf(buf + n, size - (size_t)n, ", stride %ld,%ld", g->sh, g->sw);
    if (n > 0 && (size_t)n < size && (g->ph || g->pw))
        n += snprintf(buf + n, size - (size_t)n, ", padding %ld,%ld", g->ph, g->pw);
    if (n > 0 && (size_t)n < size && (g->dh != 1 || g->dw != 1))
        snprintf(buf + n, size - (size_t)n, ", dilation %ld,%ld", g->dh, g->dw);
}

static const nb_op max_pool_op = {.name = "max_pool2d", .forward = max_forward, .backward = max_backward,
                                  .derivative = {"G sent to each window's largest element"},
                                  .backward_graph = max_graph, .describe = pool_describe};
static const nb_op avg_pool_op = {.name = "avg_pool2d", .forward = avg_forward, .backward = avg_backward,
                                  .derivative = {"G / window size, spread over each window"},
                                  .backward_graph = avg_graph, .describe = pool_describe};
static const nb_op avg_pool_adjoint_op = {.name = "avg_pool2d_backward", .forward = avg_adjoint_forward,
                                          .backward = avg_adjoint_backward,
                                          .derivative = {"H averaged over each window"},
                                          .backward_graph = avg_adjoint_graph, .describe = pool_describe};

/* Records average pooling (or its adjoint) with a copy of g. */
static nb_tensor *avg_call(nb_tape *tp, bool adjoint, const pool_geom *g, nb_tensor *in, const char *file,
                           int line) {
    const nb_op *op = adjoint ? &avg_pool_adjoint_op : &avg_pool_op;
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &in);
    if (failed) return failed;
    pool_geom *kept = nb_tape_alloc(tp, sizeof *kept);
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", op->name);
    *kept = *g;
    size_t shape[4] = {g->N, g->C, adjoint ? g->H : g->OH, adjoint ? g->W : g->OW};
    nb_entry *e = nb_emit(tp, op, 1, &in, in->dtype, 4, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    return nb_run(e);
}

/* Checks the call and works out its geometry; NULL when it may go ahead. */
static nb_tensor *plan(nb_tape *tp, const nb_op *op, nb_tensor *x, const nb_pool_opts *opts, pool_geom *g,
                       const char *file, int line) {
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &x);
    if (failed) return failed;
    const char *name = op->name;
    char sx[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    if (!opts) return nb_fail(tp, NB_ERR_NULL, file, line, "%s: the options are NULL (the kernel size is needed)", name);
    if (x->ndim != 4) return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: x is %s; expected (N, C, H, W)", name, sx);
    const nb_pool_opts *o = opts;
    bool max = op == &max_pool_op;
    *g = (pool_geom){.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3],
                     .exclude_pad = o->exclude_pad};
    long *ks[2] = {&g->kh, &g->kw}, *ss[2] = {&g->sh, &g->sw}, *ps[2] = {&g->ph, &g->pw}, *ds[2] = {&g->dh, &g->dw};
    size_t *outs[2] = {&g->OH, &g->OW}, ins[2] = {g->H, g->W};
    for (int k = 0; k < 2; k++) {
        if (o->kernel[k] < 1 || o->stride[k] < 0 || o->padding[k] < 0 || o->dilation[k] < 0)
            return nb_fail(tp, NB_ERR_ARG, file, line,
                           "%s: kernel %d must be positive, stride %d, padding %d and dilation %d not negative", name,
                           o->kernel[k], o->stride[k], o->padding[k], o->dilation[k]);
        if (!max && o->dilation[k] > 1)
            return nb_fail(tp, NB_ERR_ARG, file, line, "%s: average pooling has no dilation (got %d)", name,
                           o->dilation[k]);
        *ks[k] = o->kernel[k];
        *ss[k] = o->stride[k] ? o->stride[k] : o->kernel[k];
        *ps[k] = o->padding[k];
        *ds[k] = o->dilation[k] ? o->dilation[k] : 1;
        if (2 * *ps[k] > *ks[k])
            return nb_fail(tp, NB_ERR_ARG, file, line, "%s: padding %ld is more than half the kernel %ld (as PyTorch "
                           "requires, every window must reach into x)", name, *ps[k], *ks[k]);
        /* PyTorch's count: floor (or ceil) of (padded - reach) / stride, plus 1;
         * with ceil_mode a window may reach past the padding (it is clipped),
         * so that one larger than the padded x still gives one output. */
        double reach = (double)*ds[k] * (double)(*ks[k] - 1) + 1, padded = (double)ins[k] + 2.0 * (double)*ps[k];
        double steps = (padded - reach) / (double)*ss[k], first = o->ceil_mode ? ceil(steps) : floor(steps);
        if (first < 0)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: the window %d×%d (spanning %.0f) does not fit in x %s padded by %ld%s", name,
                           o->kernel[0], o->kernel[1], reach, sx, *ps[k], o->ceil_mode ? "" : " (ceil_mode allows "
                           "a window that overhangs by less than the stride)");
        size_t out = (size_t)first + 1;
        /* ceil_mode: the last window must start inside x or its left padding */
        if (o->ceil_mode && (long)(out - 1) * *ss[k] >= (long)ins[k] + *ps[k]) out--;
        *outs[k] = out;
    }
    return NULL;
}

nb_tensor *nb_max_pool2d_(nb_tape *tp, nb_tensor *x, const nb_pool_opts *opts, const char *file, int line) {
    pool_geom g = {0};
    nb_tensor *failed = plan(tp, &max_pool_op, x, opts, &g, file, line);
    if (failed) return failed;
    /* The geometry, then the index of each output's maximum. */
    size_t outputs = g.N * g.C * g.OH * g.OW;
    pool_geom *kept = nb_tape_alloc(tp, sizeof g + outputs * sizeof(size_t));
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "max_pool2d: out of memory");
    *kept = g;
    size_t shape[4] = {g.N, g.C, g.OH, g.OW};
    nb_entry *e = nb_emit(tp, &max_pool_op, 1, &x, x->dtype, 4, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    return nb_run(e);
}

nb_tensor *nb_avg_pool2d_(nb_tape *tp, nb_tensor *x, const nb_pool_opts *opts, const char *file, int line) {
    pool_geom g = {0};
    nb_tensor *failed = plan(tp, &avg_pool_op, x, opts, &g, file, line);
    return failed ? failed : avg_call(tp, false, &g, x, file, line);
}
