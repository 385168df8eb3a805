/*
 * Upsampling (PyTorch's F.interpolate, modes nearest and bilinear): nearest
 * in 1-D and 2-D, bilinear in 2-D with align_corners either way, to an
 * output size or by a scale factor.
 *
 * Each output element is a fixed combination of input elements of its own
 * plane (one example, one channel), with indices and weights that depend on
 * the sizes alone; per axis, for output index o of `out` from `in`:
 *   nearest:   i(o) = min(floor(o · s), in - 1) in float arithmetic,
 *              s = 1/scale when a scale factor was given, else in / out
 *              (PyTorch's kernel for contiguous NCHW; README's table of
 *              differences says where its channels-last one differs);
 *   bilinear:  r(o) = s o with align_corners (s = (in - 1)/(out - 1), or 0
 *              for out = 1), else max(s (o + 0.5) - 0.5, 0) (s as for
 *              nearest); i0 = floor(r), i1 = min(i0 + 1, in - 1),
 *              λ1 = r - i0, λ0 = 1 - λ1 (out = in: i0 = i1 = o, λ = 1, 0),
 *              computed in the tensor's dtype;
 * and then
 *   nearest:   y[oh, ow] = x[i(oh), i(ow)]
 *   bilinear:  y[oh, ow] = (x[i0h, i0w] λ0w + x[i0h, i1w] λ1w) λ0h
 *                        + (x[i1h, i0w] λ0w + x[i1h, i1w] λ1w) λ1h
 * exactly PyTorch 1.13's index and weight arithmetic (UpSample.h).
 *
 * The map is linear, y = A x, so with G = dL/dy:
 *     dL/dx = Aᵀ G: each G[oh, ow] added back, times its weights, into the
 *     elements it was read from (a scatter-add, in output order)
 * and that adjoint is an op of its own, whose backward is A again: each
 * one's backward graph is the other, so derivatives of any order work.
 * Planes are split over nabla's threads, each plane made whole by one
 * thread in a fixed order: the same bits on any thread count.
 */
#include "../internal.h"

#include <math.h>
#include <string.h>

enum { NEAREST, BILINEAR };

typedef struct {
    size_t N, C, planes, H, W, OH, OW;
    int mode;
    bool one_d, align_corners;
    double scale[2];  /* as given (0: by size), for the picture */
    size_t *ih, *iw;  /* per output index: i0, i1 (nearest: i, i) */
    double *lh, *lw;  /* bilinear: λ0, λ1, as computed in the dtype (exact in double) */
} up_geom;

/* ---------------------------------------------------------------- indices and weights */

/* PyTorch's nearest_neighbor_compute_source_index, as its kernel for
 * (N, C, H, W) and (N, C, L) tensors uses it. */
static size_t nearest_index(size_t o, size_t in, size_t out, double scale) {
    float s = scale > 0 ? (float)(1.0 / scale) : (float)in / (float)out;
    size_t i = (size_t)floorf((float)o * s);
    return i < in - 1 ? i : in - 1;
}

/* PyTorch's area_pixel_compute_scale and compute_source_index_and_lambda,
 * in T's arithmetic (its opmath type for float and double). */
#define LINEAR_WEIGHTS(T)                                                                                      \
    static void linear_weights_##T(size_t in, size_t out, bool align, double scale, size_t *idx, double *lam) {  \
        T s = align ? (out > 1 ? (T)(in - 1) / (T)(out - 1) : (T)0)                                             \
                    : (scale > 0 ? (T)(1.0 / scale) : (T)in / (T)out);                                          \
        for (size_t o = 0; o < out; o++) {                                                                      \
            if (out == in) {                                                                                    \
                idx[2 * o] = idx[2 * o + 1] = o, lam[2 * o] = 1, lam[2 * o + 1] = 0;                           \
                continue;                                                                                       \
            }                                                                                                   \
            T r = align ? s * (T)o : (T)(s * ((double)o + 0.5) - 0.5);                                          \
            if (!align && r < 0) r = 0;                                                                         \
            size_t i0 = (size_t)r;                                                                              \
            T l1 = r - (T)i0;                                                                                   \
            l1 = l1 < 0 ? 0 : l1 > 1 ? 1 : l1;                                                                  \
            idx[2 * o] = i0, idx[2 * o + 1] = i0 + (i0 < in - 1 ? 1 : 0);                                       \
            lam[2 * o] = (double)((T)1 - l1), lam[2 * o + 1] = (double)l1;                                      \
        }                                                                                                       \
    }
LINEAR_WEIGHTS(float)
LINEAR_WEIGHTS(double)

static void axis_tables(const up_geom *g, nb_dtype dt, size_t in, size_t out, double scale, size_t *idx,
                        double *lam) {
    if (g->mode == NEAREST) {
        for (size_t o = 0; o < out; o++) idx[2 * o] = idx[2 * o + 1] = nearest_index(o, in, out, scale);
    } else if (dt == NB_F32) {
        linear_weights_float(in, out, g->align_corners, scale, idx, lam);
    } else {
        linear_weights_double(in, out, g->align_corners, scale, idx, lam);
    }
}

/* ---------------------------------------------------------------- the two maps */

typedef struct {
    const up_geom *g;
    nb_dtype dt;
    const void *src;
    void *dst;
    bool acc; /* add into dst */
} up_job;

/* dst (planes, OH, OW) (+)= A src, planes begin..end. */
static void gather_part(void *ctx, size_t begin, size_t end) {
    const up_job *j = ctx;
    const up_geom *g = j->g;
    NB_DISPATCH(j->dt, {
        for (size_t p = begin; p < end; p++) {
            const T *x = (const T *)j->src + p * g->H * g->W;
            T *y = (T *)j->dst + p * g->OH * g->OW;
            for (size_t oh = 0; oh < g->OH; oh++, y += g->OW) {
                const T *r0 = x + g->ih[2 * oh] * g->W, *r1 = x + g->ih[2 * oh + 1] * g->W;
                if (g->mode == NEAREST) {
                    for (size_t ow = 0; ow < g->OW; ow++) y[ow] = j->acc ? y[ow] + r0[g->iw[2 * ow]] : r0[g->iw[2 * ow]];
                    continue;
                }
                T a0 = (T)g->lh[2 * oh], a1 = (T)g->lh[2 * oh + 1];
                for (size_t ow = 0; ow < g->OW; ow++) {
                    size_t w0 = g->iw[2 * ow], w1 = g->iw[2 * ow + 1];
                    T b0 = (T)g->lw[2 * ow], b1 = (T)g->lw[2 * ow + 1];
                    T v = (r0[w0] * b0 + r0[w1] * b1) * a0 + (r1[w0] * b0 + r1[w1] * b1) * a1;
                    y[ow] = j->acc ? y[ow] + v : v;
                }
            }
        }
    });
}

/* dst (planes, H, W) (+)= Aᵀ src, planes begin..end: each element of src
 * added, times its weights, where it was read from, in output order. */
static void scatter_part(void *ctx, size_t begin, size_t end) {
    const up_job *j = ctx;
    const up_geom *g = j->g;
    NB_DISPATCH(j->dt, {
        for (size_t p = begin; p < end; p++) {
            const T *G = (const T *)j->src + p * g->OH * g->OW;
            T *x = (T *)j->dst + p * g->H * g->W;
            if (!j->acc) memset(x, 0, g->H * g->W * sizeof(T));
            for (size_t oh = 0; oh < g->OH; oh++, G += g->OW) {
                T *r0 = x + g->ih[2 * oh] * g->W, *r1 = x + g->ih[2 * oh + 1] * g->W;
                if (g->mode == NEAREST) {
                    for (size_t ow = 0; ow < g->OW; ow++) r0[g->iw[2 * ow]] += G[ow];
                    continue;
                }
                T a0 = (T)g->lh[2 * oh], a1 = (T)g->lh[2 * oh + 1];
                for (size_t ow = 0; ow < g->OW; ow++) {
                    size_t w0 = g->iw[2 * ow], w1 = g->iw[2 * ow + 1];
                    T b0 = (T)g->lw[2 * ow], b1 = (T)g->lw[2 * ow + 1], v = G[ow];
                    r0[w0] += a0 * b0 * v;
                    r0[w1] += a0 * b1 * v;
                    r1[w0] += a1 * b0 * v;
                    r1[w1] += a1 * b1 * v;
                }
            }
        }
    });
}

/* One of the two maps over every plane; the planes split over threads
 * once there is enough work. */
static void apply(const up_geom *g, nb_dtype dt, bool adjoint, const void *src, void *dst, bool acc) {
    up_job j = {g, dt, src, dst, acc};
    size_t per_plane = g->OH * g->OW + g->H * g->W;
    nb_parallel(g->planes, 1 + NB_PARALLEL_GRAIN / (per_plane ? per_plane : 1), adjoint ? scatter_part : gather_part,
                &j);
}

/* ---------------------------------------------------------------- the ops */

static const up_geom *geom(const nb_entry *e) { return e->saved; }

/* upsample (y = A x) and its adjoint (y = Aᵀ g), for each mode: [adjoint][kind]. */
enum { NEAREST2D, NEAREST1D, BILINEAR2D, KINDS };
static const nb_op up_ops[2][KINDS];
static bool is_adjoint(const nb_entry *e) { return e->op >= &up_ops[1][0]; }
static const nb_op *op_of(const up_geom *g, bool adjoint) {
    return &up_ops[adjoint][g->mode == BILINEAR ? BILINEAR2D : g->one_d ? NEAREST1D : NEAREST2D];
}

static void up_forward(nb_entry *e) {
    apply(geom(e), e->out->dtype, is_adjoint(e), e->in[0]->data, e->out->data, false);
}

static void up_backward(nb_entry *e) {
    bool acc;
    void *gx = nb_grad_target(e->out->tape, e->in[0], &acc);
    if (gx) apply(geom(e), e->out->dtype, !is_adjoint(e), e->out->grad, gx, acc);
}

static nb_tensor *record(nb_tape *tp, const up_geom *g, bool adjoint, nb_tensor *x, const char *file, int line);

static void up_graph(nb_entry *e, nb_tensor *G, nb_tensor **grad_in) {
    grad_in[0] = record(e->out->tape, geom(e), !is_adjoint(e), G, e->file, e->line);
}

/* "6×8" or "scale 2,1.5", and "align_corners", for the pictures. */
static void up_describe(const nb_op_call *e, char *buf, size_t size) {
    const up_geom *g = geom(e);
    int n;
    if (g->scale[0] > 0 || g->scale[1] > 0)
        n = g->one_d || g->scale[0] == g->scale[1] ? snprintf(buf, size, "scale %g", g->scale[1])
                                                  : snprintf(buf, size, "scale %g,%g", g->scale[0], g->scale[1]);
    else
        n = g->one_d ? snprintf(buf, size, "to %zu", g->OW) : snprintf(buf, size, "to %zu×%zu", g->OH, g->OW);
    if (n >= 0 && (size_t)n < size && g->align_corners) snprintf(buf + n, size - (size_t)n, ", align_corners");
}

#define UP_OP(label, formula)                                                                                  \
    {.name = label, .forward = up_forward, .backward = up_backward, .derivative = {formula},                  \
     .backward_graph = up_graph, .describe = up_describe}
static const nb_op up_ops[2][KINDS] = {
    {UP_OP("upsample_nearest2d", "G summed over the copies of each element"),
     UP_OP("upsample_nearest1d", "G summed over the copies of each element"),
     UP_OP("upsample_bilinear2d", "G times each output's weights, added back to its four sources")},
    {UP_OP("upsample_nearest2d_backward", "upsample_nearest2d(G)"),
     UP_OP("upsample_nearest1d_backward", "upsample_nearest1d(G)"),
     UP_OP("upsample_bilinear2d_backward", "upsample_bilinear2d(G)")},
};

static nb_tensor *record(nb_tape *tp, const up_geom *g, bool adjoint, nb_tensor *x, const char *file, int line) {
    const nb_op *op = op_of(g, adjoint);
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &x);
    if (failed) return failed;
    size_t shape[4] = {g->N, g->C, adjoint ? g->H : g->OH, adjoint ? g->W : g->OW};
    if (g->one_d) shape[2] = shape[3];
    nb_entry *e = nb_emit(tp, op, 1, &x, x->dtype, g->one_d ? 3 : 4, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = (void *)g;
    return nb_run(e);
}

/* ---------------------------------------------------------------- the calls */

/* An output size from in and a scale factor, as F.interpolate:
 * floor(in · scale); 0 when below 1, SIZE_MAX past 2^40. */
static size_t scaled_size(size_t in, double scale) {
    double out = floor((double)in * scale);
    return out < 1 ? 0 : out > 0x1p40 ? SIZE_MAX : (size_t)out;
}

static nb_tensor *upsample(nb_tape *tp, int kind, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                           int line) {
    const nb_op *op = &up_ops[0][kind];
    const char *name = op->name;
    nb_tensor *failed = nb_check(tp, op, file, line, 1, &x);
    if (failed) return failed;
    bool one_d = kind == NEAREST1D;
    int nd = one_d ? 3 : 4, axes = one_d ? 1 : 2;
    char sx[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    if (x->ndim != nd)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: x is %s; expected %d dimensions %s", name, sx, nd,
                       one_d ? "(N, C, L)" : "(N, C, H, W)");
    if (!opts)
        return nb_fail(tp, NB_ERR_ARG, file, line, "%s: needs the options: an output size or a scale factor", name);
    if (opts->align_corners && kind != BILINEAR2D)
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "%s: align_corners applies to the interpolating modes only (bilinear), as in PyTorch", name);
    bool sizes = false, scales = false;
    for (int a = 0; a < axes; a++) {
        sizes |= opts->size[a] != 0;
        scales |= opts->scale[a] != 0;
        if (opts->scale[a] != 0 && !(opts->scale[a] > 0 && isfinite(opts->scale[a])))
            return nb_fail(tp, NB_ERR_ARG, file, line, "%s: the scale factor %g must be positive and finite", name,
                           opts->scale[a]);
    }
    bool one_kind = sizes != scales; /* exactly one of the two, for every axis */
    for (int a = 0; a < axes; a++) one_kind = one_kind && (sizes ? opts->size[a] != 0 : opts->scale[a] != 0);
    if (!one_kind)
        return nb_fail(tp, NB_ERR_ARG, file, line,
                       "%s: give either an output size or a scale factor for %s (size %zu%s%zu, scale %g%s%g)", name,
                       one_d ? "the length" : "both axes", opts->size[0], one_d ? "" : ", ",
                       one_d ? (size_t)0 : opts->size[1], opts->scale[0], one_d ? "" : ", ",
                       one_d ? 0.0 : opts->scale[1]);
    up_geom g = {.mode = kind == BILINEAR2D ? BILINEAR : NEAREST, .one_d = one_d,
                 .align_corners = opts->align_corners, .H = 1, .OH = 1};
    size_t *ins[2] = {&g.H, &g.W}, *outs[2] = {&g.OH, &g.OW};
    for (int k = 0; k < axes; k++) {
        int a = one_d ? 1 : k;
        *ins[a] = x->shape[2 + k];
        g.scale[a] = opts->scale[k];
        *outs[a] = scales ? scaled_size(*ins[a], opts->scale[k]) : opts->size[k];
        if (*ins[a] == 0 || *outs[a] == 0)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: x %s would give an output size of 0 (scale %g); input and output sizes must be at "
                           "least 1",
                           name, sx, opts->scale[k]);
    }
    size_t elements;
    g.N = x->shape[0], g.C = x->shape[1];
    if (__builtin_mul_overflow(g.N, g.C, &g.planes) ||
        __builtin_mul_overflow(g.planes, g.OH, &elements) || __builtin_mul_overflow(elements, g.OW, &elements) ||
        g.OH > ((size_t)1 << 40) || g.OW > ((size_t)1 << 40))
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: the output of x %s (%.3g x %.3g per plane) overflows",
                       name, sx, scales && g.scale[0] > 0 ? floor((double)g.H * g.scale[0]) : (double)g.OH,
                       scales ? floor((double)g.W * g.scale[1]) : (double)g.OW);
    /* The tables, in the arena with the geometry: 2 indices and 2 weights per output index. */
    size_t count = 2 * (g.OH + g.OW);
    char *mem = nb_tape_alloc(tp, sizeof(up_geom) + count * (sizeof(size_t) + sizeof(double)));
    if (!mem) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory for the output %s", name, sx);
    up_geom *kept = (up_geom *)(void *)mem;
    g.ih = (size_t *)(void *)(mem + sizeof(up_geom));
    g.iw = g.ih + 2 * g.OH;
    g.lh = (double *)(void *)(g.iw + 2 * g.OW);
    g.lw = g.lh + 2 * g.OH;
    axis_tables(&g, x->dtype, g.H, g.OH, g.scale[0], g.ih, g.lh);
    axis_tables(&g, x->dtype, g.W, g.OW, g.scale[1], g.iw, g.lw);
    *kept = g;
    return record(tp, kept, false, x, file, line);
}

nb_tensor *nb_upsample_nearest2d_(nb_tape *tp, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                                  int line) {
    return upsample(tp, NEAREST2D, x, opts, file, line);
}

nb_tensor *nb_upsample_nearest1d_(nb_tape *tp, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                                  int line) {
    return upsample(tp, NEAREST1D, x, opts, file, line);
}

nb_tensor *nb_upsample_bilinear2d_(nb_tape *tp, nb_tensor *x, const nb_upsample_opts *opts, const char *file,
                                   int line) {
    return upsample(tp, BILINEAR2D, x, opts, file, line);
}
