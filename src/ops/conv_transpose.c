/*
 * Transposed convolutions (PyTorch's conv_transpose2d and conv_transpose1d),
 * made of the convolution machinery of src/ops/conv.c.
 *
 * A transposed convolution is the input gradient of a convolution.  For
 * x (N, Cin, H, W) and w (Cin, Cout/groups, KH, KW), take the convolution
 *     c(z) = conv(z, w)    z (N, Cout, OH, OW) -> (N, Cin, H, W)
 * with w as its weight just as it is laid out (Cin filters of Cout/groups
 * channels), the same stride, padding, dilation and groups, and z of the
 * transposed convolution's output size
 *     OH = (H - 1) stride - 2 padding + dilation (KH - 1) + output_padding + 1.
 * Then
 *     y = conv_transpose(x, w) + bias = c*(x) + bias
 * where c* is c's adjoint: conv.c's input_grad kernel, wᵀ · x per example
 * and group, folded onto y by col2im (each tap adds to the element the
 * convolution would have read).  output_padding only makes y larger at
 * the bottom and right; the convolution never reads that margin's last
 * rows, so they get the bias alone.
 *
 * The derivatives come from the trilinear form T(z, w, x) = Σ x · conv(z, w),
 * with H = dL/dy:
 *     dL/dx    = conv(H, w)                a convolution's forward
 *     dL/dw    = weight_grad(H, x)         Σ over examples of x ⋆ H
 *     dL/dbias = Σ over examples and positions of H, per channel
 * which are conv.c's kernels and, for create_graph, conv.c's differentiable
 * ops (conv and weight_grad), so second and higher derivatives come with
 * them.  The kernels split examples over threads with the same bits on any
 * thread count (conv.c); the bias's sums here run in one fixed order.
 */
#include "conv.h"

#include <string.h>

/* The convolution whose adjoint this is, and the output padding (for the
 * picture only: g's sizes include it).  g comes first: conv.c's kernels
 * read e->saved as a conv_geom. */
typedef struct {
    conv_geom g;
    long oph, opw;
} transpose_geom;

static const transpose_geom *geom(const nb_entry *e) { return e->saved; }

/* y (N, Cout, OH, OW) starts as the bias, or 0, and the transposed
 * convolution adds into it. */
static void transpose_forward(nb_entry *e) {
    const conv_geom *g = &geom(e)->g;
    nb_dtype dt = e->out->dtype;
    size_t plane = g->H * g->W;
    if (e->flag0)
        NB_DISPATCH(dt, {
            const T *b = e->in[2]->data;
            T *y = e->out->data;
            for (size_t n = 0; n < g->N; n++)
                for (size_t c = 0; c < g->C; c++)
                    for (size_t p = 0; p < plane; p++) y[(n * g->C + c) * plane + p] = b[c];
        });
    if (!nb_conv_kernel(e, KERNEL_INPUT_GRAD, dt, e->in[0]->data, e->in[1]->data, e->out->data, e->flag0))
        memset(e->out->data, 0, e->out->size * nb_dtype_size(dt));
}

/* dL/dbias[c] (+)= Σ over n of (Σ over positions of H[n, c]): in this
 * order on any thread count. */
static void bias_grad(const conv_geom *g, nb_dtype dt, const void *H_, void *gb_, bool acc) {
    size_t plane = g->H * g->W;
    NB_DISPATCH(dt, {
        const T *H = H_;
        T *gb = gb_;
        for (size_t c = 0; c < g->C; c++) {
            T total = 0;
            for (size_t n = 0; n < g->N; n++) {
                const T *row = H + (n * g->C + c) * plane;
                T s = 0;
                for (size_t p = 0; p < plane; p++) s += row[p];
                total += s;
            }
            gb[c] = acc ? gb[c] + total : total;
        }
    });
}

static void transpose_backward(nb_entry *e) {
    nb_tape *tp = e->out->tape;
    const conv_geom *g = &geom(e)->g;
    nb_dtype dt = e->out->dtype;
    const void *H = e->out->grad;
    nb_tensor *x = e->in[0], *w = e->in[1];
    bool acc;
    void *gx, *gw, *gb;
    if (x->requires_grad &&
        (!(gx = nb_grad_target(tp, x, &acc)) || !nb_conv_kernel(e, KERNEL_FORWARD, dt, H, w->data, gx, acc)))
        return;
    if (w->requires_grad &&
        (!(gw = nb_grad_target(tp, w, &acc)) || !nb_conv_kernel(e, KERNEL_WEIGHT_GRAD, dt, H, x->data, gw, acc)))
        return;
    if (e->flag0 && e->in[2]->requires_grad && (gb = nb_grad_target(tp, e->in[2], &acc)) != NULL)
        bias_grad(g, dt, H, gb, acc);
}

/* The same three as ops: conv.c's conv and weight_grad, and a sum. */
static void transpose_graph(nb_entry *e, nb_tensor *H, nb_tensor **grad_in) {
    nb_tape *tp = e->out->tape;
    const conv_geom *g = &geom(e)->g;
    if (e->in[0]->requires_grad) grad_in[0] = nb_conv_call(tp, g, H, e->in[1], e->file, e->line);
    if (e->in[1]->requires_grad) grad_in[1] = nb_conv_weight_grad_call(tp, g, H, e->in[0], e->file, e->line);
    if (e->flag0 && e->in[2]->requires_grad) {
        size_t keep[4] = {1, g->C, 1, 1};
        long flat[1] = {(long)g->C};
        grad_in[2] = nb_reshape_(tp, nb_sum_to_(tp, H, H->ndim, keep, e->file, e->line), 1, flat, e->file, e->line);
    }
}

/* "3×3, stride 2, padding 1, output padding 1" for the pictures. */
static void transpose_describe(const nb_op_call *e, char *buf, size_t size) {
    const transpose_geom *t = geom(e);
    nb_conv_describe(&t->g, buf, size);
    size_t n = strlen(buf);
    if (n >= size || (!t->oph && !t->opw)) return;
    if (t->g.one_d || t->oph == t->opw)
        snprintf(buf + n, size - n, ", output padding %ld", t->opw);
    else
        snprintf(buf + n, size - n, ", output padding %ld,%ld", t->oph, t->opw);
}

#define TRANSPOSE_OP(prefix, label)                                                                             \
    static const nb_op prefix##_op = {.name = label, .forward = transpose_forward, .backward = transpose_backward, \
                                      .derivative = {"conv(G, W)", "Σ over examples of x ⋆ G",                 \
                                                     "G summed over examples and positions"},                  \
                                      .backward_graph = transpose_graph, .describe = transpose_describe};
TRANSPOSE_OP(conv_transpose2d, "conv_transpose2d")
TRANSPOSE_OP(conv_transpose1d, "conv_transpose1d")

/* The output's size along one axis, (in - 1) s - 2 p + d (k - 1) + op + 1,
 * into *out; false when it overflows (beyond 2^62). */
static bool output_size(size_t in, size_t k, long s, long p, long d, long op, long long *out) {
    long long span, reach, total;
    if (in - 1 > (size_t)LLONG_MAX || k - 1 > (size_t)LLONG_MAX ||
        __builtin_mul_overflow((long long)(in - 1), (long long)s, &reach) ||
        __builtin_mul_overflow((long long)d, (long long)(k - 1), &span) ||
        __builtin_add_overflow(reach, span, &total) || __builtin_add_overflow(total, (long long)op + 1, &total))
        return false;
    *out = total - 2 * (long long)p; /* p < 2^31: no overflow */
    return *out <= (1LL << 62);
}

/* Checks the call and works out the geometry; NULL when it may go ahead,
 * else the errored tensor to return. */
static nb_tensor *plan(nb_tape *tp, const nb_op *op, bool one_d, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                       const nb_conv_transpose_opts *opts, transpose_geom *t, const char *file, int line) {
    nb_tensor *in[3] = {x, w, bias};
    nb_tensor *failed = nb_check(tp, op, file, line, bias ? 3 : 2, in);
    if (failed) return failed;
    const char *name = op->name;
    int nd = one_d ? 3 : 4, axes = one_d ? 1 : 2;
    char sx[128], sw[128], sb[128];
    nb_format_shape(x->ndim, x->shape, sx, sizeof sx);
    nb_format_shape(w->ndim, w->shape, sw, sizeof sw);
    if (x->ndim != nd)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: x is %s; expected %d dimensions %s", name, sx, nd,
                       one_d ? "(N, C_in, L)" : "(N, C_in, H, W)");
    if (w->ndim != nd)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: the weight is %s; expected %d dimensions %s", name, sw, nd,
                       one_d ? "(C_in, C_out / groups, K)" : "(C_in, C_out / groups, KH, KW)");
    nb_conv_transpose_opts o = opts ? *opts : (nb_conv_transpose_opts){0};
    for (int k = 0; k < axes; k++)
        if (o.stride[k] < 0 || o.padding[k] < 0 || o.dilation[k] < 0 || o.output_padding[k] < 0)
            return nb_fail(tp, NB_ERR_ARG, file, line,
                           "%s: stride %d, padding %d, output padding %d and dilation %d must not be negative (0 "
                           "means the default: 1, 0, 0 and 1)",
                           name, o.stride[k], o.padding[k], o.output_padding[k], o.dilation[k]);
    if (o.groups < 0) return nb_fail(tp, NB_ERR_ARG, file, line, "%s: groups %d must be positive", name, o.groups);
    size_t groups = o.groups ? (size_t)o.groups : 1, cin = x->shape[1];
    if (w->shape[0] != cin)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: the weight %s is for %zu input channels (its first axis); x %s has %zu", name, sw,
                       w->shape[0], sx, cin);
    if (cin % groups)
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: groups %zu must divide the %zu input channels of x %s",
                       name, groups, cin, sx);
    size_t cout;
    if (__builtin_mul_overflow(w->shape[1], groups, &cout))
        return nb_fail(tp, NB_ERR_SHAPE, file, line, "%s: the weight %s with groups %zu has too many output channels",
                       name, sw, groups);
    if (bias) {
        nb_format_shape(bias->ndim, bias->shape, sb, sizeof sb);
        if (bias->ndim != 1 || bias->shape[0] != cout)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: the bias is %s; expected (%zu,), one per output channel (the weight %s times groups "
                           "%zu)",
                           name, sb, cout, sw, groups);
    }
    /* Per axis (height then width; conv1d: its length is the width, read
     * from the first of each pair). */
    size_t ins[2] = {1, x->shape[nd - 1]}, ks[2] = {1, w->shape[nd - 1]}, outs[2];
    long s[2] = {1, 1}, p[2] = {0, 0}, d[2] = {1, 1}, op_[2] = {0, 0};
    for (int k = 0; k < axes; k++) {
        int a = one_d ? 1 : k;
        if (!one_d) ins[a] = x->shape[2 + k], ks[a] = w->shape[2 + k];
        s[a] = o.stride[k] ? o.stride[k] : 1;
        p[a] = o.padding[k];
        d[a] = o.dilation[k] ? o.dilation[k] : 1;
        op_[a] = o.output_padding[k];
    }
    for (int a = 0; a < 2; a++) {
        if (op_[a] >= (s[a] > d[a] ? s[a] : d[a]))
            return nb_fail(tp, NB_ERR_ARG, file, line,
                           "%s: output padding %ld must be smaller than the stride %ld or the dilation %ld", name,
                           op_[a], s[a], d[a]);
        long long size;
        if (!output_size(ins[a], ks[a], s[a], p[a], d[a], op_[a], &size))
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: the output size of x %s with the weight %s, stride %ld and dilation %ld overflows",
                           name, sx, sw, s[a], d[a]);
        if (size < 1)
            return nb_fail(tp, NB_ERR_SHAPE, file, line,
                           "%s: x %s with the weight %s, stride %ld, padding %ld, dilation %ld and output padding "
                           "%ld gives an output size of %lld (must be at least 1: (in - 1) stride - 2 padding + "
                           "dilation (k - 1) + output padding + 1)",
                           name, sx, sw, s[a], p[a], d[a], op_[a], size);
        outs[a] = (size_t)size;
    }
    /* The convolution it is the adjoint of: input (N, Cout, outs), weight
     * w as it is (O = Cin filters), output x's size. */
    t->g = (conv_geom){.N = x->shape[0], .C = cout, .H = outs[0], .W = outs[1], .O = cin, .KH = ks[0], .KW = ks[1],
                       .OH = ins[0], .OW = ins[1], .sh = s[0], .sw = s[1], .ph = p[0], .pw = p[1], .dh = d[0],
                       .dw = d[1], .groups = groups, .one_d = one_d};
    t->oph = op_[0], t->opw = op_[1];
    double elements = (double)t->g.N * (double)cout * (double)outs[0] * (double)outs[1];
    if (elements > 4e18)
        return nb_fail(tp, NB_ERR_SHAPE, file, line,
                       "%s: x %s with the weight %s gives an output of %.3g elements, more than memory can hold",
                       name, sx, sw, elements);
    return nb_conv_check_sizes(tp, name, &t->g, sx, sw, file, line);
}

static nb_tensor *transpose_call(nb_tape *tp, const nb_op *op, bool one_d, nb_tensor *x, nb_tensor *w,
                                 nb_tensor *bias, const nb_conv_transpose_opts *opts, const char *file, int line) {
    transpose_geom t = {0};
    nb_tensor *failed = plan(tp, op, one_d, x, w, bias, opts, &t, file, line);
    if (failed) return failed;
    transpose_geom *kept = nb_tape_alloc(tp, sizeof *kept);
    if (!kept) return nb_fail(tp, NB_ERR_NOMEM, file, line, "%s: out of memory", op->name);
    *kept = t;
    nb_tensor *in[3] = {x, w, bias};
    size_t shape[4] = {t.g.N, t.g.C, t.g.H, t.g.W};
    if (one_d) shape[2] = t.g.W;
    nb_entry *e = nb_emit(tp, op, bias ? 3 : 2, in, x->dtype, one_d ? 3 : 4, shape, file, line, &failed);
    if (!e) return failed;
    e->saved = kept;
    e->flag0 = bias != NULL;
    nb_status before = tp->status;
    nb_tensor *out = nb_run(e);
    /* No working memory for the forward: no result.  (nb_run can change
     * tp->status, which cppcheck does not see.) */
    // cppcheck-suppress incorrectLogicOperator
    return before == NB_OK && tp->status != NB_OK ? nb_nil(tp->status) : out;
}

nb_tensor *nb_conv_transpose2d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                                const nb_conv_transpose_opts *opts, const char *file, int line) {
    return transpose_call(tp, &conv_transpose2d_op, false, x, w, bias, opts, file, line);
}

nb_tensor *nb_conv_transpose1d_(nb_tape *tp, nb_tensor *x, nb_tensor *w, nb_tensor *bias,
                                const nb_conv_transpose_opts *opts, const char *file, int line) {
    return transpose_call(tp, &conv_transpose1d_op, true, x, w, bias, opts, file, line);
}
